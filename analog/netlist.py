"""The frozen core as an op-amp and resistor circuit: design, then PySpice netlist.

Circuit per core neuron j (one op-amp): an inverting summing amplifier. A neuron that
other core neurons read has a precision half-wave rectifier in its feedback, so its
output is ReLU of the weighted sum; one read only through the ADC (relu_stage 'adc')
is a linear summer clamped at about -0.6 V, and the ADC's unsigned range is its ReLU:

    out_j = max(0, -Rf_j * sum_k V_k / R_jk)   (sum node at virtual ground)

D1 (sum -> op-amp output) clamps the op-amp when the sum is negative; D2 (op-amp
output -> out) sits inside the loop, so its drop does not enter the result.

With relu_stage 'difference' a first-layer neuron read only through the ADC is a
difference summer instead: positive weights go through a divider to the non-inverting
input, so no input needs an inverting buffer (one op-amp per neuron); see
_design_plus_side. It has no clamp diode: a negative sum takes its output to the
op-amp's low swing limit, which the ADC converts to code 0 (a board needs the ADC
inputs protected against that swing).

Signals: model input x_k is the DAC voltage x_k * vx (vx volts per model unit); a core
neuron's output is h_j * G_j volts, with G_j = V_fs / full_scale_j from the shared ADC
model, so each neuron's calibrated full scale lands on the ADC reference V_fs. A
weight w_jk > 0 reads the inverted copy of its source (one inverting buffer per such
source), w_jk < 0 the source itself; R_jk = Rf_j * S_k / (G_j |w_jk|), S_k the source's
volts per model unit. The bias is a resistor from +Vref or -Vref.

Rf_j is as large as the range allows (low power) while the largest weight still fits
r_min; values snap to the E-series inside [r_min, r_max]. A weight that needs a
resistor above r_max is realised with r_max when that is the nearer weight, else left
open; one that needs less than r_min gets r_min. Each is counted (or refused).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PySpice.Spice.Netlist import Circuit, SubCircuitFactory

from crystalbench import adc as adc_mod
from crystalbench.crystal import Crystal
from crystalbench.errors import AnalogError

from . import eseries
from .opamps import OpAmpMacro, OpAmpSpec

# One decoupling capacitor per dual op-amp package, V+ to V- (the board `manufacture`
# builds). A core whose rails are switched (analog.power_gating) charges every one from 0
# to vcc - vee at each power-up: C V^2 from the supply (half stored, half lost charging;
# the stored half is lost again at power-down). The transient deck leaves them out.
DECOUPLING_F = 100e-9

DIODE_MODEL = "dsig"
# A generic low-leakage small-signal switching diode (BAS116 class). Modelling choice, not
# fitted to a datasheet (unconfirmed): its reverse leakage times Rf must stay far below
# an ADC LSB, which rules out a plain 1N4148 model (IS ~ nA) with megaohm feedback.
DIODE_PARAMS = dict(IS=1e-12, N=1.0, RS=1.0, CJO=2e-12, TT=3e-9, BV=75)


class InvertingBuffer(SubCircuitFactory):
    """out = -(rf/rin) * in: the inverted copy of a signal that positive weights read."""

    NAME = "inverting_buffer"
    NODES = ("src", "out", "vcc", "vee")

    def __init__(self, opamp: str):
        super().__init__(rin=10e3, rf=10e3, vos=0)
        self.R("in", "src", "sum", "{rin}")
        self.R("f", "sum", "out", "{rf}")
        self.X("op", opamp, self.gnd, "sum", "vcc", "vee", "out", vos="{vos}")


class PrecisionRectifier(SubCircuitFactory):
    """ReLU stage of a neuron: out = max(0, -rf * (current into sum))."""

    NAME = "relu_rectifier"
    NODES = ("sum", "out", "vcc", "vee")

    def __init__(self, opamp: str):
        super().__init__(rf=10e3, vos=0)
        self.X("op", opamp, self.gnd, "sum", "vcc", "vee", "a", vos="{vos}")
        self.D("clamp", "sum", "a", model=DIODE_MODEL)
        self.D("out", "a", "out", model=DIODE_MODEL)
        self.R("f", "out", "sum", "{rf}")


class DifferenceSummer(SubCircuitFactory):
    """Linear summer with inputs on both sides (relu_stage 'difference'): positive weights
    into the non-inverting input through a divider, negative ones into the summing node,
    so no source needs an inverted copy. No clamp diode: the summing node follows the
    non-inverting input, so a diode to it would clamp at a varying level; a negative sum
    drives the output to its low swing limit and the ADC's zero code is the ReLU."""

    NAME = "difference_summer"
    NODES = ("plus", "sum", "out", "vcc", "vee")

    def __init__(self, opamp: str):
        super().__init__(rf=10e3, vos=0)
        self.X("op", opamp, "plus", "sum", "vcc", "vee", "out", vos="{vos}")
        self.R("f", "out", "sum", "{rf}")


