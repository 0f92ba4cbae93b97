"""The README's "Networks on the chip" tables: ``python -m controller.workloads.report``.

For a workload (default ``paper_cnn``) it trains (or loads from the cache) the digital and the
hardware-aware network, maps them with each quantiser, and measures accuracy on the held-out
split: in float, after quantisation alone (digital, no device noise), and on the twin (an
in-process ``Chip`` with the default PCM device model and periphery) 1 s after programming and
after one day with global drift compensation, mean +- std over device-noise seeds. It also
reports what simulated annealing gained over D+ = D- = max|w|/M, and the training times.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass

from controller.workloads.chip_mvm import chip_mvm
from controller.workloads.compensation import DriftCompensation
from controller.workloads.datasets import DatasetSplit, load_dataset
from controller.workloads.mapping import (
    MappedNetwork,
    evaluate,
    fit_chip,
    map_network,
    program_mapped,
)
from controller.workloads.network import NetworkDescription
from controller.workloads.quantisers import (
    MultiplicativeQuantiser,
    NoneQuantiser,
    QuantiserConfig,
    UniformQuantiser,
)
from controller.workloads.training import accuracy, train_digital, train_hardware_aware
from controller.workloads.zoo import get_workload
from device_twin import Chip, ChipConfig

DAY_S = 86400.0
#: Programming happens at t = 0; "right after programming" is read at t = 1 s.
AFTER_PROGRAMMING_S = 1.0


@dataclass
class Row:
    label: str
    float_acc: float
    quantised_acc: float
    twin_1s: list[float]
    twin_1d: list[float]
    mapped: MappedNetwork


def twin_accuracies(
    mapped: MappedNetwork, test: DatasetSplit, seed: int, chip: ChipConfig
) -> tuple[float, float]:
    """(accuracy 1 s after programming, accuracy after one day with global drift
    compensation) on a fresh chip with device-noise seed ``seed``."""
    c = Chip(chip.model_copy(update={"seed": seed}))
    program_mapped(mapped, c, 0.0)
    comp = DriftCompensation(mapped, "global", "identity")
    comp.calibrate(chip_mvm(c, AFTER_PROGRAMMING_S))
    fresh = evaluate(mapped, chip_mvm(c, AFTER_PROGRAMMING_S), test)
    day = evaluate(mapped, chip_mvm(c, DAY_S), test, comp)
    return fresh, day


def measure(
    label: str,
    desc: NetworkDescription,
    float_acc: float,
    quantiser: QuantiserConfig,
    test: DatasetSplit,
    seeds: list[int],
) -> Row:
    chip = fit_chip(desc, ChipConfig(tile_rows=256, tile_cols=256))
    mapped = map_network(desc, quantiser, chip)
    q_acc = accuracy(mapped.quantised.to_torch(), test)  # type: ignore[union-attr]
    pairs = [twin_accuracies(mapped, test, s, chip) for s in seeds]
    return Row(label, float_acc, q_acc, [p[0] for p in pairs], [p[1] for p in pairs], mapped)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _mean_std(vs: list[float]) -> str:
    sd = statistics.stdev(vs) if len(vs) > 1 else 0.0
    return f"{100 * statistics.mean(vs):.1f} ± {100 * sd:.1f}"


def report(workload: str = "paper_cnn", n_seeds: int = 5, test_images: int | None = None) -> str:
    wl = get_workload(workload)
    test = load_dataset(wl.dataset, wl.training.split_seed).test
    if test_images is not None:
        test = test.head(test_images)
    digital = train_digital(wl)
    hwa = train_hardware_aware(wl)
    seeds = list(range(n_seeds))
    d_float = accuracy(digital.description.to_torch(), test)
    h_float = accuracy(hwa.description.to_torch(), test)
    rows = [
        measure("digital, `none` (continuous)", digital.description, d_float, NoneQuantiser(),
                test, seeds),
        measure("digital, `uniform` (M = 8)", digital.description, d_float,
                UniformQuantiser(n_levels=8), test, seeds),
        measure("digital, `multiplicative` (M = 8, the paper's)", digital.description, d_float,
                MultiplicativeQuantiser(n_levels=8), test, seeds),
        measure("digital, `multiplicative` (M = 8, `pairs=single`)", digital.description,
                d_float, MultiplicativeQuantiser(n_levels=8, pairs="single"), test, seeds),
        measure("hardware-aware, `none`", hwa.description, h_float, NoneQuantiser(), test, seeds),
    ]  # fmt: skip
    out = [
        f"Workload `{wl.name}`: {digital.description.n_analog_weights():,} crossbar weights, "
        f"{len(test):,} held-out images, {n_seeds} device-noise seeds (chip seeds "
        f"{seeds[0]}..{seeds[-1]}), 256x256 tiles, default PCM model and periphery.",
        "",
        "| network, quantiser | float | quantised alone | twin, 1 s after programming "
        "| twin, 1 day, global drift comp. |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        out.append(
            f"| {r.label} | {_pct(r.float_acc)} | {_pct(r.quantised_acc)} "
            f"| {_mean_std(r.twin_1s)} | {_mean_std(r.twin_1d)} |"
        )
    out += [
        "",
        "Simulated annealing of (D+, D-) per layer (M = 8, the paper's schedule, seed 0), "
        "cost = sum |w - Q(w)|:",
        "",
        "| quantiser | layer | weights | D+ | D- | cost at max\\|w\\|/M | annealed cost "
        "| reduction |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows[2:4]:
        for name, al in r.mapped.layers.items():
            a = al.quantisation.annealing
            assert a is not None
            out.append(
                f"| {r.mapped.quantiser} ({'single' if 'single' in r.label else 'both'}) "
                f"| {name} | {a.n_weights} | {a.delta_pos:.4f} | {a.delta_neg:.4f} "
                f"| {a.start_cost:.2f} | {a.cost:.2f} | {100 * a.cost_reduction:.1f} % |"
            )
    out += [
        "",
        f"Training (one thread, seeded): digital {digital.train_seconds:.1f} s "
        f"({wl.training.epochs} epochs), hardware-aware fine-tuning {hwa.train_seconds:.1f} s "
        f"({wl.hardware_aware.epochs} epochs); timings from the run that filled the cache.",
    ]
    worst = max(r.float_acc - r.quantised_acc for r in rows)
    out.append(f"Largest loss from quantisation alone: {100 * worst:.1f} points.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workload", default="paper_cnn")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--test-images", type=int, default=None)
    a = p.parse_args(argv)
    t0 = time.perf_counter()
    print(report(a.workload, a.seeds, a.test_images))
    print(f"\n(made in {time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
