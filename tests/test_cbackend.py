"""The C backend (cbackend/): generated C99 for the Crystal, compiled with the system C
compiler through the tool runner, called through ctypes.

Tolerances, as the issue states them: float32 C within 1e-5 relative (per sample, of its
largest reference logit) of the Crystal's torch reference and class agreement 1.0, and
bit-exact against an independent float32 model of the order the C sums in; every
integer net bit-exact with the golden model (rtl/fixed.py). No timed assertions: the
benchmark is checked for its arithmetic on a scripted clock and for its shape."""

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench import crystal as crystal_mod
from crystalbench.cbackend import CBackendError, bench, build, emit, flow
from crystalbench.cli import main
from crystalbench.errors import CrystalbenchError, ToolFailed, ToolNotFound
from crystalbench.results import Paths
from crystalbench.rtl import fixed
from crystalbench.rtl.fixed import IntLayer, IntNet
from tests.hw_tiny import quantized, quantized_deep, tiny_crystal

ROOT = Path(__file__).resolve().parents[1]


def cfg():
    return cfgmod.validate({"experiment": "tiny"}, "<t>")


def sequential_f32(c, x):
    """An independent model of the C float32 order: per neuron its bias, then every
    connection in ascending input order, each product and each sum rounded to float32."""
    h = np.asarray(x, np.float32)
    for layer in c.layers:
        out = np.zeros((len(h), layer.n_out), np.float32)
        for s in range(len(h)):
            for j in range(layer.n_out):
                acc = np.float32(layer.bias[j])
                for i in np.flatnonzero(layer.mask[j]):
                    acc = np.float32(acc + np.float32(layer.weights[j, i] * h[s, i]))
                out[s, j] = max(acc, np.float32(0)) if layer.activation == "relu" else acc
        h = out
    return h


@pytest.fixture(scope="module")
def tiny_builds(tmp_path_factory):
    """Every variant of the tiny crystals in both styles, compiled once."""
    folder = tmp_path_factory.mktemp("c")
    out = {}
    c, fp = quantized()
    cd, fpd = quantized_deep()
    for name, (cr, art) in {"tiny": (c, fp), "deep": (cd, fpd)}.items():
        for style in emit.STYLES:
            src = emit.float_source(cr, style, stem=f"{name}_f32_{style}")
            out[name, "f32", style] = (cr, None, build.CNet(build.compile_variant(src, folder).library,
                                                            src))
            for kind, net in fixed.nets_of(art).items():
                src = emit.fixed_source(cr, net, fixed.artifact_digest(art), style,
                                        stem=f"{name}_{kind}_{style}")
                b = build.compile_variant(src, folder)
                out[name, kind, style] = (cr, net, build.CNet(b.library, src))
                assert b.warnings == 0, b.logs
    return out


# ---- float32 -------------------------------------------------------------------------------------
@pytest.mark.parametrize("style", emit.STYLES)
@pytest.mark.parametrize("name", ["tiny", "deep"])
def test_float32_c_matches_torch_and_the_float32_order_it_states(tiny_builds, name, style):
    c, _, net = tiny_builds[name, "f32", style]
    x = c.reference.x
    ref = c.reference.outputs[-1]
    got = net.logits(x)
    scale = np.abs(ref).max(axis=1, keepdims=True)
    assert np.all(np.abs(got - ref) <= 1e-5 * scale)  # the tolerance
    assert np.array_equal(net.predict(x), ref.argmax(axis=1))  # class agreement 1.0
    assert np.array_equal(got, sequential_f32(c, x))  # bit for bit: the order it states


def test_float32_styles_batch_paths_and_sample_counts_give_the_same_bits(tiny_builds):
    c, _, unrolled = tiny_builds["tiny", "f32", "unrolled"]
    _, _, compact = tiny_builds["tiny", "f32", "compact"]
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2 * emit.LANES + 3, 8)).astype(np.float32)  # two lane groups + 3 alone
    whole = unrolled.logits(x)
    one_by_one = np.concatenate([unrolled.logits(x[i:i + 1]) for i in range(len(x))])
    assert np.array_equal(whole, one_by_one)
    assert np.array_equal(whole, compact.logits(x))
    assert np.array_equal(whole, sequential_f32(c, x))
    assert np.array_equal(unrolled.predict(x), whole.argmax(axis=1))
    assert unrolled.logits(x[:0]).shape == (0, 3)


