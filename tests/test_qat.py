"""The QAT net (model/qat.py -> rtl/qatnet.py) and its ring shape (rtl/design.py RingNet):
the integer forward pass by hand at the edges, training's forward == the exported
integers == the golden IntNet, the artifact refused when stale or damaged, and the ring
shape's gate netlist bit-exact against the golden model under cocotb/Icarus."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.errors import DesignError, FixedPointError
from crystalbench.model import data, qat
from crystalbench.rtl import design, qatnet
from crystalbench.rtl import synth as synth_mod
from crystalbench.sim import runner

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402


def tiny_art(w1, b1, w2, b2, input_bits=2, weight_bits=2, readout_weight_bits=3,
             activation_bits=2, shift=1):
    return {"formats": {"input_bits": input_bits, "weight_bits": weight_bits,
                        "readout_weight_bits": readout_weight_bits,
                        "activation_bits": activation_bits, "shift": shift},
            "w1": w1, "b1": b1, "w2": w2, "b2": b2}


# 3 inputs -> 2 hidden -> 2 classes, ternary hidden weights, 3-bit readout weights.
W1 = [[1, 1, 1], [-1, 0, 1]]
B1 = [0, 2]
W2 = [[3, -3], [-1, 2]]
B2 = [-2, 1]


def test_golden_by_hand_at_the_edges():
    net = qatnet.to_intnet(tiny_art(W1, B1, W2, B2))
    l1, l2 = net.layers
    # Rounding half-step of shift 1 (= 1) folded into the hidden bias.
    assert l1.bias.tolist() == [1, 3]
    # Worst cases over codes 0..3: neuron 0 reaches 0+1 .. 9+1, neuron 1 -3+3 .. 3+3:
    # 0..10 needs 5 signed bits. Readout on codes 0..3: class 0 -2-9 .. -2+9 (-11..7),
    # class 1 1-3 .. 1+6 (-2..7): 5 bits.
    assert (l1.acc_bits, l1.out_bits, l2.acc_bits, net.logit_bits) == (5, 2, 5, 5)
    codes = np.array([[0, 0, 0], [3, 3, 3], [3, 0, 0], [0, 0, 3], [1, 0, 0]])
    g = net.forward(codes)
    # acc = codes @ W1.T + [1, 3]; h = clip(acc >> 1, 0, 3)
    #  [0,0,0]: acc [1, 3] -> h [0, 1]; logits [0*3 + 1*-3 - 2, 0*-1 + 1*2 + 1] = [-5, 3]
    #  [3,3,3]: acc [10, 3] -> h [3, 1] (5 clipped to 3); logits [9-3-2, -3+2+1] = [4, 0]
    #  [3,0,0]: acc [4, 0] -> h [2, 0]; logits [6-2, -2+1] = [4, -1]
    #  [0,0,3]: acc [4, 6] -> h [2, 3]; logits [6-9-2, -2+6+1] = [-5, 5]
    #  [1,0,0]: acc [2, 2] -> h [1, 1]; logits [3-3-2, -1+2+1] = [-2, 2]
    assert g["out"][0].tolist() == [[0, 1], [3, 1], [2, 0], [2, 3], [1, 1]]
    assert g["logits"].tolist() == [[-5, 3], [4, 0], [4, -1], [-5, 5], [-2, 2]]
    assert g["cls"].tolist() == [1, 0, 0, 1, 1]
    ints = {k: np.array(v) for k, v in (("w1", W1), ("b1", B1), ("w2", W2), ("b2", B2))}
    assert qat.integer_forward(ints, codes, 1, 2).tolist() == g["logits"].tolist()


def fit_args(**over):
    return {"hidden": 5, "weight_bits": 2, "readout_weight_bits": 3, "activation_bits": 2,
            "shift": 1, "epochs": 3, "lr": 0.05, "batch_size": 16, "seed": 0, **over}


def test_training_forward_is_the_exported_integer_net():
    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, (64, 6))
    y = rng.integers(0, 3, 64)
    net = qat.fit(codes, y, **fit_args())
    ints = net.export()
    assert set(np.unique(ints["w1"])) <= {-1, 0, 1} and np.abs(ints["w2"]).max() <= 3
    with torch.no_grad():
        torch_logits = net(torch.tensor(codes, dtype=torch.float32)).numpy()
    art = tiny_art(*(ints[k].tolist() for k in ("w1", "b1", "w2", "b2")), shift=1)
    gold = qatnet.to_intnet(art).forward(codes)["logits"]
    assert np.array_equal(torch_logits, gold)  # exactly: small integers in float32
    assert np.array_equal(qat.integer_forward(ints, codes, 1, 2), gold)


def warp_data():
    rng = np.random.default_rng(3)
    x = rng.uniform(-0.7, 0.7, (48, 4))  # 2 x 2 images; codes of 2 bits over -0.5..0.5
    return x, qat.input_codes(x, 2, -0.5, 0.5), rng.integers(0, 3, 48)


def test_fit_warps_the_images_then_converts_them_like_the_hardware(monkeypatch):
    x, codes, y = warp_data()
    def trained(*args, **kw):  # every latent parameter: the integers barely move in 3 epochs
        return qat.fit(*args, **kw).state_dict()

    def same(a, b):
        return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = trained(codes, y, **fit_args())
    on = {"images": x, "geometry": (2, 2), "input_range": (-0.5, 0.5), "input_bits": 2}
    # warp off: the images change nothing
    assert same(trained(codes, y, **fit_args(), **on), plain)
    seen = []

    def stub(img, moved, angle, scale, add=0.0):
        seen.append((img.shape, moved, angle, scale))
        return img + add
    # warp on, the warp an identity: the converter gives back the codes, and neither the
    # initialization nor the shuffling moved (the warp draws from its own generator)
    monkeypatch.setattr(data, "warp_images", stub)
    assert same(trained(codes, y, **fit_args(warp_px=0.5, warp_deg=6, warp_scale=0.05), **on),
                plain)
    assert len(seen) == 3 * 3 and seen[0][0] == (16, 2, 2)  # 3 epochs x 3 batches of 16
    moved = torch.cat([m for _, m, _, _ in seen])
    angle = torch.cat([a for _, _, a, _ in seen])
    scale = torch.cat([s for _, _, _, s in seen])
    assert moved.shape == (144, 2) and 0.4 < float(moved.abs().max()) <= 0.5
    assert 0.9 * np.radians(6) < float(angle.abs().max()) <= np.radians(6)
    assert 0.04 < float((scale - 1).abs().max()) <= 0.05
    # images one LSB (1/3) brighter: trained on the codes one step up, clipped to 0..3
    monkeypatch.setattr(data, "warp_images", lambda img, *a: stub(img, *a, add=1 / 3))
    up = trained(codes, y, **fit_args(warp_px=0.5), **on)
    assert same(up, trained(np.clip(np.rint((x + 0.5) * 3) + 1, 0, 3), y, **fit_args()))
    assert not same(up, plain)


def test_fit_refuses_to_warp_without_the_images_or_in_one_dimension():
    from crystalbench.errors import TrainError

    x, codes, y = warp_data()
    for knob in ("warp_px", "warp_deg", "warp_scale"):
        with pytest.raises(TrainError) as e:
            qat.fit(codes, y, **fit_args(**{knob: 0.1}), images=x, geometry=(2, 2),
                    input_range=(0.0, 1.0))  # input_bits missing
        assert str(e.value) == ("warping needs the float images, their geometry, the input "
                                "range and input_bits")
        with pytest.raises(TrainError) as e:  # a signal (mnist1d), not an image
            qat.fit(codes, y, **fit_args(**{knob: 0.1}), images=x, geometry=(4,),
                    input_range=(0.0, 1.0), input_bits=2)
        assert str(e.value) == ("qat.warp_px, warp_deg and warp_scale move 2-D images; these "
                                "inputs have geometry (4,): set the three to 0")


def test_input_codes_are_the_digital_converter():
    from crystalbench import adc

    x = np.array([[0.0, 1 / 6 - 1e-6, 1 / 6 + 1e-6, 0.5, 1.0, 1.2, -0.1]])
    model = adc.AdcModel(bits=2, full_scale=(), input_low=0.0, input_high=1.0)
    assert qat.input_codes(x, 2, 0.0, 1.0).tolist() == [[0, 0, 1, 2, 3, 3, 0]]
    assert np.array_equal(qat.input_codes(x, 2, 0.0, 1.0), model.input_codes(x))


def test_artifact_refused_when_stale_or_damaged(tmp_path):
    c = tiny_crystal()
    art = {"version": qatnet.VERSION, "crystal": {"digest": cm.digest(c)},
           "config": {"qat": {}}, **tiny_art([[1] * 8] * 2, [0, 0], [[1, 1]] * 3, [0, 0, 0])}
    (tmp_path / qatnet.FILE_NAME).write_text(json.dumps(art))
    _, net = qatnet.load(tmp_path, c)
    assert net.kind == qatnet.KIND and net.n_in == 8 and net.n_classes == 3
    cfg = cfgmod.validate({"qat": {"hidden": 2}}, "<test>")
    # Which designs to build and how to validate are not training settings: not stale.
    same = cfgmod.validate({"qat": {"shapes": "all", "validation_seeds": [5]}}, "<test>")
    (tmp_path / qatnet.FILE_NAME).write_text(json.dumps(
        {**art, "config": cfgmod.qat_stamp(cfgmod.validate({}, "<t>").qat)}))
    assert qatnet.load(tmp_path, c, same)[1].n_in == 8
    with pytest.raises(FixedPointError, match=r"other `qat` settings .* run `crystalbench "
                                              r"train-qat`"):
        qatnet.load(tmp_path, c, cfg)
    (tmp_path / qatnet.FILE_NAME).write_text(json.dumps({**art, "crystal": {"digest": "x"}}))
    with pytest.raises(FixedPointError, match=r"another Crystal \(digest x"):
        qatnet.load(tmp_path, c)
    bad = {**art, "w1": [[2] + [1] * 7] * 2}  # 2 is outside ternary -1..1
    (tmp_path / qatnet.FILE_NAME).write_text(json.dumps(bad))
    with pytest.raises(FixedPointError, match=r"w1 holds 2, outside -1..1 of its 2 bits"):
        qatnet.load(tmp_path, c)
    (tmp_path / qatnet.FILE_NAME).unlink()
    with pytest.raises(FixedPointError, match=r"qat_net.json: not found"):
        qatnet.load(tmp_path, c)


def test_ring_shape_refuses_what_it_cannot_compute():
    net = qatnet.to_intnet(tiny_art(W1, B1, W2, B2))
    with pytest.raises(DesignError, match=r"weights must be 'baked', got 'loadable'"):
        design.build(net, "ring", "loadable")
    import dataclasses
    l1 = dataclasses.replace(net.layers[0], shift=np.array([1, 2]))
    with pytest.raises(DesignError, match=r"one shift; this net's shifts differ"):
        design.build(dataclasses.replace(net, layers=(l1, net.layers[1])), "ring", "baked")


def test_ring_gate_netlist_bit_exact_under_cocotb(tmp_path):
    """A 5 -> 3 -> 4 net: every edge of the codes (all zero, all max) plus random ones,
    the gate netlist (Yosys) against the golden model, and the latency as designed."""
    rng = np.random.default_rng(5)  # a seed whose vectors reach three classes
    art = tiny_art(rng.integers(-1, 2, (3, 5)).tolist(), [-3, 0, 5],
                   rng.integers(-3, 4, (4, 3)).tolist(), [2, -1, 0, 1], shift=1)
    net = qatnet.to_intnet(art)
    dut = design.build(net, "ring", "baked")
    assert dut.latency == 3 * (5 + 4) + 2
    fig = synth_mod.synth_design(dut, "ring", tmp_path, abc="fast", pnr=False)
    assert fig["memory_bits"] == 3 * (5 + 4) * 3  # one 3-bit word per step
    codes = np.vstack([np.zeros((1, 5), int), np.full((1, 5), 3), rng.integers(0, 4, (6, 5))])
    g = net.forward(codes)
    assert len(set(g["cls"].tolist())) > 1  # the vectors exercise more than one class
    r = runner.run_vectors(fig["gate_netlist"], codes, net.in_bits, net.logit_bits,
                           net.n_classes, tmp_path / "sim", False)
    assert r["logits"].tolist() == g["logits"].tolist()
    assert r["cls"].tolist() == g["cls"].tolist()
    assert r["latency_cycles"][0] == dut.latency


def test_train_qat_refuses_a_crystal_of_another_split(tmp_path, capsys):
    """The QAT net is checked against the Crystal's test vectors: a Crystal whose test split
    is not the config's is refused before any training, naming the fix."""
    from crystalbench import cli

    cm.save(tiny_crystal(), tmp_path / "c")
    rc = cli.main(["--build-dir", str(tmp_path / "b"), "train-qat", "--config",
                   str(Path(__file__).parent.parent / "configs" / "digits_qat.yaml"),
                   "--crystal", str(tmp_path / "c")])
    assert rc == 2
    err = capsys.readouterr().err
    assert "is not the one the Crystal tiny holds" in err
    assert "train the QAT net with the config the Crystal was trained with" in err
    assert not (tmp_path / "b" / "tiny" / "qat" / qatnet.FILE_NAME).exists()


