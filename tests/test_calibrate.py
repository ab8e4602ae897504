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


@pytest.mark.slow  # synth through Yosys; the stage's refusal itself is pinned by the stubbed test below
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


# ---- fast, exact figures (mutation testing: every comparison, constant and key pinned) -------
def test_fit_readout_tiny_least_squares_rounds_and_clips_at_the_weight_limits():
    """One input read as 0 and 1 (X = [[0, 1], [1, 1]]): the fit reproduces each target
    exactly, w = t1 - t0, b = t0; then rounded to the nearest integer and the weights (not the
    biases) clipped to 8 bits, -128..127: at the limits, just past them, and either side of
    the .5 edges (3.49 / 3.51, 127.49 / 127.51 rounded then clipped)."""
    a = np.array([[0.0], [1.0]])
    want_w = [127, 128, -128, -129, 2.4, 2.6, -2.6, 127.49, 127.51, -128.49, -128.51]
    want_b = [-3, 0, 5, 0, -7.6, 3.49, 3.51, -3.51, 300, -300, 0.4]
    target = np.array([want_b, np.add(want_w, want_b)])
    n = len(want_w)
    trained = readout(np.zeros((n, 1)), np.ones((n, 1), bool), np.zeros(n))
    w, b = calibrate.fit_readout(a, target, trained, ridge=0.0)
    assert w[:, 0].tolist() == [127, 127, -128, -128, 2, 3, -3, 127, 127, -128, -128]
    assert b.tolist() == [-3, 0, 5, 0, -8, 3, 4, -4, 300, -300, 0]
    assert w.dtype == b.dtype == np.int64
    # 4 bits: -8..7
    narrow = readout(np.zeros((4, 1)), np.ones((4, 1), bool), np.zeros(4), weight_bits=4)
    w4, _ = calibrate.fit_readout(a, np.array([[0.0] * 4, [7, 8, -8, -9]]), narrow, ridge=0.0)
    assert w4[:, 0].tolist() == [7, 7, -8, -8]


def test_fit_readout_ridge_by_hand():
    """Inputs 0 and 2, targets 0 and 22, trained (w, b) = (1, 2). X'X = [[4, 2], [2, 2]], its
    mean diagonal 3, so ridge 1/3 is lam = 1: (X'X + I) theta = X't + theta0 = (45, 24),
    theta = [[3, -2], [-2, 5]] / 11 (45, 24) = (87/11, 30/11) = (7.91, 2.73) -> (8, 3).
    Without the ridge: the exact fit (11, 0)."""
    a = np.array([[0.0], [2.0]])
    target = np.array([[0.0], [22.0]])
    trained = readout([[1]], [[True]], [2])
    w, b = calibrate.fit_readout(a, target, trained, ridge=1 / 3)
    assert (w.tolist(), b.tolist()) == ([[8]], [3])
    w, b = calibrate.fit_readout(a, target, trained, ridge=0.0)
    assert (w.tolist(), b.tolist()) == ([[11]], [0])
    # two classes over different connections: each its own fit, each pulled to its own
    two = readout([[1, 0], [0, 5]], [[True, False], [False, True]], [2, -4])
    a2 = np.array([[0.0, 1.0], [2.0, 3.0]])  # class 1 reads input 1: X = [[1, 1], [3, 1]]
    # class 1: X'X = [[10, 4], [4, 2]], mean diag 6, ridge 1/6 -> lam 1; targets 4, 10:
    # X't = (34, 14); + theta0 (5, -4) = (39, 10); [[11, 4], [4, 3]]^-1 = [[3, -4], [-4, 11]] / 17
    # -> ((117 - 40) / 17, (-156 + 110) / 17) = (4.53, -2.71) -> (5, -3)
    w, b = calibrate.fit_readout(a2, np.array([[0.0, 4.0], [22.0, 10.0]]), two, ridge=1 / 6)
    # class 0 reads input 0 (inputs 0 and 2 as above): mean diag 3, ridge 1/6 -> lam 0.5:
    # [[4.5, 2], [2, 2.5]] theta = X't + 0.5 theta0 = (44 + 0.5, 22 + 1) = (44.5, 23); det 7.25
    # theta = ((2.5 x 44.5 - 2 x 23) / 7.25, (4.5 x 23 - 2 x 44.5) / 7.25) = (9.00, 2.0)
    assert w.tolist() == [[9, 0], [0, 5]] and b.tolist() == [2, -3]


def test_scores_exact_fractions_on_the_first_n():
    from types import SimpleNamespace

    # labels and torch's classes (argmax of the LAST output; the hidden one would say
    # otherwise) over 6 samples; scores reads the first n = 4
    y = np.array([0, 1, 2, 1, 2, 2])
    logits = np.array([[5, 0, 0], [0, 0, 5], [0, 0, 5], [0, 5, 0], [9, 0, 0], [9, 0, 0]], float)
    hidden = np.array([[0, 9, 0]] * 6, float)
    c = SimpleNamespace(reference=SimpleNamespace(y=y, outputs=(hidden, logits)))
    cls = np.array([0, 1, 1, 2])  # vs labels 0 1 2 1: 2 of 4; vs torch 0 2 2 1: 1 of 4
    assert calibrate.scores(cls, c, 4) == {"accuracy": 0.5, "agreement": 0.25}
    assert calibrate.scores(np.array([0, 1, 2, 1, 2]), c, 5) == {"accuracy": 1.0,
                                                                   "agreement": 0.6}
    s = calibrate.scores(np.array([2]), c, 1)
    assert s == {"accuracy": 0.0, "agreement": 0.0} and type(s["accuracy"]) is float


