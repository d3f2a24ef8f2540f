"""Injected faults: devices made safe, unit discarded and redone, fault recorded, limits held."""

from __future__ import annotations

import numpy as np
import pytest
from session_testkit import at_clock, factory

from drivers.base import DeviceTimeoutError
from drivers.sim.faults import ForceSpike
from lab.session import run_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.plan import CLEARANCE_M, Plan
from protocols.testing import tiny_config

PROBE, INDENTER = 0, 1


def _faults(store):
    return [e for e in store.events("interruptions") if e["kind"] == "fault"]


def _check_store(path, tables):
    report = verify_store(path)
    assert report.clean, [str(p) for p in report.problems]
    store = SessionStore.open(path)
    plan = Plan.from_json(store.plan)
    if store.attrs["status"] == "complete":
        for t in tables:
            assert store.table(t).keys() == plan.record_keys(t.removeprefix("truth/"))
    return store


def _max_force(store, sensor, outcome_prefix="fault"):
    log = store.table("force_log")
    peaks = [r["meta"]["max_force_n"][("probe_sensor", "indenter_sensor")[sensor]]
             for r in log.records if r["meta"]["outcome"].startswith(outcome_prefix)]
    assert peaks, "no attempt of that outcome was logged"
    force, code = log.read("force_n"), log.read("sensor")
    return float(force[code == sensor].max()), peaks


def test_hexapod_disconnect_mid_run_is_retried(tmp_path):
    cfg = tiny_config(protocols=("indentation",))
    cfg = cfg.model_copy(update={"protocols": (cfg.protocols[0].model_copy(
        update={"cylinders": ("cyl-7.5",)}),)})

    def install(lab):
        world, t_off = lab.world, []

        def drop():
            world.faults.disconnect("hexapod")
            t_off.append(lab.clock.now() + 1.0)

        at_clock(lab, lambda t: world.hexapod_position()["Z"] < -1.0, drop)
        at_clock(lab, lambda t: bool(t_off) and t >= t_off[0],
                 lambda: world.faults.reconnect("hexapod"))

    make, built = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False,
                         retry_delay_s=2.0)
    assert result.status == "complete"
    store = _check_store(tmp_path / "s.zarr", ["indentation"])
    (fault,) = _faults(store)
    assert fault["device"] == "hexapod" and fault["action"] == "retry"
    peak, _ = _max_force(store, INDENTER)
    assert peak <= cfg.safety.indentation_force_limit_n
    world = built[0].world
    assert world.hexapod_position()["Z"] == pytest.approx(0.0, abs=1e-6)  # plate back up
    assert world.hexapod_on_target()
    assert len(store.table("indentation")) == 1


def test_protective_stop_is_released_and_the_position_redone(tmp_path):
    cfg = tiny_config(protocols=("swei",), positions=1, push_elements=(64,), frames=6)

    def install(lab):
        lab.world.faults.protective_stop_at_s = 4.0  # while travelling to the position

    make, built = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False)
    assert result.status == "complete"
    store = _check_store(tmp_path / "s.zarr", ["swei", "truth/swei"])
    (fault,) = _faults(store)
    assert fault["error_type"] == "ProtectiveStopError"
    assert "protective stop" in fault["state"]["robot"]
    peak, _ = _max_force(store, PROBE)
    assert peak <= cfg.safety.probe_force_max_n
    world = built[0].world
    assert not world.protective_stopped and not world.robot_moving()
    assert world.probe_contact().force_n == 0.0  # retracted


def test_probe_sensor_dropout_during_the_approach(tmp_path):
    cfg = tiny_config(protocols=("swei",), positions=1, push_elements=(64,), frames=6)
    top_z = 0.1  # block top in the bench layout (100 mm blocks on a table at z = 0)

    def install(lab):
        world, t_off = lab.world, []

        def drop():
            world.faults.sensor_dropout.add("probe_sensor")
            t_off.append(lab.clock.now() + 0.5)

        at_clock(lab, lambda t: world.robot_pose()[2] < top_z + 0.004, drop)
        at_clock(lab, lambda t: bool(t_off) and t >= t_off[0],
                 lambda: world.faults.sensor_dropout.discard("probe_sensor"))

    make, built = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False)
    assert result.status == "complete"
    store = _check_store(tmp_path / "s.zarr", ["swei"])
    (fault,) = _faults(store)
    assert fault["error_type"] == "SensorStaleError" and fault["device"] == "probe_sensor"
    assert fault["state"]["robot_z_m"] >= top_z + CLEARANCE_M - 1e-6  # lifted despite no force
    peak, _ = _max_force(store, PROBE)
    assert peak <= cfg.safety.probe_force_max_n
    assert built[0].world.probe_contact().force_n == 0.0


