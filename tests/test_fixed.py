"""Fixed point against values computed by hand, and against the float net in ways that
cannot share a bug with the golden model (rtl/fixed.py)."""
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench.rtl import fixed

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import quantized  # noqa: E402


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
