"""A dense array as the network description carries it: dtype, shape and little-endian bytes.

A :class:`Tensor` is the JSON and proto form (``pcmtwin.v1.Tensor``) of a weight: raw bytes or
a list of numbers, never a pickle, so reading one executes nothing. Validation checks the
size against the shape and refuses NaN and Inf in floating tensors.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator

from pcmtwin.v1 import tensor_pb2

#: dtypes a tensor may carry (numpy names, as in ``pcmtwin.v1.Tensor``).
TENSOR_DTYPES = (
    "float16", "float32", "float64", "int8", "int16", "int32", "int64",
    "uint8", "uint16", "uint32", "uint64",
)  # fmt: skip
FLOAT_DTYPES = ("float16", "float32", "float64")


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
        data = self.data if self.data is not None else Tensor.from_array(self.to_numpy()).data
        return tensor_pb2.Tensor(data=data, dtype=self.dtype, shape=list(self.shape))

    @classmethod
    def from_proto(cls, msg: tensor_pb2.Tensor) -> Tensor:
        return cls(dtype=msg.dtype, shape=tuple(msg.shape), data=bytes(msg.data))
