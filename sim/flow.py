"""`crystalbench sim`: every design `synth` built, as RTL and as the Yosys gate netlist,
driven by the Crystal's test vectors under cocotb + Icarus; bit-exact against the golden
model, classes against torch. Each netlist is simulated once: the gate-level run also
records the switching activity of its first `sim.power_vectors` results, which prices
energy and power; latency is measured in the same run. Writes
build/<experiment>/sim/result.json.
"""

from __future__ import annotations

import time

import numpy as np

from crystalbench import stage
from crystalbench.crystal import Crystal
from crystalbench.errors import CrystalbenchError, SimError
from crystalbench.results import Paths, read_json
from crystalbench.rtl import fixed, qatnet
from crystalbench.rtl import flow as synth_stage
from crystalbench.rtl import quantize as fixed_stage

from . import power, runner

NAME = "sim"
WRITES = (NAME,)
NEEDS_CRYSTAL = True
LEVELS = ("rtl", "gates")
METHOD = ("cocotb 2.x + Icarus via cocotb_tools.runner; vectors streamed back to back with "
          "the output always ready; a vector is bit-exact when every logit and the class "
          "equal the golden model (rtl/fixed.py). Latency: clock edges from the offer of a "
          "vector to the transfer of its result, measured in the gate-level run; latency_ns "
          "at synth's fmax. Energy: toggles of every net of the gate netlist (memory cell "
          "contents excluded, their address and data nets included) in the steady stream, "
          "from the transfer of the first result to that of result sim.power_vectors + 1, "
          "per inference, priced by the iCE40 model "
          "(measured currents; block RAM access not priced) and a generic CMOS model "
          "(assumed), plus static; power_mw = continuous inference at rtl.clock_mhz")


def stage_result(paths: Paths, stage_name: str, what: str, missing: str) -> dict:
    """Another stage's result.json; missing or damaged: a SimError saying `missing`
    (which command to run first)."""
    path = paths.result(stage_name)
    if not path.exists():
        raise SimError(f"{path}: not found; {missing}")
    try:
        return read_json(path, what)
    except CrystalbenchError as e:
        raise SimError(str(e)) from None


def synth_results(c: Crystal, cfg, paths: Paths) -> dict:
    """synth's result.json, checked to belong to this Crystal and fixed-point artifact."""
    fp = fixed.load(paths.stage(fixed_stage.NAME), c, cfg)
    path = paths.result(synth_stage.NAME)
    res = stage_result(paths, synth_stage.NAME, "synth result",
                       "run `crystalbench synth` (`make synth`) first: it writes the gate netlists")
    if res.get("fixed_digest") != fixed.artifact_digest(fp):
        raise SimError(f"{path}: the designs were built from other fixed-point formats than "
                       f"{paths.stage(fixed_stage.NAME)} holds; re-run `crystalbench synth`")
    if res.get("qat_digest") != synth_stage.qat_net(c, cfg, paths)[0]:
        raise SimError(f"{path}: the designs were built from another QAT net than "
                       f"{paths.stage(qatnet.NAME)} holds (or qat.shapes changed); re-run "
                       "`crystalbench synth`")
    return res


def run_design(c: Crystal, cfg, out, name: str, d: dict, net, codes: np.ndarray, waves: bool,
               log: stage.Log, levels: tuple[str, ...] = LEVELS,
               load: list[tuple[int, int]] | None = None) -> dict:
    """One design fed these input codes (the first len(codes) test samples), RTL then
    gates, in folders under `out`: bit-exactness, classes, latency, energy. `net` is the
    net the design computes: the one it was built from, or with `load` (the words that
    make a loadable design compute `net`) written first."""
    n = len(codes)
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    y = c.reference.y[:n]
    n_power = min(cfg.sim.power_vectors, n - 1)  # intervals between results: needs one more
    res = {}
    for level in levels:
        src = d["verilog"] if level == "rtl" else d["gate_netlist"]
        key = f"{name}_{level}"
        t0 = time.perf_counter()
        vcd = out / f"{key}.vcd" if (waves or level == "gates") else None
        r = runner.run_vectors(src, codes, net.in_bits, net.logit_bits, net.n_classes, out / key,
                               d["weights"] == "loadable", vcd=vcd,
                               max_cycles=runner.cycle_limit(d["design_latency_cycles"], n),
                               vcd_results=0 if waves else n_power + 1, load=load)
        exact = golden_check(codes, r, net)
        run = {"vectors": n, "bit_exact_fraction": float(exact.mean()),
               "class_agreement_with_torch": float((r["cls"] == torch_cls).mean()),
               "fixed_point_test_accuracy": float((r["cls"] == y).mean()),
               "latency_cycles": int(max(r["latency_cycles"])),
               "interval_cycles": r["interval_cycles"]}
        if level == "gates":
            run.update(activity(d, r, vcd, n_power, cfg.rtl.clock_mhz))
            if not waves:
                vcd.unlink()  # the counts are what we keep
        run["seconds"] = round(time.perf_counter() - t0, 1)
        res[key] = run
        log(f"{key}: {n} vectors, bit-exact {run['bit_exact_fraction']:.4f}, class agreement "
            f"with torch {run['class_agreement_with_torch']:.4f}, accuracy "
            f"{run['fixed_point_test_accuracy']:.4f}, latency {run['latency_cycles']} cycles"
            + (f", {run['energy_per_inference_nj']:.3g} nJ/inference"
               if run.get("energy_per_inference_nj") is not None else "")
            + f" ({run['seconds']} s)" + (f", waves {vcd}" if waves else ""))
    return res


