"""C99 source for a Crystal: the sparse net as it is, only the connections that exist.

Two numeric variants from one Crystal:

* `float_source`: float32, the Crystal's own weights and biases;
* `fixed_source`: one integer net of the fixed-point artifact (rtl/fixed.py: the same
  widths, weights, biases and shifts as the RTL), bit-exact with the golden model.

and two code styles, the same sums in the same order (each neuron: its bias, then its
connections in ascending input order; float32 products and sums rounded one at a time,
as written, so every style and batch size gives the same bits):

* `compact`: per layer, compressed sparse rows in `static const` arrays (START, IN, W, B)
  and one loop; the smallest object: what a microcontroller would hold;
* `unrolled`: per layer, the weights and biases in `static const` arrays (W, B) and one
  statement per connection, `acc += L1_W[57] * in[12];`, so no index loads and no
  branches; plus a LANES-sample version of each layer (the inner loop over samples
  vectorizes) that `logits`/`predict` use for every full group of LANES samples: the
  fast one on a desktop CPU.

Either way a reader can follow one neuron: its weights are introduced by `/* neuron j */`
in the arrays, and (unrolled) its statements by the same comment. Entry points, per
variant prefix P:

    void P_logits(size_t n, const in_t *x, logit_t *logits);   (n samples, row-major)
    void P_predict(size_t n, const in_t *x, int32_t *cls);     (first maximum)

No dependency beyond <stddef.h> and <stdint.h>; no allocation, no global state.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass

import numpy as np

from crystalbench import adc as adc_mod
from crystalbench import crystal as crystal_mod
from crystalbench.crystal import Crystal
from crystalbench.rtl.fixed import IntNet

from . import CBackendError

STYLES = ("compact", "unrolled")
LANES = 8  # samples per group in the unrolled style's batch path (8 float32: one AVX register)
PER_LINE = 8  # values per line of an array
WIDTH = 96  # comment lines wrap here
SIZEOF = {"float": 4, "int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8, "uint8_t": 1,
          "uint16_t": 2, "uint32_t": 4, "uint64_t": 8}
NUMPY_OF_C = {"float": "float32", "int8_t": "int8", "int16_t": "int16", "int32_t": "int32",
              "int64_t": "int64", "uint8_t": "uint8", "uint16_t": "uint16",
              "uint32_t": "uint32", "uint64_t": "uint64"}


@dataclass(frozen=True)
class CSource:
    """One variant's generated code and what a caller needs to call it."""

    variant: str  # 'f32', or the integer net's kind ('all_digital', ...)
    style: str  # one of STYLES
    prefix: str  # C symbol prefix
    stem: str  # file names: <stem>.c, <stem>.h
    c_text: str
    h_text: str
    in_type: str  # C type of one input value
    logit_type: str  # C type of one logit
    n_in: int
    n_classes: int
    connections: int
    table_bytes: int  # bytes of the static const arrays (weights, biases, indices, shifts)
    in_max: int | None = None  # integer variants: the largest input code (2**in_bits - 1)

    @property
    def in_dtype(self) -> str:
        return NUMPY_OF_C[self.in_type]

    @property
    def logit_dtype(self) -> str:
        return NUMPY_OF_C[self.logit_type]


# ---- C types of integer widths ---------------------------------------------------------------
def int_type(bits: int) -> str:
    """Narrowest C fixed-width signed type holding every two's-complement `bits`-bit value."""
    for width in (8, 16, 32, 64):
        if bits <= width:
            return f"int{width}_t"
    raise CBackendError(f"a {bits}-bit integer does not fit a C integer type (at most 64 bits); "
                        "lower the fixed_point widths and re-run `crystalbench quantize`")


def uint_type(bits: int) -> str:
    """Narrowest C fixed-width unsigned type holding every unsigned `bits`-bit value."""
    return "u" + int_type(bits)


def index_type(largest: int) -> str:
    """Narrowest unsigned type holding every index 0..largest."""
    return uint_type(max(int(largest), 1).bit_length())


def acc_type(acc_bits: int, max_shift: int) -> str:
    """Accumulator type: int32_t, or int64_t when `acc_bits` (or a right shift by
    `max_shift`, which C defines only below the width) needs it. Never narrower than 32
    bits: C computes in int anyway."""
    return "int32_t" if acc_bits <= 32 and max_shift < 32 else "int64_t"


# ---- number text -------------------------------------------------------------------------------
def c_float(v) -> str:
    """A float32 as C text that reads back as the same float32: numpy's shortest round-trip
    text of the float32 (it always has a '.' or an exponent) and the 'f' suffix."""
    return str(np.float32(v)) + "f"


