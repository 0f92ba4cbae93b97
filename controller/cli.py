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


if __name__ == "__main__":
    app()