class ClampedSummer(SubCircuitFactory):
    """Linear inverting summer whose negative swing a feedback diode clamps at about
    -0.6 V: for neurons read only through the ADC, whose unsigned range (negatives ->
    code 0) is the ReLU. No dead zone, so outputs near zero settle linearly, unlike a
    precision rectifier that must slew across two diode drops on a tiny error."""

    NAME = "clamped_summer"
    NODES = ("sum", "out", "vcc", "vee")

    def __init__(self, opamp: str):
        super().__init__(rf=10e3, vos=0)
        self.X("op", opamp, self.gnd, "sum", "vcc", "vee", "out", vos="{vos}")
        self.D("clamp", "sum", "out", model=DIODE_MODEL)
        self.R("f", "out", "sum", "{rf}")


@dataclass
class Neuron:
    layer: int  # 0-based hidden layer
    index: int
    gain: float  # volts per model unit at the output
    rf: float
    inputs: list  # into the summing node: (source index k, reads inverted copy, ohms)
    bias: tuple | None  # (from +Vref, ohms), into the summing node
    stage: str = "rectifier"  # "clamp" or "difference": ReLU by the ADC (only it reads them)
    # a difference summer's non-inverting side: (source index k, ohms) per positive weight,
    # the divider's resistor to ground (None = open), and the summing node's (None = open)
    plus: list = field(default_factory=list)
    r_ground_plus: float | None = None
    r_ground_sum: float | None = None

    @property
    def resistors(self) -> list[float]:
        """Every resistor value of this neuron (inputs, plus side, bias, grounds, Rf)."""
        return ([r for _, _, r in self.inputs] + [r for _, r in self.plus] + [self.rf]
                + [r for r in (self.bias and self.bias[1], self.r_ground_plus,
                               self.r_ground_sum) if r is not None])

    @property
    def diodes(self) -> int:
        return {"rectifier": 2, "clamp": 1, "difference": 0}[self.stage]


@dataclass
class CoreDesign:
    """Everything the netlist needs, and the exact ideal-op-amp transfer in numpy."""

    crystal_name: str
    opamp: OpAmpSpec
    series: str
    vcc: float
    vee: float
    vx: float  # volts per model unit of input
    vref: float
    v_fs: float  # ADC reference: every neuron's full scale in volts
    r_inverter: float
    neurons: list[Neuron]
    core: tuple  # per hidden layer: indices of core neurons
    sizes: tuple = ()  # per hidden layer: its width (core neurons or not)
    inverted: list = field(default_factory=list)  # (layer or -1 for inputs, index)
    clipped: dict = field(default_factory=dict)
    n_inputs: int = 0

    def source_node(self, layer: int, k: int, inverted: bool) -> str:
        base = f"x{k}" if layer < 0 else f"h{layer + 1}_{k}"
        return ("n" + base) if inverted else base

    @property
    def resistor_count(self) -> int:
        return sum(len(n.resistors) for n in self.neurons) + 2 * len(self.inverted)

    @property
    def dac_inputs(self) -> list[int]:
        """Inputs with a DAC: every input a first-layer core neuron reads, on either side."""
        return sorted({k for n in self.neurons if n.layer == 0
                       for k in [k for k, _, _ in n.inputs] + [k for k, _ in n.plus]})

    @property
    def opamp_count(self) -> int:
        return len(self.neurons) + len(self.inverted)

    @property
    def decoupling_j_per_power_up(self) -> float:
        return math.ceil(self.opamp_count / 2) * DECOUPLING_F * (self.vcc - self.vee) ** 2


