"""ATI Net F/T backend: RDT over UDP (see :mod:`drivers.force.rdt`)."""

from __future__ import annotations

import math
import select
import socket
import threading
import time
from dataclasses import dataclass

from drivers.base import DeviceError, DeviceTimeoutError, Wrench
from drivers.force import rdt
from drivers.force.base import SampleBuffer, WrenchCallback
from drivers.force.spec import SensorSpec
from lab.clock import Clock


class NetFtSensor:
    """A force/torque sensor behind an ATI Net F/T box, read over RDT (UDP).

    Parameters
    ----------
    host : str
        Address of the Net F/T (or of its simulator).
    port : int
        RDT port, 49152 on the device.
    clock : Clock
        Timestamps of samples; the RDT rate is counted in its seconds.
    name : str
        Device name used in errors.
    spec : SensorSpec or None
        Transducer ranges; when given, a channel at its range also sets ``saturated``.
    counts_per_force, counts_per_torque : float
        Counts per N and per N m of the active Net F/T configuration (its web page shows them).
    rdt_rate_hz : float
        RDT output rate configured on the device; streaming rates must divide it.
    timeout_s : float
        Longest wait for a record, in seconds of real time (network I/O).

    Notes
    -----
    ``read`` sends a request for one record and waits for it; while streaming it returns the newest
    streamed sample instead (a new request would end the stream). Streamed samples are timestamped
    from their RDT sequence number: ``t = t_first + (seq - seq_first) / rdt_rate_hz``. Lost and
    out-of-order packets are counted (``lost_packets``, ``out_of_order_packets``); out-of-order and
    wrong-size packets are discarded.
    """

    def __init__(
        self,
        host: str,
        port: int = rdt.RDT_PORT,
        *,
        clock: Clock,
        name: str = "force_sensor",
        spec: SensorSpec | None = None,
        counts_per_force: float = 1e6,
        counts_per_torque: float = 1e6,
        rdt_rate_hz: float = 200.0,
        timeout_s: float = 0.5,
    ) -> None:
        if counts_per_force <= 0 or counts_per_torque <= 0:
            raise ValueError("counts per force and per torque must be > 0")
        if rdt_rate_hz <= 0 or timeout_s <= 0:
            raise ValueError("RDT rate and timeout must be > 0")
        self.name = name
        self.host = host
        self.port = int(port)
        self.clock = clock
        self.spec = spec
        self.counts_per_force = float(counts_per_force)
        self.counts_per_torque = float(counts_per_torque)
        self.rdt_rate_hz = float(rdt_rate_hz)
        self.timeout_s = float(timeout_s)
        self.lost_packets = 0
        self.out_of_order_packets = 0
        self.malformed_packets = 0
        self._sock: socket.socket | None = None
        self._buffer = SampleBuffer()
        self._stream_thread: threading.Thread | None = None
        self._stream_stop = threading.Event()
        self._stream_started = threading.Event()
        self._stream_period_s = 0.0
        self._stream: _StreamState | None = None
        self._receive_lock = threading.Lock()
        self._reader_took_s = -math.inf  # real time a reader last took records itself
        self._callback_error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the UDP socket. Does not bias the sensor."""
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.connect((self.host, self.port))
        except OSError as err:
            sock.close()
            raise DeviceError(self.name, f"cannot reach {self.host}:{self.port}: {err}") from err
        sock.settimeout(self.timeout_s)
        self._sock = sock

    def close(self) -> None:
        """Stop streaming (if on) and close the socket."""
        if self._sock is None:
            return
        try:
            if self._stream_thread is not None:
                self.stop_streaming()
        finally:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> NetFtSensor:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def streaming(self) -> bool:
        return self._stream_thread is not None

    # ------------------------------------------------------------------ commands
    def _socket(self) -> socket.socket:
        if self._sock is None:
            raise DeviceError(self.name, "not connected; call connect() first")
        return self._sock

    def _send(self, command: int, count: int = 0) -> None:
        text = f"RDT command 0x{command:04x} count {count}"
        try:
            self._socket().send(rdt.encode_request(command, count))
        except OSError as err:
            raise DeviceError(self.name, f"send failed: {err}", command=text) from err

    def bias(self) -> None:
        """Set the software bias: the current load becomes zero (explicit only).

        Outside streaming, one record is then requested and awaited: the Net F/T handles requests
        in order, so its reply proves the bias is in effect before this returns (and that the
        device is alive). While streaming, the bias is only sent.
        """
        self._send(rdt.CMD_SET_SOFTWARE_BIAS)
        if self._stream_thread is None:
            self.read()

    def _to_wrench(self, record: rdt.RdtRecord, t_s: float) -> Wrench:
        force, torque = record.force_torque(
            counts_per_force=self.counts_per_force, counts_per_torque=self.counts_per_torque
        )
        saturated = bool(record.status & rdt.STATUS_ERROR)
        if self.spec is not None:
            saturated = saturated or self.spec.saturated(force, torque)
        return Wrench(force, torque, t_s, saturated)

    def read(self) -> Wrench:
        """One sample (N, N m) timestamped on the clock; see Notes of the class."""
        if self._stream_thread is not None:
            return self._latest_streamed()
        sock = self._socket()
        self._flush(sock)
        t_s = self.clock.now()
        command = f"RDT command 0x{rdt.CMD_START_REALTIME:04x} count 1"
        self._send(rdt.CMD_START_REALTIME, 1)
        deadline = _monotonic() + self.timeout_s
        while True:
            remaining = deadline - _monotonic()
            if remaining <= 0:
                raise DeviceTimeoutError(
                    self.name, f"no RDT record within {self.timeout_s} s", command=command
                )
            sock.settimeout(remaining)
            try:
                data = sock.recv(2048)
            except TimeoutError:
                continue
            except OSError as err:  # e.g. ICMP port unreachable on a connected UDP socket
                raise DeviceError(self.name, f"receive failed: {err}", command=command) from err
            try:
                record = rdt.decode_record(data)
            except ValueError:
                self.malformed_packets += 1
                continue
            return self._to_wrench(record, t_s)

    def _flush(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        try:
            while True:
                try:
                    sock.recv(2048)
                except OSError:  # nothing left (BlockingIOError) or port unreachable
                    return
        finally:
            sock.settimeout(self.timeout_s)

    # ------------------------------------------------------------------ streaming
    def start_streaming(
        self, rate_hz: float = 200.0, callback: WrenchCallback | None = None
    ) -> None:
        """Stream at ``rate_hz`` (must divide the RDT rate) into the buffer and ``callback``.

        Records are taken off the socket by a receiving thread, and also by :meth:`read` and
        :meth:`receive_pending` in the caller's thread, whichever comes first (one at a time, in
        order). While a reader calls :meth:`read` or :meth:`receive_pending` at least every
        ``_READER_GRACE_S`` of real time, the receiving thread leaves the socket to it (no
        wake-up or hand-over per record); when those calls stop, it takes over within that
        time. ``callback`` runs in whichever thread took the
        record; it must be quick and must not raise (an exception is kept and raised by
        :meth:`stop_streaming`).
        """
        if self._stream_thread is not None:
            raise DeviceError(self.name, "already streaming")
        ratio = self.rdt_rate_hz / rate_hz if rate_hz > 0 else 0.0
        decimation = round(ratio)
        if decimation < 1 or abs(ratio - decimation) > 1e-6:
            raise ValueError(
                f"{self.name}: streaming rate {rate_hz} Hz must divide the RDT rate "
                f"{self.rdt_rate_hz} Hz configured on the Net F/T"
            )
        sock = self._socket()
        self._flush(sock)
        self._buffer.clear()
        self._callback_error = None
        self._stream_period_s = 1.0 / rate_hz
        self._stream_stop.clear()
        self._stream = _StreamState(decimation, callback, self.clock.now())
        self._send(rdt.CMD_START_REALTIME, 0)
        self._stream_started.clear()
        self._stream_thread = threading.Thread(
            target=self._receive, args=(sock,), name=f"netft-{self.name}", daemon=True,
        )
        self._stream_thread.start()
        # The Net F/T answers a start request with its first record at once: wait for it (real
        # time), so that the stream is known to run before the caller moves on.
        self._take_waiting()
        if not self._stream_started.wait(self.timeout_s):
            self.stop_streaming()
            raise DeviceTimeoutError(self.name, f"no record within {self.timeout_s} s of starting "
                                     "the stream", command="start realtime streaming")

    def stop_streaming(self) -> None:
        """Tell the device to stop and end the receiving thread."""
        thread = self._stream_thread
        if thread is None:
            return
        try:
            self._send(rdt.CMD_STOP_STREAMING)
        finally:
            self._stream_stop.set()
            thread.join(timeout=5.0)
            self._stream_thread = None
            self._stream = None
            if self._sock is not None:
                self._sock.settimeout(self.timeout_s)
        if self._callback_error is not None:
            err, self._callback_error = self._callback_error, None
            raise DeviceError(self.name, f"streaming callback failed: {err!r}") from err

    def buffer(self) -> list[Wrench]:
        """A copy of the streamed samples received so far."""
        return self._buffer.snapshot()

    def drain(self) -> list[Wrench]:
        """The streamed samples received so far, removing them from the buffer."""
        return self._buffer.drain()

    def _latest_streamed(self) -> Wrench:
        # the newest sample due: sampled less than one period before now (waits for it if needed)
        horizon = self.clock.now() - self._stream_period_s * (1.0 - 1e-6)
        self._reader_took_s = _monotonic()
        self.receive_pending()
        if not self._buffer.wait_for(lambda w: w is not None and w.t_s > horizon, self.timeout_s):
            raise DeviceTimeoutError(
                self.name, f"no streamed sample newer than t = {horizon:.4f} s "
                f"within {self.timeout_s} s",
            )
        latest = self._buffer.latest()
        assert latest is not None
        return latest

    def receive_pending(self) -> int:
        """Take the records already waiting on the socket into the stream, in the caller's
        thread (no hand-over to the receiving thread); returns how many were taken. Like
        :meth:`read`, it keeps the receiving thread off the socket while it is called often."""
        self._reader_took_s = _monotonic()
        return self._take_waiting()

    def _take_waiting(self) -> int:
        """Take the records waiting on the socket (in whichever thread calls it)."""
        sock, stream = self._sock, self._stream
        if sock is None or stream is None:
            return 0
        taken = 0
        with self._receive_lock:
            while True:
                try:
                    ready, _, _ = select.select([sock], [], [], 0.0)
                    if not ready:
                        return taken
                    data = sock.recv(2048)
                except (OSError, ValueError):  # port unreachable, or closed meanwhile
                    return taken
                self._ingest(stream, data)
                taken += 1

    def _receive(self, sock: socket.socket) -> None:
        """Receiving thread: wait for records and take them into the stream until stopped."""
        while not self._stream_stop.is_set():
            idle_s = _monotonic() - self._reader_took_s
            if idle_s < _READER_GRACE_S:  # a reader takes the records itself: stay out of its way
                self._stream_stop.wait(_READER_GRACE_S - idle_s)
                continue
            try:
                ready, _, _ = select.select([sock], [], [], 0.05)
            except (OSError, ValueError):
                return  # socket closed under us
            if ready:
                self._take_waiting()

    def _ingest(self, stream: _StreamState, data: bytes) -> None:
        """One datagram of the stream (receive lock held); the first one was sampled when
        streaming was requested (``stream.t_first``)."""
        try:
            record = rdt.decode_record(data)
        except ValueError:
            self.malformed_packets += 1
            return
        seq = record.rdt_sequence
        if stream.last_seq is not None:
            step = (seq - stream.last_seq) & 0xFFFF_FFFF
            if step == 0 or step > 0x8000_0000:
                self.out_of_order_packets += 1
                return
            self.lost_packets += step - 1
        if stream.first_seq is None:
            stream.first_seq = seq
            self._stream_started.set()
        stream.last_seq = seq
        offset = (seq - stream.first_seq) & 0xFFFF_FFFF
        if offset % stream.decimation:
            return
        sample = self._to_wrench(record, stream.t_first + offset / self.rdt_rate_hz)
        self._buffer.append(sample)
        if stream.callback is not None and self._callback_error is None:
            try:
                stream.callback(sample)
            except Exception as err:  # reported by stop_streaming, not swallowed
                self._callback_error = err


@dataclass
class _StreamState:
    """Bookkeeping of one stream: decimation, callback, first sample time and sequences."""

    decimation: int
    callback: WrenchCallback | None
    t_first: float
    first_seq: int | None = None
    last_seq: int | None = None


#: Real time after a reader's last read during which the receiving thread leaves it the socket.
_READER_GRACE_S = 0.01


def _monotonic() -> float:
    """Real time for network timeouts (socket I/O is real even on a virtual clock)."""
    return time.monotonic()