def c_int(v, ctype: str) -> str:
    """An integer literal of `ctype`: a 64-bit value outside int's range gets INT64_C(), and
    the most negative one (which has no literal) INT64_MIN."""
    v = int(v)
    if ctype == "int64_t" and v == -(1 << 63):
        return "INT64_MIN"
    if ctype == "int64_t" and not -(1 << 31) <= v < (1 << 31):
        return f"INT64_C({v})"
    return str(v)


def _wrapped(paragraphs, lead: str = " * ") -> list[str]:
    """Comment text: each paragraph wrapped at WIDTH, every line behind `lead`."""
    return [lead + ln for p in paragraphs for ln in textwrap.wrap(p, WIDTH - len(lead),
                                                                   break_on_hyphens=False)]


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


# ---- one layer, both styles -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Layer:
    li: int  # 1-based, in the generated code
    reads: tuple[np.ndarray, ...]  # per neuron: the inputs it reads, ascending
    weights: tuple[tuple[str, ...], ...]  # per neuron: C text of each weight, same order
    bias: tuple[str, ...]
    n_in: int
    in_t: str
    w_t: str
    acc_t: str
    out_t: str
    product: str  # C text of one product, from {w} and {x}
    finish: str  # C text of a neuron's output, from {acc} and {j}
    about: tuple[str, ...]  # comment lines
    extra: tuple[str, ...] = ()  # further arrays (shifts)
    extra_bytes: int = 0  # their bytes
    helper: tuple[str, ...] = ()  # a helper function the finish calls

    @property
    def n_out(self) -> int:
        return len(self.reads)

    @property
    def connections(self) -> int:
        return sum(len(r) for r in self.reads)


def _grouped(values: list[str], indent: str = "    ") -> list[str]:
    return [indent + ", ".join(values[i:i + PER_LINE]) + ","
            for i in range(0, len(values), PER_LINE)]


def _array(name: str, ctype: str, values: list[str] | None = None,
           rows: list[list[str]] | None = None, what: str = "") -> list[str]:
    """A `static const` array, from flat `values` or from `rows` (one list per neuron, each
    introduced by `/* neuron j */`). An empty one holds one unused 0: C99 has no empty arrays."""
    flat = values if rows is None else [v for r in rows for v in r]
    head = f"static const {ctype} {name}[{max(len(flat), 1)}] = {{" + (f"  /* {what} */" if what else "")
    lines = [head]
    if not flat:
        lines.append("    0  /* none: unused */")
    elif rows is None:
        lines += _grouped(flat)
    else:
        for j, r in enumerate(rows):
            if not r:
                lines.append(f"    /* neuron {j}: no connections */")
                continue
            body = _grouped(r, "")
            lead = f"    /* neuron {j} */ "
            lines.append(lead + body[0])
            lines += [" " * len(lead) + ln for ln in body[1:]]
    return lines + ["};"]


def _arrays(ly: _Layer, style: str) -> tuple[list[str], int]:
    """The layer's arrays in `style` and their bytes (an empty array holds one element)."""
    li = ly.li
    lines: list[str] = []
    size = ly.extra_bytes
    if style == "compact":
        start = np.concatenate([[0], np.cumsum([len(r) for r in ly.reads])]).astype(np.int64)
        s_t, i_t = index_type(start[-1]), index_type(ly.n_in - 1)
        lines += _array(f"L{li}_START", s_t, [str(int(s)) for s in start],
                        what="neuron j: entries START[j] .. START[j + 1] - 1 of IN and W")
        lines += _array(f"L{li}_IN", i_t, rows=[[str(int(i)) for i in r] for r in ly.reads],
                        what="the input each connection reads")
        size += len(start) * SIZEOF[s_t] + max(ly.connections, 1) * SIZEOF[i_t]
    if style == "compact" or ly.connections:  # unrolled code names no weight of an empty layer
        lines += _array(f"L{li}_W", ly.w_t, rows=[list(w) for w in ly.weights],
                        what="the weight of each connection, neuron by neuron, inputs ascending")
        size += max(ly.connections, 1) * SIZEOF[ly.w_t]
    lines += _array(f"L{li}_B", ly.acc_t, list(ly.bias), what="the bias of each neuron")
    size += ly.n_out * SIZEOF[ly.acc_t]
    return lines + list(ly.extra), size


