"""A declarative network description: an ordered list of layers with their weights as tensors.

``NetworkDescription`` is what a host sends to load a network (as the proto message
``pcmtwin.v1.NetworkDescription``, or as JSON) and what the workloads produce after training.
It holds no code: weights are tensors (dtype + shape + raw little-endian bytes, or a list of
numbers), never pickles, so loading one executes nothing.

Validation rejects an unknown layer kind, a weight of the wrong shape and a layer chain that
does not fit together (shapes are propagated from ``input_shape``); every message names the
layer by index and name. Conv2d and Linear are the analog layers (their weights go on the
crossbar); every other layer and every bias run digitally.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

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

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pcmtwin.v1 import network_pb2, tensor_pb2

#: dtypes a tensor may carry (numpy names, as in ``pcmtwin.v1.Tensor``).
TENSOR_DTYPES = (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
)  # fmt: skip
FLOAT_DTYPES = ("float16", "float32", "float64")

Shape = tuple[int, ...]


def _pair(v: Any) -> Any:
    """torch accepts ``3`` for ``(3, 3)``; so do we."""
    if isinstance(v, int) and not isinstance(v, bool):
        return (v, v)
    if isinstance(v, list):
        return tuple(v)
    return v


Pair = Annotated[tuple[int, int], BeforeValidator(_pair)]


class Tensor(BaseModel):
    """A dense array: ``dtype`` (numpy name), ``shape`` and either ``data`` (raw little-endian
    bytes, C order) or ``values`` (a flat list of numbers, C order)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, ser_json_bytes="base64", val_json_bytes="base64"
    )

    dtype: Literal[TENSOR_DTYPES]  # type: ignore[valid-type]
    shape: tuple[Annotated[int, Field(ge=0)], ...]
    data: bytes | None = None
    values: list[float] | None = None

    @model_validator(mode="after")
    def _check_size(self) -> Tensor:
        n = math.prod(self.shape)
        if (self.data is None) == (self.values is None):
            raise ValueError("a tensor needs exactly one of data (bytes) or values (a list)")
        if self.data is not None:
            itemsize = np.dtype(self.dtype).itemsize
            if len(self.data) != n * itemsize:
                raise ValueError(
                    f"tensor data has {len(self.data)} bytes, expected {n * itemsize} "
                    f"({n} x {self.dtype} for shape {self.shape})"
                )
        elif len(self.values) != n:  # type: ignore[arg-type]
            raise ValueError(
                f"tensor has {len(self.values)} values, expected {n} for shape {self.shape}"  # type: ignore[arg-type]
            )
        if self.dtype in FLOAT_DTYPES and not np.all(np.isfinite(self.to_numpy())):
            raise ValueError("tensor contains NaN or Inf")
        return self

    def to_numpy(self) -> np.ndarray:
        """The array (a fresh, writable copy in native byte order)."""
        dt = np.dtype(self.dtype).newbyteorder("<")
        if self.data is not None:
            a = np.frombuffer(self.data, dtype=dt)
        else:
            a = np.asarray(self.values, dtype=np.float64).astype(dt)
        return a.astype(np.dtype(self.dtype)).reshape(self.shape)

    def to_torch(self) -> torch.Tensor:
        import torch

        return torch.from_numpy(self.to_numpy())

    @classmethod
    def from_array(cls, a: np.ndarray | torch.Tensor) -> Tensor:
        """From a numpy array or a torch tensor (copied to little-endian bytes)."""
        if not isinstance(a, np.ndarray):
            a = a.detach().cpu().numpy()
        if a.dtype.name not in TENSOR_DTYPES:
            raise ValueError(f"unsupported tensor dtype {a.dtype}")
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        return cls(dtype=a.dtype.name, shape=tuple(int(s) for s in a.shape), data=le.tobytes())

    def to_proto(self) -> tensor_pb2.Tensor:
        from pcmtwin.v1 import tensor_pb2

        data = self.data if self.data is not None else Tensor.from_array(self.to_numpy()).data
        return tensor_pb2.Tensor(data=data, dtype=self.dtype, shape=list(self.shape))

    @classmethod
    def from_proto(cls, msg: tensor_pb2.Tensor) -> Tensor:
        return cls(dtype=msg.dtype, shape=tuple(msg.shape), data=bytes(msg.data))


