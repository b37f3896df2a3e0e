"""Data sources and knobs, on the real files and on fabricated Keras caches."""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np
import pytest

from study.data import DataError, imbalance_keep_fraction, load_dataset
from study.space import DataConfig


def test_debian_fashion_mnist_is_found_first(fashion_mnist_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STUDY_DATA_DIR", raising=False)
    splits = load_dataset(DataConfig(val_size=10000, test_size=2000))
    assert splits.source == f"debian:{fashion_mnist_dir}"
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (50000, 10000, 2000)
    assert splits.input_shape == (28, 28, 1) and splits.num_classes == 10
    assert 0.0 <= splits.x_train.min() and splits.x_train.max() <= 1.0
    # stratified: every class has exactly a tenth of the validation split
    assert np.bincount(splits.y_val).tolist() == [1000] * 10


def test_data_dir_wins_and_a_wrong_one_is_an_error(fashion_mnist_dir: Path, tmp_path: Path) -> None:
    splits = load_dataset(DataConfig(data_dir=str(fashion_mnist_dir), val_size=1000, train_size=500))
    assert splits.source.startswith("data-dir:")
    with pytest.raises(DataError, match="data_dir"):
        load_dataset(DataConfig(data_dir=str(tmp_path)))


def test_digits_are_offline_and_hold_out_a_test_split() -> None:
    splits = load_dataset(DataConfig(name="digits", val_size=300))
    assert splits.source == "sklearn-digits" and splits.input_shape == (8, 8, 1)
    assert (len(splits.y_train), len(splits.y_val), len(splits.y_test)) == (1137, 300, 360)


def test_imbalance_is_a_long_tail_on_every_split() -> None:
    splits = load_dataset(DataConfig(name="digits", val_size=200, class_imbalance=10.0))
    assert imbalance_keep_fraction(10, 10.0)[[0, -1]].tolist() == pytest.approx([1.0, 0.1])
    for labels in (splits.y_train, splits.y_val, splits.y_test):
        counts = np.bincount(labels, minlength=10)
        assert counts[0] / counts[9] == pytest.approx(10.0, rel=0.35)
        assert all(np.diff(counts) <= 3)  # non-increasing up to rounding


def test_label_noise_relabels_train_only() -> None:
    clean = load_dataset(DataConfig(name="digits", val_size=300))
    noisy = load_dataset(DataConfig(name="digits", val_size=300, label_noise=0.2))
    changed = int(np.sum(clean.y_train != noisy.y_train))
    assert changed == noisy.notes["data.labels_flipped"] == round(0.2 * len(clean.y_train))
    assert np.array_equal(clean.y_val, noisy.y_val) and np.array_equal(clean.y_test, noisy.y_test)


def _idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def _images(count: int, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.integers(0, 255, size=(count, *shape)), np.arange(count) % 10


def test_fabricated_keras_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "datasets"
    cache.mkdir()
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    x, y = _images(200, (28, 28))
    np.savez(cache / "mnist.npz", x_train=x, y_train=y, x_test=x[:50], y_test=y[:50])
    mnist = load_dataset(DataConfig(name="mnist", val_size=50))
    assert mnist.source == "keras-cache" and len(mnist.y_train) == 150 and len(mnist.y_test) == 50

    batches = cache / "cifar-10-batches-py"
    batches.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels, labels = _images(40, (3 * 32 * 32,))
        with open(batches / name, "wb") as handle:
            pickle.dump({b"data": pixels.astype(np.uint8), b"labels": labels.tolist()}, handle)
    cifar = load_dataset(DataConfig(name="cifar10", val_size=50))
    assert cifar.input_shape == (32, 32, 3) and len(cifar.y_train) == 150 and len(cifar.y_test) == 40

    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").exists():
        fashion = cache / "fashion-mnist"
        fashion.mkdir()
        _idx(fashion / "train-images-idx3-ubyte.gz", x)
        _idx(fashion / "train-labels-idx1-ubyte.gz", y)
        _idx(fashion / "t10k-images-idx3-ubyte.gz", x[:50])
        _idx(fashion / "t10k-labels-idx1-ubyte.gz", y[:50])
        assert load_dataset(DataConfig(val_size=50)).source == "keras-cache"


def test_idx_reader_roundtrip_through_data_dir(tmp_path: Path) -> None:
    x, y = _images(120, (28, 28))
    _idx(tmp_path / "train-images-idx3-ubyte.gz", x)
    _idx(tmp_path / "train-labels-idx1-ubyte.gz", y)
    _idx(tmp_path / "t10k-images-idx3-ubyte.gz", x[:30])
    _idx(tmp_path / "t10k-labels-idx1-ubyte.gz", y[:30])
    splits = load_dataset(DataConfig(data_dir=str(tmp_path), val_size=20))
    assert len(splits.y_train) == 100 and splits.x_test.shape == (30, 28, 28, 1)
    assert np.allclose(np.sort(splits.x_test.reshape(30, -1).sum(1)), np.sort(x[:30].reshape(30, -1).sum(1) / 255.0), atol=1e-2)


def test_npz_and_image_folder(tmp_path: Path) -> None:
    from PIL import Image

    x, y = _images(60, (12, 12))
    np.savez(tmp_path / "own.npz", x_train=x, y_train=y, x_test=x[:20], y_test=y[:20])
    own = load_dataset(DataConfig(name="npz", path=str(tmp_path / "own.npz"), val_size=20))
    assert own.source.startswith("npz:") and own.input_shape == (12, 12, 1)

    for split, count in (("train", 30), ("test", 10)):
        for index in range(count):
            folder = tmp_path / "images" / split / f"class{index % 2}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(x[index].astype(np.uint8)).save(folder / f"{index}.png")
    images = load_dataset(DataConfig(name="image_folder", path=str(tmp_path / "images"), val_size=10))
    assert images.num_classes == 2 and len(images.y_test) == 10 and images.input_shape == (12, 12, 1)


def test_npz_with_missing_arrays_is_an_error(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((3, 4, 4)))
    with pytest.raises(DataError, match="y_train"):
        load_dataset(DataConfig(name="npz", path=str(tmp_path / "bad.npz")))