def test_train_qat_gives_fit_the_float_images_to_warp(tmp_path, monkeypatch):
    """The stage hands fit the float training images, their geometry, the Crystal's input
    range and the code width with the warp settings, for validation and for the final net
    (data loading and fit stubbed: the wiring, not the training)."""
    import dataclasses
    from types import SimpleNamespace

    from crystalbench.results import Paths

    rng = np.random.default_rng(0)
    c = tiny_crystal()
    c = dataclasses.replace(c, input=dataclasses.replace(c.input, low=-0.5, high=2.0))
    # the data's geometry (the Crystal's is flat): the one the images are warped in
    ds = SimpleNamespace(x_train=rng.random((40, 8)), y_train=np.arange(40) % 3, geometry=(2, 4))
    monkeypatch.setattr(qat, "_split", lambda cfg, c_: ds)
    seen = []

    def fit(codes, y, **kw):
        seen.append((codes, y, kw))
        return qat.QatNet(8, 2, 3, 2, 3, 2, 1, 0)
    monkeypatch.setattr(qat, "fit", fit)
    cfg = cfgmod.validate({"experiment": "tiny", "qat": {
        "hidden": 2, "input_bits": 3, "warp_px": 0.5, "warp_deg": 6.0, "warp_scale": 0.05,
        "validation_seeds": [4], "validation_fraction": 0.25}}, "<t>")
    qat.run(c, cfg, Paths(tmp_path, "tiny"), lambda s: None, validate=True)
    qat.run(c, cfg, Paths(tmp_path, "tiny"), lambda s: None)
    (cv, yv, kv), (cf, yf, kf) = seen
    for codes, y, kw, n in ((cv, yv, kv, 30), (cf, yf, kf, 40)):
        assert len(y) == len(kw["images"]) == len(codes) == n
        np.testing.assert_array_equal(codes, qat.input_codes(kw["images"], 3, -0.5, 2.0))
        assert (kw["geometry"], kw["input_range"], kw["input_bits"]) == ((2, 4), (-0.5, 2.0), 3)
        assert (kw["warp_px"], kw["warp_deg"], kw["warp_scale"]) == (0.5, 6.0, 0.05)
    np.testing.assert_array_equal(kf["images"], ds.x_train)
    assert kv["seed"] == 4 and kf["seed"] == 0


