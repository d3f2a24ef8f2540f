"""The live state of a running session: a small JSON record and a force ring, for the monitor.

The runner keeps a :class:`LiveState` up to date (one call per unit start, phase report, unit end,
event and finish). A background thread writes two files into the store's ``logs/`` directory
about once a second, each atomically (temp file + :func:`os.replace`), so a reader in another
process (``elastolab monitor``, ``elastolab info``), possibly over a network share, only ever sees
a whole file and never takes a lock the runner waits on:

``logs/live-state.json``
    status, unit k/N with the current unit, phase and protocol, per-protocol counts, ETA (see
    :mod:`lab.eta`), the active force limits, the recent faults and pauses.
``logs/live-force.json``
    the last :data:`RING_SAMPLES` force samples of each sensor (lab-clock time, Fz in N), taken
    from the safety watchdogs' logs (:meth:`lab.safety.Guard.force_log_view`).

The acquisition never waits for the disk: the runner thread only updates dictionaries in memory;
encoding and writing happen on the writer thread.

A pause can be requested from outside the runner (the monitor's button) with
:func:`request_pause`: it writes ``logs/pause-request.json``, which the runner checks at the same
safe point as the first Ctrl-C (between units) and removes when it honours it.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from lab.eta import EtaEstimator
from lab.provenance import utc_now
from lab.store import LOG_DIR, SessionStore, json_default

log = logging.getLogger(__name__)

LIVE_STATE = "live-state.json"
LIVE_FORCE = "live-force.json"
PAUSE_REQUEST = "pause-request.json"
#: Force samples kept per sensor in the ring (at 200 Hz: the last 10 s).
RING_SAMPLES = 2000
#: Points of the running indentation curve kept in the live record.
CURVE_POINTS = 400
#: Faults and pauses kept in the live record.
EVENTS_KEPT = 50
#: Schema version of the live files.
LIVE_SCHEMA = 1
#: A live record older than this (wall seconds) while "running" means the runner is gone.
STALE_AFTER_S = 10.0


class ForceLogSource(Protocol):
    """What the live state needs from the guard: the watchdogs' logs since their last drain."""

    def force_log_view(self) -> dict[str, tuple[Sequence[float], Sequence[float]]]: ...

    @property
    def limits_n(self) -> dict[str, float]: ...


class UnitLike(Protocol):
    unit_id: str
    kind: str
    estimated_s: float


