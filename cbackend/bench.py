"""Latency and throughput of the compiled C beside other implementations of the same net,
all in one process on one thread.

A contender is a dict: `name`, `label`, `method` (what it runs), `single(i)` (the logits of
test sample i alone: batch 1), `batch()` (the logits of the batch, returned) and optionally
`pass` (one call that computes every test sample alone, timed instead of the loop of
`single`: for a loop that runs in C), `context` (a context manager factory entered around
its timed runs, e.g. torch's inference mode) and `reference` (the logits its batch output
is checked against when not the float reference: the golden model's for an integer net).
The torch contenders come from crystalbench.model.infer (only model/ imports torch); this
module makes the C and numpy ones and times them all alike:

* warm-up: one untimed `single(0)` (or `pass()`) and `batch()` each;
* `repeats` rounds; in each round every contender, in an order rotated by one per round
  (so that drift in the machine's load hits all alike): one pass over the test split one
  sample at a time (`single(i)` for every i, or its `pass()`: the batch-1 latency is the
  pass's time over the number of samples, Python's loop and call overhead included, as a
  caller sees it), then one `batch()` call;
* figures: the median over rounds of each; a ratio is a median over a median.
"""

from __future__ import annotations

import contextlib
import ctypes
import statistics
import time
from pathlib import Path

import numpy as np

from crystalbench.crystal import Crystal

from . import CBackendError
from .build import CNet

BATCH = 1024
REPEATS = 25


