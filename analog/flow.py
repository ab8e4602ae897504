"""`crystalbench sim-analog`: design the core, simulate it in ngspice, compare with torch.

Steps: design (resistor values) -> netlists written to build/<exp>/analog/ -> DC sweep
of every test sample (shared-mode ngspice) -> transient over the first samples
(settling, supply power) -> Monte Carlo -> BOM, plots, result.json.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from pathlib import Path

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench.crystal import Crystal, atomic_write_bytes, atomic_write_json

from . import netlist as nl
from . import spice
from .opamps import spec_for

SOURCE_CLAIM = {"neurons": 1512, "power_mw": 500.0, "latency_us": 1.0,
                "note": "proposed analog board in the source documents; not measured there"}


def check_headroom(design: nl.CoreDesign, acfg) -> None:
    """Every node must stay inside the op-amp's output swing with headroom; refuse else."""
    op = design.opamp
    if op.ideal:
        return
    top = design.vcc - op.swing_high_v - acfg.headroom_v
    bottom = design.vee + op.swing_low_v + acfg.headroom_v
    supply = design.vcc - design.vee
    if not op.supply_min_v <= supply <= op.supply_max_v:
        raise nl.AnalogError(f"analog.supply_v {supply:g} V is outside the {op.part}'s "
                             f"{op.supply_min_v:g}-{op.supply_max_v:g} V range")
    needs = {"analog.adc_ref_v + analog.diode_drop_v (rectifier op-amp output)":
             acfg.adc_ref_v + acfg.diode_drop_v,
             "analog.input_v (inverted inputs)": acfg.input_v,
             "analog.vref_v": acfg.vref_v}
    for what, v in needs.items():
        if v > top or -v < bottom:
            raise nl.AnalogError(
                f"{what} = {v:g} V does not fit the {op.part}'s output swing on +-{supply / 2:g} V "
                f"rails with analog.headroom_v {acfg.headroom_v:g} V (usable {bottom:.3g}.."
                f"{top:.3g} V); lower it or raise analog.supply_v")


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


def _core_volts(design: nl.CoreDesign, vec: dict, layer_sizes: list[int]) -> list[np.ndarray]:
    out = []
    for li, size in enumerate(layer_sizes):
        n_pts = len(next(iter(vec.values())))
        v = np.zeros((n_pts, size))
        for n in design.neurons:
            if n.layer == li:
                v[:, n.index] = vec[f"h{li + 1}_{n.index}"]
        out.append(v)
    return out


def _gains(design: nl.CoreDesign, layer_sizes: list[int]) -> list[np.ndarray]:
    g = [np.ones(s) for s in layer_sizes]
    for n in design.neurons:
        g[n.layer][n.index] = n.gain
    return g


def _netlist_text(cir, analysis: str, kind: str, nodes: list[str]) -> str:
    """The circuit plus its analysis and .print lines: a file `ngspice -b` runs as is."""
    lines = [str(cir).rstrip(), ".options noacct", analysis]
    for i in range(0, len(nodes), 8):  # a few columns per line keeps the listing readable
        lines.append(f".print {kind} " + " ".join(nodes[i:i + 8]))
    lines.append(".end")
    return "\n".join(lines) + "\n"


def _error_stats(volts, ref_volts, masks, lsb_v):
    errs = np.concatenate([(v - r)[:, m].ravel() for v, r, m in zip(volts, ref_volts, masks)])
    return {"rms_v": float(np.sqrt(np.mean(errs ** 2))), "max_v": float(np.abs(errs).max()),
            "rms_lsb": float(np.sqrt(np.mean(errs ** 2)) / lsb_v),
            "max_lsb": float(np.abs(errs).max() / lsb_v)}, errs / lsb_v


def _monte_carlo_draw(design: nl.CoreDesign, tol: float, offsets: bool, rng) -> tuple[dict, dict]:
    def u():
        return 1.0 + tol * rng.uniform(-1.0, 1.0)

    r_scale, vos = {}, {}
    op = design.opamp
    for n in design.neurons:
        r_scale[("rf", n.layer, n.index)] = u()
        for k, _, _ in n.inputs:
            r_scale[("in", n.layer, n.index, k)] = u()
        if n.bias is not None:
            r_scale[("bias", n.layer, n.index)] = u()
        if offsets and op.vos_typ_v > 0:
            vos[("relu", n.layer, n.index)] = float(np.clip(rng.normal(0, op.vos_typ_v),
                                                            -op.vos_max_v, op.vos_max_v))
    for (li, k) in design.inverted:
        r_scale[("inv", li, k)] = u() / u()  # rf / rin of the inverting buffer
        if offsets and op.vos_typ_v > 0:
            vos[("inv", li, k)] = float(np.clip(rng.normal(0, op.vos_typ_v),
                                                -op.vos_max_v, op.vos_max_v))
    return r_scale, vos


