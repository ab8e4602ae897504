"""The QAT net (model/qat.py, `crystalbench train-qat`) as an integer net of this backend.

The training stage writes build/<exp>/qat/qat_net.json: the trained integers (weights,
biases), their widths and the requantizing shift, stamped with the digest of the Crystal
whose input description and reference vectors it was made for and with the `qat` config
section it was trained from. This module reads it, refuses a missing, damaged or stale
one by name, and turns it into an `IntNet` (kind `all_digital_qat`) with the
accumulator widths its worst case over every input code needs (rtl/fixed.py), so the
designs, the golden model and the simulators compute exactly what training computed.
The artifact is read-only here: nothing downstream writes it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from crystalbench import config as cfgmod
from crystalbench import crystal as crystal_mod
from crystalbench.crystal import Crystal
from crystalbench.errors import FixedPointError

from .fixed import IntLayer, IntNet, acc_range, signed_bits

NAME = "qat"  # the training stage's folder
FILE_NAME = "qat_net.json"
VERSION = 1
KIND = "all_digital_qat"


def config_stamp(qat_cfg) -> dict:
    """What the artifact depends on besides the Crystal: the `qat` training settings."""
    return cfgmod.qat_stamp(qat_cfg)


def artifact_digest(art: dict) -> str:
    return hashlib.sha256(json.dumps(art, sort_keys=True).encode()).hexdigest()[:16]


def _fail(path, msg: str):
    raise FixedPointError(f"{path}: {msg}; run `crystalbench train-qat` with this config")


def _int_array(v, path, what: str, ndim: int) -> np.ndarray:
    try:
        a = np.asarray(v, dtype=np.int64)
    except (TypeError, ValueError, OverflowError):
        _fail(path, f"{what} is not an integer array")
    if a.ndim != ndim or a.size == 0:
        _fail(path, f"{what} has shape {a.shape}, expected {ndim} non-empty dimension(s)")
    if not np.array_equal(a, np.asarray(v, dtype=np.float64)):
        _fail(path, f"{what} holds non-integer values")
    return a


def to_intnet(art: dict, path="qat net") -> IntNet:
    """The artifact's integers and widths -> IntNet, every width checked."""
    try:
        f = art["formats"]
        ib, wb, rb = int(f["input_bits"]), int(f["weight_bits"]), int(f["readout_weight_bits"])
        ab, shift = int(f["activation_bits"]), int(f["shift"])
        w1 = _int_array(art["w1"], path, "w1", 2)
        b1 = _int_array(art["b1"], path, "b1", 1)
        w2 = _int_array(art["w2"], path, "w2", 2)
        b2 = _int_array(art["b2"], path, "b2", 1)
    except (KeyError, TypeError, ValueError) as e:
        _fail(path, f"missing or bad field ({type(e).__name__}: {e})")
    H, N = w1.shape
    if b1.shape != (H,) or w2.shape[1] != H or b2.shape != (w2.shape[0],):
        _fail(path, f"shapes do not chain: w1 {w1.shape}, b1 {b1.shape}, w2 {w2.shape}, "
                    f"b2 {b2.shape}")
    for name, w, bits in (("w1", w1, wb), ("w2", w2, rb)):
        lim = (1 << (bits - 1)) - 1  # symmetric: -M..M
        if np.abs(w).max() > lim:
            _fail(path, f"{name} holds {int(np.abs(w).max())}, outside -{lim}..{lim} of its "
                        f"{bits} bits")
    if not (1 <= ib <= 16 and 1 <= ab <= 16 and 0 <= shift <= 31):
        _fail(path, f"input_bits {ib}, activation_bits {ab} or shift {shift} out of range")
    # The requantizer's rounding half-step rides in the bias: out = clip(acc >> shift).
    b1h = b1 + ((1 << shift) >> 1)
    layers = []
    for w, b, act, in_bits, bits, out_bits in ((w1, b1h, "relu", ib, wb, ab),
                                               (w2, b2, "linear", ab, rb, None)):
        acc_bits = signed_bits(*acc_range(w, b, in_bits))
        layers.append(IntLayer(
            weights=w, mask=w != 0, bias=b, activation=act, in_bits=in_bits,
            weight_bits=bits, weight_frac=np.zeros(w.shape[0], np.int64), acc_bits=acc_bits,
            shift=np.full(w.shape[0], shift if act == "relu" else 0, np.int64),
            out_bits=out_bits if out_bits is not None else acc_bits))
    return IntNet(KIND, "input_codes", 0, np.arange(N, dtype=np.int64), tuple(layers))


def load(folder: str | Path, c: Crystal, cfg=None) -> tuple[dict, IntNet]:
    """Read the artifact for Crystal `c` (and, given `cfg`, its `qat` section); refuse a
    missing, damaged or stale one."""
    path = Path(folder) / FILE_NAME
    if not path.exists():
        _fail(path, "not found")
    try:
        art = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        _fail(path, f"not valid JSON ({e})")
    if not isinstance(art, dict) or art.get("version") != VERSION:
        _fail(path, f"not a version-{VERSION} QAT net")
    made_from = (art.get("crystal") or {}).get("digest")
    if made_from != crystal_mod.digest(c):
        _fail(path, f"made for another Crystal (digest {made_from}, this one "
                    f"{crystal_mod.digest(c)}): it is stale")
    if cfg is not None and art.get("config") != config_stamp(cfg.qat):
        _fail(path, "trained with other `qat` settings than this config: it is stale")
    net = to_intnet(art, path)
    if net.n_in != c.input.size or net.n_classes != c.n_classes:
        _fail(path, f"{net.n_in} inputs / {net.n_classes} classes, the Crystal has "
                    f"{c.input.size} / {c.n_classes}")
    return art, net
