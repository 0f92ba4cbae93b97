"""The ``pcm-twin`` command line.

Help is written for a newcomer: every option that takes a value names it (``--out DIR``,
``--workers N``), flags show no value type (typer labels them ``<bool>``, as if they took
one: :class:`_Help` removes that), and an argument reads ``FILE`` when required and
``[FILE]`` when not, in the usage line as in the argument list.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# gRPC's C core logs at INFO to stderr when so configured (e.g. "Got goaway [2] ..." when an
# embedded twin stops while a stream is open): not for a researcher's terminal. Inherited by
# the worker processes; a GRPC_VERBOSITY the user set is kept.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


class _Help:
    """Help output fixes shared by commands and groups (see the module docstring)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for p in params:
            if isinstance(p, TyperOption) and p.is_flag and p.metavar is None:
                p.metavar = ""  # a flag takes no value: show no type
            if isinstance(p, TyperArgument) and p.nargs != 1:
                p.display_type_rich = lambda ctx: None  # FILE... says it: not <list[Path]>
        return params

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = super().collect_usage_pieces(ctx)  # type: ignore[misc]
        for p in self.get_params(ctx):
            if isinstance(p, TyperArgument):
                name = p.display_name_raw
                if p.nargs != 1 and not name.endswith("..."):
                    name += "..."
                typer_form = p._usage_display_name()
                plain = name if p.required else f"[{name}]"
                pieces = [plain if piece == typer_form else piece for piece in pieces]
        return pieces


class _Command(_Help, TyperCommand):
    pass


class _Group(_Help, TyperGroup):
    pass


def _version(show: bool) -> None:
    if show:
        from importlib.metadata import version

        typer.echo(f"pcm-twin {version('pcm-twin')}")
        raise typer.Exit(0)


app = typer.Typer(help="pcm-twin: a PCM analog-AI chip emulator with a digital-twin service.",
                  no_args_is_help=True, add_completion=False, cls=_Group)  # fmt: skip


def command(name: str | None = None, **kw: Any) -> Callable[[Callable[..., Any]], Any]:
    """``app.command`` with the help fixes."""
    return app.command(name, cls=_Command, **kw)


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="print the version"),
    ] = False,
) -> None:
    """pcm-twin: study how often a PCM chip must correct its drifting weights, and at what cost."""


@command()
def demo(seed: int = typer.Option(0, metavar="N", help="seed of the chip and the weights")) -> None:
    """Program random weights on a tile and read them at 1 s, 1 h, 1 day, 1 year."""
    from controller.scenario.demo import print_demo, run_demo

    print_demo(run_demo(seed=seed))


@command("pulse-curve")
def pulse_curve_cmd(
    pulses: str = typer.Option(
        "1,5,10,20,50", metavar="N,N,...", help="comma-separated pulse counts"
    ),
    seed: int = typer.Option(0, metavar="N", help="seed of the devices"),
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


@command("devices")
def devices_cmd(
    json_out: Annotated[
        bool, typer.Option("--json", help="print every parameter as JSON data")
    ] = False,
) -> None:
    """The device families a chip can have (ChipConfig ``device.family``), with their sources
    and default parameters."""
    import json

    from rich.console import Console
    from rich.table import Table

    from device_twin.families import describe_families

    families = describe_families()
    if json_out:
        typer.echo(json.dumps(families, indent=2))
        return
    table = Table(
        title="Device families (chip config: device: {family: NAME, ...})",
        caption="model: aihwkit's <model>NoiseModel; pulses: its <pulses>PresetDevice; "
        "g_max in uS, t_read in ns, SET/RESET pulse energy in pJ",
    )
    for col in ("family", "model", "pulses", "g_max", "t_read", "SET/RESET"):
        table.add_column(col, no_wrap=True)
    for f in families:
        table.add_row(f["family"], f["aihwkit_model"].removesuffix("NoiseModel"),
                      f["pulse_preset"].removesuffix("PresetDevice"), f"{f['g_max_us']:g}",
                      f"{f['t_read_s'] * 1e9:g}",
                      f"{f['set_pulse_pj']:g} / {f['reset_pulse_pj']:g}")  # fmt: skip
    console = Console()
    console.print(table)
    for f in families:
        params = {k: v for k, v in f["parameters"].items() if k not in ("pulse", "write_energy")}
        console.print(f"[bold]{f['family']}[/bold]: {f['sources']}")
        console.print("  " + ", ".join(f"{k}={v}" for k, v in params.items()), soft_wrap=True)
    console.print("`pcm-twin devices --json` prints every parameter, pulse response included.")


# --- twin: the CrossbarTwin gRPC service ---------------------------------------------------
# --- options both servers take (pcmtwin.serving, pcmtwin.credentials) ---------------------
TokenFile = Annotated[
    Path | None,
    typer.Option(
        metavar="FILE", help="file holding the bearer token (default: $PCM_TWIN_TOKEN, if set)"
    ),
]
TlsCert = Annotated[
    Path | None, typer.Option(metavar="FILE", help="PEM certificate chain: serve TLS")
]
TlsKey = Annotated[Path | None, typer.Option(metavar="FILE", help="PEM private key of --tls-cert")]
Insecure = Annotated[
    bool, typer.Option(help="allow a non-loopback bind without token or TLS (anyone can connect)")
]
MaxMessageBytes = Annotated[int, typer.Option(metavar="BYTES", help="largest message, either way")]
PortFile = Annotated[
    Path | None, typer.Option(metavar="FILE", help="write the bound port here once bound")
]
LogLevel = Annotated[str, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING, ...")]
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024**2  # pcmtwin.codec's (not imported here: it loads torch)


def _run_server(command: str, log_level: str, run: Callable[[], None]) -> None:
    """Log at ``log_level`` and ``run`` a server; a refused option or a busy or unreadable
    file ends the command with status 2 and says why."""
    import logging

    from device_twin.service.persistence import StateStoreError
    from pcmtwin.credentials import ConfigError

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        run()
    except (ConfigError, StateStoreError, OSError) as exc:
        typer.echo(f"pcm-twin {command}: {exc}", err=True)
        raise typer.Exit(2) from None


twin_app = typer.Typer(help="The CrossbarTwin gRPC service (the device twin).",
                       no_args_is_help=True, cls=_Group)  # fmt: skip
app.add_typer(twin_app, name="twin")


@twin_app.command("serve", cls=_Command)
def twin_serve(
    address: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="host:port to bind; port 0 picks one")
    ] = ("127.0.0.1:50051"),
    state_dir: Annotated[
        Path | None, typer.Option(metavar="DIR", help="durable state (write-ahead log, snapshots)")
    ] = None,
    token_file: TokenFile = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    insecure: Insecure = False,
    max_message_bytes: MaxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    max_chips: Annotated[
        int, typer.Option(metavar="N", help="chips this server holds at most")
    ] = 64,
    state_budget_bytes: Annotated[
        int,
        typer.Option(
            metavar="BYTES", help="device-state memory (16 bytes per device) over all chips"
        ),
    ] = 4 * 1024**3,
    max_workers: Annotated[int, typer.Option(metavar="N", help="threads serving calls")] = 8,
    port_file: PortFile = None,
    log_level: LogLevel = "INFO",
) -> None:
    """Serve CrossbarTwin until SIGTERM/SIGINT (then finish calls, write a snapshot, stop)."""

    def run() -> None:
        from device_twin.service.server import ServerOptions, serve
        from pcmtwin.credentials import load_token

        options = ServerOptions(
            address=address, state_dir=state_dir, token=load_token(token_file),
            tls_cert=tls_cert, tls_key=tls_key, insecure=insecure,
            max_message_bytes=max_message_bytes, max_chips=max_chips,
            state_budget_bytes=state_budget_bytes, max_workers=max_workers,
        )  # fmt: skip
        serve(options, port_file=port_file)

    _run_server("twin serve", log_level, run)


# --- chip: the ChipHost gRPC service (the emulated firmware, for host software) ------------
chip_app = typer.Typer(help="The ChipHost gRPC service: one emulated chip for host software.",
                       no_args_is_help=True, cls=_Group)  # fmt: skip
app.add_typer(chip_app, name="chip")


@chip_app.command("serve", cls=_Command)
def chip_serve(
    twin: Annotated[str, typer.Option(metavar="HOST:PORT", help="CrossbarTwin address")],
    address: Annotated[
        str, typer.Option(metavar="HOST:PORT", help="host:port to bind; port 0 picks one")
    ] = ("127.0.0.1:50052"),
    realtime: Annotated[
        float | None,
        typer.Option(
            help="pace device time: simulated seconds per wall second (1.0 = real "
            "time); default: as fast as possible, time moves on AdvanceTime"
        ),
    ] = None,
    token_file: TokenFile = None,
    tls_cert: TlsCert = None,
    tls_key: TlsKey = None,
    insecure: Insecure = False,
    twin_token_file: Annotated[
        Path | None,
        typer.Option(metavar="FILE", help="the twin's bearer token (default: the same as ours)"),
    ] = None,
    twin_root_cert: Annotated[
        Path | None, typer.Option(metavar="FILE", help="PEM root certificate of a TLS twin")
    ] = None,
    allow_user_policies: Annotated[
        bool,
        typer.Option(help="let clients load policies by dotted path (imports code on this host)"),
    ] = False,
    max_message_bytes: MaxMessageBytes = DEFAULT_MAX_MESSAGE_BYTES,
    port_file: PortFile = None,
    log_level: LogLevel = "INFO",
    dashboard: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="also serve a live view of the chip here (a web page: status, drift per tile "
            "and layer, energy, events as they happen), with this server's token, TLS and "
            "bind rules",
        ),
    ] = None,
) -> None:
    """Serve ChipHost over a CrossbarTwin until SIGTERM/SIGINT."""

    def run() -> None:
        from controller.host.service import HostServerOptions, serve
        from pcmtwin.credentials import ConfigError, load_token

        token = load_token(token_file)
        twin_token = load_token(twin_token_file) if twin_token_file else token
        if realtime is not None and not realtime > 0:
            raise ConfigError(f"--realtime must be > 0, got {realtime}")
        options = HostServerOptions(
            twin_address=twin, address=address, realtime=realtime, token=token,
            tls_cert=tls_cert, tls_key=tls_key, insecure=insecure, twin_token=twin_token,
            twin_root_cert=twin_root_cert, allow_user_policies=allow_user_policies,
            max_message_bytes=max_message_bytes, dashboard=dashboard,
        )  # fmt: skip
        serve(options, port_file=port_file)

    _run_server("chip serve", log_level, run)


EXIT_INTERRUPTED = 130  # controller.scenario.commands' (not imported here: it loads pandas)


def _interruptible(command: Callable[[], int]) -> int:
    """``command()``'s exit code; Ctrl-C before the command handles it itself (while its
    modules load: seconds) ends it too, saying so, with nothing to resume."""
    try:
        return command()
    except KeyboardInterrupt:
        typer.echo("interrupted (nothing was started)", err=True)
        return EXIT_INTERRUPTED


def _exit(code: int) -> None:
    """End a command with ``code``. After Ctrl-C (the resume hint printed, the workers
    stopped, every finished run checkpointed) exit at once: tearing down torch and gRPC in
    the interpreter's finalisation took seconds more (2.4 s measured on a loaded machine)."""
    if code == EXIT_INTERRUPTED:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    raise typer.Exit(code)


# --- scenarios: schema, validate, run, sweep (controller/scenario/commands.py) -----------------
@command("schema")
def schema_cmd(
    out: Annotated[
        Path | None, typer.Option(metavar="FILE", help="write to this file instead of stdout")
    ] = None,
) -> None:
    """Print the JSON Schema of scenario files."""
    from controller.scenario.commands import schema_command

    raise typer.Exit(schema_command(out))


@command("policies")
def policies_cmd(
    names: Annotated[
        list[str] | None,
        typer.Argument(metavar="NAME...", help="only these policies (default: every built-in)"),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the parameters as JSON data")
    ] = False,
) -> None:
    """List the built-in correction policies and their parameters (type, unit, default)."""
    from controller.scenario.commands import make_console, policies_command

    raise typer.Exit(policies_command(names or [], as_json, make_console()))


