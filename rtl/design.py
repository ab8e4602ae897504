"""Amaranth components for an integer net (rtl.fixed.IntNet), in two shapes.

Both take one sample per transfer on a valid/ready stream `i` (payload: the input codes,
code k in bits [k*in_bits, (k+1)*in_bits)) and give one result per transfer on `o`
(payload: `logits`, logit j in bits [j*logit_bits, ...) two's complement, and `cls`, the
first maximum). Both compute exactly `IntNet.forward`.

* `ParallelNet`: one pipeline stage per layer plus one for the argmax; every connection
  has its own multiplier (baked: shift-and-add of the constant's signed digits, so an
  absent connection or a zero weight costs nothing). One sample per clock once full.
* `SerialNet`: one multiply-accumulate unit walks a program of the present connections
  (sparse: only those, and when baked only of neurons that something reads), reading
  weights from a memory (and, when loadable, biases from a second one); smallest area,
  one sample per (connections + 5 + 2 per hidden layer) clocks (plus one per neuron with
  no connection); a three-stage pipeline (operand fetch, multiply-accumulate, write-back) keeps
  the clock up. It reads the input codes straight from the stream payload, which the
  stream rules hold stable while `valid` is high and `ready` low, and takes the
  transfer (`ready`) on its last step: no input buffer.

`weights="loadable"` makes every weight and bias of the net writable through `wr` (`en`,
`addr`, `data`: two's complement), one word per clock, between inferences. The address
map is the same in both shapes (`weight_words`, `load_words`):

* addresses 0 .. n_conn - 1: the weights of the present connections, layer by layer (the
  net's first layer first), in row-major order within a layer (neuron j, then input k);
* addresses n_conn .. n_conn + n_neurons - 1: the biases, layer by layer, neuron by neuron
  (at the accumulator scale of their layer).

A word takes the low bits it needs (`weight_bits` for a weight, `acc_bits` for a bias) of
`data`, which is as wide as the widest of them; the host checks every set before writing
it (rtl/fixed.py `loadable_update`: no weight where there is no connection, nothing
wider than its format, no accumulator that could wrap). The formats (widths, scales,
requantizing shifts) stay as built.

Reset never touches the weights and biases, in either shape: the parallel shape keeps
them in reset-less registers, the serial shape in memories. At configuration (power-up,
bitstream load, simulation start) they hold the values of the net the design was built
from; from the first write on, whatever was last written, through any number of resets.
So the live weights are what the host last loaded (`fixed.weights_digest` of it, or of
the built net before any load), whatever resets happened since.
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


def weight_words(net: IntNet) -> list[tuple[int, int, int]]:
    """(layer of the net, neuron, input) of every weight word of a loadable design, in
    address order; the biases follow at addresses len(weight_words) + global neuron."""
    return [(li, int(j), int(k)) for li, layer in enumerate(net.layers)
            for j, k in zip(*np.nonzero(layer.mask))]


def load_words(net: IntNet, live: IntNet | None = None) -> list[tuple[int, int]]:
    """(address, data) words that make a loadable design compute `net` (check it first
    with fixed.loadable_update): every word, or only those that differ from `live`, the
    net the design computes now."""
    words = [(a, int(net.layers[li].weights[j, k]))
             for a, (li, j, k) in enumerate(weight_words(net))]
    words += [(len(words) + n, int(b)) for n, b in
              enumerate(b for layer in net.layers for b in layer.bias)]
    if live is not None:
        now = dict(load_words(live))
        words = [(a, v) for a, v in words if now[a] != v]
    return words


def _data_bits(net: IntNet) -> int:
    return max(max(layer.weight_bits, layer.acc_bits) for layer in net.layers)


def _signature(net: IntNet, weights: str) -> dict:
    sig = {"i": In(stream.Signature(unsigned(net.n_in * net.in_bits))),
           "o": Out(stream.Signature(out_layout(net)))}
    if weights == "loadable":
        n_words = sum(int(ly.mask.sum()) + ly.n_out for ly in net.layers)
        sig["wr"] = In(wiring.Signature({"en": Out(1), "addr": Out(_bits(n_words)),
                                         "data": Out(signed(_data_bits(net)))}))
    return sig


def _check_weights(weights: str):
    if weights not in ("baked", "loadable"):
        raise DesignError(f"weights must be 'baked' or 'loadable', got {weights!r}")


class ParallelNet(wiring.Component):
    def __init__(self, net: IntNet, weights: str = "baked"):
        _check_weights(weights)
        self.net, self.weights = net, weights
        self.n_conn = sum(int(layer.mask.sum()) for layer in net.layers)
        self.latency = len(net.layers) + 1
        super().__init__(_signature(net, weights))

    def _load_registers(self, m):
        """Loadable: a reset-less register per weight and bias, decoded from `wr`."""
        regs, wregs, bregs = [], [], []
        for li, layer in enumerate(self.net.layers):
            w = {}
            for j, k in zip(*(v.tolist() for v in np.nonzero(layer.mask))):
                w[(j, k)] = Signal(signed(layer.weight_bits), name=f"l{li + 1}_w_{j}_{k}",
                                   init=int(layer.weights[j, k]), reset_less=True)
                regs.append(w[(j, k)])
            wregs.append(w)
        for li, layer in enumerate(self.net.layers):
            bregs.append([Signal(signed(layer.acc_bits), name=f"l{li + 1}_b_{j}",
                                 init=int(layer.bias[j]), reset_less=True)
                          for j in range(layer.n_out)])
            regs += bregs[-1]
        with m.If(self.wr.en):
            with m.Switch(self.wr.addr):
                for addr, r in enumerate(regs):  # the address map: weights, then biases
                    with m.Case(addr):
                        m.d.sync += r.eq(self.wr.data)
        return wregs, bregs

    def elaborate(self, platform):
        m = Module()
        net = self.net
        advance = Signal()
        m.d.comb += [advance.eq(~self.o.valid | self.o.ready), self.i.ready.eq(advance)]
        h = [self.i.payload[k * net.in_bits:(k + 1) * net.in_bits] for k in range(net.n_in)]
        valid = self.i.valid
        loadable = self.weights == "loadable"
        if loadable:
            wregs, bregs = self._load_registers(m)
        for li, layer in enumerate(net.layers):
            last = li == len(net.layers) - 1
            outs = []
            for j in range(layer.n_out):
                terms = []
                for k in np.flatnonzero(layer.mask[j]):
                    if loadable:
                        terms.append(wregs[li][(j, int(k))] * h[k])
                    else:
                        for sgn, p in csd(int(layer.weights[j, k])):
                            t = h[k] << p if p else h[k]
                            terms.append(t if sgn > 0 else -t)
                acc = Signal(signed(layer.acc_bits), name=f"l{li + 1}_acc{j}")
                bias = bregs[li][j] if loadable else int(layer.bias[j])
                m.d.comb += acc.eq(_tree(terms) + bias)
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
        loadable = weights == "loadable"
        # Who is computed: every readout neuron, and a hidden neuron only when the next
        # layer reads it (a pruned net leaves some unread); inputs only when read. A
        # loadable design computes every neuron: each weight word then has its own step
        # (and a neuron unread now may be read after a load).
        L = len(net.layers)
        self.sources = [np.flatnonzero(net.layers[0].mask.any(axis=0))]  # used inputs
        self.alive = []
        for li, layer in enumerate(net.layers):
            a = (np.flatnonzero(net.layers[li + 1].mask.any(axis=0)) if li + 1 < L and not loadable
                 else np.arange(layer.n_out))
            if len(a) == 0 or len(self.sources[0]) == 0:
                raise DesignError(f"{net.kind} layer {li + 1}: no connection left to compute; "
                                 "keep more connections (fixed_point.small_keep)")
            self.alive.append(a)
            self.sources.append(a)
        # The program: every present connection, layer by layer, neuron by neuron, each
        # naming its source by position among the computed neurons (or used inputs).
        # `inserted` records the steps that are not connections (bubbles, the placeholder
        # of an empty row) as (weight words before them, count): a weight word's step is
        # its address plus the inserted steps before it.
        prog_k, prog_w, prog_last = [], [], []
        self.inserted = []
        n_words = 0
        for li, layer in enumerate(net.layers):
            pos = {int(k): i for i, k in enumerate(self.sources[li])}
            for j in self.alive[li]:
                ks = [int(k) for k in np.flatnonzero(layer.mask[j])]
                w0, n_words = n_words, n_words + len(ks)
                bubbles = li > 0 and j == self.alive[li][0]
                if bubbles:
                    self.inserted.append((w0, BUBBLES))
                if not ks:  # an empty row adds 0 * (first source)
                    ks, ws = [int(self.sources[li][0])], [0]
                    self.inserted.append((w0, 1))
                else:
                    ws = [int(layer.weights[j, k]) for k in ks]
                if bubbles:
                    # Bubbles: the previous layer's last output is written BUBBLES cycles
                    # after its operands were read; zero-weight steps cover that.
                    ks, ws = [int(self.sources[li][0])] * BUBBLES + ks, [0] * BUBBLES + ws
                for n, (k, w) in enumerate(zip(ks, ws)):
                    prog_k.append(pos[k])
                    prog_w.append(w)
                    prog_last.append(n == len(ks) - 1)
        self.prog_k, self.prog_w, self.prog_last = prog_k, prog_w, prog_last
        self.n_conn = sum(int(layer.mask.sum()) for layer in net.layers)
        # Offer to result: start, one cycle per step, the pipeline (memory read, operand
        # register, multiply-accumulate, write-back), the transfer. The simulation measures
        # it; tests compare.
        self.latency = len(prog_k) + 5
        super().__init__(_signature(net, weights))

    def elaborate(self, platform):
        m = Module()
        prd, wrd, brd = self._memories(m)
        bufs, logit_regs = self._buffers()
        r = self._registers()
        self._sequencer(m, r, prd, wrd)
        x_r, w_r, last_r, mac = self._fetch(m, r, prd, wrd, bufs)
        wb = self._multiply_accumulate(m, r, x_r, w_r, last_r, mac, brd)
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
        if self.weights != "loadable":
            return prd, wrd, None
        # A weight word's step: its address plus the steps inserted before it (bubbles,
        # placeholders); one comparator per insertion point.
        wwr = wmem.write_port()
        skip = [n * (self.wr.addr >= w) if w else C(n) for w, n in self.inserted
                if w < self.n_conn]
        m.d.comb += [wwr.en.eq(self.wr.en & (self.wr.addr < self.n_conn)),
                     wwr.data.eq(self.wr.data), wwr.addr.eq(self.wr.addr + _tree(skip))]
        # Biases: one word per neuron (every neuron is computed when loadable), read one
        # cycle ahead of the multiply-accumulate that starts from it.
        biases = [int(b) for layer in self.net.layers for b in layer.bias]
        m.submodules.bmem = bmem = Memory(
            shape=signed(max(layer.acc_bits for layer in self.net.layers)), depth=len(biases),
            init=biases)
        bwr = bmem.write_port()
        m.d.comb += [bwr.en.eq(self.wr.en & (self.wr.addr >= self.n_conn)),
                     bwr.data.eq(self.wr.data), bwr.addr.eq(self.wr.addr - self.n_conn)]
        return prd, wrd, bmem.read_port()

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
        r.start = self.i.valid & ~r.running & ~r.done
        with m.If(r.start):
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

    def _multiply_accumulate(self, m, r, x_r, w_r, last_r, mac, brd) -> SimpleNamespace:
        """Stage 2 (mac): multiply-accumulate; a neuron's last step hands it to stage 3."""
        net = self.net
        if brd is None:
            bias = Array([C(int(layer.bias[j]), signed(r.acc_bits))
                          for layer, a in zip(net.layers, self.alive) for j in a])[r.n]
        else:
            # The bias memory reads r.n's next value, so its data is bias[r.n] whenever
            # a neuron's first step is here.
            m.d.comb += brd.addr.eq(Mux(r.start, 0, Mux(mac & last_r, r.n + 1, r.n)))
            bias = brd.data
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


