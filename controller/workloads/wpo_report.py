"""The README's table and plot of weight programming: ``python -m controller.workloads.wpo_report``.

For a workload (default ``paper_cnn``) it loads the trained network (from the cache, or
trains it), runs the weight programming optimiser on its weights (F free), then measures the
weight error (``controller.workloads.weight_error``) of every translation on the *whole*
network on chips the optimiser never saw (chip seeds 1000, 1001, ...): a single pair, naive
dual-pair programming (aihwkit's ``DualPairConductanceConverter``) at F = 2 and at the
optimised F, the MSP-first fill at F = 2, and the optimised translation. Prints Markdown and
writes a PNG: the found translation against naive programming, and the error over time.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.workloads.pairs import SinglePair, Translation, dual_pair, msp_first, tabulate
from controller.workloads.weight_error import WeightErrorTable, compare_translations
from controller.workloads.wpo import WPOResult, optimise, pooled_normalised
from controller.workloads.wpo_config import DAY_S, MONTH_S, REPORT_TIMES_S, YEAR_S, WPOConfig

#: Times of the plot's curves (the table's, and a minute, an hour and a week between them).
CURVE_TIMES_S = (1.0, 60.0, 3600.0, DAY_S, 7 * DAY_S, MONTH_S, YEAR_S)
#: Chip seeds of the evaluation: never those of the optimiser (0, 1, ...).
EVAL_SEED_BASE = 1000
BASELINE = "dual_pair (F = 2, naive)"
TIME_LABELS = {1.0: "1 s", 60.0: "1 min", 3600.0: "1 h", DAY_S: "1 day", 7 * DAY_S: "1 week",
               MONTH_S: "1 month", YEAR_S: "1 year"}  # fmt: skip


def network_layers(workload: str) -> dict[str, np.ndarray]:
    """The crossbar matrices of the workload's digitally trained network, by layer."""
    from controller.workloads.training import train_digital

    desc = train_digital(workload).description
    return {layer.name: layer.weight_matrix() for _, layer in desc.analog_layers()}


@dataclass
class WPOStudy:
    """The optimiser's result and the weight error of every translation over time."""

    workload: str
    n_weights: int
    result: WPOResult
    translations: dict[str, Translation]
    table: WeightErrorTable  # at CURVE_TIMES_S

    def reduction(self, name: str, at_s: float) -> float:
        """1 - NMSE(name)/NMSE(naive dual pair at F = 2) at one time."""
        i = self.table.times_s.index(at_s)
        return float(self.table.reduction(name, BASELINE)[i])


def study(
    workload: str = "paper_cnn", n_seeds: int = 5, cfg: WPOConfig | None = None,
    layers: dict[str, np.ndarray] | None = None,
) -> WPOStudy:  # fmt: skip
    """Optimise on the workload's weights, then compare the translations on fresh chips."""
    layers = layers if layers is not None else network_layers(workload)
    res = optimise(layers, cfg or WPOConfig())
    f_opt = res.significance_factor
    translations: dict[str, Translation] = {
        "single_pair": SinglePair(),
        BASELINE: dual_pair(2.0),
        f"dual_pair (F = {f_opt:.2f}, naive)": dual_pair(f_opt),
        "msp_first (F = 2)": msp_first(2.0),
        f"wpo (F = {f_opt:.2f}, optimised)": res.translation,
    }
    seeds = range(EVAL_SEED_BASE, EVAL_SEED_BASE + n_seeds)
    table = compare_translations(layers, translations, CURVE_TIMES_S, seeds)
    n = sum(int(np.asarray(w).size) for w in layers.values())
    return WPOStudy(workload, n, res, translations, table)