# ---- fixed point ---------------------------------------------------------------------------------
@pytest.mark.parametrize("style", emit.STYLES)
@pytest.mark.parametrize("kind", ["frontier", "all_digital", "all_digital_small"])
@pytest.mark.parametrize("name", ["tiny", "deep"])
def test_integer_c_is_bit_exact_with_the_golden_model(tiny_builds, name, kind, style):
    c, net, cnet = tiny_builds[name, kind, style]
    codes = fixed.input_codes(c, net)  # every test vector
    top = (1 << net.in_bits) - 1
    rng = np.random.default_rng(1)
    edges = np.vstack([np.zeros(net.n_in), np.full(net.n_in, top),  # the range's ends,
                       rng.integers(0, top + 1, (2 * emit.LANES + 5, net.n_in))]).astype(np.int64)
    for x in (codes, edges):  # ... where the clip and the ReLU bite
        gold = net.forward(x)
        assert np.array_equal(cnet.logits(x), gold["logits"])
        assert np.array_equal(cnet.predict(x), gold["cls"])


def hand_net(weights, bias, weight_bits, in_bits, acc_bits, layers_before=()):
    """An integer net by hand: `layers_before`, then a readout (absent where the weight is 0)."""
    w = np.array(weights, np.int64)
    last = IntLayer(weights=w, mask=w != 0, bias=np.array(bias, np.int64), activation="linear",
                    in_bits=in_bits, weight_bits=weight_bits,
                    weight_frac=np.zeros(1, np.int64), acc_bits=acc_bits,
                    shift=np.zeros(len(w), np.int64), out_bits=acc_bits)
    layers = (*layers_before, last)
    return IntNet("hand", "adc_codes", 1, np.arange(layers[0].n_in), layers)


def compile_hand(net, tmp_path, style="compact"):
    src = emit.fixed_source(tiny_crystal(), net, "hand", style)
    return src, build.CNet(build.compile_variant(src, tmp_path).library, src)


def test_ties_go_to_the_first_maximum(tmp_path):
    net = hand_net([[0, 0], [1, 0], [1, 0]], [0, 0, 0], 4, 2, 8)
    src, cnet = compile_hand(net, tmp_path)
    x = np.array([[1, 0],   # logits 0, 1, 1: class 1, not 2
                  [0, 3],   # 0, 0, 0: class 0
                  [3, 3]])  # 0, 3, 3: class 1
    assert cnet.logits(x).tolist() == [[0, 1, 1], [0, 0, 0], [0, 3, 3]]
    assert cnet.predict(x).tolist() == [1, 0, 1]
    assert src.logit_type == "int32_t" and src.in_type == "uint8_t"


def test_wide_accumulators_are_64_bit_with_64_bit_literals(tmp_path):
    # 4 inputs of 16 bits, weights of 20 bits: 4 * (2**19 - 1) * (2**16 - 1) > 2**31
    w = (1 << 19) - 1
    big = 3 << 32  # a bias that needs INT64_C
    net = hand_net([[w, w, w, w], [-w, 0, 0, -w]], [big, -big], 20, 16, 40)
    src, cnet = compile_hand(net, tmp_path, "unrolled")
    assert src.logit_type == "int64_t" and src.in_type == "uint16_t"
    assert f"INT64_C({big})" in src.c_text and "static const int32_t L1_W" in src.c_text
    top = (1 << 16) - 1
    x = np.array([[top] * 4, [0] * 4, [1, 2, 3, 4]])
    expect = [[4 * w * top + big, -2 * w * top - big], [big, -big],
              [10 * w + big, -5 * w - big]]
    assert cnet.logits(x).tolist() == expect
    assert cnet.predict(x).tolist() == [0, 0, 0]


