"""Stage `hybrid` (`crystalbench sim-hybrid`): the hybrid net run as one system.

    core      the analog core's DC netlist (written by sim-analog) re-run in ngspice
              over the test split -> boundary neuron volts
    adc       volts -> the ADC part's codes -> the frontier's codes (crystalbench.adc)
    frontier  those codes through the frontier's RTL and Yosys gate netlist under
              cocotb + Icarus (sim.flow.run_design): logits and classes, bit-exact
              against the golden model fed the same codes, classes against torch
    boards    Monte Carlo: resistor tolerance, op-amp offsets, ADC offset and gain
              error per board; board 0 through ngspice and the gate netlist, every
              board through the golden model
    figures   energy and latency by part (core, ADC, frontier), beside the all-digital
              net as `sim` measured it

Reads build/<exp>/analog/ (sim-analog), synth/ and fixed/ (synth), sim/ (all-digital
figures, when present); writes build/<exp>/hybrid/result.json and a plot.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench import stage, toolrun
from crystalbench.analog import flow as analog_flow
from crystalbench.analog import netlist as nl
from crystalbench.analog import spice
from crystalbench.crystal import Crystal, digest
from crystalbench.errors import SimError
from crystalbench.results import Paths, atomic_write_bytes, read_json
from crystalbench.rtl import fixed
from crystalbench.rtl import quantize as fixed_stage

from . import flow as sim_flow
from .power import ICE40

NAME = "hybrid"
WRITES = (NAME,)
NEEDS_CRYSTAL = True

METHOD = {
    "core": "sim-analog's DC netlist (op-amp macro-model, E-series resistors) re-run in "
            "ngspice over the test samples: the DC operating point of every boundary neuron",
    "adc": "each boundary neuron on one ADC channel: code = round(v * 2^N / VREF * (1 + "
           "gain error / 2^N) + offset error), clipped to N bits; the FPGA keeps the top "
           "adc.bits bits, rounded; VREF puts analog.adc_ref_v at the top frontier code",
    "frontier": "the codes through the frontier's RTL and gate netlist (cocotb + Icarus); "
                "bit-exact = logits and class equal the golden model (rtl/fixed.py) fed the "
                "same codes; agreement = class equal to torch's on the same sample",
    "energy": "per inference at the highest throughput (one inference per interval = "
              "max(core + ADC, frontier interval)), every part over that interval. Core: "
              "sim-analog's energy to settle (average supply power x worst settling time, "
              "ngspice transient; gated: the on-window's energy + the decoupling recharge, "
              "the lesser of C x V^2 and the on-power x the off-time) "
              "+ its on-power x the ADC's conversion time (the outputs must hold until the "
              "last channel is sampled) + ungated only, its on-power while it waits for a "
              "slower frontier; ADC: conversions x the part's energy per conversion "
              "(datasheet supply and reference current at its full rate); frontier: toggles "
              "of its gate netlist in the steady stream of this run, iCE40 model (sim.power), "
              "+ when the core and ADC are the slower stage, its idle cycles (clock running, "
              "no toggles) and static power",
    "latency": "core settling (sim-analog, 0.5 LSB) + ADC: conversions per chip x the "
               "part's conversion time (chips in parallel, channels in turn) + frontier "
               "cycles at rtl.clock_mhz (the clock the energy is priced at)",
    "throughput": "the frontier overlaps the next sample's settling and conversion: "
                  "1 / max(core + ADC, frontier interval)",
    "monte_carlo": "per board: every resistor uniform within +-analog.tolerances[0], op-amp "
                   "offsets normal(0, typical) clipped to the maximum (analog.opamp_offset), "
                   "per ADC chip an offset and a gain error uniform within the datasheet "
                   "maxima; core exact in numpy (ideal op-amp + offsets), frontier = golden "
                   "model; board 0 also through ngspice and the gate netlist",
}


# ---- inputs from the other stages -------------------------------------------------------------
def analog_results(c: Crystal, cfg, paths: Paths) -> dict:
    """sim-analog's result.json, checked to belong to this Crystal and config."""
    path = paths.result(analog_flow.NAME)
    res = sim_flow.stage_result(paths, analog_flow.NAME, "sim-analog result",
                                "run `crystalbench sim-analog` (`make sim-analog`) first: it "
                                "designs the analog core and measures its settling and power")
    if res.get("crystal_digest") != digest(c):
        raise SimError(f"{path}: made from another Crystal; re-run `crystalbench sim-analog`")
    if res.get("config") != analog_flow.config_stamp(cfg.analog, cfg.adc.bits):
        raise SimError(f"{path}: made with other analog/adc settings than this config; re-run "
                       "`crystalbench sim-analog`")
    net = Path(res.get("files", {}).get("netlist", ""))
    if not net.is_file():
        raise SimError(f"{path}: its DC netlist {net} is missing; re-run `crystalbench sim-analog`")
    return res


