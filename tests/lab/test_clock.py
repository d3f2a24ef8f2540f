"""SimClock step grids: every grid point is a step, and a sleep of whole periods is one step."""

from __future__ import annotations

import pytest

from lab.clock import SimClock


def _steps(clock: SimClock) -> list[tuple[float, float]]:
    seen: list[tuple[float, float]] = []
    clock.on_advance(lambda a, b: seen.append((a, b)))
    return seen


def test_sleeps_of_one_period_take_one_step_each_and_end_on_the_grid() -> None:
    clock = SimClock(start_s=0.123)
    period = 1.0 / 200.0
    phase = clock.now()
    clock.add_step_grid(period, phase)
    steps = _steps(clock)
    n = 20_000  # round-off of the summed sleeps grows past an ulp of the grid point long before
    for _ in range(n):
        clock.sleep(period)
    # one step per sleep: a sleep that ends a few ulp past a grid point is not split in two
    assert len(steps) == n
    assert clock.now() == phase + n * period


def test_a_long_sleep_stops_at_every_grid_point_between() -> None:
    clock = SimClock()
    clock.add_step_grid(0.005, 0.001)
    steps = _steps(clock)
    clock.sleep(0.1)
    ends = [b for _, b in steps]
    assert len(ends) == 21  # 20 grid points in (0, 0.1], then the rest to 0.1
    assert ends[0] == pytest.approx(0.001)
    assert ends[-1] == pytest.approx(0.1)
    assert all(b > a for a, b in steps)


def test_a_sleep_between_grid_points_is_not_moved() -> None:
    clock = SimClock()
    clock.add_step_grid(0.005, 0.0)
    clock.sleep(0.0026)
    assert clock.now() == 0.0026


def test_a_remover_removes_its_own_registration_once() -> None:
    clock = SimClock()
    calls: list[int] = []

    def listener(a: float, b: float) -> None:
        calls.append(1)

    remove_first = clock.on_advance(listener)
    clock.on_advance(listener)  # registered twice: heard twice per step
    clock.sleep(0.001)
    assert len(calls) == 2
    remove_first()
    remove_first()  # idempotent: the second registration stays
    clock.sleep(0.001)
    assert len(calls) == 3
    remove_grid = clock.add_step_grid(0.01, 0.0)
    remove_grid()
    before = len(calls)
    clock.sleep(0.05)
    assert len(calls) == before + 1  # no grid left: one step
