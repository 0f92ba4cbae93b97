"""pcm-twin run: the run folder, the summary, the terminal table, reproducibility."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from controller.cli import app
from controller.scenario.loader import load_scenario
from controller.scenario.report import load_run
from controller.scenario.runner import run_to_folder
from tests.controller.scenario.conftest import REPO, SMOKE

PNG = b"\x89PNG\r\n\x1a\n"


def test_smoke_run_writes_the_run_folder_and_is_reproducible(tmp_path: Path) -> None:
    """`pcm-twin run` on the smoke scenario writes every artefact; the same seed gives the
    same summary.json, byte for byte, whether its runs go through 2 worker processes or 1."""
    first, second = tmp_path / "a", tmp_path / "b"
    runner = CliRunner()
    args = ["run", str(SMOKE), "--out", str(first), "--no-progress", "--workers", "2"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "mult_threshold" in res.output and "upkeep energy" in res.output
    for name in ("scenario.yaml", "scenario.resolved.yaml", "timeline.csv", "timeline.parquet",
                 "events.parquet", "summary.json", "run_info.json", "accuracy.png",
                 "upkeep_energy.png", "accuracy_energy.png", "report.html",
                 "COMPLETE"):  # fmt: skip
        assert (first / name).is_file(), name
    for png in ("accuracy.png", "upkeep_energy.png", "accuracy_energy.png"):
        assert (first / png).read_bytes()[:8] == PNG

    summary = json.loads((first / "summary.json").read_text())
    gdc, thr = summary["variants"]["mult_gdc"], summary["variants"]["mult_threshold"]
    assert gdc["eval_labels"] == ["1s", "1h", "6h", "1d"]
    for v in (gdc, thr):
        assert v["seeds"] == 2 and len(v["accuracy_mean"]) == len(v["accuracy_std"]) == 4
        assert all(0.5 < a <= 1.0 for a in v["accuracy_mean"])
        assert 0.0 < v["availability"] <= 1.0
    for v, spent in ((gdc, False), (thr, True)):
        assert (v["upkeep_energy_pj"] > 0, v["corrections"] > 0, v["correction_pulses"] > 0) == (
            spent, spent, spent)  # fmt: skip
    # common random numbers: seed k is the same chip for every variant, so before the first
    # correction both variants see the same devices
    assert gdc["chip_seeds"] == thr["chip_seeds"]
    assert gdc["accuracy_per_seed"][0][0] == thr["accuracy_per_seed"][0][0]

    timeline = pd.read_csv(first / "timeline.csv")
    assert len(timeline[timeline.phase == "before_correction"]) == 2 * 2 * 4
    events = load_run(first).events(["kind"])
    assert {"program", "evaluation", "probe", "correction"} <= set(events["kind"])

    run_to_folder(load_scenario(SMOKE), second, progress=False, workers=1)
    assert (second / "summary.json").read_bytes() == (first / "summary.json").read_bytes()


def test_another_seed_gives_another_summary(tmp_path: Path, tiny_scenario: dict) -> None:
    """The scenario's seed drives the device noise: a different seed, different results."""
    a = run_to_folder(load_scenario(tiny_scenario), tmp_path / "a", progress=False)
    b = run_to_folder(load_scenario({**tiny_scenario, "seed": 6}), tmp_path / "b", progress=False)
    va, vb = a.summary["variants"]["base"], b.summary["variants"]["base"]
    assert va["chip_seeds"] != vb["chip_seeds"]
    assert va["accuracy_per_seed"] != vb["accuracy_per_seed"] or (
        va["upkeep_energy_pj"] != vb["upkeep_energy_pj"]
    )


def _readme_names() -> list[re.Pattern]:
    """The names in the first column of the README's table of what the numbers mean, as
    patterns (``<kind>`` stands for any word)."""
    text = (REPO / "README.md").read_text()
    start = text.index("| name | in | meaning |")
    rows = text[start : text.index("\n\n", start)].splitlines()[2:]
    names = [n for row in rows for n in re.findall(r"`([^`]+)`", row.split(" | ")[0])]
    return [re.compile(re.sub(r"<[^>]+>", r"\\w+", re.escape(n))) for n in names]


