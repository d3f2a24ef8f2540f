"""The ultrasound role: push + plane-wave acquisition and quasi-static RF frames.

Backends: :class:`drivers.ultrasound.cicada.CicadaUltrasound` (Cephasonics SDK) and
:class:`drivers.ultrasound.sim_system.SimUltrasound` (physics simulator). Protocols see only
:class:`UltrasoundSystem`.

Limits are checked by :func:`check_sequences` and the duty cycle by :class:`PushGuard` (time since
the last push on the injected :class:`~lab.clock.Clock`), both before anything reaches a scanner.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from drivers.base import LimitError
from drivers.ultrasound.sequences import (
    PlaneWaveSequence,
    ProbeModel,
    PushSequence,
    RfFrameSequence,
    UltrasoundLimits,
)
from lab.clock import Clock

__all__ = [
    "DEVICE_NAME",
    "PushGuard",
    "RfFrame",
    "SweiAcquisition",
    "SweiTruth",
    "UltrasoundSystem",
    "check_sequences",
    "rf_frame_metadata",
    "swei_metadata",
]

DEVICE_NAME = "ultrasound"


@dataclass(frozen=True)
class SweiTruth:
    """Ground truth of a simulated push sequence (simulator only).

    Attributes
    ----------
    displacement_m : ndarray, shape (frame, depth, lateral), float32
        True axial displacement (m, positive away from the probe) at frames 1..F (no reference
        frame), on the IQ pixel grid.
    youngs_modulus_kpa : ndarray, shape (depth, lateral), float32
        Young's modulus map of the imaged plane (kPa).
    """

    displacement_m: NDArray[np.float32]
    youngs_modulus_kpa: NDArray[np.float32]


@dataclass(frozen=True)
class SweiAcquisition:
    """One push + plane-wave sequence.

    Attributes
    ----------
    iq : ndarray, shape (frame, depth, lateral), complex64
        Beamformed baseband IQ on the pixel grid. Frame 0 is the pre-push reference; frame
        ``k >= 1`` was acquired ``initial_time + (k - 1) / PRF`` after the end of the push.
    metadata : dict
        JSON-ready acquisition metadata, UFF names, SI units: ``sampling_frequency`` (axial IQ
        rate c / (2 dz), Hz), ``modulation_frequency`` (Hz), ``sound_speed`` (m/s),
        ``initial_time`` (s), ``PRF`` (Hz), ``depth_m`` and ``lateral_m`` (lists of pixel
        centres, m), ``t_push_s`` (clock time of the push start, s), ``push_duration_s``,
        ``push_element`` (0-based), ``push_lateral_m``, ``angle_rad``, ``center_frequency``,
        ``fidelity``; with channel data also ``channel_sampling_frequency`` (Hz) and
        ``channel_t0`` (s).
    rf : ndarray, shape (frame, sample, element), int16, optional
        Channel RF of every frame (same frame order as ``iq``) when recorded.
    truth : SweiTruth, optional
        Filled by the simulator only.
    """

    iq: NDArray[np.complex64]
    metadata: dict[str, Any]
    rf: NDArray[np.int16] | None = None
    truth: SweiTruth | None = None


@dataclass(frozen=True)
class RfFrame:
    """One quasi-static RF frame for strain imaging.

    Attributes
    ----------
    rf : ndarray, shape (depth, line), float32
        RF lines; sample ``i`` at depth ``i * sound_speed / (2 sampling_frequency)``.
    metadata : dict
        ``sampling_frequency`` (Hz), ``center_frequency`` (Hz), ``sound_speed`` (m/s),
        ``depth_m``, ``lateral_m`` (lists, m), ``t_s`` (clock time), ``applied_strain``
        (simulator: indentation / block height).
    truth : dict of ndarray, optional
        Simulator only: ``axial_displacement_m``, ``lateral_displacement_m``, ``axial_strain``
        (depth, line) float32 relative to zero strain.
    """

    rf: NDArray[np.float32]
    metadata: dict[str, Any]
    truth: dict[str, NDArray[np.float32]] | None = None


@runtime_checkable
class UltrasoundSystem(Protocol):
    """Push + plane-wave ultrasound system. Backends: CicadaUltrasound, SimUltrasound."""

    name: str
    probe: ProbeModel
    limits: UltrasoundLimits

    def connect(self) -> None: ...
    def close(self) -> None: ...
    def check(self, push: PushSequence, imaging: PlaneWaveSequence) -> None: ...
    def push_ready_in_s(self) -> float: ...
    def acquire_swei(self, push: PushSequence, imaging: PlaneWaveSequence) -> SweiAcquisition: ...
    def acquire_rf_frame(self, seq: RfFrameSequence) -> RfFrame: ...


def check_sequences(
    push: PushSequence, imaging: PlaneWaveSequence, *, probe: ProbeModel, limits: UltrasoundLimits
) -> None:
    """Refuse sequences the probe cannot do or the limits forbid.

    Raises
    ------
    drivers.base.LimitError
        Push voltage, cycles or duration above the limits; push aperture off the array; more
        frames than allowed; a pixel grid outside the probe's field of view (laterally beyond the
        array, or deeper than one frame period allows); a frame rate above what the depth allows.
    """
    cmd = "check"
    if push.voltage_v > limits.max_push_voltage_v:
        raise LimitError(DEVICE_NAME, f"push voltage {push.voltage_v} V exceeds the limit "
                         f"{limits.max_push_voltage_v} V", command=cmd)
    if push.cycles > limits.max_push_cycles or push.duration_s > limits.max_push_duration_s:
        raise LimitError(
            DEVICE_NAME,
            f"push of {push.cycles} cycles ({push.duration_s * 1e3:.3f} ms) is longer than allowed "
            f"({limits.max_push_cycles} cycles, {limits.max_push_duration_s * 1e3:.3f} ms)",
            command=cmd,
        )
    first, last = push.element_range()
    if first < 0 or last > probe.n_elements - 1:
        raise LimitError(
            DEVICE_NAME,
            f"push aperture elements {first}..{last} run off the {probe.n_elements}-element array; "
            f"use a centre element between {push.aperture_elements // 2} and "
            f"{probe.n_elements - 1 - push.aperture_elements // 2}",
            command=cmd,
        )
    if imaging.n_frames > limits.max_frames:
        raise LimitError(DEVICE_NAME, f"{imaging.n_frames} frames exceed the limit "
                         f"{limits.max_frames}", command=cmd)
    half_fov_mm = imaging.fov_lateral_mm / 2
    half_array_mm = probe.aperture_mm / 2 + probe.pitch_mm / 2
    if half_fov_mm > half_array_mm + 1e-9:
        raise LimitError(
            DEVICE_NAME,
            f"lateral field of view {imaging.fov_lateral_mm} mm is outside the probe's "
            f"{2 * half_array_mm:.2f} mm array (plane-wave frames cannot image beyond it)",
            command=cmd,
        )
    depth_max_m = (imaging.depth_start_mm + imaging.fov_depth_mm) * 1e-3
    round_trip_s = 2 * depth_max_m / imaging.sound_speed_m_s
    if round_trip_s >= 1.0 / imaging.prf_hz:
        raise LimitError(
            DEVICE_NAME,
            f"frames down to {depth_max_m * 1e3:.1f} mm need {round_trip_s * 1e6:.1f} us per "
            f"frame, longer than the frame period at {imaging.prf_hz} Hz; reduce depth or PRF",
            command=cmd,
        )


def swei_metadata(
    push: PushSequence, imaging: PlaneWaveSequence, *, probe: ProbeModel, t_push_s: float,
    fidelity: str,
) -> dict[str, Any]:
    """JSON-ready metadata of an SWEI acquisition (UFF names, SI units); see SweiAcquisition."""
    return {
        "sampling_frequency": float(imaging.iq_sampling_frequency_hz),
        "modulation_frequency": float(probe.center_frequency_hz),
        "center_frequency": float(probe.center_frequency_hz),
        "sound_speed": float(imaging.sound_speed_m_s),
        "initial_time": float(imaging.initial_time_s),
        "PRF": float(imaging.prf_hz),
        "angle_rad": float(np.deg2rad(imaging.angle_deg)),
        "depth_m": [float(v) for v in imaging.depth_m],
        "lateral_m": [float(v) for v in imaging.lateral_m],
        "t_push_s": float(t_push_s),
        "push_duration_s": float(push.duration_s),
        "push_element": int(push.center_element),
        "push_lateral_m": float(probe.element_lateral_mm(push.center_element) * 1e-3),
        "fidelity": fidelity,
    }


@dataclass
class PushGuard:
    """Duty cycle of the push transducer: time since the last push start, on ``clock``."""

    clock: Clock
    limits: UltrasoundLimits
    last_push_s: float | None = field(default=None)

    def ready_in_s(self) -> float:
        """Seconds until the next push is allowed (0 when allowed now)."""
        if self.last_push_s is None:
            return 0.0
        return max(0.0, self.last_push_s + self.limits.min_push_interval_s - self.clock.now())

    def check(self, push: PushSequence, imaging: PlaneWaveSequence, probe: ProbeModel) -> None:
        """Sequence limits, then the duty cycle; raises LimitError."""
        check_sequences(push, imaging, probe=probe, limits=self.limits)
        wait = self.ready_in_s()
        if wait > 0:
            raise LimitError(
                DEVICE_NAME,
                f"push refused: only {self.limits.min_push_interval_s - wait:.3f} s since the last "
                f"push, the duty cycle needs {self.limits.min_push_interval_s} s "
                f"(wait {wait:.3f} s more)",
                command="push",
            )

    def record_push(self) -> float:
        """Mark a push as starting now; returns the clock time."""
        self.last_push_s = self.clock.now()
        return self.last_push_s


def rf_frame_metadata(
    *, sampling_frequency: float, center_frequency: float, sound_speed: float,
    depth_m: Iterable[float], lateral_m: Iterable[float], t_s: float,
) -> dict[str, Any]:
    """JSON-ready metadata of a quasi-static RF frame (see RfFrame), less ``applied_strain``.

    Parameters
    ----------
    sampling_frequency, center_frequency : float
        RF sampling rate and transmit centre frequency in Hz.
    sound_speed : float
        Speed of sound in m/s.
    depth_m, lateral_m : iterable of float
        Sample depths and line positions in m.
    t_s : float
        Clock time of the acquisition in s.
    """
    return {
        "sampling_frequency": float(sampling_frequency),
        "center_frequency": float(center_frequency),
        "sound_speed": float(sound_speed),
        "depth_m": [float(v) for v in depth_m],
        "lateral_m": [float(v) for v in lateral_m],
        "t_s": float(t_s),
    }
