"""``elastolab verify``: check a session store for anything lost, partial or inconsistent.

Checks, per table: records are contiguous and cover exactly the committed rows, keys are unique,
every array has at least the committed rows (more = an interrupted append, fixable with
``--repair``), every chunk holding committed rows exists on disk and decodes, and floating data
has no NaN/Inf (arrays whose ``allow_nan`` attribute is true, such as modulus maps with rejected
pixels, may hold NaN but not Inf). Whole arrays outside tables get the chunk and value checks.
Leftover temporary files from interrupted writes are reported. The stored plan must hash to the
stored ``plan_hash``. Force samples that only the force journal holds (a killed run,
:mod:`lab.force_journal`) are a warning; ``--repair`` moves them into ``force_log`` (as
``resume`` does) unless a runner holds the store. A store too damaged to open (unreadable
metadata, wrong attribute types, symlink loops) is one error naming the damage.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from numpy.typing import NDArray

from lab.force_journal import journal_path, read_journal, recover_journal, unlogged_samples
from lab.provenance import plan_hash
from lab.session_lock import StoreLockedError, runner_lock
from lab.store import LOG_DIR, SessionStore, StoreError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity.upper():7s} {self.where}: {self.message}"


@dataclass
class VerifyReport:
    path: Path
    problems: list[Problem] = field(default_factory=list)
    checked_arrays: int = 0
    checked_chunks: int = 0
    repaired: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def add(self, severity: Severity, where: str, message: str) -> None:
        self.problems.append(Problem(severity, where, message))


def _chunk_path(array: zarr.Array, store_path: Path, coords: tuple[int, ...]) -> Path:
    key = array.metadata.chunk_key_encoding.encode_chunk_key(coords)  # type: ignore[union-attr]
    return store_path / array.path / key


#: Bytes of decoded data read in one call when checking an array (one zarr read decodes a slab
#: of chunks concurrently, ~5x less CPU than one read per chunk).
SLAB_BYTES = 32 * 2**20


def _check_array(report: VerifyReport, store_path: Path, array: zarr.Array, rows: int | None
                 ) -> None:
    """Chunk existence, decoding and finite values of ``array`` (first ``rows`` rows if given).

    The chunks are read in slabs along the first axis (at most :data:`SLAB_BYTES` each); a slab
    with a missing chunk or one that fails to decode is read again chunk by chunk, so each
    problem names its chunk.
    """
    report.checked_arrays += 1
    shape = array.shape
    if rows is not None:
        shape = (min(rows, shape[0]), *shape[1:])
    if any(s == 0 for s in shape):
        return
    chunks = array.chunks
    grid = [range(math.ceil(s / c)) for s, c in zip(shape, chunks, strict=True)]
    chunk_bytes = math.prod(chunks) * np.dtype(array.dtype).itemsize
    per_row = max(1, math.prod(len(g) for g in grid[1:]))
    rows_per_slab = max(1, SLAB_BYTES // (chunk_bytes * per_row))
    nonfinite = 0
    for first in range(0, len(grid[0]), rows_per_slab):
        slab_rows = grid[0][first:first + rows_per_slab]
        coords = list(itertools.product(slab_rows, *grid[1:]))
        report.checked_chunks += len(coords)
        missing = [c for c in coords if not _chunk_path(array, store_path, c).is_file()]
        if not missing:
            sel = (slice(slab_rows[0] * chunks[0], min((slab_rows[-1] + 1) * chunks[0], shape[0])),
                   *(slice(0, s) for s in shape[1:]))
            try:
                nonfinite += _nonfinite(array, np.asarray(array[sel]))
                continue
            except Exception:  # any codec error: find the chunk below
                pass
        nonfinite += _check_chunks(report, array, coords, shape, set(missing))
    if nonfinite:
        what = "Inf" if array.attrs.get("allow_nan", False) else "NaN/Inf"
        report.add("error", array.path, f"{nonfinite} {what} values")


def _nonfinite(array: zarr.Array, block: NDArray[Any]) -> int:
    """Values of ``block`` not allowed in ``array``: Inf, and NaN unless ``allow_nan``."""
    if np.dtype(array.dtype).kind not in "fc":
        return 0
    if array.attrs.get("allow_nan", False):
        return int(np.isinf(block).sum())
    return int((~np.isfinite(block)).sum())


def _check_chunks(report: VerifyReport, array: zarr.Array, coords: list[tuple[int, ...]],
                  shape: tuple[int, ...], missing: set[tuple[int, ...]]) -> int:
    """One read per chunk of ``coords``: report the missing and undecodable ones; returns the
    count of non-finite values in the others."""
    chunks = array.chunks
    nonfinite = 0
    for c in coords:
        if c in missing:
            report.add("error", array.path, f"chunk {c} is missing (data lost)")
            continue
        sel = tuple(slice(i * n, min((i + 1) * n, s)) for i, n, s in zip(c, chunks, shape,
                                                                       strict=True))
        try:
            block = np.asarray(array[sel])
        except Exception as exc:  # decoding errors come in many types from the codecs
            report.add("error", array.path, f"chunk {c} cannot be decoded "
                                            f"(truncated or corrupt): {type(exc).__name__}: {exc}")
            continue
        nonfinite += _nonfinite(array, block)
    return nonfinite


def verify_store(path: str | Path, *, repair: bool = False) -> VerifyReport:
    """Check the store at ``path``; with ``repair``, trim uncommitted rows and temp files.

    Repair never deletes committed data: it only removes what no index refers to.
    """
    path = Path(path)
    report = VerifyReport(path)
    try:
        store = SessionStore.open(path, mode="r")
    except StoreError as exc:
        report.add("error", "store", str(exc))
        return report
    for attr in ("created_utc", "elastolab_version", "config"):
        if attr not in store.attrs:
            report.add("error", "/", f"provenance attribute {attr!r} is missing")
    _check_plan_hash(report, store.attrs)

    tables = store.tables()
    table_arrays: set[str] = set()
    for name in tables:
        table = store.table(name)
        committed = table.committed_rows
        records = table.records
        expected_start = 0
        keys: set[str] = set()
        for i, rec in enumerate(records):
            if rec["start"] != expected_start or rec["stop"] <= rec["start"]:
                report.add("error", name, f"record {i} ({rec['key']!r}) covers rows "
                           f"[{rec['start']}, {rec['stop']}), expected to start at {expected_start}"
                           " (gap or overlap in the index)")
            if rec["key"] in keys:
                report.add("error", name, f"duplicate record key {rec['key']!r}")
            keys.add(rec["key"])
            expected_start = rec["stop"]
        if expected_start != committed:
            report.add("error", name, f"index covers {expected_start} rows but committed_rows is "
                                      f"{committed}")
        for arr_name in table.schema:
            try:
                array = table.array(arr_name)
            except (KeyError, StoreError):
                report.add("error", f"{name}/{arr_name}", "array listed in the schema is missing")
                continue
            table_arrays.add(array.path)
            if array.shape[0] < committed:
                report.add("error", array.path, f"has {array.shape[0]} rows, index commits "
                                                f"{committed} (data lost)")
            elif array.shape[0] > committed:
                msg = (f"{array.shape[0] - committed} uncommitted rows from an interrupted "
                       "write (not listed in the index)")
                if repair:
                    report.repaired.append(f"{array.path}: trimmed {msg}")
                else:
                    report.add("error", array.path, msg + "; run with --repair or resume to trim")
            _check_array(report, path, array, committed)
    if repair and report.repaired:
        SessionStore.open(path, mode="a")  # opening for append trims uncommitted rows

    def walk(group: zarr.Group) -> None:
        for _, member in group.members():
            if isinstance(member, zarr.Array):
                if member.path not in table_arrays:
                    if Path(member.path).name.startswith("."):
                        _leftover(report, path / member.path, repair)
                    else:
                        _check_array(report, path, member, None)
            elif isinstance(member, zarr.Group) and member.path != LOG_DIR:
                walk(member)

    walk(store.root)
    for tmp in list(path.rglob("*.partial")) + list(path.rglob(".*.old")):
        _leftover(report, tmp, repair)
    _check_force_journal(report, store, repair)
    return report


def _check_force_journal(report: VerifyReport, store: SessionStore, repair: bool) -> None:
    """Samples of the force journal that ``force_log`` lacks: a warning, or moved (repair)."""
    content = read_journal(journal_path(store.path))
    if content is None:
        return
    n = sum(t.size for t, _ in unlogged_samples(store, content).values())
    if not n:
        return
    where = f"{LOG_DIR}/{journal_path(store.path).name}"
    if repair:
        units = (store.plan or {}).get("units", []) if isinstance(store.plan, dict) else []
        try:
            with runner_lock(store.path):
                moved = recover_journal(SessionStore.open(store.path, mode="a"),
                                        [str(u.get("unit_id")) for u in units])
            report.repaired.append(f"{where}: moved {moved} force samples of a killed run "
                                   "into force_log")
            return
        except StoreLockedError as exc:
            report.add("warning", where, f"not repaired: {exc}")
            return
    report.add("warning", where, f"{n} force samples are not yet in force_log (a runner is "
                                 "working, or was killed: resume or --repair moves them there)")


def _check_plan_hash(report: VerifyReport, attrs: dict[str, object]) -> None:
    """The stored plan must hash to the stored ``plan_hash`` (a resume runs that plan)."""
    plan, stored = attrs.get("plan"), attrs.get("plan_hash")
    if plan is None and stored is None:
        return
    if plan is None or stored is None:
        report.add("error", "/", f"{'plan' if plan is None else 'plan_hash'} is missing while "
                                 f"{'plan_hash' if plan is None else 'plan'} is stored")
        return
    actual = plan_hash(plan)
    if actual != stored:
        report.add("error", "/", f"the stored plan does not match its plan_hash (stored "
                                 f"{str(stored)[:12]}..., plan hashes to {actual[:12]}...): "
                                 "the plan was edited or corrupted; resume would run it")


def _leftover(report: VerifyReport, item: Path, repair: bool) -> None:
    if repair:
        import shutil

        if item.is_dir():
            shutil.rmtree(item, ignore_errors=True)
        else:
            item.unlink(missing_ok=True)
        report.repaired.append(f"removed temporary {item}")
    else:
        report.add("warning", str(item), "temporary file from an interrupted write "
                                         "(harmless; --repair removes it)")
