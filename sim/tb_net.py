"""cocotb testbench: stream input-code vectors through a net design (RTL or gate level).

Reads its job from the JSON file named by $CB_TB: vectors (integer codes), widths, an
optional weight set to write first through `wr` (loadable designs) and where to write
the outputs. Drives at the falling clock edge so that every value the
rising edge samples is stable. Latency is counted from the clock edge at which a vector
is first offered (valid high) to the edge that transfers its result, so it is measured,
not assumed, whether a design takes its input at once or holds `ready` low until it has
used it. While a design is busy (no result, not ready) the bench sleeps until `o.valid`
or `i.ready` rises instead of waking every clock: a serial design runs at the
simulator's speed.
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, First, RisingEdge, Timer
from cocotb.utils import get_sim_time


@cocotb.test()
async def stream_vectors(dut):
    job = json.loads(Path(os.environ["CB_TB"]).read_text())
    period_ns = job["period_ns"]  # the runner's clock period
    vecs, in_bits, lb, ncls = job["vectors"], job["in_bits"], job["logit_bits"], job["n_classes"]
    words = [sum(int(c) << (k * in_bits) for k, c in enumerate(v)) for v in vecs]
    # Every input is driven before the first clock edge: a gate netlist turns an X on a
    # write enable into X in the memory it guards (RTL `if` would read it as false).
    dut.rst.value = 1
    dut.i__valid.value = 0
    dut.i__payload.value = 0
    dut.o__ready.value = 1
    if job.get("loadable"):
        dut.wr__en.value = 0
        dut.wr__addr.value = 0
        dut.wr__data.value = 0
    await Timer(1, unit="ns")
    cocotb.start_soon(Clock(dut.clk, period_ns, unit="ns").start())
    for _ in range(3):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    # A weight set to load first (loadable designs): one word per clock, then streaming.
    load = job.get("load") or []
    if load:
        mask = (1 << len(dut.wr__data)) - 1
        for addr, data in load:
            dut.wr__en.value = 1
            dut.wr__addr.value = int(addr)
            dut.wr__data.value = int(data) & mask  # two's complement
            await FallingEdge(dut.clk)
        dut.wr__en.value = 0
    t0 = get_sim_time("ns")
    edge, sent, offered = 0, 0, False
    in_edge, out_edge, results = [], [], []
    limit = job["max_cycles"]
    while len(results) < len(vecs):
        await FallingEdge(dut.clk)
        edge = round((get_sim_time("ns") - t0) / period_ns)
        if edge > limit:
            raise AssertionError(f"no result after {limit} cycles ({len(results)} of "
                                 f"{len(vecs)} received)")
        # What the next rising edge (edge + 1) transfers, decided by values stable now.
        if sent < len(vecs):
            dut.i__payload.value = words[sent]
            dut.i__valid.value = 1
            if not offered:
                in_edge.append(edge + 1)
                offered = True
        else:
            dut.i__valid.value = 0
        o_valid = int(dut.o__valid.value)
        if o_valid:
            p = int(dut.o__payload.value)
            logits = []
            for j in range(ncls):
                v = (p >> (j * lb)) & ((1 << lb) - 1)
                logits.append(v - (1 << lb) if v >> (lb - 1) else v)
            results.append({"cls": p >> (ncls * lb), "logits": logits})
            out_edge.append(edge + 1)
        i_ready = int(dut.i__ready.value)
        if sent < len(vecs) and i_ready:
            sent += 1
            offered = False
        elif not o_valid and not i_ready:
            # Busy: nothing happens until one of these rises (just after a rising edge);
            # the falling edge after that is where the loop looks again. The timer wakes
            # a design that never answers, so the cycle limit still ends the run.
            await First(RisingEdge(dut.o__valid), RisingEdge(dut.i__ready),
                        Timer((limit - edge + 1) * period_ns, unit="ns"))
    lat = [o - i for i, o in zip(in_edge, out_edge)]
    interval = ((out_edge[-1] - out_edge[0]) / (len(out_edge) - 1)) if len(out_edge) > 1 else None
    with open(job["out"], "w") as fh:
        json.dump({"results": results, "latency_cycles": lat, "interval_cycles": interval,
                   "cycles": edge, "t0_ns": t0,
                   "result_ns": [t0 + e * period_ns for e in out_edge]}, fh)
