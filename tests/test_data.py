import gzip
import json
import struct

import numpy as np
import pytest

from crystalbench import config as cfgmod
from crystalbench import crystal as cm
from crystalbench.cli import main
from crystalbench.errors import DataError
from crystalbench.model import data


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return load_digits()


def write_idx(path, arr):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    body = arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as fh:
        fh.write(header + body)


def make_mnist(folder, n_train=30, n_test=10, gz=False):
    rng = np.random.default_rng(1)
    sfx = ".gz" if gz else ""
    imgs = {}
    for stem, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, size=(n, 6, 5), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_idx(folder / f"{stem}-images-idx3-ubyte{sfx}", x)
        write_idx(folder / f"{stem}-labels-idx1-ubyte{sfx}", y)
        imgs[stem] = (x, y)
    return imgs


@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, gz):
    arr = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 7
    p = tmp_path / ("a.idx" + (".gz" if gz else ""))
    write_idx(p, arr)
    np.testing.assert_array_equal(data.read_idx(p), arr)


def test_idx_errors(tmp_path):
    p = tmp_path / "bad"
    p.write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(DataError, match="bad magic"):
        data.read_idx(p)
    p.write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    with pytest.raises(DataError, match=r"header says \(10,\) \(10 bytes\) but the file holds 3"):
        data.read_idx(p)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_loader_on_small_idx_files(tmp_path, gz):
    imgs = make_mnist(tmp_path, gz=gz)
    ds = data.load({"dataset": "mnist", "path": str(tmp_path), "max_train": None}, seed=0)
    assert ds.geometry == (6, 5) and ds.n_inputs == 30 and ds.n_classes == 10
    np.testing.assert_allclose(ds.x_train, imgs["train"][0].reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.y_test, imgs["t10k"][1])
    assert ds.x_train.dtype == np.float32 and ds.scale == pytest.approx(1 / 255)
    np.testing.assert_array_equal(ds.train_index, np.arange(30))
    np.testing.assert_array_equal(ds.test_index, np.arange(10))


def test_mnist_missing_file_is_named(tmp_path):
    make_mnist(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="missing t10k-labels-idx1-ubyte"):
        data.load({"dataset": "mnist", "path": str(tmp_path)}, seed=0)


def test_digits_split_is_stratified_and_deterministic():
    a = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=0)
    b = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=0)
    c = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=1)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    assert not np.array_equal(a.x_test, c.x_test)
    assert len(a.y_train) + len(a.y_test) == 1797
    share = np.bincount(a.y_test) / np.bincount(np.concatenate([a.y_train, a.y_test]))
    assert np.all(np.abs(share - 0.2) < 0.02)
    assert a.x_train.max() <= 1.0 and a.scale == 1 / 16 and a.geometry == (8, 8)


def test_shift_augmentation():
    x = np.zeros((1, 9), np.float32)
    x[0, 4] = 1.0  # centre of a 3x3 image
    xa, ya = data.augment_shifts(x, np.array([7]), (3, 3), 1)
    assert xa.shape == (5, 9) and set(ya) == {7}
    assert sorted(int(np.argmax(r)) for r in xa[1:]) == [1, 3, 5, 7]


