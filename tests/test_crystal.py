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
    assert p.boundary[2].tolist() == [False, False, False]  # the readout: one flag a neuron
    assert p.frontier_inputs.tolist() == [False, False, True, True]


def test_forward_matches_reference():
    c = small_crystal()
    np.testing.assert_allclose(c.forward(c.reference.x)[-1], c.reference.outputs[-1], rtol=1e-6)


@pytest.mark.parametrize("mutate, message", [
    (lambda meta, z: meta.pop("n_classes"), r"crystal\.json: missing field 'n_classes'"),
    (lambda meta, z: meta.update(schema_version=99), r"schema_version 99 is not supported"),
    # 1.0 and true equal 1 in Python but would hash as other text in the digest
    (lambda meta, z: meta.update(schema_version=1.0), r"schema_version 1\.0 is not supported"),
    (lambda meta, z: meta.update(schema_version=True), r"schema_version True is not supported"),
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
    with pytest.raises(CrystalError, match=r"crystal\.npz: cannot be read \(BadZipFile: .* damaged "
                                           r"or truncated"):
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


def _layer(c, li, **changes):
    layers = list(c.layers)
    layers[li] = dataclasses.replace(layers[li], **changes)
    return {"layers": tuple(layers)}


def _ref(c, **changes):
    return {"reference": dataclasses.replace(c.reference, **changes)}


def _inp(c, **changes):
    return {"input": dataclasses.replace(c.input, **changes)}


_C = small_crystal()
_L0 = _C.layers[0]


@pytest.mark.parametrize("changes, message", [
    ({"schema_version": 2}, r"^crystal: schema_version 2 is not supported \(this crystalbench "
                            r"reads version 1\)"),
    ({"layers": ()}, r"^crystal: layers is empty"),
    (_inp(_C, geometry=(2, 3)), r"^crystal: input\.geometry \[2, 3\] holds 6 values but "
                                r"input\.size is 4$"),
    (_inp(_C, scale=0.0), r"^crystal: input\.scale must be a finite non-zero number, got 0\.0$"),
    (_inp(_C, scale=float("inf")), r"input\.scale must be a finite non-zero number, got inf"),
    (_inp(_C, low=1.0, high=1.0), r"input range low 1\.0 \.\. high 1\.0 must be finite and "
                                  r"increasing$"),
    (_inp(_C, low=float("-inf")), r"input range low -inf"),
    (_layer(_C, 0, bias=_L0.bias.astype(np.float64)),
     r"^crystal: layer 1: bias has dtype float64, expected float32$"),
    (_layer(_C, 0, mask=_L0.mask.astype(np.int8)), r"layer 1: mask has dtype int8, expected bool$"),
    (_layer(_C, 0, epoch_frozen=_L0.epoch_frozen.astype(np.int64)),
     r"layer 1: epoch_frozen has dtype int64, expected int32$"),
    (_layer(_C, 0, radius=[1.5, 1.5, 1.5]), r"layer 1: radius must be a numpy array, got list$"),
    (_layer(_C, 0, position=np.zeros((3, 1), np.float32)),
     r"layer 1: position has shape \(3, 1\), expected \(3, 2\) \(3 neurons x 4 inputs from "
     r"layer 0\)$"),
    (_layer(_C, 1, weights=np.zeros((2, 4), np.float32), mask=np.ones((2, 4), bool)),
     r"layer 2: weights has shape \(2, 4\), expected \(2, 3\)"),
    (_layer(_C, 0, bias=np.array([0, np.nan, 0], np.float32)), r"layer 1: weights or bias "
                                                               r"contain NaN or inf$"),
    (_layer(_C, 0, weights=np.where(_L0.mask, np.inf, 0).astype(np.float32)),
     r"layer 1: weights or bias contain NaN or inf$"),
    (_layer(_C, 0, epoch_frozen=np.array([3, -1, -1], np.int32)),
     r"layer 1: neuron 1: frozen=True but epoch_frozen=-1 \(frozen neurons need epoch_frozen "
     r">= 0, active ones -1\)$"),
    (_layer(_C, 0, epoch_frozen=np.array([3, 3, 0], np.int32)),
     r"layer 1: neuron 2: frozen=False but epoch_frozen=0"),
    ({"n_classes": 4}, r"^crystal: readout has 3 outputs but n_classes is 4$"),
    (_ref(_C, x=_C.reference.x.astype(np.float64)), r"reference\.x has shape \(5, 4\) dtype "
                                                     r"float64, expected \(n, 4\) float32$"),
    (_ref(_C, y=np.zeros(4, np.int64)), r"reference\.y has shape \(4,\), expected \(5,\)$"),
    (_ref(_C, calibration_x=np.zeros((5, 3), np.float32)),
     r"reference\.calibration_x has shape \(5, 3\), expected \(m, 4\)$"),
    (_ref(_C, outputs=_C.reference.outputs[:2]), r"reference\.outputs has 2 layers, expected 3$"),
    (_ref(_C, outputs=_C.reference.outputs[:2] + (np.zeros((5, 2), np.float32),)),
     r"reference\.outputs layer 3 has shape \(5, 2\), expected \(5, 3\)$"),
], ids=range(23))
def test_every_invariant_is_checked_with_its_message(changes, message):
    with pytest.raises(CrystalError, match=message):
        _C.replace(**changes)


def test_weights_of_absent_connections_are_named():
    w = _L0.weights.copy()
    w[2, 0] = 0.5  # mask[2, 0] is False
    with pytest.raises(CrystalError, match=r"layer 1: weight \[2, 0\] is non-zero but its "
                                           r"connection is absent"):
        _C.replace(**_layer(_C, 0, weights=w))


def test_summary_by_hand():
    c = small_crystal()  # frozen (T, T, F), (T, F); readout active
    s = c.summary()
    assert s["sizes"] == [4, 3, 2, 3] and s["hidden_neurons"] == 5
    assert s["core_neurons"] == 3 and s["frozen_fraction"] == 3 / 5  # (0, 1) and (0 of layer 2)
    assert s["frontier_neurons"] == 1 + 1 + 3 and s["boundary_neurons"] == 2
    assert s["frontier_raw_inputs"] == 2 and s["connections"] == 6 + 4 + 6
    assert s["reference_vectors"] == 5
    want = float((c.reference.outputs[-1].argmax(1) == c.reference.y).mean())
    assert s["reference_test_accuracy"] == want
    everything_frozen = small_crystal(frozen1=(True, True, True), frozen2=(True, True))
    assert everything_frozen.summary()["frozen_fraction"] == 1.0
    assert everything_frozen.summary()["frontier_raw_inputs"] == 0


def test_pickled_arrays_are_refused(tmp_path):
    cm.save(small_crystal(), tmp_path)
    with np.load(tmp_path / "crystal.npz") as f:
        z = {k: f[k] for k in f.files}
    z["layer1.bias"] = np.array([{"pickled": "object"}] * 3, dtype=object)
    np.savez(tmp_path / "crystal.npz", **z)
    with pytest.raises(CrystalError, match=r"crystal\.npz: cannot be read \(ValueError: Object "
                                           r"arrays cannot be loaded when allow_pickle=False\)"):
        cm.load(tmp_path)


def test_provenance_and_activation_fields_on_load(tmp_path):
    c = small_crystal().replace(provenance={"created": "2026-11-27", "seed": 3})
    cm.save(c, tmp_path)
    assert cm.load(tmp_path).provenance == {"created": "2026-11-27", "seed": 3}
    meta = json.loads((tmp_path / "crystal.json").read_text())
    for prov, want in ((None, {}), ({}, {})):  # absent or empty: an empty record
        (tmp_path / "crystal.json").write_text(json.dumps({**meta, "provenance": prov}))
        assert cm.load(tmp_path).provenance == want
    (tmp_path / "crystal.json").write_text(json.dumps({k: v for k, v in meta.items()
                                                       if k != "provenance"}))
    assert cm.load(tmp_path).provenance == {}
    (tmp_path / "crystal.json").write_text(json.dumps({**meta, "provenance": [1]}))
    with pytest.raises(CrystalError, match=r"field 'provenance' is malformed \(TypeError: not "
                                           r"an object\)"):
        cm.load(tmp_path)
    layers = [{k: v for k, v in lm.items() if k != "activation"} for lm in meta["layers"]]
    (tmp_path / "crystal.json").write_text(json.dumps({**meta, "layers": layers}))
    with pytest.raises(CrystalError, match=r"layer 1: activation '' is not supported; use one of"):
        cm.load(tmp_path)


def test_load_takes_the_folder_or_either_of_its_two_files(tmp_path):
    c = small_crystal()
    cm.save(c, tmp_path / "k")
    for p in (tmp_path / "k", tmp_path / "k" / "crystal.json", tmp_path / "k" / "crystal.npz"):
        assert cm.digest(cm.load(p)) == cm.digest(c)
    other = tmp_path / "k" / "notes.txt"
    other.write_text("x")
    with pytest.raises(CrystalError, match=r"notes\.txt/crystal\.json: not found"):
        cm.load(other)


def test_load_messages_in_full(tmp_path):
    """Every refusal of `load`, word for word: the file, the problem and the command that
    fixes it."""
    c = small_crystal()
    jpath, npath = tmp_path / "crystal.json", tmp_path / "crystal.npz"

    def refusal():
        with pytest.raises(CrystalError) as e:
            cm.load(tmp_path)
        return str(e.value)

    assert refusal() == (f"{jpath}: not found; train one with `crystalbench train --config ...` "
                         "or write one with `crystalbench export` / `import-torch`")
    cm.save(c, tmp_path)
    meta_text, npz = jpath.read_text(), npath.read_bytes()
    meta = json.loads(meta_text)

    jpath.write_text("{1")
    got = refusal()
    assert got.startswith(f"{jpath}: not valid JSON (")
    assert got.endswith("); re-export the crystal with `crystalbench export` or "
                        "`crystalbench train --resume`")
    jpath.write_text("[1, 2]")
    assert refusal() == f"{jpath}: expected a JSON object, got list"
    jpath.write_text(json.dumps({**meta, "n_classes": "three"}))
    assert refusal() == (f"{tmp_path}: {jpath}: field 'n_classes' is malformed (ValueError: "
                         "invalid literal for int() with base 10: 'three'); re-export the crystal")

    jpath.write_text(meta_text)
    npath.write_bytes(npz[: len(npz) // 2])
    got = refusal()
    assert got.startswith(f"{npath}: cannot be read (BadZipFile: ")
    assert got.endswith("); the file is damaged or truncated: re-export the crystal with "
                        "`crystalbench export` or `crystalbench train --resume`")

    npath.write_bytes(npz)
    core = [list(x) for x in meta["partition"]["core"]]
    core[0] = core[0][:-1]
    jpath.write_text(json.dumps({**meta, "partition": {**meta["partition"], "core": core}}))
    assert refusal() == (f"{jpath}: partition.core of layer 1 disagrees with the frozen flags "
                         "and masks in crystal.npz; the two files are from different crystals")
    jpath.write_text(json.dumps({**meta, "digest": "0123456789abcdef"}))
    assert refusal() == (f"{jpath}: digest 0123456789abcdef does not match the arrays in "
                         f"crystal.npz ({cm.digest(c)}); the two files are from different "
                         "crystals: re-export the crystal")


def _hand_layer(weights, bias, act):
    w = np.array(weights, np.float32)
    n = w.shape[0]
    return cm.Layer(weights=w, bias=np.array(bias, np.float32), mask=np.ones(w.shape, bool),
                    activation=act, position=np.zeros((n, 1), np.float32),
                    radius=np.full(n, np.inf, np.float32), frozen=np.zeros(n, bool),
                    epoch_frozen=np.full(n, -1, np.int32))


def test_forward_by_hand():
    """The numpy reference model on a 2-2-2 net worked out by hand: bias added, ReLU (max with
    0) on the relu layer only, the linear readout left negative, every output float32, and
    the inputs taken as float32 first (as torch computes): 2**24 + 1 reads as 2**24."""
    layers = (_hand_layer([[1, -1], [0.25, 0]], [0.5, 0.5], "relu"),
              _hand_layer([[1, -1], [1, 1]], [-2, 0.25], "linear"))
    proto = cm.Crystal.__new__(cm.Crystal)
    object.__setattr__(proto, "layers", layers)
    # h1 = relu([1 - 3 + 0.5, 0.25 + 0.5]) = [0, 0.75]; out = [0 - 0.75 - 2, 0 + 0.75 + 0.25]
    h1, out = cm.Crystal.forward(proto, np.array([[1.0, 3.0]], np.float32))
    assert h1.tolist() == [[0.0, 0.75]] and out.tolist() == [[-2.75, 1.0]]
    assert h1.dtype == np.float32 and out.dtype == np.float32
    # float64 inputs: both round to 2**24 in float32, so neuron 0 = 0 + 0.5, not 1 + 0.5
    h1, out = cm.Crystal.forward(proto, np.array([[2.0**24 + 1, 2.0**24]]))
    assert h1[0, 0] == 0.5 and h1.dtype == np.float32 and out.dtype == np.float32


def test_crystal_json_in_full(tmp_path):
    """crystal.json as readers outside Python see it, worked out by hand for small_crystal:
    frozen (T, T, F), (T, F), readout active."""
    c = small_crystal().replace(provenance={"seed": 3})
    assert cm.save(c, tmp_path, keep=False) is None
    assert json.loads((tmp_path / "crystal.json").read_text()) == {
        "schema_version": 1, "digest": cm.digest(c), "name": "t", "dataset": "unit",
        "n_classes": 3,
        "input": {"size": 4, "geometry": [2, 2], "offset": 0.0, "scale": 1.0, "low": 0.0,
                  "high": 1.0},
        "layers": [{"index": 1, "neurons": 3, "inputs": 4, "activation": "relu"},
                   {"index": 2, "neurons": 2, "inputs": 3, "activation": "relu"},
                   {"index": 3, "neurons": 3, "inputs": 2, "activation": "linear"}],
        # core: layer-1 neurons 0, 1 and layer-2 neuron 0 (reads only 0, 1); boundary: layer-1
        # neuron 1 (read by frontier neuron (2, 1)), layer-2 neuron 0 (read by the readout);
        # the frontier's layer-1 neuron 2 reads inputs 2, 3
        "partition": {"core": [[0, 1], [0], []], "boundary": [[1], [0], []],
                      "frontier_inputs": [2, 3]},
        "summary": {"name": "t", "dataset": "unit", "sizes": [4, 3, 2, 3], "hidden_neurons": 5,
                    "core_neurons": 3, "frontier_neurons": 5, "boundary_neurons": 2,
                    "frontier_raw_inputs": 2, "frozen_fraction": 0.6, "connections": 16,
                    "reference_vectors": 5, "reference_test_accuracy": 1.0},
        "provenance": {"seed": 3}}
    with np.load(tmp_path / "crystal.npz") as z:
        assert sorted(z.files) == sorted(
            [f"layer{li}.{n}" for li in (1, 2, 3) for n in ("weights", "bias", "mask", "position",
                                                            "radius", "frozen", "epoch_frozen")]
            + ["reference.x", "reference.y", "reference.calibration_x", "reference.layer1",
               "reference.layer2", "reference.layer3"])
    # keep=False replaces a different crystal in place, keeping nothing
    assert cm.save(small_crystal(frozen1=(True, False, False)), tmp_path, keep=False) is None
    assert [p.name for p in tmp_path.parent.iterdir() if p.name.startswith(tmp_path.name)] == \
        [tmp_path.name]


def test_digest_by_formula():
    """digest = the first 16 hex digits of sha256 over the sorted-key JSON head (schema,
    name, data set, classes, input, activations), then each array in key order as
    'key|dtype|shape' and its bytes."""
    import hashlib

    c = small_crystal()
    h = hashlib.sha256()
    head = {"schema_version": 1, "name": "t", "dataset": "unit", "n_classes": 3,
            "input": {"size": 4, "geometry": [2, 2], "offset": 0.0, "scale": 1.0, "low": 0.0,
                      "high": 1.0},
            "activations": ["relu", "relu", "linear"]}
    h.update(json.dumps(head, sort_keys=True).encode())
    arrays = {f"layer{li}.{n}": getattr(layer, n) for li, layer in enumerate(c.layers, 1)
              for n in ("weights", "bias", "mask", "position", "radius", "frozen", "epoch_frozen")}
    arrays.update({"reference.x": c.reference.x, "reference.y": c.reference.y,
                   "reference.calibration_x": c.reference.calibration_x},
                  **{f"reference.layer{li}": o for li, o in enumerate(c.reference.outputs, 1)})
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    assert cm.digest(c) == h.hexdigest()[:16]


def test_stored_digest_is_none_without_a_readable_record(tmp_path):
    assert cm.stored_digest(tmp_path) is None  # no crystal.json
    for text in ("{1", "[1, 2]", '{"name": "t"}'):
        (tmp_path / "crystal.json").write_text(text)
        assert cm.stored_digest(tmp_path) is None
    (tmp_path / "crystal.json").write_text('{"digest": "0123456789abcdef"}')
    assert cm.stored_digest(str(tmp_path)) == "0123456789abcdef"


def test_summary_of_a_readout_only_crystal():
    """No hidden layer: no hidden neurons, frozen fraction 0 (not a division by zero)."""
    layer = _hand_layer([[1, 0], [0, 1]], [0, 0], "linear")
    x = np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 2.0]], np.float32)
    ref = cm.Reference(x=x, y=np.array([1, 1, 1]), outputs=(x.copy(),), calibration_x=x)
    inp = cm.InputSpec(size=2, geometry=(2,), offset=0.0, scale=1.0, low=0.0, high=1.0)
    c = cm.Crystal(name="r", dataset="unit", n_classes=2, input=inp, layers=(layer,), reference=ref)
    s = c.summary()
    assert s["hidden_neurons"] == 0 and s["core_neurons"] == 0 and s["frozen_fraction"] == 0.0
    assert s["frontier_neurons"] == 2 and s["boundary_neurons"] == 0
    assert s["frontier_raw_inputs"] == 2 and s["reference_test_accuracy"] == 2 / 3


def test_validate_messages_in_full():
    """The refusals of `validate` whose fix or detail the other tests leave out, word for word."""
    with pytest.raises(CrystalError) as e:
        _C.replace(schema_version=2)
    assert str(e.value) == ("crystal: schema_version 2 is not supported (this crystalbench reads "
                            "version 1); re-export the crystal with `crystalbench export`")
    with pytest.raises(CrystalError) as e:
        _C.replace(layers=())
    assert str(e.value) == "crystal: layers is empty; a crystal needs at least the readout layer"
    w = _L0.weights.copy()
    w[2, 0] = 0.5
    with pytest.raises(CrystalError) as e:
        _C.replace(**_layer(_C, 0, weights=w))
    assert str(e.value) == ("crystal: layer 1: weight [2, 0] is non-zero but its connection is "
                            "absent (mask False); absent connections must have weight 0")
    with pytest.raises(CrystalError) as e:
        _C.replace(**_layer(_C, 2, frozen=np.ones(3, bool), epoch_frozen=np.zeros(3, np.int32)))
    assert str(e.value) == "crystal: layer 3: the readout must stay active (frozen all False)"
    x = _C.reference.x.copy()
    x[1, 2] = np.inf
    with pytest.raises(CrystalError) as e:
        _C.replace(**_ref(_C, x=x))
    assert str(e.value) == ("crystal: reference.x contains NaN or inf; re-export the crystal "
                            "from a finite model")
    with pytest.raises(CrystalError) as e:
        _C.replace(**_layer(_C, 0, activation="tanh"))
    assert str(e.value) == ("crystal: layer 1: activation 'tanh' is not supported; use one of "
                            "['relu', 'linear']")
    ref = _C.reference
    for changes, message in (
            (_ref(_C, x=np.array(1.0, np.float32)),
             "reference.x has shape () dtype float32, expected (n, 4) float32"),
            (_ref(_C, y=np.zeros(4, np.int64)), "reference.y has shape (4,), expected (5,)"),
            (_ref(_C, calibration_x=np.zeros(4, np.float32)),
             "reference.calibration_x has shape (4,), expected (m, 4)"),
            (_ref(_C, outputs=ref.outputs[:2]), "reference.outputs has 2 layers, expected 3"),
            (_ref(_C, outputs=ref.outputs[:2] + (ref.outputs[2][:4],)),
             "reference.outputs layer 3 has shape (4, 3), expected (5, 3)"),
            (_inp(_C, low=2.0, high=1.0), "input range low 2.0 .. high 1.0 must be finite and "
                                          "increasing")):
        with pytest.raises(CrystalError) as e:
            _C.replace(**changes)
        assert str(e.value) == "crystal: " + message
    bad = object.__new__(cm.Crystal)
    for f in dataclasses.fields(cm.Crystal):
        object.__setattr__(bad, f.name, getattr(_C, f.name))
    object.__setattr__(bad, "n_classes", 4)
    with pytest.raises(CrystalError) as e:
        cm.validate(bad, "k/crystal.json")
    assert str(e.value) == "k/crystal.json: readout has 3 outputs but n_classes is 4"


def test_weights_that_are_not_a_matrix_are_named():
    """Weights of the wrong rank: the neuron count is unknown (-1) and the message says so
    rather than failing on the shape."""
    for w, shape in ((np.zeros(3, np.float32), "(3,)"), (np.array(1.0, np.float32), "()")):
        with pytest.raises(CrystalError) as e:
            _C.replace(**_layer(_C, 0, weights=w))
        assert str(e.value) == (f"crystal: layer 1: weights has shape {shape}, expected (-1, 4) "
                                "(-1 neurons x 4 inputs from layer 0)")