def test_requantize_clips_at_the_top_code_and_at_zero(tmp_path):
    # hidden: out = min(3, max(0, acc) >> 1) with 2-bit codes; readout copies it
    hidden = IntLayer(weights=np.array([[1], [-1]], np.int64), mask=np.ones((2, 1), bool),
                      bias=np.array([0, 0], np.int64), activation="relu", in_bits=4,
                      weight_bits=2, weight_frac=np.zeros(2, np.int64), acc_bits=6,
                      shift=np.array([1, 1], np.int64), out_bits=2)
    net = hand_net([[1, 0], [0, 1]], [0, 0], 2, 2, 4, (hidden,))
    _, cnet = compile_hand(net, tmp_path)
    x = np.array([[0], [1], [2], [7], [15]])
    # acc 0,1,2,7,15 -> >>1: 0,0,1,3,7 -> clip 3; the negated neuron stays 0
    assert cnet.logits(x).tolist() == [[0, 0], [0, 0], [1, 0], [3, 0], [3, 0]]
    assert np.array_equal(cnet.logits(x), net.forward(x)["logits"])


# ---- the generated text ---------------------------------------------------------------------------
def test_one_neuron_can_be_followed_in_the_text():
    c = tiny_crystal()
    layer = c.layers[0]
    reads = np.flatnonzero(layer.mask[1])
    first = int(layer.mask[0].sum())  # neuron 1's first weight is entry `first` of L1_W
    src = emit.float_source(c, "unrolled")
    body = src.c_text
    block = body[body.index("    /* neuron 1: "):body.index("    out[1] = relu(acc);")]
    assert f"/* neuron 1: {len(reads)} connections */" in block
    assert f"    acc = L1_B[1];\n    acc += L1_W[{first}] * in[{reads[0]}];\n" in block
    assert block.count("acc += ") == len(reads)
    w_row = re.search(r"/\* neuron 1 \*/ ([^\n]*)", body[body.index("L1_W["):]).group(1)
    assert w_row.split(", ")[0] == emit.c_float(layer.weights[1, reads[0]])
    compact = emit.float_source(c, "compact").c_text
    in_row = re.search(r"/\* neuron 1 \*/ ([^\n]*)", compact[compact.index("L1_IN["):]).group(1)
    assert [int(v) for v in in_row.rstrip(",").split(", ")] == reads[:emit.PER_LINE].tolist()


def test_header_states_the_net_and_the_entry_points():
    c, fp = quantized()
    net = fixed.nets_of(fp)["all_digital"]
    h = emit.fixed_source(c, net, "abc123").h_text
    assert "void crystal_all_digital_logits(size_t n, const uint8_t *x, int32_t *logits);" in h
    assert "void crystal_all_digital_predict(size_t n, const uint8_t *x, int32_t *cls);" in h
    assert "#define CRYSTAL_ALL_DIGITAL_INPUTS 8" in h and "#define CRYSTAL_ALL_DIGITAL_CLASSES 3" in h
    flat = " ".join(ln.lstrip(" *") for ln in h.splitlines())
    assert "8 inputs -> 4 ReLU -> 3 linear (the logits); 29 connections" in flat
    assert "6-bit input codes, code_i = min(63, max(0, round((x_i - 0.0) /" in flat
    assert crystal_mod.digest(c) in flat and "abc123" in flat
    assert all(len(ln) <= 100 for ln in h.splitlines())


def test_table_bytes_by_hand():
    c, fp = quantized()
    assert [int(layer.mask.sum()) for layer in c.layers] == [17, 12]  # what the figures use
    # compact f32: START (n+1) x uint8, IN 17 x uint8, W 17 x 4, B 4 x 4; then 4 + 12 + 48 + 12
    assert emit.float_source(c, "compact").table_bytes == (5 + 17 + 68 + 16) + (4 + 12 + 48 + 12)
    # unrolled: the weights and biases only
    assert emit.float_source(c, "unrolled").table_bytes == (68 + 16) + (48 + 12)
    # all_digital: 10-bit weights (int16), int32 biases, one shift byte per hidden neuron
    net = fixed.nets_of(fp)["all_digital"]
    assert emit.fixed_source(c, net, "d").table_bytes == (5 + 17 + 34 + 16 + 4) + (4 + 12 + 24 + 12)


