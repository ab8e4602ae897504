"""Fixed point for the digital side: per-tensor formats and the bit-exact golden model.

Two integer nets come out of one Crystal:

* `frontier`: what the FPGA computes in the hybrid system. Its inputs are the unsigned
  ADC codes of the boundary neurons (crystalbench.adc, shared with the analog backend);
  each ADC step (LSB) is folded into the weights that read it.
* `all_digital`: the whole net as logic, faithful to the float net (the hybrid-vs-digital
  comparison). Its inputs are the raw inputs through the same converter model
  (`AdcModel.input_codes`) at `fixed_point.digital_input_bits`.
* `all_digital_small`: the same net pruned (`prune_masks`: dead neurons, then the
  smallest connections) and in narrower formats (`fixed_point.small_*`): the smallest
  all-digital design.

Formats, per layer (every tensor is an integer; the scale is a power of two so that
rescaling is a shift, never a multiplier):

* weights: signed `weight_bits`, W_int = round(W * lsb_in * 2**weight_frac), with
  weight_frac the largest that keeps max|W_int| inside the width;
* bias: at the accumulator scale 2**-weight_frac (the input offset folded in, and for a
  hidden layer the rounding half-step of the requantizing shift too);
* accumulator: signed, as wide as the worst case over all input codes needs
  (so it can never overflow, whatever the codes);
* hidden outputs: ReLU + requantize = clip(acc >> shift, 0, 2**out_bits - 1), shift
  chosen so the largest value seen on the calibration (training) inputs fits;
* readout: the accumulator itself is the logit; the class is the first maximum.

The frontier is whole trailing layers of the crystal (`frontier_start`): every layer from
the first one holding a frontier neuron on is wholly frontier, every layer below it wholly
core, so the frontier reads the core through the ADC codes of one layer (the boundary
neurons of the layer below its first), or the raw inputs when nothing is frozen. Its
hidden outputs are as wide as the ADC codes (`adc.bits`).

Loading (`loadable_update`, `weights_digest`): a loadable design keeps every format of
the net it was built from (widths, scales, shifts) and takes new integer weights and
biases. The accumulators are sized for the trained integers, so the host refuses, before
anything is written, a set whose worst case does not fit them.

The formats and integer arrays are this backend's own artifact, `build/<exp>/fixed/
fixed_point.json` (written by the `quantize` stage, rtl/quantize.py), stamped with the
digest of the Crystal and the config they came from; the golden model, the RTL and the
simulators all read the same numbers from it, and a stale one is refused by name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench import crystal as crystal_mod
from crystalbench.crystal import Crystal
from crystalbench.errors import FixedPointError
from crystalbench.results import atomic_write_json

FIXED_POINT_VERSION = 2  # 2: own artifact, stamped with the Crystal digest and config
FILE_NAME = "fixed_point.json"
MAX_WIDTH = 48  # widest integer the formats may use (the RTL generator's limit)
LAYER_FIELDS = ("activation", "in_bits", "weight_bits", "weight_frac", "acc_bits", "shift",
                "out_bits", "weights", "mask", "bias")


@dataclass(frozen=True, eq=False)
class IntLayer:
    weights: np.ndarray  # int64 (n_out, n_in), 0 where the connection is absent
    mask: np.ndarray  # bool (n_out, n_in)
    bias: np.ndarray  # int64 (n_out,)
    activation: str  # 'relu' (hidden) or 'linear' (readout)
    in_bits: int  # unsigned input codes
    weight_bits: int
    weight_frac: np.ndarray  # int64 (n_out,): per neuron (hidden) or one value (readout)
    acc_bits: int  # signed
    shift: np.ndarray  # int64 (n_out,), hidden: requantizing right shift per neuron
    out_bits: int  # hidden: unsigned output code width; readout: == acc_bits (signed)

    @property
    def n_out(self):
        return self.weights.shape[0]

    @property
    def n_in(self):
        return self.weights.shape[1]

    def forward(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer codes (n, n_in) -> (accumulators, outputs), both int64."""
        acc = np.asarray(codes, np.int64) @ self.weights.T + self.bias
        if self.activation == "relu":
            return acc, np.clip(acc >> self.shift[None, :], 0, (1 << self.out_bits) - 1)
        return acc, acc

    def to_dict(self) -> dict:
        return {"activation": self.activation, "in_bits": self.in_bits,
                "weight_bits": self.weight_bits, "weight_frac": self.weight_frac.tolist(),
                "acc_bits": self.acc_bits, "shift": self.shift.tolist(), "out_bits": self.out_bits,
                "weights": self.weights.tolist(), "mask": self.mask.astype(int).tolist(),
                "bias": self.bias.tolist()}


