"""`crystalbench compile-c`: the Crystal as C99, compiled, checked, measured -> build/<exp>/c/.

Variants (each <stem>.c + <stem>.h, object <stem>.o, library lib<stem>-<digest>.so, the
compiler's logs beside them):

* `f32_unrolled`: float32, unrolled style (the fast one on a desktop CPU, benchmarked);
* `f32_compact`: the same float32 net in compressed sparse rows (the same bits);
* `<net>_compact` for each integer net of the fixed-point artifact (`frontier`,
  `all_digital`, `all_digital_small`; the artifact is made by the quantize stage when
  missing or stale): what a microcontroller would hold.

Checks on every test vector of the Crystal: float32 logits within REL_TOL of the torch
reference (per sample, relative to its largest reference logit) and class agreement 1.0;
both float32 styles give the same bits; every integer net's logits and classes equal the
golden model's (rtl/fixed.py). Sizes: binutils `size` (text + data) of each object as
built, and of each compact source built again with -Os for a small target.

With `bench` (a function giving the torch contenders, crystalbench.model.infer.contenders,
handed in by the CLI): latency at batch 1 and throughput at batch 1,024 on the test split
against torch and numpy in this process, one thread (cbackend/bench.py).
"""

from __future__ import annotations

import time

import numpy as np

from crystalbench import crystal as crystal_mod
from crystalbench import stage
from crystalbench.crystal import Crystal
from crystalbench.results import Paths
from crystalbench.rtl import fixed, quantize

from . import CBackendError, bench, build, emit

NAME = "c"
WRITES = (NAME, quantize.NAME)
NEEDS_CRYSTAL = True
REL_TOL = 1e-5
SUBJECT = "c_f32"  # the benchmark's C contender: f32_unrolled