def design_core(c: Crystal, acfg, adc: adc_mod.AdcModel, opamp: OpAmpSpec) -> CoreDesign:
    """Map the Crystal's core to resistor values. acfg is the validated `analog` section."""
    table = eseries.values_in(acfg.e_series, acfg.r_min, acfg.r_max)
    supply = acfg.supply_v if acfg.supply_v is not None else opamp.supply_default_v
    in_mag = max(abs(c.input.low), abs(c.input.high)) or 1.0
    vx = acfg.input_v / in_mag
    n_hidden = len(c.layers) - 1
    core_idx = tuple(np.flatnonzero(c.partition.core[li]) for li in range(n_hidden))
    gains = {(li, int(j)): acfg.adc_ref_v / float(adc.full_scale[li][j])
             for li in range(n_hidden) for j in core_idx[li]}
    design = CoreDesign(crystal_name=c.name, opamp=opamp, series=acfg.e_series,
                        vcc=supply / 2, vee=-supply / 2, vx=vx, vref=acfg.vref_v,
                        v_fs=acfg.adc_ref_v, r_inverter=float(eseries.snap(acfg.r_inverter, table)),
                        neurons=[], core=core_idx, n_inputs=c.input.size,
                        sizes=tuple(c.layers[li].n_out for li in range(n_hidden)))
    design.clipped = {"above_r_max_open": 0, "above_r_max_at_r_max": 0, "below_r_min": 0,
                      "worst": None}
    inverted: set = set()
    for li in range(n_hidden):
        for j in core_idx[li]:
            design.neurons.append(_design_neuron(c, li, int(j), gains, vx, acfg, table,
                                                 design.clipped, inverted))
    design.inverted = sorted(inverted)
    return design


def _relu_stage(c: Crystal, li: int, j: int, acfg) -> str:
    """'rectifier' where core neurons read neuron j of layer li (or the config asks for it),
    else 'clamp' or, in the first layer, 'difference' (ReLU by the ADC) as
    analog.relu_stage says."""
    part = c.partition
    read_by_core = li + 1 < len(c.layers) - 1 and bool(
        (c.layers[li + 1].mask[:, j] & part.core[li + 1]).any())
    if read_by_core or acfg.relu_stage == "rectifier":
        return "rectifier"
    # a divider loads its sources: only the DACs drive one exactly (a rectifier's output
    # is held by its feedback resistor to a virtual ground when its diode is off)
    return "difference" if acfg.relu_stage == "difference" and li == 0 else "clamp"


def _feedback_resistor(ratios: list, acfg, table: np.ndarray) -> float:
    """Largest Rf that keeps the strongest weight >= r_min, capped where the weakest
    weight sits at r_max; both inside the range, snapped to the table."""
    a_max, a_min = max(ratios), min(ratios)
    rf = min(acfg.r_max * a_min, acfg.r_max)
    rf = max(rf, acfg.r_min * a_max, acfg.r_min)
    rf = float(np.clip(rf, acfg.r_min, acfg.r_max))
    return float(eseries.snap(rf, table))


