"""Simulated ATI Net F/T: an RDT server on UDP, fed by a sensor of the simulated world.

What it models: the RDT requests of ATI's specification (start real-time / buffered / multi-unit
streaming with a sample count, stop, set software bias, reset threshold latch), 36-byte big-endian
records with RDT and F/T sequence numbers, the status word (bit 31 plus our saturation bit when a
gauge saturates), counts per force/torque, a software bias kept in the device, and silence on
malformed requests. Records carry the world's force at their own sample time: the first record of a
request is sampled at once, the following ones every ``1 / rdt_rate_hz`` of (virtual) clock time,
sent while the clock advances. Every advance emits at most ``max_records_per_advance`` records (the
rest are dropped like packets lost in a full buffer; the sequence numbers show the gap).

Abuse. Clients that start a stream and leave without stopping it are expired: at most
``max_streams`` streams run at once (starting one more ends the one started longest ago), and on
Linux a stream whose client port is gone (ICMP port unreachable, read from the socket's error
queue) is ended at once. Records of all streams together are capped per clock advance, so the
server keeps answering however many clients came and went.

Not modelled: the Net F/T's web/TCP configuration interfaces, multi-unit framing (treated as
real-time streaming), RDT buffered packing of several records per datagram (one record each), the
threshold monitoring, and the device's internal filters.
"""

from __future__ import annotations

import math
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from drivers.force import rdt
from drivers.sim.world import SensorName, SimWorld
from lab.clock import GRID_TOLERANCE


@dataclass
class _Stream:
    t_start_s: float
    remaining: int | None  # None: until stopped
    index: int = 0  # samples already sent


