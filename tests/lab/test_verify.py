"""`elastolab verify` finds lost, truncated and inconsistent data; kill -9 never loses a record."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.store import ArraySpec, SessionStore
from lab.verify import verify_store

ARRAYS = [
    ArraySpec("iq", (3, 5, 7), "complex64", ("seq", "frame", "depth", "lateral")),
    ArraySpec("force_n", (), "float32", ("seq",), row_chunk=1),
]


def build(path: Path, n: int = 3) -> SessionStore:
    store = SessionStore.create(path, config={"x": 1})
    table = store.require_table("swei", row_dim="seq", arrays=ARRAYS)
    rng = np.random.default_rng(0)
    for k in range(n):
        iq = rng.standard_normal((1, 3, 5, 7)).astype(np.complex64)
        table.append(f"r{k}", {"iq": iq, "force_n": np.array([0.2], np.float32)})
    return store


def chunk_file(store: SessionStore, row: int) -> Path:
    return store.path / "swei" / "iq" / "c" / str(row) / "0" / "0" / "0"


def test_clean_store_verifies(tmp_path: Path) -> None:
    report = verify_store(build(tmp_path / "s.zarr").path)
    assert report.clean, report.problems
    assert report.checked_chunks >= 6


def test_deleted_chunk_is_reported(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    chunk_file(store, 1).unlink()
    report = verify_store(store.path)
    assert not report.clean
    assert any("chunk (1, 0, 0, 0) is missing" in p.message for p in report.problems)


def test_truncated_chunk_is_reported(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    f = chunk_file(store, 2)
    f.write_bytes(f.read_bytes()[:10])
    report = verify_store(store.path)
    assert any("cannot be decoded" in p.message and p.where == "swei/iq" for p in report.problems)


def test_index_array_mismatch_is_reported(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    t = store.table("swei")
    t.array("force_n").resize((2,))  # data lost behind the index's back
    report = verify_store(store.path)
    assert any("index commits 3" in p.message for p in report.problems)
    records = t.records
    records[1]["start"] = 0
    t.group.attrs["records"] = records
    report = verify_store(store.path)
    assert any("gap or overlap" in p.message for p in report.problems)


def test_nan_is_reported_unless_allowed(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    store.table("swei").array("force_n")[1] = np.nan
    assert any("NaN/Inf" in p.message for p in verify_store(store.path).problems)
    store.write_array("maps/tof_kpa", np.array([[np.nan, 1.0]], np.float32), dims=("a", "b"),
                      allow_nan=True)
    problems = [p for p in verify_store(store.path).problems if p.where.startswith("maps")]
    assert problems == []


def test_uncommitted_rows_are_reported_and_repaired(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    arr = store.table("swei").array("iq")
    arr.resize((4, 3, 5, 7))
    arr[3] = 1.0  # what a killed append leaves behind
    report = verify_store(store.path)
    assert any("uncommitted rows" in p.message for p in report.problems)
    repaired = verify_store(store.path, repair=True)
    assert repaired.repaired
    assert verify_store(store.path).clean
    assert SessionStore.open(store.path).table("swei").keys() == ["r0", "r1", "r2"]


def test_cli_verify_and_info_exit_codes(tmp_path: Path) -> None:
    store = build(tmp_path / "s.zarr")
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(store.path)])
    assert ok.exit_code == 0, ok.output
    assert runner.invoke(app, ["info", str(store.path)]).exit_code == 0
    chunk_file(store, 0).unlink()
    bad = runner.invoke(app, ["verify", str(store.path)])
    assert bad.exit_code == 1
    missing = runner.invoke(app, ["verify", str(tmp_path / "nope.zarr")])
    assert missing.exit_code == 1


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from lab.store import ArraySpec, SessionStore
    path = sys.argv[1]
    arrays = [ArraySpec("iq", (8, 64, 64), "complex64", ("seq", "frame", "depth", "lateral")),
              ArraySpec("k", (), "int64", ("seq",))]
    store = SessionStore.create(path)
    t = store.require_table("swei", row_dim="seq", arrays=arrays)
    rng = np.random.default_rng(0)
    k = 0
    while True:
        iq = np.full((1, 8, 64, 64), k, np.complex64) + rng.standard_normal((1, 8, 64, 64))
        t.append(f"r{k}", {"iq": iq.astype(np.complex64), "k": [k]})
        print(k, flush=True)
        k += 1
    """
)


@pytest.mark.parametrize("delay_s", [0.0, 0.013, 0.037, 0.091])
def test_kill_minus_9_mid_write_loses_no_committed_record(tmp_path: Path, delay_s: float) -> None:
    path = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).resolve().parents[2])
    try:
        assert proc.stdout is not None
        for _ in range(3):  # let a few records commit, then kill at an arbitrary instant
            assert proc.stdout.readline(), "writer died before committing"
        time.sleep(delay_s)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
    store = SessionStore.open(path, mode="a")  # trims a partial record if any
    t = store.table("swei")
    keys = t.keys()
    assert len(keys) >= 3
    assert keys == [f"r{k}" for k in range(len(keys))]  # no gap, no duplicate
    np.testing.assert_array_equal(t.read("k"), np.arange(len(keys)), err_msg=str(t.records[-3:]))
    iq = t.read("iq")
    np.testing.assert_allclose(iq.real.mean(axis=(1, 2, 3)), np.arange(len(keys)), atol=0.05)
    report = verify_store(path, repair=True)
    assert verify_store(path).clean, report.problems