def run(c: Crystal, acfg, out_dir: Path, seed: int = 0, progress=print, adc_bits: int = 8) -> dict:
    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    opamp = spec_for(acfg.opamp)
    adc = adc_mod.adc_for(c, adc_bits)
    design = nl.design_core(c, acfg, adc, opamp)
    check_headroom(design, acfg)
    n_clipped = sum(v for k, v in design.clipped.items() if k != "worst")
    if n_clipped:
        w = design.clipped["worst"]
        progress(f"analog: warning: {n_clipped} weights need a resistor outside analog.r_min.."
                 f"r_max and were clipped ({design.clipped['above_r_max_open']} left open); "
                 f"worst: layer {w['layer']} neuron {w['neuron']}, {w['what']}, "
                 f"{w['error_model_units']:.3g} model units at full input")
    if not design.neurons:
        raise nl.AnalogError(f"crystal {c.name!r} has no core neurons (nothing frozen); "
                             "train longer or relax the freeze section of the config")
    n_hidden = len(c.layers) - 1
    sizes = [c.layers[li].n_out for li in range(n_hidden)]
    masks = [c.partition.core[li] for li in range(n_hidden)]
    gains = _gains(design, sizes)
    lsb_v = acfg.adc_ref_v / adc.levels
    x = c.reference.x.astype(np.float64)
    n = x.shape[0]
    torch_mu = [c.reference.outputs[li].astype(np.float64) for li in range(n_hidden)]
    torch_v = [t * g for t, g in zip(torch_mu, gains)]
    torch_cls = c.reference.outputs[-1].argmax(1)
    out_nodes = [f"v(h{nr.layer + 1}_{nr.index})" for nr in design.neurons]

    # ---- netlists -------------------------------------------------------------------
    dc_path = out_dir / "core.cir"
    cir = nl.build_circuit(design, x, slew=False)
    atomic_write_bytes(dc_path, _netlist_text(cir, f".dc Vidx 0 {n - 1} 1",
                                              "dc", out_nodes).encode())
    n_tr = min(acfg.transient_samples, n)
    step_s = acfg.step_us * 1e-6
    tr_path = out_dir / "core_tran.cir"
    cir_tr = nl.build_circuit(design, x[:n_tr], step_s=step_s)
    t_stop = n_tr * step_s
    atomic_write_bytes(tr_path, _netlist_text(
        cir_tr, f".tran {step_s / 400:.4g} {t_stop:.6g} 0 {step_s / 200:.4g}",
        "tran", out_nodes[:8]).encode())

    # ---- DC: every test sample --------------------------------------------------------
    progress(f"analog: DC operating points of {n} test samples ({len(design.neurons)} neurons, "
             f"{opamp.part}) ...")
    vec, dc_seconds = spice.run_file(dc_path, points=n)
    volts = [np.maximum(v, 0.0) for v in _core_volts(design, vec, sizes)]  # as the ADC sees
    ideal_v = nl.realized_forward(design, x)  # ideal op-amp + snapped resistors, exact
    total, total_lsb = _error_stats(volts, torch_v, masks, lsb_v)
    per_neuron = []
    for nr in design.neurons:
        e = volts[nr.layer][:, nr.index] - torch_v[nr.layer][:, nr.index]
        rms, top = float(np.sqrt(np.mean(e ** 2))), float(np.abs(e).max())
        per_neuron.append({"layer": nr.layer + 1, "neuron": nr.index, "rms_v": rms, "max_v": top,
                           "rms_lsb": rms / lsb_v, "max_lsb": top / lsb_v})
    quant, quant_lsb = _error_stats(ideal_v, torch_v, masks, lsb_v)
    opamp_err, _ = _error_stats(volts, ideal_v, masks, lsb_v)
    mu = [v / g for v, g in zip(volts, gains)]
    cls = hybrid_classes(c, adc, mu, x)
    cls_quant = hybrid_classes(c, adc, [v / g for v, g in zip(ideal_v, gains)], x)
    cls_adc = hybrid_classes(c, adc, torch_mu, x)
    agreement = float((cls == torch_cls).mean())

    # ---- transient: settling and supply power ----------------------------------------------
    progress(f"analog: transient over {n_tr} samples x {acfg.step_us:g} us ...")
    tv, tr_seconds = spice.run_file(tr_path, t_stop=t_stop)
    t = tv["time"]
    band = 0.5 * lsb_v
    dc_first = [v[:n_tr] for v in volts]
    settle = []
    unsettled = 0
    outs = np.stack([tv[f"h{nr.layer + 1}_{nr.index}"] for nr in design.neurons], 1)
    finals = np.stack([dc_first[nr.layer][:, nr.index] for nr in design.neurons], 1)
    for i in range(1, n_tr):
        sel = (t >= i * step_s) & (t < (i + 1) * step_s)
        ts, vs = t[sel], outs[sel]
        bad = np.abs(np.maximum(vs, 0.0) - finals[i]) > band  # what the ADC converts
        if bad[-1].any():
            unsettled += 1
            settle.append(step_s)
            continue
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            settle.append(0.0)
            continue
        r = rows[-1]  # last point outside the band; interpolate the crossing to r + 1
        e0 = np.abs(np.maximum(vs[r], 0.0) - finals[i])
        e1 = np.abs(np.maximum(vs[r + 1], 0.0) - finals[i])
        frac = np.where(bad[r], (e0 - band) / np.maximum(e0 - e1, 1e-30), 0.0).max()
        settle.append(ts[r] + float(np.clip(frac, 0, 1)) * (ts[r + 1] - ts[r]) - i * step_s)
    settle = np.array(settle)
    settling_us = float(settle.max() * 1e6)
    # Supply power: op-amp rails from ngspice's supply currents; references and DACs as
    # linear drivers on the same rails (their currents from ngspice node voltages).
    p = -(design.vcc * tv["i(vcc)"] + design.vee * tv["i(vee)"])
    p_opamps = p.copy()
    rail = max(design.vcc, -design.vee)
    p += rail * (np.abs(tv["i(vrefp)"]) + np.abs(tv["i(vrefn)"]))
    dac_nodes = {k for nr in design.neurons if nr.layer == 0 for k, inv, _ in nr.inputs}
    i_dac_abs = np.zeros_like(t)
    for k in dac_nodes:
        ik = np.zeros_like(t)
        for nr in design.neurons:
            if nr.layer != 0:
                continue
            s = tv[f"s{nr.layer + 1}_{nr.index}"]
            for kk, inv, ohms in nr.inputs:
                if kk == k and not inv:
                    ik += (tv[f"x{k}"] - s) / ohms
        if (-1, k) in design.inverted:
            ik += tv[f"x{k}"] / design.r_inverter  # into the inverter's virtual ground
        i_dac_abs += np.abs(ik)
    p += rail * i_dac_abs
    win = t >= step_s  # skip the initial operating point
    dt = np.diff(t[win])
    p_w = p[win]
    p_avg = float(np.sum(0.5 * (p_w[1:] + p_w[:-1]) * dt) / (t[win][-1] - t[win][0]))
    p_peak = float(p_w.max())
    p_op_avg = float(np.mean(p_opamps[win]))
    energy_nj = p_avg * settle.max() * 1e9
    tr_check = max(float(np.abs(np.maximum(outs, 0.0)[(t >= (i + 1) * step_s - step_s / 100) & (t < (i + 1) * step_s)]
                                - finals[i]).max()) for i in range(n_tr)) / lsb_v

    # ---- Monte Carlo ---------------------------------------------------------------------
    mc = {"runs": 0}
    if acfg.monte_carlo_runs > 0:
        progress(f"analog: Monte Carlo, {acfg.monte_carlo_runs} boards x tolerances "
                 f"{acfg.tolerances} ...")
        rng = np.random.default_rng(seed)
        per_tol = {}
        check = {}
        for tol in acfg.tolerances:
            agr = []
            for r in range(acfg.monte_carlo_runs):
                r_scale, vos = _monte_carlo_draw(design, tol, acfg.opamp_offset, rng)
                v = nl.realized_forward(design, x, r_scale, vos)
                agr.append(float((hybrid_classes(c, adc, [a / g for a, g in zip(v, gains)], x)
                                  == torch_cls).mean()))
                if r == 0:  # the same board through ngspice with the op-amp macro-model
                    mc_path = out_dir / f"monte_carlo_tol{tol:g}_board0.cir"
                    cmc = nl.build_circuit(design, x, slew=False, r_scale=r_scale, vos=vos)
                    atomic_write_bytes(mc_path, _netlist_text(cmc, f".dc Vidx 0 {n - 1} 1",
                                                              "dc", []).encode())
                    mv, _ = spice.run_file(mc_path, points=n)
                    mvolts = [np.maximum(v, 0.0) for v in _core_volts(design, mv, sizes)]
                    s_agr = float((hybrid_classes(c, adc, [a / g for a, g in zip(mvolts, gains)], x)
                                   == torch_cls).mean())
                    diff, _ = _error_stats(mvolts, v, masks, lsb_v)
                    check[f"{tol:g}"] = {"ngspice_agreement": s_agr, "numpy_agreement": agr[-1],
                                         "max_diff_lsb": diff["max_lsb"]}
            agr = np.array(agr)
            per_tol[f"{tol:g}"] = {"runs": len(agr), "mean_agreement": float(agr.mean()),
                                   "min_agreement": float(agr.min()),
                                   "yield": float((agr >= acfg.yield_threshold).mean()),
                                   "agreements": [round(a, 5) for a in agr]}
        first = per_tol[f"{acfg.tolerances[0]:g}"]
        mc = {"runs": first["runs"], "tolerance": acfg.tolerances[0],
              "mean_agreement": first["mean_agreement"], "min_agreement": first["min_agreement"],
              "yield": first["yield"], "yield_threshold": acfg.yield_threshold,
              "opamp_offset": bool(acfg.opamp_offset), "by_tolerance": per_tol,
              "ngspice_check": check,
              "method": ("each board: every resistor scaled by a uniform draw within "
                         "+-tolerance, each op-amp offset normal(0, typical) clipped to the "
                         "datasheet max; boards evaluated exactly in numpy (ideal op-amp + "
                         "offsets through the noise gain); board 0 of each tolerance also "
                         "through ngspice with the macro-model (ngspice_check)")}

    # ---- outputs --------------------------------------------------------------------------
    bom = _bom(design)
    atomic_write_json(out_dir / "bom.json", bom)
    plots = _plots(out_dir, design, t, outs, torch_v, n_tr, step_s, total_lsb, quant_lsb, lsb_v)
    n_core = len(design.neurons)
    samples_per_s = n / dc_seconds
    result = {
        "crystal": c.name,
        "opamp": opamp.key,
        "opamp_part": opamp.part,
        "e_series": acfg.e_series,
        "supply_v": [design.vee, design.vcc],
        "neurons": n_core,
        "resistors": design.resistor_count,
        "opamps": design.opamp_count,
        "inverters": len(design.inverted),
        "diodes": sum(2 if nr.stage == "rectifier" else 1 for nr in design.neurons),
        "relu_stages": dict(Counter(nr.stage for nr in design.neurons)),
        "adc_bits": adc_bits,
        "adc_ref_v": acfg.adc_ref_v,
        "lsb_mv": lsb_v * 1e3,
        "test_samples": n,
        "class_agreement_with_torch": agreement,
        "class_agreement_resistors_only": float((cls_quant == torch_cls).mean()),
        "class_agreement_adc_only": float((cls_adc == torch_cls).mean()),
        "test_accuracy_analog": float((cls == c.reference.y).mean()),
        "test_accuracy_torch": float((torch_cls == c.reference.y).mean()),
        "rms_error_lsb": total["rms_lsb"],
        "max_error_lsb": total["max_lsb"],
        "rms_error_v": total["rms_v"],
        "max_error_v": total["max_v"],
        "per_neuron_error": per_neuron,
        "error_resistor_quantization": quant,
        "error_opamp_nonideal": opamp_err,
        "clipped_weights": {k: v for k, v in design.clipped.items()},
        "settling_time_us": settling_us,
        "settling_time_median_us": float(np.median(settle) * 1e6),
        "unsettled_steps": unsettled,
        "transient_steps": n_tr - 1,
        "transient_end_vs_dc_max_lsb": tr_check,
        "power_mw": p_avg * 1e3,
        "power_peak_mw": p_peak * 1e3,
        "power_opamps_mw": p_op_avg * 1e3,
        "power_per_neuron_mw": p_avg * 1e3 / n_core,
        "energy_per_inference_nj": energy_nj,
        "energy_per_neuron_nj": energy_nj / n_core,
        "samples_per_second": samples_per_s,
        "simulation_seconds": {"dc": dc_seconds, "transient": tr_seconds},
        "monte_carlo": mc,
        "source_claim": {**SOURCE_CLAIM,
                         "power_per_neuron_mw": SOURCE_CLAIM["power_mw"] / SOURCE_CLAIM["neurons"],
                         "energy_per_inference_nj": SOURCE_CLAIM["power_mw"] * SOURCE_CLAIM["latency_us"],
                         "energy_per_neuron_nj": SOURCE_CLAIM["power_mw"] * SOURCE_CLAIM["latency_us"]
                         / SOURCE_CLAIM["neurons"]},
        "files": {"netlist": str(dc_path), "netlist_transient": str(tr_path),
                  "bom": str(out_dir / "bom.json"), **plots},
        "method": {
            "tool": "ngspice (shared library through PySpice 1.5); netlists written with PySpice "
                    "objects and run from the files above",
            "circuit": "per core neuron one op-amp: inverting summer; ReLU by a precision "
                       "half-wave rectifier where core neurons read it, else by the ADC's "
                       "unsigned range behind a diode clamp (relu_stage); positive weights read unity-inverted copies of their "
                       "inputs; bias from +-vref; ideal DACs; per-neuron gain puts the "
                       "calibrated full scale at adc_ref_v",
            "opamp_model": f"{opamp.part} behavioural macro-model (GBW, slew, A_OL, swing, I_q, "
                           f"offset; figures from {opamp.source})",
            "dc": "one .dc sweep of the sample-index source through all test samples (DAC "
                  "tables pwl(v(idx))); slew limit off (cannot change an operating point)",
            "accuracy": "core output volts vs torch outputs x gain; LSB = adc_ref_v / "
                        "(2^bits - 1); class agreement: ngspice core -> ADC model -> float "
                        "frontier vs torch classes, full test split",
            "error_split": "resistors only = ideal op-amp with the snapped resistors, exact in "
                           "numpy; op-amp = ngspice minus that",
            "latency": "settling of every core output to 0.5 LSB of its DC value after each "
                       "input step of the transient (worst step)",
            "power": "average and peak over the transient: op-amp supply currents from ngspice "
                     "(quiescent + output currents drawn from the rails), plus reference and "
                     "DAC output currents (from ngspice node voltages) charged at the rail "
                     "voltage as linear drivers; ADC and digital not included",
            "energy": "average power x worst settling time",
            "samples_per_second": "simulator throughput of the DC sweep (all test samples)",
            "data": f"Crystal {c.name!r} reference test split ({n} samples)",
        },
        "wall_seconds": time.perf_counter() - t_start,
    }
    atomic_write_json(out_dir / "result.json", _jsonable(result))
    return result


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _fmt_ohm(r: float) -> str:
    for div, unit in ((1e6, "M"), (1e3, "k"), (1.0, "")):
        if r >= div:
            v = r / div
            return f"{v:.3g}{unit}"
    return f"{r:.3g}"


