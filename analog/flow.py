"""Stage `analog` (`crystalbench sim-analog`): design the core, simulate it in ngspice,
compare with torch.

Steps, each a function the tests call directly:

    prepare          design (resistor values) + headroom check + the torch references
    write_netlists   DC and transient netlists in build/<exp>/analog/
    dc_sweep         every test sample through ngspice -> core output volts
    error_split      ngspice vs torch, resistors only (exact numpy), op-amp (the rest)
    transient        the first samples stepped through ngspice -> `settling`, `supply_power`
    monte_carlo      boards with resistor tolerances and op-amp offsets
    report           BOM, plots, the result dict and its summary lines
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench import stage, toolrun
from crystalbench.crystal import Crystal, digest
from crystalbench.errors import AnalogError
from crystalbench.results import Paths, atomic_write_bytes, atomic_write_json

from . import netlist as nl
from . import spice
from .opamps import spec_for

NAME = "analog"
WRITES = (NAME,)
NEEDS_CRYSTAL = True

SOURCE_CLAIM = {"neurons": 1512, "power_mw": 500.0, "latency_us": 1.0,
                "note": "proposed analog board in the source documents; not measured there"}

# How each figure of the result is measured (the parts that depend on the run are added
# in `report`: the op-amp model and the data).
METHOD = {
    "tool": "ngspice in batch mode (`ngspice -b -r <name>.raw <name>.cir`, found and run by "
            "crystalbench.toolrun: NGSPICE picks the executable; log <name>.log beside "
            "each netlist); netlists written with PySpice objects",
    "circuit": "per core neuron one op-amp: inverting summer; ReLU by a precision "
               "half-wave rectifier where core neurons read it, else by the ADC's "
               "unsigned range behind a diode clamp (relu_stage); positive weights read "
               "unity-inverted copies of their inputs; bias from +-vref; ideal DACs; "
               "per-neuron gain puts the calibrated full scale at adc_ref_v",
    "dc": "one .dc sweep of the sample-index source through all test samples (DAC "
          "tables pwl(v(idx))); slew limit off (cannot change an operating point)",
    "accuracy": "core output volts vs torch outputs x gain; LSB = adc_ref_v / "
                "(2^bits - 1); class agreement: ngspice core -> ADC model -> float "
                "frontier vs torch classes, full test split",
    "error_split": "resistors only = ideal op-amp with the snapped resistors, exact in "
                   "numpy; op-amp = ngspice minus that",
    "latency": "settling of every core output to 0.5 LSB of its DC value after each "
               "input step of the transient (worst step, interpolated between time "
               "points); null, with unsettled_steps > 0, when some output is still outside "
               "the band at the end of a step (raise analog.step_us)",
    "power": "time-weighted average and peak over the transient after the first step: "
             "both supply rails from ngspice's source currents (op-amp quiescent + "
             "output currents), plus reference and DAC output currents (from ngspice) "
             "drawn at the rail voltage as linear drivers; ADC and digital not included",
    "energy": "average power x worst settling time (null when unsettled); with "
              "analog.power_gating: rails, references and DACs switched on at each sample "
              "(10 ns ramp, the macro-model's own start-up; a part's internal turn-on time "
              "is not modelled), settling measured from power-on, energy = the integral of "
              "the supply power (rail voltages x currents from ngspice, references and DACs "
              "at the rail voltage) over [power-on, power-on + worst settling], mean over "
              "the steps, plus the charge of the decoupling capacitors at each power-up "
              "(one 100 nF per dual package, C x (vcc - vee)^2; not in the deck)",
    "samples_per_second": "DC sweep of all test samples / wall time of the ngspice run "
                          "(process start, sweep, raw file written and read)",
}

# How the Monte Carlo figures are measured (the result's monte_carlo.method).
MONTE_CARLO_METHOD = ("each board: every resistor scaled by a uniform draw within +-tolerance, "
                      "each op-amp offset normal(0, typical) clipped to the datasheet max; "
                      "boards evaluated exactly in numpy (ideal op-amp + offsets through the "
                      "noise gain); board 0 of each tolerance also through ngspice with the "
                      "macro-model (ngspice_check)")


def config_stamp(acfg, adc_bits: int) -> dict:
    """The settings a core design and its figures depend on (a stage reading this stage's
    result checks them: a change means sim-analog must run again)."""
    return {"analog": dict(acfg), "adc_bits": int(adc_bits)}


# ---- design ----------------------------------------------------------------------------------
@dataclass
class Bench:
    """The designed core and the torch figures it is measured against. Per hidden layer:
    `masks` the core neurons, `gains` volts per model unit, `torch_v` torch x gain."""

    c: Crystal
    acfg: object
    adc: adc_mod.AdcModel
    design: nl.CoreDesign
    x: np.ndarray
    sizes: list
    masks: list
    gains: list
    lsb_v: float
    torch_mu: list
    torch_v: list
    torch_cls: np.ndarray

    @property
    def out_nodes(self) -> list[str]:
        return [f"v({_node(nr)})" for nr in self.design.neurons]


def _node(nr: nl.Neuron) -> str:
    return f"h{nr.layer + 1}_{nr.index}"


def swing_needs(design: nl.CoreDesign, acfg) -> list[tuple]:
    """What the op-amp outputs of this design must reach: (what, value, highest, lowest)
    per kind of node, None where that side is not needed. The diode drop enters only where
    the design has the diode: a precision rectifier's op-amp output sits one drop above its
    neuron output (adc_ref_v at full scale); a clamped summer's output is the neuron output
    itself (up to adc_ref_v); both clamp one drop below zero when the sum is negative. A
    difference summer's output is the neuron output too, with no clamp (a negative sum
    takes it to the swing limit, which needs nothing), and its summing node follows its
    non-inverting input, which holds up to analog.input_v (the macro-model has no
    common-mode limit; this is the nearest check)."""
    stages = {nr.stage for nr in design.neurons}
    d, fs = acfg.diode_drop_v, acfg.adc_ref_v
    needs = []
    if "rectifier" in stages:
        needs.append(("analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output)",
                      fs + d, fs + d, None))
    if "clamp" in stages:
        needs.append(("analog.adc_ref_v (clamped summer output)", fs, fs, None))
    if "difference" in stages:
        needs += [("analog.adc_ref_v (difference summer output)", fs, fs, None),
                  ("analog.input_v (difference summers' non-inverting inputs)", acfg.input_v,
                   acfg.input_v, None)]
    if stages & {"rectifier", "clamp"}:
        needs.append(("analog.diode_drop_v (op-amp output clamped below zero)", d, None, -d))
    if any(li >= 0 for li, _ in design.inverted):
        needs.append(("analog.adc_ref_v (inverted copies of core neurons)", fs, None, -fs))
    if any(li < 0 for li, _ in design.inverted):
        needs.append(("analog.input_v (inverted inputs)", acfg.input_v, acfg.input_v,
                      -acfg.input_v))
    needs.append(("analog.vref_v", acfg.vref_v, acfg.vref_v, -acfg.vref_v))
    return needs


def check_headroom(design: nl.CoreDesign, acfg) -> None:
    """Every node must stay inside the op-amp's output swing with headroom; refuse else."""
    op = design.opamp
    if op.ideal:
        return
    top = design.vcc - op.swing_high_v - acfg.headroom_v
    bottom = design.vee + op.swing_low_v + acfg.headroom_v
    supply = design.vcc - design.vee
    if not op.supply_min_v <= supply <= op.supply_max_v:
        raise AnalogError(f"analog.supply_v {supply:g} V is outside the {op.part}'s "
                          f"{op.supply_min_v:g}-{op.supply_max_v:g} V range")
    for what, v, high, low in swing_needs(design, acfg):
        if (high is not None and high > top) or (low is not None and low < bottom):
            raise AnalogError(
                f"{what} = {v:g} V does not fit the {op.part}'s output swing on +-{supply / 2:g} V "
                f"rails with analog.headroom_v {acfg.headroom_v:g} V (usable {bottom:.3g}.."
                f"{top:.3g} V); lower it or raise analog.supply_v")


