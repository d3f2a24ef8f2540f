"""Cephasonics Cicada backend: a thin adapter over the vendor's Python SDK.

The SDK is proprietary and not installed in CI. The adapter imports it by module name
(``ultrasound.sdk_module`` in the lab config, default ``"cephasonics"``) when :meth:`connect` is
called, and fails with a :class:`~drivers.base.DeviceError` saying what is missing and how to
provide it. The module must offer the small interface below (a site shim around the vendor SDK
if its own names differ; see ``docs/hardware.md``)::

    connect(timeout_s: float) -> handle
    handle.run_swei(push: dict, imaging: dict) -> {"iq": (frame, depth, lateral) complex64,
                                                   "rf": (frame, sample, element) int16 | None}
    handle.acquire_rf(sequence: dict) -> {"rf": (depth, line) float32}
    handle.close() -> None

The dicts are ``model_dump()`` of :class:`PushSequence`, :class:`PlaneWaveSequence` and
:class:`RfFrameSequence` (field names carry units). Limits and the duty cycle are checked here,
before any SDK call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from drivers.base import DeviceError
from drivers.ultrasound.base import (
    DEVICE_NAME,
    PushGuard,
    RfFrame,
    SweiAcquisition,
    rf_frame_metadata,
    swei_metadata,
)
from drivers.ultrasound.sequences import (
    PlaneWaveSequence,
    ProbeModel,
    PushSequence,
    RfFrameSequence,
    UltrasoundLimits,
)
from lab.clock import Clock

__all__ = ["REQUIRED_SDK_FUNCTIONS", "CicadaUltrasound"]

REQUIRED_SDK_FUNCTIONS = ("connect",)


class CicadaUltrasound:
    """Cicada through the Cephasonics SDK (see module notes for the expected SDK interface).

    Parameters
    ----------
    clock : Clock
        Wall clock on hardware; used for the push duty cycle.
    sdk_module : str
        Importable module name of the SDK (or site shim).
    probe : ProbeModel
        Probe connected to the system.
    limits : UltrasoundLimits
        Push and sequence limits, enforced before any SDK call.
    timeout_s : float
        Passed to the SDK's ``connect``.
    importer : callable, optional
        ``importlib.import_module`` by default (tests inject a fake SDK here).
    """

    name = DEVICE_NAME

    def __init__(
        self,
        clock: Clock,
        *,
        sdk_module: str = "cephasonics",
        probe: ProbeModel | None = None,
        limits: UltrasoundLimits | None = None,
        timeout_s: float = 10.0,
        importer: Callable[[str], ModuleType] = importlib.import_module,
    ) -> None:
        self.clock = clock
        self.sdk_module = sdk_module
        self.probe = probe if probe is not None else ProbeModel()
        self.limits = limits if limits is not None else UltrasoundLimits()
        self.timeout_s = timeout_s
        self._importer = importer
        self._guard = PushGuard(clock, self.limits)
        self._handle: Any = None

    def connect(self) -> None:
        """Import the SDK and open the system.

        Raises
        ------
        DeviceError
            The SDK module is not installed, lacks the expected functions, or refused to connect.
        """
        sdk = self._load_sdk()
        try:
            self._handle = sdk.connect(timeout_s=self.timeout_s)
        except Exception as err:  # vendor errors of any type become a DeviceError
            raise DeviceError(self.name, "the Cephasonics SDK could not connect to the Cicada",
                              command=f"{self.sdk_module}.connect", reply=repr(err)) from err

    def close(self) -> None:
        if self._handle is not None:
            handle, self._handle = self._handle, None
            handle.close()

    def check(self, push: PushSequence, imaging: PlaneWaveSequence) -> None:
        """Raise LimitError if the sequence is impossible or the duty cycle forbids a push now."""
        self._guard.check(push, imaging, self.probe)

    def push_ready_in_s(self) -> float:
        """Seconds until the duty cycle allows the next push."""
        return self._guard.ready_in_s()

    def acquire_swei(self, push: PushSequence, imaging: PlaneWaveSequence) -> SweiAcquisition:
        """Push + plane-wave sequence on the Cicada; limits checked before the SDK is called."""
        self.check(push, imaging)
        handle = self._require_handle("run_swei")
        t_push = self._guard.record_push()
        try:
            reply = handle.run_swei(push.model_dump(), imaging.model_dump())
        except Exception as err:  # vendor errors of any type become a DeviceError
            raise DeviceError(self.name, "SWEI sequence failed", command="run_swei",
                              reply=repr(err)) from err
        iq = np.asarray(reply.get("iq"))
        expected = (imaging.n_frames + 1, imaging.n_depth, imaging.n_lateral)
        if iq.shape != expected or not np.iscomplexobj(iq):
            raise DeviceError(self.name, f"SDK returned IQ of shape {iq.shape} dtype {iq.dtype}, "
                              f"expected complex {expected}", command="run_swei")
        rf = reply.get("rf")
        metadata = swei_metadata(push, imaging, probe=self.probe, t_push_s=t_push,
                                 fidelity="cicada")
        if rf is not None:
            rf = np.asarray(rf, dtype=np.int16)
            metadata["channel_sampling_frequency"] = float(imaging.channel_sampling_frequency_hz)
        return SweiAcquisition(iq=iq.astype(np.complex64), metadata=metadata, rf=rf)

    def acquire_rf_frame(self, seq: RfFrameSequence) -> RfFrame:
        """One quasi-static RF frame from the Cicada."""
        handle = self._require_handle("acquire_rf")
        t_s = self.clock.now()
        try:
            reply = handle.acquire_rf(seq.model_dump())
        except Exception as err:  # vendor errors of any type become a DeviceError
            raise DeviceError(self.name, "RF frame acquisition failed", command="acquire_rf",
                              reply=repr(err)) from err
        rf = np.asarray(reply.get("rf"), dtype=np.float32)
        if rf.shape != (seq.n_samples, seq.n_lines):
            raise DeviceError(self.name, f"SDK returned RF of shape {rf.shape}, expected "
                              f"{(seq.n_samples, seq.n_lines)}", command="acquire_rf")
        metadata = rf_frame_metadata(
            sampling_frequency=seq.sampling_frequency_hz, center_frequency=seq.center_frequency_hz,
            sound_speed=seq.sound_speed_m_s, depth_m=seq.depth_m, lateral_m=seq.lateral_m, t_s=t_s)
        return RfFrame(rf=rf, metadata=metadata)

    # -- internals ----------------------------------------------------------------------------
    def _load_sdk(self) -> ModuleType:
        try:
            sdk = self._importer(self.sdk_module)
        except ImportError as err:
            raise DeviceError(
                self.name,
                f"the Cephasonics SDK module {self.sdk_module!r} is not installed ({err}). "
                "Install the vendor's Python SDK (or a site shim exposing connect(), run_swei(), "
                "acquire_rf(), close(); see docs/hardware.md, 'Ultrasound (Cicada)') into this "
                "environment, and set `ultrasound.sdk_module` in the lab config to its module "
                "name; use backend 'sim' to run without the scanner",
                command=f"import {self.sdk_module}",
            ) from err
        missing = [f for f in REQUIRED_SDK_FUNCTIONS if not callable(getattr(sdk, f, None))]
        if missing:
            raise DeviceError(
                self.name,
                f"module {self.sdk_module!r} does not provide {', '.join(missing)}(); point "
                "`ultrasound.sdk_module` at the shim described in docs/hardware.md",
                command=f"import {self.sdk_module}",
            )
        return sdk

    def _require_handle(self, command: str) -> Any:
        if self._handle is None:
            raise DeviceError(self.name, "not connected; call connect() first", command=command)
        return self._handle
