"""Time left in a session: the plan's lab-time estimates scaled by the measured wall/lab ratio.

The plan estimates every unit in *lab* seconds (the time its motions and acquisitions take on the
instruments). What the operator wants is *wall* seconds. On hardware the two are close (overheads
add a few per cent); in simulation a 280 s indentation runs in milliseconds. Either way the ratio
``wall seconds spent on completed units / their estimated lab seconds`` converts what is left of
the plan into wall time, so one estimator is right in both worlds.

Rich's own ``TimeRemainingColumn`` extrapolates the bar's recent *speed* over a 30 s window; a bar
advanced once per unit (units of minutes) has no speed in that window most of the time, which is
why the old bar showed ``-:--:--``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field


@dataclass
class EtaEstimator:
    """Running estimate of the wall time a session still needs.

    Parameters
    ----------
    estimated_s : mapping of unit id to float
        The plan's estimate (lab seconds, >= 0) of every unit still to do.
    wall_clock : callable, optional
        Monotonic wall time in seconds (injected for tests).
    """

    estimated_s: dict[str, float]
    wall_clock: Callable[[], float] = time.monotonic
    _done: set[str] = field(default_factory=set)
    _done_estimate_s: float = 0.0
    _done_wall_s: float = 0.0
    _current: str | None = None
    _current_start_s: float = 0.0

    @classmethod
    def for_units(cls, units: Iterable[tuple[str, float]],
                  wall_clock: Callable[[], float] = time.monotonic) -> EtaEstimator:
        """From ``(unit_id, estimated_s)`` pairs."""
        return cls({uid: max(0.0, float(est)) for uid, est in units}, wall_clock)

    def unit_started(self, unit_id: str) -> None:
        """A unit (or a retry of it) begins now."""
        self._current = unit_id
        self._current_start_s = self.wall_clock()

    def unit_done(self, unit_id: str) -> None:
        """The unit completed now; its wall time enters the ratio."""
        if unit_id in self._done:
            return
        start = self._current_start_s if self._current == unit_id else self.wall_clock()
        self._done.add(unit_id)
        self._done_estimate_s += self.estimated_s.get(unit_id, 0.0)
        self._done_wall_s += max(0.0, self.wall_clock() - start)
        self._current = None

    @property
    def ratio(self) -> float | None:
        """Measured wall seconds per estimated lab second; None before a unit completed."""
        if self._done_estimate_s <= 0.0:
            return None
        return self._done_wall_s / self._done_estimate_s

    @property
    def remaining_estimate_s(self) -> float:
        """Lab seconds of the units not completed yet (the current one included)."""
        return sum(v for k, v in self.estimated_s.items() if k not in self._done)

    def eta_s(self) -> float | None:
        """Wall seconds until the last unit ends; None while no unit has completed."""
        ratio = self.ratio
        if ratio is None:
            return None
        eta = ratio * self.remaining_estimate_s
        if self._current is not None:  # the current unit is under way
            eta -= min(self.wall_clock() - self._current_start_s,
                       ratio * self.estimated_s.get(self._current, 0.0))
        return max(0.0, eta)


def format_duration(seconds: float | None) -> str:
    """``h:mm:ss`` (or ``--:--`` when unknown)."""
    if seconds is None:
        return "--:--"
    m, s = divmod(round(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h:d}:{m:02d}:{s:02d}"
