"""Settings of the weight programming optimiser, and the times of the weight-error metric.

Kept apart from ``controller.workloads.wpo`` (which needs scipy and the twin) so that a
scenario file naming a ``wpo`` mapping validates without loading either.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

DAY_S = 86400.0
MONTH_S = 30 * DAY_S
YEAR_S = 365 * DAY_S
#: Programming happens at t = 0; "right after programming" is a read at t = 1 s (as elsewhere).
AFTER_PROGRAMMING_S = 1.0
#: The report's times: right after programming, a day, a month, a year.
REPORT_TIMES_S = (AFTER_PROGRAMMING_S, DAY_S, MONTH_S, YEAR_S)
#: The optimiser's default times: the report's and one hour, equally weighted.
OPTIMISATION_TIMES_S = (AFTER_PROGRAMMING_S, 3600.0, DAY_S, MONTH_S, YEAR_S)


class WPOConfig(BaseModel):
    """What the optimiser searches and how (aihwkit's defaults where not noted)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_pairs: int = Field(2, ge=1, le=4)
    #: F of f_k = F^k; None: optimised in [f_min, f_max] (aihwkit optimises every None)
    significance_factor: float | None = Field(None, gt=0)
    #: F of the naive programming the loss is measured against when F is optimised
    baseline_significance_factor: float = Field(2.0, gt=0)
    f_min: float = Field(0.1, gt=0)
    f_max: float = Field(5.0, gt=0)
    #: grid points on each side, 0 included (aihwkit: 6; 11 places the LSP's saturation
    #: point of naive programming within 1-2 % of its error)
    n_bins: int = Field(11, ge=2, le=50)
    symmetric: bool = True
    use_max_kw: bool = False  # True: max|w| always fills every pair
    g_err_fraction: float = Field(0.0, ge=0, le=0.5)  # allowed over/under-programming
    g_max_us: float = Field(25.0, gt=0)
    g_min_us: float = Field(0.0, ge=0)
    times_s: tuple[float, ...] = OPTIMISATION_TIMES_S
    sample_size: int = Field(4096, ge=16, le=1_000_000)  # aihwkit: 512 x 20
    sample_seeds: int = Field(1, ge=1, le=64)  # chips averaged per evaluation
    # differential evolution (aihwkit: popsize 100, maxiter 200, polish, all CPUs)
    popsize: int = Field(4, ge=1)  # members per dimension
    maxiter: int = Field(30, ge=1)
    #: differential weight; a (low, high) pair dithers it per generation (aihwkit: 0.1)
    mutation: float | tuple[float, float] = 0.5
    recombination: float = Field(0.3, ge=0, le=1)
    tol: float = Field(0.0, ge=0)
    atol: float = Field(0.02, ge=0)
    seed: int = Field(100, ge=0)
    init_jitter: float = Field(0.03, ge=0, le=1)  # see ``initial_population``
    f_scan_points: int = Field(17, ge=2, le=1000)  # stage 1 (see ``naive_scan``)