@dataclass(frozen=True, eq=False)
class IntNet:
    kind: str  # 'frontier' | 'all_digital' | 'all_digital_small'
    input_kind: str  # 'adc_codes' (boundary neurons of crystal layer input_layer) | 'input_codes'
    input_layer: int  # crystal layer whose outputs are the inputs (0 = raw inputs)
    input_index: np.ndarray  # which neurons/inputs of that layer, in order
    layers: tuple[IntLayer, ...]

    @property
    def n_in(self):
        return self.layers[0].n_in

    @property
    def in_bits(self):
        return self.layers[0].in_bits

    @property
    def n_classes(self):
        return self.layers[-1].n_out

    @property
    def logit_bits(self):
        return self.layers[-1].acc_bits

    def forward(self, codes: np.ndarray) -> dict:
        """The golden model: input codes (n, n_in) -> every tensor, logits and class."""
        h = np.asarray(codes, np.int64)
        accs, outs = [], []
        for layer in self.layers:
            acc, h = layer.forward(h)
            accs.append(acc)
            outs.append(h)
        return {"acc": accs, "out": outs, "logits": h, "cls": h.argmax(axis=1)}

    def to_dict(self) -> dict:
        return {"input": {"kind": self.input_kind, "layer": self.input_layer,
                          "index": [int(i) for i in self.input_index]},
                "layers": [layer.to_dict() for layer in self.layers]}

    @staticmethod
    def from_dict(kind: str, d: dict) -> "IntNet":
        layers = tuple(IntLayer(weights=np.array(ly["weights"], np.int64),
                                mask=np.array(ly["mask"], bool), bias=np.array(ly["bias"], np.int64),
                                activation=ly["activation"], in_bits=int(ly["in_bits"]),
                                weight_bits=int(ly["weight_bits"]),
                                weight_frac=np.array(ly["weight_frac"], np.int64),
                                acc_bits=int(ly["acc_bits"]), shift=np.array(ly["shift"], np.int64),
                                out_bits=int(ly["out_bits"])) for ly in d["layers"])
        inp = d["input"]
        return IntNet(kind, inp["kind"], int(inp["layer"]), np.array(inp["index"], np.int64), layers)


# ---- choosing formats --------------------------------------------------------------------
def acc_range(weights: np.ndarray, bias: np.ndarray, in_bits: int) -> tuple[int, int]:
    """Worst-case accumulator range of an integer layer over every unsigned input code
    (zero included): what its accumulator width must hold."""
    top = (1 << in_bits) - 1
    w = np.asarray(weights, np.int64)
    b = np.asarray(bias, np.int64)
    if w.size == 0:
        return int(min(b.min(initial=0), 0)), int(max(b.max(initial=0), 0))
    hi = (np.clip(w, 0, None).sum(axis=1) * top + b).max()
    lo = (np.clip(w, None, 0).sum(axis=1) * top + b).min()
    return int(min(lo, 0)), int(max(hi, 0))


def signed_bits(lo: int, hi: int) -> int:
    """Smallest two's-complement width holding every integer in [lo, hi]."""
    n = 1
    while not (-(1 << (n - 1)) <= lo and hi <= (1 << (n - 1)) - 1):
        n += 1
    return n