def board_row(before, after, **flags):
    return {"before": {"accuracy": before[0], "agreement": before[1]},
            "after": {"accuracy": after[0], "agreement": after[1]}, **flags}


def test_summarize_exact_over_hand_made_boards():
    rows = [board_row((0.5, 0.75), (0.75, 1.0)),                       # better
            board_row((0.75, 0.375), (0.75, 0.375), kept="no better"),  # equal
            board_row((1.0, 1.0), (0.5, 0.25)),                         # worse
            board_row((0.25, 0.5), (1.0, 0.75)),                        # better
            board_row((0.5, 0.625), (0.5, 0.625), refused="wraps"),     # equal
            board_row((0.25, 0.125), (0.25, 0.125), refused="wraps")]   # equal
    # better 2, equal 3, worse 1: >= counts 5 (> 2, <= 4, < 1, == 3)
    assert calibrate.summarize(rows, 0.875) == {
        "float_test_accuracy": 0.875,
        "accuracy_before": {"mean": 3.25 / 6, "min": 0.25},
        "accuracy_after": {"mean": 3.75 / 6, "min": 0.25},
        "agreement_before": {"mean": 3.375 / 6, "min": 0.125},
        "agreement_after": {"mean": 3.125 / 6, "min": 0.125},
        "gap_to_float_pp_after": pytest.approx((0.875 - 3.75 / 6) * 100, rel=1e-12),
        "boards_improved_or_equal": 5, "boards_refused": 2, "boards_kept": 1}
    # min and mean told apart from each other and across the four figures
    rows[5] = board_row((0.375, 0.25), (0.125, 0.5))
    s = calibrate.summarize(rows, 0.5)
    assert s["accuracy_before"] == {"mean": 3.375 / 6, "min": 0.25}
    assert s["accuracy_after"] == {"mean": 3.625 / 6, "min": 0.125}
    assert s["agreement_before"] == {"mean": 3.5 / 6, "min": 0.25}
    assert s["agreement_after"] == {"mean": 3.5 / 6, "min": 0.25}
    assert s["gap_to_float_pp_after"] == pytest.approx((0.5 - 3.625 / 6) * 100, rel=1e-12)
    assert (s["boards_improved_or_equal"], s["boards_refused"], s["boards_kept"]) == (4, 1, 1)


def test_summarize_one_board():
    s = calibrate.summarize([board_row((0.5, 0.25), (0.75, 0.625))], 1.0)
    assert s == {"float_test_accuracy": 1.0, "accuracy_before": {"mean": 0.5, "min": 0.5},
                 "accuracy_after": {"mean": 0.75, "min": 0.75},
                 "agreement_before": {"mean": 0.25, "min": 0.25},
                 "agreement_after": {"mean": 0.625, "min": 0.625},
                 "gap_to_float_pp_after": 25.0, "boards_improved_or_equal": 1,
                 "boards_refused": 0, "boards_kept": 0}
    worse = calibrate.summarize([board_row((0.5, 0.5), (0.4375, 0.5))], 0.5)
    assert worse["boards_improved_or_equal"] == 0 and worse["gap_to_float_pp_after"] == 6.25
    assert all(type(v) is int for k, v in worse.items() if k.startswith("boards_"))


def summary_result(per_board, **over):
    return {"boards": 3, "opamp": "TI LM358", "e_series": "E96", "tolerance": 0.05,
            "adc_part": "Microchip MCP3008", "adc_bits": 8,
            "accuracy_before": {"mean": 0.812345, "min": 0.70006},
            "accuracy_after": {"mean": 0.9, "min": 0.87654},
            "float_test_accuracy": 0.93219, "gap_to_float_pp_after": 3.219,
            "boards_improved_or_equal": 2, "boards_refused": 1, "boards_kept": 0,
            "per_board": per_board, **over}


def test_summary_lines_exact():
    r = summary_result([{"board": 0, "gate_level": {"bit_exact_fraction": 1.0}}, {"board": 1},
                        {"board": 2, "gate_level": {"bit_exact_fraction": 0.987654}}])
    assert calibrate.summary_lines(r) == [
        "calibrated 3 boards (TI LM358, E96 +-0.05, Microchip MCP3008, 8 bits): test accuracy "
        "mean 0.8123 (min 0.7001) -> 0.9000 (min 0.8765); float crystal 0.9322 (3.22 pp above "
        "the calibrated mean)",
        "2 of 3 boards improved or equal; 1 refused, 0 kept the trained weights (refit no "
        "better on held-out training inputs)",
        "gate level with the loaded weights: board 0 bit-exact 1.0000, board 2 bit-exact 0.9877"]
    # no board through the gates: two lines; :g keeps 1e-05, a negative gap keeps its sign
    r = summary_result([{"board": 0}, {"board": 1}], boards=2, tolerance=1e-5, adc_bits=10,
                       gap_to_float_pp_after=-0.125, boards_refused=0, boards_kept=2,
                       boards_improved_or_equal=0)
    assert calibrate.summary_lines(r) == [
        "calibrated 2 boards (TI LM358, E96 +-1e-05, Microchip MCP3008, 10 bits): test accuracy "
        "mean 0.8123 (min 0.7001) -> 0.9000 (min 0.8765); float crystal 0.9322 (-0.12 pp above "
        "the calibrated mean)",
        "0 of 2 boards improved or equal; 0 refused, 2 kept the trained weights (refit no "
        "better on held-out training inputs)"]
    one = summary_result([{"board": 4, "gate_level": {"bit_exact_fraction": 0.5}}])
    assert calibrate.summary_lines(one)[2] == ("gate level with the loaded weights: board 4 "
                                               "bit-exact 0.5000")