def prepare(c: Crystal, acfg, adc_bits: int, log: stage.Log = stage.quiet) -> Bench:
    """Design the core (refusing one that does not fit the rails) and gather the torch
    references of the test split in volts."""
    opamp = spec_for(acfg.opamp)
    adc = adc_mod.adc_for(c, adc_bits)
    design = nl.design_core(c, acfg, adc, opamp)
    check_headroom(design, acfg)
    if not design.neurons:
        raise AnalogError(f"crystal {c.name!r} has no core neurons (nothing frozen); "
                          "train longer or relax the freeze section of the config")
    n_clipped = sum(v for k, v in design.clipped.items() if k != "worst")
    if n_clipped:
        w = design.clipped["worst"]
        log(f"analog: warning: {n_clipped} weights need a resistor outside analog.r_min.."
            f"r_max and were clipped ({design.clipped['above_r_max_open']} left open); "
            f"worst: layer {w['layer']} neuron {w['neuron']}, {w['what']}, "
            f"{w['error_model_units']:.3g} model units at full input")
    n_hidden = len(c.layers) - 1
    sizes = [c.layers[li].n_out for li in range(n_hidden)]
    gains = [np.ones(s) for s in sizes]
    for nr in design.neurons:
        gains[nr.layer][nr.index] = nr.gain
    torch_mu = [c.reference.outputs[li].astype(np.float64) for li in range(n_hidden)]
    return Bench(c=c, acfg=acfg, adc=adc, design=design, x=c.reference.x.astype(np.float64),
                 sizes=sizes, masks=[c.partition.core[li] for li in range(n_hidden)],
                 gains=gains, lsb_v=acfg.adc_ref_v / adc.levels, torch_mu=torch_mu,
                 torch_v=[t * g for t, g in zip(torch_mu, gains)],
                 torch_cls=c.reference.outputs[-1].argmax(1))


