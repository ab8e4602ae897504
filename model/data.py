"""Data sets: sklearn's 8x8 digits (default), mnist1d, and MNIST from local IDX files.

Every loader returns model-unit float32 inputs plus the affine input scaling
(`x = (raw - offset) * scale`) that the Crystal records, and the input geometry that
geometric neurons sit on.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from crystalbench.errors import DataError


@dataclass(frozen=True, eq=False)
class Dataset:
    name: str
    x_train: np.ndarray  # float32 (n, d), model units
    y_train: np.ndarray  # int64 (n,)
    x_test: np.ndarray
    y_test: np.ndarray
    geometry: tuple[int, ...]
    offset: float
    scale: float
    n_classes: int
    split: str  # how the train/test split was made, for reports
    # Row i of x_train/x_test is sample train_index[i]/test_index[i] of the source, in the
    # source's own order (digits: sklearn's load_digits(); mnist1d, mnist: the source's
    # train and test arrays). Shifted copies repeat the index of the sample they copy.
    train_index: np.ndarray | None = None
    test_index: np.ndarray | None = None
    index_into: str = ""  # what the indices index, for exports
    # A validation part carved from the training split (data.validation_fraction > 0), for
    # choosing hyperparameters without looking at the test split; None when there is none.
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    val_index: np.ndarray | None = None

    @property
    def n_inputs(self) -> int:
        return int(self.x_train.shape[1])

    def raw(self, x: np.ndarray) -> np.ndarray:
        """Model-unit inputs back in the source's units: raw = x / scale + offset."""
        return (np.asarray(x, np.float64) / self.scale + self.offset).astype(np.float32)

    def rescaled(self, offset: float, scale: float) -> "Dataset":
        """The same samples in other model units: x = (raw - offset) * scale."""
        if not (math.isfinite(scale) and scale != 0 and math.isfinite(offset)):
            raise DataError(f"input scaling (raw - {offset}) * {scale}: the scale must be a "
                            "finite non-zero number and the offset finite")

        def conv(x):
            return ((np.asarray(x, np.float64) / self.scale + self.offset - offset)
                    * scale).astype(np.float32)

        return dataclasses.replace(self, x_train=conv(self.x_train), x_test=conv(self.x_test),
                                   offset=float(offset), scale=float(scale))


def stratified_split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic stratified split: per class, a seeded permutation, the first share to test."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def stratified_folds(y: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Each sample's fold 0..k-1 for stratified k-fold cross-validation: per class (in
    label order) a permutation from one seeded generator, then positions dealt round
    robin, so every fold holds each class's count // k or one more."""
    rng = np.random.default_rng(seed)
    folds = np.empty(len(y), np.int64)
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        folds[idx[rng.permutation(len(idx))]] = np.arange(len(idx)) % k
    return folds


