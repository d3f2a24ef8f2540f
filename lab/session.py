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
  discarded. A pause requested from ``elastolab monitor`` (``logs/pause-request.json``, see
  :mod:`lab.live`) is honoured at the same safe point as the first Ctrl-C.
* Progress (k/N, current unit and phase, ETA, force ring, events) is kept in a
  :class:`lab.live.LiveState` that the console bars read and a writer thread mirrors to
  ``logs/live-*.json`` for the monitor; the acquisition never waits for those writes.
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

* Any other exception (a full disk, a ``ValueError``, a bug), in a unit or while the lab is built:
  the devices are made safe, ``{"kind": "error", ...}`` is recorded in ``interruptions`` and the
  session ends ``failed`` with a one-line message; the traceback goes to the log file only.
  ``resume`` continues once the cause is fixed. The store is created atomically with its status
  and progress (:meth:`lab.store.SessionStore.create`).

Every force sample the guard's force watches see during a unit attempt (complete or not) is stored
in the ``force_log`` table, which is never rolled back: it is the evidence that limits held, faults
included. An attempt's samples are flushed at its end and, to bound memory, every
:data:`FORCE_LOG_FLUSH_SAMPLES` (60 000, ``partial`` records); a completed unit's record is
written before its progress commit. In between they are journalled (:mod:`lab.force_journal`,
``logs/force-journal.bin``) within a clock step, so a ``kill -9`` loses none: the next run of
the runner moves them into ``force_log`` (a ``recovered`` record) before it rolls anything
back. See ``docs/safety.md``.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from drivers.base import DeviceError
from drivers.force.spec import NANO17, NANO43
from lab.config import (
    BlockConfig,
    SessionConfig,
    parse_stored_config,
    stiffest_contacts_n_per_m,
)
from lab.devices import LabDevices, build_devices
from lab.force_journal import (
    FORCE_LOG,
    Drained,
    ForceJournal,
    append_force_record,
    journal_path,
    merge_drained,
    recover_journal,
)
from lab.gelatin import youngs_modulus_kpa
from lab.live import LiveState
from lab.logs import attach_log_file, console, detach_log_file
from lab.provenance import plan_hash, utc_now
from lab.safety import ContactZone, Guard, SafetyError
from lab.session_lock import runner_lock
from lab.session_progress import SessionConsole
from lab.store import SessionStore, StoreError
from protocols import compression, indentation, swei
from protocols.common import MOTION_TIMEOUT_S
from protocols.params import IndentationParams
from protocols.plan import CLEARANCE_M, Plan, Unit, build_plan, check_plan

log = logging.getLogger(__name__)

Status = Literal["running", "paused", "complete", "failed"]
INTERRUPTIONS = "interruptions"
#: Tables that are logs of attempts, not results: never rolled back.
_NOT_ROLLED_BACK = frozenset({FORCE_LOG})
#: Clock seconds to wait before redoing a unit after a fault.
RETRY_DELAY_S = 2.0
#: Speeds of make-safe retracts.
SAFE_LIFT_SPEED_M_S = 0.01
SAFE_LIFT_ACCELERATION_M_S2 = 0.1
#: Force samples (both sensors) kept in memory before they are written to ``force_log``
#: mid-attempt. Not needed for evidence (the journal keeps every sample through a kill -9): it
#: bounds the memory of the watches' logs, ~64 bytes a sample (two lists of Python floats), so
#: 60 000 samples (5 min of one sensor at 200 Hz) hold ~3.8 MB. Each flush is one zarr append
#: (~30 ms), so the default demo's indentations flush ~8 times instead of ~500.
FORCE_LOG_FLUSH_SAMPLES = 60_000
#: Margin (m) around a phantom (and the probe face's half-length) of the near-contact zones.
CONTACT_ZONE_MARGIN_M = 0.003
#: Half the longest side of the probe face (40 mm), m.
PROBE_HALF_LENGTH_M = 0.020
#: Simulation: real seconds the force watch waits for a due sample before calling the stream
#: stale (a missing simulated sample is a fault, a busy host is not: be generous).
SIM_STREAM_TIMEOUT_S = 2.0
#: Hardware: time from a tripping sample to the start of braking beyond the watch's own wake-up
#: (RTDE round trip and controller cycle), s.
HARDWARE_STOP_LATENCY_S = 0.010
#: Deceleration of the UR's stopL as the driver sends it (m/s^2).
UR_STOP_DECELERATION_M_S2 = 10.0
_SENSOR_SPECS = {"nano17": NANO17, "nano43": NANO43}

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


