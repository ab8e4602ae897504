"""A simulated board: the controller (UART + protocol + loadable frontier) in the Amaranth
simulator, with the host's bytes sent bit by bit on its `rx` pin and its `tx` pin read
back bit by bit, at the controller's own divisor. `SimTransport` is a link.Transport, so
the same BoardLink code drives a simulated board and a real one. Time is simulated time:
a read waits as long as the board would take, however long the simulation runs.
"""

from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

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

    def read(self, n: int, timeout: float) -> bytes:
        end = self.t + timeout
        while len(self.from_board) < n and self.t < end:
            self.advance(min(self.byte_time, end - self.t))
        out = bytes(self.from_board[:n])
        del self.from_board[:n]
        return out

    def flush_input(self) -> None:
        self.from_board.clear()