def _layer_compact(ly: _Layer) -> list[str]:
    li = ly.li
    mac = ly.product.format(w=f"L{li}_W[k]", x=f"in[L{li}_IN[k]]")
    return [f"static void layer{li}(const {ly.in_t} *in, {ly.out_t} *out)",
            "{",
            f"    for (int j = 0; j < {ly.n_out}; j++) {{",
            f"        {ly.acc_t} acc = L{li}_B[j];",
            f"        for (int k = L{li}_START[j]; k < L{li}_START[j + 1]; k++)",
            f"            acc += {mac};",
            f"        out[j] = {ly.finish.format(acc='acc', j='j')};",
            "    }",
            "}"]


def _layer_unrolled(ly: _Layer) -> list[str]:
    li = ly.li
    lines = [f"static void layer{li}(const {ly.in_t} *in, {ly.out_t} *out)", "{",
             f"    {ly.acc_t} acc;"]
    k = 0
    for j, reads in enumerate(ly.reads):
        lines += [f"    /* neuron {j}: {_plural(len(reads), 'connection')} */",
                  f"    acc = L{li}_B[{j}];"]
        for i in reads:
            lines.append(f"    acc += {ly.product.format(w=f'L{li}_W[{k}]', x=f'in[{int(i)}]')};")
            k += 1
        lines.append(f"    out[{j}] = {ly.finish.format(acc='acc', j=j)};")
    if not ly.connections:
        lines.append("    (void)in;  /* no connections: every output is its bias */")
    return lines + ["}"]


def _layer_lanes(ly: _Layer) -> list[str]:
    li = ly.li
    each = "for (int s = 0; s < LANES; s++)"
    lines = [f"/* Layer {li} for LANES samples at once: in[i * LANES + s] is input i of sample s, "
             f"out[j * LANES + s] neuron j's",
             f" * output for sample s. The same sums in the same order as layer{li}. */",
             f"static void layer{li}_lanes(const {ly.in_t} *in, {ly.out_t} *out)", "{",
             f"    {ly.acc_t} acc[LANES];"]
    k = 0
    for j, reads in enumerate(ly.reads):
        lines += [f"    /* neuron {j} */", f"    {each} acc[s] = L{li}_B[{j}];"]
        for i in reads:
            term = ly.product.format(w=f"L{li}_W[{k}]", x=f"in[{int(i)} * LANES + s]")
            lines.append(f"    {each} acc[s] += {term};")
            k += 1
        lines.append(f"    {each} out[{j} * LANES + s] = {ly.finish.format(acc='acc[s]', j=j)};")
    if not ly.connections:
        lines.append("    (void)in;  /* no connections: every output is its bias */")
    return lines + ["}"]


def _forward(sizes: list[int], types: list[str], lanes: bool) -> list[str]:
    """forward(): one sample through every layer; forward_lanes(): LANES samples, inputs
    and logits transposed to and from the lanes layout. Hidden values on the stack."""
    n_layers = len(sizes) - 1
    lines = ["/* One sample: inputs -> every layer -> logits. */",
             f"static void forward(const {types[0]} *x, {types[-1]} *logits)", "{"]
    lines += [f"    {types[li]} h{li}[{sizes[li]}];" for li in range(1, n_layers)]
    for li in range(1, n_layers + 1):
        src = "x" if li == 1 else f"h{li - 1}"
        lines.append(f"    layer{li}({src}, {'logits' if li == n_layers else f'h{li}'});")
    lines += ["}", ""]
    if not lanes:
        return lines
    n_in, n_cls = sizes[0], sizes[-1]
    lines += [f"/* LANES samples x[s * {n_in} + i] -> logits[s * {n_cls} + k]. */",
              f"static void forward_lanes(const {types[0]} *x, {types[-1]} *logits)", "{",
              f"    {types[0]} h0[{n_in} * LANES];"]
    lines += [f"    {types[li]} h{li}[{sizes[li]} * LANES];" for li in range(1, n_layers + 1)]
    lines += ["    for (int s = 0; s < LANES; s++)",
              f"        for (int i = 0; i < {n_in}; i++)",
              f"            h0[i * LANES + s] = x[s * {n_in} + i];"]
    lines += [f"    layer{li}_lanes(h{li - 1}, h{li});" for li in range(1, n_layers + 1)]
    lines += ["    for (int s = 0; s < LANES; s++)",
              f"        for (int k = 0; k < {n_cls}; k++)",
              f"            logits[s * {n_cls} + k] = h{n_layers}[k * LANES + s];",
              "}", ""]
    return lines