def load_digits(test_fraction: float, seed: int) -> Dataset:
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    raw = d.data.astype(np.float32)  # pixel intensities 0..16
    y = d.target.astype(np.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    scale = 1.0 / 16.0
    x = raw * scale
    return Dataset("digits", x[tr], y[tr], x[te], y[te], (8, 8), 0.0, scale, 10,
                   f"sklearn digits (1,797 samples), stratified {1 - test_fraction:.0%}/"
                   f"{test_fraction:.0%} split, seed {seed}", tr, te,
                   "sklearn.datasets.load_digits() samples (d.data[i], d.target[i])")


# Fresh validation draws use dataset seed MNIST1D_DRAW_SEED + the config's seed; the
# package's train/test split is its dataset seed 42.
MNIST1D_DRAW_SEED = 1000


def _mnist1d_generate(**changes):
    """The mnist1d generator (make_dataset, from the package's templates) with the package's
    arguments changed by `changes`: (args, data). make_dataset seeds numpy's and random's
    global generators; their states are put back afterwards."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    for key, value in changes.items():
        setattr(args, key, value)
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        return args, make_dataset(args)
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


def mnist1d_draw(n: int, dataset_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n fresh mnist1d samples (n / 10 per class) from the generator seeded with
    dataset_seed, in the generator's units (a draw is centred and scaled by its own mean
    and standard deviation, as the package's own split is)."""
    _, d = _mnist1d_generate(num_samples=n, seed=dataset_seed)
    return (np.concatenate([d["x"], d["x_test"]]).astype(np.float32),
            np.concatenate([d["y"], d["y_test"]]).astype(np.int64))


def load_mnist1d(seed: int) -> Dataset:
    args, d = _mnist1d_generate()  # the package's own split (dataset seed args.seed)
    x_tr = np.asarray(d["x"], dtype=np.float32)
    x_te = np.asarray(d["x_test"], dtype=np.float32)
    # One global affine scaling from training statistics: hardware sees one input range.
    offset = float(x_tr.mean())
    scale = float(1.0 / x_tr.std())
    return Dataset("mnist1d", (x_tr - offset) * scale, np.asarray(d["y"], np.int64),
                   (x_te - offset) * scale, np.asarray(d["y_test"], np.int64), (x_tr.shape[1],),
                   offset, scale, 10,
                   f"mnist1d generated locally (make_dataset, dataset seed {args.seed}), "
                   f"its own {len(x_tr)}/{len(x_te)} split", np.arange(len(x_tr)),
                   np.arange(len(x_te)), "mnist1d make_dataset(get_dataset_args()): rows of "
                   "d['x'] (train) and d['x_test'] (test)")


# ---- MNIST from IDX files ---------------------------------------------------------------
_IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) as used by MNIST."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read IDX file ({e})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path}: not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    if dtype_code not in _IDX_TYPES:
        raise DataError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(_IDX_TYPES[dtype_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(data) - header != expected:
        raise DataError(f"{path}: IDX header says {dims} ({expected} bytes) but the file holds "
                        f"{len(data) - header} bytes of data")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (folder / name).exists():
            return folder / name
    raise DataError(f"{folder}: missing {stem} (or {stem}.gz); data.path must hold the four "
                    "MNIST IDX files")


def load_mnist(path: str | Path) -> Dataset:
    folder = Path(path)
    if not folder.is_dir():
        raise DataError(f"data.path {str(path)!r} is not a folder holding the MNIST IDX files")
    x_tr = read_idx(_find(folder, "train-images-idx3-ubyte"))
    y_tr = read_idx(_find(folder, "train-labels-idx1-ubyte"))
    x_te = read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    y_te = read_idx(_find(folder, "t10k-labels-idx1-ubyte"))
    for x, y, what in ((x_tr, y_tr, "train"), (x_te, y_te, "t10k")):
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"{folder}: {what} images {x.shape} and labels {y.shape} do not match "
                            "(expected (n, rows, cols) and (n,))")
    h, w = x_tr.shape[1:]
    scale = 1.0 / 255.0
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) * scale  # noqa: E731
    n_classes = int(max(y_tr.max(), y_te.max())) + 1
    return Dataset("mnist", flat(x_tr), y_tr.astype(np.int64), flat(x_te), y_te.astype(np.int64),
                   (int(h), int(w)), 0.0, scale, n_classes,
                   f"MNIST IDX files from {folder}, their own {len(y_tr)}/{len(y_te)} split",
                   np.arange(len(y_tr)), np.arange(len(y_te)),
                   "images of train-images-idx3-ubyte (train) and t10k-images-idx3-ubyte (test)")


def augment_shifts(x: np.ndarray, y: np.ndarray, geometry: tuple[int, ...], k: int):
    """The training set plus copies shifted by 1..k steps along each axis, both ways
    (zero fill). A fixed, enlarged set: the frozen-core cache still applies to it."""
    xs, ys = [x], [y]
    img = x.reshape((len(x),) + tuple(geometry))
    for axis in range(len(geometry)):
        for step in range(1, k + 1):
            for sign in (1, -1):
                shifted = np.zeros_like(img)
                src = [slice(None)] * img.ndim
                dst = [slice(None)] * img.ndim
                if sign > 0:
                    src[axis + 1], dst[axis + 1] = slice(0, -step), slice(step, None)
                else:
                    src[axis + 1], dst[axis + 1] = slice(step, None), slice(0, -step)
                shifted[tuple(dst)] = img[tuple(src)]
                xs.append(shifted.reshape(len(x), -1))
                ys.append(y)
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys)


# The warped copies' own generator seed: one fixed draw, whatever the config's seed (the
# seed already picks the split, so each seed warps other images).
WARP_DRAW_SEED = 1234