def _design_neuron(c: Crystal, li: int, j: int, gains: dict, vx: float, acfg,
                   table: np.ndarray, clipped: dict, inverted: set) -> Neuron:
    """Resistors of core neuron j of hidden layer li; counts clipped weights in `clipped`
    and adds the sources that need inverted copies to `inverted`."""
    layer = c.layers[li]
    g = gains[(li, j)]
    stage = _relu_stage(c, li, j, acfg)
    ks = np.flatnonzero(layer.mask[j] & (layer.weights[j] != 0))
    scales = np.array([vx if li == 0 else gains[(li - 1, int(k))] for k in ks])
    ratios = g * np.abs(layer.weights[j, ks].astype(np.float64)) / scales
    b = float(layer.bias[j])
    all_ratios = list(ratios) + ([g * abs(b) / acfg.vref_v] if b != 0 else [])
    if not all_ratios:
        return Neuron(li, j, g, float(table[-1]), [], None, stage)
    rf = _feedback_resistor(all_ratios, acfg, table)
    where = (li, j, g, rf)
    inputs, positive = [], []
    for k, ratio in zip(ks, ratios):
        if stage == "difference" and layer.weights[j, k] > 0:
            positive.append((int(k), ratio))  # the non-inverting side, placed below
            continue
        what = f"the weight from {'input' if li == 0 else 'neuron'} {k}"
        ohms = _place(ratio, vx if li == 0 else gains[(li - 1, int(k))], what, where, acfg,
                      table, clipped)
        if ohms is None:
            continue
        inv = bool(layer.weights[j, k] > 0)
        if inv:
            inverted.add((li - 1, int(k)))
        inputs.append((int(k), inv, ohms))
    bias = None
    if b != 0:
        ohms = _place(g * abs(b) / acfg.vref_v, acfg.vref_v, "the bias", where, acfg, table,
                      clipped)
        if ohms is not None:
            bias = (b < 0, ohms)  # out = -Rf*V/R: a positive bias reads -Vref
    neuron = Neuron(li, j, g, rf, inputs, bias, stage)
    if stage == "difference":
        _design_plus_side(neuron, positive, vx, acfg, table, clipped)
    return neuron


def _design_plus_side(n: Neuron, positive: list, vx: float, acfg, table: np.ndarray,
                      clipped: dict) -> None:
    """The non-inverting side of first-layer difference summer n (its summing-node side
    placed; `positive`: (input k, gain a_k) per positive weight, vx volts per input unit):

        out = A * V+ - Rf * sum_minus(V / R),  A = 1 + Rf * G_sum (all conductances at
        the summing node, its ground resistor included),  V+ = sum(G_p V_p) / (sum G_p + G_g)

    so positive weight p has gain a_p = A * G_p / S with S = sum G_p + G_g: G_p = a_p / Rp
    with Rp = A / S, as the summing side's R = Rf / ratio, and the divider's ground
    resistor 1 / G_g = Rp / (A - sum(a_p)). The divider needs sum(a_p) <= A (G_g >= 0);
    where the summing side gives less (or so little more that 1 / G_g would pass r_max),
    a resistor from the summing node to ground raises A. Rp is the largest that keeps the
    strongest weight >= r_min, moved where the ground resistor would leave r_min..r_max.
    Snapping errors stay in the values; realized_forward is exact."""
    if not positive:
        return
    a = np.array([ratio for _, ratio in positive])
    g_sum = sum(1 / r for _, _, r in n.inputs) + (1 / n.bias[1] if n.bias else 0.0)
    big_a = 1 + n.rf * g_sum
    rp = _feedback_resistor(list(a), acfg, table)
    # the divider's ground resistor rp / (A - sum(a_p)) must stay <= r_max at this rp: where
    # A falls short of sum(a_p) + rp / r_max, raise it (a smaller ground resistor at the
    # summing node only adds conductance, so its next E-series value below the need)
    if a.sum() + rp / acfg.r_max > big_a:
        need = n.rf / (a.sum() + rp / acfg.r_max - big_a)
        below = table[table <= need]
        if below.size == 0:  # even r_min leaves A short: every positive weight shrinks
            clipped["below_r_min"] += 1
        n.r_ground_sum = float(below[-1] if below.size else table[0])
        big_a += n.rf / n.r_ground_sum
    spare = big_a - a.sum()
    if spare > 0:
        # the ground resistor rp / spare, inside the range and snapped first: it carries
        # most of the divider's conductance, so rp follows from its E-series value and
        # only the inputs' own snapping errors remain (independent, not shared)
        ground = float(eseries.snap(min(max(rp, acfg.r_min * spare), acfg.r_max * spare)
                                    / spare, table))
        rp = ground * spare
    where = (n.layer, n.index, n.gain, rp)
    for (k, ratio) in positive:
        ohms = _place(ratio, vx, f"the weight from input {k}", where, acfg, table, clipped)
        if ohms is not None:
            n.plus.append((k, ohms))
    if spare > 0 and n.plus:
        n.r_ground_plus = ground


