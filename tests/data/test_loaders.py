"""Data loaders: embedded, synthetic, MNIST IDX and CIFAR-2 npz, and their errors."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from raytda.data import DataError
from raytda.data.cifar2 import load_cifar2
from raytda.data.digits import load_digits
from raytda.data.mnist import FILES, load_mnist, read_idx
from raytda.data.synthetic import load_synthetic

# The shared data directory sits beside the repository root: <root>/../shared/data.
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
CIFAR2_DIR = SHARED / "cifar2"


def write_idx(path: Path, arr: np.ndarray, gz: bool = False) -> None:
    """IDX format: 0x00 0x00, type 0x08 (uint8), ndim, big-endian dims, raw bytes."""
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                      for d in arr.shape)
    blob = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        blob = gzip.compress(blob)
    path.write_bytes(blob)


def fake_mnist(root: Path, n_train: int = 12, n_test: int = 5, gz: bool = False) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, size=(n_train, 28, 28)),
        "y_train": rng.integers(0, 10, size=n_train),
        "x_test": rng.integers(0, 256, size=(n_test, 28, 28)),
        "y_test": rng.integers(0, 10, size=n_test),
    }
    for key, stem in FILES.items():
        write_idx(root / stem, arrays[key], gz=gz)
    return arrays


def check_dataset(ds, n_train: int, n_test: int, dim: int, n_classes: int) -> None:
    assert ds.x_train.shape == (n_train, dim) and ds.x_test.shape == (n_test, dim)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    for x in (ds.x_train, ds.x_test):
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    for y in (ds.y_train, ds.y_test):
        assert 0 <= int(y.min()) and int(y.max()) < n_classes


# ----------------------------------------------------------------------------- embedded


def test_digits_loader_sizes_scale_and_seed():
    ds = load_digits(100, 30, seed=1)
    check_dataset(ds, 100, 30, 64, 10)
    assert float(ds.x_train.max()) == 1.0  # scaled by 16, the digits' max pixel value
    again = load_digits(100, 30, seed=1)
    assert torch.equal(ds.x_train, again.x_train) and torch.equal(ds.y_test, again.y_test)
    other = load_digits(100, 30, seed=2)
    assert not torch.equal(ds.x_train, other.x_train)


def test_digits_train_and_test_are_disjoint():
    ds = load_digits(n_train=1000, n_test=300)
    train_rows = {tuple(r.tolist()) for r in ds.x_train}
    overlap = sum(tuple(r.tolist()) in train_rows for r in ds.x_test)
    assert overlap < 5  # a handful of digits are pixel-identical duplicates in the source


def test_synthetic_loader_is_seeded():
    a, b = load_synthetic(30, 10), load_synthetic(30, 10)
    assert torch.equal(a.x_train, b.x_train)
    assert a.x_train.shape == (30, 8) and int(a.y_train.max()) < 3
    assert not torch.equal(a.x_train, load_synthetic(30, 10, seed=1).x_train)


def test_asking_for_more_samples_than_exist():
    with pytest.raises(DataError, match="only 1437.*lower n_train"):
        load_digits(n_train=5000, n_test=10)


# ----------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_round_trip(tmp_path, gz):
    arrays = fake_mnist(tmp_path, gz=gz)
    ds = load_mnist(str(tmp_path), n_train=12, n_test=5)
    # Taking every sample returns them in file order, so values can be compared 1:1.
    expected = torch.from_numpy(arrays["x_train"].reshape(12, 784).astype(np.float32) / 255.0)
    torch.testing.assert_close(ds.x_train, expected, rtol=0, atol=0)
    assert ds.y_train.tolist() == arrays["y_train"].tolist()
    assert ds.y_test.tolist() == arrays["y_test"].tolist()
    assert ds.x_test.shape == (5, 784)


def test_mnist_subsample_is_a_subset_in_order(tmp_path):
    arrays = fake_mnist(tmp_path, n_train=30)
    ds = load_mnist(str(tmp_path), n_train=10, n_test=2, seed=3)
    flat = arrays["x_train"].reshape(30, 784).astype(np.float32) / 255.0
    idx = [int(np.flatnonzero((flat == r.numpy()).all(1))[0]) for r in ds.x_train]
    assert idx == sorted(set(idx)) and len(idx) == 10
    assert ds.y_train.tolist() == arrays["y_train"][idx].tolist()


def test_read_idx_rejects_bad_magic_and_truncation(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(b"\x00\x00\x09\x01" + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match="bad magic number"):
        read_idx(bad)
    short = tmp_path / "short"
    short.write_bytes(b"\x00\x00\x08\x01" + (10).to_bytes(4, "big") + b"abc")
    with pytest.raises(DataError, match=r"truncated.*\[10\].*3 bytes"):
        read_idx(short)


def test_mnist_directory_errors(tmp_path):
    with pytest.raises(DataError, match="needs a data directory"):
        load_mnist(None, n_train=10, n_test=2)
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(str(tmp_path / "missing"), n_train=10, n_test=2)
    with pytest.raises(DataError, match="train-images-idx3-ubyte.*not found"):
        load_mnist(str(tmp_path), n_train=10, n_test=2)
    fake_mnist(tmp_path)
    (tmp_path / FILES["y_test"]).unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        load_mnist(str(tmp_path), n_train=10, n_test=2)


@pytest.mark.data
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no shared MNIST at {MNIST_DIR}")
def test_real_mnist():
    ds = load_mnist(str(MNIST_DIR), n_train=500, n_test=100)
    check_dataset(ds, 500, 100, 784, 10)
    assert float(ds.x_train.max()) == 1.0
    assert len(ds.y_train.unique()) == 10
    # Real digits are mostly background: a scaling or layout bug would change this.
    assert 0.05 < float(ds.x_train.mean()) < 0.25


# ----------------------------------------------------------------------------- CIFAR-2


def test_cifar2_npz_is_flattened_channel_first(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8),
              "y_train": rng.integers(0, 2, 6, dtype=np.uint8),
              "x_test": rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8),
              "y_test": rng.integers(0, 2, 3, dtype=np.uint8)}
    np.savez(tmp_path / "cifar2.npz", **arrays)
    ds = load_cifar2(str(tmp_path), n_train=6, n_test=3)
    check_dataset(ds, 6, 3, 3072, 2)
    chw = arrays["x_train"][0].transpose(2, 0, 1).astype(np.float32) / 255.0
    np.testing.assert_array_equal(ds.x_train[0].numpy().reshape(3, 32, 32), chw)
    assert ds.y_train.dtype == torch.int64


def test_cifar2_errors(tmp_path):
    with pytest.raises(DataError, match="needs a data directory"):
        load_cifar2(None, n_train=4, n_test=2)
    with pytest.raises(DataError, match="cifar2.npz not found"):
        load_cifar2(str(tmp_path), n_train=4, n_test=2)
    np.savez(tmp_path / "cifar2.npz", x_train=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"lacks arrays \['y_train', 'x_test', 'y_test'\]"):
        load_cifar2(str(tmp_path), n_train=4, n_test=2)


@pytest.mark.data
@pytest.mark.skipif(not (CIFAR2_DIR / "cifar2.npz").is_file(),
                    reason=f"no shared CIFAR-2 at {CIFAR2_DIR}")
def test_real_cifar2():
    ds = load_cifar2(str(CIFAR2_DIR), n_train=200, n_test=50)
    check_dataset(ds, 200, 50, 3072, 2)
    assert set(ds.y_train.tolist()) == {0, 1}  # sampling must reach both class blocks


def test_damaged_gzip_idx_names_the_file(tmp_path):
    fake_mnist(tmp_path, gz=True)
    bad = tmp_path / (FILES["x_train"] + ".gz")
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # cut mid-stream
    with pytest.raises(DataError, match=f"cannot read {bad}"):
        load_mnist(str(tmp_path), n_train=4, n_test=2)
    bad.write_bytes(b"not gzip at all, just bytes")
    with pytest.raises(DataError, match=f"cannot read {bad}"):
        load_mnist(str(tmp_path), n_train=4, n_test=2)


def test_mnist_images_without_labels(tmp_path):
    fake_mnist(tmp_path, n_train=12)
    write_idx(tmp_path / FILES["y_train"], np.zeros(7))  # 12 images, 7 labels
    with pytest.raises(DataError, match="has 12 samples but .* has 7 labels"):
        load_mnist(str(tmp_path), n_train=4, n_test=2)
    write_idx(tmp_path / FILES["y_train"], np.zeros((12, 28, 28)))  # images in place of labels
    with pytest.raises(DataError, match=r"train-labels.* not labels \(n,\)"):
        load_mnist(str(tmp_path), n_train=4, n_test=2)


def test_cifar2_damaged_or_unpaired(tmp_path):
    path = tmp_path / "cifar2.npz"
    path.write_bytes(b"PK\x03\x04 a damaged zip")
    with pytest.raises(DataError, match=f"cannot read {path}"):
        load_cifar2(tmp_path, 4, 2)
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(path)
    with pytest.raises(DataError, match="single array"):
        load_cifar2(tmp_path, 4, 2)
    np.savez(path, x_train=np.zeros((6, 32, 32, 3), np.uint8), y_train=np.zeros(5, np.uint8),
             x_test=np.zeros((3, 32, 32, 3), np.uint8), y_test=np.zeros(3, np.uint8))
    with pytest.raises(DataError, match=r"x_train\] has 6 samples but .*y_train\] has 5"):
        load_cifar2(tmp_path, 4, 2)
