"""The layers a network description may hold, each with its checks and its shape rule.

Conv2d and Linear are the analog layers (their weights go on the crossbar); every other layer
and every bias run digitally. A ``Residual`` block holds layers of its own (ResNet's basic
block: body and shortcut, added). Each layer checks its own parameters and weights' shapes, and
``output_shape`` gives the shape of one sample after it (torch's rules), raising ValueError
when the input does not fit; :class:`~controller.workloads.network.NetworkDescription` chains
them from its ``input_shape``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from controller.workloads.tensor import FLOAT_DTYPES, Tensor

Shape = tuple[int, ...]


def as_pair(v: Any) -> Any:
    """torch accepts ``3`` for ``(3, 3)``; so do we."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, list):
        return tuple(v)
    return v


Pair = Annotated[tuple[int, int], BeforeValidator(as_pair)]


def _spatial_out(size: int, kernel: int, stride: int, pad: int, dil: int, ceil: bool) -> int:
    """torch's output size of a convolution or pooling along one dimension."""
    span = size + 2 * pad - dil * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    # torch's rule: with ceil_mode the last window must start inside the (left-padded) input
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class BaseLayer(BaseModel):
    """What every layer has: a name (a torch module name) and its output shape rule."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=128)
    analog: ClassVar[bool] = False

    @field_validator("name")
    @classmethod
    def _module_name(cls, v: str) -> str:
        if "." in v or v.strip() != v:
            raise ValueError(f"layer name {v!r} must not contain '.' or surrounding spaces")
        return v

    def output_shape(self, shape: Shape) -> Shape:
        """Shape of one sample after this layer; raises ValueError if ``shape`` does not fit."""
        return shape

    def _need_image(self, shape: Shape, channels: int | None = None) -> None:
        if len(shape) != 3:
            raise ValueError(f"expects a (C, H, W) input, gets {shape}")
        if channels is not None and shape[0] != channels:
            raise ValueError(f"expects {channels} input channels, gets {shape[0]} (input {shape})")


def _check_tensor(t: Tensor | None, name: str, shape: Shape, floating: bool = True) -> None:
    if t is None:
        return
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")
    if floating and t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be a float tensor, got {t.dtype}")


PositiveInt = Annotated[int, Field(ge=1)]


class Conv2d(BaseLayer):
    """2-D convolution (groups 1, zero padding); an analog layer (im2col on the crossbar)."""

    kind: Literal["Conv2d"] = "Conv2d"
    analog: ClassVar[bool] = True
    in_channels: PositiveInt
    out_channels: PositiveInt
    kernel_size: Pair
    stride: Pair = (1, 1)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    weight: Tensor
    bias: Tensor | None = None

    @model_validator(mode="after")
    def _check(self) -> Conv2d:
        if min(self.kernel_size + self.stride + self.dilation) < 1 or min(self.padding) < 0:
            raise ValueError("kernel_size, stride, dilation must be >= 1 and padding >= 0")
        kh, kw = self.kernel_size
        _check_tensor(self.weight, "weight", (self.out_channels, self.in_channels, kh, kw))
        _check_tensor(self.bias, "bias", (self.out_channels,))
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape, self.in_channels)
        out = tuple(
            _spatial_out(shape[1 + d], self.kernel_size[d], self.stride[d], self.padding[d],
                         self.dilation[d], False)
            for d in range(2)
        )  # fmt: skip
        if min(out) < 1:
            raise ValueError(f"kernel {self.kernel_size} does not fit the input {shape}")
        return (self.out_channels, *out)

    def weight_matrix(self) -> np.ndarray:
        """The crossbar matrix (rows = C_in*kh*kw in torch's unfold order, cols = C_out)."""
        return self.weight.to_numpy().reshape(self.out_channels, -1).T


class Linear(BaseLayer):
    """Fully connected layer; an analog layer (rows = in_features, cols = out_features)."""

    kind: Literal["Linear"] = "Linear"
    analog: ClassVar[bool] = True
    in_features: PositiveInt
    out_features: PositiveInt
    weight: Tensor
    bias: Tensor | None = None

    @model_validator(mode="after")
    def _check(self) -> Linear:
        _check_tensor(self.weight, "weight", (self.out_features, self.in_features))
        _check_tensor(self.bias, "bias", (self.out_features,))
        return self

    def output_shape(self, shape: Shape) -> Shape:
        if len(shape) != 1 or shape[0] != self.in_features:
            raise ValueError(f"expects ({self.in_features},) features, gets {shape}")
        return (self.out_features,)

    def weight_matrix(self) -> np.ndarray:
        return self.weight.to_numpy().T


class ReLU(BaseLayer):
    kind: Literal["ReLU"] = "ReLU"


def _check_pool_padding(padding: tuple[int, int], kernel: tuple[int, int]) -> None:
    if any(p < 0 or 2 * p > k for p, k in zip(padding, kernel, strict=True)):
        raise ValueError("padding must be >= 0 and at most half the kernel size")


def _pooled(shape: Shape, kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int], dilation: tuple[int, int], ceil: bool) -> Shape:  # fmt: skip
    """The (C, H, W) shape after a pooling window (torch's rule); ValueError if none fits."""
    out = tuple(
        _spatial_out(shape[1 + d], kernel[d], stride[d], padding[d], dilation[d], ceil)
        for d in range(2)
    )
    if min(out) < 1:
        raise ValueError(f"pool {kernel} does not fit the input {shape}")
    return (shape[0], *out)