def _check_activations(c: Crystal, first: int) -> None:
    for li in range(first, len(c.layers) + 1):
        act = c.layers[li - 1].activation
        want = "linear" if li == len(c.layers) else "relu"
        if act != want:
            role = "readout" if li == len(c.layers) else "hidden"
            raise FixedPointError(
                f"crystal layer {li}: activation {act!r} is not supported by the fixed-point "
                f"stage for a {role} layer (supported: {want!r}); retrain with {want!r}")


def requant_shift(top: int, out_bits: int) -> int:
    """Smallest right shift that brings accumulator value `top` into unsigned `out_bits`
    after rounding half up (the half-step the bias carries): (top + 2**(s-1)) >> s."""
    s = 0
    while ((top + ((1 << s) >> 1)) >> s) > (1 << out_bits) - 1:
        s += 1
    return s


def quantize_layer(W: np.ndarray, mask: np.ndarray, b: np.ndarray, lsb: np.ndarray,
                   offset: np.ndarray, activation: str,
                   weight_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Float weights reading codes (value = offset + code * lsb) -> (W_int, bias_int, frac).

    A hidden neuron gets its own power-of-two scale (its requantizing shift absorbs it
    and the next layer's weights fold it in: no hardware cost); the readout shares one
    scale so that its logits compare.
    """
    w_eff = W.astype(np.float64) * lsb[None, :]
    wmax = (1 << (weight_bits - 1)) - 1
    b_val = b.astype(np.float64) + W.astype(np.float64) @ offset
    if activation == "relu":
        top = np.abs(w_eff).max(axis=1) if w_eff.size else np.zeros(W.shape[0])
        # A row with no weight outputs the constant relu(bias): scale it by its bias, or
        # (always 0) by the finest scale of the layer. Scale 1 would make its code step one
        # model unit, and the next layer, which folds that step into its weights, would
        # pick a coarse shared (readout) scale because of it.
        top = np.where(top > 0, top, np.abs(b_val))
    else:
        top = np.full(W.shape[0], np.abs(w_eff).max() if w_eff.size else 0.0)
    frac = [math.floor(math.log2(wmax / t)) if t > 0 else None for t in top]
    finest = max((f for f in frac if f is not None), default=0)
    frac = np.array([finest if f is None else f for f in frac], np.int64)
    scale = 2.0 ** frac.astype(np.float64)
    w_int = np.rint(w_eff * scale[:, None]).astype(np.int64) * mask
    b_int = np.rint(b_val * scale).astype(np.int64)
    return w_int, b_int, frac


def _build(c: Crystal, kind: str, first_layer: int, input_kind: str, index: np.ndarray,
           lsb: np.ndarray, offset: np.ndarray, in_bits: int, weight_bits: int,
           act_bits: int, calib_codes: np.ndarray, max_acc_bits: int,
           masks: list[np.ndarray] | None = None) -> IntNet:
    """`masks` (one per crystal layer, from `prune_masks`) replace the crystal's masks."""
    layers = []
    h_cal = calib_codes
    for li in range(first_layer, len(c.layers) + 1):
        cl = c.layers[li - 1]
        W, mask = cl.weights, (cl.mask if masks is None else masks[li - 1])
        W = W * mask
        if li == first_layer:
            W, mask = W[:, index], mask[:, index]
        where = f"{kind} layer {li}"
        w_int, b_int, frac = quantize_layer(W, mask, cl.bias, lsb, offset, cl.activation,
                                            weight_bits)
        if cl.activation == "relu":
            # Largest accumulator on the training inputs decides the shift; the rounding
            # half-step goes into the bias, so requantizing is a bare shift + clip.
            acc_cal = h_cal @ w_int.T + b_int
            shift = np.array([requant_shift(int(max(acc_cal[:, j].max(initial=0), 0)), act_bits)
                              for j in range(cl.n_out)], np.int64)
            b_int = b_int + ((1 << shift) >> 1)
            out_bits = act_bits
        else:
            shift = np.zeros(cl.n_out, np.int64)
        lo, hi = acc_range(w_int, b_int, in_bits)
        acc_bits = signed_bits(lo, hi)
        if acc_bits > max_acc_bits:
            raise FixedPointError(
                f"{where}: the accumulator needs {acc_bits} bits (range {lo}..{hi}), over "
                f"fixed_point.max_acc_bits {max_acc_bits}; lower the weight or input widths "
                "or raise max_acc_bits")
        if cl.activation != "relu":
            out_bits = acc_bits
        layer = IntLayer(w_int, mask.copy(), b_int, cl.activation, in_bits, weight_bits, frac,
                         acc_bits, shift, out_bits)
        layers.append(layer)
        _, h_cal = layer.forward(h_cal)
        # The next layer reads this layer's codes: value = code * 2**(shift - frac).
        lsb = 2.0 ** (shift - frac).astype(np.float64)
        offset = np.zeros(cl.n_out)
        in_bits = out_bits
    return IntNet(kind, input_kind, first_layer - 1, index, tuple(layers))


def frontier_start(c: Crystal) -> int:
    """The first crystal layer (1-based) of the digital frontier: the first layer holding a
    frontier neuron (the readout always does). Refuses a partition the frontier cannot
    take: a layer from there on that is part core, part frontier (the frontier would read
    core outputs of two layers, or compute neurons the core computes)."""
    part = c.partition
    L = len(c.layers)
    first = next(li for li, f in enumerate(part.frontier, start=1) if f.any())
    for li in range(first, L + 1):
        n_core = int(part.core[li - 1].sum())
        if n_core:
            n_front = c.layers[li - 1].n_out - n_core
            raise FixedPointError(
                f"crystal layer {li} is part core ({n_core} frozen neuron(s)), part frontier "
                f"({n_front} unfrozen); the digital frontier supports whole trailing layers "
                "only (every layer from its first on wholly unfrozen, every layer below wholly "
                "frozen, so that it reads the ADC codes of one core layer); train until layer "
                f"{li} freezes wholly, keep it wholly active with freeze.max_layer {li - 1}, or "
                "use the all-digital net")
    return first


def config_stamp(fp, adc_bits: int) -> dict:
    """The config a fixed-point artifact depends on (a change makes it stale)."""
    return {"fixed_point": dict(fp), "adc_bits": int(adc_bits)}


def quantize(c: Crystal, fp, adc_bits: int) -> dict:
    """Choose every format from the calibration inputs; return the fixed-point artifact
    (a dict: formats and integer arrays, stamped with the Crystal's digest and the config).

    `fp` is the validated `fixed_point` config section.
    """
    nets = {}
    cal_x = c.reference.calibration_x
    # Frontier: its layers from the first holding a frontier neuron on, reading the ADC
    # codes of the boundary neurons of the layer below (or the raw inputs: no core).
    _check_activations(c, 1)
    first = frontier_start(c)
    adc = adc_mod.adc_for(c, adc_bits)
    if first >= 2:
        b = first - 2  # 0-based index of the core layer the frontier reads
        idx = np.flatnonzero(c.partition.boundary[b])
        cal_codes = adc.codes(c.forward(cal_x)[b], b)[:, idx]
        nets["frontier"] = _build(c, "frontier", first, "adc_codes", idx, adc.lsb(b)[idx],
                                  np.zeros(len(idx)), adc_bits, fp.weight_bits, adc_bits,
                                  cal_codes, fp.max_acc_bits)
    else:
        idx = np.arange(c.input.size)
        nets["frontier"] = _build(c, "frontier", 1, "input_codes", idx,
                                  np.full(len(idx), adc.input_lsb()), np.full(len(idx), adc.input_low),
                                  adc_bits, fp.weight_bits, adc_bits,
                                  adc.input_codes(cal_x), fp.max_acc_bits)
    # All-digital: the whole net from the raw inputs; faithful, and small (pruned, narrow).
    idx = np.arange(c.input.size)
    for kind, ib, wb, ab, masks in (
            ("all_digital", fp.digital_input_bits, fp.digital_weight_bits,
             fp.digital_activation_bits, None),
            ("all_digital_small", fp.small_input_bits, fp.small_weight_bits,
             fp.small_activation_bits, prune_masks(c, fp.small_keep))):
        dadc = adc_mod.adc_for(c, ib)
        nets[kind] = _build(c, kind, 1, "input_codes", idx, np.full(len(idx), dadc.input_lsb()),
                            np.full(len(idx), dadc.input_low), ib, wb, ab,
                            dadc.input_codes(cal_x), fp.max_acc_bits, masks)
    out = {"version": FIXED_POINT_VERSION, "crystal": {"name": c.name,
                                                       "digest": crystal_mod.digest(c)},
           "config": config_stamp(fp, adc_bits), "adc_bits": adc_bits,
           "nets": {k: n.to_dict() for k, n in nets.items()}}
    validate_formats(out, c)
    return out


def prune_masks(c: Crystal, keep: float) -> list[np.ndarray]:
    """Masks of the small all-digital net, from the calibration (training) inputs only.

    Connections out of a hidden neuron that never fires on them go (it reads as 0 there);
    then, per layer, the `keep` fraction of the remaining connections with the largest
    |weight| x RMS of the value it reads. A hidden neuron left with no reader is dropped
    by the serial RTL (no program steps, no buffer).
    """
    outs = c.forward(c.reference.calibration_x)
    ins = [c.reference.calibration_x] + list(outs[:-1])
    masks = [cl.mask.copy() for cl in c.layers]
    for li in range(len(masks) - 1):  # dead hidden neurons: no inputs, no readers
        dead = outs[li].max(axis=0) <= 0
        masks[li][dead] = False
        masks[li + 1][:, dead] = False
    for li, (cl, m) in enumerate(zip(c.layers, masks)):
        score = np.abs(cl.weights) * np.sqrt((ins[li].astype(np.float64) ** 2).mean(axis=0))[None, :]
        n_keep = int(round(keep * m.sum()))
        if 0 < n_keep < m.sum():
            order = np.argsort(-score[m], kind="stable")  # stable: ties stay deterministic
            kept = np.zeros(int(m.sum()), bool)
            kept[order[:n_keep]] = True
            m[m] = kept
    for li in range(len(masks) - 2, -1, -1):  # a neuron nobody reads any more goes too
        masks[li][~masks[li + 1].any(axis=0)] = False
    return masks


# ---- loading new weights into a loadable design --------------------------------------------
def neuron_acc_bits(weights: np.ndarray, bias: np.ndarray, in_bits: int) -> np.ndarray:
    """Per neuron: the accumulator width its worst case over every unsigned input code
    (zero included) needs, for integer weights (n_out, n_in) and biases (n_out,)."""
    top = (1 << in_bits) - 1
    w = np.asarray(weights, np.int64)
    b = np.asarray(bias, np.int64)
    hi = np.clip(w, 0, None).sum(axis=1) * top + b
    lo = np.clip(w, None, 0).sum(axis=1) * top + b
    return np.array([signed_bits(min(int(a), 0), max(int(z), 0)) for a, z in zip(lo, hi)],
                    np.int64)


def _as_int_array(v, shape: tuple, where: str, what: str) -> np.ndarray:
    a = np.asarray(v)
    if a.shape != shape:
        raise FixedPointError(f"{where}: {what} of shape {a.shape}; the design's are {shape}")
    if not np.issubdtype(a.dtype, np.integer):
        raise FixedPointError(f"{where}: {what} are {a.dtype}, not integers; quantize them to "
                              "the design's formats first (an integer array)")
    return a.astype(np.int64)


def loadable_update(net: IntNet, weights=None, biases=None) -> IntNet:
    """The net a loadable design of `net` computes once new integer `weights` and `biases`
    are written (one entry per layer of `net`, None = unchanged), checked on the host
    before anything is written. The design keeps every format of `net` (widths, scales,
    shifts): refused with a FixedPointError naming the layer (crystal numbering), the
    neuron and the bits needed vs available are a weight outside `weight_bits`, a non-zero
    weight where the design has no connection, and a neuron whose worst case over every
    input code does not fit the layer's `acc_bits` (the accumulator would wrap silently;
    the bias is checked with it, since the accumulator starts from it). Its golden outputs
    are `.forward`; `weights_digest` names it."""
    n = len(net.layers)
    ws = [None] * n if weights is None else list(weights)
    bs = [None] * n if biases is None else list(biases)
    for what, got in (("weights", ws), ("biases", bs)):
        if len(got) != n:
            raise FixedPointError(f"{net.kind}: {len(got)} layer(s) of {what} given, the net has "
                                  f"{n}; give one per layer (None keeps a layer's)")
    layers = []
    for i, (layer, w, b) in enumerate(zip(net.layers, ws, bs)):
        where = f"{net.kind} layer {net.input_layer + i + 1}"
        w = layer.weights if w is None else _as_int_array(w, layer.weights.shape, where, "weights")
        b = layer.bias if b is None else _as_int_array(b, layer.bias.shape, where, "biases")
        stray = np.argwhere((w != 0) & ~layer.mask)
        if len(stray):
            j, k = (int(v) for v in stray[0])
            raise FixedPointError(
                f"{where}, neuron {j}: weight {int(w[j, k])} from input {k}, where the design has "
                f"no connection ({len(stray)} such weight(s)); refused before writing anything: "
                "only present connections load, set the others to 0")
        lim = 1 << (layer.weight_bits - 1)
        wide = np.argwhere((w > lim - 1) | (w < -lim))
        if len(wide):
            j, k = (int(v) for v in wide[0])
            v = int(w[j, k])
            raise FixedPointError(
                f"{where}, neuron {j}: weight {v} from input {k} needs {signed_bits(v, v)} bits, "
                f"the design has weight_bits {layer.weight_bits} ({-lim}..{lim - 1}); refused "
                "before writing anything: scale the weights into that range")
        need = neuron_acc_bits(w, b, layer.in_bits)
        over = np.flatnonzero(need > layer.acc_bits)
        if len(over):
            j = int(over[np.argmax(need[over])])  # the worst one (the first of equals)
            lo, hi = acc_range(w[j:j + 1], b[j:j + 1], layer.in_bits)
            others = f" ({len(over) - 1} other neuron(s) too)" if len(over) > 1 else ""
            raise FixedPointError(
                f"{where}, neuron {j}: the worst case over every input code needs a "
                f"{int(need[j])}-bit accumulator (range {lo}..{hi}), the design has "
                f"{layer.acc_bits}{others}; refused before writing anything (it would wrap): "
                "scale the weights and bias down, or quantize and synthesize a design sized "
                "for them")
        layers.append(dataclasses.replace(layer, weights=w, bias=b))
    return dataclasses.replace(net, layers=tuple(layers))


def weights_digest(net: IntNet) -> str:
    """Which weights a loadable design computes with: a hash of the integer weights and
    biases of every layer (sha256 of the JSON text `[[weights, bias], ...]`, 16 hex
    digits). At configuration a design holds those of the net it was built from; after a
    load, those of the net `loadable_update` returned; a reset changes nothing (rtl/design.py).
    The host keeps the digest of what it last loaded and compares it to the one it means
    to run."""
    text = json.dumps([[ly.weights.tolist(), ly.bias.tolist()] for ly in net.layers])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ---- the artifact on disk -------------------------------------------------------------------
def _fail(where: str, msg: str):
    raise FixedPointError(f"{where}: {msg}")


def _validate_layer(c: Crystal, lay: dict, li: int, nxt: dict | None, lat: str) -> None:
    for key in LAYER_FIELDS:
        if key not in lay:
            _fail(lat, f"missing field {key!r}")
    readout = li == len(c.layers)
    want = "linear" if readout else "relu"
    if lay["activation"] != want or c.layers[li - 1].activation != want:
        _fail(lat, f"activation {lay['activation']!r} (crystal layer {li}: "
                   f"{c.layers[li - 1].activation!r}) is not supported in fixed point for "
                   f"a {'readout' if readout else 'hidden'} layer; only {want!r} is")
    for key in ("in_bits", "weight_bits", "acc_bits", "out_bits"):
        v = lay[key]
        if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_WIDTH:
            _fail(lat, f"{key} = {v!r} must be a whole number in 1..{MAX_WIDTH}")
    try:
        w = np.asarray(lay["weights"], dtype=np.int64)
        b = np.asarray(lay["bias"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        _fail(lat, f"weights or bias are not integer arrays ({e})")
    n_out = c.layers[li - 1].n_out
    if w.ndim != 2 or w.shape[0] != n_out or b.shape != (n_out,):
        _fail(lat, f"weights {w.shape} / bias {b.shape} do not match the {n_out} neurons "
                   f"of crystal layer {li}")
    lim = 1 << (lay["weight_bits"] - 1)
    if w.size and (w.max() > lim - 1 or w.min() < -lim):
        _fail(lat, f"a weight ({int(np.abs(w).max())}) overflows weight_bits {lay['weight_bits']}")
    lo, hi = acc_range(w, b, lay["in_bits"])
    alim = 1 << (lay["acc_bits"] - 1)
    if hi > alim - 1 or lo < -alim:
        _fail(lat, f"acc_bits {lay['acc_bits']} would overflow: the accumulator can reach "
                   f"{lo}..{hi}; re-run `crystalbench quantize` or lower the widths")
    if nxt is not None and nxt.get("in_bits") != lay["out_bits"]:
        _fail(lat, f"out_bits {lay['out_bits']} differs from the next layer's in_bits "
                   f"{nxt.get('in_bits')}")


def validate_formats(fp: dict, c: Crystal, where: str = "fixed point") -> None:
    """The formats are complete, belong to this Crystal's shape and can never overflow:
    refused here, before any synthesis, naming the field."""
    if not isinstance(fp, dict):
        _fail(where, f"must be a mapping, got {type(fp).__name__}")
    for key in ("version", "nets"):
        if key not in fp:
            _fail(where, f"missing field {key!r}; re-run `crystalbench quantize`")
    if fp["version"] != FIXED_POINT_VERSION:
        _fail(where, f"version {fp['version']} is not {FIXED_POINT_VERSION}; re-run "
                     "`crystalbench quantize` (or `synth`, which runs it)")
    for kind in ("frontier", "all_digital"):
        if kind not in fp["nets"]:
            _fail(where, f"missing field 'nets.{kind}'")
    for kind, net in fp["nets"].items():
        for key in ("input", "layers"):
            if key not in net:
                _fail(where, f"missing field 'nets.{kind}.{key}'")
        layers = net["layers"]
        first = len(c.layers) - len(layers) + 1
        if not layers or first < 1:
            _fail(where, f"nets.{kind}.layers has {len(layers)} layers; the crystal has "
                         f"{len(c.layers)}")
        for i, lay in enumerate(layers):
            _validate_layer(c, lay, first + i, layers[i + 1] if i + 1 < len(layers) else None,
                            f"{where}: nets.{kind}.layers[{i}]")


def nets_of(fp: dict) -> dict[str, IntNet]:
    return {k: IntNet.from_dict(k, d) for k, d in fp["nets"].items()}


def save(fp: dict, folder: str | Path) -> Path:
    path = Path(folder) / FILE_NAME
    atomic_write_json(path, fp)
    return path


def artifact_digest(fp: dict) -> str:
    """Content hash of a fixed-point artifact: synth's designs are stamped with it."""
    return hashlib.sha256(json.dumps(fp, sort_keys=True).encode()).hexdigest()[:16]


def load(folder: str | Path, c: Crystal, cfg=None) -> dict:
    """Read build/<exp>/fixed/fixed_point.json for Crystal `c`; refuse a missing, damaged
    or stale one (another Crystal, or, given `cfg`, other fixed_point/adc settings),
    saying what to run."""
    path = Path(folder) / FILE_NAME
    fix = "run `crystalbench synth` (or `crystalbench quantize`) with this config"
    if not path.exists():
        raise FixedPointError(f"{path}: not found; {fix}")
    try:
        fp = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise FixedPointError(f"{path}: not valid JSON ({e}); {fix}") from None
    made_from = (fp.get("crystal") or {}).get("digest") if isinstance(fp, dict) else None
    if made_from != crystal_mod.digest(c):
        raise FixedPointError(f"{path}: made from another Crystal (digest {made_from}, this one "
                              f"{crystal_mod.digest(c)}); it is stale: {fix}")
    if cfg is not None and fp.get("config") != config_stamp(cfg.fixed_point, cfg.adc.bits):
        raise FixedPointError(f"{path}: made with other fixed_point/adc settings than this "
                              f"config; it is stale: {fix}")
    validate_formats(fp, c, str(path))
    return fp


def input_codes(c: Crystal, net: IntNet, x: np.ndarray | None = None,
                core_outputs: np.ndarray | None = None) -> np.ndarray:
    """Integer input codes of `net` for model inputs x (default: the test split).

    Raw inputs go through the input converter at the net's input width; for the frontier
    the core outputs (default: the torch reference, what an ideal analog core produces)
    go through the shared ADC model, whose width is the frontier's input width.
    """
    if net.input_kind == "input_codes":
        xs = c.reference.x if x is None else x
        return adc_mod.adc_for(c, net.in_bits).input_codes(xs)[:, net.input_index]
    li = net.input_layer - 1
    if core_outputs is None:
        core_outputs = (c.reference.outputs[li] if x is None else c.forward(x)[li])
    return adc_mod.adc_for(c, net.in_bits).codes(core_outputs, li)[:, net.input_index]


def evaluate(c: Crystal, nets: dict[str, IntNet]) -> dict:
    """Golden model on the test split: accuracy and agreement with torch, per net."""
    torch_cls = c.reference.outputs[-1].argmax(1)
    y = c.reference.y
    res = {"float_test_accuracy": float((torch_cls == y).mean()), "vectors": int(len(y))}
    for k, net in nets.items():
        g = net.forward(input_codes(c, net))
        res[k] = {"fixed_point_test_accuracy": float((g["cls"] == y).mean()),
                  "class_agreement_with_torch": float((g["cls"] == torch_cls).mean())}
    return res


# ---- profiling plot ----------------------------------------------------------------------
def profile(c: Crystal, nets: dict[str, IntNet],
            path: str | Path) -> Path:  # pragma: no mutate block (a view, not a figure)
    """Per tensor: the range of values seen on the calibration inputs vs what the format holds.

    Plotted as bits of magnitude, log2(|value|), in integer units of each tensor: a box
    per tensor for what the training data produced, a bar for what the format can hold.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    cal = c.reference.calibration_x
    for k, net in nets.items():
        codes = input_codes(c, net, x=cal)
        g = net.forward(codes)
        rows.append((f"{k}: input codes", codes, net.in_bits - 0, False))
        for i, layer in enumerate(net.layers, start=1):
            li = net.input_layer + i  # the crystal's layer number
            rows.append((f"{k}: L{li} weights", layer.weights[layer.mask], layer.weight_bits - 1, True))
            rows.append((f"{k}: L{li} bias", layer.bias, layer.acc_bits - 1, True))
            rows.append((f"{k}: L{li} accumulator", g["acc"][i - 1], layer.acc_bits - 1, True))
            if layer.activation == "relu":
                rows.append((f"{k}: L{li} out codes", g["out"][i - 1], layer.out_bits, False))
    fig, ax = plt.subplots(figsize=(8, 0.38 * len(rows) + 1.2))
    data = [np.log2(np.abs(v[v != 0]).astype(np.float64).ravel() + 0.0) if np.any(v != 0)
            else np.zeros(1) for _, v, _, _ in rows]
    ax.boxplot(data, orientation="horizontal", whis=(0, 100), widths=0.5)
    for i, (_, _, bits, _signed) in enumerate(rows, start=1):
        ax.barh(i, bits, height=0.7, color="tab:green", alpha=0.2, zorder=0)
    ax.set_yticks(range(1, len(rows) + 1), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("log2 |value| (integer units); box: calibration data, shade: format's range")
    ax.set_title(f"{c.name}: fixed-point profile ({len(cal)} calibration inputs)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
