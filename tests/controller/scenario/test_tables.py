"""The run's and the sweep's terminal tables (80 columns, with their intervals) and the front
plot's reading of noisy losses."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from rich.console import Console

from controller.scenario.plots import noise_free_loss, pareto_front, plot_front, sawtooth_path
from controller.scenario.results import final_vs_best
from controller.scenario.stats import accuracy_uncertainty, over_seeds
from controller.scenario.sweep import versus_best
from controller.scenario.tables import run_tables, shown_times, sweep_table

PAPER_VARIANTS = ["float_gdc", "uniform_gdc", "hwa_gdc", "mult_gdc", "mult_threshold",
                  "mult_drift_aware", "mult_periodic_refresh", "mult_adaptive"]  # fmt: skip
LABELS = ["1s", "1min", "1h", "1d", "1w", "1mo", "1y"]


def _summary(labels: list[str], seeds: int = 3) -> dict:
    """A summary as summarise() writes it, for the paper study's eight variants."""
    rng = np.random.default_rng(0)
    variants = {}
    for j, name in enumerate(PAPER_VARIANTS):
        acc = (0.95 - 0.004 * j + rng.normal(0, 0.01, (seeds, len(labels)))).tolist()
        upkeep = [1e6 * (j + 1) * (1 + 0.1 * k) if j >= 4 else 0.0 for k in range(seeds)]
        m = [over_seeds([a[i] for a in acc]) for i in range(len(labels))]
        variants[name] = {
            "seeds": seeds, "test_images": 1000, "eval_labels": labels,
            "eval_times_s": list(range(1, len(labels) + 1)), "duration_s": 3.15e7,
            "accuracy_mean": [e.mean for e in m], "accuracy_std": [e.std for e in m],
            "accuracy_per_seed": acc, "upkeep_energy_pj": float(np.mean(upkeep)),
            "upkeep_energy_pj_ci95": [over_seeds(upkeep).ci_low, over_seeds(upkeep).ci_high],
            "corrections": 26277.0 * (j >= 4), "correction_pulses": 2.76e8 * (j >= 4),
            "availability": 1 - 1e-8, **accuracy_uncertainty(acc, 1000),
        }  # fmt: skip
    return {"scenario": "paper_mnist_selfcorrect", "variants": variants,
            "final_vs_best": final_vs_best(variants)}  # fmt: skip


def _render(renderables, notes, width: int) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, force_terminal=False)
    for r in renderables:
        console.print(r)
    for n in notes:
        console.print(f"  {n}", markup=False, highlight=False)
    return out.getvalue().splitlines()