class MaxPool2d(BaseLayer):
    kind: Literal["MaxPool2d"] = "MaxPool2d"
    kernel_size: Pair
    stride: Pair | None = None  # None: kernel_size (torch's default)
    padding: Pair = (0, 0)
    dilation: Pair = (1, 1)
    ceil_mode: bool = False

    @model_validator(mode="after")
    def _check(self) -> MaxPool2d:
        if min(self.kernel_size + self.dilation + (self.stride or (1, 1))) < 1:
            raise ValueError("kernel_size, stride, dilation must be >= 1")
        _check_pool_padding(self.padding, self.kernel_size)
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape)
        return _pooled(shape, self.kernel_size, self.stride or self.kernel_size, self.padding,
                       self.dilation, self.ceil_mode)  # fmt: skip


class AvgPool2d(BaseLayer):
    kind: Literal["AvgPool2d"] = "AvgPool2d"
    kernel_size: Pair
    stride: Pair | None = None
    padding: Pair = (0, 0)
    ceil_mode: bool = False
    count_include_pad: bool = True

    @model_validator(mode="after")
    def _check(self) -> AvgPool2d:
        if min(self.kernel_size + (self.stride or (1, 1))) < 1:
            raise ValueError("kernel_size and stride must be >= 1")
        _check_pool_padding(self.padding, self.kernel_size)
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape)
        return _pooled(shape, self.kernel_size, self.stride or self.kernel_size, self.padding,
                       (1, 1), self.ceil_mode)  # fmt: skip


class Flatten(BaseLayer):
    """Flattens dims ``start_dim..end_dim`` of the batched tensor (dim 0 is the batch)."""

    kind: Literal["Flatten"] = "Flatten"
    start_dim: int = 1
    end_dim: int = -1

    def output_shape(self, shape: Shape) -> Shape:
        nd = len(shape) + 1  # with the batch dimension
        s = self.start_dim % nd if -nd <= self.start_dim < nd else None
        e = self.end_dim % nd if -nd <= self.end_dim < nd else None
        if s is None or e is None or s == 0 or e < s:
            raise ValueError(
                f"cannot flatten dims {self.start_dim}..{self.end_dim} of a batched {shape} "
                "(the batch dimension 0 must stay)"
            )
        full = (0, *shape)
        return (*full[1:s], math.prod(full[s : e + 1]), *full[e + 1 :])


class BatchNorm2d(BaseLayer):
    """Batch normalisation (inference form, running statistics); digital."""

    kind: Literal["BatchNorm2d"] = "BatchNorm2d"
    num_features: PositiveInt
    eps: float = Field(1e-5, gt=0)
    momentum: float = Field(0.1, ge=0, le=1)
    weight: Tensor | None = None
    bias: Tensor | None = None
    running_mean: Tensor
    running_var: Tensor

    @model_validator(mode="after")
    def _check(self) -> BatchNorm2d:
        if (self.weight is None) != (self.bias is None):
            raise ValueError("weight and bias must both be given (affine) or both be omitted")
        for n in ("weight", "bias", "running_mean", "running_var"):
            _check_tensor(getattr(self, n), n, (self.num_features,))
        if np.any(self.running_var.to_numpy() < 0):
            raise ValueError("running_var must be >= 0")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape, self.num_features)
        return shape


