"""Training the workloads: digital (with the paper's options) and hardware-aware (aihwkit).

Both are seeded and reproducible (a fixed torch thread count, a seeded global generator for
initialisation and aihwkit's noise draws, a private generator for batch order). Trained
networks are cached as validated JSON network descriptions (never pickles) under
``$PCM_TWIN_CACHE_DIR/models`` (default ``.cache/pcm-twin/models``, git-ignored), keyed by a
hash of the workload name, the recipe and ``CACHE_VERSION``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from filelock import FileLock
from torch import nn
from torch.nn import functional as nnf

from controller.workloads.datasets import DatasetSplit, load_dataset
from controller.workloads.network import NetworkDescription
from controller.workloads.training_config import HardwareAwareConfig, TrainingConfig
from controller.workloads.zoo import Workload, get_workload
from device_twin.rng import seeded_global_torch

#: Bump when a change to the training code changes the weights it produces.
CACHE_VERSION = 2


def train_threads() -> int:
    """Torch threads used for training (``$PCM_TWIN_TRAIN_THREADS``, default 1).

    One thread: these networks are small, and on a shared 2-core machine a second OpenMP
    thread mostly waits (measured 4x slower under load). The count is part of the cache key:
    a different count sums in a different order and gives (slightly) different weights.
    """
    return max(1, int(os.environ.get("PCM_TWIN_TRAIN_THREADS", "1")))


def cache_dir() -> Path:
    """Where trained networks are cached (``$PCM_TWIN_CACHE_DIR`` or ``.cache/pcm-twin``)."""
    return Path(os.environ.get("PCM_TWIN_CACHE_DIR", ".cache/pcm-twin")) / "models"


@dataclass(frozen=True)
class TrainedNetwork:
    """A trained network and how it came to be."""

    workload: str
    kind: Literal["digital", "hardware_aware"]
    description: NetworkDescription
    key: str  # hash of the recipe: the cache key
    train_seconds: float  # wall time of the training that produced it (not of a cache load)
    test_accuracy: float  # digital accuracy on the held-out split
    cached: bool  # loaded from the cache


def recipe_key(workload: str, *recipes: TrainingConfig | HardwareAwareConfig) -> str:
    """A stable hash of everything that determines the trained weights."""
    blob = json.dumps(
        {
            "version": CACHE_VERSION,
            "workload": workload,
            "recipes": [r.model_dump(mode="json") for r in recipes],
            "torch": torch.__version__.split("+")[0],
            "threads": train_threads(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _cache_path(workload: str, kind: str, key: str) -> Path:
    return cache_dir() / f"{workload}-{kind}-{key}.json"


def _load_cached(workload: str, kind: str, key: str) -> TrainedNetwork | None:
    path = _cache_path(workload, kind, key)
    try:
        rec = json.loads(path.read_text())
        desc = NetworkDescription.model_validate(rec["description"])
    except (OSError, ValueError, KeyError):
        return None  # missing or unreadable: train again
    return TrainedNetwork(workload, kind, desc, key, float(rec["train_seconds"]),  # type: ignore[arg-type]
                          float(rec["test_accuracy"]), cached=True)  # fmt: skip


def _cache_lock(workload: str, kind: str, key: str) -> FileLock:
    path = _cache_path(workload, kind, key).with_suffix(".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path))


def _store(t: TrainedNetwork, recipes: list[dict]) -> None:
    path = _cache_path(t.workload, t.kind, t.key)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = {
        "workload": t.workload, "kind": t.kind, "key": t.key, "recipes": recipes,
        "train_seconds": t.train_seconds, "test_accuracy": t.test_accuracy,
        "description": t.description.model_dump(mode="json"),
    }  # fmt: skip
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(rec))
    tmp.replace(path)  # atomic: parallel test workers never read half a file


# --- the loop -------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(
    model: nn.Module, split: DatasetSplit, batch_size: int = 1000, channels_last: bool = False
) -> float:
    """Top-1 accuracy of a torch model (eval mode) on a split."""
    was_training = model.training
    model.eval()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    correct = 0
    for i in range(0, len(split), batch_size):
        xb = split.x[i : i + batch_size]
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        out = model(xb)
        correct += int((out.argmax(dim=1) == split.y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(split), 1)


def _shift(x: torch.Tensor, max_px: int, gen: torch.Generator) -> torch.Tensor:
    """Translate every image by a random (dy, dx) in [-max_px, max_px], filling with 0."""
    n, _, h, w = x.shape
    padded = nnf.pad(x, (max_px, max_px, max_px, max_px))
    side = 2 * max_px + 1
    off = torch.randint(0, side * side, (n,), generator=gen)
    out = torch.empty_like(x)
    for k in range(side * side):  # one slice per offset, not per image
        sel = (off == k).nonzero(as_tuple=True)[0]
        if len(sel):
            dy, dx = divmod(k, side)
            out[sel] = padded[sel, :, dy : dy + h, dx : dx + w]
    return out


def _subset(split: DatasetSplit, n: int | None) -> DatasetSplit:
    return split if n is None else split.head(n)


def _crossbar_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]


def _loss(model: nn.Module, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    last = list(model.children())[-1]
    if isinstance(last, nn.LogSoftmax):
        return nnf.nll_loss(out, y)
    return nnf.cross_entropy(out, y)


def _fit(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    train: DatasetSplit,
    epochs: int,
    batch_size: int,
    schedule: str,
    seed: int,
    penalty: float = 0.0,
    eps: float = 0.1,
    clip: float | None = None,
    augment_px: int = 0,
    channels_last: bool = False,
) -> None:
    gen = torch.Generator().manual_seed(seed)
    sched = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        if schedule == "cosine" else None
    )  # fmt: skip
    x_all, y_all = train.x, train.y
    n = len(train)
    if channels_last:  # several times faster convolutions on one CPU thread
        model.to(memory_format=torch.channels_last)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x_all[idx], y_all[idx]
            if augment_px:
                xb = _shift(xb, augment_px, gen)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            loss = _loss(model, model(xb), yb)
            if penalty > 0:
                # the paper's small-weight penalty: |w| below eps cannot be represented
                loss = loss + penalty * sum(
                    nnf.relu(eps - w.abs()).sum() for w in _crossbar_weights(model)
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if clip is not None:
                with torch.no_grad():
                    for w in _crossbar_weights(model):
                        w.clamp_(-clip, clip)
        if sched is not None:
            sched.step()
    model.eval()


class _Threads:
    """Run a block with a fixed torch thread count (reproducible sums), then restore it."""

    def __init__(self, n: int) -> None:
        self.n, self.old = n, torch.get_num_threads()

    def __enter__(self) -> None:
        torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)


def _resolve(workload: str | Workload) -> Workload:
    return get_workload(workload) if isinstance(workload, str) else workload


def train_digital(
    workload: str | Workload, config: TrainingConfig | None = None, *, cache: bool = True
) -> TrainedNetwork:
    """Train a workload digitally (default recipe: the workload's), or load it from the cache."""
    wl = _resolve(workload)
    cfg = config or wl.training
    key = recipe_key(wl.name, cfg)
    if not cache:
        return _train_digital(wl, cfg, key)
    with _cache_lock(wl.name, "digital", key):  # parallel test workers train it once
        if (hit := _load_cached(wl.name, "digital", key)) is not None:
            return hit
        out = _train_digital(wl, cfg, key)
        _store(out, [cfg.model_dump(mode="json")])
        return out


def _train_digital(wl: Workload, cfg: TrainingConfig, key: str) -> TrainedNetwork:
    data = load_dataset(wl.dataset, cfg.split_seed)
    t0 = time.perf_counter()
    with _Threads(train_threads()), seeded_global_torch(cfg.seed):
        model = wl.build()
        if cfg.optimizer == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(
                model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
            )
        else:
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                  weight_decay=cfg.weight_decay)  # fmt: skip
        _fit(model, opt, _subset(data.train, cfg.train_images), cfg.epochs, cfg.batch_size,
             cfg.lr_schedule, cfg.seed, cfg.small_weight_penalty, cfg.small_weight_eps,
             cfg.clip_weights, cfg.augment_shift_px, wl.channels_last)  # fmt: skip
        seconds = time.perf_counter() - t0
        acc = accuracy(model, _subset(data.test, cfg.eval_images), channels_last=wl.channels_last)
    desc = NetworkDescription.from_torch(
        model, wl.input_shape, name=wl.name,
        metadata={"workload": wl.name, "training": "digital", "recipe_key": key},
    )  # fmt: skip
    return TrainedNetwork(wl.name, "digital", desc, key, seconds, acc, cached=False)