def live_path(store_path: str | os.PathLike[str], name: str) -> Path:
    """Path of live file ``name`` (one of the module constants) of the store at ``store_path``."""
    return Path(store_path) / LOG_DIR / name


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` so that readers see the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, default=json_default, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when it is missing or not (yet) valid JSON."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def request_pause(store_path: str | os.PathLike[str], *, source: str = "monitor") -> Path:
    """Ask the runner of ``store_path`` to pause after its current unit (like one Ctrl-C).

    Raises
    ------
    FileNotFoundError
        ``store_path`` has no ``logs/`` directory (not a session store).
    """
    path = live_path(store_path, PAUSE_REQUEST)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"{store_path} has no {LOG_DIR}/ directory; not a session store")
    write_json_atomic(path, {"requested_utc": utc_now(), "source": source,
                             "host": socket.gethostname(), "pid": os.getpid()})
    return path


def _finite(x: Any) -> Any:
    return x if not isinstance(x, float) or (x == x and abs(x) != float("inf")) else None


class LogTail:
    """Follows one watchdog log (a list that a drain replaces) without losing samples."""

    def __init__(self) -> None:
        self.source: Sequence[float] | None = None
        self.source_f: Sequence[float] = ()
        self.seen = 0

    def take(self, t_view: Sequence[float], f_view: Sequence[float]
             ) -> tuple[list[float], list[float]]:
        t_new: list[float] = []
        f_new: list[float] = []
        if self.source is not None and self.source is not t_view:  # drained: finish the old list
            t_new += list(self.source[self.seen:])
            f_new += list(self.source_f[self.seen:])
            self.seen = 0
        n = min(len(t_view), len(f_view))
        t_new += list(t_view[self.seen:n])
        f_new += list(f_view[self.seen:n])
        self.source, self.source_f, self.seen = t_view, f_view, n
        return t_new, f_new


class LiveState:
    """In-memory progress model of one run of the runner, mirrored to the live files.

    Parameters
    ----------
    store_path : path
        The session store (files go to ``STORE/logs/``).
    name : str
        Session name.
    units : sequence of Unit
        Every unit of the plan, in order.
    write : bool, optional
        Mirror to disk (False: the model still feeds the console progress; nothing is written).
    interval_s : float, optional
        Wall seconds between writes (a unit start, end or event writes sooner, at most four
        times per interval).
    ring_samples : int, optional
        Force samples kept per sensor.
    """

    def __init__(self, store_path: str | os.PathLike[str], *, name: str,
                 units: Sequence[UnitLike], write: bool = True, interval_s: float = 1.0,
                 ring_samples: int = RING_SAMPLES) -> None:
        self.store_path = Path(store_path)
        self.write = write
        self.interval_s = float(interval_s)
        self._units = {u.unit_id: u for u in units}
        self._totals = Counter(u.kind for u in units)
        self._lock = threading.Lock()
        self._force_lock = threading.Lock()  # the ring: writer thread vs the runner
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._guard: ForceLogSource | None = None
        self._tails: dict[str, LogTail] = {}
        self._ring: dict[str, deque[tuple[float, float]]] = {}
        self._ring_samples = int(ring_samples)
        self._force_seq = 0
        self._written_force_seq = -1
        self._dirty = True
        self._completed: list[str] = []
        self._done_kinds: Counter[str] = Counter()
        self.eta = EtaEstimator.for_units([])
        self._started_wall = time.monotonic()
        self._state: dict[str, Any] = {
            "schema": LIVE_SCHEMA, "name": name, "status": "running", "message": "",
            "pid": os.getpid(), "host": socket.gethostname(), "started_utc": utc_now(),
            "k": 0, "n": len(units), "current": {}, "last_unit": None, "events": [],
            "pause_requested": False, "limits_n": {},
        }

    # -- runner side ---------------------------------------------------------------------------
    def start(self, *, completed: Sequence[str], guard: ForceLogSource | None = None,
              resumed: bool = False) -> None:
        """The runner is about to do the units not in ``completed``; starts the writer."""
        self._completed = list(completed)
        self._done_kinds = Counter(self._units[u].kind for u in completed if u in self._units)
        self.eta = EtaEstimator.for_units(
            (u.unit_id, u.estimated_s) for u in self._units.values() if u.unit_id not in
            set(completed))
        self._guard = guard
        self._started_wall = time.monotonic()
        if self.write:  # a resumed run continues the trace of the previous one
            previous = read_json(live_path(self.store_path, LIVE_FORCE)) or {}
            for sensor, d in (previous.get("sensors") or {}).items():
                ring = self._ring.setdefault(sensor, deque(maxlen=self._ring_samples))
                ring.extend(zip(d.get("t_s", []), d.get("force_n", []), strict=False))
            self._force_seq = int(previous.get("samples_seen", 0))
        stale = live_path(self.store_path, PAUSE_REQUEST)
        if self.write and stale.exists():
            log.warning("ignoring a pause request left from before this run (%s)", stale)
            stale.unlink(missing_ok=True)
        with self._lock:
            self._state.update(status="running", resumed=resumed, k=len(self._completed),
                               last_unit=self._completed[-1] if self._completed else None)
            self._dirty = True
        if self.write and self._thread is None:
            self._thread = threading.Thread(target=self._writer, name="live-state", daemon=True)
            self._thread.start()

    def unit_started(self, unit: UnitLike) -> None:
        self.eta.unit_started(unit.unit_id)
        with self._lock:
            self._state["current"] = {"unit": unit.unit_id, "kind": unit.kind,
                                      "k": len(self._completed) + 1, "phase": "start"}
            self._dirty = True
        self._wake.set()

    def report(self, **fields: Any) -> None:
        """Phase, force and push reports of the protocols (cheap: memory only).

        Reports with both ``position_mm`` and ``force_n`` (indentation) also extend the current
        unit's ``curve`` (at most :data:`CURVE_POINTS` points, then every second one is kept).
        """
        with self._lock:
            current = self._state["current"]
            for key in ("phase", "push", "last", "force_n", "position_mm"):
                if key in fields:
                    current[key] = _finite(fields[key])
            if "position_mm" in fields and "force_n" in fields:
                curve = current.setdefault("curve", {"position_mm": [], "force_n": []})
                curve["position_mm"].append(_finite(float(fields["position_mm"])))
                curve["force_n"].append(_finite(float(fields["force_n"])))
                if len(curve["force_n"]) > CURVE_POINTS:
                    curve["position_mm"] = curve["position_mm"][::2]
                    curve["force_n"] = curve["force_n"][::2]
            self._dirty = True

    def unit_done(self, unit: UnitLike) -> None:
        self.eta.unit_done(unit.unit_id)
        self._completed.append(unit.unit_id)
        self._done_kinds[unit.kind] += 1
        with self._lock:
            self._state.update(k=len(self._completed), last_unit=unit.unit_id)
            self._state["current"] = {}
            self._dirty = True
        self._wake.set()

    def event(self, event: dict[str, Any]) -> None:
        """A fault, retry, pause or resume (as appended to the store's ``interruptions``)."""
        entry = {"utc": utc_now(), **{k: v for k, v in event.items() if k != "state"}}
        with self._lock:
            self._state["events"] = [*self._state["events"], entry][-EVENTS_KEPT:]
            self._dirty = True
        self._wake.set()

    def pause_requested(self) -> bool:
        """Has someone asked (through :func:`request_pause`) for a pause? Checked between units."""
        if not self.write:
            return False
        requested = live_path(self.store_path, PAUSE_REQUEST).exists()
        if requested:
            with self._lock:
                self._state["pause_requested"] = True
        return requested

    def finish(self, status: str, message: str) -> None:
        """The run ended (complete, paused, failed); a pause request is consumed."""
        with self._lock:
            self._state.update(status=status, message=message, current={})
            self._dirty = True
        if self.write and status != "running":
            live_path(self.store_path, PAUSE_REQUEST).unlink(missing_ok=True)
            with self._lock:
                self._state["pause_requested"] = False

    def close(self) -> None:
        """Stop the writer and write the final files (safe to call twice)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            self._wake.set()
            thread.join()
        if self.write:
            self._flush()

    # -- model -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, Any]:
        """The live record as a JSON-ready dict (what ``live-state.json`` holds)."""
        eta_s = self.eta.eta_s()
        with self._lock:
            state = json.loads(json.dumps(self._state, default=json_default))
        state["protocols"] = {kind: {"done": self._done_kinds.get(kind, 0), "total": total}
                              for kind, total in self._totals.items()}
        total_s = sum(u.estimated_s for u in self._units.values())
        remaining_s = self.eta.remaining_estimate_s
        state.update(eta_s=eta_s, wall_per_lab_s=self.eta.ratio,
                     fraction_done=1.0 - remaining_s / total_s if total_s > 0 else 1.0,
                     remaining_lab_s=remaining_s,
                     elapsed_s=time.monotonic() - self._started_wall,
                     updated_utc=utc_now(), updated_unix=time.time())
        if self._guard is not None:
            state["limits_n"] = dict(self._guard.limits_n)
        return state

    def collect_forces(self) -> None:
        """Take the samples logged since the last call into the ring. The runner calls it just
        before it drains the guard's force logs, so a drain between two writer ticks (a short
        unit, a partial flush) loses nothing."""
        with self._force_lock:
            self._collect_forces()

    def _collect_forces(self) -> None:
        if self._guard is None:
            return
        for sensor, (t_view, f_view) in self._guard.force_log_view().items():
            tail = self._tails.setdefault(sensor, LogTail())
            ring = self._ring.setdefault(sensor, deque(maxlen=self._ring_samples))
            t_new, f_new = tail.take(t_view, f_view)
            if t_new:
                ring.extend(zip(t_new, f_new, strict=True))
                self._force_seq += len(t_new)

    def force_snapshot(self) -> dict[str, Any]:
        """The force ring as a JSON-ready dict (what ``live-force.json`` holds)."""
        sensors = {name: {"t_s": [round(t, 4) for t, _ in ring],
                          "force_n": [round(f, 5) for _, f in ring]}
                   for name, ring in self._ring.items()}
        return {"schema": LIVE_SCHEMA, "samples_seen": self._force_seq, "sensors": sensors,
                "limits_n": dict(self._guard.limits_n) if self._guard is not None else {},
                "updated_unix": time.time()}

    # -- writer thread ---------------------------------------------------------------------------
    def _flush(self) -> None:
        self.collect_forces()
        try:
            if self._force_seq != self._written_force_seq:
                write_json_atomic(live_path(self.store_path, LIVE_FORCE), self.force_snapshot())
                self._written_force_seq = self._force_seq
            write_json_atomic(live_path(self.store_path, LIVE_STATE), self.snapshot())
            self._dirty = False
        except (OSError, ValueError) as exc:  # the monitor is a convenience: never stop a run
            log.warning("could not write the live state: %s", exc)

    def _writer(self) -> None:
        min_gap_s = self.interval_s / 4
        last = 0.0
        while not self._stop.is_set():
            self._wake.wait(self.interval_s)
            self._wake.clear()
            wait_s = min_gap_s - (time.monotonic() - last)
            if wait_s > 0 and self._stop.wait(wait_s):
                break
            self._flush()
            last = time.monotonic()


# -- reader side ---------------------------------------------------------------------------------
def state_from_store(store: SessionStore) -> dict[str, Any]:
    """A live-state-shaped record from the store's attributes alone (no live file)."""
    attrs = store.attrs
    plan = store.plan or {}
    units = plan.get("units", []) if isinstance(plan, dict) else []
    completed = (attrs.get("progress") or {}).get("completed", [])
    done = set(completed)
    totals = Counter(u["kind"] for u in units)
    done_kinds = Counter(u["kind"] for u in units if u["unit_id"] in done)
    events = store.events("interruptions") if "interruptions" in store.root else []
    est = {u["unit_id"]: float(u.get("estimated_s", 0.0)) for u in units}
    total_est = sum(est.values())
    return {
        "name": (attrs.get("config") or {}).get("name", ""), "status": attrs.get("status"),
        "message": attrs.get("message", ""), "k": len(completed), "n": len(units),
        "current": {}, "last_unit": completed[-1] if completed else None,
        "events": [{k: v for k, v in e.items() if k != "state"} for e in events][-50:],
        "protocols": {k: {"done": done_kinds.get(k, 0), "total": v} for k, v in totals.items()},
        "fraction_done": (sum(est[u] for u in done if u in est) / total_est
                          if total_est > 0 else 1.0),
        "eta_s": None, "pause_requested": False, "limits_n": {}, "source": "store",
    }


def read_state(store_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The session state: the live record when there is one, else derived from the store.

    Adds ``age_s`` (wall seconds since the runner last wrote), ``stale`` (a "running" record that
    stopped updating: the runner was killed or hangs; the store's own status then wins) and
    ``pause_request_pending``. A fresh live record is used without opening the store (whose
    root metadata holds the whole plan: too much to read every second over a network share).

    Raises
    ------
    lab.store.StoreError
        ``store_path`` is not a session store (checked when the live record is missing or
        stale).
    """
    live = read_json(live_path(store_path, LIVE_STATE))
    if live is None:
        state = state_from_store(SessionStore.open(store_path, mode="r"))
    else:
        state = {**live, "source": "live"}
        state["age_s"] = max(0.0, time.time() - float(live.get("updated_unix", 0.0)))
        state["stale"] = live.get("status") == "running" and state["age_s"] > STALE_AFTER_S
        if state["stale"]:
            store_status = SessionStore.open(store_path, mode="r").attrs.get("status")
            if store_status != "running":
                state["status"] = store_status  # the runner ended without its last write
    state["pause_request_pending"] = live_path(store_path, PAUSE_REQUEST).exists()
    return state
