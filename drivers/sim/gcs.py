"""Simulated PI C-887 hexapod controller (H-820 mechanics): a GCS 2.0 server on TCP.

:class:`GcsController` is the controller's state machine (one ASCII command per line in, the exact
reply text out); :class:`GcsSimServer` serves it on TCP to any number of clients, so PI's own
``pipython`` (``GCSDevice`` over ``PISocket``) connects to it unchanged.

What it models
    Commands ``*IDN? CSV? ERR? SAI? POS? MOV? ONT? SVO SVO? FRF FRF? MOV MVR VLS VLS? HLT STP NLM
    NLM? PLM PLM? TMN? TMX? RTR RTR? DRC DRC? DRL? DRR?`` and the single-character commands ``#5``
    (motion status, hex bit mask), ``#7`` (ready) and ``#24`` (stop all). Replies follow GCS
    conventions: one line per axis as ``X=1.000000``, every line but the last ends with a space
    before the LF. Errors as the controller sets them (``ERR?`` returns the last one and clears it):
    1 syntax, 2 unknown command, 5 move without reference or servo, 7 position out of limits, 10
    stopped by command, 15 invalid axis, 17 parameter out of range. A faulty query gets no reply,
    only the error code. Motion is a velocity-limited straight line in the shared world's virtual
    time.

Data recorder (for batched position reads at 200 Hz): ``RTR n`` sets the record rate to one
point every ``n`` servo cycles (``SERVO_CYCLE_S``); ``DRC t A 2`` configures record table ``t``
to record the actual position of axis ``A`` and, in this simulator, (re)starts its recording at
once (a C-887 waits for its ``DRT`` trigger, by default the next motion command); ``DRL? t``
says how many points it holds; ``DRR? start n t`` reads ``n`` points from ``start`` (1-based) as
a GCS array (``# ... = ...`` header lines, ``# END_HEADER``, one value per line). Points are taken
on the virtual clock, at exact multiples of the record period after the start; a table holds at
most ``RECORDER_POINTS`` points (then recording stops).

Not modelled: the pivot point and coordinate systems (KSx), data-recorder triggers and sources
other than the actual position, macros, wave generator, joystick, the real controller's
trajectory (acceleration and jerk).
"""

from __future__ import annotations

import math
import socket
import threading
from collections.abc import Callable

from drivers.sim.plate import HEXAPOD_AXES
from drivers.sim.world import SimWorld

ERR_SYNTAX = 1
ERR_UNKNOWN_COMMAND = 2
ERR_MOVE_WITHOUT_REF_OR_SERVO = 5
ERR_POS_OUT_OF_LIMITS = 7
ERR_STOPPED = 10
ERR_INVALID_AXIS = 15
ERR_PARAM_OUT_OF_RANGE = 17

#: Travel range of the H-820 as we model it (mm for X Y Z, deg for U V W); see docs/hardware.md.
H820_TRAVEL = {
    "X": (-50.0, 50.0), "Y": (-50.0, 50.0), "Z": (-25.0, 25.0),
    "U": (-15.0, 15.0), "V": (-15.0, 15.0), "W": (-30.0, 30.0),
}
H820_MAX_VELOCITY_MM_S = 20.0
#: Servo cycle of the simulated controller, seconds (the record rate counts in it).
SERVO_CYCLE_S = 1e-4
#: Points per record table.
RECORDER_POINTS = 1 << 20
_RECORD_TABLES = range(1, 9)
IDN = "(c)2024 Physik Instrumente (PI) GmbH & Co. KG, C-887.52, SIM0000001, 2.1.0.0"
MAX_LINE_BYTES = 4096


def format_reply(lines: list[str]) -> str:
    """Join reply lines the GCS way: every line but the last ends with ``" \\n"``."""
    if not lines:
        return ""
    return " \n".join(lines) + "\n"


def _fmt(value: float) -> str:
    return f"{value:.6f}"


class _GcsError(Exception):
    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


class _RecordTable:
    """One data-recorder table: the axis it records and the points taken so far."""

    def __init__(self, axis: str, t_start_s: float, period_s: float) -> None:
        self.axis = axis
        self.t_start_s = t_start_s
        self.period_s = period_s
        self.values: list[float] = []

    def due_until(self, t_s: float) -> int:
        """Number of points due by ``t_s`` (round-off tolerant)."""
        return min(RECORDER_POINTS, math.floor((t_s - self.t_start_s) / self.period_s + 1e-6) + 1)