def _argmax(value_type: str) -> list[str]:
    return ["/* The class: the first maximum of the logits (as the golden model and torch). */",
            f"static int32_t first_max(const {value_type} *v, int n)",
            "{",
            "    int32_t best = 0;",
            "    for (int k = 1; k < n; k++)",
            "        if (v[k] > v[best])",
            "            best = k;",
            "    return best;",
            "}", ""]


def _entry_points(prefix: str, in_t: str, logit_t: str, n_in: int, n_cls: int,
                  lanes: bool) -> list[str]:
    group = "LANES" if lanes else "1"
    lines = [f"void {prefix}_logits(size_t n, const {in_t} *x, {logit_t} *logits)", "{",
             "    size_t s = 0;"]
    if lanes:
        lines += ["    for (; s + LANES <= n; s += LANES)",
                  f"        forward_lanes(x + s * {n_in}, logits + s * {n_cls});"]
    lines += ["    for (; s < n; s++)",
              f"        forward(x + s * {n_in}, logits + s * {n_cls});",
              "}", "",
              f"void {prefix}_predict(size_t n, const {in_t} *x, int32_t *cls)", "{",
              f"    {logit_t} logits[{group} * {n_cls}];",
              "    size_t s = 0;"]
    if lanes:
        lines += ["    for (; s + LANES <= n; s += LANES) {",
                  f"        forward_lanes(x + s * {n_in}, logits);",
                  "        for (int t = 0; t < LANES; t++)",
                  f"            cls[s + t] = first_max(logits + t * {n_cls}, {n_cls});",
                  "    }"]
    lines += ["    for (; s < n; s++) {",
              f"        forward(x + s * {n_in}, logits);",
              f"        cls[s] = first_max(logits, {n_cls});",
              "    }",
              "}"]
    return lines