def test_the_paper_study_table_fits_80_columns_with_intervals() -> None:
    """The paper study's eight variants and seven times fit 80 columns: every time shown,
    each mean with ± its interval over seeds, the final accuracy against the best (≈ where
    not significant), and a footnote saying what ± is."""
    tables, notes = run_tables(_summary(LABELS), 80)
    lines = _render(tables, notes, 80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert all(f" {label} " in text or text.count(label) for label in LABELS)
    assert "not shown" not in text and "±" in text and "over 3 seeds" in text
    assert "best" in text and "≈" in text and "1,000 test images" in text


def test_times_that_do_not_fit_are_left_out_and_named() -> None:
    """Fourteen evaluation times at 80 columns: the first and last are kept, the ones left
    out are named in a footnote."""
    labels = [f"{i}d" for i in range(1, 15)]
    tables, notes = run_tables(_summary(labels, seeds=1), 80)
    lines = _render(tables, notes, 80)
    assert max(map(len, lines)) <= 80
    kept = shown_times(14, 8)
    assert kept[0] == 0 and kept[-1] == 13 and len(kept) == 8
    assert any("not shown for width" in n for n in notes)
    assert any("Wilson interval on 1,000 test images" in n for n in notes)


def test_sweep_table_fits_80_columns() -> None:
    """A two-axis sweep's table with intervals and the comparison to the best fits 80 columns."""
    rows = []
    for th in (0.02, 0.05, 0.1):
        for iv in ("1h", "6h", "1d", "1w"):
            acc = [0.93 + th / 10, 0.92, 0.94]
            rows.append({"run": f"threshold={th}__interval_s={iv}",
                         "controller.policy.params.threshold": th,
                         "controller.policy.params.interval_s": iv, "variant": "base",
                         "label": f"threshold={th}__interval_s={iv}",
                         "accuracy_final_mean": float(np.mean(acc)), "accuracy_final_ci_low": 0.9,
                         "accuracy_final_ci_high": 0.96, "accuracy_loss": 0.01,
                         "accuracy_loss_ci_low": -0.02, "accuracy_loss_ci_high": 0.04,
                         "upkeep_energy_pj": 6.6e9 * th, "corrections": 26277.0,
                         "accuracy_final_per_seed": json.dumps(acc), "test_images": 1000,
                         "chip_seeds": "[1, 2, 3]"})  # fmt: skip
    table = versus_best(pd.DataFrame(rows))
    keys = ["controller.policy.params.threshold", "controller.policy.params.interval_s"]
    t, notes = sweep_table(table, keys, "sweep")
    lines = _render([t], notes, 80)
    assert max(map(len, lines)) <= 80
    assert (table["vs_best_test"] == "paired t-test over seeds").all()
    assert table["vs_best_significant"].sum() == 0  # equal spreads, tiny differences


def test_a_negative_loss_inside_its_interval_is_not_crowned(tmp_path: Path) -> None:
    """A loss whose 95 % interval holds zero counts as zero on the front: a point that only
    looks better by read noise (negative loss, more energy) does not make the front; a loss
    that is significant keeps its value."""
    loss = np.array([-1.5, 0.2, 3.0])
    low, high = np.array([-4.0, -0.5, 2.0]), np.array([1.0, 0.9, 4.0])
    assert list(noise_free_loss(loss, low, high)) == [0.0, 0.0, 3.0]
    energy = [5e6, 1e6, 1e5]
    assert pareto_front(energy, list(loss)) == [0, 1, 2]  # by the raw losses
    assert pareto_front(energy, list(noise_free_loss(loss, low, high))) == [1, 2]
    table = pd.DataFrame({"label": ["noisy", "plain", "cheap"], "upkeep_energy_pj": energy,
                          "accuracy_loss": loss / 100, "accuracy_loss_ci_low": low / 100,
                          "accuracy_loss_ci_high": high / 100,
                          "upkeep_energy_pj_ci_low": [4e6, 0.9e6, 0.5e5],
                          "upkeep_energy_pj_ci_high": [6e6, 1.1e6, 1.5e5]})  # fmt: skip
    png = plot_front(table, tmp_path / "front.png", "front")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_sawtooth_path_jumps_at_each_correction() -> None:
    """A correcting variant's line visits each time's accuracy before, then after, its
    corrections (a vertical step there), and only the before point where none happened."""
    x, y = sawtooth_path(np.array([1.0, 2.0, 3.0]), np.array([90.0, 85.0, 88.0]),
                         np.array([np.nan, 93.0, np.nan]))  # fmt: skip
    assert x.tolist() == [1.0, 2.0, 2.0, 3.0]
    assert y.tolist() == [90.0, 85.0, 93.0, 88.0]


def test_variants_with_times_of_their_own_are_tabled_at_the_times_they_share() -> None:
    """A variant evaluated at more times than the others shows, under each shared time, its
    accuracy at that time, not at the same position of its own list."""
    from controller.scenario.results import summary_table_rows
    from controller.scenario.tables import run_tables

    def variant(times, accs):
        return {"eval_times_s": times, "eval_labels": [f"{t:g}s" for t in times],
                "accuracy_mean": accs, "accuracy_std": [0.0] * len(times), "seeds": 1,
                "upkeep_energy_pj": 0.0, "corrections": 0, "correction_pulses": 0,
                "availability": 1.0, "duration_s": 3.0}  # fmt: skip

    summary = {"scenario": "s", "variants": {
        "sparse": variant([1.0, 3.0], [0.90, 0.80]),
        "dense": variant([1.0, 2.0, 3.0], [0.91, 0.50, 0.81])}}  # fmt: skip
    header, rows = summary_table_rows(summary)
    assert header[1:3] == ["1s", "3s"]
    assert rows[1][1:3] == ["91.0 ± 0.0", "81.0 ± 0.0"]
    (acc, _), _ = run_tables(summary)
    assert [c.header for c in acc.columns] == ["variant", "1s", "3s"]
    assert list(acc.columns[2].cells) == ["80.0", "81.0"]