def test_every_column_and_field_of_a_run_folder_is_in_the_readme(
    tmp_path: Path, tiny_scenario: dict
) -> None:
    """Each timeline column, event field and summary field a run writes is named in the
    README's table of what the numbers mean."""
    out = run_to_folder(load_scenario(tiny_scenario), tmp_path / "run", progress=False).out_dir
    names = set(pd.read_csv(out / "timeline.csv").columns)
    events = load_run(out).events()  # the ledger's fields, the details as detail.<key>
    names |= {c.partition(".")[0] for c in events.columns}
    summary = json.loads((out / "summary.json").read_text())
    names |= set(summary)
    for v in summary["variants"].values():
        names |= set(v) | set(v["totals"])
    patterns = _readme_names()
    missing = sorted(n for n in names if not any(p.fullmatch(n) for p in patterns))
    assert missing == []
    assert {"upkeep_energy_pj", "measured_s", "energy_probe_pj", "drift_metric_tile0"} <= names


def test_run_reports_an_invalid_scenario(tmp_path: Path) -> None:
    """`pcm-twin run` on a bad file prints the problems with their lines and exits 1."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(SMOKE.read_text().replace("duration: 1d", "duration: 1 fortnight"))
    res = CliRunner().invoke(app, ["run", str(bad), "--out", str(tmp_path / "out")])
    assert res.exit_code == 1
    assert f"{bad}:7: duration: unknown time unit" in res.output
    assert not (tmp_path / "out").exists()


def test_run_against_a_twin_at_an_address(tmp_path: Path, tiny_scenario: dict) -> None:
    """With a twin address the run uses that twin (and leaves no chip behind on it)."""
    from controller.rpc.client import TwinClient
    from device_twin.service.server import ServerOptions, TwinServer

    with TwinServer(ServerOptions(address="127.0.0.1:0")) as server:
        out = run_to_folder(load_scenario(tiny_scenario), tmp_path / "remote",
                            twin_address=server.address, progress=False)  # fmt: skip
        with TwinClient(server.address) as client:
            assert client.list_chips() == []
    local = run_to_folder(load_scenario(tiny_scenario), tmp_path / "local", progress=False)
    assert out.summary == local.summary


def test_a_failing_policy_stops_the_run_with_its_name(tmp_path: Path, tiny_scenario: dict) -> None:
    """A user policy that returns nonsense stops `pcm-twin run` (exit 2) with a message naming
    the policy, and no completion marker is written."""
    import yaml

    scenario = {**tiny_scenario, "controller": {"policy": {
        "name": "tests.controller.scenario.user_policy:NegativeInterval"}}}  # fmt: skip
    f = tmp_path / "bad_policy.yaml"
    f.write_text(yaml.safe_dump(scenario))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["run", str(f), "--out", str(out), "--no-progress",
                                   "--workers", "1"])  # fmt: skip
    assert res.exit_code == 2, res.output
    assert "run failed" in res.output and "negative_interval" in res.output
    assert not (out / "COMPLETE").exists()


def test_run_refuses_an_unknown_variant(tmp_path: Path) -> None:
    """`--variant` must name a variant of the file; otherwise exit 1 listing the variants."""
    res = CliRunner().invoke(app, ["run", str(SMOKE), "--variant", "nope", "--out", str(tmp_path)])
    assert res.exit_code == 1
    assert "no variant nope; variants: mult_gdc, mult_threshold" in res.output


def test_a_two_pair_scenario_runs_with_lsp_corrections(tmp_path: Path, tiny_scenario: dict) -> None:
    """A chip with two pairs per weight runs end to end over the twin's gRPC session: the
    paper's levels on the MSP with a trimmed LSP, corrected through the LSP only."""
    scenario = {
        **tiny_scenario,
        "chip": {"tile_rows": 64, "tile_cols": 64, "pairs_per_weight": 2,
                 "significance_factor": 2.0},
        "mapping": {"quantiser": {"kind": "multiplicative", "lsp_trim": True,
                                  "annealing": {"n_steps": 40}}},
        "controller": {"policy": {"name": "threshold", "params": {
            "interval_s": "2h", "threshold": 0.05, "pairs": "lsp"}}},
    }  # fmt: skip
    run = run_to_folder(load_scenario(scenario), tmp_path / "pairs", progress=False)
    v = run.summary["variants"]["base"]
    assert v["corrections"] > 0 and min(v["accuracy_mean"]) > 0.5
    events = pd.read_parquet(tmp_path / "pairs" / "events.parquet")
    corrections = events[events.kind == "correction"]
    assert set(corrections["detail.pair"]) == {0}
