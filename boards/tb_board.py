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


async def spi_adc(dut, part: str, chips: int, sets: list[list[list[int]]],
                  frames_per_run: list[int]):
    """SPI ADC chips as their datasheets describe them (SCLK idle low, DIN taken on rising
    edges, DOUT changed on falling edges). `sets` holds one or more samples: in sample s,
    chip c channel k converts to sets[s][c][k]; chip c moves to the next sample (cyclic)
    after frames_per_run[c] frames (one board run):
    * mcp3008: the first 1 on DIN after CS falls is the start bit (clock s); SGL/DIFF and
      D2 D1 D0 follow on clocks s+1..s+4; clock s+5 ends the sample; DOUT gives the null
      bit on its falling edge, then B9..B0 on the falling edges of clocks s+6..s+15.
    * adc128s022: DOUT gives DB15 on CS falling and DB14..DB0 on the falling edges of
      clocks 1..15 (DB15..DB12 are 0); DIN's ADD2 ADD1 ADD0 on clocks 3..5 name the
      channel the NEXT frame converts (channel 0 after power-up)."""
    cs, sclk, copi, cipo = dut.cs_n, dut.sclk, dut.copi, dut.cipo
    address, frames = [0] * chips, [0] * chips
    rise, fall, change = sclk.rising_edge, sclk.falling_edge, cs.value_change
    cipo.value = 0
    while True:
        await change
        low = [c for c in range(chips) if not (int(cs.value) >> c) & 1]
        if not low:
            continue
        chip, clock, din, start = low[0], 0, [], None
        converts = address[chip]  # adc128s022: named by the previous frame
        codes = sets[(frames[chip] // frames_per_run[chip]) % len(sets)]
        frames[chip] += 1
        cipo.value = 0  # mcp3008: DOUT high-impedance until the null bit; adc128s022: DB15
        while True:
            fired = await First(rise, fall, change)
            if fired is change:
                break
            if fired is rise:
                clock += 1
                din.append(int(copi.value))
                if part == "mcp3008" and start is None and din[-1] == 1:
                    start = clock
                continue
            if part == "mcp3008":
                if start is None or clock < start + 5:
                    continue
                # din[i] came on clock i + 1: SGL/DIFF on s+1, D2 D1 D0 on s+2..s+4
                assert din[start] == 1, "the MCP3008 model converts single-ended inputs only"
                ch = din[start + 1] * 4 + din[start + 2] * 2 + din[start + 3]
                n = clock - (start + 6)  # 0 on the falling edge of s+6: B9
                cipo.value = 0 if n < 0 or n > 9 else (codes[chip][ch] >> (9 - n)) & 1
            else:
                db = 15 - clock  # the bit given on this falling edge
                cipo.value = 0 if db > 11 or db < 0 else (codes[chip][converts] >> db) & 1
        if part == "adc128s022" and len(din) >= 5:
            address[chip] = din[2] * 4 + din[3] * 2 + din[4]


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
    if job.get("adc"):
        a = job["adc"]
        cocotb.start_soon(spi_adc(dut, a["part"], a["chips"], a["sets"], a["frames_per_run"]))
    tr = CocotbTransport(dut, job["period_ps"], job["divisor"])
    cocotb.start_soon(tr.drive())
    cocotb.start_soon(tr.listen())
    link = BoardLink(tr, fixed.IntNet.from_dict(job["kind"], job["net"]), timeout=job["timeout_s"])
    records = await bridge(host.play)(link, job["steps"], log=dut._log.info,
                                      keep_going=job["keep_going"])
    with open(job["out"], "w") as fh:
        json.dump({"records": records, "framing_errors": tr.framing_errors,
                   "sim_seconds": get_sim_time("ps") * 1e-12}, fh)
