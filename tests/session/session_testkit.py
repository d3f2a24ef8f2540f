"""Helpers for the session tests: TOML writing, a child-process runner, fault-injecting labs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from drivers.base import DeviceError
from lab.config import SessionConfig, parse_config
from lab.devices import LabDevices, build_devices
from lab.session import run_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.plan import Plan
from protocols.testing import tiny_config_dict

REPO = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("session_child.py")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def write_toml(data: dict[str, Any], path: Path) -> Path:
    """Write a config dict as TOML (top-level keys with inline tables)."""
    path.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items()))
    return path


def run_child(args: list[str], *, timeout_s: float = 120.0, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """Run ``session_child.py`` with ``args`` in a fresh interpreter (repo root as cwd), with
    ``env`` added to the environment."""
    env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(CHILD), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout_s, check=False)


def open_verified_complete(path: Path) -> tuple[SessionStore, Plan]:
    """The store at ``path`` and its plan, after asserting it verifies clean and is complete."""
    report = verify_store(path)
    assert report.clean, [str(p) for p in report.problems]
    store = SessionStore.open(path)
    plan = Plan.from_json(store.plan)
    assert store.attrs["status"] == "complete"
    assert store.attrs["progress"]["completed"] == plan.unit_ids()
    return store, plan


def factory(install: Callable[[LabDevices], None]
            ) -> tuple[Callable[[SessionConfig], LabDevices], list[LabDevices]]:
    """A devices factory that builds the simulated lab, then lets ``install`` add faults."""
    built: list[LabDevices] = []

    def make(cfg: SessionConfig) -> LabDevices:
        lab = build_devices(cfg)
        install(lab)
        built.append(lab)
        return lab

    return make, built


def at_clock(lab: LabDevices, condition: Callable[[float], bool], action: Callable[[], None]
             ) -> None:
    """Run ``action`` once, the first time ``condition(t)`` holds after the clock moved."""
    fired = [False]

    def listener(_t_from: float, t_to: float) -> None:
        if not fired[0] and condition(t_to):
            fired[0] = True
            action()

    lab.clock.on_advance(listener)  # type: ignore[attr-defined]


def refuse_devices(cfg: SessionConfig) -> LabDevices:
    """A devices factory for a lab that cannot be reached."""
    raise DeviceError("lab", "no lab today")


def failed_store(path: Path) -> Path:
    """A store left by a runner that could not connect its lab (one SWEI unit, none done)."""
    cfg = parse_config(tiny_config_dict(protocols=("swei",), positions=1))
    result = run_session(cfg, path, devices_factory=refuse_devices, show_progress=False)
    assert result.status == "failed"
    return result.store_path


def disk_full(monkeypatch: Any, table: str) -> Callable[[], None]:
    """Make every append to ``table`` fail with ENOSPC; returns a function that frees the disk."""
    import errno

    from lab.store import Table

    original = Table.append

    def full(self: Table, key: str, data: Any, meta: Any = None) -> int:
        if self.name == table:
            raise OSError(errno.ENOSPC, "No space left on device")
        return original(self, key, data, meta)

    monkeypatch.setattr(Table, "append", full)
    return lambda: monkeypatch.setattr(Table, "append", original)
