"""Damaged stores: `verify`, `info`, `session resume` and `analyze` say what is wrong in one line.

Each damage kind is applied to a small session store (plan, progress, one table) by editing its
files the way a crash, a bad disk or a careless hand would; every command must exit non-zero with
a single error line and no traceback, and must not change the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lab.cli import app
from lab.store import ArraySpec, SessionStore, StoreError
from lab.verify import verify_store

runner = CliRunner()


def _session_store(path: Path) -> SessionStore:
    plan = {"units": [{"unit_id": "indentation/cyl-a", "kind": "indentation"}]}
    store = SessionStore.create(path, config={"name": "damaged"}, plan=plan)
    store.set_attrs(status="failed", message="", progress={"completed": [], "table_records": {}})
    table = store.require_table("indentation", row_dim="sample", arrays=[
        ArraySpec("force_n", (), "float32", ("sample",), row_chunk=4),
        ArraySpec("run", (), "int32", ("sample",), row_chunk=4),
    ])
    table.append("cyl-a", {"force_n": np.linspace(0, 1, 6, dtype=np.float32),
                           "run": np.zeros(6, np.int32)})
    return store


def _edit_json(file: Path, change: Callable[[dict], None]) -> None:
    meta = json.loads(file.read_text())
    change(meta)
    file.write_text(json.dumps(meta))


def _set_attr(relative: str, key: str, value: object) -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        _edit_json(store / relative / "zarr.json",
                   lambda meta: meta.setdefault("attributes", {}).__setitem__(key, value))
    return damage


def _garble(relative: str,
            text: str = '{"zarr_format": 3, "node_type": ') -> Callable[[Path], None]:
    def damage(store: Path) -> None:
        (store / relative / "zarr.json").write_text(text)
    return damage


def _symlink_loop(store: Path) -> None:
    loop = store / "indentation" / "loop"
    os.symlink(loop, loop)  # points at itself: ELOOP on any access


def _array_dir_loop(store: Path) -> None:
    meta = store / "indentation" / "run" / "zarr.json"
    meta.unlink()
    os.symlink(meta, meta)


DAMAGE = {
    "root zarr.json malformed": _garble(".", "{not json"),
    "group zarr.json malformed": _garble("indentation"),
    "array zarr.json malformed": _garble("indentation/force_n"),
    "array zarr.json not an array": _garble("indentation/force_n", '{"zarr_format": 3, '
                                            '"node_type": "array"}'),
    "committed_rows not an integer": _set_attr("indentation", "committed_rows", "six"),
    "committed_rows a fraction": _set_attr("indentation", "committed_rows", 2.5),
    "records not a list": _set_attr("indentation", "records", "garbage"),
    "record without key": _set_attr("indentation", "records", [{"start": 0, "stop": 6}]),
    "progress garbage": _set_attr(".", "progress", 17),
    "progress completed not a list": _set_attr(".", "progress", {"completed": 5}),
    "config not a mapping": _set_attr(".", "config", [1, 2]),
    "symlink loop in a group": _symlink_loop,
    "array metadata is a symlink loop": _array_dir_loop,
}

COMMANDS = {
    "verify": ["verify"],
    "info": ["info"],
    "resume": ["session", "resume", "--no-progress"],
    "analyze": ["analyze", "labels"],
}


def _snapshot(path: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(path))
            out[rel] = f"-> {os.readlink(p)}" if p.is_symlink() else (
                p.read_bytes() if p.is_file() else "dir")
    return out


@pytest.mark.parametrize("damage", DAMAGE)
@pytest.mark.parametrize("command", COMMANDS)
def test_damaged_store_gives_one_line_error(tmp_path: Path, damage: str, command: str) -> None:
    path = _session_store(tmp_path / "s.zarr").path
    DAMAGE[damage](path)
    before = _snapshot(path)
    result = runner.invoke(app, [*COMMANDS[command], str(path)], env={"COLUMNS": "2000"})
    output = result.output.strip()
    assert result.exit_code != 0, output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, output
    assert _snapshot(path) == before  # nothing changed


@pytest.mark.parametrize("damage", [d for d in DAMAGE if d != "root zarr.json malformed"])
def test_open_names_the_damage(tmp_path: Path, damage: str) -> None:
    path = _session_store(tmp_path / "s.zarr").path
    DAMAGE[damage](path)
    with pytest.raises(StoreError, match="damaged store"):
        SessionStore.open(path)


def test_undamaged_store_opens_and_verifies(tmp_path: Path) -> None:
    path = _session_store(tmp_path / "s.zarr").path
    assert verify_store(path).clean


def test_verify_catches_a_plan_that_does_not_match_its_hash(tmp_path: Path) -> None:
    path = _session_store(tmp_path / "s.zarr").path
    _set_attr(".", "plan", {"units": [{"unit_id": "indentation/cyl-b", "kind": "indentation"}]})(
        path)
    report = verify_store(path)
    assert not report.clean
    assert any("does not match its plan_hash" in p.message for p in report.problems)
    result = runner.invoke(app, ["verify", str(path)])
    assert result.exit_code == 1 and "plan_hash" in result.output


def test_verify_catches_a_missing_plan_hash(tmp_path: Path) -> None:
    path = _session_store(tmp_path / "s.zarr").path
    _set_attr(".", "plan_hash", None)(path)
    assert any("plan_hash is missing" in p.message for p in verify_store(path).problems)
