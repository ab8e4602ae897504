"""Run a net design (RTL Verilog or the Yosys gate netlist) under Icarus through cocotb.

`run_vectors` drives integer input codes through the design and returns its logits,
classes and measured latency; a VCD of the whole design is written on request (a dump
module of our own, so the file is VCD, which the toggle counter in sim.power reads).
A failure of the Icarus build or run raises SimError naming the log and build folder.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from crystalbench import toolrun
from crystalbench.errors import SimError

PERIOD_NS = 10  # testbench clock period

# +vcd=<file> dumps the whole design; +vcd_results=N stops the dump at the N-th result
# transfer, so a run over every test vector keeps a small activity window.
DUMP_V = """module cb_vcd_dump();
  reg [8*1024-1:0] path;
  integer results, limit;
  initial begin
    results = 0;
    if (!$value$plusargs("vcd_results=%d", limit)) limit = 0;
    if ($value$plusargs("vcd=%s", path)) begin
      $dumpfile(path);
      $dumpvars(0, top);
    end
  end
  always @(posedge top.clk) if (limit > 0 && top.o__valid && top.o__ready) begin
    results = results + 1;
    if (results == limit) $dumpoff;
  end
endmodule
"""


_KICK = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S+)\s*=\s*0;", re.M)


def _kick_comb_blocks(src: Path, build_dir: Path) -> Path:
    """Yosys' Verilog makes its `always @*` blocks read a dummy register so that they run
    once at time 0; with Icarus that register never changes, so a block whose inputs all
    keep their initial value (a constant table indexed by a register still at 0) leaves
    its output X. Changing the dummy register at time 0 runs every such block once."""
    text = src.read_text()
    if not _KICK.search(text):
        return src
    patched = build_dir / f"{src.stem}_sim.v"
    patched.write_text(_KICK.sub(lambda m: f"{m.group(0)}\n{m.group(1)}initial #0 {m.group(2)} = 1'b1;",
                                 text))
    return patched


def _vcd_format(runner) -> None:
    """cocotb's Icarus runner passes `-none` (no waves) unless its own FST dump is on; drop
    it so that our dump module writes a VCD."""
    orig = runner._test_command

    def cmd():
        return [[a for a in c if a != "-none"] for c in orig()]

    runner._test_command = cmd


def cycle_limit(latency: int, vectors: int) -> int:
    """Clock cycles a run may take before the testbench gives up: twice the expected."""
    return 100 + 2 * max(latency, 1) * (vectors + 2)


def run_cocotb(verilog: str | Path, build_dir: Path, test_module: str, test_dir: str | Path,
               job: Path, extra_sources=(), build_args=(), plusargs=(), vcd: bool = False) -> Path:
    """Build `verilog` (top module `top`) with Icarus and run the cocotb test module
    `test_module` from `test_dir` on it, its job file named by $CB_TB; Icarus' and cocotb's
    output go to build_dir/sim.log (returned). A failure of the build or the run raises
    SimError naming the log and the build folder. The one way cocotb runs here: the net
    testbench (run_vectors) and the board top (crystalbench.boards.simboard) use it."""
    from cocotb_tools.runner import get_runner

    log = build_dir / "sim.log"
    runner = get_runner("icarus")
    if vcd:
        _vcd_format(runner)
    test_dir = str(test_dir)
    try:
        with open(log, "w") as fh:
            old_out, old_err = os.dup(1), os.dup(2)
            try:  # Icarus and cocotb print from C: redirect the file descriptors
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(fh.fileno(), 1), os.dup2(fh.fileno(), 2)
                runner.build(sources=[_kick_comb_blocks(Path(verilog).resolve(), build_dir),
                                      *extra_sources],
                             hdl_toplevel="top", build_dir=build_dir, always=True,
                             timescale=("1ns", "1ps"), build_args=list(build_args))
                runner.test(hdl_toplevel="top", test_module=test_module, test_dir=test_dir,
                            build_dir=build_dir, extra_env={"CB_TB": str(job),
                                                            "PYTHONPATH": test_dir},
                            plusargs=list(plusargs), results_xml=str(build_dir / "results.xml"))
            finally:
                sys.stdout.flush(), sys.stderr.flush()
                os.dup2(old_out, 1), os.dup2(old_err, 2)
                os.close(old_out), os.close(old_err)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - cocotb's runner exits on failure
        raise SimError(f"Icarus/cocotb failed on {verilog} ({type(e).__name__}: {e}); see {log} "
                       f"and {build_dir}") from None
    return log


def run_vectors(verilog: str | Path, codes: np.ndarray, in_bits: int, logit_bits: int,
                n_classes: int, build_dir: str | Path, loadable: bool, vcd: str | Path | None = None,
                max_cycles: int | None = None, vcd_results: int = 0,
                load: list[tuple[int, int]] | None = None) -> dict:
    """Stream `codes` through the design; return its classes, logits and measured timing
    (`latency_cycles` per vector, `interval_cycles`, `t0_ns` = end of reset,
    `result_ns` = time of each result transfer). With `vcd`, dump the design's nets
    (only up to the `vcd_results`-th result when that is > 0). With `load` ((address,
    data) words, rtl.design.load_words), write those weights through `wr` after reset,
    one per clock, before the first vector; timing starts after the load."""
    if load and not loadable:
        raise SimError(f"{verilog}: a weight set to load, but the design's weights are baked")
    toolrun.require("iverilog", "vvp")
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    (build_dir / "cb_vcd_dump.v").write_text(DUMP_V)
    codes = np.asarray(codes, np.int64)
    out = build_dir / "outputs.json"
    job = build_dir / "job.json"
    job.write_text(json.dumps({
        "vectors": codes.tolist(), "in_bits": in_bits, "logit_bits": logit_bits,
        "n_classes": n_classes, "loadable": loadable, "out": str(out), "period_ns": PERIOD_NS,
        "load": [[int(a), int(d)] for a, d in (load or [])],
        "max_cycles": max_cycles or cycle_limit(4000, len(codes))}))
    if out.exists():
        out.unlink()
    log = run_cocotb(verilog, build_dir, "tb_net", Path(__file__).parent, job,
               extra_sources=[build_dir / "cb_vcd_dump.v"], build_args=["-s", "cb_vcd_dump"],
               plusargs=([f"+vcd={Path(vcd).resolve()}", f"+vcd_results={int(vcd_results)}"]
                         if vcd else []), vcd=bool(vcd))
    if not out.exists():
        raise SimError(f"the cocotb test wrote no outputs (it failed or timed out); see {log} "
                       f"and {build_dir / 'results.xml'}")
    res = json.loads(out.read_text())
    res["cls"] = np.array([r["cls"] for r in res["results"]], np.int64)
    res["logits"] = np.array([r["logits"] for r in res["results"]], np.int64)
    return res