def _place(ratio: float, source_scale: float, what: str, where: tuple, acfg,
           table: np.ndarray, clipped: dict) -> float | None:
    """The resistor (ohms; None = left open) that gives gain `ratio` with feedback rf.
    Outside r_min..r_max: refused (analog.out_of_range 'refuse'), or clipped and counted,
    the worst clip (largest weight error) kept in clipped["worst"]. The gain reads a
    source of `source_scale` volts per model unit (the bias: Vref volts per unit of bias)
    into a neuron of g volts per unit: weight = ratio * source_scale / g."""
    li, j, g, rf = where
    need = rf / ratio
    if need > acfg.r_max:
        a_at_max = rf / table[-1]
        kind = "above_r_max_at_r_max" if ratio >= a_at_max / 2 else "above_r_max_open"
    elif need < acfg.r_min:
        kind = "below_r_min"
    else:
        return float(eseries.snap(need, table))
    if acfg.out_of_range == "refuse":
        raise AnalogError(
            f"analog.out_of_range is 'refuse' and {what} of core neuron {j} (layer "
            f"{li + 1}) needs {need:.4g} ohm, outside analog.r_min..r_max = "
            f"{acfg.r_min:g}..{acfg.r_max:g}; widen the range or set "
            "analog.out_of_range: clip")
    clipped[kind] += 1
    ohms = None if kind == "above_r_max_open" else float(table[-1] if need > acfg.r_max
                                                           else table[0])
    # the weight's error, in model units of output per model unit of input
    err = abs((0.0 if ohms is None else rf / ohms) - ratio) * source_scale / g
    if err > (clipped["worst"] or {}).get("error_model_units", 0.0):
        clipped["worst"] = {"layer": li + 1, "neuron": j, "what": what, "needed_ohm": need,
                            "used_ohm": ohms, "error_model_units": err}
    return ohms


def realized_forward(design: CoreDesign, x: np.ndarray, r_scale: dict | None = None,
                     vos: dict | None = None) -> list[np.ndarray]:
    """Exact core outputs (volts) for an ideal op-amp with these resistors (and, if
    given, input offsets in volts): per hidden layer, (n, n_neurons) with zeros for
    non-core neurons. The offset enters with the noise gain 1 + Rf * sum(1/R) (every
    resistor at the summing node); a difference summer's non-inverting side adds that
    gain times its divider's voltage (_design_plus_side)."""
    r_scale = r_scale or {}
    vos = vos or {}
    x = np.asarray(x, np.float64)
    volts = [np.zeros((x.shape[0], size)) for size in design.sizes]
    for n in sorted(design.neurons, key=lambda n: n.layer):
        rf = n.rf * r_scale.get(("rf", n.layer, n.index), 1.0)
        src_v = x * design.vx if n.layer == 0 else volts[n.layer - 1]
        acc = np.zeros(x.shape[0])
        g_noise = 1.0
        for k, inv, ohms in n.inputs:
            r = ohms * r_scale.get(("in", n.layer, n.index, k), 1.0)
            v = src_v[:, k]
            if inv:
                key = (n.layer - 1, k)
                inv_gain = r_scale.get(("inv",) + key, 1.0)
                v = -inv_gain * v + vos.get(("inv",) + key, 0.0) * (1 + inv_gain)
            acc += v / r
            g_noise += rf / r
        if n.bias is not None:
            pos, ohms = n.bias
            r = ohms * r_scale.get(("bias", n.layer, n.index), 1.0)
            acc += (design.vref if pos else -design.vref) / r
            g_noise += rf / r
        if n.r_ground_sum is not None:
            g_noise += rf / (n.r_ground_sum * r_scale.get(("gsum", n.layer, n.index), 1.0))
        v_plus = np.zeros(x.shape[0])
        if n.plus:
            g_plus = 0.0
            for k, ohms in n.plus:
                r = ohms * r_scale.get(("plus", n.layer, n.index, k), 1.0)
                v_plus += src_v[:, k] / r
                g_plus += 1 / r
            if n.r_ground_plus is not None:
                g_plus += 1 / (n.r_ground_plus * r_scale.get(("gplus", n.layer, n.index), 1.0))
            v_plus /= g_plus
        out = -rf * acc + (v_plus + vos.get(("relu", n.layer, n.index), 0.0)) * g_noise
        volts[n.layer][:, n.index] = np.maximum(out, 0.0)
    return volts


