"""The fault matrix: every fault ends with motion stopped, the failure recorded, the store sound
and the TRUE contact force of the simulated world within the documented bound of the limit.

Each case runs a real session on the simulated lab (tiny config: 50 Hz force streams) with a
fault injected at a chosen moment of virtual time, and records the world's true probe and
plate forces at every clock step (the force watch steps the clock at every sample time, so the
peak, which is at the stop, is seen exactly).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from session_testkit import at_clock, disk_full, factory

from drivers.base import DeviceTimeoutError, Wrench
from drivers.force.base import ForceSensor, WrenchCallback
from drivers.sim.faults import ForceSpike
from lab import session as session_module
from lab.config import parse_config, stiffest_contacts_n_per_m
from lab.devices import LabDevices
from lab.force_bounds import max_contact_speed_m_s, max_overshoot_n
from lab.gelatin import flat_punch_stiffness_n_per_mm, youngs_modulus_kpa
from lab.session import SessionResult, resume_session, run_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.common import surface_pose, travel_to
from protocols.plan import Unit
from protocols.testing import tiny_config_dict

TOP_Z_M = 0.1  # block top in the bench layout (100 mm blocks on the table at z = 0)
PERIOD_S = 1 / 100.0  # the tiny config's probe force stream


@dataclass
class Truth:
    """Peak true forces of the world over the whole session."""

    probe_n: float = 0.0
    plate_n: float = 0.0
    labs: list[LabDevices] = field(default_factory=list)

    def install(self, lab: LabDevices) -> None:
        world = lab.world

        def record(_t_from: float, _t_to: float) -> None:
            self.probe_n = max(self.probe_n, world.probe_contact().force_n)
            self.plate_n = max(self.plate_n, world.cylinder_force_n())

        lab.clock.on_advance(record)  # type: ignore[attr-defined]
        self.labs.append(lab)


#: Marker key of a test config: run it with the RTDE watchdog off (which the config refuses).
WATCHDOG_OFF = "_robot_watchdog_off"


def _run(tmp_path, data: dict[str, Any], install: Callable[[LabDevices], None] = lambda lab: None
         ) -> tuple[SessionResult, Truth, SessionStore]:
    truth = Truth()

    def both(lab: LabDevices) -> None:
        truth.install(lab)
        install(lab)

    make, _ = factory(both)
    watchdog_off = data.pop(WATCHDOG_OFF, False)
    config = parse_config(data)
    if watchdog_off:  # the config refuses "off"; a faulty robot set-up is what is simulated here
        robot = config.lab.robot.model_copy(update={"watchdog_min_frequency_hz": None})
        config = config.model_copy(update={"lab": config.lab.model_copy(update={"robot": robot})})
    result = run_session(config, tmp_path / "s.zarr", devices_factory=make,
                         show_progress=False, retry_delay_s=0.5)
    report = verify_store(tmp_path / "s.zarr")
    assert report.clean, [str(p) for p in report.problems]
    store = SessionStore.open(tmp_path / "s.zarr")
    assert store.attrs["status"] == result.status
    return result, truth, store


def _events(store: SessionStore, kind: str = "fault") -> list[dict[str, Any]]:
    return [e for e in store.events("interruptions") if e["kind"] == kind]


def _assert_at_rest(truth: Truth) -> None:
    world = truth.labs[-1].world
    assert not world.robot_moving()
    assert world.probe_contact().force_n == 0.0  # retracted
    assert world.hexapod_on_target()


def _true_bound_n(limit_n: float, speed_m_s: float, gelatin_percent: float,
                  period_s: float = PERIOD_S, lost_sample_headroom_n: float | None = None
                  ) -> float:
    """Documented overshoot bound with the simulator's own contact stiffness (no stop latency);
    ``lost_sample_headroom_n`` as in :func:`lab.force_bounds.max_overshoot_n`."""
    k = flat_punch_stiffness_n_per_mm(youngs_modulus_kpa(gelatin_percent), face_area_mm2=400.0)
    return limit_n + max_overshoot_n(speed_m_s, sample_period_s=period_s,
                                     stiffness_n_per_m=k * 1e3,
                                     lost_sample_headroom_n=lost_sample_headroom_n)


def _swei(*, robot_watchdog: bool = True, **kwargs: Any) -> dict[str, Any]:
    """One SWEI position; ``robot_watchdog=False`` switches the RTDE watchdog off (0 Hz), so a
    protocol that never waits is stopped by nothing but the force watch."""
    data = tiny_config_dict(protocols=("swei",), positions=1, push_elements=(64,), frames=6,
                            **kwargs)
    if not robot_watchdog:
        data[WATCHDOG_OFF] = True
    return data


def _indentation() -> dict[str, Any]:
    data = tiny_config_dict(protocols=("indentation",))
    data["protocols"][0]["cylinders"] = ["cyl-17.5"]
    return data


def _when(lab: LabDevices, condition: Callable[[], bool], action: Callable[[], None],
          *, then_after_s: float | None = None, undo: Callable[[], None] | None = None) -> None:
    """Run ``action`` when ``condition`` first holds; ``undo`` ``then_after_s`` later."""
    t_on: list[float] = []

    def fire() -> None:
        action()
        t_on.append(lab.clock.now())

    at_clock(lab, lambda t: condition(), fire)
    if undo is not None and then_after_s is not None:
        at_clock(lab, lambda t: bool(t_on) and t >= t_on[0] + then_after_s, undo)


def _near_surface(lab: LabDevices, height_m: float = 0.003) -> Callable[[], bool]:
    return lambda: lab.world.robot_pose()[2] < TOP_Z_M + height_m


# -- a rogue protocol: presses deep into the block and never waits ------------------------------
def _rogue_press(speed: str | float, bias: bool = True) -> Callable[..., dict[str, Any]]:
    """An SWEI replacement that travels above the position, commands a move 5 mm into the block
    at ``speed`` ("cap" = the guard's near-contact cap, as fast as allowed) and just sleeps."""

    def run_unit(unit: Unit, devices: Any, store: Any, **_: Any) -> dict[str, Any]:
        p = unit.params
        travel_to(devices, p.above_pose, travel_z_m=p.travel_pose[2],
                  speed_m_s=p.travel_speed_m_s, acceleration_m_s2=p.acceleration_m_s2)
        if bias:
            devices.probe_sensor.bias()  # in air: the reading is the true load
        deep = surface_pose(p.origin_m, p.x_mm, p.y_mm)
        deep[2] -= 0.005
        v = devices.robot.near_contact_speed_max_m_s if speed == "cap" else float(speed)
        devices.robot.move_linear(deep, speed_m_s=v, acceleration_m_s2=p.acceleration_m_s2)
        devices.clock.sleep(60.0)  # never waits on the move, never reads the force
        return {}

    return run_unit


@pytest.fixture
def rogue(monkeypatch):
    def use(speed: str | float, bias: bool = True) -> None:
        monkeypatch.setattr(session_module.swei, "run_unit", _rogue_press(speed, bias))

    return use


def _cap_m_s(data: dict[str, Any]) -> float:
    """The guard's near-contact cap for ``data`` (5 % of the limit on its stiffest block)."""
    cfg = parse_config(data)
    probe_k, _ = stiffest_contacts_n_per_m(cfg)
    return max_contact_speed_m_s(cfg.safety.probe_force_max_n,
                                 sample_period_s=1.0 / cfg.lab.probe_force_sensor.rate_hz,
                                 stiffness_n_per_m=probe_k)


# -- cases ----------------------------------------------------------------------------------------
def test_rogue_protocol_that_never_waits_with_the_robot_watchdog_off(tmp_path, rogue):
    data = _swei(max_retries=1, robot_watchdog=False)
    rogue("cap")
    result, truth, store = _run(tmp_path, data)
    assert result.status == "failed"
    faults = _events(store)
    assert [f["error_type"] for f in faults] == ["ForceLimitError", "ForceLimitError"]
    assert [f["action"] for f in faults] == ["retry", "stop"]
    limit = 2.0
    assert limit < truth.probe_n <= _true_bound_n(limit, _cap_m_s(data), 7.5)
    _assert_at_rest(truth)


def test_fast_press_into_the_stiffest_phantom_stays_within_5_percent(tmp_path, rogue):
    data = _swei(max_retries=0, robot_watchdog=False)
    for p in data["phantoms"]:
        if p["kind"] == "block":
            p["gelatin_percent"] = 17.5
            p.pop("inclusions", None)
    rate_hz = 200.0  # the config refuses the tiny config's 50 Hz on 17.5 % gelatin
    data["lab"]["probe_force_sensor"]["rate_hz"] = rate_hz
    rogue("cap")  # as fast as the guard allows near the phantom
    result, truth, store = _run(tmp_path, data)
    assert result.status == "failed"
    (fault,) = _events(store)
    assert fault["error_type"] == "ForceLimitError"
    cap = _cap_m_s(data)
    bound_n = _true_bound_n(2.0, cap, 17.5, period_s=1.0 / rate_hz)
    assert 0.0 < truth.probe_n - 2.0 <= bound_n - 2.0 <= 0.05 * 2.0
    _assert_at_rest(truth)


def test_a_press_above_the_near_contact_cap_is_refused_before_it_moves(tmp_path, rogue):
    rogue(0.05)  # the 50 mm/s robot cap: 2.26 N for 2 N before the near-contact cap
    result, truth, store = _run(tmp_path, _swei(max_retries=0))
    assert result.status == "failed" and "near-contact cap" in result.message
    (fault,) = _events(store)
    assert fault["error_type"] == "SafetyError" and not fault["retryable"]
    assert truth.probe_n == 0.0  # never touched the phantom
    _assert_at_rest(truth)


def test_a_press_without_a_bias_in_air_is_refused(tmp_path, rogue):
    rogue("cap", bias=False)  # the Nano43 carries the probe's weight: -0.8 N unbiased
    result, truth, _ = _run(tmp_path, _swei(max_retries=0, robot_watchdog=False))
    assert result.status == "failed" and "not biased" in result.message
    assert truth.probe_n == 0.0
    _assert_at_rest(truth)


def test_sensor_dropout_mid_press_stops_at_the_second_missing_sample(tmp_path, rogue):
    seen: list[float] = []

    def install(lab):
        world = lab.world

        def drop():
            seen.append(world.probe_contact().force_n)
            world.faults.sensor_dropout.add("probe_sensor")

        _when(lab, lambda: world.probe_contact().force_n >= 1.0, drop, then_after_s=0.5,
              undo=lambda: world.faults.sensor_dropout.discard("probe_sensor"))

    rogue("cap")
    data = _swei(max_retries=0, robot_watchdog=False)
    _, truth, store = _run(tmp_path, data, install)
    (fault,) = _events(store)
    assert fault["error_type"] == "SensorStaleError" and fault["device"] == "probe_sensor"
    # 1 N is below the lost-sample ceiling: the first missing sample is tolerated (stale bound:
    # two periods), the second trips: at most two periods of travel after the dropout
    cap = _cap_m_s(data)
    bound = _true_bound_n(seen[0], cap, 7.5, lost_sample_headroom_n=0.0)
    assert _true_bound_n(seen[0], cap, 7.5) < truth.probe_n <= bound + 1e-9 < 2.0
    _assert_at_rest(truth)


def _drop_when(lab: LabDevices, force_n: float, count: int, seen: list[float]) -> None:
    """Lose ``count`` probe records in a row from the first sample time after the true probe
    force reached ``force_n``."""
    world = lab.world

    def drop() -> None:
        seen.append(world.probe_contact().force_n)
        world.faults.drop_packets("probe_sensor", lab.clock.now() + PERIOD_S / 2, count)

    _when(lab, lambda: world.probe_contact().force_n >= force_n, drop)


def _probe_gaps(store: SessionStore) -> list[float]:
    """Steps (s) between consecutive probe samples of force_log that exceed one period."""
    log = store.table("force_log")
    t = log.read("t_s")[log.read("sensor") == 0]
    steps = np.diff(t)
    return [float(x) for x in steps[(steps > PERIOD_S * 1.001) & (steps < PERIOD_S * 5)]]


def test_one_lost_packet_mid_press_is_tolerated_and_the_unit_completes(tmp_path):
    seen: list[float] = []
    result, truth, store = _run(tmp_path, _swei(), lambda lab: _drop_when(lab, 0.05, 1, seen))
    assert result.status == "complete" and seen
    assert _events(store) == []  # no trip
    assert truth.labs[-1].probe_sensor.lost_packets == 1
    assert _probe_gaps(store) == [pytest.approx(2 * PERIOD_S)]  # exactly the one sample
    assert truth.probe_n <= 2.0


def test_one_lost_packet_in_a_rogue_press_then_the_limit_trips_within_the_bound(tmp_path, rogue):
    seen: list[float] = []
    rogue("cap")
    data = _swei(max_retries=0, robot_watchdog=False)
    _, truth, store = _run(tmp_path, data, lambda lab: _drop_when(lab, 1.0, 1, seen))
    (fault,) = _events(store)
    assert fault["error_type"] == "ForceLimitError"  # the lost sample did not trip
    assert _probe_gaps(store) == [pytest.approx(2 * PERIOD_S)]
    # at the cap the lost-sample term is 0: the 5 % bound holds with one lost sample
    cap = _cap_m_s(data)
    assert 2.0 < truth.probe_n <= _true_bound_n(2.0, cap, 7.5, lost_sample_headroom_n=0.1)
    assert _true_bound_n(2.0, cap, 7.5, lost_sample_headroom_n=0.1) == pytest.approx(
        _true_bound_n(2.0, cap, 7.5))
    _assert_at_rest(truth)


def test_three_lost_packets_trip_stale_after_the_second(tmp_path, rogue):
    seen: list[float] = []
    rogue("cap")
    data = _swei(max_retries=0, robot_watchdog=False)
    result, truth, store = _run(tmp_path, data, lambda lab: _drop_when(lab, 1.0, 3, seen))
    assert result.status == "failed"
    (fault,) = _events(store)
    assert fault["error_type"] == "SensorStaleError" and "no force sample" in fault["error"]
    cap = _cap_m_s(data)
    assert truth.probe_n <= _true_bound_n(seen[0], cap, 7.5, lost_sample_headroom_n=0.0) + 1e-9
    assert truth.probe_n > _true_bound_n(seen[0], cap, 7.5)  # the 1st missing one: tolerated
    _assert_at_rest(truth)


def test_a_lost_packet_near_the_limit_trips_at_once(tmp_path, rogue):
    """Above the lost-sample ceiling (95 % of the 2 N limit) a missing sample is not
    tolerated: the watch trips at the first one, one period of travel after the last sample."""
    seen: list[float] = []
    data = _swei(max_retries=0, robot_watchdog=False)
    slow = _cap_m_s(_swei()) / 4  # about 25 mN per period: several samples in 1.9 to 2 N
    rogue(slow)
    _, truth, store = _run(tmp_path, data, lambda lab: _drop_when(lab, 1.93, 1, seen))
    (fault,) = _events(store)
    assert fault["error_type"] == "SensorStaleError"
    assert truth.probe_n <= _true_bound_n(seen[0], slow, 7.5) + 1e-9 < 2.0
    _assert_at_rest(truth)


@pytest.mark.parametrize("fault", ["dropout", "disconnect", "malformed"])
def test_probe_sensor_faults_during_the_approach_are_retried(tmp_path, fault):
    def install(lab):
        faults = lab.world.faults
        on, off = {
            "dropout": (lambda: faults.sensor_dropout.add("probe_sensor"),
                        lambda: faults.sensor_dropout.discard("probe_sensor")),
            "disconnect": (lambda: faults.disconnect("probe_sensor"),
                           lambda: faults.reconnect("probe_sensor")),
            "malformed": (lambda: faults.malformed_replies.add("probe_sensor"),
                          lambda: faults.malformed_replies.discard("probe_sensor")),
        }[fault]
        _when(lab, _near_surface(lab), on, then_after_s=0.5, undo=off)

    result, truth, store = _run(tmp_path, _swei(), install)
    assert result.status == "complete"
    first = _events(store)[0]
    assert first["error_type"] == "SensorStaleError" and first["device"] == "probe_sensor"
    assert first["state"]["robot_z_m"] >= TOP_Z_M + 0.010 - 1e-6  # lifted though blind
    assert truth.probe_n <= 2.0
    assert store.table("swei").keys() == ["block-a/pos000/push0"]
    _assert_at_rest(truth)


class _FrozenStream:
    """A probe sensor whose stream gets stuck after ``t_freeze_s``: it keeps delivering its last
    sample (old timestamp) as if new - a stale sensor, not a silent one."""

    def __init__(self, sensor: ForceSensor, lab: LabDevices, t_freeze_s: float) -> None:
        self._sensor = sensor
        self._lab = lab
        self._t_freeze_s = t_freeze_s
        self.name = sensor.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sensor, name)

    def start_streaming(self, rate_hz: float = 200.0,
                        callback: WrenchCallback | None = None) -> None:
        last: list[Wrench] = []

        def forward(sample: Wrench) -> None:
            if sample.t_s < self._t_freeze_s or not last:
                last[:] = [sample]
            if callback is not None:
                callback(last[0])

        self._sensor.start_streaming(rate_hz, forward)