def analog_rpu_config(hwa: HardwareAwareConfig):  # -> TorchInferenceRPUConfig
    """The aihwkit configuration of hardware-aware training (pure-torch tiles only)."""
    # aihwkit's simulator is imported only for hardware-aware training (0.4 s that importing
    # this module for digital training does not pay)
    from aihwkit.simulator.configs import TorchInferenceRPUConfig
    from aihwkit.simulator.parameters.enums import WeightClipType, WeightModifierType

    rpu = TorchInferenceRPUConfig()
    rpu.forward = hwa.forward.to_aihwkit()
    rpu.modifier.type = {
        "add_normal": WeightModifierType.ADD_NORMAL,
        "mult_normal": WeightModifierType.MULT_NORMAL,
    }[hwa.weight_noise]
    rpu.modifier.std_dev = hwa.noise_std
    rpu.modifier.rel_to_actual_wmax = True
    if hwa.clip_sigma is not None:  # Joshi 2020: clip each layer at a multiple of its std
        rpu.clip.type = WeightClipType.LAYER_GAUSSIAN
        rpu.clip.sigma = hwa.clip_sigma
    if hwa.clip_weights is not None:  # a fixed value applies with either type (aihwkit)
        if hwa.clip_sigma is None:
            rpu.clip.type = WeightClipType.FIXED_VALUE
        rpu.clip.fixed_value = hwa.clip_weights
    rpu.mapping.weight_scaling_omega = 0.0  # keep weights in their own units: clip means |w| <= 1
    rpu.mapping.digital_bias = True
    return rpu


