"""Network descriptions to and from their proto message ``pcmtwin.v1.NetworkDescription``.

:func:`network_to_proto` writes a description's fields as the message (weights as raw
little-endian tensors); :func:`network_fields_from_proto` reads a message back into the
fields ``NetworkDescription`` validates (an unknown layer kind is kept as ``kind: None``, so
that validation refuses it naming the layer). ``NetworkDescription.to_proto`` / ``from_proto``
are the way in; ``network.network_from_proto`` reads a request's message, naming every field
at fault by its path in the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from controller.workloads.layers import (
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
)
from controller.workloads.tensor import TENSOR_DTYPES, Tensor
from pcmtwin.v1 import network_pb2

#: The layer kind of each proto layer field that holds tensors.
_KINDS = {"conv2d": "Conv2d", "linear": "Linear", "batch_norm2d": "BatchNorm2d"}
#: A tensor field the message holds but that is not a valid tensor: (path in the message,
#: what is wrong), e.g. ("layers[2].linear.weight.data", "weight.data has 10 bytes, ...").
TensorProblem = tuple[str, str]


def network_to_proto(
    name: str, input_shape: Sequence[int], layers: Sequence[BaseLayer], metadata: Mapping[str, str]
) -> network_pb2.NetworkDescription:
    """The proto message of a network description's fields."""
    msg = network_pb2.NetworkDescription(
        name=name, input_shape=list(input_shape), metadata=dict(metadata)
    )

    def add(into: Any, items: Sequence[BaseLayer]) -> None:
        for layer in items:
            out = into.add(name=layer.name)
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
                case Residual():
                    add(out.residual.body, layer.body)
                    add(out.residual.shortcut, layer.shortcut)

    add(msg.layers, layers)
    return msg


def _layer_label(path: str) -> str:
    """``layers[2]`` -> ``layer 2``; a layer inside a residual block keeps its whole path."""
    top = path.removeprefix("layers[").removesuffix("]")
    return f"layer {top}" if top.isdigit() else path


def network_fields_from_proto(
    msg: network_pb2.NetworkDescription, problems: list[TensorProblem] | None = None
) -> dict[str, Any]:
    """The fields of a ``NetworkDescription`` in a proto message (not yet validated).

    A tensor that is not valid (dtype, shape, byte length, NaN) raises pydantic's error, or,
    with ``problems``, is left out and described there, by its path in the message."""
    here: list[Any] = ["", None]  # the layer being read: its path, and its message

    def tensor(parent: Any, field: str) -> Tensor | None:
        if not parent.HasField(field):
            return None
        try:
            return Tensor.from_proto(getattr(parent, field))
        except ValidationError as exc:
            if problems is None:
                raise
            path, layer = here
            which = layer.WhichOneof("kind")
            t = getattr(parent, field)
            for err in exc.errors(include_url=False, include_input=False):
                part = str(err["loc"][0]) if err["loc"] else "data"
                why = str(err["msg"]).removeprefix("Value error, ").removeprefix("tensor ")
                why = why.removeprefix(f"{part} ")
                if part == "dtype":
                    known = ", ".join(TENSOR_DTYPES)
                    why = f"{t.dtype!r} is not a tensor dtype: expected one of {known}"
                elif part == "shape":
                    why = f"{list(t.shape)} is not a shape: every dimension must be >= 0"
                problems.append((
                    f"{path}.{which}.{field}.{part}",
                    f"{_layer_label(path)} ({layer.name!r}, {_KINDS[which]}): {field}.{part} {why}",
                ))  # fmt: skip
            return None

    def pair(v: Any, default: tuple[int, int] | None) -> tuple[int, ...] | None:
        return tuple(v) if len(v) else default

    def layers_of(items: Any, depth: int = 0, at: str = "layers") -> list[dict[str, Any]]:
        if depth > MAX_NESTING:
            raise ValueError(f"residual blocks nest deeper than {MAX_NESTING} levels")
        out: list[dict[str, Any]] = []
        for i, pl in enumerate(items):
            here[:] = [f"{at}[{i}]", pl]
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
            elif which == "residual":
                r = pl.residual
                d |= dict(kind="Residual",
                          body=layers_of(r.body, depth + 1, f"{at}[{i}].residual.body"),
                          shortcut=layers_of(r.shortcut, depth + 1,
                                             f"{at}[{i}].residual.shortcut"))  # fmt: skip
            else:
                d |= {"kind": None}  # NetworkDescription refuses it, naming the layer
            out.append(d)
        return out

    return {
        "name": msg.name or "network",
        "input_shape": tuple(msg.input_shape),
        "layers": layers_of(msg.layers),
        "metadata": dict(msg.metadata),
    }