def frontier_design(c: Crystal, cfg, paths: Paths) -> tuple[str, dict, fixed.IntNet, dict]:
    """(design name, synth's figures of it, its integer net, synth's result) of the
    frontier design synth named as the headline."""
    sres = sim_flow.synth_results(c, cfg, paths)
    if "frontier" not in sres:
        raise SimError(f"{paths.result('synth')}: synth built no frontier design (rtl.shapes); "
                       "set rtl.shapes and re-run `crystalbench synth`")
    name = sres["frontier"]["design"]
    net = fixed.nets_of(fixed.load(paths.stage(fixed_stage.NAME), c, cfg))["frontier"]
    if net.input_kind != "adc_codes":
        raise SimError(f"crystal {c.name!r}: the frontier reads the raw inputs, not the analog "
                       "core (no hidden layer); there is no hybrid to simulate")
    if net.in_bits != cfg.adc.bits:
        raise SimError(f"the frontier reads {net.in_bits}-bit codes but adc.bits is "
                       f"{cfg.adc.bits}; re-run `crystalbench synth`")
    return name, sres["designs"][name], net, sres


def check_clock(clock_mhz: float, name: str, d: dict) -> None:
    """The frontier's time and energy are priced at rtl.clock_mhz: refuse a clock above the
    fmax nextpnr measured for it (no fmax measured: nothing to check against)."""
    fmax = d.get("fmax_mhz")
    if fmax is not None and clock_mhz > fmax:
        raise SimError(f"rtl.clock_mhz = {clock_mhz:g} exceeds the {fmax:.2f} MHz fmax nextpnr "
                       f"measured for the frontier {name}; set rtl.clock_mhz to at most "
                       f"{fmax:.2f} (and re-run `crystalbench synth`)")


def all_digital_results(paths: Paths, sres: dict) -> dict | None:
    """The all-digital net's gate-level figures from `sim`, if sim ran on these designs."""
    path = paths.result(sim_flow.NAME)
    if not path.exists():
        return None
    res = read_json(path, "sim result")
    if res.get("fixed_digest") != sres.get("fixed_digest") or "all_digital" not in res:
        return None
    a = res["all_digital"]
    clock = res["clock_mhz"]
    return {"design": a["design"], "vectors": res["vectors"],
            "class_agreement_with_torch": a["class_agreement_with_torch"],
            "test_accuracy": a["fixed_point_test_accuracy"],
            "bit_exact_fraction": a["bit_exact_fraction"],
            "energy_per_inference_nj": a["energy_per_inference_nj"],
            "latency_us": a["latency_cycles"] / clock, "latency_cycles": a["latency_cycles"],
            "source": str(path), "measured": res.get("measured")}


# ---- core -> ADC -> codes ----------------------------------------------------------------------
def boundary_volts(volts: list[np.ndarray], net: fixed.IntNet) -> np.ndarray:
    """The core outputs the frontier reads: (samples, boundary neurons) volts."""
    return volts[net.input_layer - 1][:, net.input_index]


def ngspice_core(b: analog_flow.Bench, netlist: Path, out: Path, n: int) -> list[np.ndarray]:
    """Run a copy of sim-analog's DC netlist in this stage's folder; first n samples."""
    local = out / "core.cir"
    shutil.copyfile(netlist, local)
    vec, _ = spice.run_file(local, points=len(b.x))
    return [v[:n] for v in analog_flow.core_volts(b.design, vec, b.sizes)]


def draw_adc_errors(part: adc_mod.AdcPart, plan: adc_mod.ChannelPlan, rng) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (boundary neuron) offset and gain error in the part's LSB: one draw per
    chip, uniform within the datasheet maxima, shared by that chip's channels."""
    chip = np.arange(plan.channels) // max(plan.conversions_per_chip, 1)
    off = rng.uniform(-part.offset_error_lsb, part.offset_error_lsb, plan.chips)
    gain = rng.uniform(-part.gain_error_lsb, part.gain_error_lsb, plan.chips)
    return off[chip], gain[chip]


