"""Ctrl-C pauses at the next safe point; twice interrupts the unit; resume continues."""

from __future__ import annotations

import os
import signal

import pytest
from session_testkit import at_clock, factory

from lab.session import resume_session, run_session
from lab.store import SessionStore
from lab.verify import verify_store
from protocols.testing import tiny_config


def _sigint():
    os.kill(os.getpid(), signal.SIGINT)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_pauses_then_resume_completes(tmp_path, presses):
    cfg = tiny_config(protocols=("indentation",))
    path = tmp_path / "s.zarr"

    def install(lab):
        for k in range(presses):  # during the drive of the first cylinder
            at_clock(lab, lambda t, k=k: t >= 8.0 + k, _sigint)

    make, built = factory(install)
    handler_before = signal.getsignal(signal.SIGINT)  # SIG_IGN when run in the background
    result = run_session(cfg, path, devices_factory=make, show_progress=False)
    assert result.status == "paused"
    store = SessionStore.open(path)
    assert store.attrs["status"] == "paused"
    (pause,) = [e for e in store.events("interruptions") if e["kind"] == "pause"]
    if presses == 1:  # the running unit finished, the next one was not started
        assert pause["next_unit"] == "indentation/cyl-17.5"
        assert store.table("indentation").keys() == ["cyl-7.5"]
    else:  # interrupted mid-unit: made safe, partial unit discarded (never appended)
        assert pause["unit"] == "indentation/cyl-7.5" and pause["state"]["safe"]
        assert "indentation" not in store.tables()
    world = built[0].world
    assert world.hexapod_position()["Z"] == pytest.approx(0.0, abs=1e-6)  # plate raised
    assert world.hexapod_on_target()
    assert verify_store(path).clean
    assert signal.getsignal(signal.SIGINT) is handler_before  # handler restored

    result = resume_session(path, show_progress=False)
    assert result.status == "complete"
    assert SessionStore.open(path).table("indentation").keys() == ["cyl-7.5", "cyl-17.5"]