class LogSoftmax(BaseLayer):
    kind: Literal["LogSoftmax"] = "LogSoftmax"
    dim: int = 1

    def output_shape(self, shape: Shape) -> Shape:
        nd = len(shape) + 1
        if not -nd <= self.dim < nd or self.dim % nd == 0:
            raise ValueError(f"dim {self.dim} is not a feature dimension of a batched {shape}")
        return shape


#: How deep residual blocks may nest (a block inside a block inside ...): far more than any
#: ResNet needs, few enough that a hostile description cannot exhaust the stack.
MAX_NESTING = 8


class Residual(BaseLayer):
    """A residual block: ``body(x) + shortcut(x)`` on the same input, as in ResNet's basic block.

    An empty ``shortcut`` is the identity. The layers inside are validated like the network's
    own (their names unique across the whole network) and may be analog: a projection shortcut
    (1x1 Conv2d) goes on the crossbar like any convolution. The sum is digital.
    """

    kind: Literal["Residual"] = "Residual"
    body: list[Layer] = Field(min_length=1)
    shortcut: list[Layer] = Field(default_factory=list)

    @field_validator("body", "shortcut", mode="before")
    @classmethod
    def _validate_each_layer(cls, raw: Any) -> Any:
        return validate_layer_list(raw)

    def output_shape(self, shape: Shape) -> Shape:
        out = chain_shapes(self.body, shape, "body: ")[-1]
        skip = chain_shapes(self.shortcut, shape, "shortcut: ")[-1] if self.shortcut else shape
        if out != skip:
            raise ValueError(
                f"body gives {out} but shortcut gives {skip}: they must match to be added"
            )
        return out


LAYER_TYPES: dict[str, type[BaseLayer]] = {
    c.model_fields["kind"].default: c
    for c in (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten, BatchNorm2d, LogSoftmax,
              Residual)
}  # fmt: skip
Layer = Annotated[
    Conv2d | Linear | ReLU | MaxPool2d | AvgPool2d | Flatten | BatchNorm2d | LogSoftmax | Residual,
    Field(discriminator="kind"),
]
Residual.model_rebuild()


def describe_errors(err: ValidationError) -> str:
    """A pydantic error as one line: ``loc: message; ...``."""
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


def validate_layer_list(raw: Any) -> Any:
    """Validate layer by layer so that every message names the layer (index and name)."""
    if not isinstance(raw, list | tuple):
        return raw
    out: list[BaseLayer] = []
    for i, item in enumerate(raw):
        if isinstance(item, BaseLayer):
            out.append(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"layer {i}: expected a mapping, got {type(item).__name__}")
        name = item.get("name", "")
        kind = item.get("kind")
        if kind not in LAYER_TYPES:
            raise ValueError(
                f"layer {i} ({name!r}): unknown layer kind {kind!r}; "
                f"known kinds: {', '.join(LAYER_TYPES)}"
            )
        try:
            out.append(LAYER_TYPES[kind].model_validate(item))
        except ValidationError as err:
            raise ValueError(f"layer {i} ({name!r}, {kind}): {describe_errors(err)}") from None
    return out


def chain_shapes(layers: list[Any], shape: Shape, where: str = "") -> list[Shape]:
    """Output shape (one sample) after each of ``layers``, propagated from ``shape``."""
    out: list[Shape] = []
    for i, layer in enumerate(layers):
        try:
            shape = layer.output_shape(shape)
        except ValueError as err:
            raise ValueError(f"{where}layer {i} ({layer.name!r}, {layer.kind}): {err}") from None
        out.append(shape)
    return out


def walk_layers(layers: list[Any], depth: int = 0) -> list[Any]:
    """Every layer of ``layers``, depth first: a residual block, then its body, then its
    shortcut."""
    if depth > MAX_NESTING:
        raise ValueError(f"residual blocks nest deeper than {MAX_NESTING} levels")
    out: list[Any] = []
    for layer in layers:
        out.append(layer)
        if isinstance(layer, Residual):
            out += walk_layers([*layer.body, *layer.shortcut], depth + 1)
    return out