def test_an_empty_layer_and_an_empty_neuron_still_compile(tmp_path):
    c = tiny_crystal()
    l1, l2 = c.layers
    mask = l2.mask.copy()
    mask[1] = False  # readout neuron 1 reads nothing: its logit is its bias
    c2 = c.replace(layers=(l1, dataclasses.replace(l2, mask=mask, weights=l2.weights * mask)))
    text = emit.float_source(c2, "compact").c_text
    assert "/* neuron 1: no connections */" in text
    x = c.reference.x
    for style in emit.STYLES:
        src = emit.float_source(c2, style, stem=f"empty_{style}")
        b = build.compile_variant(src, tmp_path)
        assert b.warnings == 0
        lg = build.CNet(b.library, src).logits(x)
        assert np.all(lg[:, 1] == l2.bias[1])
    none = hand_net([[0, 0]], [5], 2, 2, 4)  # no connection at all: W holds one unused 0
    src = emit.fixed_source(tiny_crystal(), none, "h", "compact")
    assert "static const int8_t L1_W[1] = {" in src.c_text and "0  /* none: unused */" in src.c_text
    for style in emit.STYLES:
        src = emit.fixed_source(tiny_crystal(), none, "h", style, stem=f"none_{style}")
        b = build.compile_variant(src, tmp_path)
        assert b.warnings == 0
        assert build.CNet(b.library, src).logits([[3, 3]]).tolist() == [[5]]


@pytest.mark.parametrize("bits,signed,unsigned", [(1, "int8_t", "uint8_t"), (8, "int8_t", "uint8_t"),
                                                  (9, "int16_t", "uint16_t"), (16, "int16_t", "uint16_t"),
                                                  (17, "int32_t", "uint32_t"), (32, "int32_t", "uint32_t"),
                                                  (33, "int64_t", "uint64_t"), (64, "int64_t", "uint64_t")])
def test_integer_types_at_their_edges(bits, signed, unsigned):
    assert emit.int_type(bits) == signed
    assert emit.uint_type(bits) == unsigned


def test_index_and_accumulator_types_and_too_wide():
    assert [emit.index_type(n) for n in (0, 1, 255, 256, 65535, 65536)] == \
        ["uint8_t", "uint8_t", "uint8_t", "uint16_t", "uint16_t", "uint32_t"]
    assert emit.acc_type(32, 31) == "int32_t"
    assert emit.acc_type(33, 0) == "int64_t"
    assert emit.acc_type(8, 32) == "int64_t"  # a shift by 32 is undefined on int32_t
    with pytest.raises(CBackendError, match=r"^a 65-bit integer does not fit a C integer type"):
        emit.int_type(65)


def test_number_text():
    assert [emit.c_float(v) for v in (0.1, 1.0, -0.0, 1e10, 3e-8)] == \
        ["0.1f", "1.0f", "-0.0f", "1e+10f", "3e-08f"]
    for v in np.random.default_rng(2).normal(size=50).astype(np.float32) * 1000:
        assert np.float32(emit.c_float(v)[:-1]) == v  # reads back as the same float32
    assert emit.c_int(-(1 << 63), "int64_t") == "INT64_MIN"
    assert emit.c_int(1 << 31, "int64_t") == "INT64_C(2147483648)"
    assert emit.c_int(-(1 << 31) - 1, "int64_t") == "INT64_C(-2147483649)"
    assert emit.c_int((1 << 31) - 1, "int64_t") == "2147483647"
    assert emit.c_int(-(1 << 31), "int64_t") == "-2147483648"
    assert emit.c_int(-7, "int32_t") == "-7"


