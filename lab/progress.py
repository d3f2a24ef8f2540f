"""Progress for long CLI work; library code reports via ``(done, total)`` callbacks.

The bar appears at the first report, so a command that refuses its arguments or its store never
draws an empty bar first. On a terminal it is a rich bar with ETA; otherwise (CI, ``nohup``, a log
file) a plain ``description: done/total`` log line at most every :data:`LINE_INTERVAL_S`
seconds, and at the end.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from lab.logs import console as default_console

log = logging.getLogger("elastolab")

#: Wall seconds between plain progress lines when the console is not a terminal.
LINE_INTERVAL_S = 30.0
#: Said before displacement estimation, whose first batch is silent while Numba compiles.
COMPILE_NOTE = ("the first sequences also compile the numba displacement kernel (or load its "
                "cache): up to a minute before progress moves")


@contextmanager
def progress_callback(description: str, *, console: Console | None = None,
                      line_interval_s: float = LINE_INTERVAL_S
                      ) -> Iterator[Callable[[int, int], None]]:
    """A ``(done, total)`` callback that shows progress while the block runs (see module)."""
    out = console or default_console
    bar: Progress | None = None
    task = None
    last_line = [-float("inf"), -1, -1]  # time, done, total of the last plain line

    def update(done: int, total: int) -> None:
        nonlocal bar, task
        if not out.is_terminal:
            now = time.monotonic()
            if now - last_line[0] >= line_interval_s or (done >= total and done != last_line[1]):
                last_line[:] = [now, done, total]
                log.info("%s: %d/%d", description, done, total)
            return
        if bar is None:
            bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                           MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("eta"),
                           TimeRemainingColumn(), console=out, transient=False)
            bar.start()
            task = bar.add_task(description, total=None)
        bar.update(task, completed=done, total=total)  # type: ignore[arg-type]

    try:
        yield update
    finally:
        if bar is not None:
            bar.stop()
