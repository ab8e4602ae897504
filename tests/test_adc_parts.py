"""The low-energy ADC parts (crystalbench/adc.py PARTS): energy per conversion, reference
range, codes and chip counts, each pinned to a value computed here from the datasheet
figures the part cites."""

import numpy as np
import pytest

from crystalbench import adc
from crystalbench.errors import ConfigError


@pytest.mark.parametrize("key, channels, amps", [("ad7091r8", 8, 467e-6), ("ad7091r", 1, 349e-6)])
def test_ad7091r_energy_per_conversion_from_the_datasheet(key, channels, amps):
    p = adc.part_for(key)
    assert (p.bits, p.channels) == (12, channels)
    assert p.conversion_s == pytest.approx(1e-6)  # 1 MSPS
    # 3 V x the typical supply current at 1 MSPS, over one microsecond; the reference
    # current is inside the supply figure, so VREF does not change it
    want = 3.0 * amps * 1e-6
    assert p.energy_per_conversion_j(1.0) == pytest.approx(want, rel=1e-12)
    assert p.energy_per_conversion_j(3.0) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx({"ad7091r8": 1.401e-9, "ad7091r": 1.047e-9}[key], rel=1e-12)
    assert "assumed" in p.source  # the figures not read from its datasheet say so


@pytest.mark.parametrize("key", ["ad7091r8", "ad7091r"])
def test_ad7091r_reference_range_1_v_to_vdd(key):
    p = adc.part_for(key)
    assert adc.check_part(p, 8, 1.0) == pytest.approx(256 / 255)  # 1.0039 V, no window
    assert adc.window(p, 256 / 255) == 0
    assert adc.check_part(p, 12, 2.99) == pytest.approx(2.99 * 4096 / 4095)  # 2.9907 V
    with pytest.raises(ConfigError, match=r"needs a 3.002 V reference"):
        adc.check_part(p, 8, 2.99)  # 2.99 x 256/255
    with pytest.raises(ConfigError, match=rf"adc.bits 13 is more than the {p.part}'s 12 bits"):
        adc.check_part(p, 13, 1.0)


@pytest.mark.parametrize("key", ["ad7091r8", "ad7091r"])
def test_a_full_scale_below_the_reference_minimum_reads_a_window(key):
    p = adc.part_for(key)
    # 0.5 V full scale: the frontier reference 0.502 V is below 1.0 V; doubled (w = 1) it
    # is 1.0039 V on the pin, and the frontier reads the low half of the 12-bit range
    vref = adc.check_part(p, 8, 0.5)
    assert vref == pytest.approx(0.5 * 256 / 255)
    assert adc.window(p, vref) == 1
    assert adc.part_reference_v(p, vref) == pytest.approx(256 / 255)
    # 0.25 V: w = 2; 0.0625 x 255/256 V: w = 4 leaves 8 bits, the most adc.bits 8 allows
    assert adc.window(p, adc.check_part(p, 8, 0.25)) == 2
    assert adc.window(p, adc.check_part(p, 8, 0.0625 * 255 / 256)) == 4
    with pytest.raises(ConfigError, match=rf"^analog.adc_ref_v 0.05 V is below the {p.part}'s 1 V "
                                          r"reference by 2\*\*5: the core's range keeps 7 of its "
                                          r"12 bits, fewer than adc.bits 8"):
        adc.check_part(p, 8, 0.05)  # 0.0502 V x 32 = 1.606 V: 12 - 5 = 7 bits left
    # a part without a reference input of its own takes no window: refused as before
    with pytest.raises(ConfigError, match=r"analog.adc_ref_v 0.2 V needs a 0.2008 V reference"):
        adc.check_part(adc.part_for("mcp3008"), 8, 0.2)


def test_window_codes_by_hand():
    p = adc.part_for("ad7091r")
    vref = adc.check_part(p, 8, 0.5)  # pin 256/255 V: part LSB 1/4080 V; w = 1, k = 3
    # part codes round(v x 4080): 0.25 V -> 1020 -> 127.5 -> 128 (half to even); 0.5 V ->
    # 2040 -> 255; 0.6 V -> 2448, saturated at the window's top 2047 -> 255; one frontier
    # LSB (0.5/255 V) -> 8 -> 1; 0.9 V -> 3672 -> 255
    v = np.array([0.0, 0.5 / 255, 0.25, 0.5, 0.6, 0.9, -0.1])
    assert adc.convert(p, v, vref, 8).tolist() == [0, 1, 128, 255, 255, 255, 0]
    assert adc.convert(p, v, vref, 11).tolist() == [0, 8, 1020, 2040, 2047, 2047, 0]
    c = np.arange(256)  # every frontier code at its ideal voltage comes back exactly
    assert adc.convert(p, c * 0.5 / 255, vref, 8).tolist() == c.tolist()
    # offset and gain error stay in the part's own LSB: +16 LSB at 0.25 V -> 1036 -> 129.5
    assert adc.convert(p, np.array([0.25]), vref, 8, offset_lsb=16.0).tolist() == [130]


