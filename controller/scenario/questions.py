"""The seed paper's open questions, answered from run and sweep folders.

Each subcommand prints the Markdown table the README's section "The paper's open questions"
holds, read from the folders ``pcm-twin run`` and ``pcm-twin sweep`` wrote (nothing is
simulated here)::

    python -m controller.scenario.questions paper results/paper_mnist_selfcorrect
    python -m controller.scenario.questions fixes results/correction_fixes
    python -m controller.scenario.questions sawtooth results/paper_mnist_selfcorrect
    python -m controller.scenario.questions q1 results/paper_mnist_selfcorrect
    python -m controller.scenario.questions q2 results/policy_front results/paper_mnist_selfcorrect
    python -m controller.scenario.questions q3 results/device_families
    python -m controller.scenario.questions q4 results/hybrid

Accuracies are the ``before_correction`` rows (the worst point of each correction cycle);
"over time" is each seed's mean over its evaluation times (log-spaced: each decade of time
counts alike), then the mean over seeds with its 95 % interval (:mod:`~controller.scenario.
stats`). Comparisons between variants are paired over the device-noise seeds they share.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from controller.scenario.report.data import load_run
from controller.scenario.stats import compare, over_seeds

YEAR_S = 365 * 86400.0


# --- formatting ---------------------------------------------------------------------------------
def pct_std(est: Any) -> str:
    """``93.1 ± 0.8 (± 1.0)``: mean ± std over seeds, (the half-width of the 95 % interval)."""
    if not math.isfinite(est.mean):
        return "-"
    if est.n > 1 and math.isfinite(est.half_width):
        return f"{100 * est.mean:.1f} ± {100 * est.std:.1f} (± {100 * est.half_width:.1f})"
    return f"{100 * est.mean:.1f}"


def pct(est: Any) -> str:
    """``93.1 ± 0.8`` (%, the half-width of the 95 % interval; ``93.1`` with one seed)."""
    if not math.isfinite(est.mean):
        return "-"
    if est.n > 1 and math.isfinite(est.half_width):
        return f"{100 * est.mean:.1f} ± {100 * est.half_width:.1f}"
    return f"{100 * est.mean:.1f}"


def energy(pj: float | None) -> str:
    """pJ in the unit that reads best (``113 uJ``, ``6.6 mJ``)."""
    if pj is None or not math.isfinite(pj):
        return "-"
    if pj == 0:
        return "0"
    for unit, scale in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if abs(pj) >= scale:
            return f"{pj / scale:.3g} {unit}"
    return f"{pj:.3g} pJ"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


# --- reading ------------------------------------------------------------------------------------
def _acc_at(v: dict[str, Any], at_s: float) -> Any:
    """The accuracy per seed at the evaluation time nearest ``at_s``."""
    times = np.asarray(v["eval_times_s"], float)
    i = int(np.argmin(np.abs(np.log(times) - math.log(at_s))))
    return over_seeds([s[i] if i < len(s) else None for s in v["accuracy_per_seed"]])


def over_time(v: dict[str, Any]) -> Any:
    return over_seeds(v.get("accuracy_time_mean_per_seed") or [])


def upkeep_per_year(v: dict[str, Any]) -> float:
    """Upkeep energy (pJ) scaled to one year of the variant's duration."""
    return float(v["upkeep_energy_pj"]) * YEAR_S / float(v.get("duration_s") or YEAR_S)


def after_minus_before(run: Any, variant: str) -> tuple[float, float, int]:
    """Mean over seeds of the accuracy right after the corrections of each evaluation time
    minus just before them: (the mean over times, the worst time, the number of times)."""
    tl = run.timeline
    tl = tl[tl["variant"] == variant]
    piv = tl.pivot_table(index=["seed", "scheduled_s"], columns="phase", values="accuracy")
    if "after_correction" not in piv:
        return math.nan, math.nan, 0
    d = (piv["after_correction"] - piv["before_correction"]).dropna()
    per_time = d.groupby(level="scheduled_s").mean()
    return float(per_time.mean()), float(per_time.min()), int(per_time.size)


def paper(run_dir: str, times_s: Sequence[float] = (1.0, 3600.0, 86400.0, 604800.0, 2592000.0,
                                                  YEAR_S)) -> str:  # fmt: skip
    """The paper study's table: per variant its seeds, the accuracy at a few times and over
    the run (mean ± std (± 95 % interval half-width), before the corrections of each time),
    a year's upkeep energy, correction jobs and pulses."""
    from controller.firmware.durations import format_duration

    run = load_run(run_dir)
    rows = []
    for name, v in run.summary["variants"].items():
        t = v["totals"]
        rows.append([f"`{name}`", str(v["seeds"]), *(pct_std(_acc_at(v, x)) for x in times_s),
                     pct_std(over_time(v)), energy(upkeep_per_year(v)),
                     f"{t['corrections']['mean']:.0f}" if "corrections" in t else "0",
                     _count(t["correction_pulses"]["mean"]) if "correction_pulses" in t
                     else "0"])  # fmt: skip
    head = ["variant", "seeds", *(format_duration(x) for x in times_s), "over time",
            "upkeep / year", "corrections", "pulses"]  # fmt: skip
    return table(head, rows)


