"""Kill-proof force evidence: an append-only journal of the samples not yet in ``force_log``.

The session runner keeps the force samples of the attempt under way in memory (the watches'
logs) and writes them to the store's ``force_log`` table at flushes and at the end of the attempt
(:mod:`lab.session`). A ``kill -9`` in between would lose them; so every sample the watches log
is also appended, within one clock step (simulation) or :data:`JOURNAL_INTERVAL_S` (wall clock),
to ``STORE/logs/force-journal.bin`` with one ``os.write`` on an ``O_APPEND`` descriptor. What a
killed process wrote is in the page cache and survives it (no ``fsync``: a power loss or an OS
crash may lose the last seconds of the journal, never a committed ``force_log`` record).

File format (little-endian): a header of :data:`HEADER_BYTES` (``b"ELFJ"``, version u32, a
16-byte generation id), then fixed records of :data:`RECORD_BYTES`
``(kind u8, sensor i8, attempt u16, unit u32, t_s f64, fz_n f32)``: kind 1 is a force sample
(sensor code, time, Fz), kind 2 marks the start of a unit attempt (unit = index into the plan's
units, attempt). A torn last record (a kill inside the write) is ignored.

The invariant that makes recovery exact: per sensor, the samples of the ``force_log`` records
whose meta ``journal`` is this file's generation are a prefix of the file's samples of that
sensor. After each committed record the runner starts a new generation (the file is replaced
atomically), so the journal never holds more than one flush of samples. :func:`recover_journal`
appends what lies beyond that prefix to ``force_log`` as one ``recovered`` record of the attempt
marked last, then starts a new generation; run twice it adds nothing.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lab.clock import Clock, SimClock
from lab.live import LogTail
from lab.store import LOG_DIR, ArraySpec, SessionStore, Table

log = logging.getLogger(__name__)

JOURNAL_NAME = "force-journal.bin"
FORCE_LOG = "force_log"
#: Sensor name -> code in ``force_log/sensor``.
SENSOR_CODES = {"probe_sensor": 0, "indenter_sensor": 1}
MAGIC = b"ELFJ"
VERSION = 1
HEADER_BYTES = 24
_RECORD = struct.Struct("<BbHIdf")
RECORD_BYTES = _RECORD.size  # 20
KIND_SAMPLE = 1
KIND_ATTEMPT = 2
#: Wall clock (hardware): seconds between two journal writes of the pump thread.
JOURNAL_INTERVAL_S = 0.02
#: ``unit`` of an attempt marker that names no unit.
NO_UNIT = 0xFFFF_FFFF

#: ``{sensor name: (t_s list, fz_n list)}``: the watches' live logs (a drain replaces the lists).
LogViews = Mapping[str, tuple[Sequence[float], Sequence[float]]]
#: ``{sensor name: (t_s float64 (n,), fz_n float32 (n,))}``: drained samples.
Drained = dict[str, tuple[NDArray[np.float64], NDArray[np.float32]]]


def journal_path(store_path: str | os.PathLike[str]) -> Path:
    return Path(store_path) / LOG_DIR / JOURNAL_NAME


def require_force_log(store: SessionStore) -> Table:
    """The ``force_log`` table of ``store`` (created on first use)."""
    return store.require_table(FORCE_LOG, row_dim="sample", arrays=[
        ArraySpec("t_s", (), "float64", ("sample",), row_chunk=8192),
        ArraySpec("force_n", (), "float32", ("sample",), row_chunk=8192),
        ArraySpec("sensor", (), "int8", ("sample",), row_chunk=8192),
    ], attrs={"sensors": SENSOR_CODES, "description": "every force sample the safety "
              "watchdogs read, one record per unit attempt (faults included)"})


def append_force_record(store: SessionStore, logs: Drained, meta: Mapping[str, Any],
                        *, unit_id: str | None) -> bool:
    """Append one ``force_log`` record of ``logs`` (all sensors; False if there is no sample).

    ``meta`` gets ``max_force_n`` per sensor added; the key is ``NNNNN:unit_id``.
    """
    t = np.concatenate([v[0] for v in logs.values()]) if logs else np.zeros(0)
    if t.size == 0:
        return False
    f = np.concatenate([v[1] for v in logs.values()])
    code = np.concatenate([np.full(v[0].size, SENSOR_CODES[k], np.int8) for k, v in logs.items()])
    table = require_force_log(store)
    key = f"{len(table):05d}:{unit_id or 'between-units'}"
    table.append(key, {"t_s": t, "force_n": f, "sensor": code},
                 {**meta, "max_force_n": {k: float(v[1].max()) if v[1].size else None
                                          for k, v in logs.items()}})
    return True


def merge_drained(first: Drained, then: Drained) -> Drained:
    """Per sensor, the samples of ``first`` followed by those of ``then``."""
    out = dict(first)
    for name, (t, f) in then.items():
        if name in out:
            out[name] = (np.concatenate([out[name][0], t]), np.concatenate([out[name][1], f]))
        else:
            out[name] = (t, f)
    return out


class ForceJournal:
    """The append-only journal of one run of the runner (see the module docstring).

    Create it with :meth:`start` (a new generation), :meth:`follow` the guard's live logs, then
    :meth:`pump` (a clock listener or a thread: :meth:`attach`). Every drain of the logs goes
    through :meth:`drain`, which starts a new generation once the caller's record is committed.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generation = ""
        self._fd: int | None = None
        self._lock = threading.RLock()
        self._views: Callable[[], LogViews] | None = None
        self._tails: dict[str, LogTail] = {}
        self._marker: tuple[int, int] | None = None
        self._detach: Callable[[], None] | None = None
        self.bytes_written = 0

    @classmethod
    def start(cls, path: str | os.PathLike[str]) -> ForceJournal:
        journal = cls(Path(path))
        journal._rotate()
        return journal

    def _rotate(self) -> None:
        """A new generation: write a fresh file beside the journal and rename it over it (a kill
        leaves the old generation or the new one, whole), then append to it (lock held)."""
        generation = uuid.uuid4().hex
        tmp = self.path.with_name(self.path.name + ".new")
        body = MAGIC + struct.pack("<I", VERSION) + bytes.fromhex(generation)
        if self._marker is not None:
            body += _RECORD.pack(KIND_ATTEMPT, 0, *self._marker, 0.0, 0.0)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, body)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        if self._fd is not None:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.generation = generation

    def follow(self, views: Callable[[], LogViews]) -> None:
        """Journal the samples that appear in ``views()`` (the guard's ``force_log_view``)."""
        with self._lock:
            self._views = views
            self._tails = {}

    def attach(self, clock: Clock) -> None:
        """Pump after every step of a :class:`SimClock` (after the watches checked it), or every
        :data:`JOURNAL_INTERVAL_S` from a thread on the wall clock."""
        if isinstance(clock, SimClock):
            self._detach = clock.on_advance(self._on_clock)
            return
        stop = threading.Event()

        def loop() -> None:
            failing = False
            while not stop.wait(JOURNAL_INTERVAL_S):
                try:
                    self.pump()
                    failing = False
                except OSError as exc:  # e.g. a full disk: say so once, keep trying
                    if not failing:
                        log.error("writing the force journal %s: %s", self.path, exc)
                    failing = True

        thread = threading.Thread(target=loop, name="force-journal", daemon=True)
        thread.start()

        def detach() -> None:
            stop.set()
            thread.join(timeout=5.0)

        self._detach = detach

    def begin_attempt(self, unit_index: int, attempt: int) -> None:
        """Mark the start of a unit attempt: recovered samples after it belong to it."""
        with self._lock:
            self.pump()
            self._marker = (min(int(attempt), 0xFFFF), int(unit_index))
            self._write(_RECORD.pack(KIND_ATTEMPT, 0, *self._marker, 0.0, 0.0))

    def end_attempt(self) -> None:
        """Samples from now on belong to no attempt until the next :meth:`begin_attempt`."""
        with self._lock:
            self._marker = None

    def _write(self, data: bytes) -> None:
        if self._fd is None or not data:
            return
        os.write(self._fd, data)
        self.bytes_written += len(data)

    def _take(self, views: LogViews) -> bytes:
        pack = _RECORD.pack
        chunks = []
        for name, (t_view, f_view) in views.items():
            tail = self._tails.get(name)
            if tail is None:
                tail = self._tails[name] = LogTail()
            code = SENSOR_CODES[name]
            if tail.source is t_view:  # the common case: a few samples added to the same list
                seen, n = tail.seen, min(len(t_view), len(f_view))
                if n > seen:
                    chunks += [pack(KIND_SAMPLE, code, 0, 0, t_view[i], f_view[i])
                               for i in range(seen, n)]
                    tail.seen = n
                continue
            t_new, f_new = tail.take(t_view, f_view)  # the lists were replaced (a drain)
            chunks += [pack(KIND_SAMPLE, code, 0, 0, t, f)
                       for t, f in zip(t_new, f_new, strict=True)]
        return b"".join(chunks)

    def pump(self) -> None:
        """Append the samples logged since the last pump (cheap when there are none)."""
        with self._lock:
            if self._views is not None and self._fd is not None:
                self._write(self._take(self._views()))

    def _on_clock(self, _t_from_s: float, _t_to_s: float) -> None:
        self.pump()

    @contextmanager
    def drain(self, drain: Callable[[], Drained]) -> Iterator[tuple[Drained, str]]:
        """``drain()`` the logs with every drained sample journalled; yields ``(logs,
        generation)``. When the block (which commits ``logs`` with meta ``journal =
        generation``) exits normally, a new generation starts; after an error the journal keeps
        the samples (and the caller must keep ``logs`` for its next record)."""
        with self._lock:
            views = dict(self._views()) if self._views is not None else {}  # these lists
            self._write(self._take(views))
            logs = drain()
            self._write(self._take(views))  # what the watches logged between take and drain
            yield logs, self.generation
            self._rotate()

    def close(self, *, discard: bool) -> None:
        """Stop pumping; with ``discard`` start an empty generation (the unjournalled rest
        belongs to no attempt), else leave the journal for :func:`recover_journal`."""
        if self._detach is not None:
            self._detach()
            self._detach = None
        with self._lock:
            if self._fd is None:
                return
            if discard:
                self._marker = None
                self._rotate()
            else:
                self.pump()
            os.close(self._fd)
            self._fd = None