def test_reference_current_counted_at_the_pin():
    p = adc.AdcPart(key="t", part="T", bits=12, channels=8, vref_min_v=0.5, vref_max_v=5.0,
                    supply_v=5.0, sample_rate_sps=200e3, supply_current_a=400e-6,
                    ref_current_a=100e-6, offset_error_lsb=0.0, gain_error_lsb=0.0,
                    source="test", window_ok=True)
    plan = adc.channel_plan(p, 3, 0.3)  # w = 1: the pin is at 0.6 V
    assert plan.energy_j == pytest.approx(3 * (5.0 * 400e-6 + 0.6 * 100e-6) / 200e3)


def test_ad7091r_codes_by_hand():
    p = adc.part_for("ad7091r")
    vref = adc.reference_v(1.0, 8)  # 256/255 V: the part's LSB is vref / 4096
    # 12-bit codes round(v x 4096 x 255 / 256); the frontier keeps the top 8 bits, code / 16
    # rounded half to even: 0.5 V -> 2040 -> 127.5 -> 128; 0.25 V -> 1020 -> 63.75 -> 64;
    # 1/255 V (one frontier LSB) -> 16 -> 1; 1.5 V -> clipped to 4095 -> 255 (saturated)
    v = np.array([0.0, 1 / 255, 0.25, 0.5, 1.0, 1.5, -0.2])
    assert adc.convert(p, v, vref, 12).tolist() == [0, 16, 1020, 2040, 4080, 4095, 0]
    assert adc.convert(p, v, vref, 8).tolist() == [0, 1, 64, 128, 255, 255, 0]
    c = np.arange(256)  # every frontier code at its ideal voltage comes back exactly
    assert adc.convert(p, c / 255, vref, 8).tolist() == c.tolist()


@pytest.mark.parametrize("key, chips, per_chip", [("ad7091r", 48, 1), ("ad7091r8", 6, 8)])
def test_channel_plan_counts_chips(key, chips, per_chip):
    p = adc.part_for(key)
    plan = adc.channel_plan(p, 48, 1.0)  # the digits crystal's 48 boundary neurons
    assert (plan.chips, plan.conversions_per_chip) == (chips, per_chip)
    assert plan.latency_s == pytest.approx(per_chip * 1e-6)  # chips convert at once
    assert plan.energy_j == pytest.approx(48 * 3.0 * p.supply_current_a * 1e-6)


def test_window_stops_at_the_parts_bits():
    p = adc.part_for("ad7091r")  # 12 bits, reference 1.0 V minimum
    # 2**-12 V x 2**12 is 1.0 V exactly: w = 12, the part's last bit, at the minimum
    assert adc.window(p, 1 / 4096) == 12
    # 1e-4 V x 2**12 = 0.4096 V is still below 1.0 V: w stops at 12, not 13
    assert adc.window(p, 1e-4) == 12
    assert adc.part_reference_v(p, 1e-4) == pytest.approx(0.4096)
    # the pin then stays below the minimum: 1e-4 x 256/255 x 4096 = 0.41120 V
    with pytest.raises(ConfigError) as e:
        adc.check_part(p, 8, 1e-4)
    assert str(e.value) == ("analog.adc_ref_v 0.0001 V needs a 0.4112 V reference, outside the "
                            "ADI AD7091R's 1-3 V; change analog.adc_ref_v or adc.part")


@pytest.mark.parametrize("key, low, high", [("mcp3008", 0.25, 5.0), ("ad7091r", 1.0, 3.0)])
def test_reference_range_ends_are_allowed(key, low, high):
    p = adc.part_for(key)
    # full scale x 255/256 puts the 8-bit reference (x 256/255) on the range's ends
    # exactly (every figure here is a binary fraction)
    assert adc.check_part(p, 8, low * 255 / 256) == low
    assert adc.check_part(p, 8, high * 255 / 256) == high
    assert adc.window(p, high) == 0 and adc.window(p, low) == 0


def test_reference_above_the_range_message():
    with pytest.raises(ConfigError) as e:
        adc.check_part(adc.part_for("mcp3008"), 8, 4.99)  # 4.99 x 256/255 = 5.0096 V
    assert str(e.value) == ("analog.adc_ref_v 4.99 V needs a 5.01 V reference, outside the "
                            "Microchip MCP3008's 0.25-5 V; change analog.adc_ref_v or adc.part")


def test_codes_computed_in_float64_whatever_the_input_dtype():
    p = adc.part_for("mcp3008")  # 10 bits; a 4.0 V reference: 256 codes per volt
    # volts: a long double 2**-70 above 2.5 codes is read as the float64 2.5/256, whose
    # code rounds half to even to 2 (the long double product would round up to 3)
    v = np.array([2.5 / 256], np.longdouble) + np.longdouble(2) ** -70
    assert adc.convert(p, v, 4.0, 10).tolist() == [2]
    # gain error as float32: scale = 256 x (1 + g / 1024) with g = float32(0.3) =
    # 0.30000001192..., 256.0750000030; 1000.49999 / 256.075 V is 1000.49999001 codes -> 1000
    # (a float32 scale, 256.07501221, would give 1000.50004 -> 1001)
    g = np.float32(0.3)
    want = np.rint(1000.49999 / 256.075 * 256 * (1 + float(g) / 1024))
    assert want == 1000
    v = np.array([1000.49999 / 256.075])
    assert adc.convert(p, v, 4.0, 10, gain_lsb=np.array([g])).tolist() == [1000]
    assert adc.convert(p, v, 4.0, 10, gain_lsb=g).tolist() == [1000]
