"""Tile availability: one lock per tile, and how long each tile was busy, and why.

A correction job, a probe and the programming of a tile each hold that tile; an inference or
an evaluation holds every tile of the network (taken in tile order, so that two of them never
deadlock; jobs hold a single tile). Busy time is kept per reason; availability for inference
is the share of tile-time not spent under correction, probing or programming.
"""

from __future__ import annotations

from collections import defaultdict
from types import TracebackType

import simpy

#: Reasons that make a tile unavailable to inference.
UNAVAILABLE = ("correction", "probe", "program")


class Hold:
    """A request for one tile; a context manager that releases it and books busy time."""

    def __init__(self, locks: TileLocks, tile: int, reason: str) -> None:
        self.locks, self.tile, self.reason = locks, tile, reason
        self.granted_s: float | None = None
        self.request = locks.resource(tile).request()
        self.request.callbacks.append(self._granted)

    def _granted(self, _event: simpy.Event) -> None:
        self.granted_s = self.locks.env.now

    def __enter__(self) -> simpy.Event:
        return self.request

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        if self.granted_s is not None:
            self.locks.busy_s[(self.tile, self.reason)] += self.locks.env.now - self.granted_s
            self.granted_s = None
        self.locks.resource(self.tile).release(self.request)


class TileLocks:
    """One SimPy resource of capacity 1 per tile, created on first use."""

    def __init__(self, env: simpy.Environment) -> None:
        self.env = env
        self._res: dict[int, simpy.Resource] = {}
        self.busy_s: defaultdict[tuple[int, str], float] = defaultdict(float)

    def resource(self, tile: int) -> simpy.Resource:
        r = self._res.get(tile)
        if r is None:
            r = self._res[tile] = simpy.Resource(self.env, capacity=1)
        return r

    def hold(self, tile: int, reason: str) -> Hold:
        return Hold(self, tile, reason)

    def hold_many(self, tiles: tuple[int, ...], reason: str) -> list[Hold]:
        return [Hold(self, t, reason) for t in sorted(tiles)]

    def busy(self, tile: int) -> bool:
        return self.resource(tile).count > 0

    def unavailable_s(self, tiles: tuple[int, ...]) -> float:
        """Tile-seconds the given tiles spent unavailable to inference."""
        return sum(v for (t, why), v in self.busy_s.items() if t in tiles and why in UNAVAILABLE)
