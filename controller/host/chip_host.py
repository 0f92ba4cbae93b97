"""The chip host: one emulated chip for host software (the core of the ChipHost service).

:class:`ChipHost` holds a twin client and, once a network is loaded, a
:class:`~controller.firmware.ChipModel` on its own chip of the twin. Its methods are what the gRPC
service offers (load a network, infer, status, advance time, set the policy, trigger a
correction, stream events: :mod:`~controller.host.streams`), in numpy and plain Python; the
servicer only translates messages.

The model goes through the same lifecycle as a scenario run (``ChipModel``: build, ``start``,
then ``advance`` and ``wait``); a server never reaches ``finish``, its network runs until it
is replaced or the host closes.

Threads: gRPC calls arrive on many threads, the SimPy model is single threaded. Every touch of
the model happens under one lock. As fast as possible (the default), time moves only inside
calls: ``advance`` runs the model in slices (so that status and inference can get in between,
and a deadline can stop it), ``infer`` and ``trigger_correction`` run it until their work is
done. In realtime mode a driver thread runs the model in short slices paced against the wall
clock, and calls wait for their work to be done by it.

Errors are the twin's typed errors (``InvalidArgument``, ``NotFound``, ``FailedPrecondition``,
``ResourceExhausted``) plus :class:`PermissionDenied` and :class:`DeadlineExceeded`, each with
``.code``, the gRPC status name. A refused request changes nothing (a refused ``load_network``
leaves the running network loaded and running); a policy that misbehaves stops the run
(``status()["error"]``) until ``set_policy``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic
import simpy

from controller.firmware import ChipModel, ControllerConfig, PolicyError, make_environment
from controller.firmware.policies import (
    BUILTIN,
    PolicyLoadError,
    PolicyParamsInvalid,
    load_policy,
)
from controller.host.streams import Subscribers, Subscription
from controller.workloads.mapping import fit_chip, map_network
from device_twin.config import ChipConfig
from device_twin.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    TwinError,
)

log = logging.getLogger(__name__)

#: Wall seconds per slice of the realtime driver (calls wait at most this for the lock).
REALTIME_SLICE_WALL_S = 0.05
#: Wall seconds an AdvanceTime runs the model before it lets other calls in and checks its
#: deadline.
ADVANCE_SLICE_WALL_S = 0.05
#: The latest device time a host may ask for (about 31,700 years): beyond it float64 time
#: steps are coarser than 0.1 ms, a thousand SET pulses.
MAX_DEVICE_TIME_S = 1e12
#: Annealing moves per layer a LoadNetwork may ask for (the paper's schedule needs 150).
MAX_ANNEALING_MOVES = 1_000_000


class PermissionDenied(TwinError):
    """A user policy (dotted path) on a server that does not allow them."""

    code = "PERMISSION_DENIED"


class DeadlineExceeded(TwinError):
    """The call's deadline came first (time advanced as far as the message says)."""

    code = "DEADLINE_EXCEEDED"


@dataclass
class _Loaded:
    """A network on the chip, and the model that runs it."""

    name: str
    chip_id: str
    model: ChipModel
    mapped: Any
    output_shape: tuple[int, ...]  # of one sample


def _parse_params(params_json: str) -> dict[str, Any]:
    if not params_json:
        return {}
    try:
        params = json.loads(params_json)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"policy params_json is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise InvalidArgument(f"policy params_json must be a JSON object, got {params_json!r}")
    return params


