"""``elastolab info``: a summary table of a session store."""

from __future__ import annotations

from pathlib import Path

import zarr
from rich.console import Console
from rich.table import Table as RichTable

from lab.eta import format_duration
from lab.live import read_state
from lab.store import LOG_DIR, SessionStore


def _nbytes_on_disk(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def print_info(path: str | Path, console: Console) -> None:
    """Print provenance, tables (records, rows, arrays) and other arrays of the store."""
    store = SessionStore.open(path, mode="r")
    attrs = store.attrs
    console.print(f"[bold]{store.path}[/bold]  ({attrs.get('kind', 'session')})")
    for key in ("created_utc", "stopped_utc", "status", "elastolab_version", "git_commit", "host",
                "plan_hash"):
        if attrs.get(key) is not None:
            console.print(f"  {key:18s} {attrs[key]}")
    if store.plan is not None and "progress" in attrs:
        print_progress(path, console)
    table = RichTable(title="arrays", show_lines=False)
    for col in ("array", "dims", "shape", "dtype", "records", "on disk"):
        table.add_column(col, justify="right" if col in ("records", "on disk") else "left")
    tables = set(store.tables())

    def walk(group: zarr.Group) -> None:
        for _, member in sorted(group.members()):
            if isinstance(member, zarr.Group):
                if member.path != LOG_DIR:
                    walk(member)
                continue
            if member.basename.startswith("."):
                continue
            parent = member.path.rpartition("/")[0]
            n_rec = str(len(store.table(parent))) if parent in tables else ""
            dims = ", ".join(member.metadata.dimension_names or ())  # type: ignore[union-attr]
            table.add_row(member.path, dims, str(member.shape), str(member.dtype), n_rec,
                          _fmt_bytes(_nbytes_on_disk(store.path / member.path)))

    walk(store.root)
    console.print(table)
    for group in ("interruptions",):
        events = store.events(group)
        if events:
            console.print(f"  {group}: {len(events)} (last: {events[-1].get('reason', '')})")


def print_progress(path: str | Path, console: Console) -> None:
    """Units done k/N per protocol, the current unit (running), the last unit and the last fault.

    Reads the live record of a running session (``logs/live-state.json``) when there is one,
    else the store's own progress attributes.
    """
    state = read_state(Path(path))
    protos = ", ".join(f"{k} {v['done']}/{v['total']}" for k, v in state["protocols"].items())
    console.print(f"  {'progress':18s} {state['k']}/{state['n']} units "
                  f"({100 * float(state.get('fraction_done') or 0):.0f} % of the plan's lab time"
                  f"{'; ' + protos if protos else ''})", highlight=False)
    current = state.get("current") or {}
    if state.get("status") == "running" and current.get("unit"):
        age = state.get("age_s")
        note = (f", no update for {age:.0f} s: is the runner alive?" if state.get("stale")
                else f", updated {age:.0f} s ago" if age is not None else "")
        console.print(f"  {'current unit':18s} {current['unit']} ({current.get('phase', '')}"
                      f"{note}); ETA {format_duration(state.get('eta_s'))}", highlight=False)
    if state.get("last_unit"):
        console.print(f"  {'last unit':18s} {state['last_unit']}", highlight=False)
    faults = [e for e in state.get("events", []) if e.get("kind") == "fault"]
    if faults:
        f = faults[-1]
        console.print(f"  {'last fault':18s} {f.get('unit')}: {f.get('error_type', '')} "
                      f"{f.get('error', '')} ({f.get('action', '')}; {len(faults)} in all)",
                      highlight=False)