# ---- figures ---------------------------------------------------------------------------------
def system_figures(analog: dict, plan: adc_mod.ChannelPlan, gates: dict, clock_mhz: float) -> dict:
    """Energy per inference and latency by part, and throughput.

    Priced at the highest throughput, one inference per interval = max(core + ADC, the
    frontier's interval): the frontier works on one sample while the core settles and the
    ADC converts the next. Every part pays for the whole interval: an always-on core draws
    its on-power through it (waiting for the frontier when that is the slower stage); a
    gated core is off outside its window and recharges its decoupling capacitors at
    power-up; the FPGA idles with its clock running when the
    core and ADC are the slower stage (iCE40 clock + static power, sim.power)."""
    gated = bool(analog.get("power_gating"))
    adc_nj = plan.energy_j * 1e9
    dig_nj = gates.get("energy_per_inference_nj")
    core_us = analog.get("settling_time_us")
    adc_us = plan.latency_s * 1e6
    p_mw = analog["power_mw"]
    # The core's outputs must hold until the ADC has sampled the last of them: a chip takes
    # its channels one after the other, so the core stays on (at its on-power) through the
    # chips' conversions. Held to the end of the last conversion: an upper bound, by less
    # than one conversion (the part's acquisition window is not modelled).
    hold_nj = p_mw * adc_us
    dig_us = gates["latency_cycles"] / clock_mhz
    frontier_us = (gates.get("interval_cycles") or gates["latency_cycles"]) / clock_mhz
    interval_us = None if core_us is None else max(core_us + adc_us, frontier_us)
    # (max: when core + ADC is the slow stage, its sum less its parts can come out a hair
    # below zero in floating point)
    off_us = 0.0 if interval_us is None else max(interval_us - core_us - adc_us, 0.0)
    # an always-on core waits (on) for a slower frontier; a gated one is off by then
    wait_nj = 0.0 if gated else p_mw * off_us
    # A gated core's decoupling capacitors lose, while it is off, at most their charge and
    # at most what the core would have drawn (its on-current for the off-time; after the
    # switch opens the op-amps run from them): the supply restores that at each power-up.
    # sim-analog counts the full charge (C x V^2), the bound for a long off-time.
    full_nj = analog.get("decoupling_energy_nj") or 0.0
    recharge_nj = min(full_nj, p_mw * off_us) if gated else 0.0
    # sim-analog's energy per inference less its full recharge: the on-window alone
    epi_nj = analog.get("energy_per_inference_nj")
    settle_nj = None if epi_nj is None else epi_nj - full_nj
    idle_us = 0.0 if interval_us is None else interval_us - frontier_us
    idle_nj = (idle_us * clock_mhz * ICE40["clock_j_per_cycle"] + idle_us * 1e-6 * ICE40["static_w"]) * 1e9
    core_nj = None if settle_nj is None else settle_nj + recharge_nj + hold_nj + wait_nj
    frontier_nj = None if dig_nj is None else dig_nj + idle_nj
    total_nj = None if core_nj is None or frontier_nj is None else core_nj + adc_nj + frontier_nj
    total_us = None if core_us is None else core_us + adc_us + dig_us
    return {
        "energy_per_inference_nj": total_nj,
        "energy_nj": {"analog_nj": core_nj, "adc_nj": adc_nj, "digital_nj": frontier_nj},
        "analog_parts_nj": {"to_settle_nj": settle_nj, "held_for_adc_nj": hold_nj,
                            "waiting_for_frontier_nj": wait_nj,
                            "decoupling_recharge_nj": recharge_nj},
        "digital_parts_nj": {"computing_nj": dig_nj, "idle_nj": idle_nj},
        "inference_interval_us": interval_us,
        "latency_us": total_us,
        "latency_parts_us": {"analog_us": core_us, "adc_us": adc_us, "digital_us": dig_us},
        "throughput_per_s": None if interval_us is None else 1e6 / interval_us,
    }