# -- reading and recovery --------------------------------------------------------------------------
@dataclass(frozen=True)
class JournalContent:
    """What a journal file holds: its generation, samples per sensor code, the last marker."""

    generation: str
    samples: dict[int, tuple[NDArray[np.float64], NDArray[np.float32]]]
    marker: tuple[int, int] | None  # (unit index, attempt) of the last attempt marker
    torn_bytes: int  # bytes of a torn last record (ignored)


_DTYPE = np.dtype([("kind", "u1"), ("sensor", "i1"), ("attempt", "<u2"), ("unit", "<u4"),
                   ("t_s", "<f8"), ("fz_n", "<f4")])


def read_journal(path: str | os.PathLike[str]) -> JournalContent | None:
    """Parse a journal file; None when there is none or its header is not a journal's."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < HEADER_BYTES or data[:4] != MAGIC:
        log.warning("%s is not a force journal (%d bytes); ignored", path, len(data))
        return None
    (version,) = struct.unpack("<I", data[4:8])
    if version != VERSION:
        log.warning("%s: force journal version %d, expected %d; ignored", path, version, VERSION)
        return None
    body = data[HEADER_BYTES:]
    n = len(body) // RECORD_BYTES
    rec = np.frombuffer(body[:n * RECORD_BYTES], dtype=_DTYPE)
    valid = np.isin(rec["kind"], (KIND_SAMPLE, KIND_ATTEMPT))
    if not valid.all():  # garbage (not a kill: a kill only tears the last record): stop there
        first_bad = int(np.argmin(valid))
        log.warning("%s: unreadable record %d of %d; later ones ignored", path, first_bad, n)
        rec = rec[:first_bad]
    markers = rec[rec["kind"] == KIND_ATTEMPT]
    marker = (int(markers["unit"][-1]), int(markers["attempt"][-1])) if markers.size else None
    samples = rec[rec["kind"] == KIND_SAMPLE]
    out = {int(code): (samples["t_s"][samples["sensor"] == code].astype(np.float64),
                       samples["fz_n"][samples["sensor"] == code].astype(np.float32))
           for code in np.unique(samples["sensor"])}
    return JournalContent(data[8:HEADER_BYTES].hex(), out, marker,
                          len(body) - n * RECORD_BYTES)


def unlogged_samples(store: SessionStore, content: JournalContent) -> Drained:
    """Per sensor name, the journal's samples that no ``force_log`` record of its generation
    holds (see the module docstring)."""
    logged = {code: 0 for code in content.samples}
    if store.has_table(FORCE_LOG):
        table = store.table(FORCE_LOG)
        ours = [r for r in table.records if r["meta"].get("journal") == content.generation]
        if ours:
            sensor = table.read("sensor")
            for r in ours:
                codes, counts = np.unique(sensor[r["start"]:r["stop"]], return_counts=True)
                for code, count in zip(codes.tolist(), counts.tolist(), strict=True):
                    logged[code] = logged.get(code, 0) + count
    names = {code: name for name, code in SENSOR_CODES.items()}
    return {names[code]: (t[logged[code]:], f[logged[code]:])
            for code, (t, f) in sorted(content.samples.items())
            if code in names and t.size > logged[code]}


def recover_journal(store: SessionStore, unit_ids: Sequence[str], *,
                    limits_of: Callable[[str], dict[str, float]] | None = None) -> int:
    """Move the samples of the store's journal that ``force_log`` lacks into one ``recovered``
    record (the attempt marked last in the journal), then start an empty generation. Returns
    the samples recovered. ``limits_of(unit_id)`` gives the record's ``limits_n``."""
    path = journal_path(store.path)
    content = read_journal(path)
    if content is None:
        return 0
    if content.torn_bytes:
        log.warning("%s: dropped a torn last record (%d bytes) of a killed write", path,
                    content.torn_bytes)
    lost = unlogged_samples(store, content)
    n = sum(t.size for t, _ in lost.values())
    if n:
        unit_id, attempt = None, None
        if content.marker is not None and content.marker[0] < len(unit_ids):
            unit_id, attempt = unit_ids[content.marker[0]], content.marker[1]
        meta = {"unit_id": unit_id, "attempt": attempt, "outcome": "recovered",
                "recovered_from": f"{LOG_DIR}/{JOURNAL_NAME}", "journal": content.generation,
                "limits_n": limits_of(unit_id) if limits_of and unit_id else None}
        append_force_record(store, lost, meta, unit_id=unit_id)
        log.warning("recovered %d force samples of %s from the force journal", n,
                    f"{unit_id} (attempt {attempt})" if unit_id else "a killed run")
    path.unlink()  # every sample is in force_log now (run again, this adds nothing)
    return n