class NetFtSimServer:
    """RDT server for one simulated sensor, bound to ``host`` (loopback) in a daemon thread.

    Parameters
    ----------
    world : SimWorld
        The simulated world; its clock drives streaming, its generator packet loss.
    sensor : {"probe_sensor", "indenter_sensor"}
        Which sensor of the world this Net F/T box reads.
    host, port : str, int
        Address to bind; port 0 lets the OS choose (see :attr:`address`).
    rdt_rate_hz : float
        RDT output rate (samples per second of clock time while streaming).
    counts_per_force, counts_per_torque : float
        Counts per N and per N m of the configuration (1e6 on a typical Net F/T setup).
    max_records_per_advance : int
        Cap on records emitted per clock advance, all streams together.
    max_streams : int
        Streams served at once; a new one beyond it ends the oldest (see the module docstring).
    """

    def __init__(
        self,
        world: SimWorld,
        sensor: SensorName,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rdt_rate_hz: float = 200.0,
        counts_per_force: float = 1e6,
        counts_per_torque: float = 1e6,
        internal_rate_hz: float = 7000.0,
        max_records_per_advance: int = 2000,
        max_streams: int = 8,
    ) -> None:
        if rdt_rate_hz <= 0:
            raise ValueError(f"RDT rate must be > 0 Hz, got {rdt_rate_hz}")
        self.world = world
        self.sensor = sensor
        self.rdt_rate_hz = float(rdt_rate_hz)
        self.counts_per_force = float(counts_per_force)
        self.counts_per_torque = float(counts_per_torque)
        self.internal_rate_hz = float(internal_rate_hz)
        self.max_records_per_advance = int(max_records_per_advance)
        if max_streams < 1:
            raise ValueError(f"max_streams must be >= 1, got {max_streams}")
        self.max_streams = int(max_streams)
        #: Streams ended because their client left (port unreachable) or a newer one evicted them.
        self.streams_expired = 0
        self.requests_ignored = 0
        #: Valid requests received and records sent (wire statistics for benchmarks).
        self.requests_received = 0
        self.records_sent = 0
        self._bind = (host, port)
        self._lock = threading.RLock()
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._bias_force = np.zeros(3)
        self._bias_torque = np.zeros(3)
        self._rdt_sequence = 0
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._remove_listener: Callable[[], None] | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` the server is bound to."""
        if self._sock is None:
            raise RuntimeError("Net F/T simulator is not started")
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def active_streams(self) -> int:
        """Streams being served now."""
        with self._lock:
            return len(self._streams)

    def start(self) -> NetFtSimServer:
        if self._sock is not None:
            raise RuntimeError("Net F/T simulator already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.bind(self._bind)
            sock.settimeout(0.05)
            if _IP_RECVERR is not None:  # report ICMP errors (a client port that is gone)
                sock.setsockopt(socket.IPPROTO_IP, _IP_RECVERR, 1)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._stop.clear()
        self._remove_listener = self.world.clock.on_advance(self._on_advance)
        self._thread = threading.Thread(
            target=self._serve, name=f"netft-sim-{self.sensor}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread, stop listening to the clock and close the socket (idempotent)."""
        self._stop.set()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NetFtSimServer:
        return self.start() if self._sock is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ protocol
    def _serve(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            except ConnectionRefusedError:  # an ICMP error pending: a client went away
                self._expire_unreachable()
                continue
            except OSError:
                return  # socket closed under us during close()
            self.handle_datagram(data, addr)

    def handle_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        """Act on one datagram from ``addr`` (send records, bias, stop) as the Net F/T would."""
        faults = self.world.faults
        if self.sensor in faults.disconnected:
            return
        request = rdt.decode_request(data)
        if request is None or request[0] not in rdt.KNOWN_COMMANDS:
            with self._lock:
                self.requests_ignored += 1
            return
        command, count = request
        now = self.world.clock.now()
        with self._lock:
            self.requests_received += 1
            if command == rdt.CMD_STOP_STREAMING:
                self._streams.pop(addr, None)
            elif command == rdt.CMD_SET_SOFTWARE_BIAS:
                force, torque, _ = self.world.sensor_wrench(self.sensor)
                self._bias_force, self._bias_torque = force, torque
            elif command == rdt.CMD_RESET_THRESHOLD_LATCH:
                pass  # no threshold monitoring is simulated
            else:
                stream = _Stream(t_start_s=now, remaining=count if count > 0 else None)
                self._streams.pop(addr, None)
                while len(self._streams) >= self.max_streams:  # evict the oldest
                    del self._streams[next(iter(self._streams))]
                    self.streams_expired += 1
                self._streams[addr] = stream
                self._emit(addr, stream, now)
                if stream.remaining == 0:
                    self._streams.pop(addr, None)

    def _emit(self, addr: tuple[str, int], stream: _Stream, t_s: float) -> None:
        """Send the next record of ``stream`` sampled at ``t_s`` (lock held)."""
        stream.index += 1
        if stream.remaining is not None:
            stream.remaining -= 1
        faults = self.world.faults
        if self.sensor in faults.sensor_dropout or self.sensor in faults.disconnected:
            return
        payload = self._record(t_s)
        self._rdt_sequence = (self._rdt_sequence + 1) & 0xFFFF_FFFF
        p_loss = faults.packet_loss_probability
        if p_loss > 0 and self.world.rng.random() < p_loss:
            return
        if faults.packet_drops and faults.packet_dropped(self.sensor, t_s):
            return
        delay = faults.reply_delay_s.get(self.sensor, 0.0)
        if delay > 0 and self._stop.wait(delay):
            return
        if self.sensor in faults.malformed_replies:
            payload = payload[:-3] + b"\xff"  # wrong length: a real client must discard it
        sock = self._sock
        if sock is None:
            return
        for _ in range(2):
            try:
                sock.sendto(payload, addr)
            except ConnectionRefusedError:
                # The socket reports an ICMP error of an EARLIER datagram (maybe to another
                # client whose port is gone): expire those streams, then send this record again.
                self._expire_unreachable()
                if addr not in self._streams:
                    return
                continue
            except OSError:
                return  # client gone: UDP does not care
            self.records_sent += 1
            return

    def _record(self, t_s: float) -> bytes:
        """The encoded record of the world's wrench at ``t_s`` (next RDT sequence number)."""
        force, torque, saturated = self.world.sensor_wrench(self.sensor, t_s)
        status = rdt.STATUS_ERROR | rdt.STATUS_SIM_SATURATION if saturated else 0
        counts = rdt.to_counts(
            force - self._bias_force, torque - self._bias_torque,
            counts_per_force=self.counts_per_force, counts_per_torque=self.counts_per_torque,
        )
        ft_sequence = int(t_s * self.internal_rate_hz) & 0xFFFF_FFFF
        return rdt.RECORD.pack((self._rdt_sequence + 1) & 0xFFFF_FFFF, ft_sequence, status,
                               *counts)

    def _expire_unreachable(self) -> None:
        """End the streams whose client port is gone (Linux error queue; lock taken here)."""
        sock = self._sock
        if sock is None or _MSG_ERRQUEUE is None:
            return
        with self._lock:
            while True:
                try:
                    _, _, _, addr = sock.recvmsg(1, 1024, _MSG_ERRQUEUE | socket.MSG_DONTWAIT)
                except OSError:
                    return  # queue empty (or not supported)
                if self._streams.pop(addr, None) is not None:
                    self.streams_expired += 1

    def _on_advance(self, t_from_s: float, t_to_s: float) -> None:
        if not self._streams:  # nothing streams (a new stream sends its first record itself)
            return
        period = 1.0 / self.rdt_rate_hz
        with self._lock:
            budget = self.max_records_per_advance
            for addr, stream in list(self._streams.items()):
                # sample k is due at t_start + k * period; send those in (t_from, t_to]. The
                # tolerance is the clock's grid tolerance (lab.clock.GRID_TOLERANCE), so what the
                # force watch waits for at a grid point has been sent.
                k_last = math.floor((t_to_s - stream.t_start_s) / period + GRID_TOLERANCE)
                while stream.index <= k_last and stream.remaining != 0:
                    if budget > 0:
                        self._emit(addr, stream, stream.t_start_s + stream.index * period)
                        budget -= 1
                    else:  # lost in a full buffer; the sequence numbers still advance
                        stream.index += 1
                        self._rdt_sequence = (self._rdt_sequence + 1) & 0xFFFF_FFFF
                        if stream.remaining is not None:
                            stream.remaining -= 1
                if stream.remaining == 0:
                    self._streams.pop(addr, None)



#: Linux socket options to read ICMP errors of an unconnected UDP socket (None elsewhere).
_IP_RECVERR: int | None = getattr(socket, "IP_RECVERR", 11 if sys.platform == "linux" else None)
_MSG_ERRQUEUE: int | None = getattr(socket, "MSG_ERRQUEUE",
                                    0x2000 if sys.platform == "linux" else None)
