"""A declarative network description: an ordered list of layers with their weights as tensors.

``NetworkDescription`` is what a host sends to load a network (as the proto message
``pcmtwin.v1.NetworkDescription``, or as JSON) and what the workloads produce after training.
It holds no code: weights are tensors (:mod:`~controller.workloads.tensor`), never pickles, so
loading one executes nothing.

Validation rejects an unknown layer kind, a weight of the wrong shape and a layer chain that
does not fit together (shapes are propagated from ``input_shape`` through each layer's shape
rule, :mod:`~controller.workloads.layers`); every message names the layer by index and name.
The conversions to and from torch modules and proto messages are in
:mod:`~controller.workloads.network_torch` and :mod:`~controller.workloads.network_proto`;
:func:`network_from_proto` reads a request's message and refuses it with ``InvalidArgument``
naming every field at fault by its path in the request (``network.layers[2].linear.weight.data``)
and the layer by index and name, in words (no validation dumps).
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from torch import nn

from controller.workloads.layers import (
    LAYER_TYPES,
    BaseLayer,
    Conv2d,
    Layer,
    Linear,
    PositiveInt,
    Residual,
    Shape,
    chain_shapes,
    validate_layer_list,
    walk_layers,
)
from controller.workloads.network_proto import network_fields_from_proto, network_to_proto
from controller.workloads.network_torch import layer_fields_from_torch, torch_sequential
from controller.workloads.tensor import Tensor
from device_twin.errors import InvalidArgument
from pcmtwin.v1 import network_pb2


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
        return validate_layer_list(raw)

    @model_validator(mode="after")
    def _check_chain(self) -> NetworkDescription:
        seen: dict[str, int] = {}
        for i, layer in enumerate(self.walk()):
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
        return chain_shapes(self.layers, tuple(self.input_shape))

    def walk(self) -> list[Layer]:
        """Every layer, those inside residual blocks included, depth first (a block, then its
        body, then its shortcut): the order of ``analog_layers`` and of name look-ups."""
        return walk_layers(self.layers)

    def input_shapes(self) -> list[Shape]:
        """Input shape (one sample) of each layer."""
        return [tuple(self.input_shape), *self.shapes()[:-1]]

    @property
    def output_shape(self) -> Shape:
        return self.shapes()[-1]

    def analog_layers(self) -> list[tuple[int, Conv2d | Linear]]:
        """(index in ``walk()``, layer) of every layer whose weights go on the crossbar."""
        return [(i, layer) for i, layer in enumerate(self.walk()) if layer.analog]  # type: ignore[misc]

    def n_analog_weights(self) -> int:
        return sum(math.prod(layer.weight.shape) for _, layer in self.analog_layers())

    def layer_index(self, name: str) -> int:
        """Index in ``walk()`` of the layer called ``name``."""
        for i, layer in enumerate(self.walk()):
            if layer.name == name:
                return i
        raise KeyError(f"no layer named {name!r}")

    def with_weights(self, weights: dict[str, np.ndarray]) -> NetworkDescription:
        """A copy with the weights of the named analog layers replaced (same shapes)."""
        layers = self.walk()
        for name in weights:
            i = self.layer_index(name)
            if not layers[i].analog:
                raise ValueError(f"layer {i} ({name!r}) is not an analog layer")

        def replace(items: list[BaseLayer]) -> list[dict[str, Any]]:
            out = []
            for la in items:
                d = la.model_dump(exclude={"body", "shortcut"})
                if la.name in weights:
                    d["weight"] = Tensor.from_array(np.asarray(weights[la.name]))
                if isinstance(la, Residual):
                    d |= {"body": replace(la.body), "shortcut": replace(la.shortcut)}
                out.append(d)
            return out

        # re-validate: a replaced weight of the wrong shape must not slip through
        return NetworkDescription.model_validate(
            {**self.model_dump(exclude={"layers"}), "layers": replace(self.layers)}
        )

    # --- conversions ------------------------------------------------------------------------
    def to_torch(self) -> nn.Sequential:
        """An ``nn.Sequential`` (float32, eval mode) with the layers' names and weights."""
        return torch_sequential(self.layers)

    @classmethod
    def from_torch(
        cls,
        model: nn.Sequential,
        input_shape: Shape,
        name: str = "network",
        metadata: dict[str, str] | None = None,
    ) -> NetworkDescription:
        """Describe an ``nn.Sequential`` of supported layers (weights copied as float32)."""
        return cls(
            name=name,
            input_shape=tuple(input_shape),
            layers=layer_fields_from_torch(model),
            metadata=metadata or {},
        )

    def to_proto(self) -> network_pb2.NetworkDescription:
        return network_to_proto(self.name, self.input_shape, self.layers, self.metadata)

    @classmethod
    def from_proto(cls, msg: network_pb2.NetworkDescription) -> NetworkDescription:
        """Validate a proto message; ValidationError names the offending layer."""
        return cls(**network_fields_from_proto(msg))