def markdown(s: WPOStudy) -> str:
    """The README table: NMSE per time and the reduction against naive dual-pair (F = 2)."""
    cols = [t for t in CURVE_TIMES_S if t in REPORT_TIMES_S]
    idx = [s.table.times_s.index(t) for t in cols]
    n_seeds = s.table.nmse[BASELINE].shape[0]
    out = [
        f"Workload `{s.workload}`: {s.n_weights:,} weights; weight error NMSE x 1e4 (mean ± std "
        f"over {n_seeds} chips, seeds {EVAL_SEED_BASE}..{EVAL_SEED_BASE + n_seeds - 1}), and "
        "its reduction against naive dual-pair programming at F = 2:",
        "",
        "| translation | "
        + " | ".join(TIME_LABELS[t] for t in cols)
        + " | reduction "
        + " | reduction ".join(TIME_LABELS[t] for t in cols)
        + " |",
        "|---" * (1 + 2 * len(cols)) + "|",
    ]
    for name in s.translations:
        m, sd = s.table.mean(name) * 1e4, s.table.std(name) * 1e4
        red = s.table.reduction(name, BASELINE)
        cells = [f"{m[i]:.2f} ± {sd[i]:.2f}" for i in idx]
        cells += [f"{100 * red[i]:+.1f} %" for i in idx]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    r = s.result
    out += [
        "",
        f"Optimiser: F = {r.significance_factor:.2f}, {r.evaluations:,} evaluations in "
        f"{r.generations} generations, {r.wall_s:.0f} s (one thread); on its own sample and "
        f"chips the time-averaged NMSE x 1e4 was {1e4 * r.baseline_loss:.3f} for naive "
        f"programming at F = {r.baseline.significance[1]:g}, {1e4 * r.naive_loss:.3f} for naive "
        f"programming at the best F (stage 1), {1e4 * r.start_loss:.3f} for the best member of "
        f"the search's first population and {1e4 * r.search_loss:.3f} after the search "
        "(stage 2).",
        "",
        f"The found translation ({'the search' if r.search_won else 'naive programming'} at "
        f"F = {r.significance_factor:.2f}), targets in uS at normalised weights u = w/max|w| "
        "(negative weights: G+ and G- swapped):",
        "",
    ]
    u = np.round(np.linspace(0.0, 1.0, 11), 2)
    rows = tabulate(r.translation, u)
    out += ["| u | " + " | ".join(f"{v:.1f}" for v in u) + " |", "|---" * (1 + len(u)) + "|"]
    for k, label in enumerate(("LSP", "MSP")[: len(r.translation.significance)]):
        for sign, key in (("G+", f"g_pos_{k}_us"), ("G-", f"g_neg_{k}_us")):
            cells = " | ".join(f"{row[key]:.1f}" for row in rows)
            out.append(f"| {label} {sign} | {cells} |")
    return "\n".join(out)


def plot(s: WPOStudy, path: Path, weights: np.ndarray) -> None:
    """Left: the found translation against naive programming at F = 2, over the weight
    density; right: NMSE over time for every translation."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.6))
    r = s.result
    u = np.linspace(-1, 1, 801)
    wpo = r.translation.translate(u)
    naive = dual_pair(2.0).translate(u)
    colours = {("LSP", "G+"): "tab:blue", ("LSP", "G-"): "tab:cyan",
               ("MSP", "G+"): "tab:red", ("MSP", "G-"): "tab:orange"}  # fmt: skip
    for k, pair in enumerate(("LSP", "MSP")[: wpo.n_pairs]):
        for sign, g_opt, g_naive in (("G+", wpo.g_pos_us[k], naive.g_pos_us[k]),
                                     ("G-", wpo.g_neg_us[k], naive.g_neg_us[k])):  # fmt: skip
            c = colours[(pair, sign)]
            a.plot(u, g_opt, color=c, lw=2, label=f"{pair} {sign}")
            a.plot(u, g_naive, color=c, lw=1, ls="--")
    dens = a.twinx()
    dens.hist(weights, bins=80, range=(-1, 1), color="0.85", zorder=0)
    dens.set_yticks([])
    a.set_zorder(dens.get_zorder() + 1)
    a.patch.set_visible(False)
    a.set_xlabel("normalised weight w / max|w|")
    a.set_ylabel("target conductance (uS)")
    a.set_title(f"{s.workload}: found, F = {r.significance_factor:.2f} (solid); "
                "naive, F = 2 (dashed)")  # fmt: skip
    a.legend(fontsize=7, loc="upper center")
    t = np.array(s.table.times_s)
    for name in s.translations:
        m, sd = s.table.mean(name), s.table.std(name)
        b.plot(t, m, marker="o", ms=3, label=name)
        b.fill_between(t, m - sd, m + sd, alpha=0.2)
    b.set_xscale("log")
    b.set_yscale("log")
    b.set_xlabel("time since programming (s)")
    b.set_ylabel("NMSE of drift-compensated weights")
    b.set_title("weight error over time (GDC per layer)")
    b.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="paper_cnn")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: none)")
    p.add_argument("--maxiter", type=int, default=WPOConfig().maxiter)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    layers = network_layers(a.workload)
    s = study(a.workload, a.seeds, WPOConfig(maxiter=a.maxiter), layers)
    print(markdown(s))
    if a.plot is not None:
        plot(s, a.plot, pooled_normalised(layers))
    print(f"\n(made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