def warp_images(img, shift_px, angle_rad, scale):
    """Each image (n, H, W) rotated by angle_rad[i], scaled by scale[i] and moved by
    shift_px[i] = (dx, dy) pixels (+x right, +y down), bilinear, zero outside (torch
    tensors in, a tensor out)."""
    import torch
    from torch import nn

    n, h, w = img.shape
    c, s = torch.cos(angle_rad) / scale, torch.sin(angle_rad) / scale
    # affine_grid maps output to input positions in -1..1 coordinates: one pixel is 2 / W
    tx, ty = -shift_px[:, 0] * 2 / w, -shift_px[:, 1] * 2 / h
    theta = torch.stack([torch.stack([c, -s, tx], 1), torch.stack([s, c, ty], 1)], 1)
    grid = nn.functional.affine_grid(theta, (n, 1, h, w), align_corners=False)
    return nn.functional.grid_sample(img[:, None], grid, mode="bilinear", padding_mode="zeros",
                                     align_corners=False)[:, 0]


def random_warps(img, generator, px: float, deg: float, scale: float):
    """Each image (n, H, W) moved by up to +-px pixels in x and y, rotated by up to +-deg
    degrees and scaled by 1 +- scale: one draw u = 2 rand(4, n) - 1 from `generator`
    (angle u0, scale u1, move u2, u3), then warp_images."""
    import torch

    u = torch.rand(4, len(img), generator=generator) * 2 - 1
    return warp_images(img, u[2:].T * px, u[0] * math.radians(deg), 1 + u[1] * scale)


def warped_copies(x: np.ndarray, geometry: tuple[int, ...], k: int, px: float, deg: float,
                  scale: float) -> list[np.ndarray]:
    """k copies of the images x (n, H*W), each image moved by up to +-px pixels in x and y,
    rotated by up to +-deg degrees and scaled by 1 +- scale (uniform draws from a
    generator of its own, WARP_DRAW_SEED; bilinear, zero outside). Drawn once: like the
    shifted copies a fixed, enlarged set, so the frozen-core cache still applies."""
    import torch

    if len(geometry) != 2:
        raise DataError(f"data.augment_warps: {k}: warping moves 2-D images and these inputs "
                        f"have geometry {tuple(geometry)}; set data.augment_warps to 0 (or use "
                        "data.augment_shifts)")
    g = torch.Generator().manual_seed(WARP_DRAW_SEED)
    img = torch.tensor(x, dtype=torch.float32).reshape((len(x),) + tuple(geometry))
    return [random_warps(img, g, px, deg, scale).reshape(len(x), -1).numpy().astype(np.float32)
            for _ in range(k)]


def load(data_cfg, seed: int) -> Dataset:
    """Load the data set a config's `data` section names."""
    name = data_cfg["dataset"]
    v = data_cfg.get("validation_fraction", 0.0) or 0.0
    n_draw = data_cfg.get("validation_draw", 0) or 0
    if n_draw:
        if name != "mnist1d":
            raise DataError(f"data.validation_draw: {n_draw}: fresh samples need a generated "
                            f"data set and {name} is not one; use data.validation_fraction "
                            "(a part of the training split) instead")
        if v > 0:
            raise DataError(f"data.validation_draw ({n_draw}) and data.validation_fraction "
                            f"({v}) both ask for a validation set; set one of them to 0")
        if n_draw % 10:
            raise DataError(f"data.validation_draw: {n_draw}: the generator draws the same "
                            "number of samples of each of the 10 classes; use a multiple of "
                            "10")
    if name == "digits":
        ds = load_digits(data_cfg["test_fraction"], seed)
    elif name == "mnist1d":
        ds = load_mnist1d(seed)
    elif name == "mnist":
        ds = load_mnist(data_cfg["path"])
    else:  # the config schema already refuses this; kept for API callers
        raise DataError(f"unknown dataset {name!r}; use digits, mnist1d or mnist")
    n = data_cfg.get("max_train")
    if n is not None and n < len(ds.y_train):
        keep, _ = stratified_split(ds.y_train, 1.0 - n / len(ds.y_train), seed)
        ds = dataclasses.replace(ds, x_train=ds.x_train[keep], y_train=ds.y_train[keep],
                                 train_index=ds.train_index[keep],
                                 split=ds.split + f", {n} training samples kept")
    if v > 0:  # before augmentation: no shifted copy of a validation sample is trained on
        fit, val = stratified_split(ds.y_train, v, seed)
        ds = dataclasses.replace(ds, x_val=ds.x_train[val], y_val=ds.y_train[val],
                                 val_index=ds.train_index[val], x_train=ds.x_train[fit],
                                 y_train=ds.y_train[fit], train_index=ds.train_index[fit],
                                 split=ds.split + f", {v:.0%} of the training split held out "
                                 f"for validation ({len(val)} samples, stratified)")
    if n_draw:
        draw_seed = MNIST1D_DRAW_SEED + seed
        x, y = mnist1d_draw(n_draw, draw_seed)
        ds = dataclasses.replace(ds, x_val=((x - ds.offset) * ds.scale).astype(np.float32),
                                 y_val=y, split=ds.split + f", validation on {n_draw} fresh "
                                 f"samples from the generator (dataset seed {draw_seed})")
    k = data_cfg.get("augment_shifts", 0)
    n_warps = data_cfg.get("augment_warps", 0) or 0
    if k or n_warps:
        x, y = ds.x_train, ds.y_train
        how = []
        if k:
            x, y = augment_shifts(x, y, ds.geometry, k)
            how.append(f"shifts up to {k} step(s) per axis")
        if n_warps:  # copies of the unshifted images, after the shifted ones
            from crystalbench.config import SCHEMA
            px, deg, sc = (data_cfg.get(key, SCHEMA["data"][key].default)
                           for key in ("warp_px", "warp_deg", "warp_scale"))
            x = np.concatenate([x, *warped_copies(ds.x_train, ds.geometry, n_warps, px, deg, sc)])
            y = np.concatenate([y, *[ds.y_train] * n_warps])
            how.append(f"{n_warps} warped copies (up to {px:g} px, {deg:g} degrees, "
                       f"{sc:g} scale)")
        copies = len(y) // len(ds.y_train)
        ds = dataclasses.replace(ds, x_train=x, y_train=y,
                                 train_index=np.tile(ds.train_index, copies),
                                 split=ds.split + f", training set augmented with "
                                 f"{' and '.join(how)} ({len(y)} samples)")
    return ds


