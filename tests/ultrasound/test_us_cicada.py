"""Cicada adapter: clear failure without the SDK, limits checked before any SDK call."""

from __future__ import annotations

import types

import numpy as np
import pytest
from pydantic import ValidationError

from drivers.base import DeviceError, LimitError
from drivers.ultrasound.cicada import CicadaUltrasound
from drivers.ultrasound.sequences import (
    PlaneWaveSequence,
    PushSequence,
    RfFrameSequence,
)
from lab.clock import SimClock

IMAGING = PlaneWaveSequence(n_depth=20, n_lateral=30, n_frames=3)


class FakeHandle:
    def __init__(self, calls: list[str], iq_shape: tuple[int, ...]) -> None:
        self.calls = calls
        self.iq_shape = iq_shape

    def run_swei(self, push: dict, imaging: dict) -> dict:
        self.calls.append(f"run_swei {push['voltage_v']} V {imaging['n_frames']} frames")
        return {"iq": np.ones(self.iq_shape, dtype=np.complex64), "rf": None}

    def acquire_rf(self, sequence: dict) -> dict:
        self.calls.append("acquire_rf")
        return {"rf": np.zeros((RfFrameSequence(**sequence).n_samples, sequence["n_lines"]))}

    def close(self) -> None:
        self.calls.append("close")


def _fake_sdk(calls: list[str], iq_shape=(4, 20, 30)):
    sdk = types.ModuleType("fake_cephasonics")

    def connect(timeout_s: float) -> FakeHandle:
        calls.append(f"connect {timeout_s}")
        return FakeHandle(calls, iq_shape)

    sdk.connect = connect
    return lambda name: sdk


def test_missing_sdk_says_what_and_how() -> None:
    cicada = CicadaUltrasound(SimClock(), sdk_module="cephasonics_not_here")
    with pytest.raises(DeviceError) as err:
        cicada.connect()
    text = str(err.value)
    assert "cephasonics_not_here" in text and "not installed" in text
    assert "ultrasound.sdk_module" in text and "docs/hardware.md" in text


def test_module_without_the_interface_is_refused() -> None:
    empty = types.ModuleType("empty")
    cicada = CicadaUltrasound(SimClock(), sdk_module="empty", importer=lambda name: empty)
    with pytest.raises(DeviceError, match=r"does not provide connect"):
        cicada.connect()


def test_limits_checked_before_any_sdk_call() -> None:
    calls: list[str] = []
    clock = SimClock()
    cicada = CicadaUltrasound(clock, importer=_fake_sdk(calls))
    with pytest.raises(DeviceError, match="not connected"):
        cicada.acquire_swei(PushSequence(), IMAGING)
    cicada.connect()
    assert calls == ["connect 10.0"]
    with pytest.raises(LimitError, match="longer than allowed"):
        cicada.acquire_swei(PushSequence(cycles=4000), IMAGING)
    with pytest.raises(LimitError, match="voltage"):
        cicada.acquire_swei(PushSequence(voltage_v=200.0), IMAGING)
    assert calls == ["connect 10.0"]  # nothing reached the SDK
    acq = cicada.acquire_swei(PushSequence(), IMAGING)
    assert calls[-1] == "run_swei 120.0 V 3 frames"
    assert acq.iq.shape == (4, 20, 30) and acq.metadata["PRF"] == 7000.0
    with pytest.raises(LimitError, match="duty cycle"):
        cicada.acquire_swei(PushSequence(), IMAGING)
    assert calls[-1] == "run_swei 120.0 V 3 frames"
    clock.advance(0.5)
    cicada.acquire_swei(PushSequence(), IMAGING)
    assert len([c for c in calls if c.startswith("run_swei")]) == 2
    frame = cicada.acquire_rf_frame(RfFrameSequence(fov_depth_mm=10, n_lines=8))
    assert frame.rf.shape == (RfFrameSequence(fov_depth_mm=10).n_samples, 8)
    cicada.close()
    assert calls[-1] == "close"


def test_wrong_reply_shape_is_a_device_error() -> None:
    calls: list[str] = []
    cicada = CicadaUltrasound(SimClock(), importer=_fake_sdk(calls, iq_shape=(2, 2, 2)))
    cicada.connect()
    with pytest.raises(DeviceError, match="expected complex"):
        cicada.acquire_swei(PushSequence(), IMAGING)


def test_sequences_validate_their_fields() -> None:
    with pytest.raises(ValidationError):
        PushSequence(voltag_v=100.0)  # typo
    with pytest.raises(ValidationError):
        PushSequence(aperture_elements=10)  # even aperture has no centre element
    with pytest.raises(ValidationError):
        PushSequence(voltage_v=float("nan"))
    with pytest.raises(ValidationError):
        PlaneWaveSequence(prf_hz=-7000.0)
    with pytest.raises(ValidationError, match="sampling"):
        RfFrameSequence(sampling_frequency_hz=12e6)
    pw = PlaneWaveSequence()
    assert pw.depth_m.shape == (250,) and pw.lateral_m.shape == (600,)
    assert pw.iq_sampling_frequency_hz == pytest.approx(1540 / (2 * 0.08e-3))
    assert pw.frame_times_s[0] == pytest.approx(0.13e-3)
    assert pw.frame_times_s[-1] == pytest.approx(0.13e-3 + 34 / 7000)
    assert PushSequence().duration_s == pytest.approx(2000 / 7.5e6)
