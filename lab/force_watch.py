"""The force watch: a loop on a sensor's force stream that stops all motion on any doubt.

One :class:`ForceWatch` per force sensor consumes the sensor's stream (``start_streaming`` with
a callback: no request per sample) and checks every sample: a reading that is not finite, out
of the sensor's range, saturated or above the active limit, a sensor error, or a stream that
falls silent (no sample within the stale bound) *stops every registered motion first*, then
latches the fault and raises it. While latched, the guard refuses every motion except a pure
retract (which can only unload the contact) until the owner re-arms the watch.

How it runs (:mod:`docs/safety.md <lab.force_bounds>` has the bounds):

* **Simulation** (a :class:`~lab.clock.SimClock`): the watch puts a step grid on the clock at
  its stream's sample times, so every advance of virtual time, however long the sleep and
  whoever sleeps, stops at each sample time; at each one, while the sensor's device may be
  moving, the watch waits (real time, at most ``stream_timeout_s``) for the sample due there
  and checks it before time moves on. While the device is at rest the samples are checked, all
  of them, at the next read or motion command. The outcome depends only on the simulated
  world, never on how fast the host runs. A due sample that does not come within the timeout
  is lost: as the stale bound allows (two periods), one lost sample is tolerated (counted in
  ``lost_samples``) if the sample before it came and read at most
  :func:`lab.force_bounds.lost_sample_ceiling_n`; otherwise, or at a second missing sample in a
  row, the watch trips (stale).
* **Hardware** (any other clock): a thread wakes every half sample period, checks the samples
  that arrived and trips when the newest one arrived longer ago than
  :func:`lab.force_bounds.stale_bound_s` (two periods).

Every sample the watch sees is kept (time, Fz) until :meth:`ForceWatch.drain_log`, so the
session can store the force stream of every unit attempt.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from drivers.base import DeviceError, DeviceTimeoutError, Wrench
from drivers.force.base import ForceSensor
from lab.clock import GRID_TOLERANCE, Clock, SimClock
from lab.force_bounds import STALE_SAMPLES, lost_sample_ceiling_n, stale_bound_s

log = logging.getLogger(__name__)


class SafetyError(DeviceError):
    """The guard refused a command or stopped the devices; raised after making them safe.

    ``retryable`` tells the runner whether redoing the unit can help.
    """

    retryable: bool = False


class ForceWatchError(SafetyError):
    """The force watch stopped all motion: a limit, a bad reading or a silent sensor."""

    retryable = True


class ForceLimitError(ForceWatchError):
    """A force reading exceeded the active limit (or saturated); motion was stopped first."""


class SensorReadingError(ForceWatchError):
    """A force reading was not finite or outside the sensor's range; motion was stopped first."""


class SensorStaleError(ForceWatchError, DeviceTimeoutError):
    """No fresh force sample within the stale bound (dropout, disconnect, stuck stream)."""


@dataclass(frozen=True)
class _Arrival:
    sample: Wrench
    arrived_s: float  # clock time when the callback got it


