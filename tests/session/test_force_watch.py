"""The force watch's parts: the overshoot bound, the clock's step grid, contact zones and the
wall-clock (hardware) mode of the watch."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from drivers.base import Wrench
from drivers.force.base import WrenchCallback
from lab.clock import SimClock, WallClock
from lab.force_bounds import (
    OVERSHOOT_FRACTION,
    cylinder_stiffness_n_per_m,
    lost_sample_ceiling_n,
    max_contact_speed_m_s,
    max_overshoot_n,
    min_watch_rate_hz,
    probe_contact_stiffness_n_per_m,
    stale_bound_s,
)
from lab.force_watch import ForceLimitError, ForceWatch, SensorReadingError, SensorStaleError
from lab.safety import ContactZone


# -- bounds ----------------------------------------------------------------------------------------
def test_overshoot_bound_is_speed_times_period_times_stiffness():
    # 4 mm/s, 5 ms, 4000 N/m: 80 mN; plus latency and braking when given
    assert max_overshoot_n(0.004, sample_period_s=0.005, stiffness_n_per_m=4000.0) == (
        pytest.approx(0.08))
    assert max_overshoot_n(0.004, sample_period_s=0.005, stiffness_n_per_m=4000.0,
                           stop_latency_s=0.005, deceleration_m_s2=10.0,
                           reading_error_n=0.01) == pytest.approx(
        4000.0 * (0.004 * 0.010 + 0.004**2 / 20.0) + 0.01)


@pytest.mark.parametrize("latency_s, decel", [(0.0, math.inf), (0.004, 10.0), (0.0, 0.5)])
def test_speed_cap_and_watch_rate_invert_the_bound(latency_s, decel):
    k, limit, period = probe_contact_stiffness_n_per_m(126.05), 2.0, 0.005
    v = max_contact_speed_m_s(limit, sample_period_s=period, stiffness_n_per_m=k,
                              stop_latency_s=latency_s, deceleration_m_s2=decel)
    assert max_overshoot_n(v, sample_period_s=period, stiffness_n_per_m=k,
                           stop_latency_s=latency_s, deceleration_m_s2=decel) == (
        pytest.approx(0.05 * limit, rel=1e-9))
    rate = min_watch_rate_hz(limit, speed_m_s=v, stiffness_n_per_m=k, stop_latency_s=latency_s,
                             deceleration_m_s2=decel)
    assert rate == pytest.approx(1 / period, rel=1e-9)


def test_stiffest_phantoms_and_the_200_hz_caps():
    k_probe = probe_contact_stiffness_n_per_m(126.05)  # 17.5 % gelatin under the probe face
    assert k_probe == pytest.approx(4741.0, rel=1e-3)
    assert max_contact_speed_m_s(2.0, sample_period_s=0.005, stiffness_n_per_m=k_probe) == (
        pytest.approx(4.22e-3, rel=1e-3))
    k_cyl = cylinder_stiffness_n_per_m(126.05, radius_mm=10.0, height_mm=40.0)
    assert k_cyl == pytest.approx(990.0, rel=1e-3)
    assert stale_bound_s(0.005) == pytest.approx(0.010)


def test_one_lost_sample_costs_nothing_at_the_cap_and_one_period_beyond():
    k, limit, period = probe_contact_stiffness_n_per_m(126.05), 2.0, 0.005
    headroom = limit - lost_sample_ceiling_n(limit)
    assert headroom == pytest.approx(OVERSHOOT_FRACTION * limit)
    cap = max_contact_speed_m_s(limit, sample_period_s=period, stiffness_n_per_m=k)
    plain = max_overshoot_n(cap, sample_period_s=period, stiffness_n_per_m=k)
    assert max_overshoot_n(cap, sample_period_s=period, stiffness_n_per_m=k,
                           lost_sample_headroom_n=headroom) == pytest.approx(plain)
    # at 4x the cap: max(F + kvT, 0.95 F + 2 kvT) - F; on the wall clock (no headroom) + kvT
    v = 4 * cap
    assert max_overshoot_n(v, sample_period_s=period, stiffness_n_per_m=k,
                           lost_sample_headroom_n=headroom) == pytest.approx(
        2 * k * v * period - headroom)
    assert max_overshoot_n(v, sample_period_s=period, stiffness_n_per_m=k,
                           lost_sample_headroom_n=0.0) == pytest.approx(2 * k * v * period)


def test_bounds_refuse_nonsense():
    with pytest.raises(ValueError, match="sample_period_s"):
        max_overshoot_n(0.001, sample_period_s=0.0, stiffness_n_per_m=1.0)
    with pytest.raises(ValueError, match="limit_n"):
        max_contact_speed_m_s(math.nan, sample_period_s=0.005, stiffness_n_per_m=1.0)
    with pytest.raises(ValueError, match="lower the speed"):
        min_watch_rate_hz(2.0, speed_m_s=0.05, stiffness_n_per_m=4741.0, stop_latency_s=0.01)


# -- clock step grid -------------------------------------------------------------------------------
def test_step_grid_stops_every_advance_on_its_points():
    clock = SimClock()
    steps: list[tuple[float, float]] = []
    clock.on_advance(lambda a, b: steps.append((a, b)))
    remove = clock.add_step_grid(0.1, 0.05)
    clock.sleep(0.42)
    ends = [b for _, b in steps]
    assert ends == pytest.approx([0.05, 0.15, 0.25, 0.35, 0.42])
    assert all(a == pytest.approx(prev) for (a, _), prev in zip(steps[1:], ends, strict=False))
    remove()
    steps.clear()
    clock.sleep(1.0)
    assert len(steps) == 1


def test_a_raising_listener_stops_time_after_every_listener_heard_the_step():
    clock = SimClock()
    clock.add_step_grid(0.1, 0.0)
    heard: list[float] = []

    def trip(_a: float, b: float) -> None:
        if b >= 0.3 - 1e-12:
            raise ForceLimitError("probe", "tripped")

    clock.on_advance(trip)
    clock.on_advance(lambda a, b: heard.append(b))
    with pytest.raises(ForceLimitError):
        clock.sleep(1.0)
    assert clock.now() == pytest.approx(0.3)
    assert heard[-1] == pytest.approx(0.3)


# -- contact zones ---------------------------------------------------------------------------------
def test_contact_zone_segment_test():
    zone = ContactZone((0.0, 0.0, -np.inf), (0.1, 0.1, 0.1))
    inside, above, beside = np.array([0.05, 0.05, 0.05]), np.array([0.05, 0.05, 0.2]), np.array(
        [0.3, 0.05, 0.05])
    assert zone.crossed_by(above, inside) and zone.crossed_by(inside, inside)
    assert not zone.crossed_by(above, above + np.array([0.1, 0.0, 0.0]))  # travel above the zone
    assert not zone.crossed_by(beside, beside + np.array([0.0, 0.0, -0.1]))
    assert zone.crossed_by(np.array([-0.1, 0.05, 0.05]), beside)  # straight through it


# -- hardware mode (wall clock, a streaming fake) -------------------------------------------------
class _FakeStream:
    """A streaming sensor whose samples the test pushes (``push``), as a receive thread would."""

    name = "fake_sensor"

    def __init__(self, clock: WallClock) -> None:
        self.clock = clock
        self._callback: WrenchCallback | None = None

    def push(self, fz: float) -> None:
        assert self._callback is not None
        self._callback(Wrench(np.array([0.0, 0.0, fz]), np.zeros(3), self.clock.now()))

    def start_streaming(self, rate_hz: float = 200.0,
                        callback: WrenchCallback | None = None) -> None:
        self._callback = callback
        self.push(0.5)  # the first record answers the start request

    def stop_streaming(self) -> None:
        self._callback = None


def _wait_for_trip(watch: ForceWatch, sensor: _FakeStream, fz: float | None,
                   timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s  # real time: the hardware mode runs on it
    while watch.tripped is None and time.monotonic() < deadline:
        if fz is not None:
            sensor.push(fz)
        time.sleep(0.05)


@pytest.mark.parametrize("fault", ["limit", "silence", "nan"])
def test_wall_clock_watch_stops_motion_then_raises(fault):
    clock = WallClock()
    sensor = _FakeStream(clock)
    # 2 Hz: a 1 s stale bound, so a loaded host does not make the healthy stream look stale
    watch = ForceWatch(sensor, limit_n=2.0, clock=clock, sample_rate_hz=2.0, range_n=9.0)
    stops: list[str] = []
    watch.on_trip(lambda: stops.append("robot"))
    watch.start()
    try:
        assert watch.latest().fz_n == 0.5 and watch.tripped is None
        _wait_for_trip(watch, sensor, {"limit": 2.5, "nan": math.nan, "silence": None}[fault])
        expected = {"limit": ForceLimitError, "silence": SensorStaleError,
                    "nan": SensorReadingError}[fault]
        assert isinstance(watch.tripped, expected)
        assert stops == ["robot"]  # stopped before anyone was told
        with pytest.raises(expected):
            watch.latest()
    finally:
        watch.stop()


def test_watch_on_the_simulated_net_ft_never_goes_stale_over_long_runs():
    """A demo indentation is ~63 000 samples at 200 Hz. The simulated Net F/T and the watch's
    clock grid must agree on what is due after tens of thousands of small clock steps (they
    used different round-off tolerances and the watch tripped 'stale' after ~17 000)."""
    from drivers.sim.lab import build_sim_lab

    clock = SimClock()
    lab = build_sim_lab(seed=1, clock=clock, rdt_rate_hz=200.0)
    try:
        watch = ForceWatch(lab.indenter_sensor, limit_n=2.0, clock=clock, sample_rate_hz=200.0)
        watch.watch_motion_of(lambda: True)  # wait for every sample, as during a drive
        remove = clock.on_advance(watch.on_clock)
        watch.start()
        try:
            for _ in range(20_000):
                clock.sleep(0.005)
            assert watch.tripped is None
            assert watch.log_size() >= 20_000
        finally:
            remove()
            watch.stop()
    finally:
        lab.close()
