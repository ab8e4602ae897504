"""The board-side controller: UART <-> host protocol (boards/protocol.py) <-> the loadable
frontier (rtl.design.SerialNet, weights="loadable").

A frame is taken whole into a 256-byte buffer (a block RAM) and checked before anything
acts on it: CRC first (a damaged frame may name any command), then the command, then its
length; a LOAD then checks its address range before its first write. So a bad frame
changes nothing on the board but the error counter, and gets an error reply. A frame with
no byte for `timeout_clocks` is cut short: TIMEOUT reply. Bytes outside a frame that are
not the sync byte are ignored (the host resynchronizes on the next sync byte).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from crystalbench.errors import DesignError
from crystalbench.rtl import design as design_mod
from crystalbench.rtl import fixed

from . import protocol as P
from .spi_adc import SpiAdcReader
from .uart import UartRx, UartTx, divisor_for

SHAPE_CODES = {"serial": 0, "parallel": 1}


def crc16_next(crc, byte):
    """protocol.crc16_update as logic: eight unrolled shift/XOR steps."""
    c = crc
    for i in range(7, -1, -1):
        fb = c[15] ^ byte[i]
        c = Cat(Const(0, 1), c[:15]) ^ Mux(fb, P.CRC_POLY, 0)
    return c


class Controller(wiring.Component):
    """`rx`/`tx`: the UART pins; `loaded`: a LOAD has run since configuration; `error`:
    the last reply carried an error status (both for LEDs). With `adc` (an ADC part of
    crystalbench/adc.py), an SPI ADC front end (boards/spi_adc.py) on the pins `sclk`,
    `copi`, `cs_n`, `cipo`, and the RUN_ADC command."""

    def __init__(self, net: fixed.IntNet, clock_hz: float, baud: int = 115200,
                 timeout_s: float = 0.05, timeout_clocks: int | None = None,
                 adc: str | None = None):
        self.net = net
        self.clock_hz, self.baud = int(clock_hz), int(baud)
        self.divisor = divisor_for(clock_hz, baud)
        self.timeout_clocks = int(timeout_clocks or round(timeout_s * clock_hz))
        self.frontier = design_mod.SerialNet(net, "loadable")
        self.n_conn = self.frontier.n_conn
        self.n_words = self.n_conn + sum(ly.n_out for ly in net.layers)
        self.data_bits = len(self.frontier.wr.data)
        self.word_bytes = P.word_bytes(self.data_bits)
        self.in_bytes = P.nbytes(net.in_bits)
        self.logit_bytes = P.nbytes(net.logit_bits)
        self.run_len = net.n_in * self.in_bytes
        self.result_len = net.n_classes * self.logit_bytes + 1
        for what, n in (("input codes", self.run_len), ("logits + class", self.result_len)):
            if n > P.MAX_PAYLOAD:
                raise DesignError(f"{net.kind}: {what} take {n} bytes, a frame holds "
                                  f"{P.MAX_PAYLOAD}; the host link supports nets up to that size")
        self.adc = None if adc is None else SpiAdcReader(adc, net.n_in, net.in_bits, clock_hz)
        if self.adc is not None and self.run_len + self.result_len > P.MAX_PAYLOAD:
            raise DesignError(f"{net.kind}: the RUN_ADC reply (codes + logits + class) takes "
                              f"{self.run_len + self.result_len} bytes, a frame holds "
                              f"{P.MAX_PAYLOAD}")
        if net.n_classes > 256:
            raise DesignError(f"{net.kind}: {net.n_classes} classes; the RUN reply's class "
                              "byte holds 256")
        if self.n_words >= 1 << 16:
            raise DesignError(f"{net.kind}: {self.n_words} loadable words; LOAD addresses "
                              "have 16 bits")
        self.identity = {
            "version": P.PROTOCOL_VERSION, "weights_digest": fixed.weights_digest(net),
            "formats_digest": P.formats_digest(net),
            "flags": 0 if self.adc is None else P.FLAG_ADC, "n_in": net.n_in,
            "in_bits": net.in_bits, "n_classes": net.n_classes, "logit_bits": net.logit_bits,
            "n_words": self.n_words, "n_conn": self.n_conn, "word_bytes": self.word_bytes,
            "clock_hz": self.clock_hz, "baud": self.baud}
        pins = {"rx": In(1, init=1), "tx": Out(1, init=1), "loaded": Out(1), "error": Out(1)}
        if self.adc is not None:
            pins.update({"sclk": Out(1), "copi": Out(1), "cipo": In(1),
                         "cs_n": Out(self.adc.chips, init=(1 << self.adc.chips) - 1)})
        super().__init__(pins)

    def _payloads(self, loaded, logits, cls, counters, inbuf) -> dict:
        """Each command's reply payload as a list of byte values."""
        ident = [Const(b, 8) for b in P.identity_bytes(self.identity)]
        flags_at = sum(n for name, n in P.IDENTITY_LAYOUT[:3])
        ident[flags_at] = Cat(loaded, Const(0 if self.adc is None else 1, 1), Const(0, 6))
        lb, nb = self.net.logit_bits, self.logit_bytes
        result = []
        for j in range(self.net.n_classes):
            ext = logits[j * lb:(j + 1) * lb].as_signed()
            wide = Cat(ext, *([ext[-1]] * (8 * nb - lb)))  # sign-extended to whole bytes
            result += [wide[8 * (nb - 1 - t):8 * (nb - t)] for t in range(nb)]
        result.append(Cat(cls, Const(0, 8 - len(cls))))
        count = [c[8 * (3 - t):8 * (4 - t)] for c in counters for t in range(4)]
        out = {P.IDENTIFY: ident, P.RUN: result, P.READ: result, P.COUNTERS: count}
        if self.adc is not None:  # the codes as RUN takes them, then the result
            out[P.RUN_ADC] = [inbuf[8 * t:8 * (t + 1)] for t in range(self.run_len)] + result
        return out

    def elaborate(self, platform):
        m = Module()
        m.submodules.frontier = net = self.frontier
        m.submodules.urx = urx = UartRx(self.divisor)
        m.submodules.utx = utx = UartTx(self.divisor)
        m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
        m.submodules.buf = buf = Memory(shape=8, depth=256, init=[])
        wp, rp = buf.write_port(), buf.read_port()

        got, b = urx.o.valid, urx.o.payload
        cmd, length, status = Signal(8), Signal(8), Signal(8)
        idx = Signal(8)
        crc = Signal(16)
        timer = Signal(range(self.timeout_clocks + 1))
        in_frame = Signal()
        expired = timer == self.timeout_clocks
        m.d.sync += timer.eq(Mux(got | ~in_frame, 0, timer + 1))
        loaded, error = Signal(), Signal()
        m.d.comb += [self.loaded.eq(loaded), self.error.eq(error)]
        W = self.word_bytes
        addr = Signal(16)
        word = Signal(8 * W)
        wpos = Signal(range(W))
        inbuf = Signal(8 * self.run_len)
        logits = Signal(len(net.o.payload.logits))
        cls = Signal(len(net.o.payload.cls))
        cycles, run_cycles, runs, errors = (Signal(32, name=n) for n in
                                            ("cycles", "run_cycles", "runs", "errors"))
        # The frontier's input: code k from bytes k*in_bytes.. (big-endian), low in_bits.
        ib, bits = self.in_bytes, self.net.in_bits
        codes = [Cat(*[inbuf[8 * (k * ib + t):8 * (k * ib + t + 1)]
                       for t in reversed(range(ib))])[:bits] for k in range(self.net.n_in)]
        m.d.comb += net.i.payload.eq(Cat(*codes))
        rdata = rp.data
        lengths = {P.IDENTIFY: 0, P.RUN: self.run_len, P.READ: 0, P.COUNTERS: 0}
        if self.adc is not None:
            lengths[P.RUN_ADC] = 0
            m.submodules.adc = adc = self.adc
            m.d.comb += [self.sclk.eq(adc.sclk), self.copi.eq(adc.copi), self.cs_n.eq(adc.cs_n),
                         adc.cipo.eq(self.cipo)]
            # the codes read, in the input buffer's byte layout (as RUN's payload puts them)
            adc_bytes = []
            for k in range(self.net.n_in):
                v = Cat(adc.codes[k * bits:(k + 1) * bits], Const(0, 8 * ib - bits))
                adc_bytes += [v[8 * (ib - 1 - t):8 * (ib - t)] for t in range(ib)]
            adc_inbuf = Cat(*adc_bytes)

        def fail(code):
            m.d.sync += status.eq(code)
            m.next = "error"

        with m.FSM(name="ctl"):
            with m.State("hunt"):
                with m.If(got & (b == P.SYNC_CMD)):
                    m.d.sync += crc.eq(P.CRC_INIT)
                    m.next = "cmd"
            # Receiving: every byte goes into the CRC; silence for timeout_clocks ends it.
            for state, nxt in (("cmd", "len"), ("len", None), ("payload", None),
                               ("crc_hi", "crc_lo"), ("crc_lo", "check")):
                with m.State(state):
                    m.d.comb += in_frame.eq(1)
                    with m.If(got):
                        m.d.sync += crc.eq(crc16_next(crc, b))
                        if state == "cmd":
                            m.d.sync += cmd.eq(b)
                        elif state == "len":
                            m.d.sync += [length.eq(b), idx.eq(0)]
                            m.next = "crc_hi"
                            with m.If(b != 0):
                                m.next = "payload"
                        elif state == "payload":
                            m.d.comb += [wp.en.eq(1), wp.addr.eq(idx), wp.data.eq(b)]
                            m.d.sync += idx.eq(idx + 1)
                            with m.If(idx == length - 1):
                                m.next = "crc_hi"
                        if nxt is not None:
                            m.next = nxt
                    with m.Elif(expired):
                        fail(P.TIMEOUT)
            with m.State("check"):
                m.d.sync += idx.eq(0)
                with m.If(crc != 0):  # the CRC over the body and its own CRC leaves 0
                    fail(P.BAD_CRC)
                with m.Elif(cmd == P.LOAD):
                    with m.If((length < 2 + W) | ((length - 2) & (W - 1) != 0)):
                        fail(P.BAD_LENGTH)
                    with m.Else():
                        m.next = "load_fetch"
                for c, n in lengths.items():
                    with m.Elif(cmd == c):
                        with m.If(length != n):
                            fail(P.BAD_LENGTH)
                        with m.Else():
                            m.d.sync += status.eq(P.OK)
                            m.next = {P.RUN: "run_fetch", P.RUN_ADC: "adc_start"}.get(c, "reply")
                with m.Else():
                    fail(P.UNKNOWN_COMMAND)
            with m.State("error"):
                m.d.sync += errors.eq(errors + 1)
                m.next = "reply"
            # LOAD: two address bytes, a range check, then one write per whole word.
            with m.State("load_fetch"):
                m.d.comb += rp.addr.eq(idx)
                m.next = "load_use"
            with m.State("load_use"):
                m.d.sync += idx.eq(idx + 1)
                m.next = "load_fetch"
                with m.If(idx < 2):
                    m.d.sync += addr.eq(Cat(rdata, addr[:8]))
                    with m.If(idx == 1):
                        m.next = "load_check"
                with m.Else():
                    full = Cat(rdata, word[:-8]) if W > 1 else rdata
                    m.d.sync += [word.eq(full), wpos.eq(wpos + 1)]
                    with m.If(wpos == W - 1):
                        m.d.comb += [net.wr.en.eq(1), net.wr.addr.eq(addr),
                                     net.wr.data.eq(full[:self.data_bits])]
                        m.d.sync += [addr.eq(addr + 1), wpos.eq(0), loaded.eq(1)]
                    with m.If(idx == length - 1):
                        m.d.sync += status.eq(P.OK)
                        m.next = "reply"
            with m.State("load_check"):  # before the first write: the whole range fits
                m.d.sync += wpos.eq(0)
                count = (length - 2) >> (W.bit_length() - 1)
                with m.If(addr + count > self.n_words):
                    fail(P.BAD_ADDRESS)
                with m.Else():
                    m.next = "load_fetch"
            # RUN: the codes into the input register, offer them, wait for the result.
            with m.State("run_fetch"):
                m.d.comb += rp.addr.eq(idx)
                m.next = "run_use"
            with m.State("run_use"):
                m.d.sync += [inbuf.eq(Cat(inbuf[8:], rdata)) if self.run_len > 1 else
                             inbuf.eq(rdata), idx.eq(idx + 1), cycles.eq(0)]
                m.next = "run_fetch"
                with m.If(idx == length - 1):
                    m.next = "offer"
            if self.adc is not None:  # RUN_ADC: read every channel, then run as RUN does
                with m.State("adc_start"):
                    m.d.comb += adc.start.eq(1)
                    m.next = "adc_wait"
                with m.State("adc_wait"):
                    with m.If(adc.done):
                        m.d.sync += [inbuf.eq(adc_inbuf), cycles.eq(0)]
                        m.next = "offer"
            with m.State("offer"):
                m.d.comb += net.i.valid.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(net.i.ready):
                    m.next = "wait"
            with m.State("wait"):
                m.d.comb += net.o.ready.eq(1)
                m.d.sync += cycles.eq(cycles + 1)
                with m.If(net.o.valid):
                    # cycles = clock edges from the first that saw the input offered to
                    # the one that takes the result (sim/tb_net.py's latency)
                    m.d.sync += [logits.eq(net.o.payload.logits), cls.eq(net.o.payload.cls),
                                 run_cycles.eq(cycles), runs.eq(runs + 1)]
                    m.next = "reply"
            with m.State("reply"):
                self._reply(m, utx, cmd, status, crc, error,
                            self._payloads(loaded, logits, cls, (run_cycles, runs, errors), inbuf))
        return m

    def _reply(self, m, utx, cmd, status, crc, error, payloads):
        """Send 0x5A, cmd, status, len, payload, CRC; then back to hunting."""
        pos = Signal(9)  # position in the reply frame
        rlen = Signal(8)
        for c, pl in payloads.items():
            with m.If((cmd == c) & (status == P.OK)):
                m.d.comb += rlen.eq(len(pl))
        byte = Signal(8)
        with m.If(pos == 0):
            m.d.comb += byte.eq(P.SYNC_REPLY)
        with m.Elif(pos == 1):
            m.d.comb += byte.eq(cmd)
        with m.Elif(pos == 2):
            m.d.comb += byte.eq(status)
        with m.Elif(pos == 3):
            m.d.comb += byte.eq(rlen)
        with m.Elif(pos < 4 + rlen):
            with m.Switch(cmd):
                for c, pl in payloads.items():
                    with m.Case(c):
                        with m.Switch(pos - 4):
                            for i, v in enumerate(pl):
                                with m.Case(i):
                                    m.d.comb += byte.eq(v)
        with m.Elif(pos == 4 + rlen):
            m.d.comb += byte.eq(crc[8:])
        with m.Else():
            m.d.comb += byte.eq(crc[:8])
        m.d.comb += [utx.i.valid.eq(1), utx.i.payload.eq(byte)]
        with m.If(utx.i.ready):
            m.d.sync += pos.eq(pos + 1)
            with m.If(pos == 0):
                m.d.sync += [crc.eq(P.CRC_INIT), error.eq(status != P.OK)]
            with m.Elif(pos < 4 + rlen):
                m.d.sync += crc.eq(crc16_next(crc, byte))
            with m.Elif(pos == 5 + rlen):
                m.d.sync += pos.eq(0)
                m.next = "hunt"