def hybrid_classes(c: Crystal, adc: adc_mod.AdcModel, core_model_units: list[np.ndarray],
                   x: np.ndarray) -> np.ndarray:
    """Predicted classes when the core outputs (model units, per hidden layer) go through
    the ADC and the frontier is the float model (raw inputs it reads through the input
    converter)."""
    part = c.partition
    xq = adc.input_low + adc.input_codes(x) * adc.input_lsb()
    prev = np.where(part.frontier_inputs[None, :], xq, x)
    for li, layer in enumerate(c.layers):
        h = prev @ layer.weights.T.astype(np.float64) + layer.bias
        if layer.activation == "relu":
            h = np.maximum(h, 0.0)
        if li < len(c.layers) - 1 and part.core[li].any():
            core = part.core[li]
            seen = adc.values(adc.codes(core_model_units[li], li), li)
            h[:, core] = seen[:, core]
        prev = h
    return prev.argmax(1)


def _classes(b: Bench, volts: list[np.ndarray]) -> np.ndarray:
    """Hybrid classes when the core outputs these volts."""
    return hybrid_classes(b.c, b.adc, [v / g for v, g in zip(volts, b.gains)], b.x)


def _agreement(b: Bench, volts: list[np.ndarray]) -> float:
    """Class agreement with torch when the core outputs these volts."""
    return float((_classes(b, volts) == b.torch_cls).mean())


# ---- netlists ----------------------------------------------------------------------------
@dataclass
class Netlists:
    dc: Path
    tran: Path
    n_tr: int  # samples stepped through in the transient
    step_s: float
    t_stop: float
    gate_s: float | None = None  # power gating: on-time per step (half the step)


def netlist_text(cir, analysis: str, kind: str, prints: list[str], saves: list[str]) -> str:
    """The circuit plus its analysis, `.save` lines (the vectors the raw file keeps: what
    the flow reads) and `.print` lines (what `ngspice -b <file>` by hand shows)."""
    lines = [str(cir).rstrip(), ".options noacct", analysis]
    for i in range(0, len(saves), 8):  # a few names per line keeps the listing readable
        lines.append(".save " + " ".join(saves[i:i + 8]))
    for i in range(0, len(prints), 8):
        lines.append(f".print {kind} " + " ".join(prints[i:i + 8]))
    lines.append(".end")
    return "\n".join(lines) + "\n"


def transient_vectors(design: nl.CoreDesign, gated: bool = False) -> list[str]:
    """Exactly what the transient step reads: neuron outputs, the four supply currents,
    and for the DAC currents the input nodes and the sum nodes that read them directly;
    gated, the rail voltages too (they ramp)."""
    outs = [f"v({_node(nr)})" for nr in design.neurons]
    sums = [f"v(s{nr.layer + 1}_{nr.index})" for nr in design.neurons
            if nr.layer == 0 and any(not inv for _, inv, _ in nr.inputs)]
    sums += [f"v(p1_{nr.index})" for nr in design.neurons if nr.layer == 0 and nr.plus]
    dacs = [f"v(x{k})" for k in design.dac_inputs]
    rails = ["v(vcc)", "v(vee)"] if gated else []
    return outs + ["i(vcc)", "i(vee)", "i(vrefp)", "i(vrefn)"] + rails + sums + dacs


def write_netlists(b: Bench, out_dir: Path) -> Netlists:
    """core.cir (DC sweep over the test split, slew limit off: it cannot change an
    operating point) and core_tran.cir (transient over the first samples)."""
    n = len(b.x)
    dc_path = out_dir / "core.cir"
    cir = nl.build_circuit(b.design, b.x, slew=False)
    atomic_write_bytes(dc_path, netlist_text(cir, f".dc Vidx 0 {n - 1} 1", "dc",
                                             b.out_nodes, b.out_nodes).encode())
    n_tr = min(b.acfg.transient_samples, n)
    step_s = b.acfg.step_us * 1e-6
    t_stop = n_tr * step_s
    tr_path = out_dir / "core_tran.cir"
    gate_s = step_s / 2 if b.acfg.get("power_gating") else None
    cir_tr = nl.build_circuit(b.design, b.x[:n_tr], step_s=step_s, gate_s=gate_s)
    atomic_write_bytes(tr_path, netlist_text(
        cir_tr, f".tran {step_s / 400:.4g} {t_stop:.6g} 0 {step_s / 200:.4g}", "tran",
        b.out_nodes[:8], transient_vectors(b.design, gate_s is not None)).encode())
    return Netlists(dc=dc_path, tran=tr_path, n_tr=n_tr, step_s=step_s, t_stop=t_stop,
                    gate_s=gate_s)


# ---- DC sweep and errors ---------------------------------------------------------------------
def core_volts(design: nl.CoreDesign, vec: dict, sizes: list[int]) -> list[np.ndarray]:
    """Per hidden layer (points, neurons) volts of the core outputs as the ADC converts
    them (negatives -> 0: the clamp stages' ReLU); zeros for neurons outside the core."""
    n_pts = len(next(iter(vec.values())))
    out = [np.zeros((n_pts, s)) for s in sizes]
    for nr in design.neurons:
        out[nr.layer][:, nr.index] = np.maximum(vec[_node(nr)], 0.0)
    return out