def _count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


# --- the questions --------------------------------------------------------------------------------
def fixes(run_dir: str) -> str:
    """How each way of rewriting keeps (or breaks) drift compensation."""
    run = load_run(run_dir)
    rows = []
    for name, v in run.summary["variants"].items():
        mean_d, worst_d, n = after_minus_before(run, name)
        rows.append([f"`{name}`", pct(over_time(v)), pct(_acc_at(v, YEAR_S)),
                     f"{100 * mean_d:+.1f}" if n else "-", f"{100 * worst_d:+.1f}" if n else "-",
                     energy(upkeep_per_year(v)), f"{v['totals']['devices_corrected']['mean']:.3g}"
                     if "devices_corrected" in v["totals"] else "-"])  # fmt: skip
    head = ["variant", "accuracy over time (%)", "at 1 y (%)", "after - before, mean (points)",
            "after - before, worst time", "upkeep energy / year", "devices rewritten"]  # fmt: skip
    return table(head, rows)


def sawtooth(run_dir: str, max_drop: float = 0.01) -> tuple[str, bool]:
    """Per correcting variant, the worst (over evaluation times) mean over seeds of the
    accuracy right after a correction minus just before it; ``ok`` when no variant falls by
    more than ``max_drop`` (issue 16: a correction never makes the chip worse)."""
    run = load_run(run_dir)
    rows, ok = [], True
    for name in run.summary["variants"]:
        mean_d, worst_d, n = after_minus_before(run, name)
        if not n:
            continue
        passed = worst_d >= -max_drop
        ok &= passed
        rows.append([f"`{name}`", str(n), f"{100 * mean_d:+.2f}", f"{100 * worst_d:+.2f}",
                     "ok" if passed else f"falls more than {100 * max_drop:g}"])  # fmt: skip
    head = ["variant", "times with corrections", "after - before, mean (points)",
            "worst time (points)", "check"]  # fmt: skip
    return table(head, rows), ok


def _inference_pj(run: Any, variant: str, n_images: int) -> float:
    """Energy of one inference (pJ): a ``before_correction`` evaluation's twin energy (its
    compensation read included) over its test images, median over the variant's evaluations."""
    ev = run.events(kinds=["evaluation"])
    ev = ev[ev["variant"] == variant]
    if ev.empty:
        return math.nan
    ev = ev[ev["detail.phase"] == "before_correction"]
    return float(np.median(ev["energy_pj"].to_numpy(float))) / n_images


def q1(run_dir: str, reference: str = "hwa_gdc") -> str:
    """Upkeep energy per year against the inference energy it protects, and each correcting
    variant's accuracy against hardware-aware training without correction."""
    run = load_run(run_dir)
    variants = run.summary["variants"]
    ref = variants.get(reference)
    rows = []
    for name, v in variants.items():
        up = upkeep_per_year(v)
        e_img = _inference_pj(run, name, int(v["test_images"]))
        if up > 0:
            equiv = up / e_img
            rate = up / (0.01 * e_img * YEAR_S)
            cols = [f"{equiv:.3g}", f"{rate:.3g}"]
        else:
            cols = ["0", "0"]
        vs = "-"
        if ref is not None and name != reference:
            c = compare(v["accuracy_time_mean_per_seed"], ref["accuracy_time_mean_per_seed"])
            vs = f"{100 * c.diff:+.1f} [{100 * c.ci_low:+.1f}, {100 * c.ci_high:+.1f}]" + (
                "" if c.significant else " (n.s.)"
            )
        rows.append([f"`{name}`", pct(over_time(v)), pct(_acc_at(v, YEAR_S)), vs, energy(up),
                     energy(e_img), *cols])  # fmt: skip
    head = ["variant", "accuracy over time (%)", "at 1 y (%)", f"vs `{reference}` (points)",
            "upkeep / year", "one inference", "inferences a year's upkeep buys",
            "inferences/s for upkeep = 1 %"]  # fmt: skip
    return table(head, rows)


def sweep_points(sweep_dirs: Sequence[str]) -> list[dict[str, Any]]:
    """Every (point, variant) of the sweep folders (or run folders: each variant a point):
    policy, parameters, upkeep energy per year, accuracy over time per seed."""
    out = []
    for d in sweep_dirs:
        own = Path(d) / "summary.json"
        found = [own] if own.exists() else sorted(Path(d).glob("runs/*/summary.json"))
        for summary in found:
            doc = json.loads(summary.read_text())
            for name, v in doc["variants"].items():
                params = v.get("policy_params") or {}
                out.append({
                    "folder": summary.parent.name, "variant": name, "policy": v.get("policy"),
                    "params": params, "upkeep_pj": upkeep_per_year(v), "v": v,
                    "acc": over_time(v),
                })  # fmt: skip
    return out


def _describe(p: dict[str, Any]) -> str:
    keys = ("interval_s", "threshold")
    shown = {k: p["params"][k] for k in keys if k in p["params"]}
    text = ", ".join(f"{k.removesuffix('_s')} {_short(v)}" for k, v in shown.items())
    return f"`{p['policy']}` {text}".strip()