def batch_inputs(x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    """`batch` rows: the test split repeated in order (row r is sample r mod n)."""
    x = np.asarray(x)
    if len(x) == 0:
        raise CBackendError("no test samples to benchmark on; the Crystal's reference.x is empty")
    return np.ascontiguousarray(x[np.arange(batch) % len(x)])


# ---- contenders made here ----------------------------------------------------------------------
def c_contender(name: str, net: CNet, x1: np.ndarray, xb: np.ndarray, label: str) -> dict:
    """The compiled `logits` entry point through ctypes, on arrays prepared beforehand: the
    arguments of every call are ctypes objects made once, untimed (a function object of
    its own, without argtypes, so that nothing is converted per call)."""
    x1 = net.inputs(x1)
    xb = net.inputs(xb)
    fn = net.lib[f"{net.src.prefix}_logits"]  # a new function object: CNet's keeps its argtypes
    fn.restype = None
    out1 = np.empty((1, net.src.n_classes), net.src.logit_dtype)
    outb = np.empty((len(xb), net.src.n_classes), net.src.logit_dtype)
    one, nb = ctypes.c_size_t(1), ctypes.c_size_t(len(xb))
    ptrs = [ctypes.c_void_p(x1.ctypes.data + i * x1.strides[0]) for i in range(len(x1))]
    p1, pb, pxb = (ctypes.c_void_p(a.ctypes.data) for a in (out1, outb, xb))

    def single(i):
        fn(one, ptrs[i], p1)

    def batch():
        fn(nb, pxb, pb)
        return outb

    return {"name": name, "label": label, "single": single, "batch": batch,
            "keep": (x1, xb, out1, outb),  # the arrays the pointers point into
            "method": f"{net.library.name} ({net.src.style} style): {net.src.prefix}_logits(n, "
                      "x, logits) through ctypes, one call per sample (batch 1) or per batch"}


def c_each_contender(name: str, library, symbol: str, net: CNet, x1: np.ndarray,
                     xb: np.ndarray, label: str) -> dict:
    """Batch-1 calls made from C: `symbol(n, x, logits)` (emit.each_source) calls the
    variant's `logits` once per sample from a C loop; one ctypes call per pass ('pass'),
    so the figure is the latency a C caller sees, without Python per sample."""
    x1 = net.inputs(x1)
    xb = net.inputs(xb)
    fn = getattr(ctypes.CDLL(str(library)), symbol)
    fn.argtypes = [ctypes.c_size_t, ctypes.c_void_p, ctypes.c_void_p]
    fn.restype = None
    out1 = np.empty((len(x1), net.src.n_classes), net.src.logit_dtype)
    outb = np.empty((len(xb), net.src.n_classes), net.src.logit_dtype)

    def batch():
        fn(len(xb), xb.ctypes.data, outb.ctypes.data)
        return outb

    return {"name": name, "label": label,
            "single": lambda i: fn(1, x1.ctypes.data + i * x1.strides[0], out1.ctypes.data),
            "pass": lambda: fn(len(x1), x1.ctypes.data, out1.ctypes.data), "batch": batch,
            "method": f"{symbol}(n, x, logits) in {Path(library).name}: a C loop calling "
                      f"{net.src.prefix}_logits(1, ...) once per sample (batch 1: one pass over "
                      "the test split; 'batch': the same over the batch's rows, one at a time)"}


def numpy_contender(c: Crystal, x1: np.ndarray, xb: np.ndarray) -> dict:
    """The net as dense float32 matrix products in numpy (absent connections are zeros)."""
    wt = [np.ascontiguousarray(layer.weights.T) for layer in c.layers]
    bs = [layer.bias for layer in c.layers]
    relu = [layer.activation == "relu" for layer in c.layers]
    x1 = np.ascontiguousarray(x1, np.float32)
    rows = [x1[i:i + 1] for i in range(len(x1))]
    xb = np.ascontiguousarray(xb, np.float32)

    def forward(h):
        for w, b, r in zip(wt, bs, relu):
            h = h @ w + b
            if r:
                np.maximum(h, 0.0, out=h)
        return h

    return {"name": "numpy", "label": "numpy, dense float32",
            "single": lambda i: forward(rows[i]), "batch": lambda: forward(xb),
            "method": "x @ W.T + b per layer (dense, float32), np.maximum for ReLU"}


# ---- timing ----------------------------------------------------------------------------------
def measure(contenders: list[dict], n_single: int, repeats: int = REPEATS,
            clock=time.perf_counter) -> dict[str, dict[str, list[float]]]:
    """Seconds per round for every contender: 'single' (one pass over `n_single` samples,
    divided by n_single) and 'batch' (one batch call). Interleaved, rotated, warmed up."""
    if repeats < 1 or n_single < 1:
        raise CBackendError(f"benchmark needs repeats >= 1 and samples >= 1 (got {repeats}, "
                            f"{n_single}); pass --repeats 1 or more")
    names = [ct["name"] for ct in contenders]
    if len(set(names)) != len(names):
        raise CBackendError(f"contender names {names} repeat; each needs its own name")
    times = {n: {"single": [], "batch": []} for n in names}
    for ct in contenders:
        with ct.get("context", contextlib.nullcontext)():
            ct["pass"]() if "pass" in ct else ct["single"](0)
            ct["batch"]()
    for r in range(repeats):
        k = r % len(contenders)
        for ct in contenders[k:] + contenders[:k]:
            single, batch = ct["single"], ct["batch"]
            one_pass = ct.get("pass")
            with ct.get("context", contextlib.nullcontext)():
                t0 = clock()
                if one_pass is not None:
                    one_pass()
                else:
                    for i in range(n_single):
                        single(i)
                t1 = clock()
                batch()
                t2 = clock()
            times[ct["name"]]["single"].append((t1 - t0) / n_single)
            times[ct["name"]]["batch"].append(t2 - t1)
    return times


def summarize(times: dict[str, dict[str, list[float]]], batch: int, subject: str) -> dict:
    """Medians per contender (batch-1 latency in us, batch time in ms, samples per second)
    and how many times faster `subject` is than each other contender (their median over
    its median; > 1: the subject is faster)."""
    if subject not in times:
        raise CBackendError(f"no timings of {subject!r} (have {sorted(times)})")
    med = {n: (statistics.median(t["single"]), statistics.median(t["batch"]))
           for n, t in times.items()}
    s1, sb = med[subject]
    out = {}
    for n, (m1, mb) in med.items():
        out[n] = {"batch1_latency_us": m1 * 1e6, f"batch{batch}_ms": mb * 1e3,
                  f"batch{batch}_samples_per_s": batch / mb, "rounds": len(times[n]["single"])}
        if n != subject:
            out[n][f"{subject}_speedup_batch1"] = m1 / s1
            out[n][f"{subject}_speedup_batch{batch}"] = mb / sb
    return out


def agreement(logits, reference: np.ndarray) -> dict:
    """How a contender's batch logits compare with the reference logits of the same rows:
    class agreement (first maximum) and the largest absolute difference."""
    got = np.asarray(logits, np.float64)
    ref = np.asarray(reference, np.float64)
    if got.shape != ref.shape:
        raise CBackendError(f"benchmark output of shape {got.shape}, expected {ref.shape}")
    return {"class_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
            "max_abs_logit_difference": float(np.abs(got - ref).max(initial=0.0))}


def run(contenders: list[dict], reference: np.ndarray, n_single: int, batch: int,
        repeats: int, subject: str) -> dict:
    """Check every contender's batch output against `reference` (logits of the batch rows),
    time them all (numpy's BLAS held to one thread), summarize."""
    from threadpoolctl import threadpool_info, threadpool_limits

    checks = {}
    for ct in contenders:
        with ct.get("context", contextlib.nullcontext)():
            checks[ct["name"]] = agreement(ct["batch"](), ct.get("reference", reference))
    with threadpool_limits(limits=1):
        pools = [{k: p.get(k) for k in ("internal_api", "version", "num_threads")}
                 for p in threadpool_info()]
        times = measure(contenders, n_single, repeats)
    figures = summarize(times, batch, subject)
    for ct in contenders:
        figures[ct["name"]].update(label=ct["label"], method=ct["method"], **checks[ct["name"]])
    return {"contenders": figures, "subject": subject, "batch": batch, "samples_batch1": n_single,
            "repeats": repeats, "thread_pools": pools}
