"""The chip host: one emulated chip for host software (the core of the ChipHost service).

:class:`ChipHost` holds a twin client and, once a network is loaded, a
:class:`~controller.firmware.ChipModel` on its own chip of the twin. Its methods are what the gRPC
service offers (load, unload and describe a network, infer, status, advance time, set the
policy, trigger a correction, stream events: :mod:`~controller.host.streams`; what it can be
asked for: :mod:`~controller.host.catalogue`), in numpy and plain Python; the servicer only
translates messages.

The model goes through the same lifecycle as a scenario run (``ChipModel``: build, ``start``,
then ``advance`` and ``wait``); a server never reaches ``finish``, its network runs until it
is replaced or unloaded or the host closes.

Threads: gRPC calls arrive on many threads, the SimPy model is single threaded. Every touch of
the model happens under one fair lock (:mod:`~controller.host.locking`: first come, first
served). As fast as possible (the default), time moves only inside calls: ``advance`` runs the
model in slices (so that other calls get in between, and a deadline or a cancellation can stop
it: :mod:`~controller.host.host_time`; :mod:`~controller.host.advancing` records how far it
got), ``infer`` and ``trigger_correction`` run it until their work is done. In realtime mode a
driver thread runs the model in short slices paced against the wall clock
(:mod:`~controller.host.realtime`).
``status`` never waits for more than ``STATUS_WAIT_S``: if the model is busy, it answers the
status published at the end of the last slice.

The twin (:mod:`~controller.host.twin_link`): once a network runs, its model waits for a twin
that cannot be reached instead of failing, and goes on when it is back; meanwhile calls that
need the model are refused with ``Unavailable`` at once. A twin that comes back without the
chip (restarted without its state) is detected and the network is unloaded with a message
that says so (``status()["error"]``, and every call that needs the network).

Errors are the twin's typed errors (``InvalidArgument``, ``NotFound``, ``FailedPrecondition``,
``ResourceExhausted``) plus :mod:`~controller.host.errors`' (``PermissionDenied``,
``DeadlineExceeded``, ``Cancelled``, ``Unavailable``, ``Aborted``), each with ``.code``, the
gRPC status name. A refused request changes nothing (a refused ``load_network`` leaves the
running network loaded and running); a policy that misbehaves stops the run
(``status()["error"]``) until ``set_policy``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from controller.firmware import ChipModel, ControllerConfig, PolicyError, make_environment
from controller.host import chip_status, loading
from controller.host.advancing import AdvanceProgress
from controller.host.host_time import TimeCalls
from controller.host.locking import FairLock, acquire_for_call
from controller.host.realtime import RealtimeDriver
from controller.host.streams import Subscribers, Subscription
from controller.host.twin_link import ModelTwin, TwinWatch, check_reachable, patient_view
from device_twin.config import ChipConfig
from device_twin.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted

log = logging.getLogger(__name__)

#: Wall seconds GetStatus waits for the model before it answers the last published status.
STATUS_WAIT_S = 0.1
#: Wall seconds the twin may take to say whether it holds the chip, when the twin watch asks
#: while the model is idle (the lock is held meanwhile).
CHIP_CHECK_TIMEOUT_S = 2.0
#: Characters an Infer label may have (it is kept in the ledger with the event).
MAX_LABEL_CHARS = 256


@dataclass
class _Loaded:
    """A network on the chip, and the model that runs it."""

    name: str
    chip_id: str
    model: ChipModel
    mapped: Any
    output_shape: tuple[int, ...]  # of one sample
    program: dict[str, float]  # what programming it cost (devices, energy)
    advance: AdvanceProgress


class ChipHost(TimeCalls):
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
        self._patient = patient_view(twin)  # the running model's twin: waits for a lost twin
        self._lock = FairLock()
        self._loaded: _Loaded | None = None
        self._policy: tuple[str, dict[str, Any]] = ("none", {})
        self._streams = Subscribers(self._lock)
        self._driver: RealtimeDriver | None = None
        self._advancing = False
        self._lost: str | None = None  # why no network is loaded: the twin lost the chip
        self._published: dict[str, Any] | None = None  # the status at the last slice's end
        self._closed = False
        self._watch = TwinWatch(twin, self.check_chip, lambda: self.check_chip(wait=False))

    # --- the model, and the calls that wait for it ------------------------------------------
    def _acquire(self, deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
                 need_twin: bool = True) -> None:  # fmt: skip
        """Take the lock for a call (``locking.acquire_for_call``)."""
        acquire_for_call(self._lock, deadline, cancelled,
                         (lambda: check_reachable(self.twin)) if need_twin else None)  # fmt: skip

    @contextlib.contextmanager
    def _enter(self, deadline: float | None = None, cancelled: Callable[[], bool] | None = None,
               need_twin: bool = True) -> Iterator[None]:  # fmt: skip
        """The lock held for a call (see ``_acquire``)."""
        self._acquire(deadline, cancelled, need_twin)
        try:
            yield
        finally:
            self._lock.release()

    def _model(self) -> ChipModel:
        if self._loaded is None:
            raise FailedPrecondition(self._lost or "no network is loaded: call LoadNetwork first")
        return self._loaded.model

    def _check_running(self, model: ChipModel) -> None:
        if model.error is None:
            return
        if isinstance(model.error, NotFound) and self._chip_gone():
            raise FailedPrecondition(self._lost or "the twin lost the chip")
        raise FailedPrecondition(
            f"the run stopped: {model.error}; set a policy (SetPolicy) to go on"
        )

    # --- the twin lost the chip ---------------------------------------------------------------
    def check_chip(self, wait: bool = True) -> None:
        """Make sure the twin still holds the running network's chip; if it does not, unload
        the network, saying why. Called when the twin answers again after an outage, and at
        the watch's other looks with ``wait`` False: then only if the model is idle (a busy
        model finds out at its own next call to the twin)."""
        if wait:
            self._acquire(need_twin=False)
        elif not self._lock.acquire(blocking=False):
            return
        try:
            self._chip_gone(None if wait else CHIP_CHECK_TIMEOUT_S)
        finally:
            self._lock.release()

    def _chip_gone(self, timeout_s: float | None = None) -> bool:
        """Under the lock: whether the twin lost the chip (then the network is unloaded);
        ``timeout_s``: how long the twin may take to say (None: its client's default)."""
        loaded = self._loaded
        if loaded is None:
            return False
        bounded = getattr(self.twin, "bounded", None)
        twin = bounded(timeout_s) if timeout_s is not None and callable(bounded) else self.twin
        try:
            twin.chip_info(loaded.chip_id)
            return False
        except NotFound:
            pass
        self._lost = (
            f"the twin lost chip {loaded.chip_id!r} (network {loaded.name!r}) at device time "
            f"{loaded.model.env.now:g} s: it restarted without its state (a twin keeps its "
            "chips across restarts only with --state-dir), or another client deleted the chip; "
            "load the network again (LoadNetwork)"
        )
        log.warning("%s", self._lost)
        self._unload(f"{self._lost}. Its events ended here")
        return True

    # --- loading --------------------------------------------------------------------------------
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
        refuses again, or the load fails later on, the host is left with no network, and the
        refusal says so.
        """
        cfg, mapped = loading.map_on_chip(description, quantiser,
                                          chip_config or self.default_chip_config)  # fmt: skip
        name, params = policy if policy is not None else self._policy
        pol = loading.build_policy(name, params, self.allow_user_policies)
        with self._enter():
            if self._closed:
                raise FailedPrecondition("the chip host is shutting down")
            chip_id, unloaded = self._create_chip(cfg, make_room)
            # the running model (and its realtime driver) waits on the lock meanwhile
            twin = ModelTwin(self.twin, self._patient)
            try:
                env = make_environment(self.realtime)
                model = ChipModel(env, twin, chip_id, mapped, pol, config=controller_config,
                                  chip_config=cfg)  # fmt: skip
                model.start()  # returns once the network is programmed
            except BaseException as exc:
                self._discard_chip(chip_id)
                if unloaded is not None and isinstance(exc, Exception):
                    raise loading.after_make_room(exc, unloaded) from None
                raise
            twin.running()  # from now on the model waits for a twin that goes away
            # the new network is on its chip: only now does the old one go
            self._unload("the network was replaced by LoadNetwork: its events ended here; call "
                         "StreamEvents again (after_seq=0) for the new network's")  # fmt: skip
            self._lost = None
            model.ledger.subscribe(self._streams.publish)
            self._policy = (name, params)
            program = loading.program_cost(model, mapped)
            self._loaded = _Loaded(description.name, chip_id, model, mapped,
                                   tuple(int(d) for d in description.output_shape), program,
                                   AdvanceProgress())  # fmt: skip
            if self.realtime is not None:
                self._driver = RealtimeDriver(self._lock, model, self.realtime)
            return {
                "chip_id": chip_id,
                "tiles": list(model.firmware.tiles),
                "weights_on_chip": int(mapped.n_weights_on_chip()),
                **program,
                "status": self._status_locked(),
            }

    def _create_chip(self, cfg: ChipConfig, make_room: bool) -> tuple[str, str | None]:
        """A new chip on the twin, next to the running one (see :meth:`load_network`), and
        the name of the network unloaded to make room for it (None: none was)."""
        try:
            return self.twin.create_chip(cfg), None
        except ResourceExhausted as exc:
            if self._loaded is None:
                raise
            if not make_room:
                raise loading.twin_is_full(exc, self._loaded.name, self._loaded.chip_id) from None
        unloaded = self._loaded.name
        log.info("the twin refused a chip next to %s: unloading it to make room",
                 self._loaded.chip_id)  # fmt: skip
        self._unload("the network was unloaded to make room for another (LoadNetwork with "
                     "make_room): its events ended here")  # fmt: skip
        try:
            return self.twin.create_chip(cfg), unloaded
        except Exception as exc:
            raise loading.after_make_room(exc, unloaded) from None

    def _discard_chip(self, chip_id: str) -> None:
        """Delete a chip that is no longer wanted; a twin that cannot be reached keeps it."""
        try:
            self.twin.delete_chip(chip_id)
        except NotFound:
            pass
        except Exception as exc:  # e.g. the twin is down: say so, and do not hide why we are here
            log.warning("could not delete chip %s from the twin: %s", chip_id, exc)

    def _unload(self, reason: str | None, delete: bool = True) -> None:
        """Forget the loaded network: stop its driver, end its streams (with ``reason``, None:
        the host closes), delete its chip (``delete``; else it stays on the twin)."""
        if self._loaded is not None:
            if self._driver is not None:
                self._driver.stop()  # it stops before it touches the model again
                self._driver = None
            loaded, self._loaded = self._loaded, None
            self._published = None
            if delete:
                self._discard_chip(loaded.chip_id)
            else:
                log.warning("the twin does not answer: chip %s stays on it", loaded.chip_id)
        self._streams.end_all(reason)

    def unload_network(self) -> dict[str, Any]:
        """Unload the network (its chip deleted, its streams ended); the status after."""
        with self._enter():
            self._unload("the network was unloaded (UnloadNetwork): its events ended here")
            self._lost = None
            return self._status_locked()

    def network_layout(self, include_weights: bool = False) -> dict[str, Any]:
        """Where the network sits on the chip (``loading.layout``), with its quantised
        weights if asked."""
        with self._enter(need_twin=False):
            loaded = self._loaded
            if loaded is None:
                self._model()  # raises, saying why
            assert loaded is not None
            return loading.layout(loaded.mapped, loaded.chip_id, include_weights)

    # --- work on the chip -----------------------------------------------------------------------
    def infer(self, x: np.ndarray, label: str = "", deadline: float | None = None,
              check_output: Callable[[tuple[int, ...]], None] | None = None) -> Any:  # fmt: skip
        """Run the network on a batch; returns an ``InferenceResult``.

        ``check_output(shape)``, if given, is called with the shape the answer will have
        (batch, *output_shape) before anything runs, under the lock (the network cannot change
        in between): it raises to refuse the request, which then changes nothing."""
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidArgument(f"label has {len(label):,} characters: at most "
                                  f"{MAX_LABEL_CHARS} are kept", field="label")  # fmt: skip
        with self._enter(deadline):
            model = self._model()
            self._check_running(model)
            shape = tuple(model.mapped.description.input_shape)
            if x.ndim != len(shape) + 1 or tuple(x.shape[1:]) != shape or x.shape[0] < 1:
                want = ", ".join(map(str, shape))
                raise InvalidArgument(
                    f"x has shape {list(x.shape)}, expected [batch >= 1, {want}]", field="x.shape"
                )
            if not np.all(np.isfinite(x)):
                raise InvalidArgument("x contains NaN or Inf", field="x.data")
            if check_output is not None:
                assert self._loaded is not None
                check_output((int(x.shape[0]), *self._loaded.output_shape))
            ev = model.infer(x, label)
        return self._wait(model, ev, deadline)

    def trigger_correction(self, tiles: list[int] | None = None, mode: str = "policy",
                           deadline: float | None = None) -> dict[str, Any]:  # fmt: skip
        """A monitor cycle now (``mode``: the policy's, or every device out of tolerance) on
        ``tiles`` (default: all the network's); what it did and cost, probes included."""
        if tiles and len(set(tiles)) != len(tiles):
            twice = sorted({t for t in tiles if tiles.count(t) > 1})
            raise InvalidArgument(f"tiles lists tile(s) {twice} more than once: give each "
                                  "tile at most once", field="tiles")  # fmt: skip
        with self._enter(deadline):
            model = self._model()
            self._check_running(model)
            if tiles:
                bad = [t for t in tiles if t not in model.firmware.tiles]
                if bad:
                    on = list(model.firmware.tiles)
                    raise NotFound(f"tiles {bad} do not hold the network: it is on {on}",
                                   field="tiles")  # fmt: skip
            start = model.env.now
            seq0 = model.ledger.last_seq
            reports: list[Any] = []
            proc = model.trigger_correction(tuple(tiles) if tiles else None, mode, reports.append)
        outcomes = self._wait(model, proc, deadline) or []
        with self._lock:
            self._check_running(model)
            return {**chip_status.correction(outcomes, reports, start, model.env.now),
                    "events_from_seq": seq0 + 1, "status": self._status_locked()}  # fmt: skip

    def set_policy(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Install a policy (now, or for the next network if none is loaded)."""
        pol = loading.build_policy(name, params or {}, self.allow_user_policies)
        with self._enter():
            if self._loaded is not None:
                model = self._loaded.model
                try:
                    model.set_policy(pol)
                except PolicyError as exc:  # refused: the running policy goes on
                    raise FailedPrecondition(str(exc), field="policy") from None
                if self.realtime is not None:
                    model.env.sync()
            self._policy = (name, params or {})
            return self._status_locked()

    # --- status and events ---------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """The chip's status; while the model is busy (longer than ``STATUS_WAIT_S``), the one
        published at the end of its last slice, with the time and progress now."""
        if self._lock.acquire(timeout=STATUS_WAIT_S):
            try:
                return self._status_locked()
            finally:
                self._lock.release()
        loaded, published = self._loaded, self._published
        if loaded is None or published is None:
            return {**self._unloaded_status(), "stale": True}
        return {**published, **self._live(loaded), "stale": True}

    def _live(self, loaded: _Loaded) -> dict[str, Any]:
        return {"sim_time_s": loaded.model.env.now, "advance": loaded.advance.as_dict(),
                **chip_status.twin_fields(self.twin)}  # fmt: skip

    def _unloaded_status(self) -> dict[str, Any]:
        return chip_status.unloaded(self._policy[0], self.realtime, self._lost, self.twin)

    def _publish(self) -> None:
        self._published = self._status_locked()

    def _status_locked(self) -> dict[str, Any]:
        if self._loaded is None:
            return self._unloaded_status()
        loaded = self._loaded
        status = {
            **chip_status.loaded(
                loaded.model, loaded.name, loaded.chip_id, self.realtime, loaded.mapped
            ),  # fmt: skip
            **self._live(loaded),
        }
        self._published = status
        return status

    def subscribe(self, after_seq: int = 0) -> Subscription:
        """Kept events with seq > ``after_seq``, then every new one, in order."""
        with self._enter(need_twin=False):
            events = self._model().ledger.events_after(int(after_seq))
            return self._streams.add(events)

    def close(self) -> None:
        """Stop the driver and the watch, end every stream, delete the chip from the twin."""
        if self._closed:
            return
        self._closed = True  # (no lock: a model waiting for a lost twin holds it)
        stop = getattr(self._patient, "stop", None)
        if stop is not None and self._patient is not self.twin:
            stop.set()  # a model waiting for a lost twin gives up (and releases the lock)
        self._watch.close()
        with self._lock:
            driver = self._driver.stop() if self._driver is not None else None
            self._driver = None
        if driver is not None and driver is not threading.current_thread():
            driver.join()
        # the twin may be gone already: then there is nothing left to clean (and no point in
        # waiting for it)
        delete = True
        with contextlib.suppress(Exception):
            delete = getattr(self.twin, "ping", lambda **_kw: True)(timeout_s=1.0)
        with self._lock, contextlib.suppress(Exception):
            self._unload(None, delete=delete)
