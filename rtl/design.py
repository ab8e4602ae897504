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

import numpy as np
from amaranth.hdl import Array, C, Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

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
        raise ValueError(f"weights must be 'baked' or 'loadable', got {weights!r}")


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
                raise ValueError(f"{net.kind} layer {li + 1}: no connection left to compute; "
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
            raise ValueError(f"{net.kind}: a readout neuron has no connection; loadable "
                             "serial weights need every readout row present (use baked)")
        # Offer to result: start, one cycle per step, the pipeline (memory read, operand
        # register, multiply-accumulate, write-back), the transfer. The simulation measures
        # it; tests compare.
        self.latency = len(prog_k) + 5
        super().__init__(_signature(net, weights, self.n_conn))

    def elaborate(self, platform):
        m = Module()
        net = self.net
        P = len(self.prog_k)
        n_neurons = sum(len(a) for a in self.alive)
        kbits = _bits(max(len(src) for src in self.sources))
        wb = max(layer.weight_bits for layer in net.layers)
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

        # The input codes come from the payload (held until we take it); then every hidden
        # layer's output codes.
        xin = [self.i.payload[k * net.in_bits:(k + 1) * net.in_bits] for k in self.sources[0]]
        bufs = [xin]
        for li, layer in enumerate(net.layers[:-1]):
            bufs.append([Signal(layer.out_bits, name=f"h{li + 1}_{j}") for j in self.alive[li]])
        logit_regs = [Signal(signed(net.logit_bits), name=f"logit{j}") for j in range(net.n_classes)]

        acc_bits = max(layer.acc_bits for layer in net.layers)
        pc = Signal(range(P + 1))
        running = Signal()
        issued = Signal()  # memory data of the previous cycle is a program step
        done = Signal()
        first = Signal()
        n = Signal(range(n_neurons + 1))  # global neuron index
        lay = Signal(range(len(net.layers)))
        j_in = Signal(range(max(len(a) for a in self.alive) + 1))  # position in the layer
        acc = Signal(signed(acc_bits))
        best = Signal(signed(net.logit_bits))
        cls = Signal(_bits(net.n_classes))

        m.d.comb += [prd.addr.eq(pc), wrd.addr.eq(pc)]
        with m.If(self.i.valid & ~running & ~done):
            m.d.sync += [running.eq(1), pc.eq(0), n.eq(0), lay.eq(0), j_in.eq(0), first.eq(1)]
        m.d.sync += issued.eq(running & (pc < P))
        with m.If(running & (pc < P)):
            m.d.sync += pc.eq(pc + 1)

        # Stage 1 (issued: the memories hold a program step): fetch the operand.
        k = prd.data[:kbits]
        srcs = [Array(b)[k] for b in bufs]
        x = Array(srcs)[lay] if len(srcs) > 1 else srcs[0]
        x_r = Signal(len(x))
        w_r = Signal(signed(wb))
        last_r = Signal()
        mac = Signal()
        m.d.sync += [x_r.eq(x), w_r.eq(wrd.data), last_r.eq(prd.data[kbits]), mac.eq(issued)]

        # Stage 2 (mac): multiply-accumulate; a neuron's last step hands it to stage 3.
        bias = Array([C(int(layer.bias[j]), signed(acc_bits))
                      for layer, a in zip(net.layers, self.alive) for j in a])[n]
        acc_next = Signal(signed(acc_bits))
        m.d.comb += acc_next.eq(Mux(first, bias, acc) + w_r * x_r)
        wb_valid = Signal()
        wb_lay = Signal.like(lay)
        wb_j = Signal.like(j_in)
        wb_final = Signal()
        m.d.sync += wb_valid.eq(0)
        with m.If(mac):
            m.d.sync += [acc.eq(acc_next), first.eq(last_r)]
            with m.If(last_r):
                m.d.sync += [n.eq(n + 1), j_in.eq(j_in + 1), wb_valid.eq(1), wb_lay.eq(lay),
                             wb_j.eq(j_in), wb_final.eq(n == n_neurons - 1)]
                for li, alive in enumerate(self.alive):
                    with m.If((lay == li) & (j_in == len(alive) - 1)):
                        m.d.sync += j_in.eq(0)
                        if li + 1 < len(net.layers):
                            m.d.sync += lay.eq(li + 1)

        # Stage 3 (write-back): `acc` holds the finished neuron.
        with m.If(wb_valid):
            for li, (layer, alive) in enumerate(zip(net.layers, self.alive)):
                with m.If(wb_lay == li):
                    if li + 1 < len(net.layers):
                        sh = Array([C(int(layer.shift[j]), 4 + _bits(acc_bits)) for j in alive])[wb_j]
                        q = _requant(acc, sh, layer.out_bits)
                        with m.Switch(wb_j):
                            for pos in range(len(alive)):
                                with m.Case(pos):
                                    m.d.sync += bufs[li + 1][pos].eq(q)
                    else:
                        lb = net.logit_bits
                        with m.Switch(wb_j):
                            for j in range(layer.n_out):
                                with m.Case(j):
                                    m.d.sync += logit_regs[j].eq(acc[:lb])
                        # Running argmax, first maximum wins.
                        with m.If((wb_j == 0) | (acc[:lb].as_signed() > best)):
                            m.d.sync += [best.eq(acc[:lb]), cls.eq(wb_j)]
            with m.If(wb_final):
                m.d.sync += [running.eq(0), done.eq(1)]
                m.d.comb += self.i.ready.eq(1)  # the input is used up
        m.d.comb += [self.o.valid.eq(done), self.o.payload.cls.eq(cls),
                     self.o.payload.logits.eq(Cat(*logit_regs))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += done.eq(0)
        return m


SHAPES = {"parallel": ParallelNet, "serial": SerialNet}


def build(net: IntNet, shape: str, weights: str):
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    return SHAPES[shape](net, weights)


def to_verilog(component, name: str = "top") -> str:
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)
