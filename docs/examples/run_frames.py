"""A run folder as pandas frames: what a notebook starts from (the test suite runs this).

    .venv/bin/python docs/examples/run_frames.py results/smoke

Prints the summary per variant, the accuracy over time (before and right after the
corrections of each instant), the energy each kind of firmware action cost, and the drift
the monitor measured per tile and layer.
"""

import sys

import pandas as pd

from controller.scenario.report import load_run

pd.set_option("display.width", 120)
run = load_run(sys.argv[1] if len(sys.argv) > 1 else "results/smoke")
print(f"{run.name}: {len(run.variants)} variant(s): {', '.join(run.variants)}")

# one row per variant: accuracy at each evaluation time (mean and std over seeds), upkeep energy...
print(run.summary_frame[["policy", "seeds", "accuracy_loss", "upkeep_energy_pj", "corrections"]])

# long form: one row per variant, seed, evaluation time and phase
acc = run.accuracy.pivot_table(
    index=["variant", "scheduled_s", "label"], columns="phase", values="accuracy", aggfunc="mean"
)
print((100 * acc).round(1))

# the ledger: only the columns and kinds asked for are read
events = run.events(["variant", "seed", "kind", "energy_pj", "controller_energy_pj"])
events["energy_uj"] = (events["energy_pj"] + events["controller_energy_pj"]) / 1e6
per_kind = events.groupby(["variant", "kind"], observed=True)["energy_uj"].sum()
print((per_kind / events.groupby("variant", observed=True)["seed"].nunique()).round(3))

# drift per tile, labelled by the layer it holds
probes = run.events(["variant", "tile", "start_s", "detail.drift_metric"], kinds=["probe"])
for variant, layers in run.tile_layers.items():
    mine = probes[probes["variant"] == variant]
    if len(mine):
        drift = mine.groupby("tile")["detail.drift_metric"].mean()
        named = {f"tile {t} ({layers.get(t, '?')})": round(d, 4) for t, d in drift.items()}
        print(f"{variant}: mean drift metric per tile: {named}")