def dc_sweep(b: Bench, path: Path) -> tuple[list[np.ndarray], float]:
    """Run the DC netlist: (core output volts per hidden layer, ngspice seconds)."""
    vec, seconds = spice.run_file(path, points=len(b.x))
    return core_volts(b.design, vec, b.sizes), seconds


def error_stats(volts: list, ref: list, masks: list, lsb_v: float) -> tuple[dict, np.ndarray]:
    """RMS and max of volts - ref over the masked neurons of every layer, in volts and in
    LSB; and every error in LSB (for the histogram)."""
    errs = np.concatenate([(v - r)[:, m].ravel() for v, r, m in zip(volts, ref, masks)])
    rms, top = float(np.sqrt(np.mean(errs ** 2))), float(np.abs(errs).max())
    return {"rms_v": rms, "max_v": top, "rms_lsb": rms / lsb_v, "max_lsb": top / lsb_v}, \
        errs / lsb_v


def error_split(b: Bench, volts: list[np.ndarray]) -> dict:
    """Errors and class agreement: ngspice vs torch (total), ideal op-amp with the
    snapped resistors vs torch (resistors only, exact in numpy), ngspice vs that (op-amp)."""
    ideal_v = nl.realized_forward(b.design, b.x)
    total, total_lsb = error_stats(volts, b.torch_v, b.masks, b.lsb_v)
    quant, quant_lsb = error_stats(ideal_v, b.torch_v, b.masks, b.lsb_v)
    opamp, _ = error_stats(volts, ideal_v, b.masks, b.lsb_v)
    per_neuron = []
    for nr in b.design.neurons:
        m = [np.zeros(s, bool) for s in b.sizes]
        m[nr.layer][nr.index] = True
        e, _ = error_stats(volts, b.torch_v, m, b.lsb_v)
        per_neuron.append({"layer": nr.layer + 1, "neuron": nr.index, **e})
    cls = _classes(b, volts)
    cls_adc = hybrid_classes(b.c, b.adc, b.torch_mu, b.x)
    return {"total": total, "resistors_only": quant, "opamp": opamp, "per_neuron": per_neuron,
            "total_lsb": total_lsb, "resistors_only_lsb": quant_lsb,
            "agreement": float((cls == b.torch_cls).mean()),
            "agreement_resistors_only": _agreement(b, ideal_v),
            "agreement_adc_only": float((cls_adc == b.torch_cls).mean()),
            "accuracy": float((cls == b.c.reference.y).mean())}


# ---- transient: settling and supply power --------------------------------------------------
def settling(t: np.ndarray, outs: np.ndarray, finals: np.ndarray, step_s: float,
             band: float, window_s: float | None = None) -> tuple[np.ndarray, int]:
    """Settling time of every input step of a transient.

    Step i (1 <= i < len(finals)) starts at t = i * step_s and holds until (i + 1) * step_s;
    `outs` (time points, outputs) must end inside `band` of `finals[i]` (outputs clipped at
    0, as the ADC converts them). The settling time is when the last output enters the
    band for good, linearly interpolated between time points, from the step's start.
    Returns (seconds per step, NaN where some output is still outside the band at the
    step's last time point; the number of such unsettled steps). With window_s (power
    gating) each step is judged over [i * step_s, i * step_s + window_s) only."""
    times = []
    window_s = step_s if window_s is None else window_s
    for i in range(1, len(finals)):
        sel = (t >= i * step_s) & (t < i * step_s + window_s)
        ts, err = t[sel], np.abs(np.maximum(outs[sel], 0.0) - finals[i])
        bad = err > band
        if not len(ts) or bad[-1].any():
            times.append(math.nan)
            continue
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            times.append(0.0)
            continue
        r = rows[-1]  # last point outside the band; the crossing lies before point r + 1
        frac = np.where(bad[r], (err[r] - band) / np.maximum(err[r] - err[r + 1], 1e-30), 0.0)
        frac = float(np.clip(frac.max(), 0.0, 1.0))
        times.append(float(ts[r] + frac * (ts[r + 1] - ts[r]) - i * step_s))
    times = np.array(times)
    return times, int(np.isnan(times).sum())


@dataclass
class Power:
    trace: np.ndarray  # watts at every time point
    average: float  # time-weighted over the window
    peak: float
    rails_average: float  # the two supply rails alone (op-amps)


def _time_average(t: np.ndarray, y: np.ndarray) -> float:
    if len(t) < 2 or t[-1] <= t[0]:
        return float(y.mean())
    return float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(t)) / (t[-1] - t[0]))


