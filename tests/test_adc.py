"""The ADC model between the analog core and the frontier (crystalbench/adc.py), by hand:
round to nearest (exact halves to even, numpy's rint), clip to 0 .. 2**bits - 1."""
import sys
from pathlib import Path

import numpy as np
import pytest

from crystalbench import adc
from crystalbench.errors import ConfigError

sys.path.insert(0, str(Path(__file__).parent))
from hw_tiny import tiny_crystal  # noqa: E402


def model(bits=2, fs=3.0, low=-1.0, high=1.0):
    return adc.AdcModel(bits=bits, full_scale=(np.array([fs]),), input_low=low, input_high=high)


def test_codes_by_hand():
    m = model()  # 2 bits: 3 levels over 0..3.0 -> LSB 1.0
    assert m.levels == 3 and m.lsb(0).tolist() == [1.0]
    v = np.array([-5.0, -0.4, 0.0, 0.49, 0.5, 0.51, 1.5, 2.5, 2.51, 3.0, 3.49, 100.0])
    # halves go to the even code (0.5 -> 0, 1.5 -> 2, 2.5 -> 2); below 0 -> 0; above -> 3
    assert m.codes(v[:, None], 0)[:, 0].tolist() == [0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 3, 3]
    assert m.values(np.array([[0], [1], [3]]), 0)[:, 0].tolist() == [0.0, 1.0, 3.0]


def test_values_scale_codes_by_the_lsb():
    m = model(bits=3, fs=14.0)  # 7 levels over 14.0: LSB 2.0
    assert m.values(np.array([[0], [1], [7]]), 0)[:, 0].tolist() == [0.0, 2.0, 14.0]
    assert m.codes(np.array([[2.9], [3.1], [13.0]]), 0)[:, 0].tolist() == [1, 2, 6]


def test_per_neuron_full_scale():
    m = adc.AdcModel(bits=8, full_scale=(np.array([1.0, 255.0]),), input_low=0, input_high=1)
    got = m.codes(np.array([[1.0, 1.0], [0.5, 254.6]]), 0)
    assert got.tolist() == [[255, 1], [128, 255]]  # 0.5 * 255 = 127.5 -> 128 (even)


def test_input_codes_by_hand():
    m = model(bits=3, low=-1.0, high=1.0)  # 7 levels over 2.0: LSB 2/7
    assert m.input_lsb() == pytest.approx(2 / 7)
    x = np.array([-2.0, -1.0, -1.0 + 1 / 7, -1.0 + 1.01 / 7, 0.0, 1.0, 3.0])
    # (x + 1) / (2/7): -3.5 -> 0 (clip), 0, 0.5 -> 0 (even), 0.505 -> 1, 3.5 -> 4 (even), 7, 14 -> 7
    assert m.input_codes(x).tolist() == [0, 0, 0, 1, 4, 7, 7]


def test_calibrated_from_the_crystal():
    c = tiny_crystal()
    m = adc.adc_for(c, 6)
    h = c.forward(c.reference.calibration_x)[0]
    top = h.max(axis=0)
    want = np.where(top > 0, top, 1.0)  # a neuron never on keeps a unit range
    np.testing.assert_array_equal(m.full_scale[0], want.astype(np.float64))
    assert len(m.full_scale) == len(c.layers) - 1  # hidden layers only, not the readout
    assert (m.input_low, m.input_high, m.levels) == (c.input.low, c.input.high, 63)
    # the largest calibration output of each neuron is exactly full scale: code 63
    assert m.codes(top[None, :], 0).tolist() == [[63 if t > 0 else 0 for t in top]]


def test_a_neuron_never_on_keeps_a_unit_range():
    import dataclasses

    c = tiny_crystal()
    hidden = c.layers[0]
    w = hidden.weights.copy()
    w[1] = -np.abs(w[1])  # inputs are in [0, 1]: neuron 1 never fires
    b = hidden.bias.copy()
    b[1] = -1.0
    c = c.replace(layers=(dataclasses.replace(hidden, weights=w * hidden.mask, bias=b),
                          c.layers[1]))
    m = adc.adc_for(c, 4)
    assert m.full_scale[0][1] == 1.0 and np.isfinite(m.lsb(0)).all()
    assert m.codes(np.zeros((1, 4)), 0).tolist() == [[0, 0, 0, 0]]


def test_default_and_edge_widths():
    c = tiny_crystal()
    assert adc.adc_for(c).bits == 8 and adc.adc_for(c).levels == 255
    assert adc.adc_for(c, 2).levels == 3 and adc.adc_for(c, 16).levels == 65535


@pytest.mark.parametrize("bits", [1, 17])
def test_bits_outside_the_range_are_refused(bits):
    with pytest.raises(ConfigError, match=rf"adc\.bits {bits} is outside 2\.\.16"):
        adc.adc_for(tiny_crystal(), bits)


def test_codes_are_int64_and_read_in_float64():
    m = model(low=0.0, high=3.0)  # LSB 1.0 for both the outputs and the inputs
    got = m.codes(np.array([[0.4], [1.6], [9.0]]), 0)
    assert got.dtype == np.int64 and got[:, 0].tolist() == [0, 2, 3]
    got = m.input_codes(np.array([-1.0, 1.5, 2.4]))
    assert got.dtype == np.int64 and got.tolist() == [0, 2, 2]  # 1.5 -> 2 (even)
    # a long double 2**-60 above half a code is read as its float64 value, the half itself,
    # which rounds to even, 0 (the long double would round up to 1)
    half = np.array([0.5], np.longdouble) + np.longdouble(2) ** -60
    assert half[0] > 0.5 and np.float64(half[0]) == 0.5
    assert m.codes(half[:, None], 0).tolist() == [[0]]
    assert m.input_codes(half).tolist() == [0]