def _short(value: Any) -> str:
    if isinstance(value, float | int) and not isinstance(value, bool):
        from controller.firmware.durations import format_duration

        return format_duration(float(value)) if value >= 60 else f"{value:g}"
    return str(value)


def pareto(points: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The points no other point beats on both upkeep energy (lower) and mean accuracy over
    time (higher), cheapest first."""
    pts = sorted(points, key=lambda p: (p["upkeep_pj"], -p["acc"].mean))
    front, best = [], -math.inf
    for p in pts:
        if p["acc"].mean > best:
            front.append(p)
            best = p["acc"].mean
    return front


def q2(
    sweep_dirs: Sequence[str],
    targets: Sequence[float] = (0.88, 0.89, 0.90, 0.91, 0.92),
    quantiser: str | None = "multiplicative",
) -> str:
    """The energy-accuracy front over every swept point (of one mapping, ``quantiser``; None:
    all), and the cheapest point for each accuracy target (mean accuracy over time at least
    the target)."""
    points = [p for p in sweep_points(sweep_dirs) if math.isfinite(p["acc"].mean)
              and (quantiser is None or p["v"].get("quantiser") in (None, quantiser))]  # fmt: skip
    front = pareto(points)
    rows = [[_describe(p), energy(p["upkeep_pj"]), pct(p["acc"])] for p in front]
    out = ["Pareto front (upkeep energy per year against accuracy over time):", "",
           table(["point", "upkeep / year", "accuracy over time (%)"], rows), ""]  # fmt: skip
    rows = []
    for t in targets:
        ok = [p for p in points if p["acc"].mean >= t]
        if not ok:
            rows.append([f"{100 * t:.0f} %", "none reaches it", "-", "-"])
            continue
        best = min(ok, key=lambda p: p["upkeep_pj"])
        rows.append(
            [f"{100 * t:.0f} %", _describe(best), energy(best["upkeep_pj"]), pct(best["acc"])]
        )
    out += [
        "Cheapest point per accuracy target:",
        "",
        table(["target", "cheapest point", "upkeep / year", "accuracy over time (%)"], rows),
    ]
    return "\n".join(out)


def q3(run_dir: str) -> str:
    """The paper's study per device family (variants named ``<family>_<mapping>_<policy>``)."""
    run = load_run(run_dir)
    rows = []
    for name, v in run.summary["variants"].items():
        family, _, rest = name.partition("_")
        rows.append(
            [
                family,
                f"`{rest}`",
                pct(_acc_at(v, 1.0)),
                pct(_acc_at(v, 86400.0)),
                pct(_acc_at(v, YEAR_S)),
                pct(over_time(v)),
                energy(upkeep_per_year(v)),
            ]
        )
    head = ["family", "mapping, correction", "1 s (%)", "1 d (%)", "1 y (%)",
            "over time (%)", "upkeep / year"]  # fmt: skip
    return table(head, rows)


def q4(run_dir: str) -> str:
    """Each variant of the hybrid study, and each against the best over time."""
    run = load_run(run_dir)
    variants = run.summary["variants"]
    best = max(variants, key=lambda n: over_time(variants[n]).mean)
    rows = []
    for name, v in variants.items():
        c = compare(v["accuracy_time_mean_per_seed"], variants[best]["accuracy_time_mean_per_seed"])
        vs = "-" if name == best else f"{100 * c.diff:+.1f}" + ("" if c.significant else " (n.s.)")
        rows.append([f"`{name}`", pct(_acc_at(v, 1.0)), pct(_acc_at(v, YEAR_S)),
                     pct(over_time(v)), vs, energy(upkeep_per_year(v))])  # fmt: skip
    head = ["variant", "1 s (%)", "1 y (%)", "over time (%)", f"vs `{best}` (points)",
            "upkeep / year"]  # fmt: skip
    return table(head, rows)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m controller.scenario.questions",
                                 description=__doc__.split("\n\n")[0])  # fmt: skip
    sub = ap.add_subparsers(dest="question", required=True)
    for name in ("paper", "fixes", "q1", "q3", "q4"):
        sub.add_parser(name).add_argument("run_dir")
    sub.add_parser("q2").add_argument("sweep_dirs", nargs="+")
    saw = sub.add_parser("sawtooth", help="exit 1 if a correction lowers the mean accuracy")
    saw.add_argument("run_dir")
    saw.add_argument("--max-drop", type=float, default=0.01, help="accuracy (fraction)")
    a = ap.parse_args(argv)
    if a.question == "sawtooth":
        text, ok = sawtooth(a.run_dir, a.max_drop)
        print(text)
        raise SystemExit(0 if ok else 1)
    if a.question == "q2":
        print(q2(a.sweep_dirs))
    else:
        chosen = {"paper": paper, "fixes": fixes, "q1": q1, "q3": q3, "q4": q4}[a.question]
        print(chosen(a.run_dir))


if __name__ == "__main__":
    main()
