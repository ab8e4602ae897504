"""Hardware-in-the-loop calibration (sim/calibrate.py): the refit by hand, the guard that
keeps the trained weights, the summary, and the stage on the tiny crystals with the new
weights loaded into the gate netlist through its write port."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.errors import FixedPointError, SimError
from crystalbench.results import Paths
from crystalbench.rtl import design, fixed
from crystalbench.sim import calibrate

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import quantized, quantized_deep, tiny_crystal, tiny_deep_crystal  # noqa: E402


def readout(weights, mask, bias, weight_bits=8, frac=0):
    w = np.asarray(weights, np.int64)
    return fixed.IntLayer(weights=w, mask=np.asarray(mask, bool), bias=np.asarray(bias, np.int64),
                          activation="linear", in_bits=4, weight_bits=weight_bits,
                          weight_frac=np.array([frac]), acc_bits=16, shift=np.zeros(len(w), np.int64),
                          out_bits=16)


def test_fit_recovers_an_exact_linear_readout():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 16, (50, 3))
    mask = np.array([[1, 1, 0], [0, 1, 1]], bool)
    w_true = np.array([[5, -7, 0], [0, 3, 12]])
    b_true = np.array([40, -9])
    target = (a @ w_true.T + b_true).astype(np.float64)
    trained = readout([[1, 1, 0], [0, 1, 1]], mask, [0, 0])
    w, b = calibrate.fit_readout(a, target, trained, ridge=0.0)
    assert w.tolist() == w_true.tolist() and b.tolist() == b_true.tolist()
    # an absent connection stays absent even if the target would use it
    target2 = target + 9.0 * a[:, [2, 0]]  # class 0 "wants" input 2, class 1 input 0
    w2, _ = calibrate.fit_readout(a, target2, trained, ridge=0.0)
    assert w2[0, 2] == 0 and w2[1, 0] == 0


def test_fit_ridge_pulls_toward_the_trained_weights_and_clips():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 16, (40, 2))
    mask = np.ones((1, 2), bool)
    trained = readout([[3, -2]], mask, [7])
    target = (a @ np.array([[30, 20]]).T).astype(np.float64)
    w, b = calibrate.fit_readout(a, target, trained, ridge=1e9)  # all pull: the trained ones
    assert w.tolist() == [[3, -2]] and b.tolist() == [7]
    w, b = calibrate.fit_readout(a, 10.0 * target, trained, ridge=0.0)  # 300, 200: clipped
    assert w.tolist() == [[127, 127]]
    narrow = readout([[3, -2]], mask, [7], weight_bits=4)
    w, _ = calibrate.fit_readout(a, -target, narrow, ridge=0.0)
    assert w.tolist() == [[-8, -8]]  # -30, -20 clipped to the 4-bit -8


def test_logit_rms_by_hand():
    _, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    codes = np.zeros((2, net.n_in), np.int64)
    logits = net.forward(codes)["logits"]
    target = logits + np.array([[3.0], [-4.0]])  # every logit off by 3, then by 4
    assert calibrate.logit_rms(net, codes, target) == pytest.approx(np.sqrt((9 + 16) / 2))


def test_readout_inputs_are_the_last_hidden_codes():
    _, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    assert len(net.layers) == 2
    codes = np.arange(3 * net.n_in).reshape(3, -1) % (1 << net.in_bits)
    h = calibrate.readout_inputs(net, codes)
    want = net.layers[0].forward(codes)[1]
    np.testing.assert_array_equal(h, want)
    _, fp1 = quantized()
    one = fixed.nets_of(fp1)["frontier"]
    c1 = np.ones((2, one.n_in), np.int64)
    np.testing.assert_array_equal(calibrate.readout_inputs(one, c1), c1)


def test_summary_by_hand():
    rows = [{"before": {"accuracy": 0.90, "agreement": 0.95}, "after": {"accuracy": 0.94, "agreement": 0.99}},
            {"before": {"accuracy": 0.92, "agreement": 0.96}, "after": {"accuracy": 0.92, "agreement": 0.96},
             "kept": "no better"},
            {"before": {"accuracy": 0.96, "agreement": 0.98}, "after": {"accuracy": 0.95, "agreement": 0.97},
             "refused": "wraps"}]
    s = calibrate.summarize(rows, 0.95)
    assert s["accuracy_before"] == {"mean": pytest.approx(0.9266666, abs=1e-6), "min": 0.90}
    assert s["accuracy_after"] == {"mean": pytest.approx(0.9366666, abs=1e-6), "min": 0.92}
    assert s["agreement_after"]["min"] == 0.96 and s["agreement_before"]["mean"] == pytest.approx(0.9633333)
    assert s["gap_to_float_pp_after"] == pytest.approx((0.95 - 0.9366666) * 100, abs=1e-4)
    assert s["boards_improved_or_equal"] == 2  # equal counts, worse does not
    assert s["boards_kept"] == 1 and s["boards_refused"] == 1


def test_a_refit_no_better_on_held_out_inputs_is_not_loaded(monkeypatch):
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    train = fixed.input_codes(c, net, x=c.reference.calibration_x)
    test = fixed.input_codes(c, net)
    last = net.layers[-1]
    # a "refit" that is the trained readout with every weight one step off: worse
    monkeypatch.setattr(calibrate, "fit_readout",
                        lambda *a, **k: (last.weights + last.mask, last.bias.copy()))
    new, info = calibrate.calibrate_board(c, net, train, test, 0.0)
    assert new is None and "no better" in info["kept"] and info["after"] == info["before"]
    r = info["held_out_logit_rms"]
    assert r["refit"] > r["trained"]
    assert info["train_samples"] == 64 and info["held_out"] == 12


def test_a_distorted_board_is_refitted_toward_the_float_net():
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    # a board whose ADC reads every code 30% low: the refit undoes the gain
    train = (fixed.input_codes(c, net, x=c.reference.calibration_x) * 0.7).astype(np.int64)
    test = (fixed.input_codes(c, net) * 0.7).astype(np.int64)
    new, info = calibrate.calibrate_board(c, net, train, test, 0.0)
    assert new is not None and "kept" not in info
    r = info["held_out_logit_rms"]
    assert r["refit"] < 0.5 * r["trained"]
    # undoing the gain needs weights 1/0.7 as large: the 16-bit accumulator of neuron 1
    # would need 17 bits, so the refit runs at half the logit scale
    with pytest.raises(FixedPointError, match=r"neuron 1: .* needs a 17-bit accumulator"):
        fixed.loadable_update(net, weights=[calibrate.fit_readout(
            train, c.forward(c.reference.calibration_x)[-1] * 2.0 ** 12, net.layers[-1], 0.0)[0]])
    assert info["logit_scale"] == 0.5
    s = info["logit_scale"]
    teacher = c.forward(c.reference.calibration_x)[-1] * 2.0 ** net.layers[-1].weight_frac[0]
    assert calibrate.logit_rms(new, train, s * teacher) / s < \
        0.5 * calibrate.logit_rms(net, train, teacher)
    torch_cls = c.reference.outputs[-1].argmax(1)
    assert info["after"]["agreement"] == float((new.forward(test)["cls"] == torch_cls).mean())


def tiny_cfg(**over):
    return cfgmod.validate({
        "experiment": "tiny", "rtl": {"shapes": "serial", "digital_shapes": "none",
                                      "large_part": "none"},
        "analog": {"tolerances": [0.2], "opamp": "lm358"},
        "calibrate": {"boards": 2, "gate_boards": 1, **over}}, "<test>")


@pytest.mark.slow
@pytest.mark.parametrize("make", [tiny_crystal, tiny_deep_crystal])
def test_stage_loads_the_refit_into_the_gate_netlist(tmp_path, make):
    from crystalbench.rtl import flow as synth_stage

    c = make(n_test=10)
    cm.save(c, tmp_path / c.name / "crystal")
    paths = Paths(tmp_path, c.name)
    cfg = tiny_cfg()
    synth_stage.run(c, cfg, paths)
    fixed_file = paths.stage("fixed") / fixed.FILE_NAME
    fixed_before = fixed_file.read_bytes()
    lines = []
    res = calibrate.run(c, cfg, paths, lines.append)
    assert fixed_file.read_bytes() == fixed_before  # the trained frontier is never written
    assert res["boards"] == 2 and len(res["per_board"]) == 2
    net = fixed.nets_of(fixed.load(paths.stage("fixed"), c))["frontier"]
    for row in res["per_board"]:  # tolerance 0.2 + LM358: both boards are refitted (seed 0)
        assert row["train_samples"] == 64 and "kept" not in row and "refused" not in row
        art = json.loads(Path(row["artifact"]).read_text())
        assert art["board"]["index"] == row["board"] and art["board"]["tolerance"] == 0.2
        assert art["board"]["opamp"] == "lm358" and art["fixed_digest"] == res["fixed_digest"]
        new = fixed.loadable_update(net, weights=[np.array(ly["weights"]) for ly in art["layers"]],
                                    biases=[np.array(ly["bias"]) for ly in art["layers"]])
        assert art["weights_digest"] == row["weights_digest"] == fixed.weights_digest(new)
        assert art["weights_digest_trained"] == fixed.weights_digest(net)
        assert [tuple(w) for w in art["load_words"]] == design.load_words(new, live=net)
    b0, b1 = res["per_board"]
    assert b0["gate_level"]["bit_exact_fraction"] == 1.0 and res["gate_level_bit_exact"]
    assert b0["gate_level"]["accuracy"] == b0["after"]["accuracy"]
    assert b0["gate_level"]["words_loaded"] == len(
        json.loads(Path(b0["artifact"]).read_text())["load_words"]) > 0
    assert "gate_level" not in b1  # calibrate.gate_boards = 1
    assert any(line.startswith("board 0: frontier_serial_gates") for line in lines)
    assert res["passed"] and res["boards_improved_or_equal"] == 2
    assert res["accuracy_after"]["mean"] == pytest.approx(
        np.mean([r["after"]["accuracy"] for r in res["per_board"]]))


def test_baked_frontier_is_refused(tmp_path):
    from crystalbench.rtl import flow as synth_stage

    c = tiny_crystal()
    cm.save(c, tmp_path / "tiny" / "crystal")
    paths = Paths(tmp_path, "tiny")
    cfg = cfgmod.validate({"experiment": "tiny", "rtl": {"shapes": "parallel",
                                                         "digital_shapes": "none",
                                                         "parallel_weights": "baked",
                                                         "large_part": "none", "abc": "fast"}},
                          "<test>")
    synth_stage.run(c, cfg, paths)
    with pytest.raises(SimError, match=r"baked weights; calibration loads new ones: set "
                                       r"rtl.serial_weights \(or rtl.parallel_weights\) to "
                                       r"loadable"):
        calibrate.run(c, cfg, paths)