class RingNet(wiring.Component):
    """The smallest shape for a net of one hidden layer (a QAT net, model/qat.py): a dense
    walk with no program, no hidden buffer and no operand multiplexer but the input's.

    For each hidden neuron j in turn: N steps (one per input k, every connection walked,
    zero weights too) accumulate w1[j, k] * x[k] from the bias into `acc`; then C steps
    (one per class) add w2[c, j] * h_j, with h_j = the requantized `acc`, to the readout
    accumulators, which sit in a ring: each step adds to the head and moves it to the
    tail, so after C steps the ring is back in order and no accumulator is ever selected
    by an index. The weights of both layers are one ROM walked by a counter (a block RAM
    on an FPGA, gates when counted as logic). The running argmax (first maximum wins)
    rides on the last neuron's ring steps. One sample per H * (N + C) + 2 clocks.

    Input and output streams as the other shapes; the input transfer (`ready`) is taken
    at the last step that reads it. Baked weights only (a ROM); the hidden layer must
    requantize with one shift for every neuron.
    """

    def __init__(self, net: IntNet, weights: str = "baked"):
        _check_weights(weights)
        if weights != "baked":
            raise DesignError("the ring shape holds its weights in a ROM: weights must be "
                              f"'baked', got {weights!r}")
        if len(net.layers) != 2 or net.layers[0].activation != "relu":
            raise DesignError(f"{net.kind}: the ring shape computes one hidden ReLU layer and "
                              f"a readout; this net has {len(net.layers)} layers; use the "
                              "serial or parallel shape")
        if len(set(int(s) for s in net.layers[0].shift)) != 1:
            raise DesignError(f"{net.kind}: the ring shape requantizes every hidden neuron "
                              "with one shift; this net's shifts differ per neuron "
                              f"({sorted(set(int(s) for s in net.layers[0].shift))}); use the "
                              "serial shape")
        self.net, self.weights = net, weights
        l1, l2 = net.layers
        self.N, self.H, self.C = l1.n_in, l1.n_out, l2.n_out
        self.steps = self.H * (self.N + self.C)
        self.n_conn = self.H * (self.N + self.C)
        # Offer to result: the start edge, one edge per step issued, the edge of the last
        # step's accumulate (its result is then offered and taken at the next edge): the
        # simulation measures it; tests compare.
        self.latency = self.steps + 2
        super().__init__(_signature(net, weights))

    def elaborate(self, platform):
        m = Module()
        net = self.net
        l1, l2 = net.layers
        N, H, nc = self.N, self.H, self.C
        wbits = max(l1.weight_bits, l2.weight_bits)
        words = []
        for j in range(H):
            words += [int(v) for v in l1.weights[j]] + [int(v) for v in l2.weights[:, j]]
        m.submodules.rom = rom = Memory(shape=signed(wbits), depth=self.steps, init=words)
        rd = rom.read_port()  # synchronous: a block RAM on an FPGA
        t = Signal(range(self.steps + 1), name="t")
        k = Signal(range(N + nc), name="k")
        j = Signal(range(H), name="j")
        running, done = Signal(name="running"), Signal(name="done")
        # Stage 2 sees the step issued one cycle earlier (the ROM's data).
        v_d, k_d, j_d = Signal(name="v_d"), Signal.like(k, name="k_d"), Signal.like(j, name="j_d")
        acc = Signal(signed(l1.acc_bits), name="acc")
        lb = l2.acc_bits
        ring = [Signal(signed(lb), name=f"ring{c}") for c in range(nc)]
        best = Signal(signed(lb), name="best")
        cls = Signal(_bits(nc), name="cls")
        c_d = Signal(range(nc + 1), name="c_d")  # class at the head during ring steps

        start = self.i.valid & ~running & ~done
        issue = running & (t < self.steps)
        m.d.comb += rd.addr.eq(t)
        m.d.sync += [v_d.eq(issue), k_d.eq(k), j_d.eq(j)]
        with m.If(start):
            m.d.sync += [running.eq(1), t.eq(0), k.eq(0), j.eq(0)]
            m.d.sync += [r.eq(int(b)) for r, b in zip(ring, l2.bias)]
        with m.Elif(issue):
            m.d.sync += t.eq(t + 1)
            with m.If(k == N + nc - 1):
                m.d.sync += [k.eq(0), j.eq(j + 1)]
            with m.Else():
                m.d.sync += k.eq(k + 1)

        w = rd.data
        x = Array([self.i.payload[i * l1.in_bits:(i + 1) * l1.in_bits] for i in range(N)])[k_d]
        b1 = Array([C(int(b), signed(l1.acc_bits)) for b in l1.bias])[j_d]
        h = _requant(acc, int(l1.shift[0]), l1.out_bits)
        head = Signal(signed(lb), name="head")
        m.d.comb += head.eq(ring[0] + w * h)
        last = j_d == H - 1
        with m.If(v_d):
            with m.If(k_d < N):
                m.d.sync += acc.eq(Mux(k_d == 0, b1, acc) + w * x)
                with m.If(last & (k_d == N - 1)):
                    m.d.comb += self.i.ready.eq(1)  # the input is used up
                m.d.sync += c_d.eq(0)
            with m.Else():
                m.d.sync += [r.eq(n) for r, n in zip(ring, ring[1:] + [head])]
                m.d.sync += c_d.eq(c_d + 1)
                with m.If(last):
                    with m.If((c_d == 0) | (head > best)):
                        m.d.sync += [best.eq(head), cls.eq(c_d)]
                    with m.If(c_d == nc - 1):
                        m.d.sync += [running.eq(0), done.eq(1)]
        m.d.comb += [self.o.valid.eq(done), self.o.payload.cls.eq(cls),
                     self.o.payload.logits.eq(Cat(*ring))]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += done.eq(0)
        return m


SHAPES = {"parallel": ParallelNet, "serial": SerialNet, "ring": RingNet}


def build(net: IntNet, shape: str, weights: str):
    if shape not in SHAPES:
        raise DesignError(f"shape must be one of {list(SHAPES)}, got {shape!r}")
    return SHAPES[shape](net, weights)


def to_verilog(component, name: str = "top") -> str:
    from amaranth.back import verilog

    return verilog.convert(component, name=name, emit_src=False)
