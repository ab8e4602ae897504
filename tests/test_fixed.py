"""Fixed point against values computed by hand, and against the float net in ways that
cannot share a bug with the golden model (rtl/fixed.py)."""
import copy
import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench import adc as adc_mod
from crystalbench import crystal as cm
from crystalbench.errors import FixedPointError
from crystalbench.rtl import fixed

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import fp_cfg, quantized, quantized_deep, tiny_crystal, tiny_deep_crystal  # noqa: E402


@pytest.mark.parametrize("lo, hi, bits", [
    (0, 0, 1), (-1, 0, 1), (0, 1, 2), (-2, 1, 2), (-2, 2, 3), (-128, 127, 8), (-129, 0, 9),
    (0, 128, 9), (-(1 << 31), (1 << 31) - 1, 32)])
def test_signed_bits_at_the_edges(lo, hi, bits):
    assert fixed.signed_bits(lo, hi) == bits


def test_accumulator_range_by_hand():
    w = np.array([[3, -2, 0], [-1, -1, 4]])
    b = np.array([5, -7])
    # 2-bit inputs (0..3): row 0 reaches 5 + 3*3 = 14 and 5 - 2*3 = -1; row 1 reaches
    # -7 + 4*3 = 5 and -7 - 2*3 = -13
    assert fixed.acc_range(w, b, 2) == (-13, 14)
    assert fixed.acc_range(np.array([[1]]), np.array([2]), 1) == (0, 3)  # zero included


@pytest.mark.parametrize("top, out_bits, shift", [
    (0, 4, 0), (15, 4, 0), (16, 4, 1),  # 16 -> (16 + 1) >> 1 = 8 fits 4 bits
    (29, 3, 2),  # (29 + 1) >> 1 = 15 > 7; (29 + 2) >> 2 = 7
    (30, 3, 3),  # (30 + 2) >> 2 = 8 > 7; (30 + 4) >> 3 = 4
    (255, 8, 0), (256, 8, 1), (510, 8, 1), (511, 8, 2)])  # (510 + 1) >> 1 = 255; 511 -> 256
def test_requantizing_shift_by_hand(top, out_bits, shift):
    assert fixed.requant_shift(top, out_bits) == shift


def test_quantize_layer_by_hand():
    W = np.array([[0.5, -0.25], [0.1, 0.0]])
    mask = np.array([[True, True], [True, False]])
    lsb = np.array([1.0, 2.0])  # value = code * lsb: weights fold the step in
    # hidden (relu): a power-of-two scale per neuron, the largest that fits 4-bit weights
    # (|w| <= 7). Row 0: effective weights 0.5, -0.5 -> frac floor(log2(7 / 0.5)) = 3 ->
    # 4, -4. Row 1: 0.1 -> frac floor(log2(70)) = 6 -> round(6.4) = 6.
    w, b, frac = fixed.quantize_layer(W, mask, np.array([0.3, -0.05]), lsb, np.zeros(2), "relu", 4)
    assert frac.tolist() == [3, 6]
    assert w.tolist() == [[4, -4], [6, 0]]
    assert b.tolist() == [2, -3]  # round(0.3 * 8) = 2, round(-0.05 * 64) = round(-3.2) = -3
    # readout (linear): one shared scale, from the largest |w| of the layer (0.5 -> 3)
    w, b, frac = fixed.quantize_layer(W, mask, np.zeros(2), lsb, np.zeros(2), "linear", 4)
    assert frac.tolist() == [3, 3] and w.tolist() == [[4, -4], [1, 0]]  # round(0.8) = 1
    # an input offset (value = offset + code * lsb) folds into the bias: 0.5 * 1 - 0.25 * 2
    w, b, frac = fixed.quantize_layer(W, mask, np.zeros(2), lsb, np.array([1.0, 2.0]), "linear", 4)
    assert b.tolist() == [0, round(0.1 * 8)]