def test_an_unknown_style_is_refused():
    with pytest.raises(CBackendError, match=r"^C style 'fast' is not one of \['compact', 'unrolled'\]$"):
        emit.float_source(tiny_crystal(), "fast")


# ---- compiler, size, loading --------------------------------------------------------------------
def test_a_compiler_failure_names_its_log(tmp_path):
    src = dataclasses.replace(emit.float_source(tiny_crystal(), "compact"), c_text="not C at all\n")
    with pytest.raises(ToolFailed) as e:
        build.compile_variant(src, tmp_path)
    log = tmp_path / "f32.cc.log"
    assert str(e.value).startswith("cc failed (exit 1): ") and str(e.value).endswith(f"see {log}")
    assert e.value.log == log and "error" in log.read_text()


def test_a_missing_compiler_says_what_to_do(monkeypatch, tmp_path):
    import sys

    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(ToolNotFound, match=r"^no C compiler: `cc` not found; run `make setup` "
                                           r"\(installs gcc\), or point CC at a C99 compiler$"):
        build.find_cc()
    with pytest.raises(ToolNotFound, match=r"^`size` \(GNU binutils\) not found; run `make setup`"):
        build.find_size()
    monkeypatch.setenv("CC", "/nonexistent/cc")
    with pytest.raises(ToolNotFound, match=r"^CC='/nonexistent/cc' does not name an executable"):
        build.find_cc()


SIZE_OUT = """   text	   data	    bss	    dec	    hex	filename
   9191	     16	      8	   9215	   23ff	f32_compact.o
"""


def test_size_output_is_read_and_a_stranger_refused():
    assert build.parse_size(SIZE_OUT) == {"text": 9191, "data": 16, "bss": 8,
                                          "text_plus_data": 9207}
    for bad in ("", "text data bss\n", "   text\t data\t bss\n  x  1  2\n", "9191 0 0 f.o\n"):
        with pytest.raises(CBackendError, match=r"no 'text data bss' header followed by three numbers"):
            build.parse_size(bad, "x.log")


def test_the_size_of_a_real_object_holds_its_tables(tmp_path):
    c, fp = quantized()
    src = emit.fixed_source(c, fixed.nets_of(fp)["all_digital"], "d", "compact")
    b = build.compile_variant(src, tmp_path)
    size = build.object_size(b.obj)
    assert size["text_plus_data"] == size["text"] + size["data"]
    assert size["text"] >= src.table_bytes  # the const tables are read-only data, in text
    small = build.size_build(b)
    assert small["text"] >= src.table_bytes
    assert (tmp_path / "all_digital.size.cc.log").read_text().startswith("$ ")
    assert "-Os" in (tmp_path / "all_digital.size.cc.log").read_text().splitlines()[0]


def test_warnings_are_counted():
    log = ("f.c:3:5: warning: unused variable 'x' [-Wunused-variable]\n"
           "f.c:9: warning: something\nf.c:3:5: note: declared here\nwarning: no location\n")
    assert build.warnings_in(log) == 2


def test_a_rebuilt_source_gets_a_new_library(tmp_path):
    c = tiny_crystal()
    a = build.compile_variant(emit.float_source(c, "compact"), tmp_path)
    c2 = c.replace(layers=(c.layers[0], dataclasses.replace(c.layers[1], bias=c.layers[1].bias + 1)))
    src2 = emit.float_source(c2, "compact")
    b = build.compile_variant(src2, tmp_path)
    assert a.library != b.library and not a.library.exists() and b.library.exists()
    got = build.CNet(b.library, src2).logits(c.reference.x)  # not the stale library
    assert np.array_equal(got, sequential_f32(c2, c.reference.x))