def monte_carlo(b: analog_flow.Bench, net: fixed.IntNet, part, plan, vref: float, bits: int,
                boards: int, seed: int, n: int) -> tuple[dict, dict | None]:
    """Every board through the exact numpy core, the ADC with its errors and the golden
    model; returns (summary, board 0's draw for the ngspice + gate-level check)."""
    if boards <= 0:
        return {"boards": 0}, None
    tol = b.acfg.tolerances[0]
    rng = np.random.default_rng(seed)
    torch_cls, y = b.torch_cls[:n], b.c.reference.y[:n]
    agree, acc, draws = [], [], None
    for k in range(boards):
        r_scale, vos = analog_flow.draw_board(b.design, tol, b.acfg.opamp_offset, rng)
        off, gain = draw_adc_errors(part, plan, rng)
        v = boundary_volts(nl.realized_forward(b.design, b.x[:n], r_scale, vos), net)
        codes = adc_mod.convert(part, v, vref, bits, off, gain)
        cls = net.forward(codes)["cls"]
        agree.append(float((cls == torch_cls).mean()))
        acc.append(float((cls == y).mean()))
        if k == 0:
            draws = {"r_scale": r_scale, "vos": vos, "offset_lsb": off, "gain_lsb": gain,
                     "numpy_codes": codes}
    agree, acc = np.array(agree), np.array(acc)
    thr = b.acfg.yield_threshold
    return {"boards": boards, "tolerance": tol, "opamp_offset": bool(b.acfg.opamp_offset),
            "mean_agreement": float(agree.mean()), "min_agreement": float(agree.min()),
            "mean_accuracy": float(acc.mean()), "min_accuracy": float(acc.min()),
            "yield": float((agree >= thr).mean()), "yield_threshold": thr,
            "agreements": [round(float(a), 5) for a in agree],
            "accuracies": [round(float(a), 5) for a in acc]}, draws


def board_codes(b: analog_flow.Bench, net: fixed.IntNet, part, vref: float, bits: int,
                x: np.ndarray, draw: dict, path: Path) -> np.ndarray:
    """The frontier's input codes for inputs x on one Monte Carlo board: its core (the
    macro-model with the board's resistors and offsets) in ngspice from the netlist
    `path`, then the ADC part with the board's offset and gain errors."""
    v = board_volts(b, net, x, draw, path)
    return adc_mod.convert(part, v, vref, bits, draw["offset_lsb"], draw["gain_lsb"])


def board_volts(b: analog_flow.Bench, net: fixed.IntNet, x: np.ndarray, draw: dict,
                path: Path) -> np.ndarray:
    """The boundary neurons' volts (samples, frontier inputs) for inputs x on one Monte
    Carlo board (`draw`: its resistors and op-amp offsets): its core in ngspice (one DC
    sweep) from the netlist written to `path`."""
    cir = nl.build_circuit(b.design, x, slew=False, r_scale=draw["r_scale"], vos=draw["vos"])
    atomic_write_bytes(path, analog_flow.netlist_text(
        cir, f".dc Vidx 0 {len(x) - 1} 1", "dc", b.out_nodes, b.out_nodes).encode())
    vec, _ = spice.run_file(path, points=len(x))
    return boundary_volts(analog_flow.core_volts(b.design, vec, b.sizes), net)


def board0_through_gates(c, cfg, b, net, name, d, part, vref, draws, out: Path, n: int,
                         log) -> dict:
    """Monte Carlo board 0 through ngspice, the ADC with its errors, and the frontier's
    gate netlist."""
    path = out / "board0.cir"
    codes = board_codes(b, net, part, vref, cfg.adc.bits, b.x, draws, path)[:n]
    runs = sim_flow.run_design(c, cfg, out / "board0", name, d, net, codes, False,
                               lambda line: log(f"board 0: {line}"), levels=("gates",))
    g = runs[f"{name}_gates"]
    diff = np.abs(codes - draws["numpy_codes"])
    return {"ngspice_vs_numpy_codes_max": int(diff.max()),
            "ngspice_vs_numpy_codes_equal": float((diff == 0).mean()),
            "gates_bit_exact_fraction": g["bit_exact_fraction"],
            "class_agreement_with_torch": g["class_agreement_with_torch"],
            "test_accuracy": g["fixed_point_test_accuracy"], "netlist": str(path)}