def test_stale_sensor_stream_is_refused(tmp_path):
    def install(lab):
        lab.probe_sensor = _FrozenStream(lab.probe_sensor, lab, t_freeze_s=4.0)

    result, truth, store = _run(tmp_path, _swei(max_retries=0), install)
    assert result.status == "failed"
    (fault,) = _events(store)
    assert fault["error_type"] == "SensorStaleError" and "no force sample" in fault["error"]
    assert truth.probe_n <= 2.0
    _assert_at_rest(truth)


def test_force_spike_trips_and_the_position_is_redone(tmp_path):
    def install(lab):
        _when(lab, _near_surface(lab), lambda: lab.world.faults.force_spikes.append(
            ForceSpike("probe_sensor", lab.clock.now(), 0.05, 3.0)))

    result, truth, store = _run(tmp_path, _swei(), install)
    assert result.status == "complete"
    (fault,) = _events(store)
    assert fault["error_type"] == "ForceLimitError" and fault["retryable"]
    assert truth.probe_n <= 2.0  # the spike is in the sensor, not in the world
    _assert_at_rest(truth)


def test_protective_stop_and_robot_disconnect_mid_move(tmp_path):
    def install(lab):
        world = lab.world
        world.faults.protective_stop_at_s = 4.0  # while travelling
        _when(lab, lambda: world.robot_pose()[2] < TOP_Z_M + 0.002 and world.robot_moving()
              and not world.protective_stopped, lambda: world.faults.disconnect("robot"),
              then_after_s=1.0, undo=lambda: world.faults.reconnect("robot"))

    result, truth, store = _run(tmp_path, _swei(max_retries=3), install)
    assert result.status == "complete"
    kinds = [f["error_type"] for f in _events(store)]
    assert kinds[0] == "ProtectiveStopError" and len(kinds) >= 2
    assert truth.probe_n <= 2.0
    _assert_at_rest(truth)