def test_warp_images_moves_rotates_and_scales_by_hand():
    import torch

    img = torch.arange(1.0, 17.0).reshape(1, 4, 4)
    zero, one = torch.zeros(1), torch.ones(1)

    def warp(dx, dy, angle=0.0, scale=1.0):
        return data.warp_images(img, torch.tensor([[dx, dy]]), torch.tensor([angle]),
                               torch.tensor([scale]))[0].numpy()
    a = img[0].numpy()
    np.testing.assert_allclose(data.warp_images(img, torch.zeros(1, 2), zero, one)[0], a, atol=1e-5)
    # one pixel right (+x): column j shows column j - 1, zero comes in at the left
    np.testing.assert_allclose(warp(1, 0), np.hstack([np.zeros((4, 1)), a[:, :3]]), atol=1e-5)
    # one pixel down (+y)
    np.testing.assert_allclose(warp(0, 1), np.vstack([np.zeros((1, 4)), a[:3]]), atol=1e-5)
    # half a pixel right: bilinear, the mean of the two neighbours (half of the edge pixel)
    half = np.hstack([a[:, :1] / 2, (a[:, :3] + a[:, 1:]) / 2])
    np.testing.assert_allclose(warp(0.5, 0), half, atol=1e-5)
    # a quarter turn: out[i, j] = in[j, 3 - i] (np.rot90), pixel centres onto pixel centres
    np.testing.assert_allclose(warp(0, 0, np.pi / 2), np.rot90(a), atol=1e-5)
    # scale 2 magnifies about the centre: output column 0 (x = -0.75) reads x = -0.375,
    # i.e. 3/4 of the way from input column 0 to 1
    row = torch.tensor([[0.0, 4.0, 8.0, 12.0]] * 4).reshape(1, 4, 4)
    got = data.warp_images(row, torch.zeros(1, 2), zero, torch.tensor([2.0]))[0, 1].numpy()
    np.testing.assert_allclose(got, [3.0, 5.0, 7.0, 9.0], atol=1e-5)


def test_warped_copies_follow_their_draws_after_the_shifted_ones(digits, monkeypatch):
    """data.augment_warps: K copies of the unshifted training images after the shifted set,
    each warped by draws u = 2 * rand(4, n) - 1 from a generator seeded WARP_DRAW_SEED
    (angle u0 x warp_deg, scale 1 + u1 x warp_scale, move (u2, u3) x warp_px), one
    rand(4, n) per copy; the warp itself is warp_images (tested by hand above)."""
    import torch

    seen = []

    def record(img, shift_px, angle_rad, scale):
        seen.append((img.clone(), shift_px.clone(), angle_rad.clone(), scale.clone()))
        return img + len(seen)  # copy k: the image + k

    monkeypatch.setattr(data, "warp_images", record)
    cfg = {"dataset": "digits", "test_fraction": 0.2, "max_train": 100, "augment_shifts": 1,
           "augment_warps": 2, "warp_px": 0.75, "warp_deg": 10.0, "warp_scale": 0.2}
    ds = data.load(cfg, seed=0)
    shifted = data.load({**cfg, "augment_warps": 0}, seed=0)
    assert len(ds.y_train) == len(ds.train_index) == 700  # 100 + 4 shifts + 2 warps of each
    np.testing.assert_array_equal(ds.x_train[:500], shifted.x_train)
    src = ds.train_index[:100]
    np.testing.assert_array_equal(ds.train_index, np.tile(src, 7))
    np.testing.assert_array_equal(ds.y_train, np.tile(digits.target[src], 7))
    orig = (digits.data[src] / 16).astype(np.float32)
    for k in (1, 2):  # the stub's mark: copy k of the unshifted images
        np.testing.assert_allclose(ds.x_train[400 + 100 * k:500 + 100 * k], orig + k, atol=1e-6)
    g = torch.Generator().manual_seed(1234)
    assert data.WARP_DRAW_SEED == 1234
    for img, shift, angle, scale in seen:
        u = torch.rand(4, 100, generator=g) * 2 - 1
        np.testing.assert_array_equal(img.numpy(), orig.reshape(100, 8, 8))
        np.testing.assert_allclose(angle, u[0] * np.pi * 10 / 180, rtol=1e-6)
        np.testing.assert_allclose(scale, 1 + u[1] * 0.2, rtol=1e-6)
        np.testing.assert_allclose(shift, u[2:].T * 0.75, rtol=1e-6)
    assert len(seen) == 2
    assert "shifts up to 1 step(s) per axis and 2 warped copies (up to 0.75 px, 10 degrees, "\
        "0.2 scale) (700 samples)" in ds.split


