"""``elastolab session``: run, dry-run and resume acquisition sessions (a typer sub-app).

Thin commands: parse, build, call :mod:`lab.session`. The lead mounts :data:`session_app` in
``lab/cli.py`` (``app.add_typer(session_app, name="session")``).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table as RichTable

from lab.config import ConfigError, load_config
from lab.logs import console
from lab.store import StoreError
from protocols.plan import Plan

session_app = typer.Typer(help="Run and resume acquisition sessions.", no_args_is_help=True,
                          pretty_exceptions_enable=False)

#: Units listed one per line by ``--dry-run`` before the list is abbreviated.
DRY_RUN_LISTED = 40


def _fail(message: str, code: int = 2) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False)
    raise typer.Exit(code)


def _duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d} h {m:02d} min {s:02d} s" if h else f"{m:d} min {s:02d} s"


def print_plan(plan: object, problems: list[str]) -> None:
    """The dry-run report: units per protocol, the unit list, limit problems, duration."""
    assert isinstance(plan, Plan)
    counts = Counter(u.kind for u in plan.units)
    table = RichTable(title="plan", show_lines=False)
    for col in ("#", "unit", "records", "est. s"):
        table.add_column(col)
    listed = plan.units if len(plan.units) <= DRY_RUN_LISTED else plan.units[:DRY_RUN_LISTED]
    for i, u in enumerate(listed):
        n_rec = sum(len(v) for v in u.records.values())
        table.add_row(str(i), u.unit_id, str(n_rec), f"{u.estimated_s:.1f}")
    console.print(table)
    if len(listed) < len(plan.units):
        console.print(f"... and {len(plan.units) - len(listed)} more units")
    console.print("units: " + ", ".join(f"{k} {v}" for k, v in counts.items())
                  + f" (total {len(plan.units)})")
    console.print(f"estimated duration: {_duration(plan.estimate_duration_s())}")
    if problems:
        console.print(f"[red]{len(problems)} limit problem(s):[/red]")
        for p in problems:
            console.print(f"  [red]-[/red] {p}", highlight=False)
    else:
        console.print("[green]every target is within the safety limits[/green]")


def plot_positions(plan: object, path: Path) -> None:
    """Scatter the SWEI probe positions of each block (block frame, mm) into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert isinstance(plan, Plan)
    by_block: dict[str, list[tuple[float, float, int]]] = {}
    for u in plan.units:
        if u.kind == "swei":
            by_block.setdefault(u.phantom_id, []).append(
                (u.params["x_mm"], u.params["y_mm"], u.params["position_index"]))
    n = max(len(by_block), 1)
    fig, axes = plt.subplots(1, n, figsize=(4 * n, 4), squeeze=False)
    for ax, (block, pts) in zip(axes[0], sorted(by_block.items()), strict=False):
        xs, ys, _ = zip(*pts, strict=True)
        ax.scatter(xs, ys, s=12)
        for x, y, i in pts:
            ax.annotate(str(i), (x, y), fontsize=6)
        ax.set_title(block)
        ax.set_xlabel("lateral x (mm)")
        ax.set_ylabel("elevation y (mm)")
        ax.set_aspect("equal")
    if not by_block:
        axes[0][0].set_title("no SWEI positions in this plan")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@session_app.command("run")
def run(
    config: Annotated[Path, typer.Argument(help="session TOML file")],
    store: Annotated[Path, typer.Option("--store", help="new session store (.zarr directory)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the plan, check every "
                                          "target against the limits, estimate the duration; "
                                          "move nothing")] = False,
    plot: Annotated[Path | None, typer.Option("--plot-positions", help="write the SWEI probe "
                                              "positions to this PNG")] = None,
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Run a session: plan it, store the plan, acquire unit by unit (Ctrl-C pauses)."""
    # lazy: lab.session loads every driver and simulator (scipy.signal), ~1 s per CLI call
    from lab.session import SessionError, plan_session, run_session

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        _fail(str(exc))
        return
    try:
        plan, problems = plan_session(cfg)
    except ValueError as exc:
        _fail(f"cannot plan {config}: {exc}")
        return
    if plot is not None:
        plot_positions(plan, plot)
        console.print(f"probe positions written to {plot}")
    if dry_run:
        print_plan(plan, problems)
        raise typer.Exit(1 if problems else 0)
    try:
        result = run_session(cfg, store, show_progress=progress,
                             interactive=sys.stdin.isatty())
    except (SessionError, StoreError) as exc:
        _fail(str(exc))
        return
    _exit_with(result)


@session_app.command("resume")
def resume(
    store: Annotated[Path, typer.Argument(help="session store to continue")],
    progress: Annotated[bool, typer.Option(help="progress bars")] = True,
) -> None:
    """Continue a paused, failed or killed session from its first incomplete unit."""
    # lazy: lab.session loads every driver and simulator (scipy.signal), ~1 s per CLI call
    from lab.session import SessionError, resume_session

    try:
        result = resume_session(store, show_progress=progress, interactive=sys.stdin.isatty())
    except (SessionError, StoreError, ConfigError) as exc:
        _fail(str(exc))
        return
    _exit_with(result)


def _exit_with(result: object) -> None:
    from lab.session import SessionResult  # lazy, as in run()

    assert isinstance(result, SessionResult)
    colour = {"complete": "green", "paused": "yellow"}.get(result.status, "red")
    console.print(f"[{colour}]{result.status}[/{colour}]: {result.message} "
                  f"({result.completed}/{result.total} units) - {result.store_path}",
                  highlight=False)
    if result.status == "paused":
        console.print(f"continue with: elastolab session resume {result.store_path}")
    raise typer.Exit({"complete": 0, "paused": 3}.get(result.status, 1))
