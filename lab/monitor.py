"""``elastolab monitor``: a local web page that follows a session store, read-only.

A :class:`http.server.ThreadingHTTPServer` (standard library) serves one HTML page
(``lab/monitor_page.html``), the plotly.js bundle that ships inside the ``plotly`` Python package
(lab PCs are often offline: nothing comes from a CDN) and JSON endpoints:

=====================  ==========================================================================
``GET /api/state``     status, k/N, current unit and phase, per-protocol counts, ETA, events
``GET /api/force``     the force ring of each sensor with the active limits
``GET /api/swei``      B-mode and displacement of the latest SWEI sequence
``GET /api/indentation``  latest stress-strain curve and its fit, and the running one
``GET /api/positions``    done / remaining SWEI probe positions per block
``POST /api/pause``    ask the runner to pause after the current unit (like one Ctrl-C)
=====================  ==========================================================================

The store is only ever opened read-only; the one file the monitor writes is the pause request
(``logs/pause-request.json``, see :func:`lab.live.request_pause`). It binds 127.0.0.1 unless told
otherwise: anyone who can reach the port can pause the session.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import threading
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lab import monitor_data
from lab.live import request_pause
from lab.store import SessionStore, StoreError

log = logging.getLogger(__name__)

PAGE = Path(__file__).with_name("monitor_page.html")


class MonitorError(RuntimeError):
    """The monitor cannot start (no store, no plotly.js)."""


def plotly_js_path() -> Path:
    """The ``plotly.min.js`` bundled in the installed ``plotly`` package.

    Raises
    ------
    MonitorError
        plotly is not installed (``pip install plotly``) or has no bundled plotly.js.
    """
    spec = importlib.util.find_spec("plotly")
    if spec is None or spec.origin is None:
        raise MonitorError("the monitor draws with plotly.js from the 'plotly' Python package, "
                           "which is not installed: pip install plotly")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise MonitorError(f"the installed plotly package has no bundled plotly.js ({path})")
    return path


def _clean(value: Any) -> Any:
    """NaN and infinities to None, recursively (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


class _Handler(BaseHTTPRequestHandler):
    server_version = "elastolab-monitor"

    def __init__(self, *args: Any, monitor: Monitor, **kwargs: Any) -> None:
        self.monitor = monitor
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the page was closed meanwhile
            log.debug("client went away before %s was sent", self.path)

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(_clean(data), allow_nan=False).encode()
        self._send(status, body, "application/json")

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, self.monitor.page(), "text/html; charset=utf-8")
            return
        if path == "/static/plotly.min.js":
            self._send(HTTPStatus.OK, self.monitor.plotly_js(), "text/javascript")
            return
        reader = self.monitor.readers.get(path)
        if reader is None:
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path}"})
            return
        try:
            data = reader()
        except (StoreError, OSError, KeyError, ValueError) as exc:
            # A runner may be rewriting metadata this very moment: say so, the page retries.
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": f"{type(exc).__name__}: {exc}"})
            return
        self._json(HTTPStatus.OK, data)

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != "/api/pause":
            self._json(HTTPStatus.NOT_FOUND, {"error": f"no such action: {self.path}"})
            return
        try:
            state = monitor_data.read_state(self.monitor.store_path)
        except (StoreError, OSError) as exc:
            self._json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)})
            return
        if state.get("status") != "running" or state.get("stale"):
            why = " (its runner stopped updating)" if state.get("stale") else ""
            self._json(HTTPStatus.CONFLICT,
                       {"error": f"the session is {state.get('status')}{why}; nothing to pause"})
            return
        path = request_pause(self.monitor.store_path, source="monitor")
        log.warning("pause requested from the monitor (%s)", path)
        self._json(HTTPStatus.ACCEPTED, {"requested": True,
                                         "message": "the session pauses after the current unit"})


class Monitor:
    """The monitor of one store: page, readers and (after :meth:`start`) an HTTP server.

    Parameters
    ----------
    store_path : path
        An existing session store.
    host : str, optional
        Address to bind (loopback by default).
    port : int, optional
        Port (0 = any free port; see :attr:`port` after :meth:`start`).

    Raises
    ------
    lab.store.StoreError
        ``store_path`` is not a session store.
    MonitorError
        plotly.js is not available.
    """

    def __init__(self, store_path: str | Path, *, host: str = "127.0.0.1", port: int = 8765
                 ) -> None:
        self.store_path = Path(store_path)
        SessionStore.open(self.store_path, mode="r")  # fail early on a wrong path
        self._plotly = plotly_js_path()
        self.host, self.port = host, int(port)
        self._swei_cache: dict[str, Any] = {}
        self._swei_lock = threading.Lock()
        self._indentation_cache = monitor_data.IndentationCache(self.store_path)
        self._plan_units: list[dict[str, Any]] | None = None  # the plan never changes
        self.readers: dict[str, Callable[[], Any]] = {
            "/api/state": partial(monitor_data.read_state, self.store_path),
            "/api/force": partial(monitor_data.read_forces, self.store_path),
            "/api/swei": self._swei,
            "/api/indentation": self._indentation,
            "/api/positions": partial(monitor_data.probe_positions, self.store_path),
        }
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _indentation(self) -> dict[str, Any]:
        """The latest stored curve with its fit, plus the running one of a unit under way."""
        if self._plan_units is None:
            plan = SessionStore.open(self.store_path, mode="r").plan or {}
            self._plan_units = plan.get("units", []) if isinstance(plan, dict) else []
        state = monitor_data.read_state(self.store_path)
        return {**self._indentation_cache(),
                "running": monitor_data.running_indentation(state, self._plan_units)}

    def _swei(self) -> dict[str, Any]:
        with self._swei_lock:  # one Loupas estimate at a time, cached per record
            return monitor_data.latest_swei(self.store_path, self._swei_cache)

    def page(self) -> bytes:
        return PAGE.read_bytes()

    def plotly_js(self) -> bytes:
        return self._plotly.read_bytes()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def start(self) -> str:
        """Serve on a background thread; returns the URL."""
        handler = partial(_Handler, monitor=self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="monitor",
                                        daemon=True)
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (the CLI); starts the server unless :meth:`start` did."""
        if self._server is None:
            self.start()
        assert self._thread is not None
        try:
            while self._thread.is_alive():
                self._thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()