# ---- checks -------------------------------------------------------------------------------------
def relative_errors(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per sample: max |got - ref| over its logits / max |ref| over its logits (0 when both
    are all zero; inf when only the reference is)."""
    got = np.asarray(got, np.float64)
    ref = np.asarray(ref, np.float64)
    err = np.abs(got - ref).max(axis=1, initial=0.0)
    scale = np.abs(ref).max(axis=1, initial=0.0)
    safe = np.where(scale > 0, scale, 1.0)
    return np.where(scale > 0, err / safe, np.where(err > 0, np.inf, 0.0))


def float_check(logits: np.ndarray, cls: np.ndarray, reference: np.ndarray) -> dict:
    """C float32 logits and classes against the Crystal's torch reference outputs."""
    ref = np.asarray(reference)
    rel = relative_errors(logits, ref)
    agree = float((np.asarray(cls) == ref.argmax(axis=1)).mean())
    worst = float(rel.max(initial=0.0))
    return {"vectors": int(len(ref)), "max_rel_error": worst, "rel_tolerance": REL_TOL,
            "class_agreement_with_torch": agree, "passed": bool(worst <= REL_TOL and agree == 1.0)}


def fixed_check(logits: np.ndarray, cls: np.ndarray, golden: dict, labels: np.ndarray,
                torch_cls: np.ndarray) -> dict:
    """C integer logits and classes against the golden model's, on the same codes."""
    lg_off = int((np.asarray(logits) != golden["logits"]).any(axis=1).sum())
    cls_off = int((np.asarray(cls) != golden["cls"]).sum())
    return {"vectors": int(len(labels)), "vectors_with_logits_differing": lg_off,
            "classes_differing": cls_off, "bit_exact": lg_off == 0 and cls_off == 0,
            "test_accuracy": float((np.asarray(cls) == labels).mean()),
            "class_agreement_with_torch": float((np.asarray(cls) == torch_cls).mean()),
            "passed": lg_off == 0 and cls_off == 0}


# ---- the stage ----------------------------------------------------------------------------------
def _files(b: build.Built) -> dict:
    return {"source": b.source, "header": b.header, "object": b.obj, "library": b.library,
            "logs": list(b.logs)}


def _compile(src: emit.CSource, out, log: stage.Log) -> tuple[build.Built, build.CNet, dict]:
    t0 = time.perf_counter()
    b = build.compile_variant(src, out)
    rec = {"variant": src.variant, "style": src.style, "prefix": src.prefix,
           "connections": src.connections, "table_bytes": src.table_bytes,
           "size": build.object_size(b.obj), "compiler_warnings": b.warnings,
           "compile_seconds": round(time.perf_counter() - t0, 2), "files": _files(b)}
    log(f"c: {src.stem}: compiled in {rec['compile_seconds']} s, {rec['size']['text_plus_data']:,} "
        "bytes text + data")
    return b, build.CNet(b.library, src), rec


def run(c: Crystal, cfg, paths: Paths, log: stage.Log = stage.quiet, bench_torch=None,
        repeats: int | None = None) -> dict:
    """Generate, compile and check every variant; with `bench_torch` (a contender factory,
    crystalbench.model.infer.contenders) benchmark them too."""
    repeats = bench.REPEATS if repeats is None else repeats
    if repeats < 1:
        raise CBackendError(f"--repeats {repeats}: the benchmark needs at least 1 round")
    cc = build.find_cc()  # both tools before any work
    build.find_size()
    out = paths.stage(NAME)
    out.mkdir(parents=True, exist_ok=True)
    fp = quantize.ensure(c, cfg, paths, log)
    nets = fixed.nets_of(fp)
    digest = fixed.artifact_digest(fp)
    ref = c.reference
    torch_cls = ref.outputs[-1].argmax(axis=1)
    variants, cnets, builts = {}, {}, {}

    # float32, both styles
    logits_by_style = {}
    for style in ("unrolled", "compact"):
        src = emit.float_source(c, style, stem=f"f32_{style}")
        b, cnet, rec = _compile(src, out, log)
        lg = cnet.logits(ref.x)
        logits_by_style[style] = lg
        rec["check"] = float_check(lg, cnet.predict(ref.x), ref.outputs[-1])
        if style == "compact":
            rec["size_Os"] = build.size_build(b)
        variants[src.stem] = rec
        cnets[src.stem], builts[src.stem] = cnet, b
    same = bool(np.array_equal(logits_by_style["unrolled"], logits_by_style["compact"]))
    for style in ("unrolled", "compact"):
        variants[f"f32_{style}"]["check"]["styles_identical"] = same

    # every integer net, compact
    codes_of = {}
    for kind, net in nets.items():
        src = emit.fixed_source(c, net, digest, "compact", stem=f"{kind}_compact")
        b, cnet, rec = _compile(src, out, log)
        codes = fixed.input_codes(c, net)
        codes_of[kind] = codes
        gold = net.forward(codes)
        rec["check"] = fixed_check(cnet.logits(codes), cnet.predict(codes), gold, ref.y, torch_cls)
        rec["size_Os"] = build.size_build(b)
        rec["logit_bits"] = net.logit_bits
        variants[src.stem] = rec
        cnets[src.stem] = cnet

    passed = all(v["check"]["passed"] for v in variants.values()) and same
    res = {"crystal_digest": crystal_mod.digest(c), "fixed_digest": digest,
           "compiler": {"path": cc, "version": build.compiler_version(out),
                        "flags": list(build.FLAGS), "link_flags": list(build.LINK_FLAGS),
                        "size_flags": list(build.SIZE_FLAGS)},
           "variants": variants, "passed": passed, "method": METHOD}
    if bench_torch is not None:
        res["bench"] = _bench(c, cnets, builts["f32_unrolled"], nets, codes_of, bench_torch,
                              repeats, log)
        res["method"] = {**METHOD, "bench": BENCH_METHOD}
    return stage.finish(NAME, paths, res, summary(res))


def _bench(c: Crystal, cnets: dict, f32: build.Built, nets: dict, codes_of: dict, bench_torch,
           repeats: int, log: stage.Log) -> dict:
    x1 = c.reference.x
    xb = bench.batch_inputs(x1)
    rows = np.arange(len(xb)) % len(x1)
    fixed_cb = bench.c_contender("c_fixed", cnets["all_digital_compact"], codes_of["all_digital"],
                                 codes_of["all_digital"][rows],
                                 "C fixed point (all_digital, compact; input codes given)")
    fixed_cb["reference"] = nets["all_digital"].forward(codes_of["all_digital"][rows])["logits"]
    lib, symbol = build.compile_each(f32, cnets["f32_unrolled"].src)
    contenders = [bench.c_contender(SUBJECT, cnets["f32_unrolled"], x1, xb, "C float32 (unrolled)"),
                  *bench_torch(c, x1, xb), bench.numpy_contender(c, x1, xb), fixed_cb,
                  bench.c_each_contender("c_f32_from_c", lib, symbol, cnets["f32_unrolled"], x1, xb,
                                         "C float32 (unrolled), batch-1 calls from a C loop")]
    log(f"c: benchmark: {len(contenders)} contenders x {repeats} interleaved rounds "
        f"(batch 1 over {len(x1)} samples, batch {len(xb):,})")
    res = bench.run(contenders, c.reference.outputs[-1][rows], len(x1), len(xb), repeats, SUBJECT)
    return {**res, **headline(res["contenders"], len(xb), SUBJECT)}


def headline(figs: dict, batch: int, subject: str) -> dict:
    """The subject's speedup over torch eager as an nn.Sequential (`torch_dense`) and over
    the fastest torch contender (names starting 'torch'), at batch 1 and at `batch`."""
    out = {}
    torch_names = [n for n in figs if n.startswith("torch")]
    for key, unit in (("batch1", "batch1_latency_us"), (f"batch{batch}", f"batch{batch}_ms")):
        if "torch_dense" in figs:
            out[f"{key}_speedup_vs_torch_eager"] = figs["torch_dense"][f"{subject}_speedup_{key}"]
        if torch_names:
            fastest = min(torch_names, key=lambda n: figs[n][unit])
            out[f"{key}_fastest_torch"] = fastest
            out[f"{key}_speedup_vs_fastest_torch"] = figs[fastest][f"{subject}_speedup_{key}"]
    return out


def _ratio(v) -> str:
    return f"{v:.1f}x" if v >= 1 else f"{v:.2f}x"


def summary(res: dict) -> list[str]:
    lines = []
    for stem, v in res["variants"].items():
        ck = v["check"]
        size = f"{v['size']['text_plus_data']:,} B text + data"
        if "size_Os" in v:
            size += f" (-Os: {v['size_Os']['text_plus_data']:,} B)"
        if v["variant"] == "f32":
            got = (f"max relative error {ck['max_rel_error']:.2g} (tolerance {ck['rel_tolerance']:g}), "
                   f"class agreement with torch {ck['class_agreement_with_torch']:.4f}")
        else:
            got = (f"{'bit-exact' if ck['bit_exact'] else 'NOT bit-exact'} with the golden model "
                   f"({ck['vectors'] - ck['vectors_with_logits_differing']}/{ck['vectors']} "
                   f"vectors), accuracy {ck['test_accuracy']:.4f}")
        lines.append(f"{stem}: {v['connections']:,} connections, {size}; {got}")
    same = res["variants"]["f32_unrolled"]["check"]["styles_identical"]
    lines.append(f"float32 styles unrolled and compact: {'the same bits' if same else 'DIFFER'}")
    b = res.get("bench")
    if b:
        f = b["contenders"]
        subject = b["subject"]
        s = f[subject]
        n = b["batch"]
        for key, unit, fmt in (("batch1", "batch1_latency_us", "{:.2f} us"),
                               (f"batch{n}", f"batch{n}_ms", "{:.3f} ms")):
            speed = f"{subject}_speedup_{key}"
            others = ", ".join(f"{name} {fmt.format(fig[unit])} ({_ratio(fig[speed])})"
                               for name, fig in f.items() if name != subject)
            lines.append(f"{key.replace('batch', 'batch ')}: C float32 {fmt.format(s[unit])}; "
                         f"the others (C's speedup over them): {others}")
        lines.append(f"speedup vs torch eager (nn.Sequential): batch 1 "
                     f"{_ratio(b['batch1_speedup_vs_torch_eager'])}, batch {n:,} "
                     f"{_ratio(b[f'batch{n}_speedup_vs_torch_eager'])} ({b['repeats']} rounds, "
                     "medians, one thread)")
    lines.append("passed" if res["passed"] else "FAILED: see the checks in result.json")
    return lines


METHOD = {
    "float32": "the C float32 logits of every test vector (x in model units) against the "
               "torch reference outputs stored in the Crystal: per sample max |C - torch| over "
               "its logits / max |torch| over its logits, the worst sample reported (tolerance "
               f"{REL_TOL:g}); classes from the C predict entry point (first maximum) against "
               "the reference's argmax",
    "fixed_point": "the C integer logits and classes of every test vector against the golden "
                   "model (crystalbench.rtl.fixed IntNet.forward) on the same input codes "
                   "(fixed.input_codes): exact equality",
    "size": "binutils `size` (Berkeley: text includes the read-only weight tables), text + "
            "data, of the object as built (compiler.flags) and, for compact sources, of the "
            "same source built with compiler.size_flags; host objects (this machine's "
            "architecture), a proxy for a microcontroller build; table_bytes = the static "
            "const arrays' own bytes",
}
BENCH_METHOD = (
    "one process, one thread (torch.set_num_threads(1); numpy's BLAS limited to 1 thread by "
    "threadpoolctl; the C is single-threaded). Batch 1: each contender computes the logits "
    "of each test sample alone, one call per sample through its Python API (ctypes for C, "
    "tensors prepared beforehand for torch, row views for numpy), the time of the pass over "
    "the samples divided by their number; batch 1,024: one call on the test split repeated "
    "to 1,024 rows. Rounds interleaved (every contender once per round, order rotated), one "
    "untimed warm-up each, medians over rounds; speedup = the other's median / C's median. "
    "Every contender's batch output is checked first (class agreement with the reference, "
    "or with the golden model for the fixed-point C)")
