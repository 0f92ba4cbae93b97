"""The scenario benchmark runs end to end on a tiny network (no timing assertions: the
machine is shared; ``make bench`` measures)."""

import math

from bench.__main__ import FIELDS
from bench.bench_scenario import Size, records

TINY = Size(n_in=60, n_hidden=20, n_out=5, tile=32)  # 1,300 weights on 3 tiles


def test_scenario_benchmark_gives_complete_records_on_a_tiny_network():
    """Every record has the harness's fields and a finite value; the gRPC and in-process runs
    of the same wake-ups correct the same devices, and so does the hand-written loop beside
    them; probing only corrects none and makes the same twin calls per wake-up over a day and
    over a year; the daily drift-aware year runs."""
    recs = {r["name"]: r for r in records(TINY, year_budget_s=0.2, repeats=1, min_wakes=2)}
    assert set(recs) == {
        "scenario_year_resnet32_scale",
        "scenario_year_resnet32_scale_sim_s_per_wall_s",
        "scenario_year_resnet32_scale_in_process",
        "scenario_year_resnet32_scale_probe_only",
        "scenario_year_resnet32_scale_drift_aware",
        "handwritten_loop_year_resnet32_scale",
        "day_vs_year_same_probes",
        "day_vs_year_same_probes_probe_only",
    }
    for r in recs.values():
        assert set(FIELDS) <= set(r)
        assert math.isfinite(r["value"]) and r["value"] > 0
    grpc = recs["scenario_year_resnet32_scale"]
    local = recs["scenario_year_resnet32_scale_in_process"]
    probe = recs["scenario_year_resnet32_scale_probe_only"]
    assert grpc["weights"] == TINY.weights and grpc["wakes_measured"] >= 2
    assert grpc["wakes_measured"] == local["wakes_measured"] == probe["wakes_measured"]
    assert grpc["devices_corrected_per_wake"] > 0
    assert grpc["devices_corrected_per_wake"] == local["devices_corrected_per_wake"]
    hand = recs["handwritten_loop_year_resnet32_scale"]
    assert grpc["baseline_name"] == hand["name"] and hand["wakes_measured"] >= 2
    assert hand["devices_corrected_per_wake"] > 0  # the same policy corrects on both
    drift_aware = recs["scenario_year_resnet32_scale_drift_aware"]
    assert drift_aware["wakes_measured"] >= 2 and drift_aware["policy"] == "drift_aware"
    assert probe["devices_corrected_per_wake"] == 0
    assert set(probe["twin_calls_per_wake_by_method"]) == {"probe"}
    for name in ("day_vs_year_same_probes", "day_vs_year_same_probes_probe_only"):
        d = recs[name]
        assert d["wakes"] == 24 and d["interval_s"] == {"day": 3600.0, "year": 1314000.0}
    calls = recs["day_vs_year_same_probes_probe_only"]["twin_calls_per_wake"]
    assert calls["day"] == calls["year"] == 3  # one probe per tile


def test_wpo_benchmark_gives_complete_records_on_a_small_network():
    """The weight-programming benchmark's records are complete and finite on a tiny case."""
    import numpy as np

    from bench.bench_wpo import records
    from controller.workloads.wpo_config import WPOConfig

    layers = {"a": np.random.default_rng(0).normal(0, 0.3, (32, 8))}
    cfg = WPOConfig(n_bins=4, sample_size=256, sample_seeds=1, popsize=1, maxiter=2)
    recs = {r["name"]: r for r in records("tiny", cfg, n_seeds=2, layers=layers)}
    assert set(recs) == {"wpo_weight_error_reduction_t0", "wpo_weight_error_reduction_1mo",
                         "wpo_optimiser_wall_s", "wpo_significance_factor"}  # fmt: skip
    for r in recs.values():
        assert set(FIELDS) <= set(r) and math.isfinite(r["value"])
    assert recs["wpo_optimiser_wall_s"]["evaluations"] > 0


def test_resnet32_benchmark_gives_complete_records_on_a_few_images():
    """The ResNet-32 evaluation records (in process, over gRPC with and without ConvMvm) are
    complete and finite, and the profile split names the parts of an evaluation."""
    from bench.bench_resnet32 import eval_records, profile_split

    recs = {r["name"]: r for r in eval_records(n_images=2)}
    assert set(recs) == {"resnet32_eval_in_process_ms_per_image", "resnet32_eval_grpc_ms_per_image",
                         "resnet32_eval_grpc_im2col_rows_ms_per_image"}  # fmt: skip
    for r in recs.values():
        assert set(FIELDS) <= set(r) and math.isfinite(r["value"]) and r["value"] > 0
    assert recs["resnet32_eval_grpc_ms_per_image"]["baseline_value"] > 0
    split = profile_split(n_images=2)
    assert set(split) >= {"total", "twin_mvm", "periphery", "im2col", "controller_other"}
    assert 0 < split["im2col"] < split["twin_mvm"] < split["total"]
    assert 0 < split["periphery"] < split["twin_mvm"]