def teacher_target(c, net):
    """The float crystal's logits on the stored training inputs x 2^weight_frac."""
    return c.forward(c.reference.calibration_x)[-1].astype(np.float64) * \
        2.0 ** net.layers[-1].weight_frac.astype(np.float64)[None, :]


def spy_fit_readout(monkeypatch, replace=None):
    """Record every (inputs, target, ridge) fit_readout is called with."""
    calls, real = [], calibrate.fit_readout

    def spy(inputs, target, layer, ridge):
        calls.append((inputs.copy(), target.copy(), ridge))
        return (replace or real)(inputs, target, layer, ridge)
    monkeypatch.setattr(calibrate, "fit_readout", spy)
    return calls


def test_refit_keeps_the_hidden_layer_and_takes_the_largest_scale_that_loads(monkeypatch):
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    inputs = calibrate.readout_inputs(net, fixed.input_codes(c, net, x=c.reference.calibration_x))
    target = teacher_target(c, net)
    last = net.layers[-1]
    for times, scale in ((1, 1.0), (4, 0.5), (8, 0.25), (16, 0.125)):
        calls = spy_fit_readout(monkeypatch)
        new, got = calibrate.refit(net, inputs, times * target, 1e-4)
        assert got == scale
        tried = [s for s in (1.0, 0.5, 0.25, 0.125) if s >= scale]  # in this order
        assert len(calls) == len(tried)
        for (i, t, r), s in zip(calls, tried):  # powers of two: exact
            assert np.array_equal(t, s * times * target) and np.array_equal(i, inputs)
            assert r == 1e-4
        monkeypatch.undo()
        w, b = calibrate.fit_readout(inputs, scale * times * target, last, 1e-4)
        assert new.layers[-1].weights.tolist() == w.tolist() and new.layers[-1].bias.tolist() == \
            b.tolist()
        assert new.layers[0].weights.tolist() == net.layers[0].weights.tolist()  # kept
        assert new.layers[0].bias.tolist() == net.layers[0].bias.tolist()
    # a wrap even at 1/8 of the scale: refused with the last attempt's own error
    w, b = calibrate.fit_readout(inputs, 0.125 * 64 * target, last, 1e-4)
    with pytest.raises(FixedPointError) as want:
        fixed.loadable_update(net, weights=[None, w], biases=[None, b])
    calls = spy_fit_readout(monkeypatch)
    with pytest.raises(FixedPointError) as e:
        calibrate.refit(net, inputs, 64 * target, 1e-4)
    assert str(e.value) == str(want.value) and len(calls) == 4


def relabelled_board(gain=0.6):
    """The tiny crystal with 40 test samples, every fifth label moved to the next class (so
    accuracy and agreement differ), and a board whose ADC reads every code `gain` low."""
    import dataclasses

    from hw_tiny import fp_cfg

    c = tiny_crystal(n_test=40)
    net = fixed.nets_of(fixed.quantize(c, fp_cfg(), 8))["frontier"]
    y = c.reference.y.copy()
    y[::5] = (y[::5] + 1) % 3
    c = dataclasses.replace(c, reference=dataclasses.replace(c.reference, y=y))
    train = (fixed.input_codes(c, net, x=c.reference.calibration_x) * gain).astype(np.int64)
    test = (fixed.input_codes(c, net) * gain).astype(np.int64)
    return c, net, train, test


def by_hand_scores(c, cls):
    torch_cls = c.reference.outputs[-1].argmax(1)
    return {"accuracy": float(np.mean(cls == c.reference.y)),
            "agreement": float(np.mean(cls == torch_cls))}


def rms(logits, target):
    return float(np.sqrt(np.mean((logits - target) ** 2)))


