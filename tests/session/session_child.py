"""Run or resume a session in this process and optionally SIGKILL itself at a chosen point.

Usage: ``session_child.py run CONFIG_JSON STORE [KILL]`` or ``session_child.py resume STORE
[KILL]``. ``KILL`` is one of:

* ``commit:TABLE:N``  - inside the N-th record commit of TABLE, after its rows were written and
  before the index is rewritten (a kill in the middle of writing a sequence);
* ``progress:N``      - right after the N-th progress update (between two units);
* ``clock:T``         - when the virtual clock passes T seconds (in the middle of a motion);
* ``staging``         - while the new store is being prepared, before it becomes visible;
* ``created``         - right after the new store became visible (before the runner started);
* ``journal:N``       - right after the N-th write to the force journal;
* ``journal-torn:N``  - inside the N-th write to the force journal (half of it written).

With ``SESSION_CHILD_SEEN=PATH`` in the environment, the child writes ``{watch name: t_s of the
last force sample it checked}`` to PATH just before it kills itself (the test's side channel).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from typing import Any

import zarr

from lab import force_journal
from lab import store as store_module
from lab.config import parse_config
from lab.devices import build_devices
from lab.force_watch import ForceWatch
from lab.session import resume_session, run_session
from lab.store import SessionStore

_SEEN: dict[str, float] = {}


def _die() -> None:
    seen_path = os.environ.get("SESSION_CHILD_SEEN")
    if seen_path:
        with open(seen_path, "w") as f:
            json.dump(_SEEN, f)
    os.kill(os.getpid(), signal.SIGKILL)


def _track_seen() -> None:
    original = ForceWatch._check

    def check(self: ForceWatch, arrival: Any) -> Any:
        _SEEN[self.name] = arrival.sample.t_s
        return original(self, arrival)

    ForceWatch._check = check  # type: ignore[method-assign]


def _install(kill: str | None) -> Any:
    if not kill:
        return None
    kind, _, rest = kill.partition(":")
    if kind == "commit":
        table, n = rest.rsplit(":", 1)
        seen = [0]
        original = zarr.Group.update_attributes

        def update(self: zarr.Group, new_attributes: dict[str, Any]) -> Any:
            if "committed_rows" in new_attributes and self.path == table:
                seen[0] += 1
                if seen[0] == int(n):
                    _die()
            return original(self, new_attributes)

        zarr.Group.update_attributes = update  # type: ignore[method-assign]
        return None
    if kind == "progress":
        count = [0]
        original_set = SessionStore.set_attrs

        def set_attrs(self: SessionStore, **values: Any) -> None:
            original_set(self, **values)
            if "progress" in values:
                count[0] += 1
                if count[0] == int(rest):
                    _die()

        SessionStore.set_attrs = set_attrs  # type: ignore[method-assign]
        return None
    if kind in ("staging", "created"):
        original_rename = store_module.os.rename

        def rename(src: Any, dst: Any) -> None:
            if ".creating-" not in str(src):  # not the store's creation
                original_rename(src, dst)
                return
            if kind == "staging":
                _die()
            original_rename(src, dst)
            _die()

        store_module.os.rename = rename  # type: ignore[attr-defined]
        return None
    if kind in ("journal", "journal-torn"):
        writes = [0]
        original_write = force_journal.ForceJournal._write

        def write(self: force_journal.ForceJournal, data: bytes) -> None:
            if self._fd is not None and data:
                writes[0] += 1
                if writes[0] == int(rest):
                    if kind == "journal-torn":
                        os.write(self._fd, data[:len(data) // 2 + 1])
                    else:
                        original_write(self, data)
                    _die()
            original_write(self, data)

        force_journal.ForceJournal._write = write  # type: ignore[method-assign]
        return None
    if kind == "clock":
        t_kill = float(rest)

        def make(cfg: Any) -> Any:
            lab = build_devices(cfg)
            lab.clock.on_advance(lambda _a, b: _die() if b >= t_kill else None)
            return lab

        return make
    raise SystemExit(f"unknown kill spec {kill!r}")


def main(argv: list[str]) -> int:
    mode = argv[0]
    if mode == "run":
        config_json, store, kill = argv[1], argv[2], (argv[3] if len(argv) > 3 else None)
    else:
        config_json, store, kill = None, argv[1], (argv[2] if len(argv) > 2 else None)
    if os.environ.get("SESSION_CHILD_SEEN"):
        _track_seen()
    factory = _install(kill)
    if mode == "run":
        with open(config_json) as f:
            cfg = parse_config(json.load(f))
        result = run_session(cfg, store, devices_factory=factory, show_progress=False)
    else:
        result = resume_session(store, devices_factory=factory, show_progress=False)
    print(f"RESULT {result.status} {result.completed}/{result.total}")
    return 0 if result.status == "complete" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
