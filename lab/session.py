"""The session runner: plan, run unit by unit, persist progress, pause, resume, handle faults.

Lifecycle of a store (root attributes):

* :func:`run_session` derives the plan from the config (:func:`protocols.plan.build_plan`),
  refuses it if :func:`protocols.plan.check_plan` finds a limit problem, and creates the store
  with the config, the plan and its hash **before the first motion**; ``status = "running"``.
* After every completed unit one atomic ``set_attrs`` call records
  ``progress = {"completed": [unit ids], "table_records": {table: records}}``.
* Ctrl-C (SIGINT) asks for a pause: the current unit finishes (probe retracted, hexapod stopped)
  and the session stops with ``status = "paused"`` and a ``pause`` event in ``interruptions``. A
  second Ctrl-C interrupts the unit at once: the devices are made safe and the partial unit is
  discarded.
* :func:`resume_session` reopens a store (trimming uncommitted rows), rolls every table back to
  the record counts of the last completed unit (:meth:`lab.store.Table.truncate`) and continues
  with the first incomplete unit of the stored plan. Nothing is replayed blindly: every unit starts
  by lifting the probe to the travel height (or re-referencing the hexapod) from wherever it is.
* Faults (:class:`~drivers.base.DeviceError`: disconnects, protective stops, sensor dropouts,
  ultrasound timeouts, force trips): the devices are made safe (motion stopped, probe lifted,
  plate raised), the partial unit is discarded, the fault is recorded with
  ``store.append_event("interruptions", ...)``, then the unit is redone after the operator
  acknowledges (simulated: automatically) and the links are reconnected, up to ``max_retries``
  times; otherwise the session stops cleanly with ``status = "failed"`` and a message saying why.
  Refusals by the safety guard (a target outside the limits) are never retried.
* One runner per store: ``run`` and ``resume`` hold ``STORE/logs/runner.lock``
  (:mod:`lab.session_lock`) while they work; a second process is refused, a lock left by a
  killed runner on this host is taken over with a warning.
* Before every unit the guard checks that the robot stands inside the workspace box
  (:meth:`lab.safety.GuardedRobot.check_start_pose`); a robot outside it stops the session.
* Every run of the runner appends ``{"start_utc", "stop_utc", "outcome", "resumed"}`` to
  ``sessions``; logs go to ``store.log_path()`` as well as the console.

Every force sample the guard's watchdogs read during a unit attempt (complete or not) is stored in
the ``force_log`` table (one record per attempt), which is never rolled back: it is the evidence
that limits held, faults included.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from rich.progress import (
    BarColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from drivers.base import DeviceError
from lab.config import BlockConfig, SessionConfig, parse_config
from lab.devices import LabDevices, build_devices
from lab.gelatin import youngs_modulus_kpa
from lab.logs import attach_log_file, console, detach_log_file
from lab.provenance import plan_hash, utc_now
from lab.safety import Guard, SafetyError
from lab.session_lock import runner_lock
from lab.store import ArraySpec, SessionStore, StoreError
from protocols import compression, indentation, swei
from protocols.common import MOTION_TIMEOUT_S
from protocols.plan import CLEARANCE_M, Plan, Unit, build_plan, check_plan

log = logging.getLogger(__name__)

Status = Literal["running", "paused", "complete", "failed"]
INTERRUPTIONS = "interruptions"
FORCE_LOG = "force_log"
#: Tables that are logs of attempts, not results: never rolled back.
_NOT_ROLLED_BACK = frozenset({FORCE_LOG})
#: Clock seconds to wait before redoing a unit after a fault.
RETRY_DELAY_S = 2.0
#: Speeds of make-safe retracts.
SAFE_LIFT_SPEED_M_S = 0.01
SAFE_LIFT_ACCELERATION_M_S2 = 0.1
SENSOR_CODES = {"probe_sensor": 0, "indenter_sensor": 1}

DevicesFactory = Callable[[SessionConfig], LabDevices]


class SessionError(RuntimeError):
    """The session cannot start or resume (plan outside limits, store mismatch)."""


@dataclass(frozen=True)
class SessionResult:
    """How a run of the runner ended."""

    status: Status
    completed: int
    total: int
    message: str
    store_path: Path


def phantom_table(config: SessionConfig, layout: dict[str, list[float]]) -> list[dict[str, Any]]:
    """The ``phantoms`` attribute list of the store (``phantom_index`` arrays index it)."""
    out = []
    for p in config.phantoms:
        entry: dict[str, Any] = {"phantom_id": p.id, "kind": p.kind,
                                 "gelatin_percent": p.gelatin_percent,
                                 "youngs_modulus_kpa": youngs_modulus_kpa(p.gelatin_percent)}
        if isinstance(p, BlockConfig):
            entry.update(size_mm=list(p.size_mm), viscosity_pa_s=p.viscosity_pa_s,
                         speckle_seed=p.speckle_seed, origin_m=layout.get(p.id))
            entry["inclusions"] = [
                {"x_mm": i.x_mm, "z_mm": i.z_mm, "radius_mm": i.radius_mm,
                 "gelatin_percent": i.gelatin_percent,
                 "youngs_modulus_kpa": youngs_modulus_kpa(i.gelatin_percent)}
                for i in p.inclusions
            ]
        else:
            entry.update(radius_mm=p.radius_mm, height_mm=p.height_mm, inclusions=[])
        out.append(entry)
    return out


def plan_session(config: SessionConfig) -> tuple[Plan, list[str]]:
    """The plan of ``config`` and the limit problems found in it (empty = runnable)."""
    plan = build_plan(config)
    return plan, check_plan(plan, config)


# -- public entry points ---------------------------------------------------------------------------
def run_session(
    config: SessionConfig, store_path: str | os.PathLike[str], *,
    devices_factory: DevicesFactory | None = None, show_progress: bool = True,
    interactive: bool = False, retry_delay_s: float = RETRY_DELAY_S,
) -> SessionResult:
    """Plan ``config``, create the store at ``store_path`` and run the session.

    Raises
    ------
    SessionError
        The plan breaks a safety limit (nothing is created or moved).
    lab.store.StoreError
        ``store_path`` exists.
    lab.session_lock.StoreLockedError
        Another runner took the new store's lock first (a ``resume`` started meanwhile).
    """
    plan, problems = plan_session(config)
    if problems:
        raise SessionError("the plan breaks the safety limits; nothing was started:\n  "
                           + "\n  ".join(problems))
    store = SessionStore.create(store_path, config=config.model_dump(mode="json"),
                                plan=plan.to_json())
    with runner_lock(store.path):
        store.root.require_group("phantoms").update_attributes(
            {"phantoms": phantom_table(config, plan.layout)})
        store.set_attrs(status="running", message="",
                        progress={"completed": [], "table_records": {}})
        runner = SessionRunner(store, config, plan, devices_factory=devices_factory,
                               show_progress=show_progress, interactive=interactive,
                               retry_delay_s=retry_delay_s)
        return runner.run(resumed=False)


def resume_session(
    store_path: str | os.PathLike[str], *, devices_factory: DevicesFactory | None = None,
    show_progress: bool = True, interactive: bool = False, retry_delay_s: float = RETRY_DELAY_S,
) -> SessionResult:
    """Continue the session stored at ``store_path`` from its first incomplete unit.

    Raises
    ------
    SessionError
        The store has no plan or its plan does not match its hash.
    lab.session_lock.StoreLockedError
        Another runner holds the store (see :mod:`lab.session_lock`).
    """
    SessionStore.open(store_path, mode="r")  # is it a store? (read-only: touches nothing)
    with runner_lock(store_path):
        return _resume_locked(store_path, devices_factory=devices_factory,
                              show_progress=show_progress, interactive=interactive,
                              retry_delay_s=retry_delay_s)


def _resume_locked(
    store_path: str | os.PathLike[str], *, devices_factory: DevicesFactory | None,
    show_progress: bool, interactive: bool, retry_delay_s: float,
) -> SessionResult:
    store = SessionStore.open(store_path, mode="a")  # trims uncommitted rows
    attrs = store.attrs
    if store.plan is None or "progress" not in attrs:
        raise SessionError(f"{store_path} was not written by the session runner (no plan or "
                           "progress); nothing to resume")
    if plan_hash(store.plan) != attrs.get("plan_hash"):
        raise SessionError(f"{store_path}: the stored plan does not match its hash; the store was "
                           "modified outside elastolab")
    config = parse_config(store.config, source=f"{store_path} (stored config)")
    plan = Plan.from_json(store.plan)
    if plan.to_json() != build_plan(config).to_json():
        log.warning("this elastolab derives a different plan from the stored config; following "
                    "the stored plan")
    runner = SessionRunner(store, config, plan, devices_factory=devices_factory,
                           show_progress=show_progress, interactive=interactive,
                           retry_delay_s=retry_delay_s)
    return runner.run(resumed=True)


# -- progress display ------------------------------------------------------------------------------
class _SessionProgress(Progress):
    """A progress bar (ETA from the plan's duration estimates) plus a live summary line."""

    summary: str = ""

    def get_renderables(self) -> Any:
        yield self.make_tasks_table(self.tasks)
        yield Text(self.summary, overflow="ellipsis", no_wrap=True)


# -- the runner ------------------------------------------------------------------------------------
class SessionRunner:
    """Runs the units of a plan on guarded devices, with progress, pause, faults and retries."""

    def __init__(self, store: SessionStore, config: SessionConfig, plan: Plan, *,
                 devices_factory: DevicesFactory | None = None, show_progress: bool = True,
                 interactive: bool = False, retry_delay_s: float = RETRY_DELAY_S) -> None:
        self.store = store
        self.config = config
        self.plan = plan
        self._factory = devices_factory or (
            lambda cfg: build_devices(cfg, interactive=interactive))
        self._show = show_progress
        self._retry_delay_s = retry_delay_s
        self._pause_requested = False
        self._sigint_count = 0
        self._summary: dict[str, Any] = {}
        self._progress: _SessionProgress | None = None
        self._index = {p["phantom_id"]: i for i, p in enumerate(
            store.root["phantoms"].attrs.get("phantoms", []))} if "phantoms" in store.root else {}
        self._safe_z_m = max((o[2] for o in plan.layout.values()), default=0.0) + CLEARANCE_M
        self.guard: Guard | None = None
        self.lab: LabDevices | None = None

    # -- bookkeeping -----------------------------------------------------------------------------
    def _progress_attr(self) -> dict[str, Any]:
        return dict(self.store.attrs.get("progress") or {"completed": [], "table_records": {}})

    def _result_tables(self) -> list[str]:
        return [t for t in self.store.tables() if t not in _NOT_ROLLED_BACK]

    def _rollback(self, counts: dict[str, int]) -> int:
        """Roll every result table back to ``counts`` records; returns records dropped."""
        dropped = 0
        for name in self._result_tables():
            table = self.store.table(name)
            table.discard_uncommitted()
            dropped += table.truncate(min(counts.get(name, 0), len(table)))
        return dropped

    def _log_attempt(self, unit: Unit, attempt: int, outcome: str) -> None:
        assert self.guard is not None
        logs = self.guard.drain_force_log()
        t = np.concatenate([v[0] for v in logs.values()])
        if t.size == 0:
            return
        f = np.concatenate([v[1] for v in logs.values()])
        code = np.concatenate([np.full(v[0].size, SENSOR_CODES[k], np.int8)
                               for k, v in logs.items()])
        table = self.store.require_table(FORCE_LOG, row_dim="sample", arrays=[
            ArraySpec("t_s", (), "float64", ("sample",), row_chunk=8192),
            ArraySpec("force_n", (), "float32", ("sample",), row_chunk=8192),
            ArraySpec("sensor", (), "int8", ("sample",), row_chunk=8192),
        ], attrs={"sensors": SENSOR_CODES, "description": "every force sample the safety "
                  "watchdogs read, one record per unit attempt (faults included)"})
        key = f"{len(table):05d}:{unit.unit_id}"
        table.append(key, {"t_s": t, "force_n": f, "sensor": code},
                     {"unit_id": unit.unit_id, "attempt": attempt, "outcome": outcome,
                      "limits_n": self.guard.limits_n,
                      "max_force_n": {k: float(v[1].max()) if v[1].size else None
                                      for k, v in logs.items()}})

    def _report(self, **fields: Any) -> None:
        self._summary.update(fields)
        if self._progress is None:
            return
        s = self._summary
        parts = [f"unit {s.get('k', '?')}/{s.get('n', '?')} {s.get('unit', '')}",
                 str(s.get("phase", ""))]
        if "push" in s:
            parts.append(f"push {s['push']}")
        if "force_n" in s:
            parts.append(f"force {s['force_n']:.3f} N")
        if s.get("last"):
            parts.append(f"last {s['last']}")
        self._progress.summary = " | ".join(parts)
        self._progress.refresh()

    # -- signals ---------------------------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._sigint_count += 1
        if self._sigint_count == 1:
            self._pause_requested = True
            log.warning("pause requested: finishing the current unit, then stopping at a safe "
                        "point (Ctrl-C again to interrupt now)")
            return
        raise KeyboardInterrupt

    # -- safety ----------------------------------------------------------------------------------
    def _make_safe(self, unit: Unit | None) -> dict[str, Any]:
        """Stop everything, lift the probe, raise the plate; returns the state reached."""
        assert self.guard is not None
        dev = self.guard.devices
        state: dict[str, Any] = {}
        errors: list[str] = []
        for name, device in (("robot", dev.robot), ("hexapod", dev.hexapod)):
            try:
                device.stop()
            except DeviceError as exc:
                errors.append(f"{name} stop: {exc}")
        try:
            if dev.robot.protective_stopped:
                state["robot"] = "protective stop: not moved (operator must release it)"
            else:
                dev.robot.lift(self._safe_z_m, speed_m_s=min(SAFE_LIFT_SPEED_M_S,
                                                             self.config.safety.robot_speed_max_m_s),
                               acceleration_m_s2=min(SAFE_LIFT_ACCELERATION_M_S2,
                                                     self.config.safety.robot_acceleration_max_m_s2),
                               timeout_s=MOTION_TIMEOUT_S)
            state["robot_z_m"] = float(dev.robot.tool_pose()[2])
        except DeviceError as exc:
            errors.append(f"robot lift: {exc}")
        if unit is not None and unit.kind == "indentation":
            try:
                v = min(unit.params["retract_velocity_mm_s"],
                        self.config.safety.hexapod_velocity_max_mm_s)
                dev.hexapod.lift(unit.params["start_z_mm"], velocity_mm_s=v,
                                 timeout_s=MOTION_TIMEOUT_S)
                state["hexapod_z_mm"] = float(dev.hexapod.position()["z_mm"])
            except DeviceError as exc:
                errors.append(f"hexapod lift: {exc}")
        for name, watchdog in (("probe_force_n", dev.probe_sensor),
                               ("indenter_force_n", dev.indenter_sensor)):
            try:
                state[name] = float(watchdog.read().fz_n)
            except DeviceError as exc:
                errors.append(f"{name} read: {exc}")
        state["safe"] = not errors
        if errors:
            state["errors"] = errors
            log.error("making the devices safe was incomplete: %s", "; ".join(errors))
        return state

    def _finish(self, status: Status, message: str, completed: int, *,
                event: dict[str, Any] | None = None) -> SessionResult:
        if event is not None:
            self.store.append_event(INTERRUPTIONS, event)
        sessions = list(self.store.attrs.get("sessions", []))
        if sessions:
            sessions[-1] = {**sessions[-1], "stop_utc": utc_now(), "outcome": status}
        self.store.set_attrs(status=status, message=message, sessions=sessions)
        level = logging.INFO if status in ("complete", "paused") else logging.ERROR
        log.log(level, "session %s: %s", status, message)
        return SessionResult(status, completed, len(self.plan.units), message, self.store.path)

    # -- main loop -------------------------------------------------------------------------------
    def run(self, *, resumed: bool) -> SessionResult:
        """Run from the first incomplete unit to the end (or a pause / failure)."""
        handler = attach_log_file(self.store.log_path())
        sessions = list(self.store.attrs.get("sessions", []))
        sessions.append({"start_utc": utc_now(), "stop_utc": None, "outcome": None,
                         "resumed": resumed, "pid": os.getpid()})
        self.store.set_attrs(status="running", sessions=sessions)
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            return self._run()
        finally:
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            detach_log_file(handler)

    def _run(self) -> SessionResult:
        progress = self._progress_attr()
        completed: list[str] = list(progress["completed"])
        counts: dict[str, int] = dict(progress["table_records"])
        done = set(completed)
        todo = [u for u in self.plan.units if u.unit_id not in done]
        total = len(self.plan.units)
        if not todo:
            return self._finish("complete", "all units were already complete", len(completed))
        dropped = self._rollback(counts)
        if dropped:
            log.warning("discarded %d records of an interrupted unit", dropped)
            self.store.append_event(INTERRUPTIONS, {"kind": "resume", "discarded_records": dropped,
                                                    "next_unit": todo[0].unit_id})
        log.info("session %r: %d of %d units to do (about %.0f s of lab time)", self.config.name,
                 len(todo), total, sum(u.estimated_s for u in todo))
        try:
            self.lab = self._factory(self.config)
        except DeviceError as exc:
            return self._finish("failed", f"could not connect the lab: {exc}", len(completed),
                                event={"kind": "fault", "error": str(exc), "unit": None})
        rate = max(self.config.lab.probe_force_sensor.rate_hz,
                   self.config.lab.indenter_force_sensor.rate_hz)
        self.guard = Guard(self.lab, self.config.safety, sample_rate_hz=rate)
        bar = _SessionProgress(
            TextColumn("[bold]{task.description}"), BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console,
            disable=not self._show,
        )
        try:
            with bar:
                self._progress = bar
                task = bar.add_task(self.config.name, total=sum(u.estimated_s for u in todo))
                for unit in todo:
                    if self._pause_requested:
                        return self._finish(
                            "paused", f"paused by the operator before {unit.unit_id}",
                            len(completed), event={"kind": "pause", "reason": "operator (Ctrl-C)",
                                                   "next_unit": unit.unit_id})
                    self._summary = {"k": len(completed) + 1, "n": total, "unit": unit.unit_id}
                    outcome = self._run_with_retries(unit, counts)
                    if isinstance(outcome, SessionResult):
                        return outcome
                    counts, attempt = outcome
                    completed.append(unit.unit_id)
                    self.store.set_attrs(progress={"completed": completed,
                                                   "table_records": counts})
                    self._log_attempt(unit, attempt, "complete")
                    bar.advance(task, unit.estimated_s)
        finally:
            self._progress = None
            self.lab.close()
        return self._finish("complete", f"all {total} units complete", len(completed))

    def _run_with_retries(self, unit: Unit, counts: dict[str, int]
                          ) -> tuple[dict[str, int], int] | SessionResult:
        """Run ``unit`` until it completes (new record counts, attempt index) or the session
        has to stop (a :class:`SessionResult`)."""
        assert self.guard is not None and self.lab is not None
        attempt = 0
        while True:
            self._rollback(counts)
            self.guard.set_mode(unit.kind)
            try:
                self.guard.devices.robot.check_start_pose()
                self._dispatch(unit)
            except KeyboardInterrupt:
                state = self._make_safe(unit)
                self._rollback(counts)
                self._log_attempt(unit, attempt, "interrupted")
                return self._finish(
                    "paused", f"interrupted during {unit.unit_id}; the unit will be redone",
                    self._n_completed(), event={"kind": "pause", "reason": "operator (Ctrl-C "
                                                "twice)", "unit": unit.unit_id, "state": state})
            except DeviceError as exc:
                state = self._make_safe(unit)
                self._rollback(counts)
                self._log_attempt(unit, attempt, f"fault: {type(exc).__name__}")
                retryable = not isinstance(exc, SafetyError) or exc.retryable
                attempt += 1
                event = {"kind": "fault", "unit": unit.unit_id, "attempt": attempt,
                         "error_type": type(exc).__name__, "device": exc.device,
                         "error": str(exc), "state": state, "clock_s": self.lab.clock.now(),
                         "retryable": retryable}
                log.error("fault in %s (attempt %d): %s", unit.unit_id, attempt, exc)
                if not retryable:
                    return self._finish(
                        "failed", f"{unit.unit_id} refused by the safety guard: {exc}",
                        self._n_completed(), event={**event, "action": "stop"})
                if attempt > self.config.max_retries:
                    return self._finish(
                        "failed", f"{unit.unit_id} failed {attempt} times (max_retries = "
                        f"{self.config.max_retries}); last error: {exc}. Fix the cause and run "
                        f"'elastolab session resume {self.store.path}'",
                        self._n_completed(), event={**event, "action": "stop"})
                if not self.lab.operator.acknowledge_fault(exc):
                    return self._finish(
                        "failed", f"{unit.unit_id}: the fault was not cleared by an operator: "
                        f"{exc}", self._n_completed(), event={**event, "action": "stop"})
                self.store.append_event(INTERRUPTIONS, {**event, "action": "retry"})
                self.lab.clock.sleep(self._retry_delay_s)
                problems = self.lab.reconnect()
                if problems:
                    log.warning("reconnecting before the retry: %s", "; ".join(problems))
                continue
            return {t: len(self.store.table(t)) for t in self._result_tables()}, attempt

    def _n_completed(self) -> int:
        return len(self._progress_attr()["completed"])

    def _dispatch(self, unit: Unit) -> dict[str, Any]:
        assert self.guard is not None
        dev = self.guard.devices
        if unit.kind == "swei":
            if unit.phantom_id not in self._index:
                raise StoreError(f"phantom {unit.phantom_id!r} is not in the store's phantom list")
            return swei.run_unit(unit, dev, self.store, phantom_index=self._index[unit.phantom_id],
                                 report=self._report)
        if unit.kind == "indentation":
            return indentation.run_unit(unit, dev, self.store, report=self._report)
        return compression.run_unit(unit, dev, self.store, report=self._report)