# ---- the stage ------------------------------------------------------------------------------
def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet,
        vectors: int | None = None, boards: int | None = None) -> dict:
    toolrun.require("ngspice", "iverilog", "vvp")
    t_all = time.perf_counter()
    part = adc_mod.part_for(cfg.adc.part)
    vref = adc_mod.check_part(part, cfg.adc.bits, cfg.analog.adc_ref_v)
    analog = analog_results(c, cfg, paths)
    name, d, net, sres = frontier_design(c, cfg, paths)
    check_clock(cfg.rtl.clock_mhz, name, d)
    n_all = len(c.reference.y)
    n = min(vectors or cfg.hybrid.vectors or n_all, n_all)
    boards = cfg.hybrid.boards if boards is None else boards
    out = paths.stage(NAME)
    out.mkdir(parents=True, exist_ok=True)
    b = analog_flow.prepare(c, cfg.analog, cfg.adc.bits)
    plan = adc_mod.channel_plan(part, len(net.input_index), vref)

    log(f"hybrid: ngspice core over {n} test samples ({len(b.design.neurons)} op-amp "
        f"neurons, {b.design.opamp.part}) -> {part.part} ({plan.chips} chips) -> {name} ...")
    volts = ngspice_core(b, Path(analog["files"]["netlist"]), out, n)
    v = boundary_volts(volts, net)
    codes = adc_mod.convert(part, v, vref, cfg.adc.bits)
    ideal = fixed.input_codes(c, net)[:n]  # torch's core outputs through the ideal ADC model
    runs = sim_flow.run_design(c, cfg, out, name, d, net, codes, False, log)
    gates, rtl = runs[f"{name}_gates"], runs[f"{name}_rtl"]

    log(f"hybrid: Monte Carlo, {boards} boards ...")
    mc, draws = monte_carlo(b, net, part, plan, vref, cfg.adc.bits, boards, cfg.seed, n)
    if draws is not None:
        mc["board0_gate_level"] = board0_through_gates(c, cfg, b, net, name, d, part, vref,
                                                       draws, out, n, log)
    figs = system_figures(analog, plan, gates, cfg.rtl.clock_mhz)
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    res = {
        "crystal_digest": digest(c), "fixed_digest": sres["fixed_digest"], "vectors": n,
        "frontier_design": name, "adc_part": part.key, "adc": {
            "part": part.part, "bits_part": part.bits, "bits_frontier": cfg.adc.bits,
            "vref_v": vref, "vref_part_v": adc_mod.part_reference_v(part, vref),
            "window_bits": adc_mod.window(part, vref),
            "channels": plan.channels, "chips": plan.chips,
            "conversions_per_chip": plan.conversions_per_chip,
            "energy_per_conversion_nj": part.energy_per_conversion_j(
                adc_mod.part_reference_v(part, vref)) * 1e9,
            "conversion_us": part.conversion_s * 1e6, "source": part.source},
        "class_agreement_with_torch": gates["class_agreement_with_torch"],
        "bit_exact_fraction": gates["bit_exact_fraction"],
        "rtl_bit_exact_fraction": rtl["bit_exact_fraction"],
        "test_accuracy": gates["fixed_point_test_accuracy"],
        "float_test_accuracy": float((torch_cls == c.reference.y[:n]).mean()),
        "codes_equal_to_ideal": float((codes == ideal).mean()),
        "codes_max_diff_from_ideal": int(np.abs(codes - ideal).max()),
        **figs,
        "frontier": {k: gates.get(k) for k in ("latency_cycles", "interval_cycles",
                                               "energy_per_inference_nj", "power_mw",
                                               "latency_ns", "seconds")},
        "monte_carlo": mc,
        "all_digital": all_digital_results(paths, sres),
        "clock_mhz": cfg.rtl.clock_mhz,
        "method": {**METHOD, "data": f"Crystal {c.name!r} reference test split, first {n} "
                   f"of {n_all} samples"},
    }
    buf = io.BytesIO()
    np.savez(buf, codes=codes, ideal_codes=ideal, boundary_volts=v,
             board0_codes=draws["numpy_codes"] if draws else np.zeros((0, 0), np.int64))
    atomic_write_bytes(out / "codes.npz", buf.getvalue())
    g0 = mc.get("board0_gate_level", {})
    res["passed"] = (res["bit_exact_fraction"] == 1.0 and res["rtl_bit_exact_fraction"] == 1.0
                     and g0.get("gates_bit_exact_fraction", 1.0) == 1.0)
    res["files"] = {"plot": _plot(out / "breakdown.png", res), "codes": str(out / "codes.npz"),
                    "core_netlist": str(out / "core.cir")}
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    return stage.finish(NAME, paths, res, summary_lines(res))