def contact_zones(config: SessionConfig, layout: dict[str, list[float]]) -> list[ContactZone]:
    """Near-contact zones of the session: every block's footprint, widened by the probe face's
    half-length and :data:`CONTACT_ZONE_MARGIN_M`, from the table up to the margin above its top."""
    zones = []
    for p in config.phantoms:
        if isinstance(p, BlockConfig) and p.id in layout:
            x, y, z = layout[p.id]
            half_x = p.size_mm[0] * 5e-4 + PROBE_HALF_LENGTH_M + CONTACT_ZONE_MARGIN_M
            half_y = p.size_mm[1] * 5e-4 + PROBE_HALF_LENGTH_M + CONTACT_ZONE_MARGIN_M
            zones.append(ContactZone((x - half_x, y - half_y, -np.inf),
                                     (x + half_x, y + half_y, z + CONTACT_ZONE_MARGIN_M)))
    return zones


def build_guard(lab: LabDevices, config: SessionConfig, layout: dict[str, list[float]]) -> Guard:
    """The session's guard: force watches at the sensors' rates, contact zones of the bench,
    speed caps from the stiffest configured phantoms (starts the force streams)."""
    probe_cfg, indenter_cfg = config.lab.probe_force_sensor, config.lab.indenter_force_sensor
    probe_k, cylinder_k = stiffest_contacts_n_per_m(config)
    # the simulator stops at once; on hardware the watch thread wakes every half period and the
    # stop command takes a link round trip, then the UR brakes at its stopL deceleration
    latency_s = 0.0 if lab.simulated else 0.5 / probe_cfg.rate_hz + HARDWARE_STOP_LATENCY_S
    return Guard(lab, config.safety, sample_rate_hz=probe_cfg.rate_hz,
                 stop_latency_s=latency_s,
                 deceleration_m_s2=math.inf if lab.simulated else UR_STOP_DECELERATION_M_S2,
                 indenter_rate_hz=indenter_cfg.rate_hz,
                 stream_timeout_s=max(probe_cfg.timeout_s, indenter_cfg.timeout_s,
                                      SIM_STREAM_TIMEOUT_S if lab.simulated else 0.0),
                 contact_zones=contact_zones(config, layout), stiffest_probe_n_per_m=probe_k,
                 stiffest_cylinder_n_per_m=cylinder_k,
                 probe_range_n=_SENSOR_SPECS[probe_cfg.model].force_range_n[2],
                 indenter_range_n=_SENSOR_SPECS[indenter_cfg.model].force_range_n[2])


def plan_session(config: SessionConfig) -> tuple[Plan, list[str]]:
    """The plan of ``config`` and the limit problems found in it (empty = runnable)."""
    plan = build_plan(config)
    return plan, check_plan(plan, config)