def test_a_hidden_row_without_weights_is_scaled_by_its_bias():
    """Such a neuron outputs the constant relu(bias); a scale of 1 would make its code step
    one model unit and coarsen the shared scale of the readout that reads it."""
    W = np.array([[0.5, -0.25], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    mask = np.array([[True, True], [False, False], [False, False], [False, False]])
    lsb = np.array([1.0, 2.0])
    w, b, frac = fixed.quantize_layer(W, mask, np.array([0.3, 0.1, -0.1, 0.0]), lsb, np.zeros(2),
                                      "relu", 4)
    # row 0 as before: frac 3; rows 1-2: |bias| 0.1 -> floor(log2(7 / 0.1)) = 6 -> +-round(6.4);
    # row 3 (always 0): the layer's finest scale, 6
    assert frac.tolist() == [3, 6, 6, 6] and b.tolist() == [2, 6, -6, 0]
    assert w.tolist() == [[4, -4], [0, 0], [0, 0], [0, 0]]
    # a layer of such rows with zero biases: scale 1 (nothing to scale)
    _, b, frac = fixed.quantize_layer(np.zeros((2, 2)), np.zeros((2, 2), bool), np.zeros(2), lsb,
                                      np.zeros(2), "relu", 4)
    assert frac.tolist() == [0, 0] and b.tolist() == [0, 0]


def test_hidden_layer_forward_by_hand():
    layer = fixed.IntLayer(weights=np.array([[2, -1]]), mask=np.ones((1, 2), bool),
                           bias=np.array([2]), activation="relu", in_bits=4, weight_bits=4,
                           weight_frac=np.array([0]), acc_bits=8, shift=np.array([2]), out_bits=3)
    codes = np.array([[0, 0], [13, 0], [15, 3], [1, 7], [15, 0]])
    acc, out = layer.forward(codes)
    assert acc[:, 0].tolist() == [2, 28, 29, -3, 32]
    # (acc >> 2) clipped to 0..7: 0, 7, 7, 0 (negative), 8 -> 7 (clip)
    assert out[:, 0].tolist() == [0, 7, 7, 0, 7]


def test_integer_weights_are_the_float_weights_rounded():
    """|W_int - W * lsb_in * 2**frac| <= 1/2, independently of how the golden model
    rounds: recomputed here from the Crystal's float weights."""
    c, fp = quantized()
    net = fixed.nets_of(fp)["all_digital"]
    layer = net.layers[0]
    lsb = (c.input.high - c.input.low) / ((1 << net.in_bits) - 1)
    want = c.layers[0].weights.astype(np.float64) * lsb * 2.0 ** layer.weight_frac[:, None]
    assert np.abs(layer.weights - want).max() <= 0.5
    assert np.abs(layer.weights).max() <= (1 << (layer.weight_bits - 1)) - 1
    # the scale is the largest that fits: one more bit would overflow some row
    assert np.all(np.abs(want * 2).max(axis=1) > (1 << (layer.weight_bits - 1)) - 1 - 0.5)


def test_hidden_codes_are_unbiased_against_the_float_net():
    """Requantization rounds to nearest: the hidden codes, read back in model units, differ
    from the float net by zero on average (a dropped half-step would give -1/2 LSB)."""
    c, fp = quantized(digital_input_bits=8, digital_weight_bits=12, digital_activation_bits=6)
    net = fixed.nets_of(fp)["all_digital"]
    x = c.reference.calibration_x
    codes = fixed.input_codes(c, net, x=x)
    g = net.forward(codes)
    layer = net.layers[0]
    step = 2.0 ** (layer.shift - layer.weight_frac).astype(np.float64)  # model units per code
    lsb_in = (c.input.high - c.input.low) / ((1 << net.in_bits) - 1)
    xq = c.input.low + codes * lsb_in  # the inputs the hardware sees
    h = np.maximum(xq @ c.layers[0].weights.T.astype(np.float64) + c.layers[0].bias, 0)
    err = g["out"][0] * step - h  # model units
    top = (1 << layer.out_bits) - 1
    inside = (h > step) & (h < (top - 1) * step)  # away from the ReLU and clip edges
    assert inside.sum() > 100
    mean_lsb = (err / step)[inside].mean()
    assert abs(mean_lsb) < 0.1, mean_lsb
    assert np.abs(err / step)[inside].max() < 1.0


def test_golden_argmax_takes_the_first_of_tied_logits():
    _, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    last = net.layers[-1]
    import dataclasses

    tied = dataclasses.replace(last, weights=np.zeros_like(last.weights),
                               bias=np.array([3, 9, 9]))
    net2 = dataclasses.replace(net, layers=net.layers[:-1] + (tied,))
    g = net2.forward(np.zeros((2, net.n_in), np.int64))
    assert g["cls"].tolist() == [1, 1]


# ---- the artifact: validation, stamp, digest, codes, evaluation -------------------------------
def _broken(mutate):
    c, fp = quantized()
    fp = copy.deepcopy(fp)
    mutate(fp)
    return c, fp


@pytest.mark.parametrize("mutate, message", [
    (lambda fp: fp.update(version=1), r"^fixed point: version 1 is not 2; re-run "
                                      r"`crystalbench quantize`"),
    (lambda fp: fp.pop("nets"), r"^fixed point: missing field 'nets'"),
    (lambda fp: fp["nets"].pop("all_digital"), r"missing field 'nets\.all_digital'$"),
    (lambda fp: fp["nets"]["frontier"].pop("input"), r"missing field 'nets\.frontier\.input'$"),
    (lambda fp: fp["nets"]["frontier"].update(layers=[]),
     r"nets\.frontier\.layers has 0 layers; the crystal has 2$"),
    (lambda fp: fp["nets"]["all_digital"]["layers"].insert(0, {}),
     r"nets\.all_digital\.layers has 3 layers; the crystal has 2$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(activation="relu"),
     r"nets\.frontier\.layers\[0\]: activation 'relu' \(crystal layer 2: 'linear'\) is not "
     r"supported in fixed point for a readout layer; only 'linear' is$"),
    (lambda fp: fp["nets"]["all_digital"]["layers"][0].update(activation="linear"),
     r"layers\[0\]: activation 'linear' .* for a hidden layer; only 'relu' is$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(in_bits=0),
     r"layers\[0\]: in_bits = 0 must be a whole number in 1\.\.48$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(acc_bits=49),
     r"acc_bits = 49 must be a whole number in 1\.\.48$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(out_bits=True),
     r"out_bits = True must be a whole number"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(weights=[["a"]]),
     r"weights or bias are not integer arrays"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0].update(bias=[1, 2]),
     r"weights \(3, 4\) / bias \(2,\) do not match the 3 neurons of crystal layer 2$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0]["weights"][0].__setitem__(0, 128),
     r"a weight \(128\) overflows weight_bits 8$"),
    (lambda fp: fp["nets"]["frontier"]["layers"][0]["weights"][0].__setitem__(0, -129),
     r"a weight \(129\) overflows weight_bits 8$"),
    (lambda fp: fp["nets"]["all_digital"]["layers"][0].update(out_bits=5),
     r"layers\[0\]: out_bits 5 differs from the next layer's in_bits"),
])
def test_every_format_rule_is_checked_with_its_message(mutate, message):
    c, fp = _broken(mutate)
    with pytest.raises(FixedPointError, match=message):
        fixed.validate_formats(fp, c)


def test_widths_at_the_edges_are_accepted():
    c, fp = quantized()
    lay = fp["nets"]["frontier"]["layers"][0]
    lim = 1 << (lay["weight_bits"] - 1)
    w = copy.deepcopy(fp)
    w["nets"]["frontier"]["layers"][0]["weights"][0][0] = lim - 1
    w["nets"]["frontier"]["layers"][0]["weights"][1][0] = -lim
    w["nets"]["frontier"]["layers"][0]["acc_bits"] = 48
    fixed.validate_formats(w, c)  # the extremes of the width fit
    lo, hi = fixed.acc_range(fixed.nets_of(fp)["frontier"].layers[0].weights,
                             fixed.nets_of(fp)["frontier"].layers[0].bias, lay["in_bits"])
    tight = copy.deepcopy(fp)
    tight["nets"]["frontier"]["layers"][0]["acc_bits"] = fixed.signed_bits(lo, hi)
    fixed.validate_formats(tight, c)
    tight["nets"]["frontier"]["layers"][0]["acc_bits"] -= 1
    with pytest.raises(FixedPointError, match="would overflow"):
        fixed.validate_formats(tight, c)


def test_the_artifact_is_stamped_and_its_digest_follows_its_content(tmp_path):
    c, fp = quantized()
    cfg = fp_cfg()
    assert fp["version"] == 2 and fp["adc_bits"] == 8
    assert fp["crystal"] == {"name": "tiny", "digest": cm.digest(c)}
    assert fp["config"] == {"fixed_point": dict(cfg), "adc_bits": 8}
    assert fixed.config_stamp(cfg, 6) == {"fixed_point": dict(cfg), "adc_bits": 6}
    path = fixed.save(fp, tmp_path)
    assert path == tmp_path / "fixed_point.json" and json.loads(path.read_text()) == fp
    d = fixed.artifact_digest(fp)
    assert len(d) == 16 and d == fixed.artifact_digest(json.loads(path.read_text()))
    other = copy.deepcopy(fp)
    other["nets"]["frontier"]["layers"][0]["bias"][0] += 1
    assert fixed.artifact_digest(other) != d
    (tmp_path / "fixed_point.json").write_text("{")
    with pytest.raises(FixedPointError, match=r"fixed_point\.json: not valid JSON"):
        fixed.load(tmp_path, c)


def _with_frozen(c, flags):
    """The crystal with the hidden layers' frozen flags replaced (one array per hidden layer)."""
    import dataclasses as dc

    layers = tuple(dc.replace(ly, frozen=np.asarray(f, bool),
                              epoch_frozen=np.where(f, 2, -1).astype(np.int32))
                   for ly, f in zip(c.layers, flags)) + c.layers[len(flags):]
    return c.replace(layers=layers)


def test_the_frontier_is_whole_trailing_layers():
    c = tiny_deep_crystal()
    assert fixed.frontier_start(c) == 2  # layer 1 frozen, layer 2 and the readout active
    assert fixed.frontier_start(_with_frozen(c, [np.ones(5), np.ones(4)])) == 3  # readout only
    assert fixed.frontier_start(_with_frozen(c, [np.zeros(5), np.zeros(4)])) == 1  # no core
    # Layer 2 part core: the readout would read core codes of layer 2 and the frontier
    # neurons of layer 2 those of layer 1.
    with pytest.raises(FixedPointError, match=(
            r"^crystal layer 2 is part core \(1 frozen neuron\(s\)\), part frontier \(3 unfrozen\); "
            r"the digital frontier supports whole trailing layers only .* train until layer 2 "
            r"freezes wholly, keep it wholly active with freeze\.max_layer 1, or use the "
            r"all-digital net$")):
        fixed.quantize(_with_frozen(c, [np.ones(5), [1, 0, 0, 0]]), fp_cfg(), 8)
    # One hidden layer, one neuron of it unfrozen: the frontier would read the raw inputs
    # and the core's codes of layer 1.
    with pytest.raises(FixedPointError, match=r"^crystal layer 1 is part core \(3 frozen "
                                              r"neuron\(s\)\), part frontier \(1 unfrozen\)"):
        fixed.quantize(_with_frozen(tiny_crystal(), [[1, 0, 1, 1]]), fp_cfg(), 8)


def test_a_frontier_with_a_hidden_layer_reads_the_core_codes_below_it():
    c, fp = quantized_deep()
    net = fixed.nets_of(fp)["frontier"]
    assert net.input_kind == "adc_codes" and net.input_layer == 1 and len(net.layers) == 2
    np.testing.assert_array_equal(net.input_index, np.arange(5))  # every layer-1 neuron is read
    hid, out = net.layers
    # Hidden frontier codes as wide as the ADC's; the readout reads them.
    assert (hid.activation, hid.in_bits, hid.out_bits, out.in_bits) == ("relu", 8, 8, 8)
    adc = adc_mod.adc_for(c, 8)
    np.testing.assert_array_equal(fixed.input_codes(c, net), adc.codes(c.reference.outputs[0], 0))
    # Its weights fold the ADC step in: W_int = round(W * lsb * 2**frac), per hidden neuron.
    want = c.layers[1].weights * adc.lsb(0)[None, :] * 2.0 ** hid.weight_frac[:, None]
    assert np.abs(hid.weights - want).max() <= 0.5
    # Golden vs float on the calibration inputs (the ADC's range covers them, nothing clips):
    # ADC, weight and hidden-code rounding stay within 6% of the logits' range.
    cal = c.reference.calibration_x
    g = net.forward(fixed.input_codes(c, net, x=cal))
    ref = c.forward(cal)[-1]
    np.testing.assert_allclose(g["logits"] * 2.0 ** -out.weight_frac[0], ref,
                               atol=0.06 * np.abs(ref).max())
    assert (g["cls"] == ref.argmax(1)).mean() >= 0.95
    fixed.validate_formats(fp, c)
    narrow = fixed.nets_of(quantized_deep(adc_bits=6)[1])["frontier"]  # weight_bits stays 8
    assert [(ly.in_bits, ly.out_bits) for ly in narrow.layers] == [(6, 6), (6, narrow.logit_bits)]
    # The whole net as frontier (nothing frozen): raw input codes at the ADC's width.
    whole = fixed.nets_of(fixed.quantize(_with_frozen(c, [np.zeros(5), np.zeros(4)]), fp_cfg(),
                                         6))["frontier"]
    assert (whole.input_kind, whole.input_layer, whole.in_bits, len(whole.layers)) == \
        ("input_codes", 0, 6, 3)
    assert [ly.out_bits for ly in whole.layers[:2]] == [6, 6]


def test_a_frontier_neuron_without_connections_keeps_the_readout_fine():
    """A trained frontier layer can hold a neuron with no connection (bias 0: always 0);
    the readout that reads it keeps the resolution of its live inputs."""
    import dataclasses as dc

    c = tiny_deep_crystal()
    l2 = c.layers[1]
    mask = l2.mask.copy()
    mask[1] = False  # the readout reads neuron 1
    assert c.layers[2].mask[:, 1].any()
    c = c.replace(layers=(c.layers[0], dc.replace(l2, mask=mask, weights=l2.weights * mask,
                                                  bias=np.where(np.arange(4) == 1, 0, l2.bias)
                                                  .astype(np.float32)), c.layers[2]))
    net = fixed.nets_of(fixed.quantize(c, fp_cfg(), 8))["frontier"]
    cal = c.reference.calibration_x
    g = net.forward(fixed.input_codes(c, net, x=cal))
    ref = c.forward(cal)[-1]
    np.testing.assert_allclose(g["logits"] * 2.0 ** -net.layers[-1].weight_frac[0], ref,
                               atol=0.06 * np.abs(ref).max())


def test_input_codes_by_hand():
    c, fp = quantized()
    nets = fixed.nets_of(fp)
    fr, ad = nets["frontier"], nets["all_digital"]
    assert fr.input_kind == "adc_codes" and fr.input_layer == 1 and fr.in_bits == 8
    adc = adc_mod.adc_for(c, 8)
    want = adc.codes(c.reference.outputs[0], 0)[:, fr.input_index]
    np.testing.assert_array_equal(fixed.input_codes(c, fr), want)
    # other core outputs (what an analog board produced) go through the same ADC
    volts = c.reference.outputs[0] * 0.5
    np.testing.assert_array_equal(fixed.input_codes(c, fr, core_outputs=volts),
                                  adc.codes(volts, 0)[:, fr.input_index])
    x = c.reference.calibration_x[:7]
    np.testing.assert_array_equal(fixed.input_codes(c, fr, x=x),
                                  adc.codes(c.forward(x)[0], 0)[:, fr.input_index])
    assert ad.input_kind == "input_codes" and ad.input_layer == 0
    dadc = adc_mod.adc_for(c, ad.in_bits)
    np.testing.assert_array_equal(fixed.input_codes(c, ad), dadc.input_codes(c.reference.x))
    np.testing.assert_array_equal(fixed.input_codes(c, ad, x=x), dadc.input_codes(x))


def test_evaluate_by_hand():
    c, fp = quantized()
    nets = fixed.nets_of(fp)
    got = fixed.evaluate(c, nets)
    torch_cls = c.reference.outputs[-1].argmax(1)
    assert got["vectors"] == 10 and got["float_test_accuracy"] == float(
        (torch_cls == c.reference.y).mean())
    for k, net in nets.items():
        cls = net.forward(fixed.input_codes(c, net))["cls"]
        assert got[k] == {"fixed_point_test_accuracy": float((cls == c.reference.y).mean()),
                          "class_agreement_with_torch": float((cls == torch_cls).mean())}


def test_int_net_properties_and_forward_by_hand():
    layer1 = fixed.IntLayer(weights=np.array([[1, 2], [0, -1]]), mask=np.ones((2, 2), bool),
                            bias=np.array([0, 3]), activation="relu", in_bits=2, weight_bits=3,
                            weight_frac=np.array([0, 0]), acc_bits=5, shift=np.array([1, 0]),
                            out_bits=2)
    layer2 = fixed.IntLayer(weights=np.array([[1, -1], [-1, 1], [2, 0]]), mask=np.ones((3, 2), bool),
                            bias=np.array([0, 0, -1]), activation="linear", in_bits=2,
                            weight_bits=3, weight_frac=np.array([0, 0, 0]), acc_bits=5,
                            shift=np.zeros(3, np.int64), out_bits=5)
    net = fixed.IntNet("all_digital", "input_codes", 0, np.arange(2), (layer1, layer2))
    assert (net.n_in, net.in_bits, net.n_classes, net.logit_bits) == (2, 2, 3, 5)
    assert (layer1.n_out, layer1.n_in) == (2, 2)
    g = net.forward(np.array([[3, 1], [0, 3]]))
    # layer 1: [3 + 2, 0 - 1 + 3] = [5, 2] -> [5 >> 1, 2] = [2, 2]; [0 + 6, -3 + 3] = [6, 0] -> [3, 0]
    assert g["acc"][0].tolist() == [[5, 2], [6, 0]] and g["out"][0].tolist() == [[2, 2], [3, 0]]
    # readout: [0, 0, 3] (tie of the first two, class 2 wins) and [3, -3, 5]
    assert g["logits"].tolist() == [[0, 0, 3], [3, -3, 5]] and g["cls"].tolist() == [2, 2]
    back = fixed.IntNet.from_dict("all_digital", net.to_dict())
    np.testing.assert_array_equal(back.forward(np.array([[3, 1]]))["logits"], [[0, 0, 3]])
    assert back.to_dict() == net.to_dict()


# ---- loading new weights: refused on the host before anything is written --------------------
def _hand_net():
    """One linear layer: 2-bit codes (0..3), 4-bit weights (-8..7), an 8-bit accumulator
    (-128..127); neuron 1 has no connection from input 1."""
    layer = fixed.IntLayer(weights=np.array([[1, 1], [2, 0]]), mask=np.array([[1, 1], [1, 0]], bool),
                           bias=np.array([0, 0]), activation="linear", in_bits=2, weight_bits=4,
                           weight_frac=np.array([0, 0]), acc_bits=8, shift=np.zeros(2, np.int64),
                           out_bits=8)
    return fixed.IntNet("frontier", "adc_codes", 1, np.arange(2), (layer,))


def test_neuron_accumulator_widths_by_hand():
    w = np.array([[7, -8], [0, 0], [7, 7], [-8, -8]])
    b = np.array([3, -1, 85, -80])
    # 2-bit codes: row 0 reaches 3 + 21 = 24 and 3 - 24 = -21 -> 6 bits; row 1 only -1 ->
    # 1 bit; row 2 85 + 42 = 127 -> 8 bits; row 3 -80 - 48 = -128 -> 8 bits
    assert fixed.neuron_acc_bits(w, b, 2).tolist() == [6, 1, 8, 8]
    assert fixed.neuron_acc_bits(w[2:3], b[2:3] + 1, 2).tolist() == [9]  # 128
    assert fixed.neuron_acc_bits(w[3:], b[3:] - 1, 2).tolist() == [9]  # -129
    assert fixed.neuron_acc_bits(np.array([[1]]), np.array([2]), 1).tolist() == [3]  # 0..3


def test_a_weight_set_that_fits_is_accepted_and_computed_as_loaded():
    net = _hand_net()
    new = fixed.loadable_update(net, [np.array([[7, -8], [-8, 0]])], [np.array([85, 3])])
    g = new.forward(np.array([[3, 1], [0, 3], [3, 3]]))
    # neuron 0: 85 + 7*3 - 8*1 = 98, 85 - 24 = 61, 85 + 21 - 24 = 82; neuron 1: 3 - 24 = -21, 3, -21
    assert g["logits"].tolist() == [[98, -21], [61, 3], [82, -21]]
    assert g["cls"].tolist() == [0, 0, 0]
    # Widths at the edges fit: 85 + 42 = 127 and -80 - 48 = -128 are the 8-bit extremes.
    fixed.loadable_update(net, [np.array([[7, 7], [-8, 0]])], [np.array([85, -104])])
    # None keeps a layer as it is; the formats never change.
    same = fixed.loadable_update(net)
    assert same.layers[0].weights.tolist() == [[1, 1], [2, 0]] and same.layers[0].acc_bits == 8
    assert fixed.loadable_update(net, biases=[np.array([5, 6])]).layers[0].bias.tolist() == [5, 6]


@pytest.mark.parametrize("weights, bias, message", [
    ([[7, 7], [0, 0]], [86, 0], r"^frontier layer 2, neuron 0: the worst case over every input "
                                r"code needs a 9-bit accumulator \(range 0\.\.128\), the design "
                                r"has 8; refused before writing anything"),
    ([[0, 0], [-8, 0]], [0, -105], r"^frontier layer 2, neuron 1: .* needs a 9-bit accumulator "
                                   r"\(range -129\.\.0\), the design has 8;"),
    ([[7, 7], [-8, 0]], [100, -300], r"neuron 1: .* 10-bit .* \(range -324\.\.0\), the design "
                                     r"has 8 \(1 other neuron\(s\) too\)"),  # the worst is named
    ([[7, 7], [-8, 0]], [100, -120], r"neuron 0: .* 9-bit .* \(range 0\.\.142\), the design has "
                                     r"8 \(1 other neuron\(s\) too\)"),  # of equals, the first
    ([[8, 0], [0, 0]], [0, 0], r"^frontier layer 2, neuron 0: weight 8 from input 0 needs 5 bits, "
                               r"the design has weight_bits 4 \(-8\.\.7\); refused"),
    ([[0, 0], [-9, 0]], [0, 0], r"neuron 1: weight -9 from input 0 needs 5 bits"),
    ([[0, 0], [0, 1]], [0, 0], r"^frontier layer 2, neuron 1: weight 1 from input 1, where the "
                               r"design has no connection \(1 such weight\(s\)\); refused before "
                               r"writing anything: only present connections load"),
])
def test_a_weight_set_that_does_not_fit_is_refused_naming_the_neuron(weights, bias, message):
    with pytest.raises(FixedPointError, match=message):
        fixed.loadable_update(_hand_net(), [np.array(weights)], [np.array(bias)])


def test_a_malformed_weight_set_is_refused():
    net = _hand_net()
    with pytest.raises(FixedPointError, match=r"^frontier: 2 layer\(s\) of weights given, the net "
                                              r"has 1; give one per layer"):
        fixed.loadable_update(net, [None, None])
    with pytest.raises(FixedPointError, match=r"^frontier: 0 layer\(s\) of biases given"):
        fixed.loadable_update(net, biases=[])
    with pytest.raises(FixedPointError, match=r"^frontier layer 2: weights of shape \(2, 3\); the "
                                              r"design's are \(2, 2\)$"):
        fixed.loadable_update(net, [np.zeros((2, 3), np.int64)])
    with pytest.raises(FixedPointError, match=r"^frontier layer 2: biases are float64, not "
                                              r"integers; quantize them"):
        fixed.loadable_update(net, biases=[np.array([1.0, 2.0])])


def test_the_full_scale_worst_case_is_refused_on_the_tiny_frontier():
    """Every loaded weight at +127 and every code at 255: 4 x 127 x 255 = 129540 plus the
    bias needs 18 bits; the readout's accumulator was sized for the trained weights."""
    _, fp = quantized()
    net = fixed.nets_of(fp)["frontier"]
    last = net.layers[-1]
    assert (last.n_in, last.in_bits, last.acc_bits) == (4, 8, 16) and last.mask.all()
    b0 = int(last.bias[0])
    with pytest.raises(FixedPointError, match=(
            rf"^frontier layer 2, neuron 0: the worst case over every input code needs a 18-bit "
            rf"accumulator \(range {min(b0, 0)}\.\.{129540 + b0}\), the design has 16 \(2 other "
            rf"neuron\(s\) too\)")):
        fixed.loadable_update(net, [np.full(last.weights.shape, 127)])


def test_the_weights_digest_names_the_live_weights():
    net = _hand_net()
    want = hashlib.sha256(b"[[[[1, 1], [2, 0]], [0, 0]]]").hexdigest()[:16]
    assert fixed.weights_digest(net) == want
    assert fixed.weights_digest(fixed.loadable_update(net)) == want  # the same numbers
    moved = fixed.loadable_update(net, biases=[np.array([0, 1])])
    assert fixed.weights_digest(moved) == hashlib.sha256(
        b"[[[[1, 1], [2, 0]], [0, 1]]]").hexdigest()[:16]


def test_artifact_digest_ignores_key_order():
    a = {"version": 2, "nets": {"x": [1, 2]}, "config": {"p": 1, "q": 2}}
    b = {"config": {"q": 2, "p": 1}, "nets": {"x": [1, 2]}, "version": 2}
    assert fixed.artifact_digest(a) == fixed.artifact_digest(b)
    assert fixed.artifact_digest(a) != fixed.artifact_digest({**a, "version": 3})


def test_load_refuses_a_list_and_names_the_file_in_format_errors(tmp_path):
    from crystalbench.errors import FixedPointError

    c, fp = quantized()
    folder = tmp_path / "fixed"
    folder.mkdir()
    (folder / fixed.FILE_NAME).write_text("[1, 2]")
    with pytest.raises(FixedPointError, match=r"made from another Crystal \(digest None"):
        fixed.load(folder, c)
    broken = json.loads(json.dumps(fp))
    del broken["nets"]
    (folder / fixed.FILE_NAME).write_text(json.dumps(broken))
    with pytest.raises(FixedPointError) as e:
        fixed.load(folder, c)
    assert str(e.value).startswith(f"{folder / fixed.FILE_NAME}: missing field 'nets'")


def test_evaluate_compares_with_the_readout_of_a_deep_net():
    from hw_tiny import quantized_deep

    c, fp = quantized_deep()
    nets = fixed.nets_of(fp)
    got = fixed.evaluate(c, nets)
    torch_cls = c.reference.outputs[-1].argmax(1)
    assert len(c.reference.outputs) == 3 and not np.array_equal(
        c.reference.outputs[1].argmax(1)[:len(torch_cls)], torch_cls)
    g = nets["frontier"].forward(fixed.input_codes(c, nets["frontier"]))
    assert got["frontier"]["class_agreement_with_torch"] == float((g["cls"] == torch_cls).mean())


def test_accumulator_width_edges_exactly():
    """The accumulator's reach may touch both ends of acc_bits, never pass them."""
    c, fp = quantized()
    lay = fp["nets"]["frontier"]["layers"][0]
    w, b = np.array(lay["weights"]), np.array(lay["bias"])
    rows = [fixed.acc_range(w[j:j + 1], b[j:j + 1], lay["in_bits"]) for j in range(len(b))]
    alim = 1 << (lay["acc_bits"] - 1)
    j_hi = int(np.argmax([hi for _, hi in rows]))
    j_lo = int(np.argmin([lo for lo, _ in rows]))
    assert j_hi != j_lo

    def with_bias(j, bias_j):
        f = copy.deepcopy(fp)
        f["nets"]["frontier"]["layers"][0]["bias"][j] = int(bias_j)
        return f

    top = int(b[j_hi] + (alim - 1 - rows[j_hi][1]))  # that neuron's reach ends at alim - 1
    fixed.validate_formats(with_bias(j_hi, top), c)
    with pytest.raises(FixedPointError, match=rf"can reach -?\d+\.\.{alim}; "):
        fixed.validate_formats(with_bias(j_hi, top + 1), c)
    bottom = int(b[j_lo] + (-alim - rows[j_lo][0]))  # that neuron's reach starts at -alim
    fixed.validate_formats(with_bias(j_lo, bottom), c)
    with pytest.raises(FixedPointError, match=rf"can reach {-alim - 1}\.\."):
        fixed.validate_formats(with_bias(j_lo, bottom - 1), c)


def test_every_width_may_be_one_bit_and_none_zero():
    c, fp = quantized()
    f = copy.deepcopy(fp)
    lay = f["nets"]["frontier"]["layers"][0]
    lay["weights"] = [[0] * len(r) for r in lay["weights"]]
    lay["bias"] = [0] * len(lay["bias"])
    lay["weight_bits"] = 1  # all-zero weights fit in one signed bit
    fixed.validate_formats(f, c)
    lay["weight_bits"] = 0
    with pytest.raises(FixedPointError, match=r"weight_bits = 0 must be a whole number in 1\.\.48$"):
        fixed.validate_formats(f, c)


def test_format_refusals_word_for_word():
    """validate_formats names where (its `where`, the net, the layer) and what, exactly."""
    c, fp = quantized_deep()

    def refusal(change, where="F"):
        f = copy.deepcopy(fp)
        change(f)
        with pytest.raises(FixedPointError) as e:
            fixed.validate_formats(f, c, where)
        return str(e.value)

    with pytest.raises(FixedPointError) as e:
        fixed.validate_formats([1], c, "F")
    assert str(e.value) == "F: must be a mapping, got list"
    assert refusal(lambda f: f["nets"].pop("frontier")) == "F: missing field 'nets.frontier'"
    assert (refusal(lambda f: f["nets"]["frontier"].pop("input"))
            == "F: missing field 'nets.frontier.input'")
    assert (refusal(lambda f: f["nets"]["frontier"].update(
                layers=[{}, {}, *f["nets"]["frontier"]["layers"]]))
            == "F: nets.frontier.layers has 4 layers; the crystal has 3")
    first = "F: nets.frontier.layers[0]: "
    assert (refusal(lambda f: f["nets"]["frontier"]["layers"][0]["weights"][0].__setitem__(0, 128))
            == first + "a weight (128) overflows weight_bits 8")
    assert refusal(lambda f: f["nets"]["frontier"]["layers"][0].update(
        weights=[["a"]])).startswith(first + "weights or bias are not integer arrays (")
    # 4 neurons: one weight row dropped, the bias still right
    assert (refusal(lambda f: f["nets"]["frontier"]["layers"][0]["weights"].pop())
            == first + "weights (3, 5) / bias (4,) do not match the 4 neurons of crystal layer 2")
    # all_digital has three layers: layer 1 reading 7 bits while layer 0 gives 8
    assert (refusal(lambda f: f["nets"]["all_digital"]["layers"][1].update(in_bits=7))
            == "F: nets.all_digital.layers[0]: out_bits 8 differs from the next layer's "
               "in_bits 7")
    # whole numbers stored as floats are read as integers: the reach is printed as such
    lay = fp["nets"]["frontier"]["layers"][0]
    lo, hi = fixed.acc_range(np.array(lay["weights"]), np.array(lay["bias"]), lay["in_bits"])
    bits = fixed.signed_bits(lo, hi) - 1
    assert refusal(lambda f: f["nets"]["frontier"]["layers"][0].update(
        acc_bits=bits, bias=[float(b) for b in lay["bias"]])) == (
        first + f"acc_bits {bits} would overflow: the accumulator can reach {lo}..{hi}; "
        "re-run `crystalbench quantize` or lower the widths")


def test_frontier_input_codes_take_the_frontier_width():
    """A 6-bit ADC: the frontier's codes are the 6-bit conversion, not the 8-bit default."""
    c, fp = quantized_deep(adc_bits=6)
    net = fixed.nets_of(fp)["frontier"]
    assert net.in_bits == 6
    codes = fixed.input_codes(c, net)
    core = c.reference.outputs[net.input_layer - 1]
    want = adc_mod.adc_for(c, 6).codes(core, net.input_layer - 1)[:, net.input_index]
    np.testing.assert_array_equal(codes, want)
    assert codes.max() <= 63 and not np.array_equal(
        codes, adc_mod.adc_for(c, 8).codes(core, net.input_layer - 1)[:, net.input_index])


def test_the_artifact_stores_masks_as_0_1_and_reads_them_back_as_bool():
    c, fp = quantized()
    stored = fp["nets"]["frontier"]["layers"][0]["mask"]
    assert {type(v) for row in stored for v in row} == {int}
    assert {v for row in stored for v in row} <= {0, 1}
    net = fixed.nets_of(fp)["frontier"]
    assert net.layers[0].mask.dtype == bool
    np.testing.assert_array_equal(net.layers[0].mask, np.array(stored) == 1)


def test_a_refusal_names_the_layer_by_its_place_in_the_crystal():
    """Layers are numbered from the Crystal's first (1), so a net's layer i (0-based) is
    input_layer + i + 1: the deep frontier starts after core layer 1 (its layers are 2 and
    3), the all-digital net at 0 (layers 1..3)."""
    _, fp = quantized_deep()
    nets = fixed.nets_of(fp)
    front, dig = nets["frontier"], nets["all_digital"]
    assert (front.input_layer, len(front.layers), dig.input_layer, len(dig.layers)) == (1, 2, 0, 3)
    with pytest.raises(FixedPointError) as e:
        fixed.loadable_update(front, biases=[None, np.array([1.0, 2.0, 3.0])])
    assert str(e.value) == ("frontier layer 3: biases are float64, not integers; quantize them to "
                            "the design's formats first (an integer array)")
    with pytest.raises(FixedPointError) as e:
        fixed.loadable_update(dig, [None, None, np.zeros((3, 5), np.int64)])
    assert str(e.value) == "all_digital layer 3: weights of shape (3, 5); the design's are (3, 4)"


def test_load_with_the_config_it_was_made_with(tmp_path):
    from crystalbench import config

    c, fp = quantized()  # made with the default fixed_point section and adc_bits 8
    path = fixed.save(fp, tmp_path)
    cfg = config.validate({"fixed_point": {}}, "<test>")
    assert cfg.adc.bits == 8
    assert fixed.load(tmp_path, c, cfg) == fp
    assert fixed.load(tmp_path, c) == fp
    fix = "run `crystalbench synth` (or `crystalbench quantize`) with this config"
    for other in ({"adc": {"bits": 6}}, {"fixed_point": {"weight_bits": 7}}):
        with pytest.raises(FixedPointError) as e:
            fixed.load(tmp_path, c, config.validate({"fixed_point": {}, **other}, "<test>"))
        assert str(e.value) == (f"{path}: made with other fixed_point/adc settings than this "
                                f"config; it is stale: {fix}")


def test_neuron_accumulator_widths_at_the_edges_of_each_side():
    # 2-bit codes (0..3). [5, -1] + 1: top 5*3 + 1 = 16 -> 6 bits (the negative weight
    # must not lower it: 13 would be 5); [-5, 2] - 2: bottom -15 - 2 = -17 -> 6 bits (the
    # positive weight must not raise it: -11 or -14 would be 5)
    w = np.array([[5, -1], [-5, 2]])
    assert fixed.neuron_acc_bits(w, np.array([1, -2]), 2).tolist() == [6, 6]
    assert fixed.neuron_acc_bits(w, np.array([0, -1]), 2).tolist() == [5, 5]  # 15, -16
    assert fixed.neuron_acc_bits(w, np.array([1, -2]), 2).dtype == np.int64


def test_accumulator_range_of_a_layer_without_inputs_is_its_bias_and_zero():
    none = np.zeros((2, 0), np.int64)
    assert fixed.acc_range(none, np.array([3, -5]), 4) == (-5, 3)
    assert fixed.acc_range(none, np.array([-5, -2]), 4) == (-5, 0)  # zero included
    assert fixed.acc_range(none, np.array([2, 7]), 4) == (0, 7)
    assert fixed.acc_range(np.zeros((0, 3), np.int64), np.zeros(0, np.int64), 2) == (0, 0)


def test_load_refusals_word_for_word():
    import dataclasses

    net = _hand_net()
    with pytest.raises(FixedPointError) as e:
        fixed.loadable_update(net, [np.array([[8, 0], [0, 0]])])
    assert str(e.value) == ("frontier layer 2, neuron 0: weight 8 from input 0 needs 5 bits, the "
                            "design has weight_bits 4 (-8..7); refused before writing anything: "
                            "scale the weights into that range")
    # a 5-bit accumulator (-16..15): neuron 0 reaches 7 x 3 = 21 (6 bits); neuron 1 only
    # -4 x 3 = -12, which fits: the range named is neuron 0's alone, 0..21
    small = dataclasses.replace(net, layers=(dataclasses.replace(net.layers[0], acc_bits=5),))
    with pytest.raises(FixedPointError) as e:
        fixed.loadable_update(small, [np.array([[7, 0], [-4, 0]])])
    assert str(e.value) == ("frontier layer 2, neuron 0: the worst case over every input code "
                            "needs a 6-bit accumulator (range 0..21), the design has 5; refused "
                            "before writing anything (it would wrap): scale the weights and bias "
                            "down, or quantize and synthesize a design sized for them")


def _layer_widths(fp):
    """(net, crystal layer, acc_bits, lo, hi) in build order, from the artifact's own layers."""
    out = []
    for kind, net in fixed.nets_of(fp).items():
        for i, ly in enumerate(net.layers):
            lo, hi = fixed.acc_range(ly.weights, ly.bias, ly.in_bits)
            out.append((kind, net.input_layer + i + 1, ly.acc_bits, lo, hi))
    return out


@pytest.mark.parametrize("frozen", [None, [[0, 0, 0, 0]]])  # ADC-code frontier; input-code one
def test_max_acc_bits_is_the_largest_width_allowed(frozen):
    c = tiny_crystal() if frozen is None else _with_frozen(tiny_crystal(), frozen)
    fp = fixed.quantize(c, fp_cfg(), 8)
    rows = _layer_widths(fp)
    assert rows[0][:2] == (("frontier", 2) if frozen is None else ("frontier", 1))
    for _kind, _li, bits, lo, hi in rows:
        assert bits == fixed.signed_bits(lo, hi)
    top = max(r[2] for r in rows)
    assert fixed.quantize(c, fp_cfg(max_acc_bits=top), 8)["nets"] == fp["nets"]  # the edge fits
    # one bit less: the first layer (build order) needing `top` bits is named
    kind, li, bits, lo, hi = next(r for r in rows if r[2] == top)
    with pytest.raises(FixedPointError) as e:
        fixed.quantize(c, fp_cfg(max_acc_bits=top - 1), 8)
    assert str(e.value) == (f"{kind} layer {li}: the accumulator needs {top} bits (range "
                            f"{lo}..{hi}), over fixed_point.max_acc_bits {top - 1}; lower the "
                            "weight or input widths or raise max_acc_bits")
    # the frontier alone: cap it one bit under its own widest layer
    front = max(r[2] for r in rows if r[0] == "frontier")
    kind, li, bits, lo, hi = next(r for r in rows if r[0] == "frontier" and r[2] == front)
    with pytest.raises(FixedPointError) as e:
        fixed.quantize(c, fp_cfg(max_acc_bits=front - 1), 8)
    assert str(e.value).startswith(f"frontier layer {li}: the accumulator needs {front} bits "
                                   f"(range {lo}..{hi}), over fixed_point.max_acc_bits {front - 1};")


def test_shifts_are_integers_in_the_artifact():
    _, fp = quantized_deep()
    for kind, net in fp["nets"].items():
        for ly in net["layers"]:
            assert all(type(s) is int for s in ly["shift"]), (kind, ly["shift"])
        assert net["layers"][-1]["shift"] == [0, 0, 0]  # the linear readout: no requantizing
    for net in fixed.nets_of(fp).values():
        assert all(ly.shift.dtype == np.int64 for ly in net.layers)


def test_the_frontier_reads_codes_of_the_adc_width_it_is_given():
    c = tiny_crystal()
    fp6 = fixed.quantize(c, fp_cfg(), 6)
    net = fixed.nets_of(fp6)["frontier"]
    idx = net.input_index
    ly = c.layers[1]  # the readout, reading core layer 1 through a 6-bit ADC
    w, b, frac = fixed.quantize_layer((ly.weights * ly.mask)[:, idx], ly.mask[:, idx], ly.bias,
                                      adc_mod.adc_for(c, 6).lsb(0)[idx], np.zeros(len(idx)),
                                      "linear", fp_cfg().weight_bits)
    np.testing.assert_array_equal(net.layers[0].weights, w)
    np.testing.assert_array_equal(net.layers[0].weight_frac, frac)
    assert net.layers[0].in_bits == 6
    # an 8-bit ADC's LSB is about 4x finer: other weights
    w8 = fixed.nets_of(fixed.quantize(c, fp_cfg(), 8))["frontier"].layers[0].weights
    assert not np.array_equal(w8, w)


def test_a_readout_that_is_not_linear_is_refused_word_for_word():
    import dataclasses

    c = tiny_crystal()
    c = c.replace(layers=(c.layers[0], dataclasses.replace(c.layers[1], activation="relu")))
    with pytest.raises(FixedPointError) as e:
        fixed.quantize(c, fp_cfg(), 8)
    assert str(e.value) == ("crystal layer 2: activation 'relu' is not supported by the "
                            "fixed-point stage for a readout layer (supported: 'linear'); "
                            "retrain with 'linear'")


def test_a_part_core_layer_is_refused_word_for_word():
    with pytest.raises(FixedPointError) as e:
        fixed.quantize(_with_frozen(tiny_crystal(), [[1, 0, 1, 1]]), fp_cfg(), 8)
    assert str(e.value) == (
        "crystal layer 1 is part core (3 frozen neuron(s)), part frontier (1 unfrozen); the "
        "digital frontier supports whole trailing layers only (every layer from its first on "
        "wholly unfrozen, every layer below wholly frozen, so that it reads the ADC codes of "
        "one core layer); train until layer 1 freezes wholly, keep it wholly active with "
        "freeze.max_layer 0, or use the all-digital net")


def test_quantize_layer_without_inputs_scales_by_the_bias():
    none = np.zeros((2, 0))
    # relu: no weight, so each row is scaled by its bias: 127 / 0.5 -> frac 7 (2**7 x 0.5 =
    # 64); 127 / 0.25 -> frac 8 (-0.25 x 256 = -64)
    w, b, frac = fixed.quantize_layer(none, none.astype(bool), np.array([0.5, -0.25]),
                                      np.zeros(0), np.zeros(0), "relu", 8)
    assert (w.shape, b.tolist(), frac.tolist()) == ((2, 0), [64, -64], [7, 8])
    # linear: the shared scale has no weight to go by: frac 0, the bias rounded as it is
    w, b, frac = fixed.quantize_layer(none, none.astype(bool), np.array([3.0, -2.0]),
                                      np.zeros(0), np.zeros(0), "linear", 8)
    assert (w.shape, b.tolist(), frac.tolist()) == ((2, 0), [3, -2], [0, 0])


def test_each_shift_is_the_smallest_for_the_calibration_accumulators():
    """A relu layer's shift is requant_shift of its largest accumulator on the calibration
    inputs, bias included (the stored bias adds the half step (1 << shift) >> 1 to it)."""
    c, fp = quantized_deep()
    cal_x = c.reference.calibration_x
    for kind, net in fixed.nets_of(fp).items():
        h = fixed.input_codes(c, net, x=cal_x)
        checked = 0
        for ly in net.layers:
            if ly.activation == "relu":
                half = (np.int64(1) << ly.shift) >> 1
                acc = h @ ly.weights.T + (ly.bias - half)  # without the half step
                for j in range(ly.n_out):
                    top = max(int(acc[:, j].max()), 0)
                    assert ly.shift[j] == fixed.requant_shift(top, ly.out_bits), (kind, j)
                    checked += ly.shift[j] > 0
            _, h = ly.forward(h)
        assert checked, kind  # some neuron of the net needs a shift


def test_the_small_net_keeps_the_pruned_masks():
    c, fp = quantized_deep()
    masks = fixed.prune_masks(c, fp_cfg().small_keep)
    small = fixed.nets_of(fp)["all_digital_small"]
    assert [ly.mask.tolist() for ly in small.layers] == [m.tolist() for m in masks]
    assert any(not np.array_equal(m, ly.mask) for m, ly in zip(masks, c.layers))  # pruned


def test_no_calibration_input_gives_no_shift():
    c = tiny_deep_crystal()
    idx = np.arange(c.layers[1].n_in)
    net = fixed._build(c, "frontier", 2, "adc_codes", idx, np.full(len(idx), 0.01),
                       np.zeros(len(idx)), 8, 8, 8, np.zeros((0, len(idx)), np.int64), 32)
    assert net.layers[0].activation == "relu" and net.layers[0].shift.tolist() == [0] * 4
