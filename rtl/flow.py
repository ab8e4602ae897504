"""`crystalbench synth`: every design of the fixed-point nets, synthesized and measured.

Reads the Crystal and the fixed-point artifact (build/<exp>/fixed/, made here by the
`quantize` stage when missing or stale); writes build/<experiment>/synth/: result.json
and one folder per design (Verilog, gate netlist, logs, cached figures). What synthesis
alone knows: gates, flip-flops, memories, transistors, iCE40 LUT/BRAM, fmax. Latency,
energy and power come from `crystalbench sim`, which simulates these netlists.
"""

from __future__ import annotations

import hashlib
import json
import time

from crystalbench import stage, toolrun
from crystalbench.crystal import Crystal
from crystalbench.results import Paths, atomic_write_json

from . import design as design_mod
from . import fixed, qatnet, quantize
from . import synth as synth_mod

NAME = "synth"
WRITES = (NAME, quantize.NAME)
NEEDS_CRYSTAL = True
# What synthesis alone knows; latency, energy and power come from `sim`.
KEYS = ("gates", "flip_flops", "memory_bits", "all_logic", "transistors", "lut4", "bram",
        "fmax_mhz", "fmax_part")
FLOW_VERSION = 3  # bump when the synthesis scripts change: cached figures are then redone


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
    qat_pick = {"none": (), "ring": ("ring",), "ring_serial": ("ring", "serial"),
                "all": ("ring", "serial", "parallel")}
    for shape in qat_pick[cfg.qat.shapes]:
        out.append((f"{qatnet.KIND}_{shape}", nets[qatnet.KIND], shape, "baked"))
    return out


def qat_net(c: Crystal, cfg, paths: Paths) -> tuple[str | None, dict]:
    """(digest of the QAT artifact, {kind: net}) when qat.shapes asks for its designs,
    else (None, {}); a missing or stale artifact is refused, naming `train-qat`."""
    if cfg.qat.shapes == "none":
        return None, {}
    art, net = qatnet.load(paths.stage(qatnet.NAME), c, cfg)
    return qatnet.artifact_digest(art), {qatnet.KIND: net}


def abc_effort(cfg, dut) -> str:
    """`rtl.abc`; `auto`: full ABC for the serial and ring shapes (small: about a minute,
    some 15% fewer gates), -fast for the parallel one (full would take far longer)."""
    if cfg.rtl.abc != "auto":
        return cfg.rtl.abc
    return "full" if isinstance(dut, (design_mod.SerialNet, design_mod.RingNet)) else "fast"


def _cache_key(dut, verilog: str, cfg) -> str:
    """What a design's figures depend on: its Verilog, the synthesis knobs, the flow."""
    knobs = {k: cfg.rtl[k] for k in ("large_part", "part", "clock_mhz")}
    knobs["abc"] = abc_effort(cfg, dut)
    h = hashlib.sha256(verilog.encode())
    h.update(json.dumps([knobs, FLOW_VERSION], sort_keys=True).encode())
    return h.hexdigest()


def _synth_one(cfg, paths: Paths, name: str, net, shape: str, weights: str, log) -> dict:
    """One design: its figures, from the cache when its Verilog and knobs are unchanged."""
    out = paths.stage(NAME)
    t0 = time.perf_counter()
    dut = design_mod.build(net, shape, weights)
    verilog = design_mod.to_verilog(dut, "top")
    key = _cache_key(dut, verilog, cfg)
    cached = out / name / "figures.json"
    if cached.exists():
        try:
            fig = json.loads(cached.read_text())
        except ValueError:
            fig = {}
        if fig.get("cache_key") == key:
            log(f"{name}: unchanged since the last run (same Verilog and rtl knobs); figures "
                f"from {cached}")
            return fig
    fig = synth_mod.synth_design(dut, name, out, part=cfg.rtl.part, abc=abc_effort(cfg, dut),
                                 large_part=cfg.rtl.large_part, verilog=verilog,
                                 clock_mhz=cfg.rtl.clock_mhz)
    fig.update({"shape": shape, "weights": weights, "kind": net.kind,
                "design_latency_cycles": dut.latency, "cache_key": key,
                "seconds": round(time.perf_counter() - t0, 1)})
    atomic_write_json(cached, fig)
    return fig


def _line(name: str, fig: dict) -> str:
    al = fig["all_logic"]
    fmax = fig.get("fmax_mhz")
    on = "" if fig.get("fmax_part") in (None, fig["part"]) else f" on {fig['fmax_part']}"
    return (f"{name}: {fig['gates']} gates + {fig['flip_flops']} FFs + {fig['memory_bits']} "
            f"memory bits (all as logic: {al['gates']} gates + {al['flip_flops']} FFs), "
            f"{fig['transistors']} transistors, {fig['lut4']} LUT4 + {fig['bram']} BRAM "
            f"({fig['utilization']:.0%} of {fig['part']}), fmax "
            f"{'n/a' if fmax is None else f'{fmax:.1f}'} MHz{on} ({fig['seconds']} s)")


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet) -> dict:
    """Fixed point (if missing or stale), then every design: Verilog, Yosys, nextpnr."""
    toolrun.require("yosys", "nextpnr-ice40")
    t_all = time.perf_counter()
    fp = quantize.ensure(c, cfg, paths, log)
    qat_digest, qat_nets = qat_net(c, cfg, paths)
    nets = {**fixed.nets_of(fp), **qat_nets}
    results = {}
    for name, net, shape, weights in designs(cfg, nets):
        results[name] = _synth_one(cfg, paths, name, net, shape, weights, log)
        log(_line(name, results[name]))
    res = {"crystal_digest": fp["crystal"]["digest"], "fixed_digest": fixed.artifact_digest(fp),
           "qat_digest": qat_digest, "method": METHOD, "clock_mhz": cfg.rtl.clock_mhz, "designs": results}
    for kind in ("frontier", "all_digital"):  # all_digital: the faithful or the small net
        mine = {k: v for k, v in results.items() if v["kind"].startswith(kind)}
        if mine:  # the headline figures: the smallest design, everything counted as logic
            best = min(mine, key=lambda k: mine[k]["all_logic"]["gates"]
                       + mine[k]["all_logic"]["flip_flops"])
            res[kind] = {"design": best, **{k: mine[best].get(k) for k in KEYS}}
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    summary = [f"{kind} (smallest as logic): {_line(res[kind]['design'], results[res[kind]['design']])}"
               for kind in ("frontier", "all_digital") if kind in res]
    summary.append(f"{len(results)} designs in {res['seconds']} s; latency and energy: "
                   "`crystalbench sim`")
    return stage.finish(NAME, paths, res, summary)


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
    "the design inside a few-pin shift-register harness (seed 1, --freq rtl.clock_mhz). "
    "Latency, energy and power are measured by `crystalbench sim` on these netlists.")