def test_calibrate_board_loads_a_better_refit_with_every_figure_by_hand(monkeypatch):
    c, net, train, test = relabelled_board()
    target = teacher_target(c, net)
    idx = np.random.default_rng(3).permutation(64)
    hold, fit = idx[:12], idx[12:]  # 64 // 5 = 12 held out
    last = net.layers[-1]

    def first_loading(inputs, tgt):
        for s in (1.0, 0.5, 0.25, 0.125):
            w, b = calibrate.fit_readout(inputs, s * tgt, last, 1e-4)
            try:
                return fixed.loadable_update(net, weights=[w], biases=[b]), s
            except FixedPointError:
                pass

    trial, s_trial = first_loading(train[fit], target[fit])
    full, s_full = first_loading(train, target)
    assert s_trial == s_full == 0.5  # the held-out RMS is compared at the trained scale
    rms_old = rms(net.forward(train[hold])["logits"], target[hold])
    rms_new = rms(trial.forward(train[hold])["logits"], 0.5 * target[hold]) / 0.5
    assert rms_new < rms_old
    calls = spy_fit_readout(monkeypatch)
    new, info = calibrate.calibrate_board(c, net, train, test, 1e-4, seed=3)
    # the trial on the 52 fitted inputs, then on all 64, each at 1 then 1/2 of the scale
    assert [len(i) for i, _, _ in calls] == [52, 52, 64, 64]
    assert np.array_equal(calls[0][0], train[fit]) and np.array_equal(calls[0][1], target[fit])
    assert np.array_equal(calls[3][1], 0.5 * target) and {r for *_, r in calls} == {1e-4}
    assert fixed.weights_digest(new) == fixed.weights_digest(full)
    before = by_hand_scores(c, net.forward(test)["cls"])
    after = by_hand_scores(c, full.forward(test)["cls"])
    assert (before, after) == ({"accuracy": 0.775, "agreement": 0.975},
                               {"accuracy": 0.8, "agreement": 1.0})
    fs = info.pop("fit_seconds")
    assert 0 <= fs < 30
    assert info == {"before": before, "train_samples": 64, "held_out": 12,
                    "held_out_logit_rms": {"trained": pytest.approx(rms_old, rel=1e-12),
                                           "refit": pytest.approx(rms_new, rel=1e-12)},
                    "logit_scale": 0.5, "after": after}


def test_calibrate_board_keeps_the_trained_readout_when_the_refit_only_ties(monkeypatch):
    """A refit equal to the trained readout has the same held-out RMS: not loaded (the refit
    must be strictly better). The default seed is 0."""
    c, net, train, test = relabelled_board()
    last = net.layers[-1]
    calls = spy_fit_readout(monkeypatch, lambda *a: (last.weights.copy(), last.bias.copy()))
    new, info = calibrate.calibrate_board(c, net, train, test, 0.0)
    hold = np.random.default_rng(0).permutation(64)[:12]
    r = rms(net.forward(train[hold])["logits"], teacher_target(c, net)[hold])
    assert new is None and len(calls) == 1
    assert np.array_equal(calls[0][0], train[np.random.default_rng(0).permutation(64)[12:]])
    before = by_hand_scores(c, net.forward(test)["cls"])
    del info["fit_seconds"]
    assert info == {"before": before, "train_samples": 64, "held_out": 12,
                    "held_out_logit_rms": {"trained": pytest.approx(r, rel=1e-12),
                                           "refit": pytest.approx(r, rel=1e-12)},
                    "kept": "the refit was no better on the held-out training inputs",
                    "after": before}
    assert info["held_out_logit_rms"]["trained"] == info["held_out_logit_rms"]["refit"]


def test_calibrate_board_refused_when_no_scale_loads(monkeypatch):
    c, net, train, test = relabelled_board()
    last = net.layers[-1]
    huge = (last.weights * 0 + 1000, last.bias.copy())  # outside 8-bit weights at any scale
    with pytest.raises(FixedPointError) as want:
        fixed.loadable_update(net, weights=[huge[0]], biases=[huge[1]])
    calls = spy_fit_readout(monkeypatch, lambda *a: huge)
    new, info = calibrate.calibrate_board(c, net, train, test, 0.0, seed=1)
    assert new is None and len(calls) == 4
    before = by_hand_scores(c, net.forward(test)["cls"])
    assert 0 <= info.pop("fit_seconds") < 30
    assert info == {"before": before, "train_samples": 64, "held_out": 12,
                    "refused": str(want.value), "after": before}


def board_cfg(**top):
    """Seed 7, LM358 (offsets drawn), a second tolerance that must not be the one used."""
    return cfgmod.validate({"experiment": "tiny", "seed": 7,
                            "analog": {"tolerances": [0.2, 0.05], "opamp": "lm358"}, **top},
                           "<test>")


def test_board_draws_are_cfg_seed_draws_in_order():
    from crystalbench import adc as adc_mod
    from crystalbench.analog import flow as analog_flow
    from crystalbench.sim import hybrid

    c = tiny_crystal()
    cfg = board_cfg()
    b = analog_flow.prepare(c, cfg.analog, cfg.adc.bits)
    part = adc_mod.part_for("mcp3008")
    plan = adc_mod.channel_plan(part, 10, 1.0)  # 2 chips: two offsets, two gains a board
    gen = calibrate.board_draws(b, part, plan, cfg)
    got = [next(gen) for _ in range(3)]
    rng = np.random.default_rng(7)
    for d in got:  # the same calls in the same order: the core's board, then the ADC's
        r_scale, vos = analog_flow.draw_board(b.design, 0.2, True, rng)
        off, gain = hybrid.draw_adc_errors(part, plan, rng)
        assert list(d) == ["r_scale", "vos", "offset_lsb", "gain_lsb"]
        assert d["r_scale"] == r_scale and d["vos"] == vos and len(vos) > 0
        assert d["offset_lsb"].tolist() == off.tolist() and d["gain_lsb"].tolist() == gain.tolist()
        assert all(0.8 <= v <= 1.2 for k, v in r_scale.items() if k[0] != "inv")
    assert got[0]["r_scale"] != got[1]["r_scale"] != got[2]["r_scale"]
    assert got[0]["offset_lsb"][0] != got[0]["offset_lsb"][5]  # per chip
    # again from the start: the same boards (a fresh generator, a fresh rng from cfg.seed)
    again = next(calibrate.board_draws(b, part, plan, cfg))
    assert again["r_scale"] == got[0]["r_scale"] and again["vos"] == got[0]["vos"]
    # no op-amp offsets: none drawn (cfg.analog.opamp_offset is passed through)
    no_vos = board_cfg(analog={"tolerances": [0.2, 0.05], "opamp": "lm358",
                               "opamp_offset": False})
    d = next(calibrate.board_draws(b, part, plan, no_vos))
    assert d["vos"] == {}