def test_warped_copies_at_zero_warp_are_the_images_and_refuse_1d_inputs(digits):
    ds = data.load({"dataset": "digits", "test_fraction": 0.2, "max_train": 50,
                    "augment_warps": 3, "warp_px": 0.0, "warp_deg": 0.0, "warp_scale": 0.0},
                   seed=1)
    assert len(ds.y_train) == 200
    for k in range(1, 4):  # the identity warp samples every pixel centre: the image itself
        np.testing.assert_allclose(ds.x_train[50 * k:50 * (k + 1)], ds.x_train[:50], atol=1e-6)
    with pytest.raises(DataError) as e:
        data.warped_copies(np.zeros((2, 40), np.float32), (40,), 2, 0.5, 6.0, 0.05)
    assert str(e.value) == ("data.augment_warps: 2: warping moves 2-D images and these inputs "
                            "have geometry (40,); set data.augment_warps to 0 (or use "
                            "data.augment_shifts)")


def test_stratified_folds_deal_each_class_round_robin():
    """Class 0 has 5 samples, class 1 has 3, dealt to 2 folds: class 0 gives folds 3 and
    2 samples, class 1 gives 2 and 1; which sample goes where follows one generator
    seeded with the seed, one permutation per class in label order."""
    y = np.array([1, 0, 0, 1, 0, 0, 1, 0])
    folds = data.stratified_folds(y, 2, seed=7)
    assert folds.shape == (8,) and set(folds.tolist()) <= {0, 1}
    assert [int(((y == 0) & (folds == f)).sum()) for f in (0, 1)] == [3, 2]
    assert [int(((y == 1) & (folds == f)).sum()) for f in (0, 1)] == [2, 1]
    rng = np.random.default_rng(7)
    p0, p1 = rng.permutation(5), rng.permutation(3)
    expected = np.empty(8, np.int64)
    expected[np.array([1, 2, 4, 5, 7])[p0]] = [0, 1, 0, 1, 0]
    expected[np.array([0, 3, 6])[p1]] = [0, 1, 0]
    np.testing.assert_array_equal(folds, expected)
    np.testing.assert_array_equal(data.stratified_folds(y, 2, seed=7), folds)
    # 3 folds of 5 samples of class 0: 2, 2, 1
    assert np.bincount(data.stratified_folds(np.zeros(5, int), 3, 0), minlength=3).tolist() \
        == [2, 2, 1]


def test_exported_split_counts_the_warped_copies(tmp_path):
    cfg = cfgmod.validate({"experiment": "e", "data": {"max_train": 60, "augment_shifts": 1,
                                                       "augment_warps": 2}}, "<t>")
    meta = data.export_split(cfg, tmp_path / "split")
    assert meta["n_train"] == 60 * 7
    aug = meta["augmentation"]
    assert (aug["shifts"], aug["warps"], aug["source_rows"]) == (1, 2, 60)
    assert aug["note"].startswith("rows 60.. of x_train are copies of rows 0..59: first shifted")


def test_digits_indices_reproduce_the_split_from_load_digits(digits):
    ds = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=0)
    assert np.array_equal(np.sort(np.concatenate([ds.train_index, ds.test_index])), np.arange(1797))
    np.testing.assert_array_equal(ds.x_test, (digits.data[ds.test_index] / 16).astype(np.float32))
    np.testing.assert_array_equal(ds.y_test, digits.target[ds.test_index])
    np.testing.assert_array_equal(ds.x_train, (digits.data[ds.train_index] / 16).astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, digits.target[ds.train_index])
    # per class, round(20%) of its samples: 36 or 37 of each digit, 359 in all
    assert len(ds.y_test) == sum(round(n * 0.2) for n in np.bincount(digits.target)) == 359


