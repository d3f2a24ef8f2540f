"""Ways to talk GCS to a PI controller: through ``pipython``, ``pyvisa`` or a plain TCP socket.

All give the same three operations, each checked with ``ERR?`` like pipython does: ``command``
(no reply expected), ``query`` (returns the reply text, multi-line replies joined with their GCS
line ends), ``read_error`` (a bare ``ERR?``). Controller error codes come back as
:class:`GcsControllerError` with the code; silence as :class:`~drivers.base.DeviceTimeoutError`;
anything else that goes wrong on the link (a reset peer, a truncated or malformed reply, a vendor
library exception) as :class:`~drivers.base.DeviceError`. Nothing else escapes.

Link recovery. A reply that comes late, after its command timed out, must never be read as the
answer to the next command. After a timeout or any transport failure a link is *out of sync*;
before its next operation it reconnects (the socket and pyvisa links, and pipython links opened
with :meth:`PipythonGcsConnection.tcp`), which discards whatever was still on its way, and it
reads ``ERR?`` once to clear the error the lost exchange may have left (kept in
``stale_error``). A link that cannot reconnect raises :class:`~drivers.base.DeviceError` rather
than talk on a desynchronised stream.

Error-check policy (socket and pyvisa links): the ``ERR?`` that checks a command or query is sent
in the same write, so a checked query costs one round trip (``POS?`` + ``ERR?`` in one write, two
replies back). A query the controller refuses gets no reply, only the error code; the link sees
one integer reply and silence, and reports the code after its timeout.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from typing import Protocol

from pipython import GCSDevice, GCSError
from pipython.pidevice.interfaces.pisocket import PISocket

from drivers.base import DeviceError, DeviceTimeoutError

log = logging.getLogger(__name__)

GCS_PORT = 50000
_PIPYTHON_TIMEOUT_CODE = -7
#: What pipython raises besides GCSError when a reply is malformed or truncated (its own parsing
#: and formatting fail) or the socket under it breaks.
_PIPYTHON_FAILURES: tuple[type[BaseException], ...] = (
    OSError, ValueError, TypeError, IndexError, KeyError, UnicodeError, AttributeError,
)


class GcsControllerError(DeviceError):
    """The controller reported GCS error ``code`` (from ``ERR?``) after a command."""

    def __init__(
        self, device: str, code: int, *, command: str | None = None, reply: str | None = None
    ) -> None:
        self.code = int(code)
        super().__init__(device, f"controller error {code}", command=command, reply=reply)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.device, self.code, self.command, self.reply))


def _rebuild(device: str, code: int, command: str | None, reply: str | None) -> GcsControllerError:
    return GcsControllerError(device, code, command=command, reply=reply)


class GcsConnection(Protocol):
    """A GCS link: send a command, query, read the error, close."""

    def command(self, text: str) -> None: ...
    def query(self, text: str) -> str: ...
    def read_error(self) -> int: ...
    def close(self) -> None: ...


def reply_complete(text: str) -> bool:
    """True if ``text`` is a complete GCS reply: ends in LF not preceded by a space."""
    return text.endswith("\n") and not text.endswith(" \n")


def split_reply(buffer: bytes) -> tuple[bytes, bytes] | None:
    """``(first complete reply, rest)`` of received bytes, or None while the reply is incomplete.

    A reply ends at the first LF not preceded by a space (inner lines of a multi-line reply end
    with ``" \\n"``).
    """
    start = 0
    while True:
        i = buffer.find(b"\n", start)
        if i < 0:
            return None
        if i == 0 or buffer[i - 1:i] != b" ":
            return buffer[:i + 1], buffer[i + 1:]
        start = i + 1


def _check_framing(device: str, command: str, reply: str) -> None:
    """Inner line ends must be ``" \\n"`` (GCS multi-line convention)."""
    body = reply[:-1]
    for i, char in enumerate(body):
        if char in "\r\n" and (i == 0 or body[i - 1] != " "):
            raise DeviceError(device, "malformed multi-line reply", command=command, reply=reply)


def _parse_error_code(device: str, reply: str, command: str) -> int:
    try:
        return int(reply.strip())
    except ValueError:
        raise DeviceError(device, "malformed reply: ERR? answer is not an integer", command=command,
                          reply=reply) from None


class _LinkLost(DeviceError):
    """A transport failure that leaves the link out of sync (internal marker)."""


class _LineGcsConnection:
    """GCS over a byte stream: subclasses open/close the transport, send bytes, read one reply.

    Counts its request/reply round trips in ``round_trips`` and its reconnections in
    ``resyncs``.
    """

    name: str
    timeout_s: float
    round_trips: int = 0
    resyncs: int = 0
    stale_error: int = 0
    _in_sync: bool = True

    def _open(self) -> None:
        raise NotImplementedError

    def _close_transport(self) -> None:
        raise NotImplementedError

    def _send(self, payload: bytes, command: str) -> None:
        raise NotImplementedError

    def _read_reply(self, command: str) -> str:
        raise NotImplementedError

    # -------------------------------------------------------------- sync
    def _resync(self, command: str) -> None:
        """Reconnect (dropping any late reply) and clear the error register once."""
        log.warning("%s: link out of sync after a failed exchange; reconnecting before %r",
                    self.name, command)
        self._close_transport()
        self._open()
        self.resyncs += 1
        self._in_sync = True
        self.stale_error = self._exchange("ERR?", expect_reply=False, checked=False)[1]

    def _exchange(self, text: str, *, expect_reply: bool,
                  checked: bool = True) -> tuple[str | None, int]:
        """Send ``text`` (plus ``ERR?`` when ``checked``) in one write; ``(reply, error code)``."""
        if not self._in_sync:
            self._resync(text)
        payload = _gcs_payload(text) + (b"ERR?\n" if checked else b"")
        self.round_trips += 1
        try:
            self._send(payload, text)
            first = self._read_reply(text)
            if not checked or not expect_reply:
                return None, _parse_error_code(self.name, first, text)
            try:
                second = self._read_reply("ERR?")
            except DeviceTimeoutError:
                code = _int_or_none(first)
                if code:  # a refused query: no reply, only the ERR? answer (link in sync)
                    return None, code
                raise
            return first, _parse_error_code(self.name, second, text)
        except DeviceError:
            self._in_sync = False
            raise

    def read_error(self) -> int:
        return self._exchange("ERR?", expect_reply=False, checked=False)[1]

    def command(self, text: str) -> None:
        _, code = self._exchange(text, expect_reply=False)
        if code:
            raise GcsControllerError(self.name, code, command=text)

    def query(self, text: str) -> str:
        reply, code = self._exchange(text, expect_reply=True)
        if code:
            raise GcsControllerError(self.name, code, command=text, reply=reply)
        assert reply is not None
        return reply

    def close(self) -> None:
        self._close_transport()


def _int_or_none(text: str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _gcs_payload(text: str) -> bytes:
    """Single-character commands (e.g. ``chr(5)``) go without a line feed."""
    return (text if len(text) == 1 else text + "\n").encode("cp1252")


class SocketGcsConnection(_LineGcsConnection):
    """GCS over a plain TCP socket (no pipython), with real-time timeouts.

    Parameters
    ----------
    host, port : str, int
        Controller address (port 50000 on PI controllers).
    name : str
        Device name for errors.
    timeout_s : float
        Longest wait for a reply, seconds.
    """

    def __init__(
        self, host: str, port: int = GCS_PORT, *, name: str = "hexapod", timeout_s: float = 2.0
    ) -> None:
        if not timeout_s > 0:
            raise ValueError(f"timeout must be > 0 s, got {timeout_s}")
        self.name = name
        self.host, self.port = host, int(port)
        self.timeout_s = float(timeout_s)
        self._sock: socket.socket | None = None
        self._received = b""
        self._open()

    def _open(self) -> None:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        except OSError as err:
            raise DeviceError(self.name, f"cannot connect to {self.host}:{self.port}: {err}") \
                from err
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._received = sock, b""

    def _close_transport(self) -> None:
        sock, self._sock = self._sock, None
        self._received = b""
        if sock is not None:
            sock.close()

    def _send(self, payload: bytes, command: str) -> None:
        if self._sock is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        try:
            self._sock.sendall(payload)
        except OSError as err:
            raise DeviceError(self.name, f"send failed: {err}", command=command) from err

    def _read_reply(self, command: str) -> str:
        sock = self._sock
        if sock is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        deadline = time.monotonic() + self.timeout_s
        while (found := split_reply(self._received)) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeoutError(
                    self.name, f"no complete reply within {self.timeout_s} s", command=command,
                    reply=self._received.decode("cp1252", errors="replace") or None,
                )
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as err:
                raise DeviceError(self.name, f"receive failed: {err}", command=command) from err
            if not chunk:
                raise DeviceError(self.name, "connection closed by the controller", command=command)
            self._received += chunk
        raw, self._received = found
        reply = raw.decode("cp1252", errors="replace")
        _check_framing(self.name, command, reply)
        return reply


class PyvisaGcsConnection(_LineGcsConnection):
    """GCS through ``pyvisa`` (a ``TCPIP::host::port::SOCKET`` resource; pure-Python backend
    ``pyvisa-py`` by default, or an installed VISA library such as NI-VISA).

    Parameters
    ----------
    host, port : str, int
        Controller address (port 50000 on PI controllers).
    name : str
        Device name for errors.
    timeout_s : float
        Longest wait for a reply line, seconds.
    visa_library : str
        ``pyvisa.ResourceManager`` argument: ``"@py"`` (pyvisa-py) or a VISA library path.
    """

    def __init__(self, host: str, port: int = GCS_PORT, *, name: str = "hexapod",
                 timeout_s: float = 2.0, visa_library: str = "@py") -> None:
        import pyvisa

        self.name = name
        self.timeout_s = float(timeout_s)
        self._errors: tuple[type[BaseException], ...] = (
            pyvisa.errors.Error, OSError, ValueError, UnicodeError,
        )
        self._address = f"TCPIP::{host}::{port}::SOCKET"
        self._resource = None
        try:
            self._rm = pyvisa.ResourceManager(visa_library)
        except self._errors as err:
            raise DeviceError(name, f"cannot load the VISA library {visa_library!r}: {err}") \
                from err
        try:
            self._open()
        except DeviceError:
            self._rm.close()
            raise

    def _open(self) -> None:
        try:
            self._resource = self._rm.open_resource(
                self._address, read_termination="\n", write_termination="",
                timeout=round(self.timeout_s * 1000), encoding="cp1252",
            )
        except self._errors as err:
            raise DeviceError(self.name, f"cannot open {self._address}: {err}") from err

    def _close_transport(self) -> None:
        resource, self._resource = self._resource, None
        if resource is not None:
            try:
                resource.close()
            except self._errors as err:
                log.warning("%s: closing %s: %s", self.name, self._address, err)

    def _send(self, payload: bytes, command: str) -> None:
        if self._resource is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        try:
            self._resource.write_raw(payload)
        except self._errors as err:
            raise DeviceError(self.name, f"send failed: {err}", command=command) from err

    def _read_reply(self, command: str) -> str:
        if self._resource is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        reply = ""
        while not reply_complete(reply):
            try:
                reply += self._resource.read() + "\n"  # one line, terminator stripped
            except self._errors as err:
                raise DeviceTimeoutError(self.name, f"no complete reply: {err}",
                                         command=command, reply=reply or None) from err
        _check_framing(self.name, command, reply)
        return reply

    def close(self) -> None:
        self._close_transport()
        rm, self._rm = self._rm, None
        if rm is not None:
            rm.close()


class _OnceClosingSocket(PISocket):
    """PISocket whose close() may be called twice (GCSDevice closes again in ``__del__``)."""

    def close(self) -> None:
        sock = self._socket
        if sock is None or sock.fileno() == -1:
            return
        try:
            super().close()
        except OSError:
            sock.close()  # peer already gone: shutdown() fails, the descriptor still must go


class PipythonGcsConnection:
    """GCS through PI's ``pipython`` ``GCSDevice`` (which appends ``ERR?`` to every command).

    Parameters
    ----------
    device : pipython.GCSDevice
        A connected device (any pipython gateway: TCP, serial, USB, the PI GCS DLL).
    name : str
        Device name for errors.
    reopen : callable () -> GCSDevice, optional
        Opens a fresh device on the same controller; used to resynchronise after a timeout or a
        broken link (see the module docstring). Without it such a link refuses further use.
    """

    def __init__(self, device: GCSDevice, *, name: str = "hexapod",
                 reopen: Callable[[], GCSDevice] | None = None) -> None:
        self.name = name
        self._device: GCSDevice | None = device
        self._reopen = reopen
        self._in_sync = True
        self.resyncs = 0
        self.stale_error = 0

    @classmethod
    def tcp(
        cls, host: str, port: int = GCS_PORT, *, name: str = "hexapod", timeout_s: float = 2.0
    ) -> PipythonGcsConnection:
        """Connect over TCP with pipython's own socket gateway (no PI DLL needed)."""

        def open_device() -> GCSDevice:
            try:
                gateway = _OnceClosingSocket(host, port)
            except OSError as err:
                raise DeviceError(name, f"cannot connect to {host}:{port}: {err}") from err
            gateway.settimeout(int(timeout_s * 1000))
            try:
                return GCSDevice(gateway=gateway)
            except (GCSError, *_PIPYTHON_FAILURES) as err:
                gateway.close()
                raise DeviceError(
                    name, f"pipython could not identify the controller: {err}") from err

        return cls(open_device(), name=name, reopen=open_device)

    def _dev(self, command: str) -> GCSDevice:
        if not self._in_sync:
            self._resync(command)
        if self._device is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        return self._device

    def _resync(self, command: str) -> None:
        if self._reopen is None:
            raise DeviceError(self.name, "link out of sync after a failed exchange and no way "
                              "to reopen it; reconnect", command=command)
        log.warning("%s: link out of sync after a failed exchange; reconnecting before %r",
                    self.name, command)
        self._close_device()
        self._device = self._reopen()
        self.resyncs += 1
        self._in_sync = True
        self.stale_error = self.read_error()

    def _error(self, err: BaseException, command: str, reply: str | None = None) -> DeviceError:
        """Our error for what pipython raised; anything but a controller error desyncs."""
        if isinstance(err, GCSError):
            code = int(err.val)
            if code > 0:
                return GcsControllerError(self.name, code, command=command, reply=reply)
            self._in_sync = False
            if code == _PIPYTHON_TIMEOUT_CODE:
                return DeviceTimeoutError(self.name, f"pipython: {err}", command=command)
            return DeviceError(self.name, f"pipython: {err}", command=command, reply=reply)
        self._in_sync = False
        kind = "link failure" if isinstance(err, OSError) else "malformed or truncated reply"
        return DeviceError(self.name, f"pipython {kind}: {type(err).__name__}: {err}",
                           command=command, reply=reply)

    def command(self, text: str) -> None:
        device = self._dev(text)
        try:
            device.send(text)
        except (GCSError, *_PIPYTHON_FAILURES) as err:
            raise self._error(err, text) from err

    def query(self, text: str) -> str:
        device = self._dev(text)
        try:
            return str(device.read(text))
        except (GCSError, *_PIPYTHON_FAILURES) as err:
            raise self._error(err, text) from err

    def read_error(self) -> int:
        device = self._dev("ERR?")
        try:
            return int(device.qERR())
        except (GCSError, *_PIPYTHON_FAILURES) as err:
            raise self._error(err, "ERR?") from err

    def _close_device(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            try:
                device.__exit__(None, None, None)  # unregisters pipython's callback, closes
            except (GCSError, *_PIPYTHON_FAILURES) as err:
                log.warning("%s: closing pipython device: %s", self.name, err)

    def close(self) -> None:
        self._close_device()
