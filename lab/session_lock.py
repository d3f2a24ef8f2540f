"""One runner per store: a lock file ``STORE/logs/runner.lock`` held while a session runs.

Two ``run`` / ``resume`` processes writing one store would interleave records and progress (and
a resume trims the other's uncommitted rows). :func:`runner_lock` creates the lock file with
``O_CREAT | O_EXCL`` (atomic on local file systems) and writes who holds it: pid, host, process
start time and the time it was taken. An existing lock is

* **live** when its host is this host and its pid runs the same process (same start time):
  refused, naming the holder;
* **stale** when its host is this host and the pid is gone (or is another process now, after pid
  reuse): taken over with a warning (the holder was killed; the runner's resume logic already
  copes with what it left behind);
* **foreign** when it was taken on another host (a store on a shared drive): refused, because
  this host cannot tell whether that process still runs; the message says how to clear it.

The lock is removed when the runner ends, if it is still ours. Two processes taking over the
same stale lock at the same instant could both succeed (each removes the stale file and creates
its own; the file system cannot make remove-and-create one step without ``flock``); the window is
a few microseconds after a crash, and it is documented rather than papered over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from lab.store import LOG_DIR, StoreError

log = logging.getLogger(__name__)

LOCK_NAME = "runner.lock"


class StoreLockedError(StoreError):
    """Another runner holds the store (or may hold it: a lock from another host)."""


def lock_path(store_path: str | os.PathLike[str]) -> Path:
    """Where the runner lock of the store at ``store_path`` lives."""
    return Path(store_path) / LOG_DIR / LOCK_NAME


def _process_start(pid: int) -> float | None:
    """Start time of process ``pid`` (s since the epoch), None if it does not exist."""
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return None
    except psutil.AccessDenied:
        return -1.0  # it exists but we may not look at it: treat as alive, start unknown


def _holder() -> dict[str, Any]:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
            "since_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}


def _read(path: Path) -> dict[str, Any] | None:
    """The holder recorded in ``path``; None if the file vanished meanwhile."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("pid"), int):
            raise ValueError("no pid")
        return data
    except ValueError:
        raise StoreLockedError(
            f"{path} exists but is not a readable runner lock ({text[:80]!r}); if no runner "
            f"is using this store, delete {path} and try again") from None


def _is_alive(holder: dict[str, Any]) -> bool:
    """Whether the holder (recorded on this host) still runs."""
    start = _process_start(int(holder["pid"]))
    if start is None:
        return False
    recorded = holder.get("process_start")
    if start < 0 or recorded is None:
        return True
    return abs(start - float(recorded)) < 1.0  # same pid, other start time: pid reused


def _describe(holder: dict[str, Any]) -> str:
    return (f"pid {holder.get('pid')} on host {holder.get('host')!r} "
            f"(since {holder.get('since_utc', '?')})")


def acquire(store_path: str | os.PathLike[str]) -> dict[str, Any]:
    """Take the runner lock of the store at ``store_path``; returns what was written.

    Raises
    ------
    StoreLockedError
        A live runner on this host holds it, or a runner on another host took it.
    StoreError
        ``store_path`` has no ``logs`` directory (not a session store).
    """
    path = lock_path(store_path)
    if not path.parent.is_dir():
        raise StoreError(f"{Path(store_path)} has no {LOG_DIR}/ directory; not a session store")
    me = _holder()
    for _ in range(3):  # the lock may vanish or turn stale between our steps
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read(path)
            if holder is None:
                continue
            if holder.get("host") != me["host"]:
                raise StoreLockedError(
                    f"{Path(store_path)} is locked by a session runner on another host: "
                    f"{_describe(holder)}. If no runner is active there (it crashed or was "
                    f"killed), delete {path} and try again") from None
            if _is_alive(holder):
                raise StoreLockedError(
                    f"{Path(store_path)} is in use by another session runner: "
                    f"{_describe(holder)}; wait for it to finish, or pause it with Ctrl-C and "
                    "resume from one process") from None
            log.warning("taking over the runner lock of %s: its holder %s is no longer running",
                        store_path, _describe(holder))
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return me
    raise StoreLockedError(f"could not take the runner lock {path}: it kept changing (another "
                           "runner starting at the same time?)")


def release(store_path: str | os.PathLike[str], holder: dict[str, Any]) -> None:
    """Remove the lock if it is still ``holder``'s (a lock taken over meanwhile is left)."""
    path = lock_path(store_path)
    try:
        current = _read(path)
    except StoreLockedError as exc:
        log.warning("not removing the runner lock: %s", exc)
        return
    if current is None:
        return
    if current.get("pid") == holder["pid"] and current.get("host") == holder["host"]:
        path.unlink(missing_ok=True)
    else:
        log.warning("the runner lock %s now belongs to %s; leaving it", path, _describe(current))


@contextlib.contextmanager
def runner_lock(store_path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Hold the runner lock of a store for the duration of a ``with`` block."""
    holder = acquire(store_path)
    try:
        yield holder
    finally:
        release(store_path, holder)