def test_first_board_is_board0_through_ngspice(tmp_path):
    from crystalbench import adc as adc_mod
    from crystalbench.analog import flow as analog_flow
    from crystalbench.sim import hybrid

    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    cfg = board_cfg()
    x = c.reference.x[:5]  # float32: read as float64
    got = calibrate.first_board(c, cfg, net, x, tmp_path / "b0.cir")
    # board 0 by hand: seed 7, tolerance 0.2 (the first), offsets; one MCP3008 for the 4
    # boundary neurons (one offset and gain for all), VREF 256/255 V for a 1 V core at 8 bits
    b = analog_flow.prepare(c, cfg.analog, 8)
    part = adc_mod.part_for("mcp3008")
    rng = np.random.default_rng(7)
    r_scale, vos = analog_flow.draw_board(b.design, 0.2, True, rng)
    off, gain = hybrid.draw_adc_errors(part, adc_mod.channel_plan(part, 4, 256 / 255), rng)
    want = hybrid.board_volts(b, net, x.astype(np.float64), {"r_scale": r_scale, "vos": vos},
                              tmp_path / "want.cir")
    assert (tmp_path / "b0.cir").read_text() == (tmp_path / "want.cir").read_text()
    assert set(got) == {"part", "volts", "vref", "offset_lsb", "gain_lsb", "tolerance", "opamp",
                        "e_series"}
    np.testing.assert_array_equal(got["volts"], want)
    assert got["volts"].shape == (5, 4)
    assert got["part"] == "mcp3008" and got["vref"] == pytest.approx(256 / 255, rel=1e-15)
    assert got["offset_lsb"].tolist() == [off[0]] * 4 and got["gain_lsb"].tolist() == [gain[0]] * 4
    assert got["offset_lsb"].tolist() == off.tolist() and got["gain_lsb"].tolist() == gain.tolist()
    assert (got["tolerance"], got["opamp"], got["e_series"]) == (0.2, "TI LM358 (LM358B dynamics)",
                                                                  "E96")
    # board 1 would have read other volts: board 0 is the one the netlist holds
    r1, v1 = analog_flow.draw_board(b.design, 0.2, True, rng)
    other = hybrid.board_volts(b, net, x.astype(np.float64), {"r_scale": r1, "vos": v1},
                               tmp_path / "b1.cir")
    assert np.abs(other - want).max() > 1e-3


def test_write_artifact_exact_file(tmp_path):
    import hashlib

    from crystalbench import adc as adc_mod

    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    w = net.layers[0].weights.copy()
    b = net.layers[0].bias.copy()
    w[1, 2] += 1
    b[2] -= 5
    new = fixed.loadable_update(net, weights=[w], biases=[b])
    cfg = board_cfg()
    path = tmp_path / "calibrate" / "board3.json"  # the folder is made
    got = calibrate.write_artifact(path, c, cfg, {"fixed_digest": "f00dfeed"}, "frontier_serial",
                                   net, new, 3, 0.05, adc_mod.part_for("mcp3008"))
    assert got == path

    def wd(ws, bs):
        return hashlib.sha256(json.dumps([[ws.tolist(), bs.tolist()]]).encode()).hexdigest()[:16]
    # the 3 x 4 readout, all connections: weight (1, 2) at address 1 x 4 + 2, bias 2 at 12 + 2
    want = {"kind": "calibrated_frontier", "design": "frontier_serial",
            "crystal_digest": cm.digest(c), "fixed_digest": "f00dfeed",
            "board": {"index": 3, "seed": 7, "tolerance": 0.05, "opamp": "lm358",
                      "e_series": "E96", "adc_part": "mcp3008", "adc_bits": 8},
            "weights_digest_trained": wd(net.layers[0].weights, net.layers[0].bias),
            "weights_digest": wd(w, b),
            "layers": [{"weights": w.tolist(), "bias": b.tolist()}],
            "load_words": [[6, int(w[1, 2])], [14, int(b[2])]]}
    assert path.read_text() == json.dumps(want, indent=2) + "\n"
    assert want["weights_digest"] != want["weights_digest_trained"]
    assert [p.name for p in path.parent.iterdir()] == ["board3.json"]  # no temporary left

    # a failure while writing leaves the previous file whole and no temporary behind
    before = path.read_bytes()
    with pytest.raises(TypeError):
        calibrate.write_artifact(path, c, cfg, {"fixed_digest": object()}, "frontier_serial",
                                 net, new, 3, 0.05, adc_mod.part_for("mcp3008"))
    assert path.read_bytes() == before
    assert [p.name for p in path.parent.iterdir()] == ["board3.json"]