def activity(d: dict, r: dict, vcd, n_power: int, clock_mhz: float) -> dict:
    """Latency at fmax, and energy and power from the toggles of the steady stream: from the
    transfer of the first result to that of result n_power + 1, n_power inferences with
    the design busy throughout (pipeline fill and reset left out)."""
    fmax = d.get("fmax_mhz")
    lat = int(max(r["latency_cycles"]))
    interval = r["interval_cycles"] or lat
    out = {"latency_ns": lat * 1e3 / fmax if fmax else None,
           "throughput_per_s": fmax * 1e6 / interval if fmax else None}
    if n_power < 1:  # one vector: no interval between results to measure
        return {**out, "energy_per_inference_nj": None, "power_mw": None}
    start, end = r["result_ns"][0], r["result_ns"][n_power]
    t = power.count_toggles(vcd, start_ns=start, end_ns=end)
    cycles = round((end - start) / runner.PERIOD_NS)
    return {**out, "activity": {"toggles": t["toggles"], "net_bits": t["net_bits"],
                                "cycles": cycles, "vectors": n_power},
            **power.estimate(t["toggles"], t["net_bits"], cycles, n_power, d, clock_mhz)}


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet, waves: bool = False,
        vectors: int | None = None) -> dict:
    t_all = time.perf_counter()
    sres = synth_results(c, cfg, paths)
    nets = {**fixed.nets_of(fixed.load(paths.stage(fixed_stage.NAME), c, cfg)),
            **synth_stage.qat_net(c, cfg, paths)[1]}
    n = min(vectors or cfg.sim.vectors or len(c.reference.y), len(c.reference.y))
    runs = {}
    for name, d in sres["designs"].items():
        net = nets[d["kind"]]
        runs.update(run_design(c, cfg, paths.stage(NAME), name, d, net,
                               fixed.input_codes(c, net)[:n], waves, log))
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    res = {"crystal_digest": sres["crystal_digest"], "fixed_digest": sres["fixed_digest"],
           "vectors": n, "float_test_accuracy": float((torch_cls == c.reference.y[:n]).mean()),
           "runs": runs, "energy_models": {"ice40": power.ICE40, "cmos": power.CMOS},
           "clock_mhz": cfg.rtl.clock_mhz, "method": METHOD}
    for kind in ("frontier", "all_digital"):  # the designs synth's headline names
        if kind in sres:
            g = runs[f"{sres[kind]['design']}_gates"]
            res[kind] = {"design": sres[kind]["design"], **{k: g.get(k) for k in (
                "bit_exact_fraction", "class_agreement_with_torch", "fixed_point_test_accuracy",
                "latency_cycles", "latency_ns", "energy_per_inference_nj", "power_mw",
                "energy_per_inference_nj_cmos")}}
    res["all_bit_exact"] = all(r["bit_exact_fraction"] == 1.0 for r in runs.values())
    res["passed"] = res["all_bit_exact"]
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    bad = [k for k, r in runs.items() if r["bit_exact_fraction"] != 1.0]
    summary = [headline(kind, res[kind], cfg.rtl.clock_mhz)
               for kind in ("frontier", "all_digital") if kind in res]
    summary.append(f"{n} vectors per run; float test accuracy {res['float_test_accuracy']:.4f}; "
                   + ("all bit-exact" if not bad else f"NOT bit-exact: {', '.join(bad)}"))
    return stage.finish(NAME, paths, res, summary)


def headline(kind: str, h: dict, clock_mhz: float) -> str:
    lat = h["latency_ns"]
    return (f"{kind} ({h['design']}, gate level): bit-exact {h['bit_exact_fraction']:.4f}, "
            f"agreement with torch {h['class_agreement_with_torch']:.4f}, latency "
            f"{h['latency_cycles']} cycles" + (f" = {lat / 1e3:.3g} us at fmax" if lat else "")
            + (f", {h['energy_per_inference_nj']:.3g} nJ/inference (iCE40 model, "
               f"{clock_mhz:g} MHz)" if h["energy_per_inference_nj"] is not None else ""))


def golden_check(codes: np.ndarray, got: dict, net) -> np.ndarray:
    """Per vector: do the design's logits and class equal the golden model's?"""
    g = net.forward(codes)
    return (got["cls"] == g["cls"]) & (got["logits"] == g["logits"]).all(axis=1)
