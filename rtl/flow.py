"""`crystalbench synth`: quantize, check, build every design, synthesize, measure.

Writes build/<experiment>/synth/: result.json, result.md, fixed_point.png and one folder
per design (Verilog, gate netlist, logs). The Crystal's fixed_point formats are recorded
in build/<experiment>/crystal.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from crystalbench import crystal as crystal_mod
from crystalbench import toolrun

from . import design as design_mod
from . import fixed
from . import synth as synth_mod

KEYS = ("gates", "flip_flops", "transistors", "lut4", "fmax_mhz", "latency_cycles", "latency_ns",
        "energy_per_inference_nj", "power_mw")


def crystal_dir(cfg, build_dir) -> Path:
    return Path(build_dir) / cfg.experiment / "crystal"


def load_crystal(cfg, build_dir):
    folder = crystal_dir(cfg, build_dir)
    if not (folder / crystal_mod.JSON_NAME).exists():
        raise crystal_mod.CrystalError(
            f"{folder}: no Crystal here; run `crystalbench train --config <this config>` "
            "(or `make train`) first")
    return crystal_mod.load(folder)


def prepare(cfg, build_dir, save: bool = True):
    """Load the Crystal, choose its fixed-point formats, validate, record them."""
    c = load_crystal(cfg, build_dir)
    fp = fixed.quantize(c, cfg.fixed_point, cfg.adc.bits)
    c = c.replace(fixed_point=fp)  # validate() checks the formats (refused before synthesis)
    if save:
        crystal_mod.save(c, crystal_dir(cfg, build_dir))
    return c


def designs(cfg, nets: dict) -> list[tuple[str, object, str, str]]:
    """(name, net, shape, weights) of every design the config asks for."""
    pick = {"both": ("parallel", "serial"), "parallel": ("parallel",), "serial": ("serial",),
            "none": ()}
    out = []
    for shape in pick[cfg.rtl.shapes]:
        w = cfg.rtl.parallel_weights if shape == "parallel" else cfg.rtl.serial_weights
        out.append((f"frontier_{shape}", nets["frontier"], shape, w))
    for shape in pick[cfg.rtl.digital_shapes]:
        out.append((f"all_digital_{shape}", nets["all_digital"], shape, "baked"))
    return out


def measure_activity(net, verilog: Path, codes: np.ndarray, work: Path, loadable: bool) -> dict:
    """Gate-level run over a few vectors: toggles per net, measured latency and interval."""
    from crystalbench.sim import power, runner

    vcd = work / "activity.vcd"
    r = runner.run_vectors(verilog, codes, net.in_bits, net.logit_bits, net.n_classes,
                           work, loadable, vcd=vcd)
    golden = net.forward(codes)
    t = power.count_toggles(vcd)
    vcd.unlink()  # large; the counts are what we keep
    return {"toggles": t["toggles"], "net_bits": t["net_bits"], "cycles": r["cycles"],
            "latency_cycles": int(max(r["latency_cycles"])),
            "interval_cycles": r["interval_cycles"],
            "bit_exact": bool((r["cls"] == golden["cls"]).all()
                              and (r["logits"] == golden["logits"]).all())}


def run_synth(cfg, build_dir, log=print) -> dict:
    from crystalbench.sim import power

    toolrun.require("yosys", "nextpnr-ice40", "iverilog", "vvp")
    t_all = time.perf_counter()
    c = prepare(cfg, build_dir)
    out = Path(build_dir) / cfg.experiment / "synth"
    out.mkdir(parents=True, exist_ok=True)
    gold = fixed.evaluate(c)
    plot = fixed.profile(c, out / "fixed_point.png")
    nets = fixed.nets_of(c)
    log(f"fixed point: frontier class agreement with torch "
        f"{gold['frontier']['class_agreement_with_torch']:.4f}, accuracy "
        f"{gold['frontier']['fixed_point_test_accuracy']:.4f}; all-digital "
        f"{gold['all_digital']['class_agreement_with_torch']:.4f} / "
        f"{gold['all_digital']['fixed_point_test_accuracy']:.4f} (float "
        f"{gold['float_test_accuracy']:.4f})")
    results = {}
    for name, net, shape, weights in designs(cfg, nets):
        t0 = time.perf_counter()
        dut = design_mod.build(net, shape, weights)
        fig = synth_mod.synth_design(dut, name, out, part=cfg.rtl.part, abc=cfg.rtl.abc,
                                     large_part=cfg.rtl.large_part)
        codes = fixed.input_codes(c, net)[:cfg.rtl.power_vectors]
        act = measure_activity(net, Path(fig["gate_netlist"]), codes, out / name / "activity",
                               weights == "loadable")
        if not act["bit_exact"]:
            raise synth_mod.SynthError(f"{name}: the gate netlist disagrees with the golden "
                                       f"model on the power vectors; see {out / name}")
        fig.update({"shape": shape, "weights": weights, "kind": net.kind})
        fig["latency_cycles"] = act["latency_cycles"]
        interval = act["interval_cycles"] or act["latency_cycles"]
        fig["interval_cycles"] = interval
        fmax = fig.get("fmax_mhz")
        fig["latency_ns"] = act["latency_cycles"] * 1e3 / fmax if fmax else None
        fig["throughput_per_s"] = fmax * 1e6 / interval if fmax else None
        fig.update(power.estimate(act["toggles"], act["net_bits"], act["cycles"], len(codes),
                                  fig, cfg.rtl.clock_mhz))
        fig["activity"] = {k: act[k] for k in ("toggles", "net_bits", "cycles")}
        fig["activity"]["vectors"] = int(len(codes))
        fig["seconds"] = round(time.perf_counter() - t0, 1)
        results[name] = fig
        log(f"{name}: {fig['gates']} gates + {fig['flip_flops']} FFs, {fig['transistors']} "
            f"transistors, {fig['lut4']} LUT4 ({fig['utilization']:.0%} of {fig['part']}), fmax "
            f"{_f(fmax)} MHz, latency {fig['latency_cycles']} cycles = {_f(fig['latency_ns'])} ns, "
            f"{_f(fig['energy_per_inference_nj'])} nJ/inference, {_f(fig['power_mw'])} mW "
            f"at {cfg.rtl.clock_mhz} MHz ({fig['seconds']} s)")
    res = {"experiment": cfg.experiment, "method": METHOD, "energy_models":
           {"ice40": power.ICE40, "cmos": power.CMOS}, "fixed_point": gold,
           "profile_plot": str(plot), "clock_mhz": cfg.rtl.clock_mhz, "designs": results}
    for kind in ("frontier", "all_digital"):
        mine = {k: v for k, v in results.items() if v["kind"] == kind}
        if mine:  # the headline figures: the smallest design (gates + flip-flops)
            best = min(mine, key=lambda k: mine[k]["gates"] + mine[k]["flip_flops"])
            res[kind] = {"design": best, **{k: mine[best].get(k) for k in KEYS}}
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    crystal_mod.atomic_write_json(out / "result.json", _plain(res))
    crystal_mod.atomic_write_bytes(out / "result.md", markdown(res).encode())
    return res


METHOD = (
    "Verilog from Amaranth 0.5 (rtl/design.py). Gates: Yosys `synth -flatten`, flip-flops "
    "legalized to plain D flip-flops, `abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT` (with -fast when rtl.abc is fast); gates = "
    "combinational cells (2-input gates + inverters), flip_flops counted apart, transistors "
    "from `stat -tech cmos`; memories become flip-flops and muxes. iCE40: `synth_ice40` of the "
    "bare design (LUT4/FF/carry/DSP/BRAM); fmax from nextpnr-ice40 on the design inside a "
    "few-pin shift-register harness (seed 1). Latency and result interval: measured in the "
    "cocotb/Icarus simulation of the gate netlist, latency_ns at fmax. Energy: toggles of every "
    "net in that simulation over `activity.vectors` test vectors, priced by the iCE40 model "
    "(measured figures, see energy_models) and a generic CMOS model (assumed), plus static; "
    "power_mw = continuous inference at clock_mhz.")


def _f(v, nd=1):
    return "n/a" if v is None else f"{v:.{nd}f}" if isinstance(v, float) else str(v)


def _plain(o):
    if isinstance(o, dict):
        return {k: _plain(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_plain(v) for v in o]
    if isinstance(o, np.generic):
        return o.item()
    return o


def markdown(res: dict) -> str:
    cols = [("design", None), ("gates", 0), ("flip_flops", 0), ("transistors", 0), ("lut4", 0),
            ("utilization", 2), ("bram", 0), ("fmax_mhz", 1), ("fmax_part", None), ("latency_cycles", 0),
            ("latency_ns", 1), ("interval_cycles", 0), ("energy_per_inference_nj", 3),
            ("power_mw", 3), ("energy_per_inference_nj_cmos", 5)]
    lines = [f"# {res['experiment']}: synthesis", "",
             "| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for name, d in res["designs"].items():
        row = []
        for c, nd in cols:
            v = name if c == "design" else d.get(c)
            row.append("n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(row) + " |")
    fp = res["fixed_point"]
    lines += ["", f"Fixed point (test split, {fp['vectors']} vectors): float accuracy "
              f"{fp['float_test_accuracy']:.4f}; " + "; ".join(
                  f"{k}: accuracy {fp[k]['fixed_point_test_accuracy']:.4f}, class agreement "
                  f"with torch {fp[k]['class_agreement_with_torch']:.4f}"
                  for k in ("frontier", "all_digital")),
              "", "Method: " + res["method"], ""]
    return "\n".join(lines)
