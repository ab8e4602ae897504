"""A small all-digital classifier trained from scratch at its hardware widths
(quantization-aware training), the integers exported as they are computed.

The net is the integer net the digital backend computes (rtl/fixed.py's IntNet layout):

* inputs: the raw inputs as unsigned `input_bits` codes, by the same converter model the
  digital side uses (crystalbench.adc: code = round((x - low) / lsb), clipped);
* hidden layer: integer weights in -M..M (M = 2**(weight_bits - 1) - 1; weight_bits 2 =
  ternary), an integer bias, then ReLU + requantize by one right shift for every neuron:
  h = clip((acc + 2**(shift - 1)) >> shift, 0, 2**activation_bits - 1);
* readout: integer weights (readout_weight_bits) and bias; the class is the first maximum.

Training sees exactly these integers in the forward pass (straight-through estimators for
the rounding of weights, biases and hidden codes); the loss reads the logits times a
learned temperature (argmax does not change with it). What is exported is the integer
net itself, so the golden model of the digital side reproduces the training forward pass
bit for bit; nothing is rescaled after training.

Hyperparameters are chosen on a validation part of the training split (`validate`), never
on the test split; the final net is trained on the whole training split.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from crystalbench.errors import TrainError

from .data import random_warps


def input_codes(x: np.ndarray, bits: int, low: float, high: float) -> np.ndarray:
    """The digital side's input converter (crystalbench.adc.AdcModel.input_codes)."""
    levels = (1 << bits) - 1
    q = np.rint((np.asarray(x, np.float64) - low) / ((high - low) / levels))
    return np.clip(q, 0, levels).astype(np.int64)


def _ste_round(v: torch.Tensor) -> torch.Tensor:
    return v + (torch.floor(v + 0.5) - v).detach()


def _ste_quant(w: torch.Tensor, m: int) -> torch.Tensor:
    """round(clip(w, -m, m)) forward, identity backward."""
    return w + (torch.floor(torch.clamp(w, -m, m) + 0.5) - w).detach()