def _header(prefix: str, stem: str, about: list[str], in_t: str, logit_t: str,
            n_in: int, n_cls: int) -> str:
    guard = prefix.upper() + "_H"
    lines = [f"/* {stem}.h: generated by crystalbench (`crystalbench compile-c`); do not edit, "
             "re-run it.", " *"]
    lines += _wrapped(about)
    lines += [" */", f"#ifndef {guard}", f"#define {guard}", "", "#include <stddef.h>",
              "#include <stdint.h>", "",
              f"#define {prefix.upper()}_INPUTS {n_in}",
              f"#define {prefix.upper()}_CLASSES {n_cls}", "",
              f"/* For n samples x[s * {n_in} + i]: logits[s * {n_cls} + k]. */",
              f"void {prefix}_logits(size_t n, const {in_t} *x, {logit_t} *logits);", "",
              "/* For n samples: cls[s], the class of sample s (the first maximum of its logits). */",
              f"void {prefix}_predict(size_t n, const {in_t} *x, int32_t *cls);", "",
              f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def _style_line(style: str) -> str:
    if style == "compact":
        return ("Style: compact (each layer's connections as compressed sparse rows, one loop; "
                "the smallest object).")
    return (f"Style: unrolled (one statement per connection; groups of {LANES} samples take a "
            "lanes path with the same sums in the same order).")


def _source(variant: str, style: str, prefix: str, stem: str, about: list[str],
            layers: list[_Layer], sizes: list[int], types: list[str],
            in_max: int | None) -> CSource:
    if style not in STYLES:
        raise CBackendError(f"C style {style!r} is not one of {list(STYLES)}")
    lanes = style == "unrolled"
    about = about + [_style_line(style)]
    body = [f"/* {stem}.c: generated by crystalbench (`crystalbench compile-c`); do not edit. "
            f"See {stem}.h. */",
            f'#include "{stem}.h"', ""]
    if lanes:
        body += [f"#define LANES {LANES}", ""]
    helpers_done: set[tuple[str, ...]] = set()
    table_bytes = 0
    for ly in layers:
        if ly.helper and ly.helper not in helpers_done:
            body += list(ly.helper) + [""]
            helpers_done.add(ly.helper)
        text = _wrapped(ly.about)
        body += ["/*" + text[0][2:]] + text[1:] + [" */"]
        arrays, size = _arrays(ly, style)
        body += arrays + [""]
        table_bytes += size
        if lanes:
            body += _layer_unrolled(ly) + [""] + _layer_lanes(ly) + [""]
        else:
            body += _layer_compact(ly) + [""]
    body += _forward(sizes, types, lanes)
    body += _argmax(types[-1])
    body += _entry_points(prefix, types[0], types[-1], sizes[0], sizes[-1], lanes)
    return CSource(variant, style, prefix, stem, "\n".join(body) + "\n",
                   _header(prefix, stem, about, types[0], types[-1], sizes[0], sizes[-1]),
                   types[0], types[-1], sizes[0], sizes[-1], sum(ly.connections for ly in layers),
                   table_bytes, in_max)


def _reads(mask: np.ndarray) -> tuple[np.ndarray, ...]:
    return tuple(np.flatnonzero(row) for row in np.asarray(mask, bool))


def _shape(n_in: int, activations: list[str], widths: list[int]) -> str:
    return " -> ".join([f"{n_in} inputs"] + [
        f"{n} {'ReLU' if a == 'relu' else 'linear'}" for n, a in zip(widths, activations)]) \
        + " (the logits)"


# ---- float32 ---------------------------------------------------------------------------------
RELU_F32 = ("static inline float relu(float a)", "{", "    return a > 0.0f ? a : 0.0f;", "}")


def float_source(c: Crystal, style: str = "unrolled", prefix: str = "crystal_f32",
                 stem: str = "f32") -> CSource:
    """The Crystal in float32 C: every layer's weights and biases as stored."""
    layers = []
    for li, layer in enumerate(c.layers, start=1):
        relu = layer.activation == "relu"
        reads = _reads(layer.mask)
        src = "the inputs" if li == 1 else f"layer {li - 1}"
        total = "bias + sum of weight * input over its connections"
        layers.append(_Layer(
            li=li, reads=reads,
            weights=tuple(tuple(c_float(layer.weights[j, i]) for i in r) for j, r in enumerate(reads)),
            bias=tuple(c_float(b) for b in layer.bias), n_in=layer.n_in,
            in_t="float", w_t="float", acc_t="float", out_t="float",
            product="{w} * {x}", finish="relu({acc})" if relu else "{acc}",
            about=(f"Layer {li}: {layer.n_out} {'ReLU' if relu else 'linear'} neurons reading "
                   f"{src} ({_plural(sum(len(r) for r in reads), 'connection')}).",
                   f"Neuron j: out[j] = {f'max(0, {total})' if relu else total}."),
            helper=RELU_F32 if relu else ()))
    sizes = c.sizes
    about = [f"The Crystal {c.name!r} (digest {crystal_mod.digest(c)}) in float32 C99.",
             f"Net: {_shape(sizes[0], [ly.activation for ly in c.layers], sizes[1:])}; "
             f"{_plural(sum(ly.connections for ly in layers), 'connection')}, only those that exist.",
             f"Inputs: model units, x = (raw - {c.input.offset!r}) * {c.input.scale!r}, row-major "
             f"(n, {sizes[0]}).",
             "Each neuron: its bias, then each connection in ascending input order, every "
             "product and sum rounded to float32 as written."]
    return _source("f32", style, prefix, stem, about, layers, sizes, ["float"] * len(sizes), None)


# ---- fixed point -------------------------------------------------------------------------------
def _describe_inputs(c: Crystal, net: IntNet) -> str:
    top = (1 << net.in_bits) - 1
    if net.input_kind == "input_codes":
        a = adc_mod.adc_for(c, net.in_bits)
        return (f"Inputs: {net.in_bits}-bit input codes, code_i = min({top}, max(0, round((x_i - "
                f"{a.input_low!r}) / {a.input_lsb()!r}))) for x in model units, rounded half to "
                "even (crystalbench.adc.AdcModel.input_codes), row-major "
                f"(n, {net.n_in}).")
    idx = ", ".join(str(int(i)) for i in net.input_index)
    return (f"Inputs: {net.in_bits}-bit ADC codes (0..{top}) of neurons {idx} of crystal layer "
            f"{net.input_layer} (crystalbench.adc.AdcModel.codes), row-major (n, {net.n_in}).")


def _requant_helper(name: str, acc_t: str, out_t: str, top: int) -> tuple[str, ...]:
    return (f"/* ReLU, then requantize: the code is min({top}, max(0, acc) >> shift). */",
            f"static inline {out_t} {name}({acc_t} acc, int shift)", "{",
            f"    {acc_t} code = acc > 0 ? acc >> shift : 0;",
            f"    return ({out_t})(code < {top} ? code : {top});", "}")


def fixed_source(c: Crystal, net: IntNet, fixed_digest: str, style: str = "compact",
                 prefix: str | None = None, stem: str | None = None) -> CSource:
    """One integer net of the fixed-point artifact (`fixed_digest`: the artifact's) in C: the
    same integer weights, biases, shifts and widths as the golden model and the RTL."""
    prefix = prefix or f"crystal_{net.kind}"
    stem = stem or net.kind
    first = net.input_layer + 1  # the crystal's number of the net's first layer
    layers, types = [], [uint_type(net.in_bits)]
    for i, layer in enumerate(net.layers):
        li = i + 1
        relu = layer.activation == "relu"
        acc_t = acc_type(layer.acc_bits, int(layer.shift.max(initial=0)))
        in_t = types[-1]
        top = (1 << layer.out_bits) - 1
        out_t = uint_type(layer.out_bits) if relu else acc_t
        reads = _reads(layer.mask)
        w_t = int_type(layer.weight_bits)
        src = "the inputs" if li == 1 else f"layer {li - 1}"
        about = [f"Layer {li} (crystal layer {first + i}): {layer.n_out} "
                 f"{'ReLU' if relu else 'linear'} neurons reading {src} "
                 f"({_plural(sum(len(r) for r in reads), 'connection')}); {layer.in_bits}-bit "
                 f"inputs, {layer.weight_bits}-bit weights, {layer.acc_bits}-bit accumulator.",
                 "Neuron j: acc = bias + sum of weight * input over its connections;"]
        if relu:
            helper_name = f"code{layer.out_bits}_{acc_t[:-2]}"
            about.append(f"its {layer.out_bits}-bit output code is min({top}, max(0, acc) >> "
                         f"L{li}_SHIFT[j]) (ReLU, then requantize; the bias holds the rounding "
                         "half step).")
            extra = tuple(_array(f"L{li}_SHIFT", "uint8_t", [str(int(s)) for s in layer.shift],
                                 what="the requantizing right shift of each neuron"))
            finish = f"{helper_name}({{acc}}, L{li}_SHIFT[{{j}}])"
            helper = _requant_helper(helper_name, acc_t, out_t, top)
        else:
            about.append("acc is the logit.")
            extra, finish, helper = (), "{acc}", ()
        layers.append(_Layer(
            li=li, reads=reads,
            weights=tuple(tuple(c_int(layer.weights[j, k], w_t) for k in r)
                          for j, r in enumerate(reads)),
            bias=tuple(c_int(b, acc_t) for b in layer.bias), n_in=layer.n_in,
            in_t=in_t, w_t=w_t, acc_t=acc_t, out_t=out_t,
            product=f"({acc_t}){{w}} * ({acc_t}){{x}}", finish=finish, about=tuple(about),
            extra=extra, extra_bytes=layer.n_out if relu else 0, helper=helper))
        types.append(out_t)
    sizes = [net.n_in] + [layer.n_out for layer in net.layers]
    about = [f"The integer net {net.kind!r} of the Crystal {c.name!r} (digest "
             f"{crystal_mod.digest(c)}), fixed-point artifact {fixed_digest}, in C99.",
             f"Net: {_shape(net.n_in, [ly.activation for ly in net.layers], sizes[1:])}; "
             f"{_plural(sum(ly.connections for ly in layers), 'connection')}, only those that exist.",
             _describe_inputs(c, net),
             f"Logits: the readout's {net.logit_bits}-bit accumulator; bit-exact with the golden "
             "model (crystalbench.rtl.fixed.IntNet.forward) and the RTL."]
    return _source(net.kind, style, prefix, stem, about, layers, sizes, types,
                   (1 << net.in_bits) - 1)


# ---- for the benchmark: batch-1 calls made from C -------------------------------------------------
def each_source(src: CSource) -> tuple[str, str]:
    """(stem, C text) of `<prefix>_each(n, x, logits)`: `<prefix>_logits` called once per
    sample from a C loop, from another file (no inlining: what a C caller pays per call).
    The benchmark's batch-1 latency without Python in between; not part of the variant."""
    stem = f"{src.stem}_each"
    text = "\n".join([
        f"/* {stem}.c: generated by crystalbench for the benchmark (batch-1 calls from C). */",
        f'#include "{src.stem}.h"', "",
        f"void {src.prefix}_each(size_t n, const {src.in_type} *x, {src.logit_type} *logits);", "",
        f"void {src.prefix}_each(size_t n, const {src.in_type} *x, {src.logit_type} *logits)", "{",
        "    for (size_t s = 0; s < n; s++)",
        f"        {src.prefix}_logits(1, x + s * {src.n_in}, logits + s * {src.n_classes});",
        "}", ""])
    return stem, text