def supply_power(t: np.ndarray, i_vcc: np.ndarray, i_vee: np.ndarray, vcc: float, vee: float,
                 drivers: list[np.ndarray] = (), t_from: float = 0.0) -> Power:
    """Power drawn from the supply over a transient.

    Rails: sources Vcc (vcc > 0) and Vee (vee < 0) with ngspice branch currents (positive
    into the + node), delivering -(vcc * i_vcc + vee * i_vee). Drivers (references, DACs)
    are linear stages on the same rails: each draws its output current's magnitude at the
    larger rail voltage. Average (trapezoid, time-weighted) and peak over t >= t_from."""
    rails = -(vcc * np.asarray(i_vcc) + vee * np.asarray(i_vee))
    rail = np.maximum(vcc, -np.asarray(vee))  # arrays when the rails ramp (power gating)
    p = rails + rail * sum((np.abs(i) for i in drivers), np.zeros_like(rails))
    win = t >= t_from
    return Power(trace=p, average=_time_average(t[win], p[win]), peak=float(p[win].max()),
                 rails_average=_time_average(t[win], rails[win]))


def window_energy(t: np.ndarray, p: np.ndarray, starts, width: float) -> np.ndarray:
    """Energy (J) of the power trace p over [s, s + width] for each start s: trapezoids
    on the time points inside, the trace interpolated at both ends of the window. At a
    jump (a repeated time point) on either end, only the part inside counts: np.interp
    gives the value after it, so the points at the end itself are kept."""
    out = []
    for s in starts:
        e = s + width
        inside = (t > s) & (t <= e)
        tt = np.concatenate([[s], t[inside], [e]])
        pp = np.concatenate([[np.interp(s, t, p)], p[inside], [np.interp(e, t, p)]])
        out.append(float(np.sum(0.5 * (pp[1:] + pp[:-1]) * np.diff(tt))))
    return np.array(out)


def dac_currents(design: nl.CoreDesign, tv: dict) -> list[np.ndarray]:
    """Output current of each input DAC (from ngspice node voltages): into the neurons that
    read it directly (summing nodes and difference summers' dividers), and into its
    inverter's virtual ground."""
    out = []
    for k in design.dac_inputs:
        ik = np.zeros_like(tv["time"])
        for nr in design.neurons:
            if nr.layer == 0:
                for kk, inv, ohms in nr.inputs:
                    if kk == k and not inv:
                        ik += (tv[f"x{k}"] - tv[f"s1_{nr.index}"]) / ohms
                for kk, ohms in nr.plus:
                    if kk == k:
                        ik += (tv[f"x{k}"] - tv[f"p1_{nr.index}"]) / ohms
        if (-1, k) in design.inverted:
            ik += tv[f"x{k}"] / design.r_inverter
        out.append(ik)
    return out


def transient(b: Bench, nets: Netlists, dc_volts: list[np.ndarray]) -> dict:
    """Run the transient netlist: settling of every step to 0.5 LSB of its DC value, the
    supply power, and how far each step's end lies from the DC sweep."""
    tv, seconds = spice.run_file(nets.tran, t_stop=nets.t_stop)
    t, d = tv["time"], b.design
    gated = nets.gate_s is not None
    outs = np.stack([tv[_node(nr)] for nr in d.neurons], 1)
    finals = np.stack([dc_volts[nr.layer][:nets.n_tr, nr.index] for nr in d.neurons], 1)
    times, unsettled = settling(t, outs, finals, nets.step_s, 0.5 * b.lsb_v, nets.gate_s)
    vcc, vee = (tv["vcc"], tv["vee"]) if gated else (d.vcc, d.vee)
    power = supply_power(t, tv["i(vcc)"], tv["i(vee)"], vcc, vee,
                         [tv["i(vrefp)"], tv["i(vrefn)"]] + dac_currents(d, tv),
                         t_from=nets.step_s)  # skip the initial operating point
    on_s = nets.gate_s or nets.step_s
    end_err = max(float(np.abs(np.maximum(outs[(t >= i * nets.step_s + 0.99 * on_s)
                                               & (t < i * nets.step_s + on_s)], 0.0)
                               - finals[i]).max(initial=0.0)) for i in range(nets.n_tr))
    res = {"t": t, "outs": outs, "settle_s": times, "unsettled": unsettled, "power": power,
           "end_vs_dc_max_lsb": end_err / b.lsb_v, "seconds": seconds, "gated_energy_j": None}
    if gated and unsettled == 0:  # every step powered up and settled: integrate its window
        res["gated_energy_j"] = window_energy(
            t, power.trace, [i * nets.step_s for i in range(1, nets.n_tr)], float(times.max()))
    return res


# ---- Monte Carlo ---------------------------------------------------------------------------
def draw_board(design: nl.CoreDesign, tol: float, offsets: bool, rng) -> tuple[dict, dict]:
    """One Monte Carlo board: (resistor scale factors, op-amp input offsets in volts),
    keyed as nl.realized_forward and nl.build_circuit read them."""
    def u():
        return 1.0 + tol * rng.uniform(-1.0, 1.0)

    def offset():
        return float(np.clip(rng.normal(0, op.vos_typ_v), -op.vos_max_v, op.vos_max_v))

    r_scale, vos = {}, {}
    op = design.opamp
    draw_vos = offsets and op.vos_typ_v > 0
    for n in design.neurons:
        r_scale[("rf", n.layer, n.index)] = u()
        for k, _, _ in n.inputs:
            r_scale[("in", n.layer, n.index, k)] = u()
        if n.bias is not None:
            r_scale[("bias", n.layer, n.index)] = u()
        for k, _ in n.plus:
            r_scale[("plus", n.layer, n.index, k)] = u()
        if n.r_ground_plus is not None:
            r_scale[("gplus", n.layer, n.index)] = u()
        if n.r_ground_sum is not None:
            r_scale[("gsum", n.layer, n.index)] = u()
        if draw_vos:
            vos[("relu", n.layer, n.index)] = offset()
    for (li, k) in design.inverted:
        r_scale[("inv", li, k)] = u() / u()  # rf / rin of the inverting buffer
        if draw_vos:
            vos[("inv", li, k)] = offset()
    return r_scale, vos