def _bom(design: nl.CoreDesign) -> dict:
    values = []
    for n in design.neurons:
        values += [r for _, _, r in n.inputs] + [n.rf]
        if n.bias is not None:
            values.append(n.bias[1])
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
                   "count": sum(2 if n.stage == "rectifier" else 1 for n in design.neurons)},
        "supplies": {"rails_v": [design.vee, design.vcc], "references_v": [-design.vref, design.vref]},
        "converters": {"dac_channels": len({k for n in design.neurons if n.layer == 0
                                            for k, _, _ in n.inputs}),
                       "adc_channels": len(design.neurons), "adc_reference_v": design.v_fs},
    }


def _plots(out_dir, design, t, outs, torch_v, n_tr, step_s, total_lsb, quant_lsb, lsb_v) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = {}
    fig, ax = plt.subplots(figsize=(9, 4.5))
    active = np.argsort([-float(np.ptp(outs[:, i])) for i in range(outs.shape[1])])[:4]
    for col, i in enumerate(active):
        nr = design.neurons[i]
        ax.plot(t * 1e6, outs[:, i], color=f"C{col}", lw=1, label=f"ngspice h{nr.layer + 1}_{nr.index}")
        ref = torch_v[nr.layer][:n_tr, nr.index]
        ax.hlines(ref, np.arange(n_tr) * step_s * 1e6, (np.arange(n_tr) + 1) * step_s * 1e6,
                  color=f"C{col}", ls="--", lw=1.5)
    ax.set_xlabel("time (us)")
    ax.set_ylabel("neuron output (V)")
    ax.set_title(f"Core transient ({design.opamp.part}); dashed: torch x gain")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    p = out_dir / "transient.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files["plot_transient"] = str(p)

    fig, ax = plt.subplots(figsize=(7, 4))
    lim = max(1.0, float(np.abs(total_lsb).max()))
    bins = np.linspace(-lim, lim, 81)
    ax.hist(quant_lsb, bins=bins, alpha=0.6, label="ideal op-amp, snapped resistors")
    ax.hist(total_lsb, bins=bins, alpha=0.6, label=f"ngspice, {design.opamp.part}")
    ax.set_yscale("log")
    ax.set_xlabel(f"core output error vs torch (ADC LSB = {lsb_v * 1e3:.2f} mV)")
    ax.set_ylabel("neuron-samples")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p = out_dir / "error_histogram.png"
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files["plot_error_histogram"] = str(p)
    return files