def test_inputs_that_do_not_fit_are_refused(tiny_builds):
    _, net, cnet = tiny_builds["tiny", "all_digital", "compact"]
    with pytest.raises(CBackendError, match=r"^crystal_all_digital: inputs of shape \(3,\); it reads "
                                            r"\(n, 8\), one row per sample$"):
        cnet.logits(np.zeros(3, np.int64))
    with pytest.raises(CBackendError, match=r"inputs are float64; it reads integer codes \(uint8_t\)"):
        cnet.logits(np.zeros((1, 8)))
    assert net.in_bits == 6
    for bad in (64, -1, 256):
        with pytest.raises(CBackendError, match=rf"^crystal_all_digital: input code {bad} is outside "
                                                r"0\.\.63 \(6-bit codes\); "):
            cnet.logits(np.full((1, 8), bad))
    top = np.full((1, 8), 63)
    assert np.array_equal(cnet.logits(top), net.forward(top)["logits"])


# ---- checks and benchmark arithmetic ------------------------------------------------------------
def test_relative_errors_by_hand():
    got = np.array([[1.0, 2.0], [0.0, 0.0], [0.0, 1e-9], [3.0, -1.0]])
    ref = np.array([[1.0, 4.0], [0.0, 0.0], [0.0, 0.0], [3.0, -2.0]])
    assert flow.relative_errors(got, ref).tolist() == [0.5, 0.0, np.inf, 1 / 3]


def test_float_check_at_its_tolerance():
    ref = np.array([[1e5, 0.0]], np.float32)
    at = flow.float_check(ref + np.array([[1.0, 0.0]]), np.array([0]), ref)
    assert at["max_rel_error"] == 1e-5 and at["passed"] is True
    over = flow.float_check(ref + np.array([[2.0, 0.0]]), np.array([0]), ref)
    assert over["max_rel_error"] == 2e-5 and over["passed"] is False
    wrong_class = flow.float_check(ref, np.array([1]), ref)
    assert wrong_class["class_agreement_with_torch"] == 0.0 and wrong_class["passed"] is False


def test_fixed_check_counts_what_differs():
    gold = {"logits": np.array([[1, 2], [3, 4], [5, 6]]), "cls": np.array([1, 1, 1])}
    ok = flow.fixed_check(gold["logits"], gold["cls"], gold, np.array([1, 0, 1]), np.array([1, 1, 0]))
    assert ok == {"vectors": 3, "vectors_with_logits_differing": 0, "classes_differing": 0,
                  "bit_exact": True, "test_accuracy": 2 / 3, "class_agreement_with_torch": 2 / 3,
                  "passed": True}
    bad = flow.fixed_check(np.array([[1, 2], [3, 5], [5, 7]]), np.array([1, 1, 0]), gold,
                           np.array([1, 0, 1]), np.array([1, 1, 0]))
    assert (bad["vectors_with_logits_differing"], bad["classes_differing"], bad["bit_exact"],
            bad["passed"]) == (2, 1, False, False)


def test_batch_inputs_repeat_the_split_in_order():
    x = np.arange(6).reshape(3, 2)
    assert bench.batch_inputs(x, 7)[:, 0].tolist() == [0, 2, 4, 0, 2, 4, 0]
    with pytest.raises(CBackendError, match="no test samples to benchmark on"):
        bench.batch_inputs(x[:0])


def scripted(name, single_dt, batch_dt, now, calls):
    """A contender whose calls advance a fake clock by scripted durations: in round r each
    single call takes single_dt[r], the batch call batch_dt[r] (the warm-up: round 0's)."""
    done = [-1]  # batch calls so far, less the warm-up's

    def single(i):
        calls.append((name, "single", i))
        now[0] += single_dt[max(done[0], 0)]

    def batch():
        calls.append((name, "batch"))
        now[0] += batch_dt[max(done[0], 0)]
        done[0] += 1
        return np.zeros((1, 2))

    return {"name": name, "label": name, "method": "", "single": single, "batch": batch}


