"""Time for everything that waits.

Protocols, drivers and simulators never call :func:`time.sleep` or :func:`time.monotonic`
directly: they take a :class:`Clock`. On hardware it is :class:`WallClock`; in simulation it is
:class:`SimClock`, whose ``sleep`` advances virtual time instantly, so a 280 s indentation runs in
milliseconds and tests are deterministic.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Source of time in seconds (monotonic) and a way to wait."""

    def now(self) -> float:
        """Monotonic time in seconds."""
        ...

    def sleep(self, duration_s: float) -> None:
        """Wait ``duration_s`` seconds (>= 0)."""
        ...


class WallClock:
    """The real clock: :func:`time.monotonic` and :func:`time.sleep`."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError(f"sleep duration must be >= 0 s, got {duration_s}")
        time.sleep(duration_s)


class SimClock:
    """Virtual time that advances only when someone sleeps (or calls :meth:`advance`).

    Listeners registered with :meth:`on_advance` are called with ``(t_from_s, t_to_s)`` every time
    the clock moves, which is how simulators integrate their physics over the elapsed interval.
    Thread-safe: simulator servers may read ``now()`` from their own threads.
    """

    def __init__(self, start_s: float = 0.0) -> None:
        self._t_s = float(start_s)
        self._lock = threading.RLock()
        self._listeners: list[Callable[[float, float], None]] = []

    def now(self) -> float:
        with self._lock:
            return self._t_s

    def sleep(self, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError(f"sleep duration must be >= 0 s, got {duration_s}")
        self.advance(duration_s)

    def advance(self, duration_s: float) -> None:
        """Move virtual time forward by ``duration_s`` and notify listeners."""
        with self._lock:
            t_from = self._t_s
            self._t_s = t_from + float(duration_s)
            t_to = self._t_s
            listeners = list(self._listeners)
        for listener in listeners:
            listener(t_from, t_to)

    def on_advance(self, listener: Callable[[float, float], None]) -> Callable[[], None]:
        """Register ``listener(t_from_s, t_to_s)``; returns a function that unregisters it."""
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove
