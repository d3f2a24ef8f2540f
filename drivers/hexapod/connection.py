"""Ways to talk GCS to a PI controller: through ``pipython``, ``pyvisa`` or a plain TCP socket.

All give the same three operations, each followed by an ``ERR?`` check like pipython does:
``command`` (no reply expected), ``query`` (returns the reply text, multi-line replies joined
with their GCS line ends), ``read_error`` (a bare ``ERR?``). Controller error codes come back as
:class:`GcsControllerError` with the code; silence as :class:`~drivers.base.DeviceTimeoutError`.
"""

from __future__ import annotations

import socket
import time
from typing import Protocol

from pipython import GCSDevice, GCSError
from pipython.pidevice.interfaces.pisocket import PISocket

from drivers.base import DeviceError, DeviceTimeoutError

GCS_PORT = 50000
_PIPYTHON_TIMEOUT_CODE = -7


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


def _check_framing(device: str, command: str, reply: str) -> None:
    """Inner line ends must be ``" \\n"`` (GCS multi-line convention)."""
    body = reply[:-1]
    for i, char in enumerate(body):
        if char in "\r\n" and (i == 0 or body[i - 1] != " "):
            raise DeviceError(device, "malformed multi-line reply", command=command, reply=reply)


class _LineGcsConnection:
    """GCS over a byte stream: subclasses send text and read one complete reply."""

    name: str

    def _write(self, text: str) -> None:
        raise NotImplementedError

    def _read_reply(self, command: str) -> str:
        raise NotImplementedError

    def read_error(self) -> int:
        self._write("ERR?")
        reply = self._read_reply("ERR?")
        try:
            return int(reply.strip())
        except ValueError:
            raise DeviceError(
                self.name, "ERR? answer is not an integer", command="ERR?", reply=reply
            ) from None

    def _check(self, command: str, reply: str | None) -> None:
        code = self.read_error()
        if code:
            raise GcsControllerError(self.name, code, command=command, reply=reply)

    def command(self, text: str) -> None:
        self._write(text)
        self._check(text, None)

    def query(self, text: str) -> str:
        self._write(text)
        reply = self._read_reply(text)
        self._check(text, reply)
        return reply


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
        self.name = name
        self.timeout_s = float(timeout_s)
        try:
            self._sock: socket.socket | None = socket.create_connection(
                (host, port), timeout=self.timeout_s
            )
        except OSError as err:
            raise DeviceError(name, f"cannot connect to {host}:{port}: {err}") from err
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _write(self, text: str) -> None:
        if self._sock is None:
            raise DeviceError(self.name, "connection is closed", command=text)
        try:
            self._sock.sendall(_gcs_payload(text))
        except OSError as err:
            raise DeviceError(self.name, f"send failed: {err}", command=text) from err

    def _read_reply(self, command: str) -> str:
        assert self._sock is not None
        received = b""
        deadline = time.monotonic() + self.timeout_s
        while not reply_complete(received.decode("cp1252", errors="replace")):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceTimeoutError(
                    self.name, f"no complete reply within {self.timeout_s} s", command=command,
                    reply=received.decode("cp1252", errors="replace") or None,
                )
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(4096)
            except TimeoutError:
                continue
            except OSError as err:
                raise DeviceError(self.name, f"receive failed: {err}", command=command) from err
            if not chunk:
                raise DeviceError(self.name, "connection closed by the controller", command=command)
            received += chunk
        reply = received.decode("cp1252", errors="replace")
        _check_framing(self.name, command, reply)
        return reply

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


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
        self._errors: tuple[type[BaseException], ...] = (pyvisa.errors.VisaIOError, OSError)
        self._rm = pyvisa.ResourceManager(visa_library)
        address = f"TCPIP::{host}::{port}::SOCKET"
        try:
            self._resource = self._rm.open_resource(
                address, read_termination="\n", write_termination="",
                timeout=round(timeout_s * 1000), encoding="cp1252",
            )
        except self._errors as err:
            self._rm.close()
            raise DeviceError(name, f"cannot open {address}: {err}") from err

    def _write(self, text: str) -> None:
        if self._resource is None:
            raise DeviceError(self.name, "connection is closed", command=text)
        try:
            self._resource.write_raw(_gcs_payload(text))
        except self._errors as err:
            raise DeviceError(self.name, f"send failed: {err}", command=text) from err

    def _read_reply(self, command: str) -> str:
        assert self._resource is not None
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
        if self._resource is not None:
            self._resource.close()
            self._resource = None
            self._rm.close()


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
    """

    def __init__(self, device: GCSDevice, *, name: str = "hexapod") -> None:
        self.name = name
        self._device: GCSDevice | None = device

    @classmethod
    def tcp(
        cls, host: str, port: int = GCS_PORT, *, name: str = "hexapod", timeout_s: float = 2.0
    ) -> PipythonGcsConnection:
        """Connect over TCP with pipython's own socket gateway (no PI DLL needed)."""
        try:
            gateway = _OnceClosingSocket(host, port)
        except OSError as err:
            raise DeviceError(name, f"cannot connect to {host}:{port}: {err}") from err
        gateway.settimeout(int(timeout_s * 1000))
        try:
            device = GCSDevice(gateway=gateway)
        except GCSError as err:
            gateway.close()
            raise DeviceError(name, f"pipython could not identify the controller: {err}") from err
        return cls(device, name=name)

    def _dev(self, command: str) -> GCSDevice:
        if self._device is None:
            raise DeviceError(self.name, "connection is closed", command=command)
        return self._device

    def _error(self, err: GCSError, command: str, reply: str | None = None) -> DeviceError:
        code = int(err.val)
        if code > 0:
            return GcsControllerError(self.name, code, command=command, reply=reply)
        if code == _PIPYTHON_TIMEOUT_CODE:
            return DeviceTimeoutError(self.name, f"pipython: {err}", command=command)
        return DeviceError(self.name, f"pipython: {err}", command=command, reply=reply)

    def command(self, text: str) -> None:
        device = self._dev(text)
        try:
            device.send(text)
        except GCSError as err:
            raise self._error(err, text) from err
        except OSError as err:
            raise DeviceError(self.name, f"socket error: {err}", command=text) from err

    def query(self, text: str) -> str:
        device = self._dev(text)
        try:
            return device.read(text)
        except GCSError as err:
            raise self._error(err, text) from err
        except OSError as err:
            raise DeviceError(self.name, f"socket error: {err}", command=text) from err

    def read_error(self) -> int:
        device = self._dev("ERR?")
        try:
            return int(device.qERR())
        except GCSError as err:
            raise self._error(err, "ERR?") from err

    def close(self) -> None:
        device, self._device = self._device, None
        if device is not None:
            device.__exit__(None, None, None)  # unregisters pipython's callback, closes gateway