def test_measure_interleaves_rotates_warms_up_and_takes_medians():
    now, calls = [0.0], []
    # per-call durations by round (warm-up uses the first): A's single 1, 5, 2; B's 4, 4, 4
    a = scripted("A", [1.0, 5.0, 2.0], [10.0, 30.0, 20.0], now, calls)
    b = scripted("B", [4.0, 4.0, 4.0], [5.0, 5.0, 6.0], now, calls)
    times = bench.measure([a, b], n_single=2, repeats=3, clock=lambda: now[0])
    # warm-up: single(0) then batch, each once, before any timing
    assert calls[:4] == [("A", "single", 0), ("A", "batch"), ("B", "single", 0), ("B", "batch")]
    order = [c[0] for c in calls[4:] if c[1] == "batch"]
    assert order == ["A", "B", "B", "A", "A", "B"]  # rotated by one each round
    assert times["A"] == {"single": [1.0, 5.0, 2.0], "batch": [10.0, 30.0, 20.0]}
    assert times["B"] == {"single": [4.0, 4.0, 4.0], "batch": [5.0, 5.0, 6.0]}
    s = bench.summarize(times, 1024, "A")
    assert s["A"] == {"batch1_latency_us": 2e6, "batch1024_ms": 2e4,
                      "batch1024_samples_per_s": 1024 / 20.0, "rounds": 3}
    assert s["B"]["A_speedup_batch1"] == 4.0 / 2.0  # median over median
    assert s["B"]["A_speedup_batch1024"] == 5.0 / 20.0
    with pytest.raises(CBackendError, match=r"needs repeats >= 1"):
        bench.measure([a], n_single=2, repeats=0)
    with pytest.raises(CBackendError, match=r"contender names \['A', 'A'\] repeat"):
        bench.measure([a, a], n_single=1, repeats=1)
    with pytest.raises(CBackendError, match=r"no timings of 'C'"):
        bench.summarize(times, 1024, "C")


def test_a_pass_is_timed_instead_of_the_loop():
    now, calls = [0.0], []
    ct = scripted("P", [1.0], [1.0], now, calls)
    ct["pass"] = lambda: (calls.append(("P", "pass")), now.__setitem__(0, now[0] + 6.0))
    times = bench.measure([ct], n_single=3, repeats=1, clock=lambda: now[0])
    assert times["P"]["single"] == [2.0]  # 6 over 3 samples
    assert ("P", "single", 0) not in calls and calls[0] == ("P", "pass")


def test_headline_ratios_name_torch_eager_and_the_fastest_torch():
    times = {"c": {"single": [1.0], "batch": [2.0]},
             "torch_dense": {"single": [30.0], "batch": [4.0]},
             "torch_sparse": {"single": [20.0], "batch": [8.0]},
             "numpy": {"single": [10.0], "batch": [1.0]}}  # faster, but not torch
    h = flow.headline(bench.summarize(times, 64, "c"), 64, "c")
    assert h == {"batch1_speedup_vs_torch_eager": 30.0, "batch1_fastest_torch": "torch_sparse",
                 "batch1_speedup_vs_fastest_torch": 20.0,
                 "batch64_speedup_vs_torch_eager": 2.0, "batch64_fastest_torch": "torch_dense",
                 "batch64_speedup_vs_fastest_torch": 2.0}
    assert flow.headline(bench.summarize({"c": times["c"]}, 64, "c"), 64, "c") == {}


def test_agreement_by_hand():
    ref = np.array([[1.0, 2.0], [3.0, 1.0]])
    assert bench.agreement(np.array([[1.5, 2.0], [1.0, 3.0]]), ref) == {
        "class_agreement": 0.5, "max_abs_logit_difference": 2.0}
    with pytest.raises(CBackendError, match=r"benchmark output of shape \(1, 2\), expected \(2, 2\)"):
        bench.agreement(ref[:1], ref)


# ---- the stage and the CLI ----------------------------------------------------------------------
def fake_torch(c, x1, xb):
    """A stand-in for crystalbench.model.infer.contenders: the numpy contender, renamed."""
    ct = bench.numpy_contender(c, x1, xb)
    return [{**ct, "name": "torch_dense", "label": "stand-in"}]


