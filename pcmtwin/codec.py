"""Values on the wire: numpy arrays as ``Tensor`` messages, the twin's results and enums,
the services' names and message size limits.

Shared by the servers and the clients of both services, so that a value is encoded in one
place and decoded in one place. A ``Tensor`` is raw little-endian bytes in C order, a dtype
name and a shape (never one message field per number). Decoding checks everything a client
can get wrong (dtype, shape, byte length) and raises ``InvalidArgument`` naming the field.
"""

from __future__ import annotations

import math

import numpy as np

from device_twin.chip import Array, OpResult, PulseKind
from device_twin.errors import InvalidArgument
from device_twin.program_verify import METHODS, VerifyStats
from pcmtwin.v1 import host_pb2, tensor_pb2, twin_pb2

#: Full names of the two services (health checks and reflection name them).
TWIN_SERVICE = twin_pb2.DESCRIPTOR.services_by_name["CrossbarTwin"].full_name
HOST_SERVICE = host_pb2.DESCRIPTOR.services_by_name["ChipHost"].full_name
#: Default limit of one message, each way, on both services and their clients.
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024**2
#: Room left in a message for everything but the tensor payload.
MESSAGE_OVERHEAD_BYTES = 64 * 1024
MAX_TENSOR_NDIM = 8

_DTYPES = {
    name: np.dtype(name).newbyteorder("<")
    for name in ("float32", "float64", "int8", "int16", "int32", "int64",
                 "uint8", "uint16", "uint32", "uint64")
}  # fmt: skip
FLOAT = ("float32", "float64")
INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
ANY_DTYPE = tuple(_DTYPES)


# --- tensors -------------------------------------------------------------------------------
def numpy_to_tensor(a: np.ndarray) -> tensor_pb2.Tensor:
    """A numpy array as a Tensor message (raw little-endian bytes, C order)."""
    return fill_tensor(tensor_pb2.Tensor(), a)


def fill_tensor(t: tensor_pb2.Tensor, a: np.ndarray) -> tensor_pb2.Tensor:
    """Write a numpy array into the Tensor field ``t`` of a message, in place: the bytes are
    copied once (``numpy_to_tensor`` then ``CopyFrom`` copies them twice more)."""
    a = np.asarray(a)
    if a.dtype.name not in _DTYPES:
        raise InvalidArgument(
            f"dtype {a.dtype} cannot travel: expected one of {', '.join(_DTYPES)}"
        )
    le = np.ascontiguousarray(a).astype(_DTYPES[a.dtype.name], copy=False)
    t.data = le.tobytes()
    t.dtype = a.dtype.name
    t.shape[:] = a.shape
    return t


def tensor_to_numpy(t: tensor_pb2.Tensor, name: str, dtypes: tuple[str, ...]) -> np.ndarray:
    """A Tensor message as a (writable, native) numpy array; ``InvalidArgument`` if malformed.

    ``name`` is the field's name in the request (``x``, ``layers[2].weight``): errors name
    ``<name>.dtype``, ``<name>.shape`` or ``<name>.data``.
    """
    if t.dtype not in dtypes:
        raise InvalidArgument(
            f"{name}.dtype {t.dtype!r} is not accepted here: expected one of {', '.join(dtypes)}",
            field=f"{name}.dtype",
        )
    shape = tuple(t.shape)
    if len(shape) > MAX_TENSOR_NDIM or any(d < 0 for d in shape):
        raise InvalidArgument(
            f"{name}.shape {list(shape)} is not valid: expected at most {MAX_TENSOR_NDIM} "
            "dimensions, each >= 0",
            field=f"{name}.shape",
        )
    dt = _DTYPES[t.dtype]
    n_bytes = math.prod(shape) * dt.itemsize  # Python ints: no overflow for huge shapes
    if len(t.data) != n_bytes:
        raise InvalidArgument(
            f"{name} has {len(t.data)} bytes of data, but dtype {t.dtype} and shape "
            f"{list(shape)} need {n_bytes}",
            field=f"{name}.data",
        )
    return np.frombuffer(t.data, dt).reshape(shape).astype(dt.newbyteorder("="))


def required(msg, field: str, what: str):
    """The message field ``field``; ``InvalidArgument`` saying it is ``what`` if unset."""
    if not msg.HasField(field):
        raise InvalidArgument(f"{field} is required: {what}", field=field)
    return getattr(msg, field)


def required_tensor(msg, field: str, dtypes: tuple[str, ...], what: str) -> np.ndarray:
    """The Tensor field ``field`` of ``msg`` as numpy (``required``, then ``tensor_to_numpy``)."""
    return tensor_to_numpy(required(msg, field, what), field, dtypes)


