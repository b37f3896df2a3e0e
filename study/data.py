"""Real data sets as numpy splits: train / validation / test, with imbalance and noise knobs.

No TensorFlow here except the Keras fall-backs, imported only when they are needed, so the
common path (Debian's IDX files, scikit-learn's digits) stays light.
"""

from __future__ import annotations

import gzip
import os
import pickle
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from study.space import DataConfig

DATA_DIR_ENV = "STUDY_DATA_DIR"
DEBIAN_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
HOW_TO_GET_DATA = ("run `make data` (installs Debian's dataset-fashion-mnist, or downloads "
                   f"through Keras), or point --data-dir / ${DATA_DIR_ENV} at the IDX .gz files")


class DataError(ValueError):
    """Bad or missing data: one line naming the knob at fault."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"data.{key}: {message}")


@dataclass
class Splits:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    source: str
    notes: dict[str, object] = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def sizes(self) -> dict[str, int]:
        return {"data.n_train": len(self.y_train), "data.n_val": len(self.y_val),
                "data.n_test": len(self.y_test)}


def keras_cache_dir() -> Path:
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


# --- readers ---------------------------------------------------------------------------

IDX_UBYTE = 0x08  # the IDX type code of unsigned bytes: all Fashion-MNIST files use it


def read_idx(path: Path) -> np.ndarray:
    """IDX (the MNIST family's format): big-endian dims after a 4-byte magic.

    A damaged file (truncated download, wrong file under the right name) is a DataError
    naming it, not a traceback from gzip or numpy.
    """
    try:
        with gzip.open(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError("data_dir", f"{path} is not a readable .gz file ({exc or type(exc).__name__})") from None
    if len(raw) < 4 or raw[0:2] != b"\x00\x00" or raw[2] != IDX_UBYTE or not 1 <= raw[3] <= 4:
        raise DataError("data_dir", f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError("data_dir", f"{path} is truncated (header)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">i4", count=ndim, offset=4))
    if len(raw) - header != int(np.prod(dims)):
        raise DataError("data_dir", f"{path} holds {len(raw) - header} bytes of data; its header says "
                                    f"{'x'.join(map(str, dims))} (truncated or damaged)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_folder(folder: Path) -> tuple[np.ndarray, ...]:
    arrays = [read_idx(folder / name) for name in FASHION_FILES]
    for at in (0, 2):  # (images, labels) of train, then of test
        images, labels = arrays[at], arrays[at + 1]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DataError("data_dir", f"{folder / FASHION_FILES[at]} {images.shape} and {FASHION_FILES[at + 1]} "
                                        f"{labels.shape} do not pair up as images and labels")
    return tuple(arrays)


def _load_fashion(config: DataConfig) -> tuple[tuple[np.ndarray, ...], str]:
    candidates = []
    for explicit in (config.data_dir, os.environ.get(DATA_DIR_ENV)):
        if explicit:
            candidates.append((Path(explicit), f"data-dir:{explicit}"))
    candidates += [(DEBIAN_FASHION_DIR, f"debian:{DEBIAN_FASHION_DIR}"),
                   (keras_cache_dir() / "fashion-mnist", "keras-cache")]
    for folder, source in candidates:
        if all((folder / name).exists() for name in FASHION_FILES):
            return _idx_folder(folder), source
        if source.startswith("data-dir"):
            raise DataError("data_dir", f"{folder} lacks the Fashion-MNIST IDX files {', '.join(FASHION_FILES)}")
    return _keras_download("fashion_mnist"), "keras-download"


def _keras_download(name: str) -> tuple[np.ndarray, ...]:
    import keras  # deferred: only the last resort needs TensorFlow this early

    try:
        (x_train, y_train), (x_test, y_test) = getattr(keras.datasets, name).load_data()
    except Exception as exc:  # network refused, partial download, ...
        raise DataError("name", f"{name} not found locally and download failed "
                                f"({type(exc).__name__}); {HOW_TO_GET_DATA}") from None
    return x_train, y_train, x_test, y_test


def _load_mnist() -> tuple[tuple[np.ndarray, ...], str]:
    cached = keras_cache_dir() / "mnist.npz"
    if cached.exists():
        with np.load(cached) as npz:
            return (npz["x_train"], npz["y_train"], npz["x_test"], npz["y_test"]), "keras-cache"
    return _keras_download("mnist"), "keras-download"


def _load_cifar10() -> tuple[tuple[np.ndarray, ...], str]:
    base = keras_cache_dir()
    for folder in (base / "cifar-10-batches-py",
                   base / "cifar-10-batches-py_extracted" / "cifar-10-batches-py"):
        if (folder / "test_batch").exists():
            def batch(name: str) -> tuple[np.ndarray, np.ndarray]:
                with open(folder / name, "rb") as handle:
                    entry = pickle.load(handle, encoding="bytes")
                images = np.asarray(entry[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
                return images.transpose(0, 2, 3, 1), np.asarray(entry[b"labels"])
            parts = [batch(f"data_batch_{i}") for i in range(1, 6)]
            x_test, y_test = batch("test_batch")
            x_train = np.concatenate([p[0] for p in parts])
            y_train = np.concatenate([p[1] for p in parts])
            return (x_train, y_train, x_test, y_test), "keras-cache"
    return _keras_download("cifar10"), "keras-download"


def _load_digits(seed: int) -> tuple[tuple[np.ndarray, ...], str]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).astype(np.uint8)  # same scale as the others
    # digits has no official test split: hold out a fixed, stratified 20%.
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=0.2, stratify=bunch.target, random_state=seed)
    return (x_train, y_train, x_test, y_test), "sklearn-digits"


def _load_npz(path: str) -> tuple[tuple[np.ndarray, ...], str]:
    try:
        with np.load(path) as npz:
            return tuple(npz[k] for k in ("x_train", "y_train", "x_test", "y_test")), f"npz:{path}"
    except (OSError, ValueError) as exc:
        raise DataError("path", f"cannot read {path} as .npz ({exc})") from None
    except KeyError as exc:
        raise DataError("path", f"{path} lacks array {exc}; needs x_train, y_train, x_test, y_test") from None


def _load_image_folder(path: str, seed: int) -> tuple[tuple[np.ndarray, ...], str]:
    import keras

    root = Path(path)
    if not root.is_dir():
        raise DataError("path", f"{path} is not a folder of class sub-folders")

    def read(folder: Path) -> tuple[np.ndarray, np.ndarray]:
        dataset = keras.utils.image_dataset_from_directory(
            folder, labels="inferred", label_mode="int", batch_size=None, shuffle=False,
            color_mode="grayscale" if _looks_grayscale(folder) else "rgb", verbose=False,
            image_size=_first_image_size(folder))
        pairs = list(dataset.as_numpy_iterator())
        if not pairs:
            raise DataError("path", f"no images under {folder}")
        return (np.stack([p[0] for p in pairs]).astype(np.uint8), np.array([p[1] for p in pairs]))

    if (root / "train").is_dir() and (root / "test").is_dir():
        x_train, y_train = read(root / "train")
        x_test, y_test = read(root / "test")
    else:
        x_all, y_all = read(root)
        x_train, x_test, y_train, y_test = train_test_split(
            x_all, y_all, test_size=0.2, stratify=y_all, random_state=seed)
    return (x_train, y_train, x_test, y_test), f"image-folder:{path}"


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".bmp", ".gif"))


def _first_image_size(folder: Path) -> tuple[int, int]:
    from PIL import Image

    files = _image_files(folder)
    if not files:
        raise DataError("path", f"no images under {folder}")
    with Image.open(files[0]) as image:
        return image.height, image.width


def _looks_grayscale(folder: Path) -> bool:
    from PIL import Image

    with Image.open(_image_files(folder)[0]) as image:
        return image.mode in ("L", "1", "I;16")


# --- knobs -----------------------------------------------------------------------------

def imbalance_keep_fraction(num_classes: int, ratio: float) -> np.ndarray:
    """Exponential long tail: class c keeps ratio**(-c/(C-1)), so n_max/n_min = ratio."""
    if num_classes < 2 or ratio <= 1.0:
        return np.ones(num_classes)
    return ratio ** (-np.arange(num_classes) / (num_classes - 1))


def apply_imbalance(x: np.ndarray, y: np.ndarray, ratio: float, num_classes: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    keep_fraction = imbalance_keep_fraction(num_classes, ratio)
    kept = []
    for cls in range(num_classes):
        members = np.flatnonzero(y == cls)
        count = max(1, int(round(len(members) * keep_fraction[cls])))
        kept.append(rng.choice(members, size=count, replace=False))
    index = np.sort(np.concatenate(kept))
    return x[index], y[index]


def apply_label_noise(y: np.ndarray, fraction: float, num_classes: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """Relabel a fraction of images to a different, uniformly chosen class."""
    noisy = y.copy()
    flipped = rng.choice(len(y), size=int(round(fraction * len(y))), replace=False)
    noisy[flipped] = (y[flipped] + rng.integers(1, num_classes, size=len(flipped))) % num_classes
    return noisy, len(flipped)


def _stratified_take(x: np.ndarray, y: np.ndarray, size: int | None, seed: int, key: str
                     ) -> tuple[np.ndarray, np.ndarray]:
    if size is None or size >= len(y):
        return x, y
    try:
        x_taken, _, y_taken, _ = train_test_split(x, y, train_size=size, stratify=y, random_state=seed)
    except ValueError as exc:
        raise DataError(key, f"{size} is too small to keep every class ({exc})") from None
    return x_taken, y_taken


def _as_images(x: np.ndarray) -> np.ndarray:
    images = x.astype(np.float32) / 255.0
    return images[..., None] if images.ndim == 3 else images


def load_dataset(config: DataConfig) -> Splits:
    """Load, imbalance, split and subsample; every step seeded by `split_seed`."""
    seed = config.split_seed
    loaders = {
        "fashion_mnist": lambda: _load_fashion(config),
        "digits": lambda: _load_digits(seed),
        "mnist": _load_mnist,
        "cifar10": _load_cifar10,
        "npz": lambda: _load_npz(config.path or ""),
        "image_folder": lambda: _load_image_folder(config.path or "", seed),
    }
    (x_train, y_train, x_test, y_test), source = loaders[config.name]()
    y_train = np.asarray(y_train).reshape(-1).astype(np.int64)
    y_test = np.asarray(y_test).reshape(-1).astype(np.int64)
    num_classes = int(max(y_train.max(), y_test.max()) + 1)
    rng = np.random.default_rng(seed)

    # Imbalance applies to every split: accuracy misleads on imbalanced data at test time too.
    x_train, y_train = apply_imbalance(x_train, y_train, config.class_imbalance, num_classes, rng)
    x_test, y_test = apply_imbalance(x_test, y_test, config.class_imbalance, num_classes, rng)

    if config.val_size >= len(y_train):
        raise DataError("val_size", f"{config.val_size} leaves no training images "
                                    f"({config.name} has {len(y_train)} after imbalance)")
    try:
        x_rest, x_val, y_rest, y_val = train_test_split(
            x_train, y_train, test_size=config.val_size, stratify=y_train, random_state=seed)
    except ValueError as exc:
        raise DataError("val_size", f"{config.val_size} cannot hold every class ({exc})") from None
    x_rest, y_rest = _stratified_take(x_rest, y_rest, config.train_size, seed, "train_size")
    x_test, y_test = _stratified_take(x_test, y_test, config.test_size, seed, "test_size")

    flipped = 0
    if config.label_noise > 0:
        y_rest, flipped = apply_label_noise(y_rest, config.label_noise, num_classes, rng)

    return Splits(
        x_train=_as_images(x_rest), y_train=y_rest, x_val=_as_images(x_val), y_val=y_val,
        x_test=_as_images(x_test), y_test=y_test, num_classes=num_classes, source=source,
        notes={"data.labels_flipped": flipped,
               "data.train_class_counts": np.bincount(y_rest, minlength=num_classes).tolist()})
