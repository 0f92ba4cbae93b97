"""Looking at a chip changes none of its devices (issue 19): two runs of one scenario that
differ only in their evaluation times leave the same devices, pulses and energies, and
measure the same accuracies where both evaluate."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from controller.scenario.loader import load_scenario
from controller.scenario.prepare import prepare_variant
from controller.scenario.seed_run import run_seed
from device_twin.registry import ChipRegistry

STATE = ("g_prog_us", "nu", "t_write_s", "write_count")


class _KeepsChips(ChipRegistry):
    """An in-process twin that keeps each chip's devices and clock when a run deletes it."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: dict[str, Any] = {}

    def delete_chip(self, chip_id: str) -> None:
        self.kept = self.with_chip(
            chip_id, lambda c: {**{n: getattr(c, n).copy() for n in STATE}, "now_s": c.now_s}
        )
        super().delete_chip(chip_id)


def _run(tiny_scenario: dict[str, Any], times: list[str]):
    data = copy.deepcopy(tiny_scenario)
    data["evaluation"] = {"times": times}
    variant = load_scenario(data).variants[0]
    twin = _KeepsChips()
    result = run_seed(twin, prepare_variant(variant, {}), 0, variant.core.seed)
    return result, twin.kept


def test_evaluation_times_change_no_device_pulse_or_common_accuracy(tiny_scenario):
    """digits_mlp under the hourly-ish threshold policy for 6 h, evaluated at 2 instants or at 6
    (two of them at monitor wake-ups): the same device state at the end, the same pulses and
    correction energy, bit-identical accuracies at the common times (before and after their
    corrections)."""
    few, few_chip = _run(tiny_scenario, ["1s", "6h"])
    many, many_chip = _run(tiny_scenario, ["1s", "10min", "2h", "3h", "4h", "6h"])
    assert few_chip["now_s"] == many_chip["now_s"]
    for name in STATE:
        np.testing.assert_array_equal(few_chip[name], many_chip[name], err_msg=name)
    for key in ("correction_pulses", "corrections", "devices_corrected", "upkeep_energy_pj"):
        assert few.totals[key] == many.totals[key], key
    assert few.totals["corrections"] > 0  # the policy did correct: there was something to change

    def accuracies(res) -> dict[tuple[float, str], float]:
        return {(r["scheduled_s"], r["phase"]): r["accuracy"] for r in res.timeline}

    a, b = accuracies(few), accuracies(many)
    assert set(a) <= set(b) and len(a) >= 3  # incl. the evaluation after the corrections at 6 h
    for key, acc in a.items():
        assert b[key] == acc, key
