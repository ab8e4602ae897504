"""cocotb testbench: the board top (boards/controller.py, written to Verilog by Amaranth)
under Icarus, driven by the host's own BoardLink through a bit-level UART.

Reads its job from the JSON file named by $CB_TB: the frontier IntNet, the clock period,
the UART divisor, the host's reply timeout and a session of steps (boards/host.py `play`).
The host code is blocking, so it runs in a cocotb bridge thread; each transport read
hands control back to the simulator until the bytes are in or the timeout has passed (in
simulated time). Host bits are driven by timers, asynchronous to the board's clock, as a
real host's are; the board's `tx` is sampled in the middle of each bit.
"""

import json
import os
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.task import bridge, resume
from cocotb.triggers import ClockCycles, Event, FallingEdge, First, Timer
from cocotb.utils import get_sim_time

from crystalbench.boards import host
from crystalbench.boards.link import BoardLink, Transport
from crystalbench.rtl import fixed


class CocotbTransport(Transport):
    def __init__(self, dut, period_ps: int, divisor: int):
        self.dut, self.bit_ps = dut, period_ps * divisor
        self.to_board: deque[int] = deque()
        self.from_board = bytearray()
        self.framing_errors = 0
        self.got, self.kick = Event(), Event()
        self.t = get_sim_time("ps") * 1e-12

    def now(self) -> float:
        return self.t  # the simulator stands still while the host code runs

    def write(self, data: bytes) -> None:
        self.to_board.extend(data)
        self.bytes_sent += len(data)

    def flush_input(self) -> None:
        self.from_board.clear()

    def read(self, n: int, timeout: float) -> bytes:
        return self._read(n, timeout)

    @resume
    async def _read(self, n: int, timeout: float) -> bytes:
        if self.to_board:
            self.kick.set()  # wake the line driver (set from the simulator's thread)
        end_ps = round((self.t + timeout) * 1e12)
        while len(self.from_board) < n:
            left = end_ps - get_sim_time("ps")
            if left <= 0:
                break
            self.got.clear()
            await First(self.got.wait(), Timer(left, unit="ps"))
        self.t = get_sim_time("ps") * 1e-12
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        self.bytes_received += len(out)
        return out

    async def drive(self):  # host -> board, 8N1, LSB first
        self.dut.rx.value = 1
        while True:
            if not self.to_board:
                self.kick.clear()
                await self.kick.wait()
                continue
            byte = self.to_board.popleft()
            for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                self.dut.rx.value = level
                await Timer(self.bit_ps, unit="ps")

    async def listen(self):  # board -> host: each bit sampled in its middle
        tx, bit = self.dut.tx, self.bit_ps
        while True:
            await FallingEdge(tx)
            await Timer(bit // 2, unit="ps")
            if int(tx.value):
                continue  # a glitch, not a start bit
            byte = 0
            for i in range(8):
                await Timer(bit, unit="ps")
                byte |= int(tx.value) << i
            await Timer(bit, unit="ps")
            if int(tx.value):
                self.from_board.append(byte)
                self.got.set()
            else:
                self.framing_errors += 1


@cocotb.test()
async def board_session(dut):
    job = json.loads(Path(os.environ["CB_TB"]).read_text())
    dut.rx.value = 1
    dut.rst.value = 1
    await Timer(1, unit="ns")
    cocotb.start_soon(Clock(dut.clk, job["period_ps"], unit="ps", impl="gpi").start())
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    tr = CocotbTransport(dut, job["period_ps"], job["divisor"])
    cocotb.start_soon(tr.drive())
    cocotb.start_soon(tr.listen())
    link = BoardLink(tr, fixed.IntNet.from_dict(job["kind"], job["net"]), timeout=job["timeout_s"])
    records = await bridge(host.play)(link, job["steps"], log=dut._log.info,
                                      keep_going=job["keep_going"])
    with open(job["out"], "w") as fh:
        json.dump({"records": records, "framing_errors": tr.framing_errors,
                   "sim_seconds": get_sim_time("ps") * 1e-12}, fh)