def summary_lines(r: dict) -> list[str]:
    e, lat = r["energy_nj"], r["latency_parts_us"]
    lines = [f"hybrid ({r['vectors']} samples: ngspice core -> {r['adc']['part']} -> "
             f"{r['frontier_design']} gate netlist): agreement with torch "
             f"{r['class_agreement_with_torch']:.4f}, accuracy {r['test_accuracy']:.4f} "
             f"(float {r['float_test_accuracy']:.4f}), bit-exact {r['bit_exact_fraction']:.4f}"]
    if r["energy_per_inference_nj"] is not None:
        ap, dp = r["analog_parts_nj"], r["digital_parts_nj"]
        wait = (f" + {ap['waiting_for_frontier_nj']:.4g} waiting for the frontier"
                if ap["waiting_for_frontier_nj"] else "")
        if ap.get("decoupling_recharge_nj"):
            wait += f" + {ap['decoupling_recharge_nj']:.4g} recharging its decoupling"
        idle = f" ({dp['idle_nj']:.4g} of it idle)" if dp["idle_nj"] else ""
        lines.append(f"energy {r['energy_per_inference_nj']:.4g} nJ/inference at one inference "
                     f"per {r['inference_interval_us']:.4g} us (core {e['analog_nj']:.4g} = "
                     f"{ap['to_settle_nj']:.4g} to settle + {ap['held_for_adc_nj']:.4g} held "
                     f"for the ADC{wait}; ADC {e['adc_nj']:.4g}; frontier "
                     f"{e['digital_nj']:.4g}{idle}); latency {r['latency_us']:.4g} us (settling "
                     f"{lat['analog_us']:.3g} + ADC {lat['adc_us']:.3g} + frontier "
                     f"{lat['digital_us']:.3g})")
    else:
        lines.append("energy and latency: n/a (the core did not settle in sim-analog's "
                     "transient; raise analog.step_us)")
    mc = r["monte_carlo"]
    if mc.get("boards"):
        g = mc.get("board0_gate_level", {})
        lines.append(f"Monte Carlo {mc['boards']} boards (tol {mc['tolerance']:g}): agreement "
                     f"mean {mc['mean_agreement']:.4f} min {mc['min_agreement']:.4f}, accuracy "
                     f"mean {mc['mean_accuracy']:.4f}, yield {mc['yield']:.2f}; board 0 gate "
                     f"level bit-exact {g.get('gates_bit_exact_fraction', float('nan')):.4f}")
    a = r["all_digital"]
    if a:
        lines.append(f"all-digital ({a['design']}, sim): {a['energy_per_inference_nj']:.4g} "
                     f"nJ/inference, {a['latency_us']:.4g} us, agreement "
                     f"{a['class_agreement_with_torch']:.4f}")
    else:
        lines.append("all-digital: no figures (run `crystalbench sim` for them)")
    return lines


def _plot(path: Path, r: dict) -> str | None:  # pragma: no mutate block (a view, not a figure)
    """Where energy and latency go: stacked bars, hybrid beside all-digital."""
    if r["energy_per_inference_nj"] is None:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    e, lat, a = r["energy_nj"], r["latency_parts_us"], r["all_digital"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, parts, unit, key in ((axes[0], e, "nJ per inference", "energy_per_inference_nj"),
                                 (axes[1], lat, "us per inference", "latency_us")):
        bottom = 0.0
        for (label, val), color in zip(parts.items(), ("tab:orange", "tab:purple", "tab:blue")):
            ax.bar(0, val, bottom=bottom, color=color, label=label.rsplit("_", 1)[0])
            bottom += val
        if a and a.get(key) is not None:
            ax.bar(1, a[key], color="tab:gray", label="all-digital")
        ax.set_xticks([0, 1], ["hybrid", "all-digital"])
        ax.set_ylabel(unit)
        ax.legend(fontsize=8)
    axes[0].set_title("energy")
    axes[1].set_title("latency")
    fig.suptitle(f"hybrid: {r['adc']['part']}, {r['frontier_design']}", fontsize=10)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
    return str(path)
