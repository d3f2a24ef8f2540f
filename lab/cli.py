"""The ``elastolab`` command line. Commands are thin: parse, build, call a library function."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from lab.logs import console, setup_logging

log = logging.getLogger("elastolab")

app = typer.Typer(
    name="elastolab",
    help="Automated ultrasound-elasticity experiments on gelatin phantoms: run sessions on real or "
    "simulated instruments, check stores, analyse datasets.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
session_app = typer.Typer(help="Run and resume acquisition sessions.", no_args_is_help=True)
analyze_app = typer.Typer(help="Analyse a session store in place.", no_args_is_help=True)
sim_app = typer.Typer(help="Run instrument simulators standalone.", no_args_is_help=True)
config_app = typer.Typer(help="Check configuration files.", no_args_is_help=True)
app.add_typer(session_app, name="session")
app.add_typer(analyze_app, name="analyze")
app.add_typer(sim_app, name="sim")
app.add_typer(config_app, name="config")

StorePath = Annotated[Path, typer.Argument(help="session store (a .zarr directory)")]


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="warnings and errors only")] = False,
) -> None:
    setup_logging(verbose=verbose, quiet=quiet)


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


# -- store -----------------------------------------------------------------------------------------
@app.command()
def verify(
    store: StorePath,
    repair: Annotated[bool, typer.Option(help="trim rows left by interrupted writes and "
                                               "remove temporary files (never committed data)")]
    = False,
) -> None:
    """Check a store: index vs arrays, missing or truncated chunks, NaN/Inf, schema.

    Exit code 0 only when the store is clean.
    """
    from lab.verify import verify_store

    report = verify_store(store, repair=repair)
    for line in report.repaired:
        console.print(f"[yellow]repaired[/yellow] {line}", highlight=False)
    for problem in report.problems:
        style = "red" if problem.severity == "error" else "yellow"
        console.print(f"[{style}]{problem}[/{style}]", highlight=False)
    verdict = "[green]clean[/green]" if report.clean else "[red]NOT clean[/red]"
    console.print(f"{store}: {verdict} ({report.checked_arrays} arrays, "
                  f"{report.checked_chunks} chunks checked)")
    raise typer.Exit(0 if report.clean else 1)


@app.command()
def info(store: StorePath) -> None:
    """Print a summary of a store: provenance, tables, arrays, sizes."""
    from lab.info import print_info
    from lab.store import StoreError

    try:
        print_info(store, console)
    except StoreError as exc:
        _fail(str(exc))


@config_app.command("check")
def config_check(path: Annotated[Path, typer.Argument(help="session TOML file")]) -> None:
    """Validate a session configuration file and print what it would run."""
    from lab.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as exc:
        _fail(str(exc))
        return
    console.print(f"[green]{path}: valid[/green] - session {cfg.name!r}, "
                  f"{len(cfg.phantoms)} phantoms, protocols: "
                  f"{', '.join(p.kind for p in cfg.protocols) or 'none'}")