class ForceWatch:
    """Checks every sample of one force sensor's stream against a limit (see module docstring).

    Parameters
    ----------
    sensor : ForceSensor
        The raw sensor (streaming role).
    limit_n : float
        Largest allowed compressive force Fz, N (> 0).
    clock : Clock
        The lab's clock; a :class:`SimClock` selects the simulation mode.
    sample_rate_hz : float
        Stream rate, Hz (the watch checks every sample).
    stream_timeout_s : float
        Simulation: longest real-time wait for a sample that is due (a generous bound: a missing
        sample is a fault, a slow host is not).
    range_n : float or None
        Range of the sensor's Fz, N; a reading beyond it is refused.
    """

    def __init__(self, sensor: ForceSensor, *, limit_n: float, clock: Clock,
                 sample_rate_hz: float, stream_timeout_s: float = 2.0,
                 range_n: float | None = None) -> None:
        if not (math.isfinite(sample_rate_hz) and sample_rate_hz > 0):
            raise ValueError(f"sample rate must be finite and > 0 Hz, got {sample_rate_hz}")
        if not stream_timeout_s > 0:
            raise ValueError(f"stream timeout must be > 0 s, got {stream_timeout_s}")
        self._sensor = sensor
        self.name = sensor.name
        self._clock = clock
        self._simulated = isinstance(clock, SimClock)
        self.sample_period_s = 1.0 / float(sample_rate_hz)
        self.sample_rate_hz = float(sample_rate_hz)
        self.stale_s = stale_bound_s(self.sample_period_s)
        #: Simulation: due samples that never came and were tolerated (see the module doc).
        self.lost_samples = 0
        self._stream_timeout_s = float(stream_timeout_s)
        self._range_n = range_n
        self._limit_n = 0.0
        self.set_limit(limit_n)
        self._stops: list[Callable[[], None]] = []
        self._cond = threading.Condition()
        #: The sensor's ``receive_pending()`` where it has one (Net F/T streaming), else None.
        self._take_pending: Callable[[], object] | None = getattr(sensor, "receive_pending", None)
        self._pending: list[_Arrival] = []
        self._latest: _Arrival | None = None
        self._log_t: list[float] = []
        self._log_f: list[float] = []
        self._tripped: ForceWatchError | None = None
        self._stream_ok = False  # samples are arriving (False after a stale trip)
        self._started = False  # the sensor's stream was started and not yet stopped
        self._paused = False  # stopped on purpose while its device is at rest
        self._suspended = False
        self._phase_s = 0.0
        self._last_n = -1
        self._remove_grid: Callable[[], None] | None = None
        self._thread: threading.Thread | None = None
        self._thread_stop = threading.Event()
        self._lock = threading.RLock()  # one checker at a time (thread or clock listener)
        self._moving: Callable[[], bool] = lambda: True

    # -- configuration (owner only) ------------------------------------------------------------
    @property
    def limit_n(self) -> float:
        """Active force limit, N."""
        return self._limit_n

    def set_limit(self, limit_n: float) -> None:
        if not (math.isfinite(limit_n) and limit_n > 0):
            raise ValueError(f"force limit must be finite and > 0 N, got {limit_n}")
        self._limit_n = float(limit_n)

    def on_trip(self, stop: Callable[[], None]) -> None:
        """Call ``stop`` (e.g. a device's stop) first thing when the watch trips."""
        self._stops.append(stop)

    @property
    def tripped(self) -> ForceWatchError | None:
        """The latched fault, or None."""
        return self._tripped

    @property
    def streaming(self) -> bool:
        return self._stream_ok

    # -- stream lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        """(Re)start the stream and clear a latched fault; raises the sensor's error if it fails.

        Raises
        ------
        DeviceError
            The sensor did not start streaming (nothing may move: the watch stays tripped).
        """
        self.stop()
        self._paused = False
        with self._cond:
            self._pending = []
        self._phase_s = self._clock.now()
        self._last_n = 0
        self._tripped = None
        try:
            self._sensor.start_streaming(self.sample_rate_hz, callback=self._on_sample)
            self._started = True
            with self._cond:  # the first record is sampled at the start request
                if not self._cond.wait_for(lambda: bool(self._pending), self._stream_timeout_s):
                    raise SensorStaleError(self.name, "no first sample after starting the stream")
        except DeviceError as exc:
            self._tripped = exc if isinstance(exc, ForceWatchError) else SensorStaleError(
                self.name, f"the force stream did not start: {exc}")
            raise
        self._stream_ok = True
        self._process(self._phase_s)
        if self._simulated:
            assert isinstance(self._clock, SimClock)
            self._remove_grid = self._clock.add_step_grid(self.sample_period_s, self._phase_s)
        else:
            self._thread_stop.clear()
            self._thread = threading.Thread(target=self._watch_thread, name=f"watch-{self.name}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop watching and streaming (idempotent; a failing stop request is only logged)."""
        if self._remove_grid is not None:
            self._remove_grid()
            self._remove_grid = None
        if self._thread is not None:
            self._thread_stop.set()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._stream_ok = False
        was_started, self._started = self._started, False
        if was_started:
            try:
                self._sensor.stop_streaming()
            except DeviceError as exc:
                log.warning("%s: stopping the force stream: %s", self.name, exc)

    @property
    def paused(self) -> bool:
        return self._paused

    def pause(self) -> None:
        """Stop the stream while the sensor's device is known at rest (nothing it could press);
        :meth:`resume` (before that device's next motion, or a read) restarts it."""
        if self._started and self._tripped is None:
            self.stop()
            self._paused = True

    def resume(self) -> None:
        """Restart a paused stream (checked from its first sample); no-op otherwise."""
        if self._paused:
            self._paused = False
            self.start()

    def bias(self) -> None:
        """Zero the sensor: stop the stream, bias (confirmed by the sensor), restart the stream.

        The stream restarts at once (no clock time passes), so nothing moves unwatched.
        """
        self.raise_if_tripped()
        self.stop()
        self._paused = False
        try:
            self._sensor.bias()
        except DeviceError as exc:
            raise self.trip(SensorStaleError(self.name, f"bias failed: {exc}")) from exc
        self.start()

    # -- samples ---------------------------------------------------------------------------------
    def _on_sample(self, sample: Wrench) -> None:
        """Stream callback (the sensor's receiving thread): queue, never raise."""
        with self._cond:
            self._pending.append(_Arrival(sample, self._clock.now()))
            self._cond.notify_all()

    def latest(self) -> Wrench:
        """The newest checked sample (raises the latched fault, if any)."""
        self.raise_if_tripped()
        self.resume()
        self.check_due()
        if self._latest is None:
            raise self.trip(SensorStaleError(self.name, "no force sample yet"))
        return self._latest.sample

    def peek(self) -> Wrench | None:
        """The newest sample seen, without checks (for make-safe reports); None if none."""
        return self._latest.sample if self._latest is not None else None

    def raise_if_tripped(self) -> None:
        if self._tripped is not None:
            raise self._tripped

    def suspend(self, suspended: bool) -> None:
        """While suspended (make-safe), samples are still logged but nothing trips."""
        self._suspended = suspended

    def trip(self, error: ForceWatchError) -> ForceWatchError:
        """Stop every registered motion, latch ``error`` and return it (for ``raise``)."""
        failures = []
        for stop in self._stops:
            try:
                stop()
            except DeviceError as exc:  # keep stopping the others; report all
                failures.append(str(exc))
                log.error("%s: stop after a force-watch trip failed: %s", self.name, exc)
        if failures:
            error.add_note(f"stopping failed: {failures}")
        if isinstance(error, SensorStaleError):
            self._stream_ok = False  # do not wait on a dead stream again until re-armed
        if self._tripped is None:
            self._tripped = error
        log.error("%s", error)
        return error

    def _check(self, arrival: _Arrival) -> ForceWatchError | None:
        sample = arrival.sample
        self._log_t.append(sample.t_s)
        fz = sample.fz_n
        self._log_f.append(fz)
        self._latest = arrival
        if not all(math.isfinite(v) for v in sample.force_n.tolist()):
            return SensorReadingError(self.name, f"non-finite force reading {sample.force_n}",
                                      command="stream")
        if self._range_n is not None and abs(fz) > self._range_n:
            return SensorReadingError(self.name, f"Fz {fz:.4f} N outside the sensor range "
                                      f"+/-{self._range_n} N", command="stream")
        if fz > self._limit_n or sample.saturated:
            why = "saturated" if sample.saturated else f"{fz:.4f} N > limit {self._limit_n} N"
            return ForceLimitError(self.name, f"force limit tripped ({why}); motion stopped",
                                   command="stream", reply=f"Fz={fz:.4f}")
        return None

    def _process(self, now_s: float) -> None:
        """Check the queued samples; trip on the first bad one (lock held by callers)."""
        with self._cond:
            arrivals, self._pending = self._pending, []
        first: ForceWatchError | None = None
        for arrival in arrivals:
            problem = self._check(arrival)
            first = first or problem
        if first is not None and not self._suspended and self._tripped is None:
            raise self.trip(first)

    # -- simulation: driven by the clock -----------------------------------------------------------
    def watch_motion_of(self, moving: Callable[[], bool]) -> None:
        """Simulation: wait at every sample time only while ``moving()`` (the sensor's device may
        be moving); at rest the samples are checked, all of them, at the next read or motion
        command (:meth:`check_due`): nothing presses harder while nothing moves."""
        self._moving = moving

    def on_clock(self, t_from_s: float, t_to_s: float) -> None:
        """Clock listener: at each sample time while the device moves, wait for that sample and
        check it (and every sample before it)."""
        if self._stream_ok and self._moving():
            self.check_due()

    def check_due(self) -> None:
        """Wait for the sample due now (simulation) and check every sample up to it; on the
        wall clock check what arrived and the stream's age. Raises (after stopping all motion)
        on any problem."""
        if not self._simulated:
            self.check_now()
            return
        if not self._stream_ok:
            return
        with self._lock:
            now = self._clock.now()
            n_due = math.floor((now - self._phase_s) / self.sample_period_s + GRID_TOLERANCE)
            arrived = True
            t_due = self._phase_s + n_due * self.sample_period_s
            if n_due > self._last_n:
                self._last_n = n_due
                horizon = t_due - GRID_TOLERANCE * self.sample_period_s
                if self._take_pending is not None:
                    # take what already arrived in this thread (its callback queues it): no
                    # hand-over to the sensor's receiving thread for every sample
                    self._take_pending()
                with self._cond:
                    arrived = self._cond.wait_for(
                        lambda: any(a.sample.t_s >= horizon for a in self._pending),
                        self._stream_timeout_s)
            try:
                self._process(now)
            finally:
                if not arrived and self._stream_ok and self._lost_sample_tolerated(t_due):
                    self.lost_samples += 1
                    log.warning("%s: the force sample due at t = %.4f s was lost; tolerated "
                                "(the one before it is within the stale bound)", self.name, t_due)
                elif not arrived and self._stream_ok:
                    error = SensorStaleError(
                        self.name, f"no force sample for t = {t_due:.4f} s (sample period "
                        f"{self.sample_period_s * 1e3:.3g} ms); motion stopped",
                        command="stream")
                    if self._suspended:
                        self._stream_ok = False
                    elif self._tripped is None:
                        raise self.trip(error)

    def _lost_sample_tolerated(self, t_due_s: float) -> bool:
        """Simulation: may the motion go on without the sample due at ``t_due_s``? Only if the
        newest sample is no older than the stale bound less one period (the one before the due
        one came), reads at most the lost-sample ceiling and is not saturated, and nothing is
        latched (see :mod:`lab.force_bounds`)."""
        newest = self._latest
        if newest is None or self._tripped is not None or self._suspended:
            return False
        sample = newest.sample
        max_age_s = (STALE_SAMPLES - 1.0 + GRID_TOLERANCE) * self.sample_period_s
        return (t_due_s - sample.t_s <= max_age_s and not sample.saturated
                and sample.fz_n <= lost_sample_ceiling_n(self._limit_n))

    # -- hardware: a thread on the wall clock ----------------------------------------------------
    def check_now(self) -> None:
        """Check queued samples and the stream's age now (hardware mode)."""
        with self._lock:
            if not self._stream_ok or self._tripped is not None:
                return
            now = self._clock.now()
            self._process(now)
            age = now - self._latest.arrived_s if self._latest is not None else math.inf
            if age > self.stale_s and not self._suspended:
                raise self.trip(SensorStaleError(
                    self.name, f"newest force sample is {age * 1e3:.1f} ms old (bound "
                    f"{self.stale_s * 1e3:.1f} ms); motion stopped", command="stream"))

    def _watch_thread(self) -> None:
        while not self._thread_stop.wait(self.sample_period_s / 2):
            try:
                self.check_now()
            except ForceWatchError:
                continue  # latched; the protocol's next guarded call raises it

    # -- evidence --------------------------------------------------------------------------------
    def drain_log(self) -> tuple[NDArray[np.float64], NDArray[np.float32]]:
        """All samples seen since the last drain: ``(t_s float64, fz_n float32)``, shape (n,)."""
        with self._lock:
            t = np.asarray(self._log_t, dtype=np.float64)
            f = np.asarray(self._log_f, dtype=np.float32)
            self._log_t, self._log_f = [], []
        return t, f

    def log_size(self) -> int:
        return len(self._log_t)

    def log_view(self) -> tuple[list[float], list[float]]:
        """The live lists ``(t_s, fz_n)`` logged since the last drain (read them, never modify);
        a drain replaces them with new lists. Used by :mod:`lab.live` for the monitor."""
        return self._log_t, self._log_f
