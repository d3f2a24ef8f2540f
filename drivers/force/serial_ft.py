"""Serial (RS-232) backend for F/T controllers that speak an ASCII query protocol.

The subset we use, as on ATI's stand-alone F/T controllers in ASCII mode (check your controller's
manual; commands and prompt are configurable in ``SerialFtProtocol``): commands end in CR; ``QR``
answers one record ``status,Fx,Fy,Fz,Tx,Ty,Tz`` in counts on one line (CR LF) followed by the prompt
``>``; ``SB`` (software bias) answers the prompt only; an unknown command answers an error line
and the prompt.

Streaming over RS-232 is not implemented: ``start_streaming`` raises; use the Net F/T backend (or
poll ``read``) where a stream is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import serial

from drivers.base import DeviceError, DeviceTimeoutError, Wrench
from drivers.force.base import WrenchCallback
from drivers.force.spec import SensorSpec
from lab.clock import Clock


@dataclass(frozen=True)
class SerialFtProtocol:
    """Command spellings and framing of the ASCII F/T protocol."""

    query_record: str = "QR"
    bias: str = "SB"
    terminator: bytes = b"\r"
    prompt: bytes = b">"


def parse_record_line(line: str) -> tuple[int, tuple[int, int, int, int, int, int]]:
    """``(status, counts)`` of a ``status,Fx,Fy,Fz,Tx,Ty,Tz`` line; raises ValueError otherwise."""
    fields = [f.strip() for f in line.strip().split(",")]
    if len(fields) != 7:
        raise ValueError(f"expected 7 comma-separated integers, got {line!r}")
    values = [int(f) for f in fields]
    return values[0], tuple(values[1:])  # type: ignore[return-value]


class SerialFtSensor:
    """Force/torque sensor on an RS-232 F/T controller (pyserial).

    Parameters
    ----------
    port : str
        Serial port (``/dev/ttyUSB0``, ``COM3``, a pty path, or a pyserial URL).
    clock : Clock
        Timestamps of samples.
    name : str
        Device name used in errors.
    baudrate : int
        Line speed (the controller's setting).
    counts_per_force, counts_per_torque : float
        Counts per N and per N m of the controller's calibration.
    spec : SensorSpec or None
        Transducer ranges for the saturation flag.
    timeout_s : float
        Longest wait for a reply, in seconds (real time).
    """

    def __init__(
        self,
        port: str,
        *,
        clock: Clock,
        name: str = "force_sensor",
        baudrate: int = 115200,
        counts_per_force: float = 1e6,
        counts_per_torque: float = 1e6,
        spec: SensorSpec | None = None,
        timeout_s: float = 0.5,
        protocol: SerialFtProtocol | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.clock = clock
        self.baudrate = int(baudrate)
        self.counts_per_force = float(counts_per_force)
        self.counts_per_torque = float(counts_per_torque)
        self.spec = spec
        self.timeout_s = float(timeout_s)
        self.protocol = protocol or SerialFtProtocol()
        self._serial: serial.Serial | None = None

    def connect(self) -> None:
        """Open the port. Does not bias the sensor."""
        if self._serial is not None:
            return
        try:
            self._serial = serial.serial_for_url(
                self.port, baudrate=self.baudrate, timeout=self.timeout_s,
                write_timeout=self.timeout_s,
            )
        except (serial.SerialException, OSError, ValueError) as err:
            raise DeviceError(self.name, f"cannot open {self.port}: {err}") from err

    def close(self) -> None:
        if self._serial is not None:
            self._serial.close()
            self._serial = None

    def __enter__(self) -> SerialFtSensor:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _transact(self, command: str) -> list[str]:
        """Send ``command``; return the reply lines before the prompt."""
        port = self._serial
        if port is None:
            raise DeviceError(self.name, "not connected; call connect() first")
        try:
            port.reset_input_buffer()
            port.write(command.encode("ascii") + self.protocol.terminator)
            raw = port.read_until(self.protocol.prompt)
        except (serial.SerialException, OSError, ValueError) as err:  # lost port, closed port
            raise DeviceError(self.name, f"serial I/O failed: {err}", command=command) from err
        text = raw.decode("ascii", errors="replace")
        if not raw.endswith(self.protocol.prompt):
            raise DeviceTimeoutError(
                self.name, f"no prompt within {self.timeout_s} s", command=command, reply=text
            )
        body = text[: -len(self.protocol.prompt)]
        return [line for line in body.replace("\r", "\n").split("\n") if line.strip()]

    def read(self) -> Wrench:
        """One sample (N, N m) via the query-record command."""
        command = self.protocol.query_record
        t_s = self.clock.now()
        lines = self._transact(command)
        if len(lines) != 1:
            raise DeviceError(
                self.name, "expected one record line", command=command, reply="\n".join(lines)
            )
        try:
            status, counts = parse_record_line(lines[0])
        except ValueError as err:
            raise DeviceError(
                self.name, f"malformed record: {err}", command=command, reply=lines[0]
            ) from err
        force = [c / self.counts_per_force for c in counts[:3]]
        torque = [c / self.counts_per_torque for c in counts[3:]]
        wrench = Wrench(force, torque, t_s)  # type: ignore[arg-type]
        saturated = status != 0 or (
            self.spec is not None and self.spec.saturated(wrench.force_n, wrench.torque_nm)
        )
        return Wrench(wrench.force_n, wrench.torque_nm, t_s, bool(saturated))

    def bias(self) -> None:
        """Software bias on the controller (explicit only)."""
        lines = self._transact(self.protocol.bias)
        if lines:
            raise DeviceError(
                self.name, "bias refused", command=self.protocol.bias, reply="\n".join(lines)
            )

    def start_streaming(
        self, rate_hz: float = 200.0, callback: WrenchCallback | None = None
    ) -> None:
        raise DeviceError(
            self.name, "streaming over RS-232 is not implemented; poll read() or use Net F/T"
        )

    def stop_streaming(self) -> None:
        return None

    def buffer(self) -> list[Wrench]:
        return []

    def drain(self) -> list[Wrench]:
        return []
