"""Training and quantisation cost of the built-in workloads (``make bench``).

Trains ``paper_cnn`` digitally (the paper's small-weight penalty and clipping) and then
fine-tunes it hardware-aware (aihwkit pure-torch tiles, weight noise), both without the cache
so that the wall time is measured; trains ``mnist_mlp`` and ``digits_mlp`` digitally; and
times the simulated annealing of the multiplicative quantiser on the trained ``paper_cnn``
and ``mnist_mlp``, with the cost reduction it reaches over D+ = D- = max|w|/M. Accuracy on
the held-out split comes with each training. One torch thread (``train_threads``).
"""

from __future__ import annotations

import time

from controller.workloads.mapping import fit_chip, map_network
from controller.workloads.quantisers import MultiplicativeQuantiser
from controller.workloads.training import train_digital, train_hardware_aware
from controller.workloads.zoo import get_workload
from device_twin import ChipConfig


def _rec(name: str, value: float, unit: str, target: float | None = None) -> dict:
    return {"name": name, "value": value, "unit": unit, "target": target,
            "baseline_name": None, "baseline_value": None, "ratio": None}  # fmt: skip


def _annealing(workload_desc) -> tuple[float, float]:
    """(seconds, cost reduction over all layers) of the multiplicative mapping, M = 8."""
    chip = fit_chip(workload_desc, ChipConfig(tile_rows=256, tile_cols=256))
    t0 = time.perf_counter()
    mapped = map_network(workload_desc, MultiplicativeQuantiser(n_levels=8), chip)
    seconds = time.perf_counter() - t0
    start = sum(al.quantisation.annealing.start_cost for al in mapped.layers.values())
    final = sum(al.quantisation.annealing.cost for al in mapped.layers.values())
    return seconds, 1.0 - final / start


def run() -> list[dict]:
    out: list[dict] = []
    cnn = train_digital("paper_cnn", cache=False)
    wl = get_workload("paper_cnn")
    out += [
        _rec("train_paper_cnn_digital_s", cnn.train_seconds, "s"),
        _rec("paper_cnn_digital_accuracy", cnn.test_accuracy, "fraction", 0.94),
    ]
    # fine-tuning starts from the digital network just trained (same recipe, same weights)
    hwa = train_hardware_aware("paper_cnn", wl.hardware_aware, wl.training, cache=False)
    out += [
        _rec("train_paper_cnn_hardware_aware_s", hwa.train_seconds, "s"),
        _rec("paper_cnn_hardware_aware_accuracy", hwa.test_accuracy, "fraction"),
    ]
    for name in ("mnist_mlp", "digits_mlp"):
        t = train_digital(name, cache=False)
        out += [
            _rec(f"train_{name}_digital_s", t.train_seconds, "s"),
            _rec(f"{name}_digital_accuracy", t.test_accuracy, "fraction"),
        ]
        if name == "mnist_mlp":
            s, red = _annealing(t.description)
            out += [
                _rec("anneal_mnist_mlp_s", s, "s"),
                _rec("anneal_mnist_mlp_cost_reduction", red, "fraction"),
            ]
    s, red = _annealing(cnn.description)
    out += [
        _rec("anneal_paper_cnn_s", s, "s"),
        _rec("anneal_paper_cnn_cost_reduction", red, "fraction"),
    ]
    return out


if __name__ == "__main__":
    for r in run():
        print(r)