def _pwl_expr(values: np.ndarray) -> str:
    pts = ", ".join(f"{i},{v:.6g}" for i, v in enumerate(values))
    return f"pwl(v(idx), {pts})" if len(values) > 1 else f"{values[0]:.6g}"


def gate_points(n: int, step_s: float, gate_s: float, rise_s: float, level: float) -> list:
    """PWL points of a gated source: 0 V until each step i starts (t = i * step_s), a
    linear ramp to `level` over rise_s, held until i * step_s + gate_s, a ramp back to 0."""
    if not (0 < rise_s < gate_s and gate_s + rise_s < step_s):
        raise AnalogError(f"power gating needs rise {rise_s:g} s < on-time {gate_s:g} s and "
                          f"on-time + rise < analog.step_us ({step_s * 1e6:g} us); raise "
                          "analog.step_us")
    pts = []
    for i in range(n):
        t0 = i * step_s
        pts += [(t0, 0.0), (t0 + rise_s, level), (t0 + gate_s, level),
                (t0 + gate_s + rise_s, 0.0)]
    return pts


def build_circuit(design: CoreDesign, x: np.ndarray, step_s: float | None = None,
                  rise_s: float = 10e-9, r_scale: dict | None = None,
                  vos: dict | None = None, slew: bool | None = None,
                  gate_s: float | None = None) -> Circuit:
    """The whole core as a PySpice Circuit. Inputs x (n, n_inputs) in model units come
    from one DAC per input, a table indexed by the voltage of source `Vidx`: sweep Vidx
    over 0..n-1 for the DC operating points, or (step_s given) let its staircase step
    through the samples in a transient. With gate_s (power gating, transient only) the
    rails, the bias references and the DACs are off (0 V) outside [i * step_s, i *
    step_s + gate_s]: each sample powers the core up from nothing, as a board whose
    supply is switched per inference (gate_points)."""
    r_scale = r_scale or {}
    vos = vos or {}
    x = np.asarray(x, np.float64)
    cir = Circuit(f"crystalbench analog core of {design.crystal_name!r}: "
                  f"{len(design.neurons)} neurons, {design.opamp.part}, {design.series}")
    amp = OpAmpMacro(design.opamp, slew=step_s is not None if slew is None else slew)
    cir.subcircuit(amp)
    cir.subcircuit(InvertingBuffer(amp.NAME))
    cir.subcircuit(PrecisionRectifier(amp.NAME))
    cir.subcircuit(ClampedSummer(amp.NAME))
    if any(nr.stage == "difference" for nr in design.neurons):
        cir.subcircuit(DifferenceSummer(amp.NAME))
    cir.model(DIODE_MODEL, "D", **DIODE_PARAMS)
    n = x.shape[0]
    rails = (("cc", "vcc", design.vcc), ("ee", "vee", design.vee),
             ("refp", "vrefp", design.vref), ("refn", "vrefn", -design.vref))
    for name, node, level in rails:
        if gate_s is None:
            cir.V(name, node, cir.gnd, level)
        else:
            cir.PieceWiseLinearVoltageSource(name, node, cir.gnd, values=gate_points(
                n, step_s, gate_s, rise_s, level))
    if gate_s is not None:  # the DACs' enable: 0 or 1, with the rails
        cir.PieceWiseLinearVoltageSource("en", "en", cir.gnd,
                                         values=gate_points(n, step_s, gate_s, rise_s, 1.0))
    if step_s is None:
        cir.V("idx", "idx", cir.gnd, 0)
    else:
        pts = [(0.0, 0.0)]
        for i in range(1, n):
            pts += [(i * step_s, i - 1.0), (i * step_s + rise_s, float(i))]
        pts.append((n * step_s, n - 1.0))
        cir.PieceWiseLinearVoltageSource("idx", "idx", cir.gnd, values=pts)
    for k in design.dac_inputs:  # input DACs: ideal, zero output impedance
        expr = _pwl_expr(x[:, k] * design.vx)
        cir.B(f"dac{k}", f"x{k}", cir.gnd,
              voltage_expression=expr if gate_s is None else f"v(en)*({expr})")
    for (li, k) in design.inverted:
        key = ("inv", li, k)
        cir.X(f"inv_{design.source_node(li, k, False)}", InvertingBuffer.NAME,
              design.source_node(li, k, False), design.source_node(li, k, True), "vcc", "vee",
              rin=f"{design.r_inverter:.6g}",
              rf=f"{design.r_inverter * r_scale.get(key, 1.0):.6g}",
              vos=f"{vos.get(key, 0.0):.6g}")
    for nr in design.neurons:
        tag = f"{nr.layer + 1}_{nr.index}"
        s = f"s{tag}"
        for k, inv, ohms in nr.inputs:
            r = ohms * r_scale.get(("in", nr.layer, nr.index, k), 1.0)
            cir.R(f"{tag}_{'n' if inv else 'p'}{k}", design.source_node(nr.layer - 1, k, inv), s,
                  f"{r:.6g}")
        if nr.bias is not None:
            pos, ohms = nr.bias
            r = ohms * r_scale.get(("bias", nr.layer, nr.index), 1.0)
            cir.R(f"{tag}_b", "vrefp" if pos else "vrefn", s, f"{r:.6g}")
        if nr.r_ground_sum is not None:
            r = nr.r_ground_sum * r_scale.get(("gsum", nr.layer, nr.index), 1.0)
            cir.R(f"{tag}_gs", s, cir.gnd, f"{r:.6g}")
        rf = nr.rf * r_scale.get(("rf", nr.layer, nr.index), 1.0)
        params = {"rf": f"{rf:.6g}", "vos": f"{vos.get(('relu', nr.layer, nr.index), 0.0):.6g}"}
        if nr.stage == "difference":
            p = f"p{tag}" if nr.plus else cir.gnd
            for k, ohms in nr.plus:
                r = ohms * r_scale.get(("plus", nr.layer, nr.index, k), 1.0)
                cir.R(f"{tag}_q{k}", design.source_node(nr.layer - 1, k, False), p, f"{r:.6g}")
            if nr.r_ground_plus is not None:  # set only where the divider has inputs
                r = nr.r_ground_plus * r_scale.get(("gplus", nr.layer, nr.index), 1.0)
                cir.R(f"{tag}_gp", p, cir.gnd, f"{r:.6g}")
            cir.X(f"n{tag}", DifferenceSummer.NAME, p, s, f"h{tag}", "vcc", "vee", **params)
            continue
        stage = PrecisionRectifier if nr.stage == "rectifier" else ClampedSummer
        cir.X(f"n{tag}", stage.NAME, s, f"h{tag}", "vcc", "vee", **params)
    return cir
