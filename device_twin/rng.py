"""Keyed random streams: every draw of the twin is a function of *what* is drawn.

A draw never depends on how many operations came before it, so looking at a chip (an extra
evaluation MVM, a host inference, a probe) changes none of its devices' draws:

- a write's draws (programming noise, the family's per-device state, the cycle noise of each
  pulse) are keyed by (chip seed, tile, array, device index, that device's write number, stream);
- read noise is keyed by (chip seed, tile, array, level, time bucket): see ``flicker``;
- periphery noise (ADC, output noise) by (chip seed, tile, operation kind, instant, the call's
  sequence number at that instant).

Counter-based hashing (SplitMix64's finaliser) turns a key into 64 random bits; one hash gives
two independent standard normals (Box-Muller). Arrays of normals for a whole block of devices
come from a torch generator seeded with the block's key (``torch.randn`` is ~2.5x cheaper per
normal than hashing, but cannot be indexed).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

_M64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)

# Stream tags: the first integer of a key says what kind of draw it is.
WRITE = 0x57
FLICKER = 0xF1
PERIPHERY = 0xAD
DEVICE_PARAMS = 0x5EED

# Streams of one device write (low 16 bits of the per-write word).
STREAM_PROGRAM = 1  # programming noise and the family's state parameter (one normal pair)
STREAM_RESET = 2  # cycle noise of a RESET pulse
STREAM_RELAX = 3  # a family's per-write relaxation normal, drawn again at every read
STREAM_SET = 16  # SET pulse k uses stream STREAM_SET + k // 2 (two pulses per normal pair)


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijective, well-mixing map of 64-bit integers."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def derive_key(*parts: int) -> int:
    """A 63-bit key that depends only on the integers ``parts`` (a few microseconds)."""
    h = 0
    for p in parts:
        h = mix64(h ^ (int(p) & _M64))
    return h >> 1


def derive_seeds(n: int, *key: int) -> list[int]:
    """``n`` 63-bit seeds that depend only on the integers ``key``."""
    h = derive_key(*key)
    return [mix64(h ^ i) >> 1 for i in range(1, n + 1)]


def time_bits(at_s: float) -> int:
    """The exact bits of a float64 instant, for keys."""
    return int(np.float64(at_s).view(np.uint64))


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = np.asarray(x, dtype=np.uint64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hashed_normal_pairs(h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two independent standard normals (float32) from each 64-bit hash (Box-Muller).

    The radius uses the high 32 bits (tails to 6.7 sigma), the angle the low 32 bits."""
    u1 = ((h >> np.uint64(32)).astype(np.float64) + 0.5) * 2.0**-32
    u2 = (h & np.uint64(0xFFFFFFFF)).astype(np.float32) * np.float32(2.0**-32)
    r = np.sqrt(-2.0 * np.log(u1)).astype(np.float32)
    a = u2 * np.float32(2.0 * math.pi)
    return r * np.cos(a), r * np.sin(a)


def device_ids(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """One 64-bit id per device of a tile: (array << 32) | index (array = 2*pair + sign)."""
    return (np.asarray(array, np.uint64) << np.uint64(32)) | np.asarray(index, np.uint64)


class WriteKeys:
    """Keys of the writes of a set of devices of one tile (their next or current write)."""

    def __init__(self, seed: int, tile: int, ids: np.ndarray, write_no: np.ndarray) -> None:
        base = np.uint64(derive_key(seed, WRITE, tile))
        self._dev = splitmix64(base ^ ids)
        self._word = np.asarray(write_no, np.uint64) << np.uint64(16)

    def subset(self, mask: np.ndarray) -> WriteKeys:
        out = WriteKeys.__new__(WriteKeys)
        out._dev, out._word = self._dev[mask], self._word[mask]
        return out

    def normals(self, stream: int) -> tuple[np.ndarray, np.ndarray]:
        """Two independent N(0, 1) per device for ``stream`` of its write."""
        return hashed_normal_pairs(splitmix64(self._dev ^ (self._word | np.uint64(stream))))

    def pulse_normals(self, k: int) -> np.ndarray:
        """The cycle-to-cycle normal of SET pulse ``k`` (0-based) of this write."""
        pair = self.normals(STREAM_SET + k // 2)
        return pair[k % 2]


def block_normals(key: int, n: int) -> torch.Tensor:
    """``n`` standard normals (float32) that depend only on ``key`` (one torch generator)."""
    return torch.randn(n, generator=torch_generator(key))


def torch_generator(seed: int) -> torch.Generator:
    """A private torch CPU generator (no global state)."""
    gen = torch.Generator()
    gen.manual_seed(int(seed))
    return gen


# aihwkit's periphery draws from torch's process-global generator. Seeding it for one call
# must not interleave with another thread doing the same, or runs stop being reproducible.
_GLOBAL_TORCH_RNG_LOCK = threading.Lock()


@contextmanager
def seeded_global_torch(seed: int) -> Iterator[None]:
    """Run a block on torch's global CPU generator seeded with ``seed``, then restore it."""
    # torch.manual_seed also seeds every accelerator backend and costs ~150 us; the CPU
    # generator alone is what aihwkit's randn_like draws from here.
    gen = torch.default_generator
    with _GLOBAL_TORCH_RNG_LOCK:
        saved = gen.get_state()
        gen.manual_seed(int(seed))
        try:
            yield
        finally:
            gen.set_state(saved)
