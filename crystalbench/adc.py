"""The ADC between the analog core and the digital frontier, shared by every backend.

Each core neuron read by the frontier (the boundary) has one ADC channel: unsigned
codes of `bits` bits over [0, full_scale], where full_scale is that neuron's largest
output over the Crystal's calibration inputs (core outputs are ReLU, never negative;
larger values clip). Per-neuron ranges are what the hardware does: the analog
backend sets each neuron's gain so its full scale meets the ADC reference voltage,
and the digital frontier folds the step size (LSB) into the weights that read it.
Raw inputs that frontier neurons read go through one converter over the input range.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .crystal import Crystal
from .errors import ConfigError


@dataclass(frozen=True, eq=False)
class AdcModel:
    bits: int
    full_scale: tuple[np.ndarray, ...]  # per hidden layer: (n_neurons,) in model units
    input_low: float  # range of raw inputs
    input_high: float

    @property
    def levels(self) -> int:
        return (1 << self.bits) - 1

    def lsb(self, layer_index: int) -> np.ndarray:
        """Code step per neuron of hidden layer `layer_index` (0-based), in model units."""
        return self.full_scale[layer_index] / self.levels

    def codes(self, values: np.ndarray, layer_index: int) -> np.ndarray:
        """Model-unit outputs (n, n_neurons) -> ADC codes: round to nearest, clip."""
        q = np.rint(np.asarray(values, np.float64) / self.lsb(layer_index))
        return np.clip(q, 0, self.levels).astype(np.int64)

    def values(self, codes: np.ndarray, layer_index: int) -> np.ndarray:
        """ADC codes -> model units (what the frontier sees)."""
        return np.asarray(codes, np.float64) * self.lsb(layer_index)

    def input_lsb(self) -> float:
        return (self.input_high - self.input_low) / self.levels

    def input_codes(self, x: np.ndarray) -> np.ndarray:
        q = np.rint((np.asarray(x, np.float64) - self.input_low) / self.input_lsb())
        return np.clip(q, 0, self.levels).astype(np.int64)


def adc_for(c: Crystal, bits: int = 8) -> AdcModel:
    """The ADC model of a Crystal, calibrated on its stored training inputs."""
    if not 2 <= bits <= 16:
        raise ConfigError(f"adc.bits {bits} is outside 2..16")
    outs = c.forward(c.reference.calibration_x)
    fs = []
    for li in range(len(c.layers) - 1):
        top = outs[li].max(axis=0).astype(np.float64)
        fs.append(np.where(top > 0, top, 1.0))  # a neuron never on: any range will do
    return AdcModel(bits=bits, full_scale=tuple(fs), input_low=c.input.low, input_high=c.input.high)


# ---- the converter as a part: datasheet figures -----------------------------------------
@dataclass(frozen=True)
class AdcPart:
    """An SPI SAR ADC from its datasheet. A part converts at its own resolution (`bits`);
    the frontier reads the top `adc.bits` of each code (rounded, see `convert`)."""

    key: str
    part: str
    bits: int
    channels: int
    vref_min_v: float  # the reference input's allowed range
    vref_max_v: float
    supply_v: float  # the supply the figures below are quoted at
    sample_rate_sps: float  # most conversions per second at supply_v
    supply_current_a: float  # typical, while converting at sample_rate_sps
    ref_current_a: float  # typical reference input current while converting (0: in supply)
    offset_error_lsb: float  # datasheet maximum, in the part's own LSB
    gain_error_lsb: float
    source: str
    # True: a reference above the core's full scale is allowed (a reference input of its
    # own, not the supply): the frontier then reads the low 2**-w of the part's range
    # (window), saturating above it; see `window`
    window_ok: bool = False

    @property
    def conversion_s(self) -> float:
        """One conversion (sample + convert + SPI transfer) at the full rate."""
        return 1.0 / self.sample_rate_sps

    def energy_per_conversion_j(self, vref_v: float) -> float:
        """Supply power and reference power over one conversion at the full rate."""
        return (self.supply_v * self.supply_current_a + vref_v * self.ref_current_a) \
            * self.conversion_s


# Figures read from the datasheets' first pages and tables as far as copies could be
# reached here; the ones marked "check" came from secondary copies of the table and
# should be checked against the PDF before a board is built on them.
PARTS = {
    "mcp3008": AdcPart(
        key="mcp3008", part="Microchip MCP3008", bits=10, channels=8, vref_min_v=0.25,
        vref_max_v=5.0, supply_v=5.0, sample_rate_sps=200e3, supply_current_a=425e-6,
        ref_current_a=100e-6, offset_error_lsb=1.5, gain_error_lsb=1.0,
        source="Microchip DS21295D: 10 bit, 8 channels, 200 ksps at VDD = VREF = 5 V "
               "(fCLK = 18 x fSAMPLE), INL/DNL +-1 LSB max, 500 uA max active (page 1, "
               "Electrical Characteristics); IDD 425 uA typ while converting (as "
               "../shared/FIGURES.md); check: IREF 100 uA typ, offset +-1.5 LSB max, gain "
               "+-1.0 LSB max, VREF 0.25 V .. VDD"),
    "adc128s022": AdcPart(
        key="adc128s022", part="TI ADC128S022", bits=12, channels=8, vref_min_v=2.7,
        vref_max_v=5.25, supply_v=3.0, sample_rate_sps=200e3, supply_current_a=0.4e-3,
        ref_current_a=0.0, offset_error_lsb=2.3, gain_error_lsb=2.0,
        source="TI SNAS334E: 12 bit, 8 channels, 50-200 ksps, 16 SCLK per conversion, "
               "1.2 mW typ at VA = VD = 3 V (page 1); the reference is VA (2.7-5.25 V), its "
               "current is in the supply's; offset +-2.3 LSB and gain +-2.0 LSB are assumed "
               "(the table was not reachable here): check before relying on its Monte Carlo"),
    # The AD7091R family: 1 MSPS at 3 V for about a third of a milliamp, a fifth of the
    # MCP3008's energy per conversion. Single-channel parts mean one chip per boundary
    # neuron (channel_plan counts them); all chips convert at once.
    "ad7091r8": AdcPart(
        key="ad7091r8", part="ADI AD7091R-8", bits=12, channels=8, vref_min_v=1.0,
        vref_max_v=3.0, supply_v=3.0, sample_rate_sps=1e6, supply_current_a=467e-6,
        ref_current_a=0.0, offset_error_lsb=8.5, gain_error_lsb=4.0, window_ok=True,
        source="ADI AD7091R-2/AD7091R-4/AD7091R-8 data sheet (TSSOP issue), page 1 "
               "Features: 12 bit, 1 MSPS, 2/4/8 single-ended channels with sequencer, VDD "
               "2.7-5.25 V, 467 uA typical at 3 V and 1 MSPS (Rev. C page 1: 1.4 mW at 1 "
               "MSPS); pin table (Table 6, REFIN/REFOUT): external reference 1.0 V to VDD, "
               "analog input 0 V to VREF; vref_max 3.0 V is VDD at the quoted 3 V supply; "
               "assumed: reference input current 0 (not read; inside the supply figure), "
               "offset 8.5 LSB and gain 4 LSB max (not read for this part; the AD7091's "
               "Table 1 maxima, -8.5/+5 LSB and +-4 LSB)"),
    "ad7091r": AdcPart(
        key="ad7091r", part="ADI AD7091R", bits=12, channels=1, vref_min_v=1.0,
        vref_max_v=3.0, supply_v=3.0, sample_rate_sps=1e6, supply_current_a=349e-6,
        ref_current_a=0.0, offset_error_lsb=8.5, gain_error_lsb=4.0, window_ok=True,
        source="ADI AD7091R data sheet Rev. B, page 1 Features and General Description: "
               "12 bit, one channel, 1 MSPS with a 50 MHz SCLK, VDD 2.7-5.25 V, analog "
               "input 0 V to VREF, internal 2.5 V reference, 349 uA typical at 3 V and 1 "
               "MSPS; assumed: external reference 1.0 V to VDD (the AD7091R-8's range; not "
               "read for this part), reference input current 0 (inside the supply figure), "
               "offset 8.5 LSB and gain 4 LSB max (the AD7091's Table 1 maxima)"),
}


def part_for(key: str) -> AdcPart:
    if key not in PARTS:
        raise ConfigError(f"adc.part {key!r} is not a known ADC; choose one of "
                          f"{', '.join(sorted(PARTS))}")
    return PARTS[key]


def reference_v(top_code_v: float, bits: int) -> float:
    """The part's reference voltage that puts `top_code_v` (the analog core's full scale,
    analog.adc_ref_v) at the centre of the frontier's top code: a real converter's LSB
    is VREF / 2**N, so code c is read at c * VREF / 2**N and the top code 2**bits - 1 at
    top_code_v exactly when VREF = top_code_v * 2**bits / (2**bits - 1)."""
    return top_code_v * (1 << bits) / ((1 << bits) - 1)


def window(part: AdcPart, vref_v: float) -> int:
    """How many top bits of the part's range the frontier leaves unused: the smallest w
    >= 0 that lifts the reference 2**w x vref_v (vref_v: the reference that would put the
    core's full scale at the top code, `reference_v`) to the part's minimum. 0 unless the
    part allows it (window_ok). The frontier then reads codes 0 .. 2**(N-w) - 1 and
    saturates above: the part spends w of its N bits on range the core never uses."""
    w = 0
    while part.window_ok and vref_v * (1 << w) < part.vref_min_v and w < part.bits:
        w += 1
    return w


def part_reference_v(part: AdcPart, vref_v: float) -> float:
    """The voltage on the part's reference pin for the frontier reference vref_v."""
    return vref_v * (1 << window(part, vref_v))


def check_part(part: AdcPart, bits: int, top_code_v: float) -> float:
    """Refuse a part that cannot deliver `bits` or take the reference; return VREF (the
    frontier's: `part_reference_v` gives the pin's, which a window raises)."""
    if bits > part.bits:
        raise ConfigError(f"adc.bits {bits} is more than the {part.part}'s {part.bits} bits; "
                          f"lower adc.bits or pick another adc.part")
    vref = reference_v(top_code_v, bits)
    w = window(part, vref)
    pin = part_reference_v(part, vref)
    if not part.vref_min_v <= pin <= part.vref_max_v:
        raise ConfigError(f"analog.adc_ref_v {top_code_v:g} V needs a {pin:.4g} V reference, "
                          f"outside the {part.part}'s {part.vref_min_v:g}-{part.vref_max_v:g} V; "
                          "change analog.adc_ref_v or adc.part")
    if bits + w > part.bits:
        raise ConfigError(f"analog.adc_ref_v {top_code_v:g} V is below the {part.part}'s "
                          f"{part.vref_min_v:g} V reference by 2**{w}: the core's range "
                          f"keeps {part.bits - w} of its {part.bits} bits, fewer than adc.bits "
                          f"{bits}; raise analog.adc_ref_v or lower adc.bits")
    return vref


def convert(part: AdcPart, volts: np.ndarray, vref_v: float, bits: int,
            offset_lsb: np.ndarray | float = 0.0, gain_lsb: np.ndarray | float = 0.0) -> np.ndarray:
    """Volts -> the frontier's `bits`-bit codes, as the part and the FPGA produce them.

    The part, on reference R = 2**w x vref_v (w = `window`, 0 for most parts): code =
    round(v * 2**N / R * (1 + gain_lsb / 2**N) + offset_lsb), clipped to 0 .. 2**N - 1
    (offset and gain error in its own LSB, per channel when arrays). The FPGA saturates
    at 2**(N-w) - 1 and keeps the top `bits` of the N - w it reads, k = N - w - bits,
    rounded half to even and saturated: (code + 2**(k-1) - 1 + bit k of code) >> k.
    Rounding twice moves a frontier code's edges by up to half a part LSB; half to even
    keeps that unbiased on average (half up would read every code 2**-(k+1) frontier LSB
    high).
    """
    n = part.bits
    w = window(part, vref_v)
    scale = (1 << n) / (vref_v * (1 << w)) * (1.0 + np.asarray(gain_lsb, np.float64) / (1 << n))
    code = np.rint(np.asarray(volts, np.float64) * scale + offset_lsb)
    code = np.clip(code, 0, (1 << (n - w)) - 1).astype(np.int64)
    k = n - w - bits
    if k == 0:
        return code
    odd = (code >> k) & 1
    return np.minimum((code + (1 << (k - 1)) - 1 + odd) >> k, (1 << bits) - 1)


@dataclass(frozen=True)
class ChannelPlan:
    """How the boundary neurons are spread over ADC chips: chips convert in parallel,
    each its channels one after the other."""

    channels: int
    chips: int
    conversions_per_chip: int
    latency_s: float
    energy_j: float


def channel_plan(part: AdcPart, channels: int, vref_v: float) -> ChannelPlan:
    chips = -(-channels // part.channels) if channels else 0
    per_chip = -(-channels // chips) if chips else 0
    return ChannelPlan(channels=channels, chips=chips, conversions_per_chip=per_chip,
                       latency_s=per_chip * part.conversion_s,
                       energy_j=channels * part.energy_per_conversion_j(
                           part_reference_v(part, vref_v)))
