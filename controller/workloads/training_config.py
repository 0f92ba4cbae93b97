"""Training recipes (pydantic): digital training with the paper's options, and hardware-aware
fine-tuning. A recipe's JSON, with the workload name, keys the trained-weights cache."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from device_twin.config import IOConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainingConfig(_Strict):
    """Digital training (Adam or SGD, cross-entropy on log-probabilities).

    The paper's options: ``small_weight_penalty`` * sum(relu(eps - |w|)) over the crossbar
    weights pushes |w| above ``small_weight_eps`` (weights below one level spacing would be
    rounded to 0 on the multiplicative grid); ``clip_weights`` clamps the crossbar weights to
    [-clip, clip] after every step (the largest level must fit g_max).
    """

    epochs: int = Field(20, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    lr: float = Field(0.01, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1)  # sgd only
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0)
    small_weight_penalty: float = Field(0.0, ge=0)
    small_weight_eps: float = Field(0.1, ge=0)
    clip_weights: float | None = Field(1.0, gt=0)
    augment_shift_px: int = Field(0, ge=0, le=8)  # random translation of training images
    train_images: int | None = Field(None, ge=1)  # the first N training images (None: all)
    eval_images: int | None = Field(None, ge=1)  # accuracy reported on the first N test images
    seed: int = Field(0, ge=0)
    split_seed: int = Field(0, ge=0)


class HardwareAwareConfig(_Strict):
    """Hardware-aware fine-tuning with aihwkit's pure-torch inference tiles.

    Starts from the workload's digitally trained network and trains it as aihwkit
    ``AnalogConv2d`` / ``AnalogLinear`` layers (``TorchInferenceRPUConfig``): the forward pass
    goes through ``forward`` (by default the twin's MVM periphery: DAC/ADC quantisation,
    output noise), Gaussian weight noise is injected at every step (``weight_noise``,
    ``noise_std`` relative to the layer's max |w|, aihwkit's weight modifier) and weights are
    clipped at ``clip_weights`` (the paper clips at 1.0 during analog fine-tuning), or, with
    ``clip_sigma``, at that many standard deviations of each layer's weights (aihwkit's
    ``LAYER_GAUSSIAN`` clipping, as Joshi 2020 clips). ``train_images``: fine-tune on the first
    N training images only (None: all); ``eval_images``: report accuracy on the first N test
    images (None: all).
    """

    epochs: int = Field(5, ge=1, le=1000)
    batch_size: int = Field(64, ge=1, le=65536)
    lr: float = Field(0.002, gt=0)
    optimizer: Literal["adam", "sgd"] = "adam"
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    weight_noise: Literal["add_normal", "mult_normal"] = "add_normal"
    noise_std: float = Field(0.05, ge=0)
    clip_weights: float | None = Field(1.0, gt=0)
    clip_sigma: float | None = Field(None, gt=0)
    forward: IOConfig = Field(default_factory=IOConfig)
    train_images: int | None = Field(None, ge=1)
    eval_images: int | None = Field(None, ge=1)
    seed: int = Field(0, ge=0)
