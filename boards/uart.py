"""A UART in Amaranth 0.5: 8 data bits, no parity, one stop bit (8N1), LSB first.

No maintained UART core installs for Amaranth 0.5 (amaranth-stdio on the package index is
a placeholder), so this is our own. `divisor` = clock cycles per bit (clock / baud,
rounded); both sides keep their error under half a bit over a 10-bit character as long as
the rounding error is under ~4%.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from crystalbench.errors import DesignError


def divisor_for(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit; refused when the rounding error would garble characters."""
    div = round(clock_hz / baud)
    err = abs(clock_hz / div - baud) / baud if div else 1.0
    if div < 4 or err > 0.02:
        raise DesignError(f"baud {baud} at a {clock_hz / 1e6:g} MHz clock: {clock_hz / baud:.2f} "
                          f"cycles per bit ({err:.1%} off after rounding); choose a baud rate "
                          "at most clock/4 that divides the clock within 2%")
    return div


class UartTx(wiring.Component):
    """Bytes from the stream `i` out on `tx` (idle high)."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        shreg = Signal(10, init=0x3FF)  # stop bit, data, start bit; shifted out LSB first
        bits = Signal(range(11))
        count = Signal(range(self.divisor))
        m.d.comb += [self.i.ready.eq(bits == 0), self.tx.eq(shreg[0])]
        with m.If(bits == 0):
            with m.If(self.i.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.i.payload, Const(1, 1))),
                             bits.eq(10), count.eq(self.divisor - 1)]
        with m.Elif(count == 0):
            m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                         count.eq(self.divisor - 1)]
        with m.Else():
            m.d.sync += count.eq(count - 1)
        return m


class UartRx(wiring.Component):
    """Bytes from `rx` on the stream `o` (one-cycle `valid`, no back-pressure: take it or
    lose it); a character whose stop bit is low is dropped and pulses `framing_error`."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8, always_ready=True)),
                          "framing_error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)  # rx is asynchronous
        count = Signal(range(self.divisor))
        bits = Signal(range(8))
        shreg = Signal(8)
        m.d.sync += [self.o.valid.eq(0), self.framing_error.eq(0)]
        m.d.comb += self.o.payload.eq(shreg)
        with m.FSM():
            with m.State("idle"):
                with m.If(~rx):
                    m.d.sync += count.eq(self.divisor // 2 - 1)
                    m.next = "start"
            with m.State("start"):  # the middle of the start bit: still low, else a glitch
                with m.If(count == 0):
                    m.d.sync += [count.eq(self.divisor - 1), bits.eq(0)]
                    with m.If(rx):
                        m.next = "idle"
                    with m.Else():
                        m.next = "data"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.State("data"):
                with m.If(count == 0):
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bits.eq(bits + 1),
                                 count.eq(self.divisor - 1)]
                    with m.If(bits == 7):
                        m.next = "stop"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
            with m.State("stop"):  # sampled in its middle; the next start edge may follow
                with m.If(count == 0):
                    with m.If(rx):
                        m.d.sync += self.o.valid.eq(1)
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                    m.next = "idle"
                with m.Else():
                    m.d.sync += count.eq(count - 1)
        return m
