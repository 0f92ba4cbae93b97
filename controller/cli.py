"""The ``pcm-twin`` command line."""

from __future__ import annotations

import typer

app = typer.Typer(help="pcm-twin: a PCM analog-AI chip emulator with a digital-twin service.",
                  no_args_is_help=True, add_completion=False)  # fmt: skip


@app.callback()
def main() -> None:
    """pcm-twin: study how often a PCM chip must correct its drifting weights, and at what cost."""


@app.command()
def demo(seed: int = typer.Option(0, help="seed of the chip and the weights")) -> None:
    """Program random weights on a tile and read them at 1 s, 1 h, 1 day, 1 year."""
    from controller.demo import print_demo, run_demo

    print_demo(run_demo(seed=seed))


@app.command("pulse-curve")
def pulse_curve_cmd(
    pulses: str = typer.Option("1,5,10,20,50", help="comma-separated pulse counts"),
    seed: int = typer.Option(0),
) -> None:
    """Mean conductance after n SET pulses from RESET (aihwkit PCMPresetDevice, 102,400 devices)."""
    from rich.console import Console
    from rich.table import Table

    from device_twin.config import ChipConfig
    from device_twin.pulses import pulse_curve

    counts = [int(p) for p in pulses.split(",")]
    table = Table(title="SET pulses from RESET (ExpStep, aihwkit PCMPresetDevice)")
    for col in ("pulses", "mean g (uS)", "std (uS)", "p10 (uS)", "p90 (uS)"):
        table.add_column(col, justify="right")
    for r in pulse_curve(ChipConfig(tile_rows=320, tile_cols=320), counts, seed=seed):
        table.add_row(str(r["pulses"]), f"{r['g_mean_us']:.2f}", f"{r['g_std_us']:.2f}",
                      f"{r['g_p10_us']:.2f}", f"{r['g_p90_us']:.2f}")  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    app()
