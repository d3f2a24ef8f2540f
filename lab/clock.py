"""Time for everything that waits.

Protocols, drivers and simulators never call :func:`time.sleep` or :func:`time.monotonic`
directly: they take a :class:`Clock`. On hardware it is :class:`WallClock`; in simulation it is
:class:`SimClock`, whose ``sleep`` advances virtual time instantly, so a 280 s indentation runs in
milliseconds and tests are deterministic.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

#: Grid points within this share of a period after a time count as reached (float round-off of a
#: clock advanced by many small sleeps: 1e-9 was lost after ~17 000 sleeps of 5 ms). The simulated
#: instruments use the same tolerance for what is due, so a sample the force watch waits for at a
#: grid point is always one the simulator has sent.
GRID_TOLERANCE = 1e-6


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
        # copy-on-write tuples: advance iterates a snapshot without copying it every step
        self._listeners: tuple[Callable[[float, float], None], ...] = ()
        self._grids: tuple[tuple[float, float], ...] = ()

    def now(self) -> float:
        with self._lock:
            return self._t_s

    def sleep(self, duration_s: float) -> None:
        if duration_s < 0:
            raise ValueError(f"sleep duration must be >= 0 s, got {duration_s}")
        self.advance(duration_s)

    def advance(self, duration_s: float) -> None:
        """Move virtual time forward by ``duration_s`` and notify listeners.

        With step grids (:meth:`add_step_grid`) the move is made in steps that end on every grid
        point on the way, and listeners hear each step. Every listener hears a step even if an
        earlier one raised; the first exception is raised after the step and time stops there.
        """
        with self._lock:
            target = self._t_s + float(duration_s)
        while True:
            with self._lock:
                t_from = self._t_s
                grid_point, tolerance_s = self._next_grid_point(t_from)
                if abs(target - grid_point) <= tolerance_s:
                    # a sleep of whole sample periods lands on the grid point up to round-off:
                    # end it there, not in a second step a few ulp later
                    target = grid_point
                t_to = min(target, grid_point)
                self._t_s = t_to
                listeners = self._listeners
            error: BaseException | None = None
            for listener in listeners:
                try:
                    listener(t_from, t_to)
                except BaseException as exc:  # re-raised below, after the step
                    error = error or exc
            if error is not None:
                raise error
            if t_to >= target:
                return

    def _next_grid_point(self, t_s: float) -> tuple[float, float]:
        """First grid point after ``t_s`` and its tolerance in s (``(inf, 0)`` without grids);
        lock held."""
        best, tolerance_s = math.inf, 0.0
        for period, phase in self._grids:
            n = math.floor((t_s - phase) / period + GRID_TOLERANCE) + 1
            point = phase + n * period
            if point < best:
                best, tolerance_s = point, GRID_TOLERANCE * period
        return best, tolerance_s

    def add_step_grid(self, period_s: float, phase_s: float) -> Callable[[], None]:
        """Make every advance stop on the points ``phase_s + n * period_s``; returns a remover.

        The force watch uses it so that it sees the world at every sample time of its stream,
        however long one ``sleep`` is.
        """
        if not (math.isfinite(period_s) and period_s > 0 and math.isfinite(phase_s)):
            raise ValueError(f"grid period must be finite and > 0, got {period_s}, {phase_s}")
        return self._register("_grids", (float(period_s), float(phase_s)))

    def on_advance(self, listener: Callable[[float, float], None]) -> Callable[[], None]:
        """Register ``listener(t_from_s, t_to_s)``; returns a function that unregisters it."""
        return self._register("_listeners", listener)

    def _register(self, attr: str, item: Any) -> Callable[[], None]:
        """Add ``item`` to the tuple ``attr`` under the lock; returns a function that removes it
        (its first occurrence, once)."""
        with self._lock:
            setattr(self, attr, (*getattr(self, attr), item))
        removed = False

        def remove() -> None:
            nonlocal removed
            with self._lock:
                items = list(getattr(self, attr))
                if not removed and item in items:
                    items.remove(item)
                    setattr(self, attr, tuple(items))
                removed = True

        return remove
