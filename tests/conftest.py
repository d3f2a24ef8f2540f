"""Suite-wide fixtures: fail any test that leaks threads or sockets (ophyd-async style)."""

from __future__ import annotations

import threading
import time

import psutil
import pytest
import torch

# One intra-op thread for torch in the suite: the networks here are tiny, and torch's OpenMP
# workers spin while they wait, so with two of them a training that takes seconds stalled past
# the (then 300 s) test timeout on a machine saturated by other processes (under-load, 12
# busy processes). Training with more threads is the product's choice, not the tests'.
torch.set_num_threads(1)

# Process-wide pools created on first use and kept for the life of the process by design.
_POOL_PREFIXES = ("ThreadPoolExecutor", "Dask-", "asyncio_", "zarr_", "IO loop", "Profile",
                  "QueueFeederThread", "pymp")
_POOL_EXACT = {"zarr_io", "zarrio"}


def _threads() -> dict[int, threading.Thread]:
    return {t.ident: t for t in threading.enumerate() if t.ident is not None}


def _is_pool(thread: threading.Thread) -> bool:
    # Executor workers are not daemon threads in Python >= 3.9; they are reused, not leaked.
    name = thread.name
    return name in _POOL_EXACT or name.startswith(_POOL_PREFIXES)


def _sockets() -> set[tuple[str, int, str]]:
    out = set()
    for conn in psutil.Process().net_connections(kind="inet"):
        laddr = conn.laddr
        out.add((laddr.ip if laddr else "", laddr.port if laddr else 0, str(conn.type)))
    return out


@pytest.fixture(autouse=True)
def no_leaked_threads_or_sockets(request: pytest.FixtureRequest):
    before_threads = _threads()
    before_sockets = _sockets()
    yield
    deadline = time.monotonic() + 2.0  # real time: lets stopped server threads finish exiting
    while True:
        leaked = [t for i, t in _threads().items()
                  if i not in before_threads and t.is_alive() and not _is_pool(t)]
        sockets = _sockets() - before_sockets
        if (not leaked and not sockets) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if leaked:
        problems.append(f"threads left running: {[t.name for t in leaked]}")
    if sockets:
        problems.append(f"sockets left open: {sorted(sockets)}")
    if problems:
        pytest.fail(f"{request.node.nodeid} leaked " + "; ".join(problems), pytrace=False)