def test_scores_read_the_last_of_three_outputs():
    """torch's classes are the argmax of the last output even when there are three (the
    second, hidden, would say otherwise)."""
    from types import SimpleNamespace

    y = np.array([0, 1, 2])
    logits = np.array([[5, 0, 0], [0, 5, 0], [0, 0, 5]], float)
    hidden = np.array([[0, 0, 9, 0]] * 3, float)
    c = SimpleNamespace(reference=SimpleNamespace(y=y, outputs=(hidden, hidden[:, ::-1], logits)))
    assert calibrate.scores(np.array([0, 1, 2]), c, 3) == {"accuracy": 1.0, "agreement": 1.0}


def test_calibrate_board_scores_only_the_test_codes_it_is_given(monkeypatch):
    """`board calibrate --vectors 30`: 30 test codes of the 40 in the split; before and
    after are the figures of those 30 against their own labels and torch's classes."""
    c, net, train, test = relabelled_board()
    part = test[:30]
    new, info = calibrate.calibrate_board(c, net, train, part, 1e-4, seed=3)
    assert new is not None  # the refit loads (as on all 40): "after" is the new net's
    torch_cls = c.reference.outputs[-1].argmax(1)[:30]
    y = c.reference.y[:30]
    for key, n in (("before", net), ("after", new)):
        cls = n.forward(part)["cls"]
        assert info[key] == {"accuracy": float(np.mean(cls == y)),
                             "agreement": float(np.mean(cls == torch_cls))}