class _HexapodTimesOut:
    """A hexapod whose ``n``-th position query (``POS?`` or a data-recorder read) times out: a
    controller that stopped answering."""

    def __init__(self, hexapod: Any, n: int) -> None:
        self._hexapod, self._n, self._calls = hexapod, n, 0
        self.name = hexapod.name

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hexapod, name)

    def _count(self, command: str) -> None:
        self._calls += 1
        if self._calls == self._n:
            raise DeviceTimeoutError(self.name, "no reply within 1.0 s", command=command)

    def position(self) -> dict[str, float]:
        self._count("POS?")
        return self._hexapod.position()

    def recorded_positions(self) -> list[float]:
        self._count("DRR?")
        return self._hexapod.recorded_positions()


@pytest.mark.parametrize("fault", ["timeout", "malformed"])
def test_hexapod_faults_mid_drive(tmp_path, fault):
    def install(lab):
        if fault == "timeout":
            lab.hexapod = _HexapodTimesOut(lab.hexapod, n=30)  # mid-drive
        else:
            faults = lab.world.faults
            _when(lab, lambda: lab.world.cylinder_force_n() > 0.5,
                  lambda: faults.malformed_replies.add("hexapod"), then_after_s=1.0,
                  undo=lambda: faults.malformed_replies.discard("hexapod"))

    result, truth, store = _run(tmp_path, _indentation(), install)
    events = _events(store) + _events(store, "error")
    assert events and events[0]["unit"] == "indentation/cyl-17.5" and "state" in events[0]
    assert truth.labs[0].world.hexapod_position()["Z"] == pytest.approx(0.0, abs=1e-6)
    if result.status == "complete":
        assert store.table("indentation").keys() == ["cyl-17.5"]
    assert truth.plate_n <= 2.0
    _assert_at_rest(truth)