def _ngspice_board(b: Bench, path: Path, r_scale: dict, vos: dict, numpy_v: list) -> dict:
    """One Monte Carlo board through ngspice with the op-amp macro-model."""
    cir = nl.build_circuit(b.design, b.x, slew=False, r_scale=r_scale, vos=vos)
    atomic_write_bytes(path, netlist_text(cir, f".dc Vidx 0 {len(b.x) - 1} 1", "dc",
                                          b.out_nodes, b.out_nodes).encode())
    mv, _ = spice.run_file(path, points=len(b.x))
    mvolts = core_volts(b.design, mv, b.sizes)
    diff, _ = error_stats(mvolts, numpy_v, b.masks, b.lsb_v)
    return {"ngspice_agreement": _agreement(b, mvolts),
            "numpy_agreement": _agreement(b, numpy_v), "max_diff_lsb": diff["max_lsb"]}


def monte_carlo(b: Bench, seed: int, out_dir: Path, log: stage.Log = stage.quiet) -> dict:
    """Boards with every resistor off by up to +-tolerance (and op-amp offsets), evaluated
    exactly in numpy; board 0 of each tolerance also through ngspice."""
    a = b.acfg
    if a.monte_carlo_runs <= 0:
        return {"runs": 0}
    log(f"analog: Monte Carlo, {a.monte_carlo_runs} boards x tolerances {a.tolerances} ...")
    rng = np.random.default_rng(seed)
    per_tol, check = {}, {}
    for tol in a.tolerances:
        agr = []
        for r in range(a.monte_carlo_runs):
            r_scale, vos = draw_board(b.design, tol, a.opamp_offset, rng)
            v = nl.realized_forward(b.design, b.x, r_scale, vos)
            agr.append(_agreement(b, v))
            if r == 0:
                path = out_dir / f"monte_carlo_tol{tol:g}_board0.cir"
                check[f"{tol:g}"] = _ngspice_board(b, path, r_scale, vos, v)
        agr = np.array(agr)
        per_tol[f"{tol:g}"] = {"runs": len(agr), "mean_agreement": float(agr.mean()),
                               "min_agreement": float(agr.min()),
                               "yield": float((agr >= a.yield_threshold).mean()),
                               "agreements": [round(float(x), 5) for x in agr]}
    first = per_tol[f"{a.tolerances[0]:g}"]
    return {"runs": first["runs"], "tolerance": a.tolerances[0],
            "mean_agreement": first["mean_agreement"], "min_agreement": first["min_agreement"],
            "yield": first["yield"], "yield_threshold": a.yield_threshold,
            "opamp_offset": bool(a.opamp_offset), "by_tolerance": per_tol,
            "ngspice_check": check, "method": MONTE_CARLO_METHOD}