class ChipHost:
    """One emulated chip behind the ChipHost service (see the module docstring)."""

    def __init__(
        self,
        twin: Any,
        realtime: float | None = None,
        allow_user_policies: bool = False,
        default_chip_config: ChipConfig | None = None,
    ) -> None:
        if realtime is not None and not (math.isfinite(realtime) and realtime > 0):
            raise ValueError(f"realtime factor must be > 0, got {realtime!r}")
        self.twin = twin
        self.realtime = realtime
        self.allow_user_policies = allow_user_policies
        self.default_chip_config = default_chip_config or ChipConfig()
        self._lock = threading.RLock()
        self._loaded: _Loaded | None = None
        self._policy: tuple[str, dict[str, Any]] = ("none", {})
        self._streams = Subscribers(self._lock)
        # the realtime driver of the loaded model, and the event that stops it
        self._driver: tuple[threading.Thread, threading.Event] | None = None
        self._closed = False

    # --- policies ---------------------------------------------------------------------------
    def _build_policy(self, name: str, params: dict[str, Any]) -> Any:
        if name not in BUILTIN and ":" in name and not self.allow_user_policies:
            raise PermissionDenied(
                f"policy {name!r} is not a built-in ({', '.join(BUILTIN)}), and this server "
                "does not load user policies (start it with --allow-user-policies)"
            )
        try:
            return load_policy(name, params)
        except PolicyParamsInvalid as exc:  # each parameter at fault, as a field violation
            violations = [("policy.params_json", f"{k}: {m}" if k else m) for k, m in exc.problems]
            raise InvalidArgument(str(exc), violations=violations) from None
        except PolicyLoadError as exc:
            raise InvalidArgument(str(exc), field="policy.name") from None

    # --- loading ------------------------------------------------------------------------------
    def load_network(
        self,
        description: Any,
        quantiser: Any = "multiplicative",
        chip_config: ChipConfig | None = None,
        policy: tuple[str, dict[str, Any]] | None = None,
        controller_config: ControllerConfig | None = None,
        make_room: bool = False,
    ) -> dict[str, Any]:
        """Map ``description`` onto a new chip, program it at time 0, start the firmware.

        The network running before is replaced only once the new one is programmed: the new
        chip is created and programmed first, then the old chip is deleted. A load that fails
        on the way (the twin refuses the chip: state budget, chip limit; the twin is down;
        programming fails) deletes what it created and leaves the host exactly as it was:
        same network, same chip, same device time, still answering.

        The twin must therefore hold both chips for a moment. If it cannot (its state budget
        or ``max_chips`` is nearly used up), the load is refused with ``ResourceExhausted``
        even if the new chip alone would fit, and the running network is kept: losing it is
        not something a refused request may do. A caller that accepts losing it passes
        ``make_room=True``: then, on that refusal only, the running network is unloaded (its
        chip deleted, its event streams ended) and the chip is created once more; if the twin
        refuses again, or the load fails later on, the host is left with no network.
        """
        cfg = chip_config or self.default_chip_config
        annealing = getattr(quantiser, "annealing", None)
        if annealing is not None:
            moves = int(annealing.n_steps) * int(annealing.moves_per_step)
            if moves > MAX_ANNEALING_MOVES:
                raise ResourceExhausted(
                    f"annealing of {annealing.n_steps} steps x {annealing.moves_per_step} moves "
                    f"per layer is over this host's limit of {MAX_ANNEALING_MOVES:,} moves"
                )
        try:
            cfg = fit_chip(description, cfg)
            mapped = map_network(description, quantiser, cfg)
            output_shape = tuple(int(d) for d in description.output_shape)
        except (ValueError, pydantic.ValidationError) as exc:
            raise InvalidArgument(f"cannot map the network on the chip: {exc}") from None
        name, params = policy if policy is not None else self._policy
        pol = self._build_policy(name, params)
        with self._lock:
            if self._closed:
                raise FailedPrecondition("the chip host is shutting down")
            chip_id = self._create_chip(cfg, make_room)
            # the running model (and its realtime driver) waits on the lock meanwhile
            try:
                env = make_environment(self.realtime)
                model = ChipModel(env, self.twin, chip_id, mapped, pol,
                                  config=controller_config, chip_config=cfg)  # fmt: skip
                model.start()  # returns once the network is programmed
            except BaseException:
                self._discard_chip(chip_id)
                raise
            # the new network is on its chip: only now does the old one go
            self._unload(replaced=True)
            model.ledger.subscribe(self._streams.publish)
            self._policy = (name, params)
            self._loaded = _Loaded(description.name, chip_id, model, mapped, output_shape)
            if self.realtime is not None:
                self._start_driver()
            return {
                "chip_id": chip_id,
                "tiles": list(model.firmware.tiles),
                "weights_on_chip": int(mapped.n_weights_on_chip()),
                "status": self._status_locked(),
            }

    def _create_chip(self, cfg: ChipConfig, make_room: bool) -> str:
        """A new chip on the twin, next to the running one (see :meth:`load_network`)."""
        try:
            return self.twin.create_chip(cfg)
        except ResourceExhausted as exc:
            if self._loaded is None:
                raise
            if not make_room:
                raise ResourceExhausted(
                    f"the twin refused the new chip: {exc}. The network {self._loaded.name!r} "
                    f"keeps running on chip {self._loaded.chip_id}: the twin must hold it and "
                    "the new chip at once while the new one is programmed; make room on the "
                    "twin (its other chips), give it a larger --state-budget-bytes or "
                    "--max-chips, or load with make_room (the running network is unloaded "
                    "first)"
                ) from None
        log.info("the twin refused a chip next to %s: unloading it to make room",
                 self._loaded.chip_id)  # fmt: skip
        self._unload(replaced=True)
        return self.twin.create_chip(cfg)

    def _discard_chip(self, chip_id: str) -> None:
        """Delete a chip that is no longer wanted; a twin that cannot be reached keeps it."""
        try:
            self.twin.delete_chip(chip_id)
        except NotFound:
            pass
        except Exception as exc:  # e.g. the twin is down: say so, and do not hide why we are here
            log.warning("could not delete chip %s from the twin: %s", chip_id, exc)

    def _unload(self, replaced: bool = False) -> None:
        """Forget the loaded network: stop its driver, end its streams (``replaced``: they
        are told that a new network took its place), delete its chip."""
        if self._loaded is not None:
            self._stop_driver()  # it stops before it touches the model again
            loaded, self._loaded = self._loaded, None
            self._discard_chip(loaded.chip_id)
        self._streams.end_all(replaced)

    def _model(self) -> ChipModel:
        if self._loaded is None:
            raise FailedPrecondition("no network is loaded: call LoadNetwork first")
        return self._loaded.model

    def _check_running(self, model: ChipModel) -> None:
        if model.error is not None:
            raise FailedPrecondition(
                f"the run stopped: {model.error}; set a policy (SetPolicy) to go on"
            )

    # --- time -------------------------------------------------------------------------------
    def advance(self, to_s: float | None = None, by_s: float | None = None,
                deadline: float | None = None) -> dict[str, Any]:  # fmt: skip
        """Advance device time to ``to_s`` (or by ``by_s``); ``deadline`` is a monotonic time
        (then the model runs in slices of wall time and stops at the first slice past it).

        Everything due before the target happens; what is due exactly at it (a monitor
        wake-up) happens when time next moves on, after the requests made at the target, so
        that an inference at T sees the chip before the correction scheduled at T."""
        with self._lock:
            model = self._model()
            if self.realtime is not None:
                raise FailedPrecondition(
                    "time is paced against the wall clock (--realtime): it cannot be advanced"
                )
            self._check_running(model)
            now = model.env.now
            if (to_s is None) == (by_s is None):
                raise InvalidArgument("give exactly one of to_s or by_s")
            target = float(to_s) if to_s is not None else now + float(by_s)  # type: ignore[arg-type]
            if not math.isfinite(target) or (by_s is not None and by_s < 0):
                raise InvalidArgument(f"the target time must be finite and not in the past, got "
                                      f"{to_s if to_s is not None else by_s!r}")  # fmt: skip
            if target > MAX_DEVICE_TIME_S:
                raise InvalidArgument(
                    f"target time {target!r} s is beyond the latest device time this host "
                    f"simulates, {MAX_DEVICE_TIME_S:g} s"
                )
            if target < now:
                raise FailedPrecondition(
                    f"time going backwards: to_s={target!r} is before the current time {now!r}"
                )
        while True:
            with self._lock:
                if self._loaded is None or self._loaded.model is not model:
                    raise FailedPrecondition("the network was replaced while time advanced")
                # what is due exactly at the target waits: a request made now (at the
                # target) sees the chip before the corrections due then
                try:
                    reached = model.advance(target, inclusive=False, wall_s=ADVANCE_SLICE_WALL_S)
                except PolicyError:
                    self._check_running(model)
                    raise
                if reached:
                    return self._status_locked()
                now = model.env.now
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded(f"deadline reached: advanced to {now!r} s of {target!r} s")

    def _start_driver(self) -> None:
        assert self._loaded is not None and self._driver is None
        stop = threading.Event()
        thread = threading.Thread(target=self._drive, args=(self._loaded.model, stop),
                                  name="chip-host-realtime", daemon=True)  # fmt: skip
        self._driver = (thread, stop)
        thread.start()

    def _stop_driver(self) -> threading.Thread | None:
        """Stop the realtime driver (under the lock); returns its thread, to join outside the
        lock if need be. The driver checks its stop event under the lock, so once this has
        returned it never touches its model again (joining here would deadlock: it may be
        waiting for the lock)."""
        if self._driver is None:
            return None
        thread, stop = self._driver
        self._driver = None
        stop.set()
        return thread

    def _drive(self, model: ChipModel, stop: threading.Event) -> None:
        """Realtime: run the model back to back in short slices, paced by the environment."""
        assert self.realtime is not None
        slice_s = REALTIME_SLICE_WALL_S * self.realtime
        with self._lock:
            if stop.is_set():
                return
            model.env.sync()
        while True:
            with self._lock:
                if stop.is_set():
                    return
                if model.error is None:
                    try:
                        model.advance(model.env.now + slice_s, resync=False)
                    except PolicyError:
                        pass  # model.error holds it: status reports it until SetPolicy
                    except Exception as exc:  # e.g. the twin went away: stop, and say why
                        log.warning("realtime run stopped: %s", exc)
                        if model.error is None:
                            model.fail(exc)
                stopped = model.error is not None
            if stopped:
                stop.wait(REALTIME_SLICE_WALL_S)

    def _wait(self, model: ChipModel, ev: simpy.Event, deadline: float | None) -> Any:
        """Have ``ev`` processed: run the model (fast) or wait for the driver (realtime)."""
        if self.realtime is None:
            with self._lock:
                try:
                    return model.wait(ev)
                except PolicyError:
                    self._check_running(model)
                    raise
        done = threading.Event()
        with self._lock:
            if ev.processed:
                done.set()
            else:
                ev.callbacks.append(lambda _e: done.set())
        while not done.wait(0.05):
            if model.error is not None:
                self._check_running(model)
            if deadline is not None and time.monotonic() > deadline:
                raise DeadlineExceeded("deadline reached before the chip did the work")
        if not ev.ok:
            raise ev.value
        return ev.value

    # --- work on the chip -----------------------------------------------------------------------
    def infer(self, x: np.ndarray, label: str = "", deadline: float | None = None,
              check_output: Callable[[tuple[int, ...]], None] | None = None) -> Any:  # fmt: skip
        """Run the network on a batch; returns an ``InferenceResult``.

        ``check_output(shape)``, if given, is called with the shape the answer will have
        (batch, *output_shape) before anything runs, under the lock (the network cannot change
        in between): it raises to refuse the request, which then changes nothing."""
        with self._lock:
            model = self._model()
            self._check_running(model)
            shape = tuple(model.mapped.description.input_shape)
            if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
                want = ", ".join(map(str, shape))
                raise InvalidArgument(f"x has shape {list(x.shape)}, expected [batch >= 1, {want}]")
            if not np.all(np.isfinite(x)):
                raise InvalidArgument("x contains NaN or Inf")
            if check_output is not None:
                assert self._loaded is not None
                check_output((int(x.shape[0]), *self._loaded.output_shape))
            ev = model.infer(x, label)
        return self._wait(model, ev, deadline)

    def trigger_correction(self, tiles: list[int] | None = None, mode: str = "policy",
                           deadline: float | None = None) -> dict[str, Any]:  # fmt: skip
        with self._lock:
            model = self._model()
            self._check_running(model)
            if tiles:
                bad = [t for t in tiles if t not in model.firmware.tiles]
                if bad:
                    on = list(model.firmware.tiles)
                    raise NotFound(f"tiles {bad} do not hold the network: it is on {on}")
            start = model.env.now
            seq0 = model.ledger.last_seq
            proc = model.trigger_correction(tuple(tiles) if tiles else None, mode)
        outcomes = self._wait(model, proc, deadline) or []
        with self._lock:
            self._check_running(model)
            return {
                "jobs": len(outcomes),
                "devices": sum(o.job.devices for o in outcomes),
                "failed_devices": sum(o.n_failed for o in outcomes),
                "pulses": sum(o.pulses for o in outcomes),
                "energy_pj": sum(o.energy_pj + o.controller_energy_pj for o in outcomes),
                "start_s": start,
                "end_s": max((o.end_s for o in outcomes), default=model.env.now),
                "events_from_seq": seq0 + 1,
                "status": self._status_locked(),
            }

    def set_policy(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Install a policy (now, or for the next network if none is loaded)."""
        pol = self._build_policy(name, params or {})
        with self._lock:
            if self._loaded is not None:
                model = self._loaded.model
                try:
                    model.set_policy(pol)
                except PolicyError as exc:  # refused: the running policy goes on
                    raise FailedPrecondition(str(exc)) from None
                if self.realtime is not None:
                    model.env.sync()
            self._policy = (name, params or {})
            return self._status_locked()

    # --- status and events ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        if self._loaded is None:
            return {"loaded": False, "policy": self._policy[0], "sim_time_s": 0.0,
                    "realtime_factor": self.realtime or 0.0}  # fmt: skip
        m = self._loaded.model
        tot = m.totals()  # sim_time_s, the counters (controller.firmware.quantities), ...
        return {
            **tot,
            "loaded": True,
            "network": self._loaded.name,
            "chip_id": self._loaded.chip_id,
            "policy": m.policy_name,
            "policy_json": json.dumps(tot["policy"], default=str),
            "drift": m.drift_metrics(),
            "tile_layers": {tm.tile: tm.layer for tm in self._loaded.mapped.tiles},
            "realtime_factor": self.realtime or 0.0,
            "last_event_seq": m.ledger.last_seq,
        }

    def subscribe(self, after_seq: int = 0) -> Subscription:
        """Kept events with seq > ``after_seq``, then every new one, in order."""
        with self._lock:
            events = self._model().ledger.events_after(int(after_seq))
            return self._streams.add(events)

    def close(self) -> None:
        """Stop the driver, end every stream, delete the chip from the twin."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with self._lock:
            driver = self._stop_driver()
        if driver is not None and driver is not threading.current_thread():
            driver.join()
        # the twin may be gone already: then there is nothing left to clean
        with self._lock, contextlib.suppress(Exception):
            self._unload()
