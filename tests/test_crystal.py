"""The Crystal artifact: round trip, validation messages, partition invariants."""
import dataclasses
import json

import numpy as np
import pytest

from crystalbench import crystal as cm
from crystalbench.crystal import CrystalError


def small_crystal(frozen1=(True, True, False), frozen2=(True, False)):
    rng = np.random.default_rng(0)
    n_in = 4
    m1 = np.array([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]], bool)
    m2 = np.array([[1, 1, 0], [0, 1, 1]], bool)
    m3 = np.ones((3, 2), bool)

    def layer(mask, act, frozen):
        n = mask.shape[0]
        frozen = np.array(frozen, bool)
        return cm.Layer(weights=(rng.normal(size=mask.shape) * mask).astype(np.float32),
                        bias=rng.normal(size=n).astype(np.float32), mask=mask, activation=act,
                        position=np.zeros((n, 2), np.float32), radius=np.full(n, 1.5, np.float32),
                        frozen=frozen, epoch_frozen=np.where(frozen, 3, -1).astype(np.int32))

    layers = (layer(m1, "relu", frozen1), layer(m2, "relu", frozen2), layer(m3, "linear", [False] * 3))
    x = rng.uniform(size=(5, n_in)).astype(np.float32)
    inp = cm.InputSpec(size=4, geometry=(2, 2), offset=0.0, scale=1.0, low=0.0, high=1.0)
    proto = cm.Crystal.__new__(cm.Crystal)
    object.__setattr__(proto, "layers", layers)
    outs = tuple(cm.Crystal.forward(proto, x))
    ref = cm.Reference(x=x, y=np.zeros(5, np.int64), outputs=outs, calibration_x=x)
    return cm.Crystal(name="t", dataset="unit", n_classes=3, input=inp, layers=layers, reference=ref)


def test_round_trip(tmp_path):
    c = small_crystal()
    cm.save(c, tmp_path)
    d = cm.load(tmp_path)
    for a, b in zip(c.layers, d.layers):
        for name in ("weights", "bias", "mask", "position", "radius", "frozen", "epoch_frozen"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(c.reference.outputs[-1], d.reference.outputs[-1])
    assert d.input == c.input and d.summary() == c.summary()
    assert not list(tmp_path.glob(".*.tmp")), "atomic write left a temporary file"


def test_loads_without_torch(tmp_path):
    import subprocess
    import sys

    cm.save(small_crystal(), tmp_path)
    code = ("import sys; sys.modules['torch'] = None\n"
            "from crystalbench import crystal\n"
            f"print(crystal.load({str(tmp_path)!r}).summary()['core_neurons'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"


def test_partition_is_closed_under_predecessors():
    # Layer-2 neuron 1 is frozen but reads active layer-1 neuron 2: it is not core.
    c = small_crystal(frozen1=(True, True, False), frozen2=(True, True))
    p = c.partition
    assert p.core[0].tolist() == [True, True, False]
    assert p.core[1].tolist() == [True, False]
    assert p.boundary[0].tolist() == [False, True, False]  # read by frontier neuron (2, 1)
    assert p.boundary[1].tolist() == [True, False]  # read by the readout
    assert p.frontier_inputs.tolist() == [False, False, True, True]


def test_forward_matches_reference():
    c = small_crystal()
    np.testing.assert_allclose(c.forward(c.reference.x)[-1], c.reference.outputs[-1], rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda meta, z: meta.pop("n_classes"), r"crystal\.json: missing field 'n_classes'"),
    (lambda meta, z: meta.update(schema_version=99), r"schema_version 99 is not supported"),
    (lambda meta, z: meta["layers"][0].update(activation="tanh"),
     r"layer 1: activation 'tanh' is not supported; use one of \['relu', 'linear'\]"),
    (lambda meta, z: z.pop("layer2.bias"), r"crystal\.npz: missing array 'layer2\.bias'"),
    (lambda meta, z: z.update({"layer1.weights": z["layer1.weights"][:, :3]}),
     r"layer 1: weights has shape \(3, 3\), expected \(3, 4\)"),
    (lambda meta, z: z.update({"layer1.weights": z["layer1.weights"] + 1}),
     r"layer 1: weight \[0, 2\] is non-zero but its connection is absent"),
    (lambda meta, z: z.update({"layer3.frozen": np.ones(3, bool),
                               "layer3.epoch_frozen": np.zeros(3, np.int32)}),
     r"the readout must stay active"),
    (lambda meta, z: meta["partition"]["core"].__setitem__(0, [0]),
     r"partition\.core of layer 1 disagrees"),
])
def test_validation_names_the_problem(tmp_path, mutate, message):
    cm.save(small_crystal(), tmp_path)
    meta = json.loads((tmp_path / "crystal.json").read_text())
    with np.load(tmp_path / "crystal.npz") as f:
        z = {k: f[k] for k in f.files}
    mutate(meta, z)
    (tmp_path / "crystal.json").write_text(json.dumps(meta))
    np.savez(tmp_path / "crystal.npz", **z)
    with pytest.raises(CrystalError, match=message):
        cm.load(tmp_path)


