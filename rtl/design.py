"""Amaranth components for an integer net (rtl.fixed.IntNet), in two shapes.

Both take one sample per transfer on a valid/ready stream `i` (payload: the input codes,
code k in bits [k*in_bits, (k+1)*in_bits)) and give one result per transfer on `o`
(payload: `logits`, logit j in bits [j*logit_bits, ...) two's complement, and `cls`, the
first maximum). Both compute exactly `IntNet.forward`.

* `ParallelNet`: one pipeline stage per layer plus one for the argmax; every connection
  has its own multiplier (baked: shift-and-add of the constant's signed digits, so an
  absent connection or a zero weight costs nothing). One sample per clock once full.
* `SerialNet`: one multiply-accumulate unit walks a program of the present connections
  (sparse: only those, and only of neurons that something reads), reading weights from
  a memory; smallest area, one sample per (connections + 5 + 2 per hidden layer)
  clocks; a three-stage pipeline (operand fetch, multiply-accumulate, write-back) keeps
  the clock up. It reads the input codes straight from the stream payload, which the
  stream rules hold stable while `valid` is high and `ready` low, and takes the
  transfer (`ready`) on its last step: no input buffer.

`weights="loadable"` makes the readout's weights writable through `wr` (`en`, `addr`
= index of the connection in row-major order over the present ones, `data` = two's
complement weight); reset holds the trained values. Write between inferences. Biases
and hidden layers stay baked.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from crystalbench.errors import DesignError

from .fixed import IntNet

BUBBLES = 2  # SerialNet: cycles from reading an operand to writing a hidden output


def _bits(n: int) -> int:
    return max(1, (max(n, 1) - 1).bit_length())


def out_layout(net: IntNet) -> data.StructLayout:
    return data.StructLayout({"logits": unsigned(net.n_classes * net.logit_bits),
                              "cls": unsigned(_bits(net.n_classes))})


def csd(w: int) -> list[tuple[int, int]]:
    """Canonical signed digits of w: [(sign, power)], fewest non-zero digits."""
    out, i = [], 0
    while w != 0:
        if w & 1:
            d = 2 - (w & 3)  # +1 or -1
            out.append((d, i))
            w -= d
        w >>= 1
        i += 1
    return out


def _tree(terms: list):
    """Balanced adder tree (shallower than a chain, same adder count)."""
    if not terms:
        return C(0, 1)
    while len(terms) > 1:
        nxt = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        if len(terms) % 2:
            nxt.append(terms[-1])
        terms = nxt
    return terms[0]


def _requant(acc, shift, out_bits):
    """ReLU + requantize: clip(acc >> shift, 0, 2**out_bits - 1) on a signed accumulator."""
    y = acc >> shift
    top = (1 << out_bits) - 1
    return Mux(y < 0, 0, Mux(y > top, top, y[:out_bits]))


def _signature(net: IntNet, weights: str, addr_depth: int) -> dict:
    sig = {"i": In(stream.Signature(unsigned(net.n_in * net.in_bits))),
           "o": Out(stream.Signature(out_layout(net)))}
    if weights == "loadable":
        wb = net.layers[-1].weight_bits
        sig["wr"] = In(wiring.Signature({"en": Out(1), "addr": Out(_bits(addr_depth)),
                                         "data": Out(signed(wb))}))
    return sig


def _check_weights(weights: str):
    if weights not in ("baked", "loadable"):
        raise DesignError(f"weights must be 'baked' or 'loadable', got {weights!r}")


class ParallelNet(wiring.Component):
    def __init__(self, net: IntNet, weights: str = "baked"):
        _check_weights(weights)
        self.net, self.weights = net, weights
        self.n_conn = int(net.layers[-1].mask.sum())
        self.latency = len(net.layers) + 1
        super().__init__(_signature(net, weights, self.n_conn))

    def elaborate(self, platform):
        m = Module()
        net = self.net
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        h = [self.i.payload[k * net.in_bits:(k + 1) * net.in_bits] for k in range(net.n_in)]
        valid = self.i.valid
        for li, layer in enumerate(net.layers):
            last = li == len(net.layers) - 1
            loadable = last and self.weights == "loadable"
            wregs = {}
            if loadable:
                idx = 0
                for j in range(layer.n_out):
                    for k in np.flatnonzero(layer.mask[j]):
                        r = Signal(signed(layer.weight_bits), name=f"w_{j}_{k}",
                                   init=int(layer.weights[j, k]))
                        with m.If(self.wr.en & (self.wr.addr == idx)):
                            m.d.sync += r.eq(self.wr.data)
                        wregs[(j, k)] = r
                        idx += 1
            outs = []
            for j in range(layer.n_out):
                terms = []
                for k in np.flatnonzero(layer.mask[j]):
                    if loadable:
                        terms.append(wregs[(j, k)] * h[k])
                    else:
                        for sgn, p in csd(int(layer.weights[j, k])):
                            t = h[k] << p if p else h[k]
                            terms.append(t if sgn > 0 else -t)
                acc = Signal(signed(layer.acc_bits), name=f"l{li + 1}_acc{j}")
                m.d.comb += acc.eq(_tree(terms) + int(layer.bias[j]))
                if last:
                    outs.append(acc)
                else:
                    outs.append(_requant(acc, int(layer.shift[j]), layer.out_bits))
            regs = []
            width = layer.acc_bits if last else layer.out_bits
            for j, v in enumerate(outs):
                r = Signal(signed(width) if last else unsigned(width), name=f"l{li + 1}_q{j}")
                with m.If(advance):
                    m.d.sync += r.eq(v)
                regs.append(r)
            v = Signal(name=f"l{li + 1}_valid")
            with m.If(advance):
                m.d.sync += v.eq(valid)
            h, valid = regs, v
        # Argmax stage: first maximum wins (strict >), like numpy's argmax.
        best, idx = h[0], C(0, _bits(net.n_classes))
        for j in range(1, len(h)):
            gt = h[j] > best
            best = Mux(gt, h[j], best)
            idx = Mux(gt, j, idx)
        logits = Signal(unsigned(net.n_classes * net.logit_bits))
        cls = Signal(_bits(net.n_classes))
        with m.If(advance):
            m.d.sync += [logits.eq(Cat(*h)), cls.eq(idx), self.o.valid.eq(valid)]
        m.d.comb += [self.o.payload.logits.eq(logits), self.o.payload.cls.eq(cls)]
        return m


class SerialNet(wiring.Component):
    def __init__(self, net: IntNet, weights: str = "loadable"):
        _check_weights(weights)
        self.net, self.weights = net, weights
        # Who is computed: every readout neuron, and a hidden neuron only when the next
        # layer reads it (a pruned net leaves some unread); inputs only when read.
        L = len(net.layers)
        self.sources = [np.flatnonzero(net.layers[0].mask.any(axis=0))]  # used inputs
        self.alive = []
        for li, layer in enumerate(net.layers):
            a = (np.flatnonzero(net.layers[li + 1].mask.any(axis=0)) if li + 1 < L
                 else np.arange(layer.n_out))
            if len(a) == 0 or len(self.sources[0]) == 0:
                raise DesignError(f"{net.kind} layer {li + 1}: no connection left to compute; "
                                 "keep more connections (fixed_point.small_keep)")
            self.alive.append(a)
            self.sources.append(a)
        # The program: every present connection, layer by layer, neuron by neuron, each
        # naming its source by position among the computed neurons (or used inputs).
        prog_k, prog_w, prog_last = [], [], []
        self.start_of_last = 0
        for li, layer in enumerate(net.layers):
            pos = {int(k): i for i, k in enumerate(self.sources[li])}
            for j in self.alive[li]:
                ks = [int(k) for k in np.flatnonzero(layer.mask[j])]
                if not ks:  # an empty row adds 0 * (first source)
                    ks, ws = [int(self.sources[li][0])], [0]
                else:
                    ws = [int(layer.weights[j, k]) for k in ks]
                if li > 0 and j == self.alive[li][0]:
                    # Bubbles: the previous layer's last output is written BUBBLES cycles
                    # after its operands were read; zero-weight steps cover that.
                    ks, ws = [int(self.sources[li][0])] * BUBBLES + ks, [0] * BUBBLES + ws
                if li == L - 1 and j == self.alive[li][0]:
                    self.start_of_last = len(prog_k) + (BUBBLES if li > 0 else 0)
                for n, (k, w) in enumerate(zip(ks, ws)):
                    prog_k.append(pos[k])
                    prog_w.append(w)
                    prog_last.append(n == len(ks) - 1)
        self.prog_k, self.prog_w, self.prog_last = prog_k, prog_w, prog_last
        self.n_conn = int(net.layers[-1].mask.sum())
        if weights == "loadable" and not net.layers[-1].mask.any(axis=1).all():
            # Its placeholder step would shift the write addresses of the rows after it.
            raise DesignError(f"{net.kind}: a readout neuron has no connection; loadable "
                             "serial weights need every readout row present (use baked)")
        # Offer to result: start, one cycle per step, the pipeline (memory read, operand
        # register, multiply-accumulate, write-back), the transfer. The simulation measures
        # it; tests compare.
        self.latency = len(prog_k) + 5
        super().__init__(_signature(net, weights, self.n_conn))

    def elaborate(self, platform):
        m = Module()
        prd, wrd = self._memories(m)
        bufs, logit_regs = self._buffers()
        r = self._registers()
        self._sequencer(m, r, prd, wrd)
        x_r, w_r, last_r, mac = self._fetch(m, r, prd, wrd, bufs)
        wb = self._multiply_accumulate(m, r, x_r, w_r, last_r, mac)
        self._write_back(m, r, wb, bufs, logit_regs)
        m.d.comb += [self.o.valid.eq(r.done), self.o.payload.cls.eq(r.cls),
                     self.o.payload.logits.eq(Cat(*logit_regs))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r.done.eq(0)
        return m

    @property
    def _kbits(self) -> int:
        return _bits(max(len(src) for src in self.sources))

    def _memories(self, m):
        """Program (source index + last-step flag) and weights: synchronous memories, a
        block RAM each on an FPGA; the weights take writes when loadable."""
        P = len(self.prog_k)
        kbits = self._kbits
        wb = max(layer.weight_bits for layer in self.net.layers)
        m.submodules.prog = prog = Memory(
            shape=unsigned(kbits + 1), depth=P,
            init=[k | (int(last) << kbits) for k, last in zip(self.prog_k, self.prog_last)])
        m.submodules.wmem = wmem = Memory(shape=signed(wb), depth=P, init=self.prog_w)
        prd = prog.read_port()  # synchronous: a block RAM on an FPGA
        wrd = wmem.read_port()
        if self.weights == "loadable":
            wwr = wmem.write_port()
            m.d.comb += [wwr.en.eq(self.wr.en), wwr.data.eq(self.wr.data),
                         wwr.addr.eq(self.wr.addr + self.start_of_last)]
        return prd, wrd

    def _buffers(self):
        """The input codes come from the payload (held until we take it); then every hidden
        layer's output codes; then the logits."""
        net = self.net
        xin = [self.i.payload[k * net.in_bits:(k + 1) * net.in_bits] for k in self.sources[0]]
        bufs = [xin]
        for li, layer in enumerate(net.layers[:-1]):
            bufs.append([Signal(layer.out_bits, name=f"h{li + 1}_{j}") for j in self.alive[li]])
        logit_regs = [Signal(signed(net.logit_bits), name=f"logit{j}") for j in range(net.n_classes)]
        return bufs, logit_regs

    def _registers(self) -> SimpleNamespace:
        net = self.net
        r = SimpleNamespace()
        r.acc_bits = max(layer.acc_bits for layer in net.layers)
        r.pc = Signal(range(len(self.prog_k) + 1), name="pc")
        r.running = Signal(name="running")
        r.issued = Signal(name="issued")  # memory data of the previous cycle is a program step
        r.done = Signal(name="done")
        r.first = Signal(name="first")
        r.n_neurons = sum(len(a) for a in self.alive)
        r.n = Signal(range(r.n_neurons + 1), name="n")  # global neuron index
        r.lay = Signal(range(len(net.layers)), name="lay")
        # position in the layer
        r.j_in = Signal(range(max(len(a) for a in self.alive) + 1), name="j_in")
        r.acc = Signal(signed(r.acc_bits), name="acc")
        r.best = Signal(signed(net.logit_bits), name="best")
        r.cls = Signal(_bits(net.n_classes), name="cls")
        return r

    def _sequencer(self, m, r, prd, wrd):
        """Start on a valid input; walk the program one step per clock."""
        P = len(self.prog_k)
        m.d.comb += [prd.addr.eq(r.pc), wrd.addr.eq(r.pc)]
        with m.If(self.i.valid & ~r.running & ~r.done):
            m.d.sync += [r.running.eq(1), r.pc.eq(0), r.n.eq(0), r.lay.eq(0), r.j_in.eq(0),
                         r.first.eq(1)]
        m.d.sync += r.issued.eq(r.running & (r.pc < P))
        with m.If(r.running & (r.pc < P)):
            m.d.sync += r.pc.eq(r.pc + 1)

    def _fetch(self, m, r, prd, wrd, bufs):
        """Stage 1 (issued: the memories hold a program step): fetch the operand."""
        kbits = self._kbits
        k = prd.data[:kbits]
        srcs = [Array(b)[k] for b in bufs]
        x = Array(srcs)[r.lay] if len(srcs) > 1 else srcs[0]
        x_r = Signal(len(x))
        w_r = Signal(signed(max(layer.weight_bits for layer in self.net.layers)))
        last_r = Signal()
        mac = Signal()
        m.d.sync += [x_r.eq(x), w_r.eq(wrd.data), last_r.eq(prd.data[kbits]), mac.eq(r.issued)]
        return x_r, w_r, last_r, mac

    def _multiply_accumulate(self, m, r, x_r, w_r, last_r, mac) -> SimpleNamespace:
        """Stage 2 (mac): multiply-accumulate; a neuron's last step hands it to stage 3."""
        net = self.net
        bias = Array([C(int(layer.bias[j]), signed(r.acc_bits))
                      for layer, a in zip(net.layers, self.alive) for j in a])[r.n]
        acc_next = Signal(signed(r.acc_bits))
        m.d.comb += acc_next.eq(Mux(r.first, bias, r.acc) + w_r * x_r)
        wb = SimpleNamespace()
        wb.valid = Signal(name="wb_valid")
        wb.lay = Signal.like(r.lay, name="wb_lay")
        wb.j = Signal.like(r.j_in, name="wb_j")
        wb.final = Signal(name="wb_final")
        m.d.sync += wb.valid.eq(0)
        with m.If(mac):
            m.d.sync += [r.acc.eq(acc_next), r.first.eq(last_r)]
            with m.If(last_r):
                m.d.sync += [r.n.eq(r.n + 1), r.j_in.eq(r.j_in + 1), wb.valid.eq(1),
                             wb.lay.eq(r.lay), wb.j.eq(r.j_in),
                             wb.final.eq(r.n == r.n_neurons - 1)]
                for li, alive in enumerate(self.alive):
                    with m.If((r.lay == li) & (r.j_in == len(alive) - 1)):
                        m.d.sync += r.j_in.eq(0)
                        if li + 1 < len(net.layers):
                            m.d.sync += r.lay.eq(li + 1)
        return wb

    def _write_back(self, m, r, wb, bufs, logit_regs):
        """Stage 3 (write-back): `acc` holds the finished neuron: requantize it into the
        hidden buffer, or store the logit and update the running argmax."""
        net = self.net
        acc = r.acc
        with m.If(wb.valid):
            for li, (layer, alive) in enumerate(zip(net.layers, self.alive)):
                with m.If(wb.lay == li):
                    if li + 1 < len(net.layers):
                        sh = Array([C(int(layer.shift[j]), 4 + _bits(r.acc_bits))
                                    for j in alive])[wb.j]
                        q = _requant(acc, sh, layer.out_bits)
                        with m.Switch(wb.j):
                            for pos in range(len(alive)):
                                with m.Case(pos):
                                    m.d.sync += bufs[li + 1][pos].eq(q)
                    else:
                        lb = net.logit_bits
                        with m.Switch(wb.j):
                            for j in range(layer.n_out):
                                with m.Case(j):
                                    m.d.sync += logit_regs[j].eq(acc[:lb])
                        # Running argmax, first maximum wins.
                        with m.If((wb.j == 0) | (acc[:lb].as_signed() > r.best)):
                            m.d.sync += [r.best.eq(acc[:lb]), r.cls.eq(wb.j)]
            with m.If(wb.final):
                m.d.sync += [r.running.eq(0), r.done.eq(1)]
                m.d.comb += self.i.ready.eq(1)  # the input is used up


SHAPES = {"parallel": ParallelNet, "serial": SerialNet}


def build(net: IntNet, shape: str, weights: str):
    if shape not in SHAPES:
        raise DesignError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    return SHAPES[shape](net, weights)


def to_verilog(component, name: str = "top") -> str:
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)