def test_calibrate_board_teacher_is_the_last_layer_of_a_deep_crystal(monkeypatch):
    """tiny_deep (layers 5, 4, 3): the target is the float crystal's logits, not its
    second hidden layer."""
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    train = fixed.input_codes(c, net, x=c.reference.calibration_x)
    test = fixed.input_codes(c, net)
    calls = spy_fit_readout(monkeypatch)
    calibrate.calibrate_board(c, net, train, test, 1e-4, seed=2)
    fit = np.random.default_rng(2).permutation(len(train))[len(train) // 5:]
    assert np.array_equal(calls[0][1], teacher_target(c, net)[fit])
    assert np.array_equal(calls[0][0], calibrate.readout_inputs(net, train)[fit])


def test_fit_readout_jitter_pulls_a_singular_fit_toward_zero():
    """Without ridge and with an input that is always 0, X'X is singular; the 1e-9 added
    to its diagonal makes it solvable and pulls toward zero: the weight of the dead input
    is 0 and a bias of exactly 2.5 (the mean target) comes out a hair below, so 2."""
    layer = readout([[7]], [[True]], [-3])
    w, b = calibrate.fit_readout(np.zeros((1, 1)), np.array([[2.5]]), layer, 0.0)
    assert w.tolist() == [[0]] and b.tolist() == [2]
    w, b = calibrate.fit_readout(np.zeros((1, 1)), np.array([[-1.5]]), layer, 0.0)
    assert w.tolist() == [[0]] and b.tolist() == [-1]


def test_first_board_passes_its_log_to_the_core_design(tmp_path):
    """analog.r_max 100k: one weight of the tiny crystal needs a larger resistor; the core
    design's warning reaches first_board's log."""
    c, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    cfg = board_cfg(analog={"tolerances": [0.2, 0.05], "opamp": "lm358", "r_max": 1e5})
    lines = []
    calibrate.first_board(c, cfg, net, c.reference.x[:2], tmp_path / "b0.cir", lines.append)
    assert len(lines) == 1 and lines[0].startswith(
        "analog: warning: 1 weights need a resistor outside analog.r_min..r_max")


# ---- the stage's wiring, ngspice and the gate netlist stubbed ----------------------------------
def stubbed_stage(monkeypatch, gains=(0.6, 1.0, 0.6), gate=1.0, fail_board=None):
    """calibrate.run's parts: sim-analog's core (real), synth's frontier (the tiny crystal's,
    loadable), every board's codes = the ideal ADC's x gains[k] (stubbed ngspice), the gate
    netlist stubbed (bit-exact `gate`); returns (crystal, net, what the stubs were given)."""
    import dataclasses
    import time

    from crystalbench.sim import hybrid

    c = tiny_crystal(n_test=40)
    y = c.reference.y.copy()
    y[::5] = (y[::5] + 1) % 3
    c = dataclasses.replace(c, reference=dataclasses.replace(c.reference, y=y))
    from hw_tiny import fp_cfg

    net = fixed.nets_of(fixed.quantize(c, fp_cfg(), 8))["frontier"]
    d = {"weights": "loadable", "design_latency_cycles": 9}
    got = {"codes": [], "design": [], "cfg": [], "asked": [], "cores": []}
    monkeypatch.setattr(hybrid, "frontier_design",
                        lambda *a: got["asked"].append(a) or ("fs", d, net, {"fixed_digest": "f"}))

    def board_codes(b, n, part, vref, bits, x, draw, path):
        k = len(got["codes"])
        got["cores"].append(b)
        got["codes"].append((n, part.key, vref, bits, x.copy(), draw, path))
        time.sleep(0.0123)  # ngspice's seconds come out with a third digit to round off
        if k == fail_board:
            raise SimError("ngspice stopped")
        return (fixed.input_codes(c, net, x=x) * gains[k]).astype(np.int64)

    def run_design(c_, cfg, out, name, d_, new, codes, waves, log, levels=None, load=None):
        assert c_ is c
        got["cfg"].append(cfg)
        got["design"].append((out, name, d_, fixed.weights_digest(new), codes.copy(), waves,
                              levels, load))
        log("fs_gates: stubbed")
        return {"fs_gates": {"bit_exact_fraction": gate, "fixed_point_test_accuracy": 0.125,
                             "class_agreement_with_torch": 0.25}}
    monkeypatch.setattr(hybrid, "board_codes", board_codes)
    monkeypatch.setattr(calibrate.sim_flow, "run_design", run_design)
    return c, net, d, got


def test_stage_every_field_with_ngspice_and_the_gates_stubbed(monkeypatch, tmp_path):
    """Three boards (seed 5): boards 0 and 2 read every code 0.6 low (the refit loads),
    board 1 reads them right (the refit is no better: kept); the first two boards through
    the (stubbed) gate netlist; every field of the result and the log by hand."""
    from crystalbench import adc as adc_mod
    from crystalbench.analog import flow as analog_flow
    from crystalbench.crystal import digest

    c, net, d, got = stubbed_stage(monkeypatch)
    paths = Paths(tmp_path, c.name)
    cfg = cfgmod.validate({"experiment": "tiny", "seed": 5,
                           "analog": {"tolerances": [0.2, 0.05], "opamp": "lm358"},
                           "calibrate": {"boards": 3, "gate_boards": 2, "ridge": 1e-3}}, "<test>")
    lines = []
    res = calibrate.run(c, cfg, paths, lines.append)
    out = paths.stage("calibrate")
    b = analog_flow.prepare(c, cfg.analog, 8)
    part = adc_mod.part_for("mcp3008")
    vref = adc_mod.check_part(part, 8, 1.0)
    plan = adc_mod.channel_plan(part, 4, vref)
    x_all = np.vstack([c.reference.calibration_x.astype(np.float64), b.x])
    m = len(c.reference.calibration_x)
    assert (m, len(b.x)) == (64, 40)
    draws = calibrate.board_draws(b, part, plan, cfg)

    def resistors(core):
        return [(n.layer, n.index, n.rf, n.inputs, n.bias) for n in core.design.neurons]
    want_rows = []
    for k, gain in enumerate((0.6, 1.0, 0.6)):
        n_, key, v, bits, x, draw, path = got["codes"][k]
        # ngspice runs the core sim-analog prepared (its design and test inputs)
        assert resistors(got["cores"][k]) == resistors(b) and len(resistors(b)) > 0
        np.testing.assert_array_equal(got["cores"][k].x, b.x)
        want_draw = next(draws)
        assert (n_, key, v, bits, path) == (net, "mcp3008", vref, 8, out / f"board{k}.cir")
        np.testing.assert_array_equal(x, x_all)
        assert draw["r_scale"] == want_draw["r_scale"] and draw["vos"] == want_draw["vos"]
        assert draw["offset_lsb"].tolist() == want_draw["offset_lsb"].tolist()
        codes = (fixed.input_codes(c, net, x=x_all) * gain).astype(np.int64)
        new, fig = calibrate.calibrate_board(c, net, codes[:m], codes[m:], 1e-3, 5 + k)
        del fig["fit_seconds"]
        row = {"board": k, **fig}
        if new is not None:
            words = design.load_words(new, live=net)
            row.update(weights_digest=fixed.weights_digest(new),
                       artifact=str(out / f"board{k}.json"))
            if k < 2:  # calibrate.gate_boards
                g_out, g_name, g_d, g_digest, g_codes, waves, levels, load = got["design"][0]
                assert (g_out, g_name, g_d, g_digest, waves, levels, load) == (
                    out / f"board{k}", "fs", d, fixed.weights_digest(new), False, ("gates",),
                    words)
                np.testing.assert_array_equal(g_codes, codes[m:])
                row["gate_level"] = {"bit_exact_fraction": 1.0, "accuracy": 0.125,
                                     "agreement": 0.25, "words_loaded": len(words)}
            mine = calibrate.write_artifact(paths.root / f"mine{k}.json", c, cfg,
                                            {"fixed_digest": "f"}, "fs", net, new, k, 0.2, part)
            assert (out / f"board{k}.json").read_text() == mine.read_text()
        want_rows.append(row)
    # the case the test needs: boards 0 and 1 through the gates (1 loaded, 1 kept), 2 loaded
    assert ["kept" in r for r in want_rows] == [False, True, False]
    assert len(got["design"]) == 1  # board 2: loaded, but calibrate.gate_boards = 2
    assert got["cfg"] == [cfg] and len(got["asked"]) == 1
    assert got["asked"][0][0] is c and got["asked"][0][1:] == (cfg, paths)
    for row in res["per_board"]:
        fs, s, ns = row.pop("fit_seconds"), row.pop("seconds"), row.pop("ngspice_seconds")
        assert 0 <= fs < 30 and 0.01 <= s < 30 and 0.01 <= ns < 30
        assert type(s) is float and type(ns) is float
        assert s == round(s, 2) and ns == round(ns, 2)  # to a hundredth
    assert res.pop("per_board") == want_rows
    float_acc = float(np.mean(b.torch_cls == c.reference.y))
    assert float_acc == 0.8
    want = {**calibrate.summarize(want_rows, float_acc),
            "stage": "calibrate", "experiment": "tiny", "crystal_digest": digest(c),
            "fixed_digest": "f", "frontier_design": "fs", "boards": 3, "tolerance": 0.2,
            "opamp": "TI LM358 (LM358B dynamics)", "e_series": "E96",
            "adc_part": "Microchip MCP3008", "adc_bits": 8,
            "method": {**calibrate.METHOD, "data": "Crystal 'tiny': 64 stored training inputs "
                       "(refit), 40 test samples (figures)"},
            "gate_level_bit_exact": True, "passed": True}
    secs = res.pop("seconds")
    assert type(secs) is float and 0 <= secs < 60 and secs == round(secs, 1)
    assert res.pop("result_file") == str(paths.result("calibrate"))
    summary = res.pop("summary")
    assert res == want
    assert summary == calibrate.summary_lines({**res, "per_board": want_rows})
    assert lines[0].startswith("analog: warning: 1 weights need a resistor")  # the core's
    assert lines[1] == ("calibrate: 3 boards (TI LM358 (LM358B dynamics), E96 +-0.2, Microchip "
                        "MCP3008), each in ngspice on 64 training inputs + 40 test samples ...")
    assert lines[2] == "board 0: fs_gates: stubbed"
    per = [ln for ln in lines if ln.startswith("board ") and "accuracy" in ln]
    assert per == [f"board {k}: accuracy {r['before']['accuracy']:.4f} -> "
                   f"{r['after']['accuracy']:.4f}, agreement {r['before']['agreement']:.4f} -> "
                   f"{r['after']['agreement']:.4f}" for k, r in enumerate(want_rows)]
    assert len(lines) == 6


def test_stage_passes_only_when_every_gate_run_is_bit_exact(monkeypatch, tmp_path):
    """One board through the gates, not bit-exact: not passed; a refusal is logged; no gate
    board at all: passed, but no gate-level bit-exactness to claim; a board whose ngspice
    run fails stops the stage naming it; calibrate --boards overrides the config."""
    cfg = cfgmod.validate({"experiment": "tiny", "analog": {"tolerances": [0.2], "opamp": "lm358"},
                           "calibrate": {"boards": 2, "gate_boards": 1}}, "<test>")
    c, net, d, got = stubbed_stage(monkeypatch, gate=0.875)
    res = calibrate.run(c, cfg, Paths(tmp_path, c.name))
    assert [r["gate_level"]["bit_exact_fraction"] for r in res["per_board"] if "gate_level" in r] \
        == [0.875]
    assert res["passed"] is False and res["gate_level_bit_exact"] is False
    monkeypatch.undo()
    c, net, d, got = stubbed_stage(monkeypatch, gains=(0.6,))
    res = calibrate.run(c, cfg, Paths(tmp_path, c.name), boards=1)
    assert res["boards"] == 1 and len(res["per_board"]) == 1 and len(got["codes"]) == 1
    assert res["passed"] is True and res["gate_level_bit_exact"] is True
    monkeypatch.undo()
    c, net, d, got = stubbed_stage(monkeypatch)
    no_gates = cfgmod.validate({**json.loads(json.dumps(dict(cfg))),
                                "calibrate": {"boards": 2, "gate_boards": 0}}, "<test>")
    res = calibrate.run(c, no_gates, Paths(tmp_path, c.name))
    assert not got["design"] and res["passed"] is True and res["gate_level_bit_exact"] is False
    monkeypatch.undo()
    c, net, d, got = stubbed_stage(monkeypatch, fail_board=1)
    with pytest.raises(SimError) as e:
        calibrate.run(c, cfg, Paths(tmp_path, c.name))
    assert str(e.value) == "board 1: ngspice stopped"
    monkeypatch.undo()
    c, net, d, got = stubbed_stage(monkeypatch, gains=(0.6, 0.6))
    monkeypatch.setattr(fixed, "loadable_update", lambda *a, **kw: (_ for _ in ()).throw(
        FixedPointError("wraps")))
    lines = []
    res = calibrate.run(c, cfg, Paths(tmp_path, c.name), lines.append)
    assert [r["refused"] for r in res["per_board"]] == ["wraps", "wraps"]
    assert lines[-1].endswith(" (refused: wraps)") and res["boards_refused"] == 2


def test_stage_refuses_a_baked_frontier_word_for_word(monkeypatch, tmp_path):
    c, net, d, got = stubbed_stage(monkeypatch)
    d["weights"] = "baked"
    with pytest.raises(SimError) as e:
        calibrate.run(c, tiny_cfg(), Paths(tmp_path, c.name))
    assert str(e.value) == ("the frontier design fs has baked weights; calibration loads new "
                            "ones: set rtl.serial_weights (or rtl.parallel_weights) to loadable "
                            "and re-run `crystalbench synth`")
    assert not got["codes"] and not (tmp_path / c.name).exists()