@pytest.mark.parametrize("folds", [0, 4])
def test_train_qat_validate_counts_errors_over_every_held_out_part(tmp_path, monkeypatch,
                                                                    folds):
    """--validate with qat.validation_folds K trains K nets per seed, each on the samples
    outside one fold of data.stratified_folds, and scores them on that fold; with 0, one
    net per seed on the training split minus the validation part. A stub net that always
    answers class 0 makes every sample of classes 1 and 2 an error: 26 of 40 over the
    folds, 3 + 3 of the 4 + 3 + 3 in the 25% part."""
    from types import SimpleNamespace

    from crystalbench.results import Paths

    x = np.arange(320, dtype=np.float64).reshape(40, 8) / 320  # rows tell samples apart
    ds = SimpleNamespace(x_train=x, y_train=np.arange(40) % 3, geometry=(2, 4))
    monkeypatch.setattr(qat, "_split", lambda cfg, c_: ds)
    trained = []

    def fit(codes, y, **kw):
        trained.append((np.rint(kw["images"][:, 0] * 40).astype(int).tolist(), kw["seed"]))
        net = qat.QatNet(8, 2, 3, 2, 3, 2, 1, 0)
        with torch.no_grad():
            for p in (net.w1, net.b1, net.w2):
                p.zero_()
            net.b2.copy_(torch.tensor([1.0, 0.0, 0.0]))
        return net
    monkeypatch.setattr(qat, "fit", fit)
    cfg = cfgmod.validate({"experiment": "tiny", "seed": 3, "qat": {
        "hidden": 2, "validation_seeds": [5, 6], "validation_fraction": 0.25,
        "validation_folds": folds}}, "<t>")
    res = qat.run(tiny_crystal(), cfg, Paths(tmp_path, "tiny"), lambda s: None, validate=True)
    if folds:
        fold = data.stratified_folds(ds.y_train, 4, 3)
        parts = [np.flatnonzero(fold == f) for f in range(4)]
    else:
        parts = [data.stratified_split(ds.y_train, 0.25, 3)[1]]
    # every fold once per seed, trained on the rest
    assert trained == [(sorted(set(range(40)) - set(va.tolist())), s)
                       for va in parts for s in (5, 6)]
    wrong = [int((ds.y_train[va] != 0).sum()) for va in parts]
    assert res["validation_errors"] == [[w, w] for w in wrong]
    n_val = 40 if folds else 10
    assert sum(wrong) == (26 if folds else 6) and res["validation_samples"] == n_val
    assert res["validation_accuracy"] == [1 - sum(wrong) / n_val] * 2
    assert res["training_samples"] == [40 - len(va) for va in parts]
    saved = json.loads((tmp_path / "tiny" / "qat" / qat.VALIDATION_FILE).read_text())
    assert saved["validation_errors"] == res["validation_errors"]
    where = f"4 folds, errors per fold {[2 * w for w in wrong]}" if folds else "held out"
    assert f"on {n_val} training samples ({where})" in res["summary"][0]


def test_qat_trains_on_the_unaugmented_training_split():
    """The QAT net draws its own warps per batch: the config's shifted and warped copies
    (data.augment_shifts, augment_warps, which the crystal trains on) are left out."""
    from types import SimpleNamespace

    cfg = cfgmod.validate({"experiment": "e", "data": {"augment_shifts": 1, "augment_warps": 4,
                                                       "max_train": 80}}, "<t>")
    plain = data.load({"dataset": "digits", "test_fraction": 0.2, "max_train": 80}, seed=0)
    c = SimpleNamespace(name="c", reference=SimpleNamespace(x=plain.x_test))
    ds = qat._split(cfg, c)
    np.testing.assert_array_equal(ds.x_train, plain.x_train)
    np.testing.assert_array_equal(ds.y_train, plain.y_train)