# --- layers ---------------------------------------------------------------------------------
def _spatial_out(size: int, kernel: int, stride: int, pad: int, dil: int, ceil: bool) -> int:
    """torch's output size of a convolution or pooling along one dimension."""
    span = size + 2 * pad - dil * (kernel - 1) - 1
    out = (-(-span // stride) if ceil else span // stride) + 1
    # torch's rule: with ceil_mode the last window must start inside the (left-padded) input
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class _Layer(BaseModel):
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


class Conv2d(_Layer):
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


class Linear(_Layer):
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


class ReLU(_Layer):
    kind: Literal["ReLU"] = "ReLU"


class MaxPool2d(_Layer):
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
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError("padding must be >= 0 and at most half the kernel size")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape)
        stride = self.stride or self.kernel_size
        out = tuple(
            _spatial_out(shape[1 + d], self.kernel_size[d], stride[d], self.padding[d],
                         self.dilation[d], self.ceil_mode)
            for d in range(2)
        )  # fmt: skip
        if min(out) < 1:
            raise ValueError(f"pool {self.kernel_size} does not fit the input {shape}")
        return (shape[0], *out)


class AvgPool2d(_Layer):
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
        if any(p < 0 or 2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError("padding must be >= 0 and at most half the kernel size")
        return self

    def output_shape(self, shape: Shape) -> Shape:
        self._need_image(shape)
        stride = self.stride or self.kernel_size
        out = tuple(
            _spatial_out(shape[1 + d], self.kernel_size[d], stride[d], self.padding[d], 1,
                         self.ceil_mode)
            for d in range(2)
        )  # fmt: skip
        if min(out) < 1:
            raise ValueError(f"pool {self.kernel_size} does not fit the input {shape}")
        return (shape[0], *out)


class Flatten(_Layer):
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


class BatchNorm2d(_Layer):
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


class LogSoftmax(_Layer):
    kind: Literal["LogSoftmax"] = "LogSoftmax"
    dim: int = 1

    def output_shape(self, shape: Shape) -> Shape:
        nd = len(shape) + 1
        if not -nd <= self.dim < nd or self.dim % nd == 0:
            raise ValueError(f"dim {self.dim} is not a feature dimension of a batched {shape}")
        return shape


LAYER_TYPES: dict[str, type[_Layer]] = {
    c.model_fields["kind"].default: c
    for c in (Conv2d, Linear, ReLU, MaxPool2d, AvgPool2d, Flatten, BatchNorm2d, LogSoftmax)
}
Layer = Annotated[
    Conv2d | Linear | ReLU | MaxPool2d | AvgPool2d | Flatten | BatchNorm2d | LogSoftmax,
    Field(discriminator="kind"),
]
AnalogLayer = Conv2d | Linear


def _describe_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors(include_url=False):
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(parts)


class NetworkDescription(BaseModel):
    """A network: ``input_shape`` (one sample, no batch dimension) and an ordered layer list."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "network"
    input_shape: tuple[PositiveInt, ...] = Field(min_length=1, max_length=3)
    layers: list[Layer] = Field(min_length=1)
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("layers", mode="before")
    @classmethod
    def _validate_each_layer(cls, raw: Any) -> Any:
        """Validate layer by layer so that every message names the layer (index and name)."""
        if not isinstance(raw, list | tuple):
            return raw
        out: list[_Layer] = []
        for i, item in enumerate(raw):
            if isinstance(item, _Layer):
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
                raise ValueError(f"layer {i} ({name!r}, {kind}): {_describe_errors(err)}") from None
        return out

    @model_validator(mode="after")
    def _check_chain(self) -> NetworkDescription:
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.layers):
            if layer.name in seen:
                raise ValueError(
                    f"layer {i} ({layer.name!r}): name already used by layer {seen[layer.name]}"
                )
            seen[layer.name] = i
        self.shapes()  # raises with the failing layer named
        return self

    # --- shapes -----------------------------------------------------------------------------
    def shapes(self) -> list[Shape]:
        """Output shape (one sample) after each layer, propagated from ``input_shape``."""
        shape: Shape = tuple(self.input_shape)
        out: list[Shape] = []
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.output_shape(shape)
            except ValueError as err:
                raise ValueError(f"layer {i} ({layer.name!r}, {layer.kind}): {err}") from None
            out.append(shape)
        return out

    def input_shapes(self) -> list[Shape]:
        """Input shape (one sample) of each layer."""
        return [tuple(self.input_shape), *self.shapes()[:-1]]

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    def analog_layers(self) -> list[tuple[int, Conv2d | Linear]]:
        """(index, layer) of every layer whose weights go on the crossbar."""
        return [(i, layer) for i, layer in enumerate(self.layers) if layer.analog]  # type: ignore[misc]

    def n_analog_weights(self) -> int:
        return sum(math.prod(layer.weight.shape) for _, layer in self.analog_layers())

    def layer_index(self, name: str) -> int:
        for i, layer in enumerate(self.layers):
            if layer.name == name:
                return i
        raise KeyError(f"no layer named {name!r}")

    def with_weights(self, weights: dict[str, np.ndarray]) -> NetworkDescription:
        """A copy with the weights of the named analog layers replaced (same shapes)."""
        layers = list(self.layers)
        for name, w in weights.items():
            i = self.layer_index(name)
            layer = layers[i]
            if not layer.analog:
                raise ValueError(f"layer {i} ({name!r}) is not an analog layer")
            layers[i] = layer.model_copy(update={"weight": Tensor.from_array(np.asarray(w))})
        # re-validate: a replaced weight of the wrong shape must not slip through
        return NetworkDescription.model_validate(
            {**self.model_dump(exclude={"layers"}), "layers": [la.model_dump() for la in layers]}
        )

    # --- torch ------------------------------------------------------------------------------
    def to_torch(self) -> nn.Sequential:
        """An ``nn.Sequential`` (float32, eval mode) with the layers' names and weights."""
        import torch
        from torch import nn

        def t(x: Tensor) -> torch.Tensor:
            return torch.from_numpy(x.to_numpy().astype(np.float32))

        mods: OrderedDict[str, nn.Module] = OrderedDict()
        for layer in self.layers:
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
                case _:  # pragma: no cover - LAYER_TYPES and this match are kept in step
                    raise AssertionError(layer.kind)
            with torch.no_grad():
                for pname in ("weight", "bias"):
                    value = getattr(layer, pname, None)
                    if isinstance(value, Tensor):
                        getattr(m, pname).copy_(t(value))
            mods[layer.name] = m
        return nn.Sequential(mods).eval()

    @classmethod
    def from_torch(
        cls,
        model: nn.Sequential,
        input_shape: Shape,
        name: str = "network",
        metadata: dict[str, str] | None = None,
    ) -> NetworkDescription:
        """Describe an ``nn.Sequential`` of supported layers (weights copied as float32)."""
        from torch import nn

        def t(x: torch.Tensor | None) -> Tensor | None:
            return None if x is None else Tensor.from_array(x.detach().float().cpu().numpy())

        def pair(v: Any) -> tuple[int, int]:
            return _pair(v) if not isinstance(v, tuple) else tuple(v)  # type: ignore[return-value]

        layers: list[dict[str, Any]] = []
        for i, (mname, m) in enumerate(model.named_children()):
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
            else:
                raise ValueError(
                    f"{where}: unsupported module; supported: {', '.join(LAYER_TYPES)}"
                )
            layers.append({"name": mname, **d})
        return cls(
            name=name, input_shape=tuple(input_shape), layers=layers, metadata=metadata or {}
        )

    # --- proto ------------------------------------------------------------------------------
    def to_proto(self) -> network_pb2.NetworkDescription:
        from pcmtwin.v1 import network_pb2 as pb

        msg = pb.NetworkDescription(
            name=self.name, input_shape=list(self.input_shape), metadata=dict(self.metadata)
        )
        for layer in self.layers:
            out = msg.layers.add(name=layer.name)
            match layer:
                case Conv2d():
                    c = out.conv2d
                    c.in_channels, c.out_channels = layer.in_channels, layer.out_channels
                    c.kernel_size[:] = layer.kernel_size
                    c.stride[:], c.padding[:] = layer.stride, layer.padding
                    c.dilation[:] = layer.dilation
                    c.weight.CopyFrom(layer.weight.to_proto())
                    if layer.bias is not None:
                        c.bias.CopyFrom(layer.bias.to_proto())
                case Linear():
                    li = out.linear
                    li.in_features, li.out_features = layer.in_features, layer.out_features
                    li.weight.CopyFrom(layer.weight.to_proto())
                    if layer.bias is not None:
                        li.bias.CopyFrom(layer.bias.to_proto())
                case ReLU():
                    out.relu.SetInParent()
                case MaxPool2d():
                    p = out.max_pool2d
                    p.kernel_size[:] = layer.kernel_size
                    p.stride[:] = layer.stride or ()
                    p.padding[:], p.dilation[:] = layer.padding, layer.dilation
                    p.ceil_mode = layer.ceil_mode
                case AvgPool2d():
                    a = out.avg_pool2d
                    a.kernel_size[:] = layer.kernel_size
                    a.stride[:] = layer.stride or ()
                    a.padding[:] = layer.padding
                    a.ceil_mode = layer.ceil_mode
                    a.exclude_pad = not layer.count_include_pad
                case Flatten():
                    out.flatten.start_dim = layer.start_dim
                    out.flatten.end_dim = layer.end_dim
                case BatchNorm2d():
                    b = out.batch_norm2d
                    b.num_features, b.eps, b.momentum = (
                        layer.num_features, layer.eps, layer.momentum
                    )  # fmt: skip
                    for n in ("weight", "bias", "running_mean", "running_var"):
                        value = getattr(layer, n)
                        if value is not None:
                            getattr(b, n).CopyFrom(value.to_proto())
                case LogSoftmax():
                    out.log_softmax.dim = layer.dim
        return msg

    @classmethod
    def from_proto(cls, msg: network_pb2.NetworkDescription) -> NetworkDescription:
        """Validate a proto message; ValidationError names the offending layer."""

        def tensor(parent: Any, field: str) -> Tensor | None:
            return Tensor.from_proto(getattr(parent, field)) if parent.HasField(field) else None

        def pair(v: Any, default: tuple[int, int] | None) -> tuple[int, ...] | None:
            return tuple(v) if len(v) else default

        layers: list[dict[str, Any]] = []
        for pl in msg.layers:
            which = pl.WhichOneof("kind")
            d: dict[str, Any] = {"name": pl.name}
            if which == "conv2d":
                c = pl.conv2d
                d |= dict(kind="Conv2d", in_channels=c.in_channels, out_channels=c.out_channels,
                          kernel_size=tuple(c.kernel_size), stride=pair(c.stride, (1, 1)),
                          padding=pair(c.padding, (0, 0)), dilation=pair(c.dilation, (1, 1)),
                          weight=tensor(c, "weight"), bias=tensor(c, "bias"))  # fmt: skip
            elif which == "linear":
                li = pl.linear
                d |= dict(kind="Linear", in_features=li.in_features,
                          out_features=li.out_features, weight=tensor(li, "weight"),
                          bias=tensor(li, "bias"))  # fmt: skip
            elif which == "relu":
                d |= dict(kind="ReLU")
            elif which == "max_pool2d":
                p = pl.max_pool2d
                d |= dict(kind="MaxPool2d", kernel_size=tuple(p.kernel_size),
                          stride=pair(p.stride, None), padding=pair(p.padding, (0, 0)),
                          dilation=pair(p.dilation, (1, 1)), ceil_mode=p.ceil_mode)  # fmt: skip
            elif which == "avg_pool2d":
                a = pl.avg_pool2d
                d |= dict(kind="AvgPool2d", kernel_size=tuple(a.kernel_size),
                          stride=pair(a.stride, None), padding=pair(a.padding, (0, 0)),
                          ceil_mode=a.ceil_mode, count_include_pad=not a.exclude_pad)  # fmt: skip
            elif which == "flatten":
                f = pl.flatten
                d |= dict(kind="Flatten", start_dim=f.start_dim or 1,
                          end_dim=f.end_dim if f.HasField("end_dim") else -1)  # fmt: skip
            elif which == "batch_norm2d":
                b = pl.batch_norm2d
                d |= dict(kind="BatchNorm2d", num_features=b.num_features, eps=b.eps or 1e-5,
                          momentum=b.momentum or 0.1, weight=tensor(b, "weight"),
                          bias=tensor(b, "bias"), running_mean=tensor(b, "running_mean"),
                          running_var=tensor(b, "running_var"))  # fmt: skip
            elif which == "log_softmax":
                d |= dict(kind="LogSoftmax", dim=pl.log_softmax.dim or 1)
            else:
                d |= {"kind": None}  # rejected below, naming the layer
            layers.append(d)
        return cls(
            name=msg.name or "network",
            input_shape=tuple(msg.input_shape),
            layers=layers,
            metadata=dict(msg.metadata),
        )
