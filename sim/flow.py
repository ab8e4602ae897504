"""`crystalbench sim`: every design built by `synth`, as RTL and as the Yosys gate netlist,
driven by the Crystal's test vectors under cocotb + Icarus; bit-exact against the golden
model, classes against torch. Writes build/<experiment>/sim/result.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from crystalbench import crystal as crystal_mod
from crystalbench.rtl import fixed
from crystalbench.rtl import flow as rtl_flow

from . import runner


def run_sim(cfg, build_dir, waves: bool = False, vectors: int | None = None, log=print) -> dict:
    t_all = time.perf_counter()
    synth_dir = Path(build_dir) / cfg.experiment / "synth"
    sres = synth_dir / "result.json"
    if not sres.exists():
        raise runner.SimError(f"{sres}: not found; run `crystalbench synth --config ...` "
                              "(`make synth`) first: it writes the gate netlists")
    c = rtl_flow.load_crystal(cfg, build_dir)
    if c.fixed_point is None:
        raise runner.SimError(f"{rtl_flow.crystal_dir(cfg, build_dir)}: the Crystal has no "
                              "fixed_point formats; run `crystalbench synth` first")
    designs = json.loads(sres.read_text())["designs"]
    nets = fixed.nets_of(c)
    out = Path(build_dir) / cfg.experiment / "sim"
    out.mkdir(parents=True, exist_ok=True)
    n = vectors or cfg.rtl.sim_vectors or len(c.reference.y)
    torch_cls = c.reference.outputs[-1].argmax(1)[:n]
    y = c.reference.y[:n]
    res = {"experiment": cfg.experiment, "vectors": int(min(n, len(c.reference.y))),
           "float_test_accuracy": float((torch_cls == y).mean()),
           "bit_exact_fraction": {}, "vectors_per_run": {}, "latency_cycles": {}, "interval_cycles": {},
           "class_agreement_with_torch": {}, "fixed_point_test_accuracy": {}, "seconds_per_run": {},
           "method": "cocotb 2.x + Icarus via cocotb_tools.runner; vectors streamed back to "
                     "back with the output always ready; a vector is bit-exact when every "
                     "logit and the class equal the golden model (rtl/fixed.py)"}
    for name, d in designs.items():
        net = nets[d["kind"]]
        codes = fixed.input_codes(c, net)[:n]
        golden = net.forward(codes)
        for level, src in (("rtl", d["verilog"]), ("gates", d["gate_netlist"])):
            key = f"{name}_{level}"
            m = len(codes)
            t0 = time.perf_counter()
            vcd = out / f"{key}.vcd" if waves else None
            r = runner.run_vectors(src, codes[:m], net.in_bits, net.logit_bits, net.n_classes,
                                   out / key, d["weights"] == "loadable", vcd=vcd,
                                   max_cycles=runner.cycle_limit(d["latency_cycles"], m))
            exact = (r["cls"] == golden["cls"][:m]) & (r["logits"] == golden["logits"][:m]).all(axis=1)
            res["bit_exact_fraction"][key] = float(exact.mean())
            res["latency_cycles"][key] = int(max(r["latency_cycles"]))
            res["interval_cycles"][key] = r["interval_cycles"]
            res["vectors_per_run"][key] = m
            res["class_agreement_with_torch"][key] = float((r["cls"] == torch_cls[:m]).mean())
            res["fixed_point_test_accuracy"][key] = float((r["cls"] == y[:m]).mean())
            res["seconds_per_run"][key] = round(time.perf_counter() - t0, 1)
            log(f"{key}: {m} vectors, bit-exact {exact.mean():.4f}, class agreement "
                f"with torch {res['class_agreement_with_torch'][key]:.4f}, accuracy "
                f"{res['fixed_point_test_accuracy'][key]:.4f}, latency "
                f"{res['latency_cycles'][key]} cycles ({res['seconds_per_run'][key]} s)"
                + (f", waves {vcd}" if vcd else ""))
    res["all_bit_exact"] = all(v == 1.0 for v in res["bit_exact_fraction"].values())
    res["seconds"] = round(time.perf_counter() - t_all, 1)
    crystal_mod.atomic_write_json(out / "result.json", res)
    log(f"float test accuracy {res['float_test_accuracy']:.4f}; all bit-exact: "
        f"{res['all_bit_exact']}")
    return res
