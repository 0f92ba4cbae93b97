"""Network descriptions to and from torch: an ``nn.Sequential`` of the supported layers.

:func:`torch_sequential` builds the float32, eval-mode ``nn.Sequential`` of a description's
layers (module names = layer names); :func:`layer_fields_from_torch` describes the children of
an ``nn.Sequential`` as layer fields (weights copied as float32), refusing what the
description cannot hold (grouped or non-zero-padded convolutions, pooling indices, ...).
``NetworkDescription.to_torch`` / ``from_torch`` are the way in. A residual block is a
:class:`ResidualBlock` (torch has no module for it).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from controller.workloads.layers import (
    LAYER_TYPES,
    MAX_NESTING,
    AvgPool2d,
    BaseLayer,
    BatchNorm2d,
    Conv2d,
    Flatten,
    Linear,
    LogSoftmax,
    MaxPool2d,
    ReLU,
    Residual,
    as_pair,
)
from controller.workloads.tensor import Tensor


class ResidualBlock(nn.Module):
    """``body(x) + shortcut(x)``, an empty shortcut being the identity: the torch side of
    :class:`~controller.workloads.layers.Residual` (ResNet's basic block without the ReLU after
    the sum, which is a layer of its own)."""

    def __init__(self, body: nn.Sequential, shortcut: nn.Sequential | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Sequential()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def torch_sequential(layers: Sequence[BaseLayer]) -> nn.Sequential:
    """An ``nn.Sequential`` (float32, eval mode) with the layers' names and weights."""

    def t(x: Tensor) -> torch.Tensor:
        return torch.from_numpy(x.to_numpy().astype(np.float32))

    def build(items: Sequence[BaseLayer]) -> nn.Sequential:
        mods: OrderedDict[str, nn.Module] = OrderedDict()
        for layer in items:
            m: nn.Module
            match layer:
                case Conv2d():
                    m = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                  layer.stride, layer.padding, layer.dilation,
                                  bias=layer.bias is not None)  # fmt: skip
                case Linear():
                    m = nn.Linear(
                        layer.in_features, layer.out_features, bias=layer.bias is not None
                    )
                case ReLU():
                    m = nn.ReLU()
                case MaxPool2d():
                    m = nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding,
                                     layer.dilation, ceil_mode=layer.ceil_mode)  # fmt: skip
                case AvgPool2d():
                    m = nn.AvgPool2d(layer.kernel_size, layer.stride, layer.padding,
                                     ceil_mode=layer.ceil_mode,
                                     count_include_pad=layer.count_include_pad)  # fmt: skip
                case Flatten():
                    m = nn.Flatten(layer.start_dim, layer.end_dim)
                case BatchNorm2d():
                    m = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum,
                                       affine=layer.weight is not None)  # fmt: skip
                    m.running_mean.copy_(t(layer.running_mean))
                    m.running_var.copy_(t(layer.running_var))
                case LogSoftmax():
                    m = nn.LogSoftmax(layer.dim)
                case Residual():
                    m = ResidualBlock(build(layer.body), build(layer.shortcut))
                case _:  # pragma: no cover - LAYER_TYPES and this match are kept in step
                    raise AssertionError(layer.kind)
            with torch.no_grad():
                for pname in ("weight", "bias"):
                    value = getattr(layer, pname, None)
                    if isinstance(value, Tensor):
                        getattr(m, pname).copy_(t(value))
            mods[layer.name] = m
        return nn.Sequential(mods)

    return build(layers).eval()


def layer_fields_from_torch(model: nn.Sequential) -> list[dict[str, Any]]:
    """The layer fields (``kind``, ``name``, parameters, weights as float32 tensors) of the
    children of ``model``; ValueError names a module the description cannot hold."""

    def t(x: torch.Tensor | None) -> Tensor | None:
        return None if x is None else Tensor.from_array(x.detach().float().cpu().numpy())

    def pair(v: Any) -> tuple[int, int]:
        return as_pair(v) if not isinstance(v, tuple) else tuple(v)  # type: ignore[return-value]

    def describe(seq: nn.Module, depth: int = 0) -> list[dict[str, Any]]:
        if depth > MAX_NESTING:
            raise ValueError(f"residual blocks nest deeper than {MAX_NESTING} levels")
        return [describe_one(i, mname, m, depth) for i, (mname, m) in
                enumerate(seq.named_children())]  # fmt: skip

    def describe_one(i: int, mname: str, m: nn.Module, depth: int) -> dict[str, Any]:
        where = f"layer {i} ({mname!r}, {type(m).__name__})"
        d: dict[str, Any]
        if type(m) is nn.Conv2d:
            if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str):
                raise ValueError(f"{where}: only groups=1, zero, numeric padding is supported")
            d = dict(kind="Conv2d", in_channels=m.in_channels, out_channels=m.out_channels,
                     kernel_size=m.kernel_size, stride=m.stride, padding=m.padding,
                     dilation=m.dilation, weight=t(m.weight), bias=t(m.bias))  # fmt: skip
        elif type(m) is nn.Linear:
            d = dict(kind="Linear", in_features=m.in_features, out_features=m.out_features,
                     weight=t(m.weight), bias=t(m.bias))  # fmt: skip
        elif type(m) is nn.ReLU:
            d = dict(kind="ReLU")
        elif type(m) is nn.MaxPool2d:
            if m.return_indices:
                raise ValueError(f"{where}: return_indices is not supported")
            d = dict(kind="MaxPool2d", kernel_size=pair(m.kernel_size),
                     stride=None if m.stride is None else pair(m.stride),
                     padding=pair(m.padding), dilation=pair(m.dilation),
                     ceil_mode=m.ceil_mode)  # fmt: skip
        elif type(m) is nn.AvgPool2d:
            if m.divisor_override is not None:
                raise ValueError(f"{where}: divisor_override is not supported")
            d = dict(kind="AvgPool2d", kernel_size=pair(m.kernel_size),
                     stride=None if m.stride is None else pair(m.stride),
                     padding=pair(m.padding), ceil_mode=m.ceil_mode,
                     count_include_pad=m.count_include_pad)  # fmt: skip
        elif type(m) is nn.Flatten:
            d = dict(kind="Flatten", start_dim=m.start_dim, end_dim=m.end_dim)
        elif type(m) is nn.BatchNorm2d:
            if not m.track_running_stats:
                raise ValueError(f"{where}: needs running statistics")
            d = dict(kind="BatchNorm2d", num_features=m.num_features, eps=m.eps,
                     momentum=0.1 if m.momentum is None else m.momentum,
                     weight=t(m.weight), bias=t(m.bias),
                     running_mean=t(m.running_mean), running_var=t(m.running_var))  # fmt: skip
        elif type(m) is nn.LogSoftmax:
            d = dict(kind="LogSoftmax", dim=1 if m.dim is None else m.dim)
        elif type(m) is ResidualBlock:
            d = dict(kind="Residual", body=describe(m.body, depth + 1),
                     shortcut=describe(m.shortcut, depth + 1))  # fmt: skip
        else:
            raise ValueError(f"{where}: unsupported module; supported: {', '.join(LAYER_TYPES)}")
        return {"name": mname, **d}

    return describe(model)
