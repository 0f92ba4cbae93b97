"""Weight programming optimisation (Mackin 2022) on ``paper_cnn`` (``make bench``).

Runs the optimiser (``controller.workloads.wpo``, default budget, one thread) on the trained
``paper_cnn`` weights and measures, on 5 chips it never saw, the weight error (NMSE of
drift-compensated weights, ``controller.workloads.weight_error``) of the found translation
against naive dual-pair programming at F = 2 (aihwkit's ``DualPairConductanceConverter``)
1 s and one month after programming; records the optimiser's wall time and the F it chose.
``paper`` holds Mackin's figures (39 % lower right after programming, 17 % after a month).
"""

from __future__ import annotations

import numpy as np

from controller.workloads.wpo_config import MONTH_S, WPOConfig
from controller.workloads.wpo_report import network_layers, study


def _rec(name: str, value: float, unit: str, **extra) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": None, "baseline_name": None,
            "baseline_value": None, "ratio": None, **extra}  # fmt: skip


def records(
    workload: str = "paper_cnn", cfg: WPOConfig | None = None, n_seeds: int = 5,
    layers: dict[str, np.ndarray] | None = None,
) -> list[dict]:  # fmt: skip
    """The benchmark's records for one workload (``layers`` given: those weights instead)."""
    s = study(workload, n_seeds, cfg, layers)
    r = s.result
    wpo = next(n for n in s.translations if n.startswith("wpo"))
    return [
        _rec("wpo_weight_error_reduction_t0", s.reduction(wpo, 1.0), "fraction",
             against="naive dual_pair, F = 2", paper=0.39, workload=workload),
        _rec("wpo_weight_error_reduction_1mo", s.reduction(wpo, MONTH_S), "fraction",
             against="naive dual_pair, F = 2", paper=0.17, workload=workload),
        _rec("wpo_optimiser_wall_s", r.wall_s, "s", evaluations=r.evaluations,
             generations=r.generations, search_won=r.search_won, workload=workload),
        _rec("wpo_significance_factor", r.significance_factor, "F", paper=2.0,
             workload=workload),
    ]  # fmt: skip


def run() -> list[dict]:
    return records("paper_cnn", layers=network_layers("paper_cnn"))


if __name__ == "__main__":
    for rec in run():
        print(rec)