# --- the twin's results --------------------------------------------------------------------
def result_to_proto(r: OpResult) -> twin_pb2.OpResult:
    msg = twin_pb2.OpResult(
        kind=r.kind, tile=int(r.tile), at_s=float(r.at_s), devices=int(r.devices),
        pulses=int(r.pulses), iterations=int(r.iterations), energy_pj=float(r.energy_pj),
        latency_s=float(r.latency_s),
    )  # fmt: skip
    if r.values is not None:
        fill_tensor(msg.values, r.values)
    if r.scale_us is not None:
        msg.scale_us = float(r.scale_us)
    if r.failed is not None:
        msg.failed.CopyFrom(numpy_to_tensor(np.asarray(r.failed, np.int64)))
    v = r.verify
    if v is not None:
        msg.verify.CopyFrom(twin_pb2.ProgramVerifyStats(**v.header()))
        if v.t_write_s is not None:
            msg.verify.t_write_s.CopyFrom(numpy_to_tensor(np.asarray(v.t_write_s, np.float64)))
    return msg


def result_from_proto(m: twin_pb2.OpResult) -> OpResult:
    values = None
    if m.HasField("values"):
        values = tensor_to_numpy(m.values, "values", ANY_DTYPE)
    failed = tensor_to_numpy(m.failed, "failed", ("int64",)) if m.HasField("failed") else None
    verify = None
    if m.HasField("verify"):
        v = m.verify
        t_write = None
        if v.HasField("t_write_s"):
            t_write = tensor_to_numpy(v.t_write_s, "verify.t_write_s", ("float64",))
        verify = VerifyStats(steps=v.steps, reprograms=v.reprograms, set_pulses=v.set_pulses,
                             checks=v.checks, plans=v.plans, t_write_s=t_write)  # fmt: skip
    return OpResult(
        m.kind, int(m.tile), m.at_s, devices=m.devices, pulses=m.pulses,
        iterations=m.iterations, energy_pj=m.energy_pj, latency_s=m.latency_s, values=values,
        scale_us=m.scale_us if m.HasField("scale_us") else None, failed=failed, verify=verify,
    )  # fmt: skip


# --- the twin's enums (proto values are the core's + 1: 0 means unset) ---------------------
def array_from_proto(value: int, allow_diff: bool = False) -> Array:
    expected = "ARRAY_POS (1), ARRAY_NEG (2), ARRAY_BOTH (4)" + (
        " or ARRAY_DIFF (3)" if allow_diff else ""
    )
    if value == twin_pb2.ARRAY_UNSPECIFIED:
        raise InvalidArgument(
            f"array is not set (ARRAY_UNSPECIFIED): expected {expected}", field="array"
        )
    if value not in (
        twin_pb2.ARRAY_POS,
        twin_pb2.ARRAY_NEG,
        twin_pb2.ARRAY_DIFF,
        twin_pb2.ARRAY_BOTH,
    ):
        raise InvalidArgument(f"unknown array value {value}: expected {expected}", field="array")
    a = Array(value - 1)
    if a is Array.DIFF and not allow_diff:
        raise InvalidArgument(
            f"ARRAY_DIFF is only valid for Probe: expected {expected}", field="array"
        )
    return a


def array_to_proto(a: int) -> int:
    return int(a) + 1


def pulse_kind_from_proto(value: int) -> PulseKind:
    expected = "PULSE_KIND_SET (1) or PULSE_KIND_RESET (2)"
    if value == twin_pb2.PULSE_KIND_UNSPECIFIED:
        raise InvalidArgument(
            f"kind is not set (PULSE_KIND_UNSPECIFIED): expected {expected}", field="kind"
        )
    if value not in (twin_pb2.PULSE_KIND_SET, twin_pb2.PULSE_KIND_RESET):
        raise InvalidArgument(
            f"unknown pulse kind value {value}: expected {expected}", field="kind"
        )
    return PulseKind(value - 1)


def pulse_kind_to_proto(k: int) -> int:
    return int(k) + 1


# ProgramVerify's methods, by proto value (0 means unset)
_VERIFY_METHODS = {
    twin_pb2.VERIFY_METHOD_AUTO: "auto",
    twin_pb2.VERIFY_METHOD_PULSE: "pulse",
    twin_pb2.VERIFY_METHOD_PROGRAM: "program",
}
assert sorted(_VERIFY_METHODS.values()) == sorted(METHODS)


def verify_method_from_proto(value: int) -> str:
    expected = "VERIFY_METHOD_AUTO (1), VERIFY_METHOD_PULSE (2) or VERIFY_METHOD_PROGRAM (3)"
    if value not in _VERIFY_METHODS:
        what = f"value {value} is unknown" if value else "is not set (VERIFY_METHOD_UNSPECIFIED)"
        raise InvalidArgument(f"method {what}: expected {expected}", field="method")
    return _VERIFY_METHODS[value]


def verify_method_to_proto(method: str) -> int:
    return {v: k for k, v in _VERIFY_METHODS.items()}[method]