def train_hardware_aware(
    workload: str | Workload,
    hwa: HardwareAwareConfig | None = None,
    base: TrainingConfig | None = None,
    *,
    cache: bool = True,
) -> TrainedNetwork:
    """Hardware-aware fine-tuning of the digitally trained workload (the analog-aware
    baseline), or its cached result. Returns the fine-tuned weights as a digital description."""
    wl = _resolve(workload)
    cfg_hwa = hwa or wl.hardware_aware
    cfg_base = base or wl.training
    key = recipe_key(wl.name, cfg_base, cfg_hwa)
    if not cache:
        return _train_hardware_aware(wl, cfg_base, cfg_hwa, key, cache=False)
    with _cache_lock(wl.name, "hardware_aware", key):
        if (hit := _load_cached(wl.name, "hardware_aware", key)) is not None:
            return hit
        out = _train_hardware_aware(wl, cfg_base, cfg_hwa, key, cache=True)
        _store(out, [cfg_base.model_dump(mode="json"), cfg_hwa.model_dump(mode="json")])
        return out


def _train_hardware_aware(
    wl: Workload, cfg_base: TrainingConfig, cfg_hwa: HardwareAwareConfig, key: str, cache: bool
) -> TrainedNetwork:
    from aihwkit.nn.conversion import convert_to_analog, convert_to_digital
    from aihwkit.optim import AnalogAdam, AnalogSGD

    start = train_digital(wl, cfg_base, cache=cache)
    data = load_dataset(wl.dataset, cfg_base.split_seed)
    t0 = time.perf_counter()
    with _Threads(train_threads()), seeded_global_torch(cfg_hwa.seed):
        analog = convert_to_analog(start.description.to_torch(), analog_rpu_config(cfg_hwa))
        opt_cls = AnalogAdam if cfg_hwa.optimizer == "adam" else AnalogSGD
        opt = opt_cls(analog.parameters(), lr=cfg_hwa.lr)
        opt.regroup_param_groups(analog)
        _fit(analog, opt, _subset(data.train, cfg_hwa.train_images), cfg_hwa.epochs,
             cfg_hwa.batch_size, cfg_hwa.lr_schedule, cfg_hwa.seed)  # fmt: skip
        seconds = time.perf_counter() - t0
        digital = convert_to_digital(analog).eval()
        acc = accuracy(digital, _subset(data.test, cfg_hwa.eval_images),
                       channels_last=wl.channels_last)  # fmt: skip
    desc = NetworkDescription.from_torch(
        digital, wl.input_shape, name=f"{wl.name}_hwa",
        metadata={"workload": wl.name, "training": "hardware_aware", "recipe_key": key},
    )  # fmt: skip
    return TrainedNetwork(wl.name, "hardware_aware", desc, key, seconds, acc, cached=False)
