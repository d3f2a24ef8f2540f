"""The ``ForceSensor`` role and the sample buffer shared by its backends."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from drivers.base import Wrench

WrenchCallback = Callable[[Wrench], None]


@runtime_checkable
class ForceSensor(Protocol):
    """Six-axis force/torque sensor. Backends: NetFtSensor (RDT/UDP), SerialFtSensor (RS-232).

    ``read`` returns one sample timestamped on the sensor's clock; ``bias`` zeroes the sensor and
    is only ever called explicitly (never on connect); streaming fills a buffer (and calls an
    optional callback from the receiving thread).
    """

    name: str

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def read(self) -> Wrench: ...
    def bias(self) -> None: ...
    def start_streaming(
        self, rate_hz: float = 200.0, callback: WrenchCallback | None = None
    ) -> None: ...
    def stop_streaming(self) -> None: ...
    def buffer(self) -> list[Wrench]: ...
    def drain(self) -> list[Wrench]: ...


class SampleBuffer:
    """Thread-safe list of streamed samples with a condition to wait for fresh ones."""

    def __init__(self) -> None:
        self._samples: list[Wrench] = []
        self._cond = threading.Condition()

    def append(self, sample: Wrench) -> None:
        with self._cond:
            self._samples.append(sample)
            self._cond.notify_all()

    def snapshot(self) -> list[Wrench]:
        with self._cond:
            return list(self._samples)

    def drain(self) -> list[Wrench]:
        with self._cond:
            out, self._samples = self._samples, []
            return out

    def clear(self) -> None:
        with self._cond:
            self._samples = []

    def latest(self) -> Wrench | None:
        with self._cond:
            return self._samples[-1] if self._samples else None

    def wait_for(self, predicate: Callable[[Wrench | None], bool], timeout_s: float) -> bool:
        """Wait (real time, at most ``timeout_s``) until ``predicate(latest)`` holds."""
        with self._cond:
            return self._cond.wait_for(
                lambda: predicate(self._samples[-1] if self._samples else None), timeout_s
            )