# ---- the stage ------------------------------------------------------------------------------
def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet) -> dict:
    """Design, netlists, DC sweep, errors, transient, Monte Carlo, report."""
    toolrun.require("ngspice")
    t_start = time.perf_counter()
    acfg = cfg.analog
    b = prepare(c, acfg, cfg.adc.bits, log)
    out_dir = paths.stage(NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    nets = write_netlists(b, out_dir)
    log(f"analog: DC operating points of {len(b.x)} test samples ({len(b.design.neurons)} "
        f"neurons, {b.design.opamp.part}) ...")
    volts, dc_seconds = dc_sweep(b, nets.dc)
    errors = error_split(b, volts)
    log(f"analog: transient over {nets.n_tr} samples x {acfg.step_us:g} us ...")
    tr = transient(b, nets, volts)
    mc = monte_carlo(b, cfg.seed, out_dir, log)
    res = report(b, nets, errors, tr, mc, dc_seconds, out_dir)
    res["wall_seconds"] = time.perf_counter() - t_start
    return stage.finish(NAME, paths, res, summary_lines(res))


# ---- report ---------------------------------------------------------------------------------
def report(b: Bench, nets: Netlists, errors: dict, tr: dict, mc: dict, dc_seconds: float,
           out_dir: Path) -> dict:
    """BOM and plots written; the result dict (settling and energy None when a step did
    not settle)."""
    d, n_core = b.design, len(b.design.neurons)
    atomic_write_json(out_dir / "bom.json", bom(d))
    plots = _plots(out_dir, d, tr["t"], tr["outs"], b.torch_v, nets, errors, b.lsb_v)
    settled = tr["unsettled"] == 0
    worst_s = float(np.max(tr["settle_s"])) if settled else None
    p = tr["power"]
    gated = tr.get("gated_energy_j") is not None
    window_nj = (float(np.mean(tr["gated_energy_j"])) * 1e9 if gated
                 else p.average * worst_s * 1e9 if settled else None)
    # gated: every power-up also recharges the decoupling capacitors the deck leaves out
    decoupling_nj = d.decoupling_j_per_power_up * 1e9 if gated else 0.0
    energy_nj = None if window_nj is None else window_nj + decoupling_nj
    # the power the core draws while on: gated, the on-window's energy / window; else the
    # transient's average
    power_mw = window_nj / (worst_s * 1e6) if gated else p.average * 1e3
    return {
        "crystal": b.c.name, "crystal_digest": digest(b.c),
        "config": config_stamp(b.acfg, b.adc.bits), "opamp": d.opamp.key,
        "opamp_part": d.opamp.part, "e_series": d.series, "supply_v": [d.vee, d.vcc],
        "neurons": n_core, "resistors": d.resistor_count, "opamps": d.opamp_count,
        "inverters": len(d.inverted),
        "diodes": sum(nr.diodes for nr in d.neurons),
        "relu_stages": dict(Counter(nr.stage for nr in d.neurons)),
        "adc_bits": b.adc.bits, "adc_ref_v": d.v_fs, "lsb_mv": b.lsb_v * 1e3,
        "test_samples": len(b.x),
        "class_agreement_with_torch": errors["agreement"],
        "class_agreement_resistors_only": errors["agreement_resistors_only"],
        "class_agreement_adc_only": errors["agreement_adc_only"],
        "test_accuracy_analog": errors["accuracy"],
        "test_accuracy_torch": float((b.torch_cls == b.c.reference.y).mean()),
        "rms_error_lsb": errors["total"]["rms_lsb"], "max_error_lsb": errors["total"]["max_lsb"],
        "rms_error_v": errors["total"]["rms_v"], "max_error_v": errors["total"]["max_v"],
        "per_neuron_error": errors["per_neuron"],
        "error_resistor_quantization": errors["resistors_only"],
        "error_opamp_nonideal": errors["opamp"],
        "clipped_weights": dict(d.clipped),
        "step_us": b.acfg.step_us,
        "settling_time_us": None if worst_s is None else worst_s * 1e6,
        "settling_time_median_us": float(np.median(tr["settle_s"]) * 1e6) if settled else None,
        "settling_times_us": [None if math.isnan(s) else float(s) * 1e6 for s in tr["settle_s"]],
        "unsettled_steps": tr["unsettled"], "transient_steps": nets.n_tr - 1,
        "transient_end_vs_dc_max_lsb": tr["end_vs_dc_max_lsb"],
        "power_gating": nets.gate_s is not None,
        "gate_window_us": worst_s * 1e6 if gated else None,
        "energy_per_inference_steps_nj": ([float(e) * 1e9 for e in tr["gated_energy_j"]]
                                          if gated else None),
        "power_mw": power_mw, "power_peak_mw": p.peak * 1e3,
        "power_opamps_mw": p.rails_average * 1e3, "power_per_neuron_mw": power_mw / n_core,
        "decoupling_energy_nj": decoupling_nj,
        "energy_per_inference_nj": energy_nj,
        "energy_per_neuron_nj": None if energy_nj is None else energy_nj / n_core,
        "samples_per_second": len(b.x) / dc_seconds,
        "simulation_seconds": {"dc": dc_seconds, "transient": tr["seconds"]},
        "monte_carlo": mc, "source_claim": _source_claim(),
        "files": {"netlist": str(nets.dc), "netlist_transient": str(nets.tran),
                  "bom": str(out_dir / "bom.json"), **plots},
        "method": {**METHOD, "opamp_model": f"{d.opamp.part} behavioural macro-model (GBW, "
                   f"slew, A_OL, swing, I_q, offset; figures from {d.opamp.source})",
                   "data": f"Crystal {b.c.name!r} reference test split ({len(b.x)} samples)"},
    }


def _source_claim() -> dict:
    s = SOURCE_CLAIM
    return {**s, "power_per_neuron_mw": s["power_mw"] / s["neurons"],
            "energy_per_inference_nj": s["power_mw"] * s["latency_us"],
            "energy_per_neuron_nj": s["power_mw"] * s["latency_us"] / s["neurons"]}


def summary_lines(res: dict) -> list[str]:
    """What `crystalbench sim-analog` prints."""
    clipped = sum(v for k, v in res["clipped_weights"].items() if k != "worst")
    lines = [
        f"{res['neurons']} neurons, {res['opamps']} op-amps ({res['opamp_part']}), "
        f"{res['resistors']} resistors ({res['e_series']}); {clipped} weights clipped",
        f"class agreement with torch {res['class_agreement_with_torch']:.4f} (resistors only "
        f"{res['class_agreement_resistors_only']:.4f}, ADC only "
        f"{res['class_agreement_adc_only']:.4f}); error RMS {res['rms_error_lsb']:.3f} LSB, "
        f"max {res['max_error_lsb']:.2f} LSB"]
    power = (f"power {res['power_mw']:.1f} mW avg / {res['power_peak_mw']:.1f} mW peak")
    speed = f"ngspice {res['samples_per_second']:.1f} samples/s"
    if res["settling_time_us"] is None:
        lines.append(f"did not settle within analog.step_us = {res['step_us']:g} us in "
                     f"{res['unsettled_steps']} of {res['transient_steps']} steps; raise "
                     f"analog.step_us ({power}; no settling time or energy; {speed})")
    else:
        dec = (f" (of which {res['decoupling_energy_nj']:.1f} nJ recharging the decoupling "
               "capacitors at power-up)" if res.get("power_gating") else "")
        lines.append(f"settling {res['settling_time_us']:.2f} us (worst step), {power}, "
                     f"{res['energy_per_inference_nj']:.1f} nJ per inference{dec}; {speed}")
    mc = res["monte_carlo"]
    if mc.get("runs"):
        lines.append(f"Monte Carlo ({mc['runs']} boards, {mc['tolerance']:g} tolerance): "
                     f"agreement mean {mc['mean_agreement']:.4f}, min {mc['min_agreement']:.4f}, "
                     f"yield {mc['yield']:.2f} at >= {mc['yield_threshold']:g}")
    lines.append(f"netlist {res['files']['netlist']} ({res['wall_seconds']:.0f} s)")
    return lines


def _fmt_ohm(r: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k"), (1.0, "")):
        if r >= div:
            return f"{r / div:.3g}{unit}"
    return f"{r:.3g}"


def bom(design: nl.CoreDesign) -> dict:
    """Bill of materials: resistor values and counts, op-amp packages, diodes, supplies."""
    values = []
    for n in design.neurons:
        values += n.resistors
    values += [design.r_inverter] * (2 * len(design.inverted))
    counts = Counter(round(v, 3) for v in values)
    op = design.opamp
    dual = op.key in ("mcp6002", "opa2333", "tlv9062", "lm358")  # all four are duals
    return {
        "resistors": {"series": design.series, "total": len(values), "distinct": len(counts),
                      "values": [{"ohm": v, "label": _fmt_ohm(v), "count": c}
                                 for v, c in sorted(counts.items())]},
        "opamps": {"part": op.part, "amplifiers": design.opamp_count,
                   "packages": math.ceil(design.opamp_count / 2) if dual else None,
                   "neurons": len(design.neurons), "inverters": len(design.inverted)},
        "diodes": {"part": "low-leakage small-signal diode (BAS116 class)",
                   "count": sum(n.diodes for n in design.neurons)},
        "supplies": {"rails_v": [design.vee, design.vcc],
                     "references_v": [-design.vref, design.vref]},
        "converters": {"dac_channels": len(design.dac_inputs),
                       "adc_channels": len(design.neurons), "adc_reference_v": design.v_fs},
    }


def _plots(out_dir: Path, design: nl.CoreDesign, t, outs, torch_v, nets: Netlists,
           errors: dict, lsb_v: float) -> dict:  # pragma: no mutate block (a view, not a figure)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_tr, step_s = nets.n_tr, nets.step_s
    fig, ax = plt.subplots(figsize=(9, 4.5))
    active = np.argsort([-float(np.ptp(outs[:, i])) for i in range(outs.shape[1])])[:4]
    for col, i in enumerate(active):
        nr = design.neurons[i]
        ax.plot(t * 1e6, outs[:, i], color=f"C{col}", lw=1, label=f"ngspice {_node(nr)}")
        ref = torch_v[nr.layer][:n_tr, nr.index]
        ax.hlines(ref, np.arange(n_tr) * step_s * 1e6, (np.arange(n_tr) + 1) * step_s * 1e6,
                  color=f"C{col}", ls="--", lw=1.5)
    ax.set_xlabel("time (us)")
    ax.set_ylabel("neuron output (V)")
    ax.set_title(f"Core transient ({design.opamp.part}); dashed: torch x gain")
    ax.legend(fontsize=8, loc="upper right")
    files = {"plot_transient": _save(fig, out_dir / "transient.png")}

    total_lsb, quant_lsb = errors["total_lsb"], errors["resistors_only_lsb"]
    fig, ax = plt.subplots(figsize=(7, 4))
    lim = max(1.0, float(np.abs(total_lsb).max()))
    bins = np.linspace(-lim, lim, 81)
    ax.hist(quant_lsb, bins=bins, alpha=0.6, label="ideal op-amp, snapped resistors")
    ax.hist(total_lsb, bins=bins, alpha=0.6, label=f"ngspice, {design.opamp.part}")
    ax.set_yscale("log")
    ax.set_xlabel(f"core output error vs torch (ADC LSB = {lsb_v * 1e3:.2f} mV)")
    ax.set_ylabel("neuron-samples")
    ax.legend(fontsize=8)
    files["plot_error_histogram"] = _save(fig, out_dir / "error_histogram.png")
    return files


def _save(fig, path: Path) -> str:  # pragma: no mutate block (plot file writing)
    """Write a figure atomically (temporary bytes, then rename) and close it."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return str(path)
