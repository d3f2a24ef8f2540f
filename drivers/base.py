"""The contract every device driver follows: errors, readings and motion status.

Every driver in :mod:`drivers` raises :class:`DeviceError` (or a subclass) carrying the device name,
the command it sent and the reply it got, so a log line says exactly what happened on the wire.
Motions return a :class:`MotionStatus` that is waited on with a timeout measured on the device's
:class:`~lab.clock.Clock` (virtual time in simulation, so waits terminate instantly there).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from lab.clock import Clock

__all__ = [
    "DeviceError",
    "DeviceTimeoutError",
    "LimitError",
    "MotionStatus",
    "ProtectiveStopError",
    "Wrench",
    "check_finite",
]


class DeviceError(RuntimeError):
    """A device refused, failed or answered something unexpected.

    Parameters
    ----------
    device : str
        Name of the device (its ``name`` attribute), e.g. ``"hexapod"``.
    message : str
        What went wrong, in words.
    command : str or None
        The command sent when it happened (wire text or API call), if any.
    reply : str or None
        The reply received (wire text, return value or vendor error), if any.
    """

    def __init__(
        self, device: str, message: str, *, command: str | None = None, reply: str | None = None
    ) -> None:
        self.device = device
        self.command = command
        self.reply = reply
        self.message = message
        detail = message
        if command is not None:
            detail += f" (command {command!r}"
            detail += f", reply {reply!r})" if reply is not None else ")"
        elif reply is not None:
            detail += f" (reply {reply!r})"
        super().__init__(f"{device}: {detail}")

    def __reduce__(self) -> tuple[object, ...]:  # keep keyword arguments when pickled
        return (_rebuild_error, (type(self), self.device, self.message, self.command, self.reply))


def _rebuild_error(
    cls: type[DeviceError], device: str, message: str, command: str | None, reply: str | None
) -> DeviceError:
    return cls(device, message, command=command, reply=reply)


class LimitError(DeviceError):
    """A target lies outside the device's limits; raised before anything is sent."""


class ProtectiveStopError(DeviceError):
    """The device stopped itself for safety (robot protective stop, force limit, halt)."""


class DeviceTimeoutError(DeviceError):
    """The device did not answer or finish within the timeout."""


@dataclass(frozen=True)
class Wrench:
    """One force/torque sample.

    Attributes
    ----------
    force_n : ndarray, shape (3,), float64
        Force (Fx, Fy, Fz) in newtons, in the sensor frame. In the simulated lab, ``force_n[2] > 0``
        means compression (the phantom pushes back on the probe or plate).
    torque_nm : ndarray, shape (3,), float64
        Torque (Tx, Ty, Tz) in newton metres.
    t_s : float
        Timestamp in seconds on the reading driver's clock.
    saturated : bool
        True when any channel reached the sensor's range (the value is then unreliable).
    """

    force_n: NDArray[np.float64]
    torque_nm: NDArray[np.float64]
    t_s: float
    saturated: bool = False

    def __post_init__(self) -> None:
        force = np.asarray(self.force_n, dtype=np.float64).reshape(3)
        torque = np.asarray(self.torque_nm, dtype=np.float64).reshape(3)
        force.flags.writeable = False
        torque.flags.writeable = False
        object.__setattr__(self, "force_n", force)
        object.__setattr__(self, "torque_nm", torque)

    @property
    def fz_n(self) -> float:
        """Axial force Fz in newtons."""
        return float(self.force_n[2])


@dataclass
class MotionStatus:
    """Status of a motion that is (or was) under way.

    Parameters
    ----------
    device : str
        Name of the moving device (for error messages).
    clock : Clock
        The device's clock; :meth:`wait` sleeps on it between polls.
    poll : callable () -> (done, success)
        Asks the device whether the motion finished and whether it reached its target. It may raise
        a :class:`DeviceError` (for example a protective stop), which :meth:`wait` propagates.
    poll_interval_s : float
        Time between two polls in :meth:`wait`, in seconds.
    command : str or None
        The command that started the motion (for error messages).
    """

    device: str
    clock: Clock
    poll: Callable[[], tuple[bool, bool]]
    poll_interval_s: float = 0.01
    command: str | None = None
    _done: bool = field(default=False, init=False, repr=False)
    _success: bool = field(default=False, init=False, repr=False)

    @classmethod
    def finished(cls, device: str, clock: Clock, *, success: bool = True) -> MotionStatus:
        """A status that is already done (for motions that completed synchronously)."""
        status = cls(device, clock, lambda: (True, success))
        status._update()
        return status

    def _update(self) -> None:
        if not self._done:
            self._done, self._success = self.poll()

    @property
    def done(self) -> bool:
        """True once the motion has finished (successfully or not); polls the device."""
        self._update()
        return self._done

    @property
    def success(self) -> bool:
        """True if the motion finished at its target; False while running or after a failure."""
        self._update()
        return self._done and self._success

    def wait(self, timeout_s: float) -> None:
        """Block until the motion is done, polling every ``poll_interval_s`` on the clock.

        Raises
        ------
        DeviceTimeoutError
            If the motion is not done after ``timeout_s`` seconds of clock time.
        DeviceError
            If the motion finished without success, or the poll raised.
        """
        if not timeout_s >= 0:
            raise ValueError(f"timeout must be >= 0 s, got {timeout_s}")
        deadline = self.clock.now() + timeout_s
        while True:
            self._update()
            if self._done:
                if not self._success:
                    raise DeviceError(
                        self.device, "motion finished without reaching its target",
                        command=self.command,
                    )
                return
            if self.clock.now() >= deadline:
                raise DeviceTimeoutError(
                    self.device, f"motion not finished after {timeout_s} s", command=self.command
                )
            self.clock.sleep(min(self.poll_interval_s, max(deadline - self.clock.now(), 0.0)))


def check_finite(device: str, name: str, values: NDArray[np.floating] | float) -> None:
    """Raise :class:`LimitError` if ``values`` contains NaN or infinity."""
    if not np.all(np.isfinite(np.asarray(values, dtype=float))):
        raise LimitError(device, f"{name} must be finite, got {values!r}")
