"""Preparing a variant: train its network, map it onto a chip, load its test images.

:func:`prepare_variant` trains (the trained-weights cache on disk makes a repeated recipe
free), quantises and maps the network onto the variant's chip (variants that share the
recipe, the mapping and the chip share one mapping), and builds once what the run needs to
know of the variant's policy (:class:`PolicyInfo`), and, for a policy whose compensation is
AdaBS, its calibration images (the first ``workload.calibration_images`` training images).
:func:`describe_variant` says what a variant is, for the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from controller.firmware.policies import load_policy
from controller.scenario.loader import ResolvedVariant
from controller.scenario.results import content_hash
from controller.scenario.schema import ScenarioCore
from controller.workloads.datasets import DatasetSplit, load_dataset
from controller.workloads.mapping import MappedNetwork, map_network
from controller.workloads.training import TrainedNetwork, train_digital, train_hardware_aware
from controller.workloads.zoo import get_workload
from device_twin.config import ChipConfig


@dataclass(frozen=True)
class PolicyInfo:
    """What the summary and the scheduling of runs need to know of a variant's policy, read
    once from a policy built for the purpose (each seed run builds a policy of its own: a
    policy's state belongs to its run)."""

    compensation: str | None
    wakeup_interval_s: float | None  # None: the policy never wakes the monitor on a period

    @classmethod
    def of(cls, name: str, params: dict[str, Any], base_dir: str | None = None) -> PolicyInfo:
        policy = load_policy(name, params, base_dir)
        interval = getattr(policy, "interval_s", None) or getattr(policy, "base_interval_s", None)
        return cls(getattr(policy, "compensation", None), interval)


@dataclass
class PreparedVariant:
    """A variant's network, trained and mapped, and what it is evaluated on."""

    variant: ResolvedVariant
    mapped: MappedNetwork
    test: DatasetSplit
    chip_config: ChipConfig  # seed 0: a seed run sets its own
    trained_accuracy: float
    train_seconds: float
    train_cached: bool
    policy: PolicyInfo
    calibration_x: torch.Tensor | None = None  # AdaBS's calibration images

    def expected_wakeups(self) -> float:
        """Monitor wake-ups the variant's policy will have, roughly (its cost drivers)."""
        interval = self.policy.wakeup_interval_s
        return self.variant.core.duration / interval if interval else 0.0


def _train(core: ScenarioCore) -> TrainedNetwork:
    tr = core.training
    if tr.kind == "hardware_aware":
        return train_hardware_aware(core.workload.network, tr.hardware_aware, tr.digital)
    return train_digital(core.workload.network, tr.digital)


def prepare_variant(v: ResolvedVariant, cache: dict[str, MappedNetwork]) -> PreparedVariant:
    """Train (cached on disk) and map (cached in ``cache`` for variants that share it)."""
    core = v.core
    trained = _train(core)
    desc = trained.description
    chip_config = core.chip.chip_config(desc)
    key = content_hash(
        [trained.key, core.mapping.model_dump(mode="json"), chip_config.model_dump(mode="json")]
    )
    if key not in cache:
        cache[key] = map_network(desc, core.mapping.quantiser, chip_config)
    wl = get_workload(core.workload.network)
    data = load_dataset(wl.dataset, core.training.digital.split_seed)
    test = data.test
    if core.workload.test_images is not None:
        test = test.head(core.workload.test_images)
    policy = PolicyInfo.of(core.controller.policy.name, v.policy_params, v.policy_dir)
    calibration = None
    if policy.compensation is not None and "adabs" in policy.compensation:
        calibration = data.train.x[: core.workload.calibration_images].clone()
    return PreparedVariant(v, cache[key], test, chip_config, trained.test_accuracy,
                           trained.train_seconds, trained.cached, policy,
                           calibration)  # fmt: skip


def describe_variant(prep: PreparedVariant) -> dict[str, Any]:
    """What a variant is, for the summary (all determined by the scenario)."""
    core = prep.variant.core
    return {
        "network": core.workload.network,
        "training": core.training.kind,
        "quantiser": core.mapping.quantiser.kind,
        "policy": core.controller.policy.name,
        "policy_params": prep.variant.policy_params,
        "compensation": prep.policy.compensation,
        "calibration_images": None if prep.calibration_x is None else len(prep.calibration_x),
        "tiles": prep.chip_config.n_tiles,
        "weights_on_chip": int(prep.mapped.n_weights_on_chip()),
        "tile_layers": {str(tm.tile): tm.layer for tm in prep.mapped.tiles},
        "test_images": len(prep.test),
        "digital_accuracy": prep.trained_accuracy,
        "duration_s": core.duration,
    }
