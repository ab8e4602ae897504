"""The SPI ADC front end of a hybrid board: an SPI master (mode 0) that reads the boundary
neurons' codes from the ADC part the config names (crystalbench/adc.py PARTS), one
channel per frontier input, and keeps the top `bits` of each code as the frontier's
input (adc.convert's rounding: half to even, saturated).

Inputs go to chips in order: input k is channel k % channels of chip k // channels. The
chips share SCLK, COPI and CIPO; each has its own chip select. One frame per conversion,
chips one after the other (a board that needs speed would read chips in parallel).

The frames, from the datasheets (SCLK idle low; the master changes COPI after a falling
edge and samples CIPO on a rising edge; edges counted from 1 after CS falls):
* MCP3008 (DS21295, Figure 6-1, "8-bit segments"): 24 clocks; COPI carries the start bit
  at edge 8, SGL/DIFF = 1 (single-ended) at edge 9, D2 D1 D0 at edges 10-12; the part
  answers a null bit at edge 14 and B9..B0 at edges 15-24. The channel converted is the
  one this frame names.
* ADC128S022 (SNAS334): 16 clocks; the control byte's ADD2 ADD1 ADD0 at edges 3-5; the
  part answers four zeros, then DB11..DB0 at edges 5-16. The channel converted is the one
  the previous frame named (the first after power-up: channel 0), so a chip is read with
  one frame more than its channels, the first frame's answer dropped.
SCLK: the fastest the part allows at its quoted sample rate (sample_rate_sps x the clocks
one conversion takes at that rate: 18 for the MCP3008, "fCLK = 18 x fSAMPLE"; 16 for the
ADC128S022), as the board clock divides it (clock / (2 x half-period clocks)).
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from crystalbench import adc as adc_mod
from crystalbench.errors import DesignError


@dataclass(frozen=True)
class Frame:
    clocks: int  # SCLK rising edges per frame
    address_edges: tuple[int, ...]  # edges that carry the channel number, MSB first
    fixed_ones: tuple[int, ...]  # edges where COPI is 1 whatever the channel
    first_data_edge: int  # the edge of the code's MSB
    pipelined: bool  # the frame converts the channel the previous frame named
    clocks_per_sample: int  # at the quoted sample rate: sets the fastest SCLK


FRAMES = {
    "mcp3008": Frame(clocks=24, address_edges=(10, 11, 12), fixed_ones=(8, 9),
                     first_data_edge=15, pipelined=False, clocks_per_sample=18),
    "adc128s022": Frame(clocks=16, address_edges=(3, 4, 5), fixed_ones=(),
                        first_data_edge=5, pipelined=True, clocks_per_sample=16),
}


def round_top_bits(code: int, part_bits: int, bits: int) -> int:
    """adc.convert's reduction of one part code to the frontier's `bits` (plain Python)."""
    k = part_bits - bits
    if k == 0:
        return code
    return min((code + (1 << (k - 1)) - 1 + ((code >> k) & 1)) >> k, (1 << bits) - 1)


class SpiAdcReader(wiring.Component):
    """`start` (one cycle) reads every input's channel; `done` pulses when `codes` (input k
    at bits k*bits..) holds them all. Pins: `sclk`, `copi`, `cs_n` (one per chip), `cipo`."""

    def __init__(self, part: str, n_in: int, bits: int, clock_hz: float):
        if part not in FRAMES:
            raise DesignError(f"adc.part {part!r}: no SPI frame for it in boards/spi_adc.py; "
                              f"parts with one: {', '.join(sorted(FRAMES))}")
        self.part, self.frame = adc_mod.part_for(part), FRAMES[part]
        if bits > self.part.bits:
            raise DesignError(f"adc.bits {bits} is more than the {self.part.part}'s "
                              f"{self.part.bits} bits; lower adc.bits")
        self.n_in, self.bits, self.clock_hz = n_in, bits, clock_hz
        self.chips = -(-n_in // self.part.channels)
        self.sclk_max_hz = self.part.sample_rate_sps * self.frame.clocks_per_sample
        self.half = max(1, -(-int(clock_hz) // int(2 * self.sclk_max_hz)))  # clocks per half
        self.sclk_hz = clock_hz / (2 * self.half)
        super().__init__({"start": In(1), "done": Out(1), "busy": Out(1),
                          "codes": Out(n_in * bits), "sclk": Out(1), "copi": Out(1),
                          "cs_n": Out(self.chips, init=(1 << self.chips) - 1), "cipo": In(1)})

    def elaborate(self, platform):
        m = Module()
        f, part = self.frame, self.part
        chip = Signal(range(max(2, self.chips)))
        chan = Signal(range(part.channels + 1))  # the channel this frame names
        slot = Signal(range(self.n_in + 1))  # the input the answer belongs to
        edge = Signal(range(f.clocks + 2))
        timer = Signal(range(2 * self.half + 1))
        shreg = Signal(part.bits)
        codes = Signal(self.n_in * self.bits)
        m.d.comb += self.codes.eq(codes)
        n_here = Signal(range(part.channels + 1))  # channels on this chip
        last_chip = self.n_in - (self.chips - 1) * part.channels
        m.d.comb += n_here.eq(Mux(chip == self.chips - 1, last_chip, part.channels))
        frames_here = n_here + (1 if f.pipelined else 0)
        answers = Signal()  # this frame's answer is an input's code (not the pipeline's first)
        m.d.comb += answers.eq(chan != 0 if f.pipelined else 1)
        # COPI for the next edge: fixed ones, then the channel's bits MSB first
        nxt = edge + 1
        bit = Const(0, 1)
        for e in f.fixed_ones:
            bit = Mux(nxt == e, 1, bit)
        named = Signal(len(f.address_edges))  # the last frame of a pipelined chip names 0
        m.d.comb += named.eq(Mux(chan == n_here, 0, chan) if f.pipelined else chan)
        for i, e in enumerate(f.address_edges):
            bit = Mux(nxt == e, named[len(f.address_edges) - 1 - i], bit)
        # the reduction to the frontier's bits (adc.convert): half to even, saturated
        k = part.bits - self.bits
        code = shreg
        if k == 0:
            top = code
        else:
            summed = code + (1 << (k - 1)) - 1 + code[k]
            top = Mux((summed >> k) > (1 << self.bits) - 1, (1 << self.bits) - 1,
                      (summed >> k)[:self.bits])
        m.d.comb += self.busy.eq(1)
        with m.FSM(name="spi"):
            with m.State("idle"):
                m.d.comb += self.busy.eq(0)
                with m.If(self.start):
                    m.d.sync += [chip.eq(0), chan.eq(0), slot.eq(0), edge.eq(0)]
                    m.next = "select"
            with m.State("select"):  # CS low; COPI set up for edge 1 (edge is 0); half a period
                m.d.sync += [self.cs_n.eq((~(Const(1, self.chips) << chip))[:self.chips]),
                             timer.eq(self.half - 1), self.copi.eq(bit)]
                m.next = "low"
            with m.State("low"):  # SCLK low, then a rising edge: the part and we sample
                with m.If(timer == 0):
                    m.d.sync += [self.sclk.eq(1), edge.eq(nxt), timer.eq(self.half - 1)]
                    with m.If((nxt >= f.first_data_edge) & (nxt < f.first_data_edge + part.bits)):
                        m.d.sync += shreg.eq((shreg << 1 | self.cipo)[:part.bits])
                    m.next = "high"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("high"):  # SCLK high, then a falling edge: COPI for the next edge
                with m.If(timer == 0):
                    m.d.sync += [self.sclk.eq(0), timer.eq(self.half - 1), self.copi.eq(bit)]
                    with m.If(edge == f.clocks):
                        m.d.sync += [self.cs_n.eq((1 << self.chips) - 1), self.copi.eq(0),
                                     timer.eq(2 * self.half - 1)]
                        m.next = "store"
                    with m.Else():
                        m.next = "low"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("store"):  # CS high for one SCLK period; keep the answer
                with m.If(timer == 2 * self.half - 1):
                    with m.If(answers):
                        with m.Switch(slot):
                            for i in range(self.n_in):
                                with m.Case(i):
                                    m.d.sync += codes[i * self.bits:(i + 1) * self.bits].eq(top)
                        m.d.sync += slot.eq(slot + 1)
                with m.If(timer == 0):
                    m.d.sync += edge.eq(0)
                    with m.If(chan + 1 == frames_here):
                        m.d.sync += [chan.eq(0), chip.eq(chip + 1)]
                        with m.If(chip == self.chips - 1):
                            m.d.sync += self.done.eq(1)
                            m.next = "finish"
                        with m.Else():
                            m.next = "select"
                    with m.Else():
                        m.d.sync += chan.eq(chan + 1)
                        m.next = "select"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("finish"):
                m.d.sync += self.done.eq(0)
                m.next = "idle"
        return m