class GcsController:
    """State of a simulated C-887: servo, reference, limits, velocity, last error (thread-safe).

    Parameters
    ----------
    world : SimWorld
        Holds the plate motion (positions are exact functions of the world's virtual time).
    travel : dict of axis to (min, max)
        Travel range per axis (``TMN?``/``TMX?``); soft limits start equal to it.
    velocity_mm_s : float
        Initial system velocity (``VLS``).
    reference_velocity_mm_s : float
        Velocity of the referencing move (to the zero pose).
    """

    def __init__(
        self,
        world: SimWorld,
        *,
        travel: dict[str, tuple[float, float]] | None = None,
        velocity_mm_s: float = 1.0,
        max_velocity_mm_s: float = H820_MAX_VELOCITY_MM_S,
        reference_velocity_mm_s: float = 5.0,
    ) -> None:
        self.world = world
        self.travel = dict(travel or H820_TRAVEL)
        self.soft_min = {a: lo for a, (lo, _) in self.travel.items()}
        self.soft_max = {a: hi for a, (_, hi) in self.travel.items()}
        self.velocity_mm_s = float(velocity_mm_s)
        self.max_velocity_mm_s = float(max_velocity_mm_s)
        self.reference_velocity_mm_s = float(reference_velocity_mm_s)
        self.servo = dict.fromkeys(HEXAPOD_AXES, False)
        self._reference_done_s: float | None = None
        self._error = 0
        self._lock = threading.RLock()
        self.record_rate_cycles = 1
        self._tables: dict[int, _RecordTable] = {}
        self._remove_listener: Callable[[], None] | None = world.clock.on_advance(self._record)

    def close(self) -> None:
        """Stop recording (unhook from the clock); idempotent."""
        remove, self._remove_listener = self._remove_listener, None
        if remove is not None:
            remove()

    def _record(self, t_from_s: float, t_to_s: float) -> None:
        """Take the recorder points due in (t_from, t_to]: the plate moves on one segment
        during an advance, so its position at those past instants is exact."""
        with self._lock:
            for table in self._tables.values():
                for k in range(len(table.values), table.due_until(t_to_s)):
                    t = table.t_start_s + k * table.period_s
                    table.values.append(self.world.hexapod_axis_position(table.axis, t))

    # ------------------------------------------------------------------ helpers
    @property
    def referenced(self) -> bool:
        done = self._reference_done_s
        return done is not None and self.world.clock.now() >= done

    def _axes(self, tokens: list[str]) -> list[str]:
        axes = [t.upper() for t in tokens] or list(HEXAPOD_AXES)
        if any(a not in HEXAPOD_AXES for a in axes):
            raise _GcsError(ERR_INVALID_AXIS)
        return axes

    @staticmethod
    def _pairs(tokens: list[str]) -> list[tuple[str, float]]:
        if not tokens or len(tokens) % 2:
            raise _GcsError(ERR_SYNTAX)
        pairs = []
        for axis, value in zip(tokens[::2], tokens[1::2], strict=True):
            if axis.upper() not in HEXAPOD_AXES:
                raise _GcsError(ERR_INVALID_AXIS)
            try:
                number = float(value)
            except ValueError:
                raise _GcsError(ERR_SYNTAX) from None
            if number != number or number in (float("inf"), float("-inf")):
                raise _GcsError(ERR_SYNTAX)
            pairs.append((axis.upper(), number))
        return pairs

    def _per_axis(self, axes: list[str], values: dict[str, str]) -> str:
        return format_reply([f"{a}={values[a]}" for a in axes])

    # ------------------------------------------------------------------ commands
    def handle(self, line: str) -> str | None:
        """Execute one command line; return the reply text (with LF) or None for no reply."""
        with self._lock:
            try:
                return self._dispatch(line)
            except _GcsError as err:
                self._error = err.code
                return None

    def _dispatch(self, line: str) -> str | None:
        if len(line) == 1 and ord(line) < 32:
            return self._single_char(ord(line))
        tokens = line.split()
        if not tokens:
            return None
        cmd, args = tokens[0].upper(), tokens[1:]
        world = self.world
        if cmd == "ERR?":
            err, self._error = self._error, 0
            return f"{err}\n"
        if cmd == "*IDN?":
            return IDN + "\n"
        if cmd == "CSV?":
            return "2.0\n"
        if cmd == "SAI?":
            if args and not (len(args) == 1 and args[0].upper() == "ALL"):
                raise _GcsError(ERR_SYNTAX)
            return format_reply(list(HEXAPOD_AXES))
        if cmd in ("POS?", "MOV?", "ONT?", "SVO?", "FRF?", "NLM?", "PLM?", "TMN?", "TMX?"):
            axes = self._axes(args)
            if cmd == "POS?":
                pos = world.hexapod_position()
                values = {a: _fmt(pos[a]) for a in axes}
            elif cmd == "MOV?":
                target = world.hexapod_target()
                values = {a: _fmt(target[a]) for a in axes}
            elif cmd == "ONT?":
                on = world.hexapod_on_target()
                values = dict.fromkeys(axes, "1" if on else "0")
            elif cmd == "SVO?":
                values = {a: "1" if self.servo[a] else "0" for a in axes}
            elif cmd == "FRF?":
                values = dict.fromkeys(axes, "1" if self.referenced else "0")
            elif cmd == "NLM?":
                values = {a: _fmt(self.soft_min[a]) for a in axes}
            elif cmd == "PLM?":
                values = {a: _fmt(self.soft_max[a]) for a in axes}
            elif cmd == "TMN?":
                values = {a: _fmt(self.travel[a][0]) for a in axes}
            else:
                values = {a: _fmt(self.travel[a][1]) for a in axes}
            return self._per_axis(axes, values)
        if cmd in ("RTR", "RTR?", "DRC", "DRC?", "DRL?", "DRR?"):
            return self._recorder(cmd, args)
        if cmd == "VLS?":
            if args:
                raise _GcsError(ERR_SYNTAX)
            return _fmt(self.velocity_mm_s) + "\n"
        if cmd == "SVO":
            pairs = self._pairs(args)
            if any(v not in (0.0, 1.0) for _, v in pairs):
                raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
            if any(v == 0.0 for _, v in pairs):
                world.hexapod_halt()  # servo off stops the platform where it is
            for axis, value in pairs:
                self.servo[axis] = value == 1.0
            return None
        if cmd == "FRF":
            self._axes(args)
            if not all(self.servo.values()):
                raise _GcsError(ERR_MOVE_WITHOUT_REF_OR_SERVO)
            duration = world.hexapod_move(
                dict.fromkeys(HEXAPOD_AXES, 0.0), velocity_mm_s=self.reference_velocity_mm_s
            )
            self._reference_done_s = world.clock.now() + duration
            return None
        if cmd in ("MOV", "MVR"):
            pairs = self._pairs(args)
            if not self.referenced or not all(self.servo.values()):
                raise _GcsError(ERR_MOVE_WITHOUT_REF_OR_SERVO)
            target = world.hexapod_target()
            goal = dict(target)
            for axis, value in pairs:
                goal[axis] = value if cmd == "MOV" else goal[axis] + value
            if any(not self.soft_min[a] <= goal[a] <= self.soft_max[a] for a in HEXAPOD_AXES):
                raise _GcsError(ERR_POS_OUT_OF_LIMITS)
            world.hexapod_move(goal, velocity_mm_s=self.velocity_mm_s)
            return None
        if cmd == "VLS":
            if len(args) != 1:
                raise _GcsError(ERR_SYNTAX)
            try:
                velocity = float(args[0])
            except ValueError:
                raise _GcsError(ERR_SYNTAX) from None
            if not 0.0 < velocity <= self.max_velocity_mm_s:
                raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
            self.velocity_mm_s = velocity
            return None
        if cmd in ("HLT", "STP"):
            self._axes(args)
            world.hexapod_halt()
            self._error = ERR_STOPPED
            return None
        if cmd in ("NLM", "PLM"):
            pairs = self._pairs(args)
            for axis, value in pairs:
                lo, hi = self.travel[axis]
                if not lo <= value <= hi:
                    raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
            for axis, value in pairs:
                (self.soft_min if cmd == "NLM" else self.soft_max)[axis] = value
            return None
        raise _GcsError(ERR_UNKNOWN_COMMAND)

    def _recorder(self, cmd: str, args: list[str]) -> str | None:
        world = self.world
        if cmd == "RTR?":
            return f"{self.record_rate_cycles}\n"
        ints = _ints(args) if cmd != "DRC" else _ints(args[:1]) + _ints(args[2:])
        if cmd == "RTR":
            if len(ints) != 1 or ints[0] < 1:
                raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
            self.record_rate_cycles = ints[0]
            return None
        if cmd == "DRC":
            if len(args) != 3 or ints[0] not in _RECORD_TABLES or args[1].upper() not in \
                    HEXAPOD_AXES or ints[1] != 2:
                raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
            self._tables[ints[0]] = _RecordTable(
                args[1].upper(), world.clock.now(), self.record_rate_cycles * SERVO_CYCLE_S)
            self._record(world.clock.now(), world.clock.now())  # the first point, at once
            return None
        if cmd == "DRC?":
            return format_reply([f"{t}={rec.axis} 2" for t, rec in sorted(self._tables.items())]
                                or ["0"])
        table = self._tables.get(ints[-1]) if ints else None
        if table is None:
            raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
        if cmd == "DRL?":
            if len(ints) != 1:
                raise _GcsError(ERR_SYNTAX)
            return f"{ints[0]}={len(table.values)}\n"
        if len(ints) != 3 or ints[0] < 1 or ints[1] < 1 or ints[0] + ints[1] - 1 > len(
                table.values):
            raise _GcsError(ERR_PARAM_OUT_OF_RANGE)
        start, count = ints[0], ints[1]
        header = ["# TYPE = 1", "# SEPARATOR = 32", "# DIM = 1",
                  f"# SAMPLE_TIME = {table.period_s:.6f}", f"# NDATA = {count}",
                  f"# NAME0 = Actual position of axis {table.axis}", "# END_HEADER"]
        values = table.values[start - 1:start - 1 + count]
        return format_reply(header + [_fmt(v) for v in values])

    def _single_char(self, code: int) -> str | None:
        if code == 5:  # motion status: bit i set while axis i moves
            moving = not self.world.hexapod_on_target()
            mask = (1 << len(HEXAPOD_AXES)) - 1 if moving else 0
            return f"{mask:x}\n"
        if code == 7:  # controller ready
            return "\xb1\n"
        if code == 24:  # stop all
            self.world.hexapod_halt()
            self._error = ERR_STOPPED
            return None
        raise _GcsError(ERR_UNKNOWN_COMMAND)


