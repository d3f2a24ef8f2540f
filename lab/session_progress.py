"""The runner's console progress: per-protocol bars on a terminal, plain lines elsewhere.

Both views read the :class:`lab.live.LiveState` model the runner keeps (the one the browser
monitor reads from disk), so console, log and monitor show the same k/N and ETA.

* On a terminal: one bar for the session weighted by the plan's lab-time estimates with the ETA of
  :mod:`lab.eta` (rich's speed-based ETA stayed ``-:--:--`` for units of minutes), one bar per
  protocol counting its units, and a summary line (unit, phase, push, force, last record).
* Not a terminal (CI, ``nohup``, a pipe into a log file): a plain ``progress:`` log line when a
  unit ends, at most every ``line_interval_s`` wall seconds, and always for the last unit.
"""

from __future__ import annotations

import logging
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

from lab.eta import format_duration
from lab.live import LiveState

log = logging.getLogger("lab.session")

#: Wall seconds between plain progress lines when stdout is not a terminal.
LINE_INTERVAL_S = 30.0
_SCALE = 1000  # the session bar counts thousandths of the estimated lab time


class _EtaColumn(ProgressColumn):
    """The ``eta`` field of a task (set by :class:`SessionConsole`), blank where absent."""

    def render(self, task: Task) -> Text:
        eta = task.fields.get("eta")
        return Text("" if eta is None else f"ETA {eta}", style="progress.remaining")


class _Bars(Progress):
    summary: str = ""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        yield Text(self.summary, overflow="ellipsis", no_wrap=True)


def summary_line(state: dict[str, Any]) -> str:
    """``unit k/N id | phase | push | force | last`` from a live-state snapshot."""
    cur = state.get("current") or {}
    parts = [f"unit {cur.get('k', state.get('k', 0))}/{state.get('n', '?')} "
             f"{cur.get('unit', '')}".rstrip(), str(cur.get("phase", ""))]
    if cur.get("push"):
        parts.append(f"push {cur['push']}")
    if cur.get("force_n") is not None:
        parts.append(f"force {cur['force_n']:.3f} N")
    if cur.get("last"):
        parts.append(f"last {cur['last']}")
    return " | ".join(p for p in parts if p)


def progress_line(state: dict[str, Any]) -> str:
    """One plain progress line: done/total, per protocol, elapsed, ETA."""
    protos = ", ".join(f"{k} {v['done']}/{v['total']}"
                       for k, v in (state.get("protocols") or {}).items())
    return (f"progress: {state.get('k', 0)}/{state.get('n', 0)} units "
            f"({100 * float(state.get('fraction_done') or 0):.0f} % of the plan's lab time; "
            f"{protos}) elapsed {format_duration(state.get('elapsed_s'))} "
            f"ETA {format_duration(state.get('eta_s'))} - last {state.get('last_unit') or '-'}")


class SessionConsole:
    """Console view of a :class:`LiveState` (a context manager around the run).

    Parameters
    ----------
    live : LiveState
    console : rich.console.Console
    enabled : bool
        False shows nothing.
    line_interval_s : float, optional
        Wall seconds between plain lines when ``console`` is not a terminal.
    """

    def __init__(self, live: LiveState, *, console: Console, enabled: bool,
                 line_interval_s: float = LINE_INTERVAL_S) -> None:
        self.live = live
        self.enabled = enabled
        self.terminal = console.is_terminal
        self.line_interval_s = line_interval_s
        self._last_line_s = -float("inf")
        self._bars: _Bars | None = None
        self._tasks: dict[str, Any] = {}
        if enabled and self.terminal:
            self._bars = _Bars(TextColumn("[bold]{task.description}"), BarColumn(),
                               TextColumn("{task.fields[count]}"), TimeElapsedColumn(),
                               _EtaColumn(), console=console)

    def __enter__(self) -> SessionConsole:
        if self._bars is not None:
            state = self.live.snapshot()
            self._bars.start()
            self._tasks["session"] = self._bars.add_task(
                str(state.get("name", "session")), total=_SCALE, count="", eta=None)
            for kind, counts in state["protocols"].items():
                self._tasks[kind] = self._bars.add_task(f"  {kind}", total=counts["total"],
                                                        count="", eta=None)
            self.refresh()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._bars is not None:
            self.refresh()
            self._bars.stop()

    def refresh(self) -> None:
        """Redraw the bars (terminal) from the live model."""
        if self._bars is None:
            return
        state = self.live.snapshot()
        self._bars.update(self._tasks["session"],
                          completed=round(_SCALE * state["fraction_done"]),
                          count=f"{state['k']}/{state['n']}",
                          eta=format_duration(state["eta_s"]))
        for kind, counts in state["protocols"].items():
            if kind in self._tasks:
                self._bars.update(self._tasks[kind], completed=counts["done"],
                                  count=f"{counts['done']}/{counts['total']}")
        self._bars.summary = summary_line(state)
        self._bars.refresh()

    def unit_done(self) -> None:
        """A unit ended: redraw, or (not a terminal) log a plain line when one is due."""
        if not self.enabled:
            return
        if self._bars is not None:
            self.refresh()
            return
        state = self.live.snapshot()
        now = time.monotonic()
        if now - self._last_line_s >= self.line_interval_s or state["k"] >= state["n"]:
            self._last_line_s = now
            log.info("%s", progress_line(state))
