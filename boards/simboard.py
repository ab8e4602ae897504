"""Simulated boards: the controller (UART + protocol + loadable frontier), its host bytes
sent bit by bit on its `rx` pin and its `tx` pin read back bit by bit, at the
controller's own divisor. Time is simulated time: a read waits as long as the board would
take, however long the simulation runs.

* `SimTransport`: the controller in the Amaranth simulator, a link.Transport in this
  process (fast to set up; about 10,000 clocks a second).
* `run_icarus`: the board top written to Verilog by Amaranth and run in Icarus under
  cocotb (sim.runner.run_cocotb, the one cocotb path), with a session of host steps
  (boards/host.py `play`) executed by BoardLink inside the simulation
  (boards/tb_board.py): the whole host driver <-> bit-level UART <-> board top.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.sim import Simulator

from crystalbench import adc as adc_mod
from crystalbench import toolrun
from crystalbench.errors import SimError
from crystalbench.rtl import fixed
from crystalbench.sim import runner

from .controller import Controller
from .link import Transport


class SimTransport(Transport):
    def __init__(self, controller: Controller):
        self.dut = dut = controller
        self.sim = Simulator(controller)
        self.period = 1.0 / controller.clock_hz
        self.sim.add_clock(self.period)
        self.t = 0.0
        self.to_board: deque[int] = deque()
        self.from_board = bytearray()
        self.framing_errors = 0  # characters from the board whose stop bit was low
        div = controller.divisor
        self.byte_time = 10 * div * self.period

        bit = div * self.period
        # The line is asynchronous to the board's clock, as a real host's is: time by
        # delays (cheaper to simulate than counting clock edges), half a clock off the edges.

        async def drive(ctx):  # host -> board, 8N1, LSB first
            ctx.set(dut.rx, 1)
            await ctx.delay(self.period / 2)
            while True:
                if not self.to_board:
                    await ctx.delay(bit)
                    continue
                byte = self.to_board.popleft()
                for level in [0] + [(byte >> i) & 1 for i in range(8)] + [1]:
                    ctx.set(dut.rx, level)
                    await ctx.delay(bit)

        async def listen(ctx):  # board -> host: sample each bit in its middle
            while True:
                await ctx.negedge(dut.tx)
                await ctx.delay(bit / 2)
                if ctx.get(dut.tx):
                    continue  # a glitch, not a start bit
                byte = 0
                for i in range(8):
                    await ctx.delay(bit)
                    byte |= ctx.get(dut.tx) << i
                await ctx.delay(bit)
                if ctx.get(dut.tx):
                    self.from_board.append(byte)
                else:
                    self.framing_errors += 1

        self.sim.add_testbench(drive, background=True)
        self.sim.add_testbench(listen, background=True)
        self.advance(self.period)  # start both (a never-started coroutine warns when collected)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds
        self.sim.run_until(self.t)

    def write(self, data: bytes) -> None:
        self.to_board.extend(data)
        self.bytes_sent += len(data)

    def read(self, n: int, timeout: float) -> bytes:
        end = self.t + timeout
        while len(self.from_board) < n and self.t < end:
            self.advance(min(self.byte_time, end - self.t))
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        self.bytes_received += len(out)
        return out

    def flush_input(self) -> None:
        self.from_board.clear()


def run_icarus(net: fixed.IntNet, clock_hz: float, baud: int, steps: list[dict], build_dir,
               timeout: float = 1.0, frame_timeout_s: float = 0.05,
               timeout_clocks: int | None = None, keep_going: bool = False,
               adc: str | None = None, adc_codes: list[list[int]] | None = None,
               adc_volts: dict | None = None) -> dict:
    """Play `steps` (boards/host.py `play`) against the board top of `net` in Icarus.
    `timeout`: the host's wait for a reply, simulated seconds. With `adc` (a part key),
    the top has the SPI ADC front end and the testbench answers as that part would: with
    `adc_codes`, chip c channel k converting to `adc_codes[c][k]` (the part's own codes)
    on every run; with `adc_volts` (`volts`: (samples, n_in) core outputs, `vref`, and
    optionally per-input `offset_lsb`/`gain_lsb`), run s reading sample s (cyclic), each
    voltage converted at the part's own resolution as the part does (adc_part_codes).
    Returns the records, the characters the board sent with a low stop bit
    (`framing_errors`) and the simulated time at the end (`sim_seconds`)."""
    toolrun.require("iverilog", "vvp")
    ctl = Controller(net, clock_hz, baud, timeout_s=frame_timeout_s, timeout_clocks=timeout_clocks,
                     adc=adc)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    src = build_dir / "board_top.v"
    src.write_text(verilog.convert(ctl, name="top"))
    out, job = build_dir / "outputs.json", build_dir / "job.json"
    job.write_text(json.dumps({"net": net.to_dict(), "kind": net.kind,
                               "period_ps": 2 * round(5e11 / clock_hz),  # even (cocotb's Clock)
                               "divisor": ctl.divisor,
                               "timeout_s": timeout, "steps": steps, "keep_going": keep_going,
                               "adc": adc and {"part": adc, "chips": ctl.adc.chips,
                                               "sets": _adc_sets(ctl, adc_codes, adc_volts),
                                               "frames_per_run": _frames_per_run(ctl)},
                               "out": str(out)}))
    if out.exists():
        out.unlink()
    log = runner.run_cocotb(src, build_dir, "tb_board", Path(__file__).parent, job)
    if not out.exists():
        raise SimError(f"the board testbench wrote no outputs (it failed); see {log} and "
                       f"{build_dir / 'results.xml'}")
    return json.loads(out.read_text())


def adc_part_codes(part_key: str, adc_volts: dict) -> np.ndarray:
    """The ADC part's own codes (its full resolution) for core output volts (samples,
    n_in): adc.convert at the part's bits, with the per-input offset and gain errors."""
    part = adc_mod.part_for(part_key)
    return adc_mod.convert(part, np.asarray(adc_volts["volts"], np.float64), adc_volts["vref"],
                           part.bits, adc_volts.get("offset_lsb", 0.0),
                           adc_volts.get("gain_lsb", 0.0))


def _adc_sets(ctl: Controller, adc_codes, adc_volts) -> list[list[list[int]]]:
    """Samples for the testbench's ADC model: sets[s][chip][channel] (input k: channel k %
    channels of chip k // channels, boards/spi_adc.py)."""
    if (adc_codes is None) == (adc_volts is None):
        raise SimError("a board with an ADC front end needs what its ADC converts: give "
                       "run_icarus adc_codes (one set of part codes) or adc_volts (core outputs)")
    if adc_codes is not None:
        return [adc_codes]
    codes = adc_part_codes(ctl.adc.part.key, adc_volts)
    n_in, ch = ctl.adc.n_in, ctl.adc.part.channels
    if codes.ndim != 2 or codes.shape[1] != n_in:
        raise SimError(f"adc_volts: {codes.shape} volts; the board reads (samples, {n_in})")
    pad = np.zeros((len(codes), ctl.adc.chips * ch - n_in), np.int64)
    full = np.hstack([codes, pad]).reshape(len(codes), ctl.adc.chips, ch)
    return full.tolist()


def _frames_per_run(ctl: Controller) -> list[int]:
    """SPI frames each chip sees in one run: its channels, one more when pipelined."""
    a = ctl.adc
    return [min(a.part.channels, a.n_in - c * a.part.channels) + int(a.frame.pipelined)
            for c in range(a.chips)]