class GcsSimServer:
    """TCP server for a :class:`GcsController`, one daemon thread per client, at most
    ``max_clients`` at once (a connection beyond that is closed at once, as a controller with no
    free socket would; counted in ``refused``).

    Faults (``world.faults``, device ``"hexapod"``): ``disconnected`` closes open connections and
    refuses new ones; ``reply_delay_s`` delays replies (wall clock, interruptible by close());
    ``malformed_replies`` answers queries with a line that breaks GCS framing.
    """

    def __init__(
        self, controller: GcsController, *, host: str = "127.0.0.1", port: int = 0,
        max_clients: int = 8,
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.controller = controller
        self.max_clients = int(max_clients)
        self.refused = 0
        self._bind = (host, port)
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._clients: dict[socket.socket, threading.Thread] = {}
        self._clients_lock = threading.Lock()
        self._accepted = 0
        self._accepted_cond = threading.Condition()
        #: Commands executed and replies sent, over all clients (wire statistics for benchmarks).
        self.commands_handled = 0
        self.replies_sent = 0
        #: Reads from a client that produced at least one reply: one per request/reply round trip.
        self.round_trips = 0
        self._stats_lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("GCS simulator is not started")
        host, port = self._listener.getsockname()[:2]
        return host, port

    def start(self) -> GcsSimServer:
        if self._listener is not None:
            raise RuntimeError("GCS simulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(self._bind)
            sock.listen(8)
            sock.settimeout(0.05)
        except OSError:
            sock.close()
            raise
        self._listener = sock
        self._stop.clear()
        self._accept_thread = threading.Thread(target=self._accept, name="gcs-sim", daemon=True)
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop accepting, close every client connection and join all threads (idempotent)."""
        self._stop.set()
        self.controller.close()
        if self._accept_thread is not None:
            self._accept_thread.join(timeout=5.0)
            self._accept_thread = None
        with self._clients_lock:
            clients = dict(self._clients)
        for conn, thread in clients.items():
            _shutdown(conn)
            thread.join(timeout=5.0)
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> GcsSimServer:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def accepted(self) -> int:
        """Number of connections accepted so far."""
        with self._accepted_cond:
            return self._accepted

    def join_finished_clients(self, *, accepted: int = 0, timeout_s: float = 5.0) -> None:
        """Wait until ``accepted`` connections were accepted and every client that disconnected
        is fully processed (lets tests order a rogue client before a driver)."""
        with self._accepted_cond:
            self._accepted_cond.wait_for(lambda: self._accepted >= accepted, timeout_s)
        with self._clients_lock:
            threads = list(self._clients.values())
        for thread in threads:
            thread.join(timeout=timeout_s)

    def _down(self) -> bool:
        return "hexapod" in self.controller.world.faults.disconnected

    def _accept(self) -> None:
        listener = self._listener
        assert listener is not None
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._clients_lock:
                full = len(self._clients) >= self.max_clients
            if self._down() or full:
                if full:
                    self.refused += 1
                conn.close()
                with self._accepted_cond:
                    self._accepted += 1
                    self._accepted_cond.notify_all()
                continue
            conn.settimeout(0.05)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # replies go out at once
            thread = threading.Thread(
                target=self._serve_client, args=(conn,), name="gcs-sim-client", daemon=True
            )
            with self._clients_lock:
                self._clients[conn] = thread
            thread.start()
            with self._accepted_cond:
                self._accepted += 1
                self._accepted_cond.notify_all()

    def _serve_client(self, conn: socket.socket) -> None:
        pending = b""
        try:
            while not self._stop.is_set():
                if self._down():
                    return
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data or self._down():  # a link taken down mid-wait answers nothing more
                    return
                pending += data
                pending = self._process(conn, pending)
                if pending is None:
                    return
        finally:
            with self._clients_lock:
                self._clients.pop(conn, None)
            conn.close()

    def _process(self, conn: socket.socket, pending: bytes) -> bytes | None:
        """Execute the complete commands in ``pending``; return the rest (None: connection lost).

        The replies to the commands of one read go out in one send (pipelined ``POS?`` +
        ``ERR?`` gets both answers in one segment, as from a controller's output buffer).
        """
        commands = 0
        replies: list[str] = []
        rest: bytes | None = pending
        while rest:
            first = rest[0]
            if first < 32 and first not in (10, 13):  # single-character command, no LF
                line, rest = chr(first), rest[1:]
            elif b"\n" in rest:
                raw, rest = rest.split(b"\n", 1)
                line = raw.decode("cp1252", errors="replace").strip("\r")
            elif len(rest) > MAX_LINE_BYTES:
                line, rest = "\x00too-long", b""  # unknown command: error 2, no reply
            else:
                break
            commands += 1
            reply = self.controller.handle(line)
            if reply is not None:
                replies.append(reply)
        if replies:
            faults = self.controller.world.faults
            delay = faults.reply_delay_s.get("hexapod", 0.0)
            if delay > 0 and self._stop.wait(delay):
                rest = None
            elif "hexapod" in faults.malformed_replies:
                replies = ["X=\x00garbled\nY=?\n" for _ in replies]
        with self._stats_lock:  # counted before the client can see the replies
            self.commands_handled += commands
            self.replies_sent += len(replies)
            self.round_trips += 1 if replies else 0
        try:
            if replies and rest is not None:
                conn.sendall("".join(replies).encode("cp1252", errors="replace"))
        except OSError:
            rest = None
        return rest


def _ints(tokens: list[str]) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        raise _GcsError(ERR_SYNTAX) from None


def _shutdown(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        return  # already closed by the client thread