def test_disk_full_fails_safe_then_resumes(tmp_path, monkeypatch):
    free = disk_full(monkeypatch, "swei")
    result, truth, store = _run(tmp_path, _swei())
    assert result.status == "failed"
    assert "OSError" in result.message and "\n" not in result.message
    (error,) = _events(store, "error")
    assert error["error_type"] == "OSError" and error["state"]["safe"]
    assert "Traceback" in store.log_path().read_text()
    _assert_at_rest(truth)
    free()  # the disk was cleaned up
    again = resume_session(tmp_path / "s.zarr", show_progress=False)
    assert again.status == "complete"
    assert verify_store(tmp_path / "s.zarr").clean


def test_a_bug_in_a_protocol_fails_safe_and_recorded(tmp_path, monkeypatch):
    def buggy(unit, devices, store, **_):
        devices.robot.move_linear(np.asarray(unit.params.travel_pose), speed_m_s=0.02,
                                  acceleration_m_s2=0.2)  # moving, then a bug
        raise ValueError("bad seed -1")

    monkeypatch.setattr(session_module.swei, "run_unit", buggy)
    result, truth, store = _run(tmp_path, _swei())
    assert result.status == "failed" and "ValueError: bad seed -1" in result.message
    (error,) = _events(store, "error")
    assert error["unit"] == "swei/block-a/pos000" and error["state"]["safe"]
    assert not truth.labs[0].world.robot_moving()


def test_an_error_while_building_the_lab_is_recorded(tmp_path):
    def broken(cfg):
        raise ValueError("sim_seed must be >= 0")

    result = run_session(parse_config(_swei()), tmp_path / "s.zarr", devices_factory=broken,
                         show_progress=False)
    assert result.status == "failed" and "sim_seed" in result.message
    store = SessionStore.open(tmp_path / "s.zarr")
    assert store.attrs["status"] == "failed"
    assert _events(store, "error")[0]["error_type"] == "ValueError"


def test_double_ctrl_c_mid_press_makes_safe_and_pauses(tmp_path):
    def install(lab):
        def interrupt():
            raise KeyboardInterrupt  # what the second Ctrl-C raises, wherever the runner is

        _when(lab, _near_surface(lab, 0.001), interrupt)

    result, truth, store = _run(tmp_path, _swei(), install)
    assert result.status == "paused"
    (pause,) = _events(store, "pause")
    assert pause["state"]["safe"]
    _assert_at_rest(truth)
    assert resume_session(tmp_path / "s.zarr", show_progress=False).status == "complete"