def test_missing_files(tmp_path):
    with pytest.raises(CrystalError, match=r"crystal\.json: not found; train one"):
        cm.load(tmp_path)


def test_digest_is_content_not_provenance_and_is_checked_on_load(tmp_path):
    c = small_crystal()
    assert cm.digest(c) == cm.digest(c.replace(provenance={"created": "another day"}))
    w = c.layers[0].weights.copy()
    w[0, 0] += np.float32(1e-3)
    changed = c.replace(layers=(dataclasses.replace(c.layers[0], weights=w),) + c.layers[1:])
    assert cm.digest(changed) != cm.digest(c)
    cm.save(c, tmp_path)
    assert json.loads((tmp_path / "crystal.json").read_text())["digest"] == cm.digest(c)
    # crystal.npz from another crystal (same partition) beside this crystal.json
    cm.save(changed, tmp_path / "other")
    (tmp_path / "crystal.npz").write_bytes((tmp_path / "other" / "crystal.npz").read_bytes())
    with pytest.raises(CrystalError, match=r"digest .* does not match the arrays"):
        cm.load(tmp_path)


def test_saving_a_different_crystal_keeps_the_old_one(tmp_path):
    c = small_crystal()
    folder = tmp_path / "crystal"
    assert cm.save(c, folder) is None
    assert cm.save(c, folder) is None  # the same crystal again: nothing to keep
    other = small_crystal(frozen1=(True, False, False))
    kept = cm.save(other, folder)
    assert kept is not None and kept.name.startswith("crystal.prev-")
    assert cm.digest(cm.load(kept)) == cm.digest(c)
    assert cm.digest(cm.load(folder)) == cm.digest(other)


@pytest.mark.parametrize("where", ["reference.x", "reference.calibration_x", "reference.layer2"])
def test_nan_in_reference_arrays_is_refused_at_load(tmp_path, where):
    cm.save(small_crystal(), tmp_path)
    with np.load(tmp_path / "crystal.npz") as f:
        z = {k: f[k] for k in f.files}
    z[where] = z[where].copy()
    z[where][0, 0] = np.nan
    np.savez(tmp_path / "crystal.npz", **z)
    meta = json.loads((tmp_path / "crystal.json").read_text())
    meta.pop("digest")
    (tmp_path / "crystal.json").write_text(json.dumps(meta))
    name = where.replace("reference.layer2", "reference.outputs layer 2")
    with pytest.raises(CrystalError, match=rf"{name} contains NaN or inf"):
        cm.load(tmp_path)


def test_truncated_and_malformed_files_are_clear_errors(tmp_path):
    cm.save(small_crystal(), tmp_path)
    npz = (tmp_path / "crystal.npz").read_bytes()
    (tmp_path / "crystal.npz").write_bytes(npz[: len(npz) // 2])
    with pytest.raises(CrystalError, match=r"crystal\.npz: cannot be read .* damaged or truncated"):
        cm.load(tmp_path)
    (tmp_path / "crystal.npz").write_bytes(npz)
    meta = json.loads((tmp_path / "crystal.json").read_text())
    for field, bad, message in (("n_classes", "three", r"field 'n_classes' is malformed"),
                                ("input", {"size": 4}, r"field 'input' is malformed"),
                                ("layers", [{"activation": "relu"}], r"field 'layers' is malformed")):
        (tmp_path / "crystal.json").write_text(json.dumps({**meta, field: bad}))
        with pytest.raises(CrystalError, match=message):
            cm.load(tmp_path)
    (tmp_path / "crystal.json").write_text("[1, 2]")
    with pytest.raises(CrystalError, match="expected a JSON object"):
        cm.load(tmp_path)