def test_subsampling_and_shift_copies_keep_their_source_index(digits):
    ds = data.load({"dataset": "digits", "test_fraction": 0.2, "max_train": 100,
                    "augment_shifts": 1}, seed=0)
    assert len(ds.y_train) == len(ds.train_index) == 500  # 100 + 4 one-pixel shifts of each
    src = ds.train_index[:100]
    np.testing.assert_array_equal(ds.train_index, np.tile(src, 5))
    np.testing.assert_array_equal(ds.x_train[:100], (digits.data[src] / 16).astype(np.float32))
    np.testing.assert_array_equal(ds.y_train, np.tile(digits.target[src], 5))
    img = digits.data[src].reshape(100, 8, 8)
    down = np.zeros_like(img)
    down[:, 1:] = img[:, :-1]  # the first copy: shifted one row down
    np.testing.assert_array_equal(ds.x_train[100:200],
                                  (down.reshape(100, 64) / 16).astype(np.float32))


def test_rescaled_gives_the_same_samples_in_other_units(digits):
    ds = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=0)
    raw = ds.rescaled(0.0, 1.0)
    assert (raw.offset, raw.scale) == (0.0, 1.0)
    np.testing.assert_array_equal(raw.x_test, digits.data[ds.test_index].astype(np.float32))
    np.testing.assert_array_equal(ds.raw(ds.x_test), raw.x_test)
    centred = ds.rescaled(8.0, 0.5)
    np.testing.assert_array_equal(centred.x_train,
                                  ((digits.data[ds.train_index] - 8) * 0.5).astype(np.float32))
    np.testing.assert_array_equal(centred.y_test, ds.y_test)
    with pytest.raises(DataError, match=r"the scale must be a finite non-zero number"):
        ds.rescaled(0.0, 0.0)


def test_exported_split_is_the_crystals_and_reproducible_from_load_digits(trained, tmp_path,
                                                                         digits):
    out = tmp_path / "split"
    assert main(["data", "--config", str(trained.config), "--export", str(out)]) == 0
    with np.load(out / "split.npz") as z:
        arrays = {k: z[k] for k in z.files}
    c = cm.load(trained.crystal)
    np.testing.assert_array_equal(arrays["x_test"], c.reference.x)
    np.testing.assert_array_equal(arrays["y_test"], c.reference.y)
    idx = arrays["test_index"]
    np.testing.assert_array_equal(arrays["x_test_raw"], digits.data[idx].astype(np.float32))
    np.testing.assert_array_equal(digits.target[idx], c.reference.y)
    np.testing.assert_array_equal(arrays["x_train_raw"], digits.data[arrays["train_index"]])
    meta = json.loads((out / "split.json").read_text())
    assert meta["scaling"] == {"offset": 0.0, "scale": 0.0625,
                               "model_input": "x = (raw - offset) * scale"}
    assert (meta["n_train"], meta["n_test"]) == (400, 359)  # TINY keeps 400 training samples
    assert meta["augmentation"] is None and meta["dataset"] == "digits"
    assert "d.data[test_index]" in meta["reproduce"]


def test_export_into_a_file_is_refused(tmp_path):
    f = tmp_path / "taken"
    f.write_text("x")
    cfg = cfgmod.validate({"experiment": "e"}, "<t>")
    with pytest.raises(DataError, match=r"taken: is a file; --export names a folder"):
        data.export_split(cfg, f)


