"""`crystalbench synth`: quantize, check, build every design, synthesize, measure.

Writes build/<experiment>/synth/: result.json, result.md, fixed_point.png and one folder
per design (Verilog, gate netlist, logs). The Crystal's fixed_point formats are recorded
in build/<experiment>/crystal.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from crystalbench import crystal as crystal_mod
from crystalbench import toolrun

from . import design as design_mod
from . import fixed
from . import synth as synth_mod

KEYS = ("gates", "flip_flops", "memory_bits", "all_logic", "transistors", "lut4", "fmax_mhz",
        "latency_cycles", "latency_ns", "energy_per_inference_nj", "power_mw")
FLOW_VERSION = 2  # bump when the synthesis scripts change: cached figures are then redone


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
    for kind in ("all_digital", "all_digital_small"):
        for shape in pick[cfg.rtl.digital_shapes]:
            out.append((f"{kind}_{shape}", nets[kind], shape, "baked"))
    return out


def measure_activity(net, verilog: Path, codes: np.ndarray, work: Path, loadable: bool,
                     latency: int) -> dict:
    """Gate-level run over a few vectors: toggles per net, measured latency and interval.
    `latency` (the design's intent) bounds the run: twice it per vector."""
    from crystalbench.sim import power, runner

    vcd = work / "activity.vcd"
    r = runner.run_vectors(verilog, codes, net.in_bits, net.logit_bits, net.n_classes,
                           work, loadable, vcd=vcd,
                           max_cycles=runner.cycle_limit(latency, len(codes)))
    golden = net.forward(codes)
    t = power.count_toggles(vcd)
    vcd.unlink()  # large; the counts are what we keep
    return {"toggles": t["toggles"], "net_bits": t["net_bits"], "cycles": r["cycles"],
            "latency_cycles": int(max(r["latency_cycles"])),
            "interval_cycles": r["interval_cycles"],
            "bit_exact": bool((r["cls"] == golden["cls"]).all()
                              and (r["logits"] == golden["logits"]).all())}


def abc_effort(cfg, dut) -> str:
    """`rtl.abc`; `auto`: full ABC for the serial shape (small: about a minute, some 15%
    fewer gates), -fast for the parallel one (full would take far longer)."""
    if cfg.rtl.abc != "auto":
        return cfg.rtl.abc
    return "full" if isinstance(dut, design_mod.SerialNet) else "fast"


def _cache_key(dut, verilog: str, cfg) -> str:
    """What a design's figures depend on: its Verilog, the synthesis knobs, the flow."""
    import hashlib

    knobs = {k: getattr(cfg.rtl, k) for k in ("large_part", "part", "power_vectors", "clock_mhz")}
    knobs["abc"] = abc_effort(cfg, dut)
    h = hashlib.sha256(verilog.encode())
    h.update(json.dumps([knobs, FLOW_VERSION], sort_keys=True).encode())
    return h.hexdigest()


def _synth_and_measure(c, cfg, out: Path, name: str, net, dut, verilog: str, shape: str,
                       weights: str) -> dict:
    from crystalbench.sim import power

    fig = synth_mod.synth_design(dut, name, out, part=cfg.rtl.part, abc=abc_effort(cfg, dut),
                                 large_part=cfg.rtl.large_part, verilog=verilog)
    codes = fixed.input_codes(c, net)[:cfg.rtl.power_vectors]
    act = measure_activity(net, Path(fig["gate_netlist"]), codes, out / name / "activity",
                           weights == "loadable", dut.latency)
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
    return fig


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
    conns = {k: "+".join(str(int(l.mask.sum())) for l in net.layers) for k, net in nets.items()}
    log(f"fixed point (test split, {gold['vectors']} vectors; float accuracy "
        f"{gold['float_test_accuracy']:.4f}): " + "; ".join(
            f"{k} ({conns[k]} connections): class agreement with torch "
            f"{gold[k]['class_agreement_with_torch']:.4f}, accuracy "
            f"{gold[k]['fixed_point_test_accuracy']:.4f}" for k in nets))
    results = {}
    for name, net, shape, weights in designs(cfg, nets):
        t0 = time.perf_counter()
        dut = design_mod.build(net, shape, weights)
        verilog = design_mod.to_verilog(dut, "top")
        key = _cache_key(dut, verilog, cfg)
        cached = out / name / "figures.json"
        if cached.exists() and json.loads(cached.read_text()).get("cache_key") == key:
            fig = json.loads(cached.read_text())
            fig.setdefault("abc", abc_effort(cfg, dut))
            log(f"{name}: unchanged since the last run (same Verilog and rtl knobs); figures "
                f"from {cached}")
        else:
            fig = _synth_and_measure(c, cfg, out, name, net, dut, verilog, shape, weights)
            fig["cache_key"] = key
            fig["seconds"] = round(time.perf_counter() - t0, 1)
            crystal_mod.atomic_write_json(cached, _plain(fig))
        results[name] = fig
        fmax = fig.get("fmax_mhz")
        al = fig["all_logic"]
        log(f"{name}: {fig['gates']} gates + {fig['flip_flops']} FFs + {fig['memory_bits']} "
            f"memory bits (all as logic: {al['gates']} gates + {al['flip_flops']} FFs), "
            f"{fig['transistors']} transistors, {fig['lut4']} LUT4 + {fig['bram']} BRAM "
            f"({fig['utilization']:.0%} of {fig['part']}), fmax {_f(fmax)} MHz"
            f"{'' if fig.get('fmax_part') in (None, fig['part']) else ' on ' + fig['fmax_part']}, "
            f"latency {fig['latency_cycles']} cycles = {_f(fig['latency_ns'])} ns, "
            f"{_f(fig['energy_per_inference_nj'])} nJ/inference, {_f(fig['power_mw'])} mW "
            f"at {cfg.rtl.clock_mhz} MHz ({fig['seconds']} s)")
    res = {"experiment": cfg.experiment, "method": METHOD, "energy_models":
           {"ice40": power.ICE40, "cmos": power.CMOS}, "fixed_point": gold,
           "profile_plot": str(plot), "clock_mhz": cfg.rtl.clock_mhz, "designs": results}
    for kind in ("frontier", "all_digital"):  # all_digital: the faithful or the small net
        mine = {k: v for k, v in results.items() if v["kind"].startswith(kind)}
        if mine:  # the headline figures: the smallest design, everything counted as logic
            best = min(mine, key=lambda k: mine[k]["all_logic"]["gates"]
                       + mine[k]["all_logic"]["flip_flops"])
            res[kind] = {"design": best, **{k: mine[best].get(k) for k in KEYS}}
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    crystal_mod.atomic_write_json(out / "result.json", _plain(res))
    crystal_mod.atomic_write_bytes(out / "result.md", markdown(res).encode())
    return res


METHOD = (
    "Verilog from Amaranth 0.5 (rtl/design.py). Gates: Yosys `proc -norom`, `synth -flatten` "
    "with memories kept as memory cells, flip-flops legalized to plain D flip-flops, `abc -g "
    "AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT` (-fast unless rtl.abc asks for full effort: "
    "`auto` gives it to the serial shape; the effort used is in each design's abc); gates = "
    "combinational cells (2-input gates + inverters), flip_flops counted apart, memory_bits ="
    " the memories (serial shape: program and weights; RAM when loadable, else ROM) kept as "
    "macros, as an ASIC flow keeps SRAM/ROM and an FPGA flow block RAM; this netlist is the "
    "one simulated. all_logic = the same design with the memories mapped to flip-flops and "
    "gates too (Yosys memory_map), the count comparable to a design with no macros; the "
    "headline per kind is the design smallest by it. transistors = `stat -tech cmos` of the "
    "logic + memory cells (6 per RAM bit, 1 per mask-ROM bit; periphery not counted). iCE40: "
    "`synth_ice40` of the bare design (LUT4/FF/carry/DSP/BRAM); fmax from nextpnr-ice40 on "
    "the design inside a few-pin shift-register harness (seed 1). Latency (offer of a vector "
    "to transfer of its result) and result interval: measured in the cocotb/Icarus simulation"
    " of the gate netlist, latency_ns at fmax. Energy: toggles of every net in that "
    "simulation over `activity.vectors` test vectors (memory cell contents excluded, their "
    "address and data nets included), priced by the iCE40 model (measured figures, see "
    "energy_models; block RAM access not priced) and a generic CMOS model (assumed), plus "
    "static; power_mw = continuous inference at clock_mhz.")


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
    cols = [("design", None), ("gates", 0), ("flip_flops", 0), ("memory_bits", 0),
            ("all_logic_gates_ff", 0), ("transistors", 0), ("lut4", 0),
            ("utilization", 2), ("bram", 0), ("fmax_mhz", 1), ("fmax_part", None), ("latency_cycles", 0),
            ("latency_ns", 1), ("interval_cycles", 0), ("energy_per_inference_nj", 3),
            ("power_mw", 3), ("energy_per_inference_nj_cmos", 5)]
    lines = [f"# {res['experiment']}: synthesis", "",
             "| " + " | ".join(c for c, _ in cols) + " |", "|" + "---|" * len(cols)]
    for name, d in res["designs"].items():
        row = []
        for c, nd in cols:
            v = (name if c == "design" else d["all_logic"]["gates"] + d["all_logic"]["flip_flops"]
                 if c == "all_logic_gates_ff" else d.get(c))
            row.append("n/a" if v is None else (f"{v:.{nd}f}" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(row) + " |")
    fp = res["fixed_point"]
    lines += ["", f"Fixed point (test split, {fp['vectors']} vectors): float accuracy "
              f"{fp['float_test_accuracy']:.4f}; " + "; ".join(
                  f"{k}: accuracy {fp[k]['fixed_point_test_accuracy']:.4f}, class agreement "
                  f"with torch {fp[k]['class_agreement_with_torch']:.4f}"
                  for k in fp if isinstance(fp[k], dict)),
              "", "Method: " + res["method"], ""]
    return "\n".join(lines)
