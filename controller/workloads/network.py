"""A declarative network description: an ordered list of layers with their weights as tensors.

``NetworkDescription`` is what a host sends to load a network (as the proto message
``pcmtwin.v1.NetworkDescription``, or as JSON) and what the workloads produce after training.
It holds no code: weights are tensors (:mod:`~controller.workloads.tensor`), never pickles, so
loading one executes nothing.

Validation rejects an unknown layer kind, a weight of the wrong shape and a layer chain that
does not fit together (shapes are propagated from ``input_shape`` through each layer's shape
rule, :mod:`~controller.workloads.layers`); every message names the layer by index and name.
The conversions to and from torch modules and proto messages are in
:mod:`~controller.workloads.network_torch` and :mod:`~controller.workloads.network_proto`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from controller.workloads.layers import (
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