# ---- export ------------------------------------------------------------------------------
SPLIT_NPZ = "split.npz"
SPLIT_JSON = "split.json"


def export_split(cfg, folder: str | Path) -> dict:
    """Write the config's train/test split to `folder`: split.npz (x in model units and
    raw, labels, source indices) and split.json (scaling, split, how to reproduce it)."""
    from crystalbench.results import atomic_write_bytes, atomic_write_json

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DataError(f"{folder}: is a file; --export names a folder to write "
                        f"{SPLIT_NPZ} and {SPLIT_JSON} into")
    ds = load(cfg.data, cfg.seed)
    arrays = {"x_train": ds.x_train, "y_train": ds.y_train, "x_test": ds.x_test,
              "y_test": ds.y_test, "x_train_raw": ds.raw(ds.x_train),
              "x_test_raw": ds.raw(ds.x_test), "train_index": ds.train_index,
              "test_index": ds.test_index}
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(folder / SPLIT_NPZ, buf.getvalue())
    shifts, warps = cfg.data.augment_shifts, cfg.data.augment_warps
    n_source = len(ds.y_train) // (1 + 2 * len(ds.geometry) * shifts + warps)
    meta = {
        "dataset": ds.name, "experiment": cfg.experiment, "seed": cfg.seed,
        "split": ds.split, "geometry": list(ds.geometry), "n_classes": ds.n_classes,
        "n_train": len(ds.y_train), "n_test": len(ds.y_test),
        "scaling": {"offset": ds.offset, "scale": ds.scale,
                    "model_input": "x = (raw - offset) * scale"},
        "indices": {"into": ds.index_into,
                    "train_index": "source sample of each row of x_train",
                    "test_index": "source sample of each row of x_test"},
        "augmentation": ({"shifts": shifts, "warps": warps, "source_rows": n_source,
                          "note": f"rows {n_source}.. of x_train are copies of rows "
                                  f"0..{n_source - 1}: first shifted along each geometry "
                                  "axis (zero fill), then warped (data.warp_px, warp_deg, "
                                  "warp_scale); train_index repeats their source"}
                         if shifts or warps else None),
        "arrays": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in arrays.items()},
    }
    if ds.name == "digits":
        meta["reproduce"] = ("from sklearn.datasets import load_digits; d = load_digits(); "
                             "x_test = (d.data[test_index] - offset) * scale; "
                             "y_test = d.target[test_index]")
    atomic_write_json(folder / SPLIT_JSON, meta)
    return {"files": [str(folder / SPLIT_NPZ), str(folder / SPLIT_JSON)], **meta,
            "summary": [f"{ds.name}: {len(ds.y_train)} train / {len(ds.y_test)} test samples, "
                        f"x = (raw - {ds.offset:g}) * {ds.scale:g}",
                        f"split: {ds.split}",
                        f"arrays:  {folder / SPLIT_NPZ} (x_train, y_train, x_test, y_test, "
                        "x_*_raw, train_index, test_index)",
                        f"details: {folder / SPLIT_JSON}"]}
