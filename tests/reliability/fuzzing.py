"""Building blocks of the fuzz tests: hypothesis settings, the case tally, and strategies for
random and extreme values, tensors and times.

Every field has a *good* strategy (a value the server should accept) and a *bad* one
(malformed or extreme: huge and empty shapes, NaN/Inf, dtypes and byte lengths that do not
match, negative and enormous numbers, unknown enum values, pickles). ``requests`` breaks no
field in about half of the cases and one to three fields in the others, so that requests get
through to the core and change state as often as they are refused.
``PCM_TWIN_FUZZ_SCALE`` multiplies the number of examples (default 1: the suite's budget).
"""

from __future__ import annotations

import math
import os
import pickle
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from device_twin.chip import MAX_TIME_S
from pcmtwin.v1 import tensor_pb2

#: Fuzz cases run in this session: "Service.Rpc" -> Counter of outcomes (status code names).
FUZZ_COUNTS: dict[str, Counter] = defaultdict(Counter)
SCALE = float(os.environ.get("PCM_TWIN_FUZZ_SCALE", "1"))


def tally(rpc: str, outcome: str) -> None:
    FUZZ_COUNTS[rpc][outcome] += 1


def fuzz_settings(n_examples: int) -> settings:
    """Bounded, reproducible runs: ``n_examples`` per RPC, no deadline, no example database."""
    return settings(
        max_examples=max(1, int(n_examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


class Field(NamedTuple):
    """How to fill one field of a request: a good and a bad strategy."""

    good: st.SearchStrategy
    bad: st.SearchStrategy


def flaws(names: list[str]) -> st.SearchStrategy[frozenset[str]]:
    """Which fields to break: none (about half the cases) or one to three of them."""
    some = st.lists(st.sampled_from(names), min_size=1, max_size=3).map(frozenset)
    return st.booleans().flatmap(lambda clean: st.just(frozenset()) if clean else some)


@st.composite
def fill_and_flaws(draw, fields: dict[str, Field], extra: tuple[str, ...] = ()):
    """Values for ``fields`` with the ones chosen by ``flaws`` broken, and the chosen names
    (which may include names from ``extra``: fields the caller fills itself)."""
    broken = draw(flaws([*fields, *extra]))
    values = {name: draw(f.bad if name in broken else f.good) for name, f in fields.items()}
    return values, broken


def fill(fields: dict[str, Field]) -> st.SearchStrategy[dict[str, Any]]:
    """Values for ``fields``, with the ones chosen by ``flaws`` broken."""
    return fill_and_flaws(fields).map(lambda vb: vb[0])


# --- numbers -------------------------------------------------------------------------------
SPECIAL_FLOATS = (-0.0, 1e-300, -1.0, 1e30, -1e300, 1.7e308, math.nan, math.inf, -math.inf)
SPECIAL_INTS = (-1, 2**31 - 1, -(2**31), 2**62, 2**63 - 1, -(2**63))


def int64s() -> st.SearchStrategy[int]:
    return st.sampled_from(SPECIAL_INTS) | st.integers(-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class At:
    """A device time: ``now + dt`` of the addressed chip, or an absolute value."""

    dt: float | None = None
    absolute: float | None = None

    def resolve(self, now_s: float) -> float:
        return now_s + self.dt if self.dt is not None else self.absolute  # type: ignore[return-value]


#: Now or later (accepted).
GOOD_TIMES = st.builds(At, dt=st.just(0.0) | st.floats(0.0, 1e5))
#: Earlier than now (FAILED_PRECONDITION), negative, NaN, Inf, beyond the last device time
#: (INVALID_ARGUMENT), the last device time itself, or any double.
BAD_TIMES = st.builds(At, dt=st.floats(-1e4, -1e-6)) | st.builds(
    At,
    absolute=st.sampled_from((-0.0, -1.0, -1e300, 5e-324, 1e30, 1e300, 1.7e308, math.nan,
                              math.inf, -math.inf, MAX_TIME_S, MAX_TIME_S * (1 + 1e-15)))
    | st.floats(),
)  # fmt: skip
TIMES = Field(GOOD_TIMES, BAD_TIMES)


# --- tensors ---------------------------------------------------------------------------------
DTYPES = ("float32", "float64", "int8", "int16", "int32", "int64",
          "uint8", "uint16", "uint32", "uint64")  # fmt: skip
BAD_DTYPES = ("", "float16", "bool", "object", "complex64", "<f4", "float32 ", "FLOAT32",
              "O", "V8", "str", "\x00", "int128", "torch.float32")  # fmt: skip


class _Boom:
    """Unpickling this would run ``os.system``: the bytes must stay data."""

    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


PICKLE_BYTES = pickle.dumps(_Boom())


def raw_tensor(data: bytes, dtype: str, shape) -> tensor_pb2.Tensor:
    return tensor_pb2.Tensor(data=data, dtype=dtype, shape=list(shape))


def np_tensor(a: np.ndarray) -> tensor_pb2.Tensor:
    a = np.ascontiguousarray(a)
    return raw_tensor(a.astype(a.dtype.newbyteorder("<")).tobytes(), a.dtype.name, a.shape)


@st.composite
def float_arrays(draw, shape, lo: float, hi: float, extremes: bool = False,
                 dtypes=("float32", "float64")) -> np.ndarray:  # fmt: skip
    """Floats in [lo, hi] of ``shape``; with ``extremes``, one to three values planted from
    NaN, +-Inf, huge, tiny and just-out-of-range ones."""
    seed = draw(st.integers(0, 2**32 - 1))
    a = np.random.default_rng(seed).uniform(lo, hi, shape).astype(draw(st.sampled_from(dtypes)))
    if a.size and extremes:
        for _ in range(draw(st.integers(1, 3))):
            i = draw(st.integers(0, a.size - 1))
            with np.errstate(over="ignore"):  # 1.7e308 becomes inf in float32: fine
                a.reshape(-1)[i] = draw(st.sampled_from(SPECIAL_FLOATS) | st.floats(lo - 1, hi + 1))
    return a


@st.composite
def index_arrays(draw, limit: int, max_len: int | None = None, flaw: bool = False) -> np.ndarray:
    """Distinct indices in [0, limit), int64 or another integer dtype; with ``flaw``, empty,
    duplicated, negative, out of range, beyond int64, 2-D or wrapped by a narrow dtype."""
    max_len = limit if max_len is None else max_len
    n = draw(st.integers(1, max(1, min(limit, max_len))))
    seed = draw(st.integers(0, 2**32 - 1))
    idx = np.random.default_rng(seed).choice(limit, n, replace=False).astype(np.int64)
    if not flaw:
        ok = [
            d for d in ("int64", "int32", "uint16", "uint32", "uint64") if np.iinfo(d).max >= limit
        ]
        return idx.astype(draw(st.sampled_from(ok)))
    kind = draw(st.sampled_from(("empty", "dup", "neg", "over", "huge", "2d", "wrap")))
    if kind == "empty":
        idx = idx[:0]
    elif kind == "dup":
        idx = np.concatenate([idx, idx[:1]])
    elif kind == "neg":
        idx[0] = -draw(st.integers(1, 2**63 - 1))
    elif kind == "over":
        idx[-1] = limit + draw(st.integers(0, 2**40))
    elif kind == "huge":
        idx = idx.astype(np.uint64)
        idx[0] = np.uint64(2**64 - 1)
    elif kind == "2d":
        idx = idx[: (idx.size // 2) * 2].reshape(-1, 2) if idx.size >= 2 else idx.reshape(1, 1)
    else:
        idx = (idx + 200).astype(draw(st.sampled_from(("int8", "uint8"))))  # wraps around
    return idx


@st.composite
def garbage_tensors(draw) -> tensor_pb2.Tensor:
    """Tensors whose dtype, shape and data disagree (or are absurd)."""
    dtype = draw(st.sampled_from(DTYPES + BAD_DTYPES) | st.text(max_size=12))
    dims = st.sampled_from((-1, 0, 1, 2, 3, 16, 24, 2**31, 2**40, 2**62, -(2**63)))
    shape = draw(st.lists(dims | st.integers(-5, 64), max_size=10))
    data = draw(st.sampled_from((b"", PICKLE_BYTES, b"\xff" * 7)) | st.binary(max_size=96))
    return raw_tensor(data, dtype, shape)


@st.composite
def consistent_tensors(draw, max_elems: int = 64) -> tensor_pb2.Tensor:
    """Well-formed tensors of any dtype and a random (small) shape: the wrong kind of data."""
    shape = draw(st.lists(st.integers(0, 6), max_size=4))
    dtype = draw(st.sampled_from(DTYPES))
    n = math.prod(shape)
    if n > max_elems:
        shape, n = [max_elems], max_elems
    size = n * np.dtype(dtype).itemsize
    return raw_tensor(draw(st.binary(min_size=size, max_size=size)), dtype, shape)


def oversized_tensor(limit_bytes: int) -> tensor_pb2.Tensor:
    """A well-formed float32 tensor just over a message limit."""
    n = limit_bytes // 4 + 1024
    return raw_tensor(b"\0" * (4 * n), "float32", [n])


def bad_tensors(limit_bytes: int, wrong_values: st.SearchStrategy | None = None):
    """Unset, garbage, the wrong kind of data, wrong values, or over the message limit."""
    options = [st.none(), garbage_tensors(), consistent_tensors(),
               st.just(limit_bytes).map(oversized_tensor)]  # fmt: skip
    if wrong_values is not None:
        options += [wrong_values.map(np_tensor)] * 3
    return st.one_of(*options)


# --- identifiers ---------------------------------------------------------------------------
ODD_IDS = ("", "missing", "fz-a\x00", "x" * 65, "../etc/passwd", "__import__('os')", "é",
           "a b", "-lead", "a" * 64)  # fmt: skip


def chip_ids(known: tuple[str, ...]) -> Field:
    return Field(st.sampled_from(known), st.sampled_from(ODD_IDS) | st.text(max_size=70))


#: Request ids: empty, or any text (the harnesses make each one unique when they send it).
REQUEST_IDS = st.just("") | st.text(min_size=1, max_size=40) | st.sampled_from(("x" * 5000,))
