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
