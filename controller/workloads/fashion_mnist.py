"""Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package (nothing is downloaded).

The package installs Zalando's 60,000 training and 10,000 test images (28x28 grey levels, 10
classes of clothing) as gzip-compressed IDX files under ``/usr/share/datasets/fashion-mnist``
(``dpkg -L dataset-fashion-mnist``). ``make test`` and ``make run`` install the package when it
is missing and they can (root, ``apt-get``); ``$PCM_TWIN_FASHION_MNIST_DIR`` points elsewhere.
A missing or damaged file raises :class:`DatasetNotInstalled`, which names the package.

The split is the data set's own (60,000 / 10,000): published results use it, so there is no
seeded permutation as for the smaller sets. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import gzip
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

PACKAGE = "dataset-fashion-mnist"
DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte.gz",
    ("train", "labels"): "train-labels-idx1-ubyte.gz",
    ("test", "images"): "t10k-images-idx3-ubyte.gz",
    ("test", "labels"): "t10k-labels-idx1-ubyte.gz",
}
SIZES = {"train": 60000, "test": 10000}
#: The ten classes, in label order (from the data set's README).
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot")  # fmt: skip


class DatasetNotInstalled(FileNotFoundError):
    """A data set's files are missing or unreadable; the message says which package has them."""


def data_dir() -> Path:
    """Where the IDX files are (``$PCM_TWIN_FASHION_MNIST_DIR`` or the package's folder)."""
    return Path(os.environ.get("PCM_TWIN_FASHION_MNIST_DIR", DEFAULT_DIR))


def _missing(path: Path, why: str) -> DatasetNotInstalled:
    return DatasetNotInstalled(
        f"Fashion-MNIST is not available: {path} {why}. It comes from Debian's package "
        f"{PACKAGE!r}: install it with `apt-get update && apt-get install -y {PACKAGE}` "
        f"(as root; `make test` and `make run` do it when they can), or point "
        f"$PCM_TWIN_FASHION_MNIST_DIR at a folder holding {', '.join(sorted(FILES.values()))}"
    )


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (optionally gzip-compressed) as a uint8 array of the shape its header gives.

    IDX: two zero bytes, a type byte (0x08: unsigned byte), the number of dimensions, then one
    big-endian uint32 per dimension, then the data in C order.
    """
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise _missing(path, "does not exist") from None
    except (OSError, EOFError) as err:
        raise _missing(path, f"cannot be read ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise _missing(path, "is not an IDX file of unsigned bytes")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(dims) != ndim or len(raw) != header + int(np.prod(dims)):
        raise _missing(path, f"is truncated or damaged ({len(raw)} bytes for shape {dims})")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``split`` ("train" or "test") as images (N, 1, 28, 28) float32 in [0, 1] and labels
    (N,) int64 (read once per folder and process)."""
    if split not in SIZES:
        raise ValueError(f"unknown split {split!r}: expected train or test")
    return _load(split, data_dir())


@lru_cache(maxsize=2)
def _load(split: str, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    labels = read_idx(folder / FILES[(split, "labels")])  # the small file first
    images = read_idx(folder / FILES[(split, "images")])
    n = SIZES[split]
    if images.shape != (n, 28, 28) or labels.shape != (n,) or labels.max() > 9:
        raise _missing(folder, f"holds {images.shape} images and {labels.shape} labels for the "
                       f"{split} split, expected ({n}, 28, 28) and ({n},) in 0..9")  # fmt: skip
    x = (images.astype(np.float32) / np.float32(255.0)).reshape(n, 1, 28, 28)
    return x, labels.astype(np.int64)
