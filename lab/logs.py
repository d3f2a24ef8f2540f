"""Logging set-up: rich console output and, when a store is open, a log file inside it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.logging import RichHandler

#: One console for logs and progress bars, so bars and log lines never interleave badly.
console = Console(stderr=True, soft_wrap=True)

_FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(message)s"


class _PlainHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """One unwrapped line per record on the console's current stream (not a terminal)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(_PLAIN_FORMAT))

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return console.file

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def setup_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    """Console logging: INFO by default, DEBUG with ``verbose``, WARNING with ``quiet``.

    On a terminal, rich's handler; otherwise (CI, ``nohup``, a log file) plain lines that are
    never wrapped, so each record stays one line for ``grep``.
    """
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, RichHandler | _PlainHandler):
            root.removeHandler(old)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(console=console, show_path=False, rich_tracebacks=False,
                              markup=False, log_time_format="[%X]")
    else:
        handler = _PlainHandler()
    handler.setLevel(level)
    root.addHandler(handler)
    # The root passes INFO (for the log file) or DEBUG; each handler filters for itself.
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("distributed", "asyncio", "matplotlib", "PIL", "numcodecs", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def attach_log_file(path: Path) -> logging.Handler:
    """Also log (INFO and above) to ``path`` (appending); returns the handler to detach later."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(logging.Formatter(_FILE_FORMAT))
    root = logging.getLogger()
    root.addHandler(handler)
    if root.getEffectiveLevel() > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def detach_log_file(handler: logging.Handler) -> None:
    logging.getLogger().removeHandler(handler)
    handler.close()