class _TimesOutOnce:
    """Ultrasound proxy whose n-th SWEI acquisition times out (as a hung scanner would)."""

    def __init__(self, system, fail_on):
        self._system = system
        self._calls = 0
        self._fail_on = fail_on

    def __getattr__(self, name):
        return getattr(self._system, name)

    def acquire_swei(self, push, imaging):
        self._calls += 1
        if self._calls == self._fail_on:
            raise DeviceTimeoutError("ultrasound", "no frames within 10 s", command="acquire_swei")
        return self._system.acquire_swei(push, imaging)


def test_ultrasound_timeout_discards_the_partial_position(tmp_path):
    cfg = tiny_config(protocols=("swei",), positions=1, push_elements=(48, 80), frames=6)

    def install(lab):
        lab.ultrasound = _TimesOutOnce(lab.ultrasound, fail_on=2)  # after push 0 was stored

    make, _ = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False)
    assert result.status == "complete"
    store = _check_store(tmp_path / "s.zarr", ["swei", "truth/swei"])
    (fault,) = _faults(store)
    assert fault["device"] == "ultrasound" and fault["state"]["safe"]
    # push 0 of the failed attempt was rolled back and redone: exactly one record per push
    assert store.table("swei").keys() == ["block-a/pos000/push0", "block-a/pos000/push1"]
    assert np.all(np.diff(store.table("swei").read("t_start_s")) > 0)


def test_persistent_fault_stops_cleanly_after_max_retries(tmp_path):
    cfg = tiny_config(protocols=("swei",), positions=2, push_elements=(64,), frames=6,
                      max_retries=1)

    def install(lab):
        at_clock(lab, lambda t: t >= 3.0, lambda: lab.world.faults.disconnect("robot"))

    make, built = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False,
                         retry_delay_s=0.5)
    assert result.status == "failed"
    assert "max_retries" in result.message and "elastolab session resume" in result.message
    store = _check_store(tmp_path / "s.zarr", [])
    assert store.attrs["status"] == "failed"
    faults = _faults(store)
    assert [f["action"] for f in faults] == ["retry", "stop"]
    assert store.attrs["progress"]["completed"] == []
    assert "swei" not in store.tables() or len(store.table("swei")) == 0
    world = built[0].world  # unreachable, it ends the move it had started, in the air
    end_pose = world.robot_pose(world.robot_motion_end_s())
    assert end_pose[2] > 0.1 + CLEARANCE_M - 1e-6
    assert world.probe_contact().force_n == 0.0


def test_force_spike_trips_the_watchdog_and_the_unit_is_redone(tmp_path):
    cfg = tiny_config(protocols=("swei",), positions=1, push_elements=(64,), frames=6)
    top_z = 0.1

    def install(lab):
        world = lab.world

        def knock():
            world.faults.force_spikes.append(
                ForceSpike("probe_sensor", lab.clock.now(), 0.05, 3.0))

        at_clock(lab, lambda t: world.robot_pose()[2] < top_z + 0.003, knock)

    make, built = factory(install)
    result = run_session(cfg, tmp_path / "s.zarr", devices_factory=make, show_progress=False)
    assert result.status == "complete"
    store = _check_store(tmp_path / "s.zarr", ["swei"])
    (fault,) = _faults(store)
    assert fault["error_type"] == "ForceLimitError" and fault["retryable"]
    assert fault["state"]["safe"]
    # the knock (3 N) was seen, by the first read after it, and nothing was read above it
    peak, _ = _max_force(store, PROBE)
    assert 2.0 < peak < 3.2
    assert built[0].world.probe_contact().force_n == 0.0