class QatNet(nn.Module):
    def __init__(self, n_in: int, hidden: int, n_cls: int, weight_bits: int,
                 readout_weight_bits: int, activation_bits: int, shift: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.m1 = (1 << (weight_bits - 1)) - 1
        self.m2 = (1 << (readout_weight_bits - 1)) - 1
        self.top = (1 << activation_bits) - 1
        self.shift = shift
        self.w1 = nn.Parameter((torch.rand(hidden, n_in, generator=g) * 2 - 1) * (self.m1 + 0.5))
        self.b1 = nn.Parameter(torch.zeros(hidden))
        self.w2 = nn.Parameter((torch.rand(n_cls, hidden, generator=g) * 2 - 1) * (self.m2 + 0.5))
        self.b2 = nn.Parameter(torch.zeros(n_cls))
        self.log_t = nn.Parameter(torch.tensor(-2.0))

    def integers(self):
        """(W1, b1, W2, b2) as the integers the forward pass uses."""
        # Latent weights are kept within -M-0.5..M+0.5 (fit), so rounding alone maps
        # them into -M..M; the clamp only catches the edge +-(M+0.5).
        q1 = _ste_quant(self.w1, self.m1)
        q2 = _ste_quant(self.w2, self.m2)
        return q1, _ste_round(self.b1), q2, _ste_round(self.b2)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        q1, b1, q2, b2 = self.integers()
        acc = codes @ q1.T + b1
        s = float(1 << self.shift)
        h = torch.clamp(acc / s, 0, self.top)
        h = h + (torch.floor(h + 0.5) - h).detach()  # == clip((acc + s/2) >> shift)
        return h @ q2.T + b2

    def export(self) -> dict:
        with torch.no_grad():
            q1, b1, q2, b2 = (t.to(torch.int64).numpy() for t in self.integers())
        return {"w1": q1, "b1": b1, "w2": q2, "b2": b2}


def integer_forward(ints: dict, codes: np.ndarray, shift: int, activation_bits: int) -> np.ndarray:
    """The exported integers on input codes -> logits (int64), as the hardware computes."""
    acc = np.asarray(codes, np.int64) @ ints["w1"].T + ints["b1"] + ((1 << shift) >> 1)
    h = np.clip(acc >> shift, 0, (1 << activation_bits) - 1)
    return h @ ints["w2"].T + ints["b2"]


DISTILL_T = 4.0


def _teacher(xt, yt, hidden: int, epochs: int, batch_size: int, seed: int):
    """A float MLP on the same input codes (inputs scaled to 0..1 inside), Adam 1e-3."""
    torch.manual_seed(seed + 7)
    top = float(xt.max()) or 1.0
    t = nn.Sequential(nn.Linear(xt.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, int(yt.max()) + 1))
    opt = torch.optim.Adam(t.parameters(), lr=1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed + 8)
    for _ in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(t(xt[idx] / top), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    t.eval()
    return lambda x: t(x / top)


def fit(codes: np.ndarray, y: np.ndarray, *, hidden: int, weight_bits: int,
        readout_weight_bits: int, activation_bits: int, shift: int, epochs: int,
        lr: float, batch_size: int, seed: int, weight_decay: float = 0.0,
        input_dropout: float = 0.0, distill: float = 0.0, teacher_hidden: int = 128,
        warp_px: float = 0.0, warp_deg: float = 0.0, warp_scale: float = 0.0,
        images: np.ndarray | None = None, geometry: tuple | None = None,
        input_range: tuple | None = None, input_bits: int | None = None,
        log=None) -> QatNet:
    """Train on integer input codes (n, n_in) and labels; Adam with a cosine schedule,
    `weight_decay` pulling the latent weights towards 0 (towards sparser integers), and
    `input_dropout` zeroing that share of the input codes of each training sample.
    With `distill` > 0 a float teacher (one hidden ReLU layer of `teacher_hidden`, trained
    first on the same samples) guides the net: loss = (1 - distill) * cross-entropy +
    distill * T**2 * KL(teacher || net) at temperature T = DISTILL_T.
    With any of `warp_px`, `warp_deg`, `warp_scale` > 0 each mini-batch is drawn afresh
    from the float `images` (n, n_in; `geometry` (H, W)): each one moved by up to
    +-warp_px pixels in x and y, rotated by up to +-warp_deg degrees and scaled by up to
    1 +- warp_scale (uniform draws, bilinear), then converted to codes by the input
    converter (`input_range` (low, high), `input_bits`), as the hardware would see it."""
    warp = warp_px > 0 or warp_deg > 0 or warp_scale > 0
    if warp and (images is None or geometry is None or input_range is None or input_bits is None):
        raise TrainError("warping needs the float images, their geometry, the input range "
                         "and input_bits")
    if warp and len(geometry) != 2:
        raise TrainError(f"qat.warp_px, warp_deg and warp_scale move 2-D images; these inputs "
                         f"have geometry {tuple(geometry)}: set the three to 0")
    torch.manual_seed(seed)
    xt = torch.tensor(codes, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.int64)
    if warp:  # a generator of its own: initialization and shuffling are those without warping
        xf = torch.tensor(images, dtype=torch.float32).reshape((-1,) + tuple(geometry))
        gw = torch.Generator().manual_seed(seed + 1000)
        low, high = input_range
        lsb = (high - low) / ((1 << input_bits) - 1)
    net = QatNet(xt.shape[1], hidden, int(y.max()) + 1, weight_bits, readout_weight_bits,
                 activation_bits, shift, seed)
    teacher = _teacher(xt, yt, teacher_hidden, epochs, batch_size, seed) if distill > 0 else None
    decay = [net.w1, net.w2]
    rest = [p for p in net.parameters() if all(p is not d for d in decay)]
    opt = torch.optim.Adam([{"params": decay, "weight_decay": weight_decay},
                            {"params": rest, "weight_decay": 0.0}], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed + 1)
    for ep in range(epochs):
        perm = torch.randperm(len(yt), generator=g)
        for i in range(0, len(yt), batch_size):
            idx = perm[i:i + batch_size]
            xb = xt[idx]
            if warp:
                img = random_warps(xf[idx], gw, warp_px, warp_deg, warp_scale).reshape(
                    len(idx), -1)
                # the input converter (input_codes) in torch: round half to even, clip
                xb = torch.clamp(torch.round((img - low) / lsb), 0, (1 << input_bits) - 1)
            if input_dropout > 0:
                xb = xb * (torch.rand(xb.shape, generator=g) >= input_dropout)
            logits = net(xb) * torch.exp(net.log_t)
            loss = nn.functional.cross_entropy(logits, yt[idx])
            if teacher is not None:
                with torch.no_grad():
                    soft = torch.softmax(teacher(xb) / DISTILL_T, dim=1)
                kl = nn.functional.kl_div(torch.log_softmax(logits / DISTILL_T, dim=1), soft,
                                          reduction="batchmean")
                loss = (1 - distill) * loss + distill * DISTILL_T ** 2 * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():  # latent weights stay where rounding can still move them
                net.w1.clamp_(-net.m1 - 0.5, net.m1 + 0.5)
                net.w2.clamp_(-net.m2 - 0.5, net.m2 + 0.5)
        sched.step()
        if log is not None and (ep + 1) % max(1, epochs // 10) == 0:
            log(ep + 1, float(loss.detach()))
    return net


# ---- the stage: `crystalbench train-qat` ---------------------------------------------------
NAME = "qat"
WRITES = (NAME,)
NEEDS_CRYSTAL = True  # its input description and reference (test) vectors
FILE_NAME = "qat_net.json"  # read by crystalbench.rtl.qatnet
VERSION = 1
VALIDATION_FILE = "validation.json"


def _hyper(q) -> dict:
    return {k: q[k] for k in ("hidden", "weight_bits", "readout_weight_bits", "activation_bits",
                              "shift", "epochs", "lr", "batch_size", "weight_decay",
                              "input_dropout", "distill", "teacher_hidden", "warp_px",
                              "warp_deg", "warp_scale")}


def _images(c, ds, x, q) -> dict:
    """fit's arguments for warping: the float images and how they become codes."""
    return {"images": x, "geometry": tuple(ds.geometry), "input_range": (c.input.low, c.input.high),
            "input_bits": q.input_bits}


def _split(cfg, c):
    """The config's training split (no augmentation yet) and the Crystal's test split,
    checked to be the same split the Crystal holds."""
    from . import data as data_mod
    ds = data_mod.load({**cfg.data, "augment_shifts": 0, "augment_warps": 0}, cfg.seed)
    if ds.x_test.shape != c.reference.x.shape or not np.allclose(ds.x_test, c.reference.x):
        raise TrainError(f"the test split of config data/seed ({ds.split}) is not the one the "
                         f"Crystal {c.name} holds; train the QAT net with the config the "
                         "Crystal was trained with, or name its Crystal with --crystal")
    return ds


def _codes(c, x, bits: int) -> np.ndarray:
    return input_codes(x, bits, c.input.low, c.input.high)


def _augment(ds, x, y, k: int):
    from . import data as data_mod
    return data_mod.augment_shifts(x, y, ds.geometry, k) if k else (x, y)


def run(c, cfg, paths, log, validate: bool = False) -> dict:
    """Train the config's `qat` net. With `validate`: train on the training split minus a
    stratified validation part (`qat.validation_fraction`), or with `qat.validation_folds`
    K on each K-1 of K stratified folds of it, for each seed in `qat.validation_seeds`,
    and report validation accuracy only (written to validation.json; the artifact and the
    test split are not touched): the way every hyperparameter was chosen. Without: train
    on the whole training split with `qat.seed`, write the artifact qat_net.json
    (integers, widths, stamped with the Crystal's digest and the config) and report the
    integer net's accuracy on the Crystal's test vectors."""
    import time

    from crystalbench import config as cfgmod
    from crystalbench import crystal as crystal_mod
    from crystalbench import stage
    from crystalbench.results import atomic_write_json

    from . import data as data_mod

    q = cfg.qat
    torch.set_num_threads(1)
    out = paths.stage(NAME)
    out.mkdir(parents=True, exist_ok=True)
    ds = _split(cfg, c)
    hp = _hyper(q)
    t0 = time.perf_counter()

    def progress(tag):
        return lambda ep, loss: log(f"{tag}: epoch {ep}/{q.epochs}, loss {loss:.4f}")

    if validate:
        if q.validation_folds:
            fold = data_mod.stratified_folds(ds.y_train, q.validation_folds, cfg.seed)
            parts = [(np.flatnonzero(fold != f), np.flatnonzero(fold == f))
                     for f in range(q.validation_folds)]
            how = (f"stratified {q.validation_folds}-fold cross-validation over the training "
                   "split (qat.validation_folds, fold seed = config seed)")
        else:
            parts = [data_mod.stratified_split(ds.y_train, q.validation_fraction, cfg.seed)]
            how = ("trained on the training split minus a stratified validation part "
                   "(qat.validation_fraction, split seed = config seed)")
        errors = np.zeros((len(parts), len(q.validation_seeds)), np.int64)
        n_train = []
        for p, (tr, va) in enumerate(parts):
            x, y = _augment(ds, ds.x_train[tr], ds.y_train[tr], q.augment_shifts)
            n_train.append(int(len(y)))
            cv = _codes(c, ds.x_train[va], q.input_bits)
            for j, s in enumerate(q.validation_seeds):
                tag = f"fold {p + 1}/{len(parts)}, seed {s}" if len(parts) > 1 else f"seed {s}"
                net = fit(_codes(c, x, q.input_bits), y, seed=s, log=progress(tag), **hp,
                          **_images(c, ds, x, q))
                lg = integer_forward(net.export(), cv, q.shift, q.activation_bits)
                errors[p, j] = int((lg.argmax(1) != ds.y_train[va]).sum())
        n_val = sum(len(va) for _, va in parts)
        accs = [float(a) for a in 1 - errors.sum(0) / n_val]
        res = {"mode": "validate", "qat": dict(q), "validation_samples": int(n_val),
               "training_samples": n_train, "validation_accuracy": accs,
               "validation_accuracy_mean": float(np.mean(accs)),
               "validation_errors": errors.tolist(),
               "seconds": round(time.perf_counter() - t0, 1),
               "method": f"{how}; accuracy of the exported integer net on the held-out "
                         "samples (per training seed, over every part; errors per part and "
                         "seed in validation_errors, training samples per part in "
                         "training_samples); the test split is not used"}
        atomic_write_json(out / VALIDATION_FILE, res)
        where = (f"{q.validation_folds} folds, errors per fold "
                 f"{errors.sum(1).tolist()}" if q.validation_folds else "held out")
        return {**res, "summary": [
            f"validation accuracy {res['validation_accuracy_mean']:.4f} (seeds "
            f"{list(q.validation_seeds)}: {', '.join(f'{a:.4f}' for a in accs)}) on "
            f"{n_val} training samples ({where}); {out / VALIDATION_FILE}"]}
    x, y = _augment(ds, ds.x_train, ds.y_train, q.augment_shifts)
    net = fit(_codes(c, x, q.input_bits), y, seed=q.seed, log=progress("train"), **hp,
              **_images(c, ds, x, q))
    ints = net.export()
    ct = _codes(c, c.reference.x, q.input_bits)
    cls = integer_forward(ints, ct, q.shift, q.activation_bits).argmax(1)
    train_cls = integer_forward(ints, _codes(c, ds.x_train, q.input_bits), q.shift,
                                q.activation_bits).argmax(1)
    formats = {k: int(q[k]) for k in ("input_bits", "weight_bits", "readout_weight_bits",
                                      "activation_bits", "shift")}
    art = {"version": VERSION, "crystal": {"digest": crystal_mod.digest(c), "name": c.name},
           "config": cfgmod.qat_stamp(q), "formats": formats,
           **{k: v.tolist() for k, v in ints.items()}}
    atomic_write_json(out / FILE_NAME, art)
    res = {"crystal_digest": art["crystal"]["digest"], "qat": dict(q),
           "artifact": str(out / FILE_NAME),
           "training_samples": int(len(y)),
           "train_accuracy": float((train_cls == ds.y_train).mean()),
           "golden_test_accuracy": float((cls == c.reference.y).mean()),
           "nonzero_weights": [int((ints["w1"] != 0).sum()), int((ints["w2"] != 0).sum())],
           "seconds": round(time.perf_counter() - t0, 1),
           "method": "quantization-aware training at the hardware widths (model/qat.py); the "
                     "exported integers evaluated by the integer forward pass on the "
                     "Crystal's test vectors; hyperparameters chosen with --validate on a "
                     "validation part of the training split"}
    return stage.finish(NAME, paths, res, [
        f"QAT net {q.hidden} hidden, weights {q.weight_bits}/{q.readout_weight_bits} bits, "
        f"inputs {q.input_bits}, hidden codes {q.activation_bits} bits, shift {q.shift}: "
        f"train accuracy {res['train_accuracy']:.4f}, test accuracy (integer net) "
        f"{res['golden_test_accuracy']:.4f}; nonzero weights {res['nonzero_weights']}",
        f"artifact {out / FILE_NAME} (read-only downstream; synth/sim with qat.shapes)"])