# --- a request's network ---------------------------------------------------------------------
#: The proto field of each layer kind (``NetworkDescription.layers[i].<field>``).
_PROTO_KIND = {"Conv2d": "conv2d", "Linear": "linear", "ReLU": "relu", "MaxPool2d": "max_pool2d",
               "AvgPool2d": "avg_pool2d", "Flatten": "flatten", "BatchNorm2d": "batch_norm2d",
               "LogSoftmax": "log_softmax", "Residual": "residual"}  # fmt: skip
#: Where a pydantic layer field sits in its proto message, where the names differ.
_PROTO_FIELD = {"count_include_pad": "exclude_pad"}
_LAYER_INDEX = re.compile(r"^layer (\d+) ")


def _words(msg: str) -> str:
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return msg


def _layer_problems(i: int, item: dict[str, Any], path: str) -> list[tuple[str, str]]:
    """What is wrong with layer ``i`` on its own (its kind, its fields), by proto path."""
    name, kind = item.get("name", ""), item.get("kind")
    here = f"{path}.layers[{i}]"
    if kind is None:
        kinds = ", ".join(_PROTO_KIND.values())
        return [(here, f"layer {i} ({name!r}) has no kind: set one of {kinds}")]
    try:
        LAYER_TYPES[kind].model_validate(item)
    except ValidationError as err:
        out = []
        for e in err.errors(include_url=False, include_input=False, include_context=False):
            loc = [_PROTO_FIELD.get(str(p), p) for p in e["loc"]]
            where = ".".join(str(p) for p in loc)
            field = f"{here}.{_PROTO_KIND[kind]}.{where}" if where else here
            if loc and loc[0] == "name":
                field = f"{here}.name"
            said = f"{where}: {_words(e['msg'])}" if where else _words(e["msg"])
            out.append((field, f"layer {i} ({name!r}, {kind}): {said}"))
        return out
    return []


def network_from_proto(
    msg: network_pb2.NetworkDescription, field: str = "network"
) -> NetworkDescription:
    """The description in a request's message, or ``InvalidArgument`` naming each field at
    fault by its path in the request (``field``: the message's own, e.g. ``network``)."""
    tensors: list[tuple[str, str]] = []
    fields = network_fields_from_proto(msg, tensors)
    problems = [(f"{field}.{p}", why) for p, why in tensors]
    if not problems:
        for i, item in enumerate(fields["layers"]):
            problems += _layer_problems(i, item, field)
    if not problems:
        try:
            return NetworkDescription(**fields)
        except ValidationError as err:
            for e in err.errors(include_url=False, include_input=False, include_context=False):
                why = _words(str(e["msg"]))
                loc = [str(p) for p in e["loc"]]
                at = _LAYER_INDEX.match(why)
                if at is not None:
                    where = f"{field}.layers[{at.group(1)}]"
                elif loc:
                    where = f"{field}.{loc[0]}" + "".join(f"[{p}]" for p in loc[1:])
                else:
                    where = field
                if loc and not at:
                    why = f"{'.'.join(loc)}: {why}"
                problems.append((where, why))
    shown = "; ".join(why for _, why in problems[:5])
    more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
    raise InvalidArgument(f"{field} is not valid: {shown}{more}", violations=problems)
