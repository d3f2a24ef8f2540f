"""Simulated RS-232 F/T controller on a pseudo-terminal (POSIX only).

Answers the ASCII subset of :mod:`drivers.force.serial_ft` (``QR``, ``SB``) from a sensor of the
simulated world; other commands get ``ERR`` and the prompt. A client opens :attr:`port` (the pty
slave path) with pyserial. Faults: ``sensor_dropout`` or ``disconnected`` -> no answer at all,
``malformed_replies`` -> a garbled record line.
"""

from __future__ import annotations

import os
import select
import threading

import numpy as np

from drivers.force.serial_ft import SerialFtProtocol
from drivers.sim.world import SensorName, SimWorld


class SerialFtSimResponder:
    """A pty that behaves like an F/T controller in ASCII mode, served by a daemon thread."""

    def __init__(
        self,
        world: SimWorld,
        sensor: SensorName,
        *,
        counts_per_force: float = 1e6,
        counts_per_torque: float = 1e6,
        protocol: SerialFtProtocol | None = None,
    ) -> None:
        self.world = world
        self.sensor = sensor
        self.counts_per_force = float(counts_per_force)
        self.counts_per_torque = float(counts_per_torque)
        self.protocol = protocol or SerialFtProtocol()
        self._bias_force = np.zeros(3)
        self._bias_torque = np.zeros(3)
        self._master: int | None = None
        self._slave: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.port = ""

    def start(self) -> SerialFtSimResponder:
        self._master, self._slave = os.openpty()
        self.port = os.ttyname(self._slave)
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._serve, name=f"serial-ft-sim-{self.sensor}", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None

    def __enter__(self) -> SerialFtSimResponder:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reply_to(self, command: str) -> bytes | None:
        """Bytes answered to one command line (without terminator); None: stay silent."""
        faults = self.world.faults
        if self.sensor in faults.disconnected or self.sensor in faults.sensor_dropout:
            return None
        prompt = self.protocol.prompt
        command = command.strip().upper()
        if command == self.protocol.query_record:
            force, torque, saturated = self.world.sensor_wrench(self.sensor)
            counts = np.round(
                np.concatenate([
                    (force - self._bias_force) * self.counts_per_force,
                    (torque - self._bias_torque) * self.counts_per_torque,
                ])
            ).astype(np.int64)
            line = ",".join([str(int(saturated))] + [f"{c:>8d}" for c in counts])
            if self.sensor in faults.malformed_replies:
                line = line[: len(line) // 2] + "#?"
            return line.encode("ascii") + b"\r\n" + prompt
        if command == self.protocol.bias:
            force, torque, _ = self.world.sensor_wrench(self.sensor)
            self._bias_force, self._bias_torque = force, torque
            return prompt
        return b"ERR\r\n" + prompt

    def _serve(self) -> None:
        pending = b""
        master = self._master
        assert master is not None
        while not self._stop.is_set():
            ready, _, _ = select.select([master], [], [], 0.05)
            if not ready:
                continue
            try:
                pending += os.read(master, 1024)
            except OSError:
                return
            while self.protocol.terminator in pending:
                line, pending = pending.split(self.protocol.terminator, 1)
                reply = self.reply_to(line.decode("ascii", errors="replace"))
                if reply is not None:
                    os.write(master, reply)