def test_the_stage_checks_measures_and_benchmarks(tmp_path):
    c, _ = quantized()
    lines = []
    res = flow.run(c, cfg(), Paths(tmp_path, "tiny"), lines.append, bench_torch=fake_torch, repeats=2)
    assert res["passed"] is True
    assert set(res["variants"]) == {"f32_unrolled", "f32_compact", "frontier_compact",
                                    "all_digital_compact", "all_digital_small_compact"}
    v = res["variants"]["all_digital_compact"]
    assert v["check"]["bit_exact"] and v["check"]["vectors"] == 10 and v["compiler_warnings"] == 0
    assert v["size"]["text_plus_data"] == v["size"]["text"] + v["size"]["data"] > 0
    assert v["size_Os"]["text_plus_data"] > 0 and v["table_bytes"] == 128
    assert res["variants"]["f32_unrolled"]["check"]["styles_identical"] is True
    assert res["compiler"]["flags"][0] == "-O3" and res["compiler"]["version"]
    b = res["bench"]
    figs = b["contenders"]
    assert set(figs) == {"c_f32", "torch_dense", "numpy", "c_fixed", "c_f32_from_c"}
    for name, f in figs.items():
        assert f["class_agreement"] == 1.0 and f["rounds"] == 2
        if name != "c_f32":
            assert f["c_f32_speedup_batch1"] == pytest.approx(
                f["batch1_latency_us"] / figs["c_f32"]["batch1_latency_us"])
    assert b["batch1_speedup_vs_torch_eager"] == figs["torch_dense"]["c_f32_speedup_batch1"]
    assert b["batch1024_fastest_torch"] == "torch_dense" and b["batch"] == 1024
    assert all(p["num_threads"] == 1 for p in b["thread_pools"])
    on_disk = json.loads((tmp_path / "tiny" / "c" / "result.json").read_text())
    assert on_disk["passed"] is True and on_disk["measured"]["machine"]["cores"] >= 1
    for stem in ("f32_unrolled", "all_digital_compact"):
        assert (tmp_path / "tiny" / "c" / f"{stem}.c").exists()
        assert (tmp_path / "tiny" / "c" / f"{stem}.h").exists()
    assert any(ln.startswith("c: f32_unrolled: compiled in ") for ln in lines)
    assert res["summary"][-1] == "passed"
    assert any(ln.startswith("speedup vs torch eager (nn.Sequential): batch 1 ") for ln in res["summary"])


def test_a_disagreeing_variant_fails_the_stage(tmp_path, monkeypatch):
    c, _ = quantized()
    real = build.CNet.logits
    monkeypatch.setattr(build.CNet, "logits", lambda self, x: real(self, x) + 1)
    res = flow.run(c, cfg(), Paths(tmp_path, "tiny"))
    assert res["passed"] is False and res["summary"][-1].startswith("FAILED")
    assert res["variants"]["all_digital_compact"]["check"]["vectors_with_logits_differing"] == 10


def test_the_cli_runs_it_and_refuses_bad_repeats(tmp_path, capsys):
    c, _ = quantized()
    crystal_mod.save(c, tmp_path / "crystal")
    build_dir = tmp_path / "build"
    config = str(ROOT / "configs" / "digits.yaml")
    assert main(["--build-dir", str(build_dir), "compile-c", "--config", config, "--crystal",
                 str(tmp_path / "crystal")]) == 0
    out = capsys.readouterr().out
    assert "all_digital_compact: 29 connections" in out and out.rstrip().endswith("result.json")
    assert (build_dir / "tiny" / "c" / "result.json").exists()
    assert (build_dir / "tiny" / "fixed" / "fixed_point.json").exists()  # quantized first
    assert main(["--build-dir", str(build_dir), "compile-c", "--config", config, "--crystal",
                 str(tmp_path / "crystal"), "--repeats", "0"]) == 2
    assert "--repeats 0: the benchmark needs at least 1 round" in capsys.readouterr().err


def test_errors_are_of_the_one_family():
    assert issubclass(CBackendError, CrystalbenchError)
