"""The correction-policy protocol: what firmware code tells the controller, and what it sees.

A policy is an object with state of its own that the controller asks, in this order:

1. ``start(view)`` once, when the network has been programmed (and after ``set_policy``);
2. ``next_wake_s(view)``: seconds from this wake-up (or from ``start``) to the next one, or
   ``None`` to stop monitoring. Wake-ups are anchored: hourly means at 1 h, 2 h, ... after the
   network was programmed, whatever the corrections in between cost;
3. at each wake-up ``probe_plan(view)``: which tiles, arrays and share of rows to probe, or
   ``None`` for no probe (then ``decide`` gets ``report=None``);
4. ``decide(view, report)``: the correction jobs to run now (possibly none);
5. ``pulse_scheme(view, job)``: how to pulse that job (tolerance, limits, method);
6. ``on_job_done(view, outcome)``: what a job did and cost (for budgets and statistics).

Every call gets a read-only :class:`ChipView` (what the firmware knows: level indices, targets,
last write times, energy so far). A policy must not keep the arrays of a view beyond the call
without copying them: they are live.

The controller checks every answer (a tile that does not exist, a negative interval, device
indices out of range, ...). A policy that raises or returns nonsense stops the run with a
:class:`~controller.firmware.errors.PolicyError` naming the policy and what it returned.

Units: conductances in uS, times in seconds, thresholds and tolerances in weight units, i.e.
fractions of ``g_max`` (the twin's effective weight is ``(G+ - G-)/g_max``).

Several pairs per weight (Mackin 2022; ``view.pairs_per_weight`` > 1): a weight is
``sum_k f_k (G+_k - G-_k)/g_max`` with ``f_k = view.significance[k]`` (pair 0 the least
significant, LSP). The view's arrays are indexed ``2*pair + sign`` (POS, NEG of pair 0 are
0 and 1, as on a single-pair chip); a probe plan names the pairs it reads (default: all), a
report holds a reading per tile and pair (``report.pairs[pair][tile]``; ``report.tiles`` is
pair 0), and a job corrects devices of one pair (``job.pair``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

#: Array indices, as in ``device_twin.chip.Array`` (kept here so that policies need no twin).
POS, NEG, DIFF = 0, 1, 2


@dataclass(frozen=True)
class ProbePlan:
    """What the drift monitor reads at one wake-up.

    ``tiles=None`` means every tile holding the network. ``rows_fraction=None`` means the
    controller's configured fraction; rows are taken round-robin per tile, so a fraction of 0.25
    covers every row once in four wake-ups. ``arrays`` may hold POS, NEG and DIFF; per-device
    distances need POS and NEG, the paper's drift metric needs either both or DIFF.
    """

    tiles: Sequence[int] | None = None
    arrays: Sequence[int] = (POS, NEG)
    rows_fraction: float | None = None
    pairs: Sequence[int] | None = None  # None: every pair (the same rows of each)


@dataclass(frozen=True)
class CorrectionJob:
    """Devices of one tile to bring back to their levels: flat indices ``row * cols + col``.

    ``target_us`` (optional, per array) overrides the firmware's stored level targets for this
    job; by default a device is corrected to ``level * q`` (DESIGN.md §5). ``pair``: which pair
    of the weights the devices belong to (0 on a single-pair chip).
    """

    tile: int
    pos: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    neg: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    reason: str = ""
    target_pos_us: np.ndarray | None = None
    target_neg_us: np.ndarray | None = None
    pair: int = 0

    @property
    def devices(self) -> int:
        return int(np.size(self.pos) + np.size(self.neg))


@dataclass(frozen=True)
class PulseScheme:
    """How the pulse generator runs a job's program-and-verify loop.

    Each iteration reads every device still converging (``verify_reads`` reads averaged, one
    ``read_devices`` call per array and read), then acts on the devices outside
    ``tolerance`` (weight units, i.e. a fraction of g_max):

    - below their level: partial SET pulses, the count estimated from the nominal pulse
      response (``gain`` of the way, at most ``max_pulses_per_step``); with
      ``method="auto"`` a device that would need more than ``max_pulses_per_step`` pulses is
      re-programmed instead (cheaper and more precise than a long train of noisy pulses);
    - above their level: PCM cannot be lowered gradually, so RESET and re-program
      (``program_devices``, the twin's program-and-verify from RESET).

    ``method="program"`` re-programs every device outside tolerance; ``method="pulse"`` only
    re-programs on overshoot. A device still outside tolerance after ``max_iterations`` steps,
    ``max_pulses`` SET pulses or ``max_reprograms`` re-programs is reported as failed; jobs are
    kept short on purpose (the next wake-up catches what is still off), since every step is a
    twin call for the whole job.
    ``rewrite_all=True`` re-programs every device of the job first, without reading it
    (a refresh), then verifies as above.

    ``loop="twin"`` hands the whole loop to the twin in one call (``ProgramVerify``, the
    on-die program-and-verify of real chips); ``loop="steps"`` makes one twin call per step
    (to prototype firmware that drives the loop itself). Both run the same steps at the same
    instants with the same physics: the outcomes, pulses and energies are the same.
    """

    method: Literal["auto", "pulse", "program"] = "auto"
    tolerance: float = 0.05
    max_iterations: int = 2
    max_pulses: int = 64
    max_pulses_per_step: int = 8
    max_reprograms: int = 2
    gain: float = 0.8
    verify_reads: int = 1
    rewrite_all: bool = False
    loop: Literal["twin", "steps"] = "twin"


@dataclass
class TileReading:
    """One tile's probe at one wake-up.

    ``g_us[a]``: (len(rows), cols) conductance read from array ``a`` (POS, NEG) or the
    difference G+ - G- (DIFF), in uS (ADC codes times the probe's scale).
    ``deviation[a]``: for POS and NEG, the signed distance of each device from its level,
    ``(g - target)/g_max``. ``drift_metric``: the paper's mean |y_t - y_0| over the weights in
    use on the probed rows (weight units), y_0 being the programmed level.
    """

    tile: int
    rows: np.ndarray
    g_us: dict[int, np.ndarray]
    target_us: dict[int, np.ndarray]
    used: np.ndarray
    deviation: dict[int, np.ndarray]
    drift_metric: float
    max_distance: float
    pair: int = 0  # which pair of the weights (arrays 2*pair + POS/NEG on the view)


@dataclass
class MonitorReport:
    """What the drift monitor read at one wake-up: ``pairs[pair][tile]``; ``tiles`` is
    ``pairs[0]``, the whole report on a single-pair chip."""

    at_s: float
    tiles: dict[int, TileReading]
    energy_pj: float = 0.0
    pairs: dict[int, dict[int, TileReading]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.pairs:
            self.pairs = {0: self.tiles}


@dataclass
class JobOutcome:
    """What a correction job did: devices back within tolerance, devices failed, costs.

    Per array: ``converged[a]`` and ``failed[a]`` hold flat device indices;
    ``final_deviation[a]`` the signed deviation (weight units) of each device's last read, in
    the order of ``converged[a]`` followed by ``failed[a]``.
    """

    job: CorrectionJob
    start_s: float
    end_s: float
    converged: dict[int, np.ndarray]
    failed: dict[int, np.ndarray]
    final_deviation: dict[int, np.ndarray]
    pulses: int
    reprograms: int
    iterations: int
    energy_pj: float
    controller_energy_pj: float

    @property
    def n_failed(self) -> int:
        return int(sum(np.size(v) for v in self.failed.values()))

    @property
    def n_converged(self) -> int:
        return int(sum(np.size(v) for v in self.converged.values()))


@runtime_checkable
class ChipView(Protocol):
    """What the firmware knows about its chip; read-only, live (see the module docstring).

    Arrays are indexed (tile, array, row, col) with array ``2*pair + sign`` (0 = G+ and
    1 = G- of pair 0; the only pair of a single-pair chip).
    """

    now_s: float
    n_tiles: int
    tile_rows: int
    tile_cols: int
    g_max_us: float
    pairs_per_weight: int  # conductance pairs per weight (1 on most chips)
    significance: tuple[float, ...]  # f_k of each pair: a weight is sum_k f_k (G+_k - G-_k)
    t0_s: float
    tiles: tuple[int, ...]  # tiles holding the network
    programmed_at_s: float
    level: np.ndarray | None  # uint8 level index m per device (multiplicative mappings)
    q_us: np.ndarray  # (n_tiles, 2 * pairs_per_weight) uS per level, NaN without levels
    target_us: np.ndarray  # float32 target conductance per device
    g_floor_us: np.ndarray  # (n_tiles,) conductance of level 0 (0 uS; a floor for some families)
    used: np.ndarray  # (n_tiles, rows, cols) bool: weights in use
    last_write_s: np.ndarray  # float64 device time of each device's last write
    corrections: int  # correction jobs so far
    energy_pj: dict[str, float]  # cumulative twin + controller energy by event kind
    last_report: MonitorReport | None


#: Drift compensations a policy may ask for at inference (``compensation``): "gdc", global drift
#: compensation (one factor per tile); "per_column", one factor per output column; "adabs",
#: adaptive batch-norm statistics (Joshi 2020, re-estimated through the chip on calibration
#: images); "gdc_adabs", both. Built by
#: ``controller.workloads.adabs.make_compensation``.
COMPENSATIONS = ("gdc", "per_column", "adabs", "gdc_adabs")


@runtime_checkable
class Policy(Protocol):
    """A correction policy (see the module docstring for the call order)."""

    name: str
    compensation: str | None  # drift compensation at inference: None or one of COMPENSATIONS

    def start(self, view: ChipView) -> None: ...

    def next_wake_s(self, view: ChipView) -> float | None: ...

    def probe_plan(self, view: ChipView) -> ProbePlan | None: ...

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]: ...

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme: ...

    def on_job_done(self, view: ChipView, outcome: JobOutcome) -> None: ...


class BasePolicy:
    """Defaults for every method of :class:`Policy`: never wake, probe all, correct nothing.

    Subclass it and override what your firmware does differently; constructor keyword
    arguments are the policy's parameters (a scenario's ``policy.params``).
    """

    name = "base"
    compensation: str | None = None

    def start(self, view: ChipView) -> None:
        pass

    def next_wake_s(self, view: ChipView) -> float | None:
        return None

    def probe_plan(self, view: ChipView) -> ProbePlan | None:
        return ProbePlan()

    def decide(self, view: ChipView, report: MonitorReport | None) -> Sequence[CorrectionJob]:
        return []

    def pulse_scheme(self, view: ChipView, job: CorrectionJob) -> PulseScheme:
        return PulseScheme()

    def on_job_done(self, view: ChipView, outcome: JobOutcome) -> None:
        pass

    def describe(self) -> dict:
        """Name and parameters, for status and results."""
        return {"name": self.name, "compensation": self.compensation}


# --- drift expectations a policy may use -------------------------------------------------
def mu_nu(g_norm: np.ndarray) -> np.ndarray:
    """Mean drift exponent of a device at g/g_max (aihwkit ``PCMLikeNoiseModel``)."""
    g = np.maximum(np.asarray(g_norm, dtype=np.float64), 1e-12)
    return np.clip(-0.0155 * np.log(g) + 0.0244, 0.049, 0.1)


def expected_drift_factor(
    age_s: np.ndarray, g_us: np.ndarray, g_max_us: float, t0_s: float = 20.0
) -> np.ndarray:
    """Expected remaining fraction ((age + t0)/t0)^(-mu_nu(g)) of a device written ``age_s`` ago."""
    age = np.maximum(np.asarray(age_s, dtype=np.float64), 0.0)
    return np.exp(-mu_nu(np.asarray(g_us) / g_max_us) * np.log1p(age / t0_s))


def flat_indices(mask: np.ndarray, rows: np.ndarray, cols: int) -> np.ndarray:
    """Flat device indices ``row * cols + col`` of the True entries of a (len(rows), cols) mask."""
    r, c = np.nonzero(mask)
    return (np.asarray(rows, dtype=np.int64)[r] * cols + c).astype(np.int64)


def check_positive(name: str, value: float) -> float:
    """A parameter check for policy constructors: finite and > 0."""
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v