# -- public entry points ---------------------------------------------------------------------------
def run_session(
    config: SessionConfig, store_path: str | os.PathLike[str], *,
    devices_factory: DevicesFactory | None = None, show_progress: bool = True,
    interactive: bool = False, retry_delay_s: float = RETRY_DELAY_S, live_state: bool = True,
) -> SessionResult:
    """Plan ``config``, create the store at ``store_path`` and run the session.

    ``live_state`` mirrors progress to ``STORE/logs/live-*.json`` for ``elastolab monitor``.

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
    def prepare(new: SessionStore) -> None:  # before the store becomes visible (atomic)
        new.root.require_group("phantoms").update_attributes(
            {"phantoms": phantom_table(config, plan.layout)})
        new.set_attrs(status="running", message="",
                      progress={"completed": [], "table_records": {}})

    store = SessionStore.create(store_path, config=config.model_dump(mode="json"),
                                plan=plan.to_json(), prepare=prepare)
    with runner_lock(store.path):
        runner = SessionRunner(store, config, plan, devices_factory=devices_factory,
                               show_progress=show_progress, interactive=interactive,
                               retry_delay_s=retry_delay_s, live_state=live_state)
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
    config = parse_stored_config(store.config, source=f"{store_path} (stored config)")
    plan = Plan.from_json(store.plan)
    if plan.to_json() != build_plan(config).to_json():
        log.warning("this elastolab derives a different plan from the stored config; following "
                    "the stored plan")
    runner = SessionRunner(store, config, plan, devices_factory=devices_factory,
                           show_progress=show_progress, interactive=interactive,
                           retry_delay_s=retry_delay_s)
    return runner.run(resumed=True)


# -- the runner ------------------------------------------------------------------------------------
class SessionRunner:
    """Runs the units of a plan on guarded devices, with progress, pause, faults and retries."""

    def __init__(self, store: SessionStore, config: SessionConfig, plan: Plan, *,
                 devices_factory: DevicesFactory | None = None, show_progress: bool = True,
                 interactive: bool = False, retry_delay_s: float = RETRY_DELAY_S,
                 live_state: bool = True) -> None:
        self.store = store
        self.config = config
        self.plan = plan
        self._factory = devices_factory or (
            lambda cfg: build_devices(cfg, interactive=interactive))
        self._show = show_progress
        self._retry_delay_s = retry_delay_s
        self._pause_requested = False
        self._sigint_count = 0
        # Progress model for the console and the browser monitor (logs/live-*.json).
        self.live = LiveState(store.path, name=config.name, units=plan.units, write=live_state)
        self._console: SessionConsole | None = None
        self._index = {p["phantom_id"]: i for i, p in enumerate(
            store.root["phantoms"].attrs.get("phantoms", []))} if "phantoms" in store.root else {}
        self._safe_z_m = max((o[2] for o in plan.layout.values()), default=0.0) + CLEARANCE_M
        self.guard: Guard | None = None
        self.lab: LabDevices | None = None
        self._current: tuple[Unit, int] | None = None  # unit attempt under way
        self._unit_index = {u.unit_id: i for i, u in enumerate(plan.units)}
        self._journal: ForceJournal | None = None
        self._unlogged: Drained = {}  # drained samples whose force_log record failed
        self._log_handler: logging.Handler | None = None

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

    def _limits_of(self, unit_id: str) -> dict[str, float]:
        """Force limits (N) the guard applies during ``unit_id`` (see ``Guard.set_mode``)."""
        safety = self.config.safety
        kind = self.plan.units[self._unit_index[unit_id]].kind
        return {"probe_sensor": (safety.compression_force_max_n if kind == "compression"
                                 else safety.probe_force_max_n),
                "indenter_sensor": safety.indentation_force_limit_n}

    def _recover_force_journal(self) -> int:
        """Samples of a killed run that only the force journal holds go to ``force_log``."""
        return recover_journal(self.store, self.plan.unit_ids(), limits_of=self._limits_of)

    def _log_attempt(self, unit: Unit, attempt: int, outcome: str) -> None:
        assert self.guard is not None and self._journal is not None
        self.live.collect_forces()  # the monitor's ring sees every sample before the drain
        with self._journal.drain(self.guard.drain_force_log) as (drained, generation):
            logs = merge_drained(self._unlogged, drained)
            self._unlogged = logs  # kept until committed (a failed write loses nothing)
            append_force_record(self.store, logs, {
                "unit_id": unit.unit_id, "attempt": attempt, "outcome": outcome,
                "limits_n": self.guard.limits_n, "journal": generation}, unit_id=unit.unit_id)
            self._unlogged = {}
        if outcome != "partial":
            self._journal.end_attempt()

    def _report(self, **fields: Any) -> None:
        self.live.report(**fields)
        if (self._current is not None and self.guard is not None
                and self.guard.force_log_size() >= FORCE_LOG_FLUSH_SAMPLES):
            self._log_attempt(*self._current, "partial")
        if self._console is not None:
            self._console.refresh()

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
        """Stop everything, lift the probe, raise the plate; returns the state reached.

        The force watches keep logging but do not trip meanwhile (only retracts are sent).
        """
        assert self.guard is not None
        with self.guard.making_safe():
            return self._make_safe_now(unit)

    def _make_safe_now(self, unit: Unit | None) -> dict[str, Any]:
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
        if unit is not None and isinstance(unit.params, IndentationParams):
            try:
                v = min(unit.params.retract_velocity_mm_s,
                        self.config.safety.hexapod_velocity_max_mm_s)
                dev.hexapod.lift(unit.params.start_z_mm, velocity_mm_s=v,
                                 timeout_s=MOTION_TIMEOUT_S)
                state["hexapod_z_mm"] = float(dev.hexapod.position()["z_mm"])
            except DeviceError as exc:
                errors.append(f"hexapod lift: {exc}")
        state.update(self.guard.latest_forces_n())
        state["safe"] = not errors
        if errors:
            state["errors"] = errors
            log.error("making the devices safe was incomplete: %s", "; ".join(errors))
        return state

    def _finish(self, status: Status, message: str, completed: int, *,
                event: dict[str, Any] | None = None) -> SessionResult:
        try:
            if event is not None:
                self.store.append_event(INTERRUPTIONS, event)
                self.live.event(event)
            self.live.finish(status, message)
            sessions = list(self.store.attrs.get("sessions", []))
            if sessions:
                sessions[-1] = {**sessions[-1], "stop_utc": utc_now(), "outcome": status}
            self.store.set_attrs(status=status, message=message, sessions=sessions)
        except Exception as exc:  # e.g. the disk is full: the result still says what happened
            if status != "failed":
                status, message = "failed", f"{message}; then recording it failed: {exc}"
            else:
                message = f"{message} (could not be recorded in the store: {exc})"
            self._log_traceback(exc)
        level = logging.INFO if status in ("complete", "paused") else logging.ERROR
        log.log(level, "session %s: %s", status, message)
        return SessionResult(status, completed, len(self.plan.units), message, self.store.path)

    # -- main loop -------------------------------------------------------------------------------
    def run(self, *, resumed: bool) -> SessionResult:
        """Run from the first incomplete unit to the end (or a pause / failure).

        Never raises for what goes wrong once the store exists: any error makes the devices
        safe, is recorded in ``interruptions`` and ends the session ``failed`` with a one-line
        message (the traceback goes to the store's log file).
        """
        self._log_handler = handler = attach_log_file(self.store.log_path())
        old_handler = None
        if threading.current_thread() is threading.main_thread():
            old_handler = signal.signal(signal.SIGINT, self._on_sigint)
        try:
            sessions = list(self.store.attrs.get("sessions", []))
            sessions.append({"start_utc": utc_now(), "stop_utc": None, "outcome": None,
                             "resumed": resumed, "pid": os.getpid()})
            self.store.set_attrs(status="running", sessions=sessions)
            return self._run()
        except Exception as exc:
            return self._fail_on_error(exc, None, self._try_make_safe(None))
        finally:
            self.live.close()
            self._close_devices()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
            detach_log_file(handler)
            self._log_handler = None

    def _close_devices(self) -> None:
        journal, self._journal = self._journal, None
        if journal is not None:  # what no record holds after a clean end is between units,
            try:                 # unless a record failed: then resume recovers it
                journal.close(discard=not self._unlogged)
            except OSError as exc:
                log.error("closing the force journal: %s", exc)
        guard, lab, self.guard, self.lab = self.guard, self.lab, None, None
        for close in (guard.close if guard else None, lab.close if lab else None):
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # closing must not hide how the session ended
                log.error("closing the lab: %s", exc)
                self._log_traceback(exc)

    def _log_traceback(self, exc: BaseException) -> None:
        """Write ``exc``'s traceback to the store's log file only (the console gets one line)."""
        if self._log_handler is None:
            return
        record = logging.LogRecord(__name__, logging.ERROR, __file__, 0,
                                   "traceback of %s", (type(exc).__name__,),
                                   (type(exc), exc, exc.__traceback__))
        try:
            self._log_handler.handle(record)
        except Exception:  # the log file may be on the full disk too
            pass

    def _try_make_safe(self, unit: Unit | None) -> dict[str, Any]:
        """Make safe if there is a guard; never raises (it runs while handling an error)."""
        if self.guard is None:
            return {"safe": self.lab is None, "errors": ["no guarded devices to make safe"]}
        try:
            return self._make_safe(unit)
        except Exception as exc:
            self._log_traceback(exc)
            return {"safe": False, "errors": [f"make-safe failed: {type(exc).__name__}: {exc}"]}

    def _fail_on_error(self, exc: Exception, unit: Unit | None, state: dict[str, Any]
                       ) -> SessionResult:
        """End the session ``failed`` after an error that is not a device fault."""
        where = f"{unit.unit_id}: " if unit is not None else ""
        text = " ".join(str(exc).split()) or "(no message)"
        log.error("%s%s: %s", where, type(exc).__name__, text)
        self._log_traceback(exc)
        message = (f"{where}{type(exc).__name__}: {text}. The devices were made safe"
                   f"{'' if state.get('safe') else ' as far as possible'}; traceback in "
                   f"{self.store.log_path()}. Fix the cause and run 'elastolab session resume "
                   f"{self.store.path}'")
        event = {"kind": "error", "unit": unit.unit_id if unit is not None else None,
                 "error_type": type(exc).__name__, "error": text, "state": state,
                 "action": "stop"}
        try:
            completed = self._n_completed()
        except Exception:
            completed = 0
        return self._finish("failed", message, completed, event=event)

    def _run(self) -> SessionResult:
        progress = self._progress_attr()
        completed: list[str] = list(progress["completed"])
        counts: dict[str, int] = dict(progress["table_records"])
        done = set(completed)
        todo = [u for u in self.plan.units if u.unit_id not in done]
        total = len(self.plan.units)
        recovered = self._recover_force_journal()
        if not todo:
            return self._finish("complete", "all units were already complete", len(completed))
        dropped = self._rollback(counts)
        if dropped or recovered:
            if dropped:
                log.warning("discarded %d records of an interrupted unit", dropped)
            self.store.append_event(INTERRUPTIONS, {"kind": "resume", "discarded_records": dropped,
                                                    "recovered_force_samples": recovered,
                                                    "next_unit": todo[0].unit_id})
        log.info("session %r: %d of %d units to do (about %.0f s of lab time)", self.config.name,
                 len(todo), total, sum(u.estimated_s for u in todo))
        self._journal = ForceJournal.start(journal_path(self.store.path))
        try:
            self.lab = self._factory(self.config)
            self.guard = build_guard(self.lab, self.config, self.plan.layout)
        except DeviceError as exc:
            return self._finish("failed", f"could not connect the lab: {exc}", len(completed),
                                event={"kind": "fault", "error": str(exc), "unit": None})
        self._journal.follow(self.guard.force_log_view)
        self._journal.attach(self.lab.clock)
        self.live.start(completed=completed, guard=self.guard, resumed=bool(completed))
        try:
            with SessionConsole(self.live, console=console, enabled=self._show) as view:
                self._console = view
                for unit in todo:
                    if self._pause_requested or self.live.pause_requested():
                        how = "Ctrl-C" if self._pause_requested else "monitor"
                        return self._finish(
                            "paused", f"paused by the operator before {unit.unit_id}",
                            len(completed), event={"kind": "pause", "reason": f"operator ({how})",
                                                   "next_unit": unit.unit_id})
                    self.live.unit_started(unit)
                    outcome = self._run_with_retries(unit, counts)
                    if isinstance(outcome, SessionResult):
                        return outcome
                    counts, attempt = outcome
                    # the evidence first: a kill between the two leaves a logged attempt of a
                    # unit that resume redoes, never a completed unit without its force log
                    self._log_attempt(unit, attempt, "complete")
                    self._current = None
                    completed.append(unit.unit_id)
                    self.store.set_attrs(progress={"completed": completed,
                                                   "table_records": counts})
                    self.live.unit_done(unit)
                    view.unit_done()
        finally:
            self._console = None
        return self._finish("complete", f"all {total} units complete", len(completed))

    def _run_with_retries(self, unit: Unit, counts: dict[str, int]
                          ) -> tuple[dict[str, int], int] | SessionResult:
        """Run ``unit`` until it completes (new record counts, attempt index) or the session
        has to stop (a :class:`SessionResult`)."""
        assert self.guard is not None and self.lab is not None
        attempt = 0
        rearm = False
        while True:
            self._rollback(counts)
            self._current = (unit, attempt)
            assert self._journal is not None
            self._journal.begin_attempt(self._unit_index[unit.unit_id], attempt)
            try:
                if rearm or self.guard.tripped is not None:
                    self.guard.arm()  # the links were reopened: restart the force streams
                    rearm = False
                self.guard.set_mode(unit.kind)
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
                self.live.event({**event, "action": "retry"})
                self.lab.clock.sleep(self._retry_delay_s)
                problems = self.lab.reconnect()
                if problems:
                    log.warning("reconnecting before the retry: %s", "; ".join(problems))
                rearm = True
                continue
            except Exception as exc:  # a bug, a full disk, a bad value: safe, recorded, stopped
                state = self._try_make_safe(unit)
                try:
                    self._rollback(counts)
                    self._log_attempt(unit, attempt, f"error: {type(exc).__name__}")
                except Exception as record_exc:
                    log.error("recording the failed attempt: %s", record_exc)
                    self._log_traceback(record_exc)
                return self._fail_on_error(exc, unit, state)
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