@command("validate")
def validate_cmd(
    files: Annotated[list[Path], typer.Argument(metavar="FILE...", help="scenario files (YAML)")],
) -> None:
    """Check scenario files: every problem with its field path and line number."""
    from controller.scenario.commands import make_console, validate_command

    raise typer.Exit(validate_command(files, make_console()))


@command("run")
def run_cmd(
    file: Annotated[
        Path | None, typer.Argument(metavar="FILE", help="scenario file (YAML); none with --resume")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="run folder (default: results/<scenario name>/)"),
    ] = None,
    twin: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="CrossbarTwin address (default: an embedded twin)"),
    ] = None,
    variant: Annotated[
        list[str] | None, typer.Option(metavar="NAME", help="run only this variant (repeatable)")
    ] = None,
    progress: Annotated[bool, typer.Option(help="progress bar over simulated time")] = True,
    workers: Annotated[
        int | None,
        typer.Option(
            metavar="N", help="processes running (variant, seed) runs at once (default: CPUs)"
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            metavar="RUN_DIR",
            help="finish the interrupted run in this run folder from its checkpoint (the "
            "(variant, seed) runs already done are kept, the others run from their start)",
        ),
    ] = None,
) -> None:
    """Run a scenario: every variant and seed, then a summary table and the run folder.

    Each (variant, seed) run is checkpointed in the run folder as it finishes:
    `pcm-twin run --resume RUN_DIR` finishes an interrupted run with the same results."""

    def run() -> int:
        from controller.scenario.commands import make_console, run_command

        return run_command(file, out, twin, variant, make_console(), progress, workers, resume)

    _exit(_interruptible(run))


@command("sweep")
def sweep_cmd(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="scenario file (YAML)")],
    grid: Annotated[
        list[str] | None,
        typer.Option(
            metavar="KEY=V1,V2,...",
            help="a dotted key into the scenario and its values (repeatable; adds to or "
            "replaces the file's sweep.grid)",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="sweep folder (default: results/<name>-sweep/)"),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(metavar="N", help="processes running grid points at once (default: CPUs)"),
    ] = None,
    dask: Annotated[
        str | None,
        typer.Option(metavar="HOST:PORT", help="Dask scheduler: run the points on that cluster"),
    ] = None,
    twin: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT", help="CrossbarTwin address (default: one embedded per run)"
        ),
    ] = None,
) -> None:
    """Run every combination of a grid of scenario values (resumes: complete runs are kept)."""

    def sweep() -> int:
        from controller.scenario.commands import make_console, sweep_command

        return sweep_command(file, grid or [], out, workers, dask, twin, make_console())

    _exit(_interruptible(sweep))


# --- results: report, compare (controller/scenario/report/) ---------------------------------
@app.command("report")
def report_cmd(
    folder: Annotated[Path, typer.Argument(help="a run folder, or a sweep folder")],
    out: Annotated[
        Path | None, typer.Option(help="write here (default: FOLDER/report.html)")
    ] = None,
) -> None:
    """Write report.html of a run (or sweep) folder: one self-contained page, opens offline.

    `pcm-twin run` and `pcm-twin sweep` write it themselves; this writes it again (e.g. for
    a folder of an older version)."""
    from controller.scenario.commands import make_console
    from controller.scenario.report.commands import report_command

    raise typer.Exit(report_command(folder, out, make_console()))


@app.command("compare")
def compare_cmd(
    folders: Annotated[list[Path], typer.Argument(help="two or more run folders")],
    out: Annotated[Path, typer.Option(help="the page to write")] = Path("compare.html"),
) -> None:
    """One page with the summary table and plots of several runs overlaid (runs of different
    scenarios or versions: each variant of each run is a line of its own)."""
    from controller.scenario.commands import make_console
    from controller.scenario.report.commands import compare_command

    raise typer.Exit(compare_command(folders, out, make_console()))


if __name__ == "__main__":
    app()