def test_validation_part_comes_from_the_training_split_before_augmentation(digits):
    plain = data.load({"dataset": "digits", "test_fraction": 0.2}, seed=0)
    ds = data.load({"dataset": "digits", "test_fraction": 0.2, "validation_fraction": 0.25,
                    "augment_shifts": 1}, seed=0)
    # the test split is untouched
    np.testing.assert_array_equal(ds.test_index, plain.test_index)
    np.testing.assert_array_equal(ds.x_test, plain.x_test)
    # validation + fitted part = the training split, disjoint; no shifted copy of a
    # validation sample is trained on
    fit = ds.train_index[:len(ds.train_index) // 5]
    np.testing.assert_array_equal(ds.train_index, np.tile(fit, 5))
    assert set(fit).isdisjoint(ds.val_index)
    assert np.array_equal(np.sort(np.concatenate([fit, ds.val_index])), plain.train_index)
    np.testing.assert_array_equal(ds.x_val, (digits.data[ds.val_index] / 16).astype(np.float32))
    np.testing.assert_array_equal(ds.y_val, digits.target[ds.val_index])
    # stratified: per class round(25%) of its training samples
    per_class = np.bincount(plain.y_train)
    assert list(np.bincount(ds.y_val)) == [round(n * 0.25) for n in per_class]
    assert len(ds.y_val) == 359 and "25% of the training split held out" in ds.split
    # none asked for: none made
    assert plain.x_val is None and plain.y_val is None


@pytest.fixture(scope="module")
def mnist1d_split():
    return data.load({"dataset": "mnist1d"}, seed=0)


def test_mnist1d_validation_draw_is_fresh_and_leaves_the_splits_alone(mnist1d_split):
    """data.validation_draw: the package's generator with dataset seed 1000 + seed and
    num_samples n, in the training split's model units; train and test untouched."""
    import random

    from mnist1d.data import get_dataset_args, make_dataset

    np.random.seed(5)
    random.seed(5)
    np_before, py_before = np.random.get_state()[1].copy(), random.getstate()
    ds = data.load({"dataset": "mnist1d", "validation_draw": 120}, seed=3)
    # make_dataset seeds the global generators; load puts them back
    np.testing.assert_array_equal(np.random.get_state()[1], np_before)
    assert random.getstate() == py_before
    plain = mnist1d_split
    np.testing.assert_array_equal(ds.x_train, plain.x_train)
    np.testing.assert_array_equal(ds.x_test, plain.x_test)
    assert (ds.offset, ds.scale) == (plain.offset, plain.scale)
    # by hand: the package's arguments with seed 1003 and 120 samples, x and x_test joined
    args = get_dataset_args()
    args.seed, args.num_samples = 1003, 120
    d = make_dataset(args)
    raw = np.concatenate([d["x"], d["x_test"]])
    np.testing.assert_allclose(ds.x_val, (raw - plain.offset) * plain.scale, rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ds.y_val, np.concatenate([d["y"], d["y_test"]]))
    assert ds.x_val.dtype == np.float32 and list(np.bincount(ds.y_val)) == [12] * 10
    assert "validation on 120 fresh samples from the generator (dataset seed 1003)" in ds.split
    # fresh: no validation row is a training or test row; another seed, another draw
    seen = {r.tobytes() for r in np.concatenate([plain.x_train, plain.x_test])}
    assert not any(r.tobytes() in seen for r in ds.x_val)
    other = data.load({"dataset": "mnist1d", "validation_draw": 120}, seed=4)
    assert not np.array_equal(other.x_val, ds.x_val)
    # none asked for: none made
    assert plain.x_val is None


@pytest.mark.parametrize("cfg, message", [
    ({"dataset": "digits", "test_fraction": 0.2, "validation_draw": 100},
     "data.validation_draw: 100: fresh samples need a generated data set and digits is not "
     "one; use data.validation_fraction (a part of the training split) instead"),
    ({"dataset": "mnist1d", "validation_draw": 100, "validation_fraction": 0.2},
     "data.validation_draw (100) and data.validation_fraction (0.2) both ask for a validation "
     "set; set one of them to 0"),
    ({"dataset": "mnist1d", "validation_draw": 105},
     "data.validation_draw: 105: the generator draws the same number of samples of each of "
     "the 10 classes; use a multiple of 10"),
])
def test_validation_draw_refusals(cfg, message):
    with pytest.raises(DataError) as e:
        data.load(cfg, seed=0)
    assert str(e.value) == message
