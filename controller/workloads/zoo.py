"""The built-in workloads: a network architecture, its data set and its default training recipe.

- ``paper_cnn``: the seed paper's network (Ivanov, arXiv 2310.00337; DESIGN.md §5):
  Conv(1->8, 3x3) -> ReLU -> MaxPool(3, pad 1) -> Conv(8->12, 3x3) -> ReLU -> MaxPool(2, pad 1)
  -> Flatten -> Linear(192->10) -> LogSoftmax on MNIST: 72 + 864 + 1,920 = 2,856 weights. It is
  bias-free, as in the paper: every parameter is a crossbar weight (a bias would be digital).
- ``mnist_mlp``: 784-256-128-10 with ReLUs on MNIST (235,146 parameters; biases digital).
- ``digits_mlp``: 64-32-10 on scikit-learn's 8x8 digits, small enough for fast tests;
- ``resnet32``: Joshi et al. 2020's ResNet-32 (:mod:`controller.workloads.resnet`: 3 stages of
  5 basic blocks, 16/32/64 channels, batch norm; 464,144 crossbar weights) on Fashion-MNIST
  (Debian's ``dataset-fashion-mnist``). Its recipes fit two CPU cores: a training subset and
  few epochs (README, "ResNet-32 on Fashion-MNIST").
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from controller.workloads.training_config import HardwareAwareConfig, TrainingConfig

if TYPE_CHECKING:  # torch loads in the builders: a scenario is validated without it (seconds)
    from torch import nn

    from controller.workloads.datasets import DatasetName


def paper_cnn() -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(1, 8, 3, bias=False),
            relu1=nn.ReLU(),
            pool1=nn.MaxPool2d(3, padding=1),
            conv2=nn.Conv2d(8, 12, 3, bias=False),
            relu2=nn.ReLU(),
            pool2=nn.MaxPool2d(2, padding=1),
            flatten=nn.Flatten(),
            fc=nn.Linear(192, 10, bias=False),
            log_softmax=nn.LogSoftmax(dim=1),
        )
    )


def mnist_mlp() -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(784, 256),
            relu1=nn.ReLU(),
            fc2=nn.Linear(256, 128),
            relu2=nn.ReLU(),
            fc3=nn.Linear(128, 10),
            log_softmax=nn.LogSoftmax(dim=1),
        )
    )


def digits_mlp() -> nn.Sequential:
    from torch import nn

    return nn.Sequential(
        OrderedDict(
            flatten=nn.Flatten(),
            fc1=nn.Linear(64, 32),
            relu1=nn.ReLU(),
            fc2=nn.Linear(32, 10),
            log_softmax=nn.LogSoftmax(dim=1),
        )
    )


def resnet32() -> nn.Sequential:
    from controller.workloads.resnet import resnet32 as build

    return build()


@dataclass(frozen=True)
class Workload:
    """A network architecture on a data set, with default digital and hardware-aware recipes."""

    name: str
    dataset: DatasetName
    input_shape: tuple[int, ...]
    build: Callable[[], nn.Sequential]
    training: TrainingConfig
    hardware_aware: HardwareAwareConfig
    channels_last: bool = False  # digital training in channels-last memory (faster convolutions)


# The paper's options: push |w| above eps = 0.1 (small weights cannot be represented on the
# multiplicative grid) and clip at 1.0. Recipes were tuned once for accuracy within a modest
# CPU budget (see README, "Networks on the chip"); for paper_cnn, random 1-pixel shifts of
# the 4,000 training images make the network robust to weight quantisation (without them,
# uniform M = 8 cost up to 1.1 points on some seeds, with them at most 0.4 over seeds 0-2).
WORKLOADS: dict[str, Workload] = {
    "paper_cnn": Workload(
        "paper_cnn", "mnist", (1, 28, 28), paper_cnn,
        TrainingConfig(epochs=20, batch_size=64, lr=0.01, small_weight_penalty=1e-3,
                       augment_shift_px=1),
        HardwareAwareConfig(epochs=5, lr=0.002),
    ),
    "mnist_mlp": Workload(
        "mnist_mlp", "mnist", (1, 28, 28), mnist_mlp,
        TrainingConfig(epochs=10, batch_size=64, lr=0.002, small_weight_penalty=0.0),
        HardwareAwareConfig(epochs=3, lr=0.0005),
    ),
    "digits_mlp": Workload(
        "digits_mlp", "digits", (1, 8, 8), digits_mlp,
        TrainingConfig(epochs=30, batch_size=32, lr=0.01, small_weight_penalty=0.0),
        HardwareAwareConfig(epochs=5, lr=0.002),
    ),
    "resnet32": Workload(
        "resnet32", "fashion_mnist", (1, 28, 28), resnet32,
        TrainingConfig(epochs=4, batch_size=128, lr=0.1, optimizer="sgd", momentum=0.9,
                       weight_decay=5e-4, clip_weights=None, augment_shift_px=2,
                       train_images=20000),
        HardwareAwareConfig(epochs=1, batch_size=128, lr=0.01, optimizer="sgd",
                            weight_noise="add_normal", noise_std=0.038, clip_weights=None,
                            clip_sigma=2.5, train_images=4000),
        channels_last=True,
    ),
}  # fmt: skip


def get_workload(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None
