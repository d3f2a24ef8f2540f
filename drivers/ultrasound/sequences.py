"""Ultrasound sequences as validated configuration: probe, ARF push, plane-wave imaging, RF frames.

Defaults are the acquisition of [SWEI] (PHYSICS.md, "SWEI acquisition"): a 128-element linear probe
(0.29 mm pitch, 7.5 MHz), an unfocused push from 11 contiguous elements (120 V, 2000 cycles,
10 mm depth), then 35 plane-wave frames at 0 deg and 7000 Hz starting 0.13 ms after the push, on
a 20 mm (depth) x 33 mm (lateral) field of view beamformed to 250 x 600 pixels. Quasi-static RF
frames default to the [GLUENet] phantom acquisition: 6.67 MHz centre, 40 MHz sampling.

All models are frozen and forbid unknown fields, so a typo fails at load time. Checks that need
more than one model (push aperture inside the probe, pixel grid inside the probe's field of view,
push duration against the limits) live in :func:`drivers.ultrasound.base.check_sequences`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

#: Speed of sound assumed for beamforming (m/s), PHYSICS.md.
SOUND_SPEED_M_S = 1540.0


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProbeModel(_Model):
    """Linear-array probe. Element ``e`` (0-based) sits at lateral ``(e - (n - 1) / 2) * pitch``."""

    n_elements: PositiveInt = Field(128, description="number of array elements")
    pitch_mm: PositiveFloat = Field(0.29, description="element centre spacing (mm)")
    center_frequency_hz: PositiveFloat = Field(7.5e6, description="transducer centre frequency")
    fractional_bandwidth: float = Field(
        0.6, gt=0.0, lt=2.0, description="pulse-echo -6 dB bandwidth / centre frequency"
    )
    kerf_mm: NonNegativeFloat = Field(0.03, description="gap between elements (mm)")

    @model_validator(mode="after")
    def _kerf_below_pitch(self) -> ProbeModel:
        if self.kerf_mm >= self.pitch_mm:
            raise ValueError(
                f"kerf {self.kerf_mm} mm must be smaller than pitch {self.pitch_mm} mm"
            )
        return self

    @property
    def element_positions_m(self) -> NDArray[np.float64]:
        """Lateral element centres in m, shape (n_elements,), 0 at the array centre."""
        e = np.arange(self.n_elements, dtype=np.float64)
        return (e - (self.n_elements - 1) / 2.0) * self.pitch_mm * 1e-3

    @property
    def aperture_mm(self) -> float:
        """Width of the array between the outer element centres (mm)."""
        return (self.n_elements - 1) * self.pitch_mm

    def element_lateral_mm(self, element: int) -> float:
        """Lateral position (mm) of element ``element`` (0-based) relative to the array centre."""
        return (element - (self.n_elements - 1) / 2.0) * self.pitch_mm


class PushSequence(_Model):
    """Acoustic radiation force push from a contiguous sub-aperture centred on one element."""

    center_element: int = Field(64, ge=0, description="0-based element at the push centre")
    aperture_elements: PositiveInt = Field(11, description="contiguous elements that transmit")
    voltage_v: PositiveFloat = Field(120.0, description="transmit voltage (V)")
    cycles: PositiveInt = Field(2000, description="number of cycles of the push burst")
    frequency_hz: PositiveFloat = Field(7.5e6, description="push burst frequency")
    focal_depth_mm: PositiveFloat = Field(10.0, description="push depth (mm)")
    focusing: Literal["unfocused", "focused"] = Field(
        "unfocused", description="'unfocused' as in [SWEI]: all elements fire together"
    )

    @model_validator(mode="after")
    def _odd_aperture(self) -> PushSequence:
        if self.aperture_elements % 2 != 1:
            raise ValueError(
                f"push aperture must be an odd number of elements centred on center_element, "
                f"got {self.aperture_elements}"
            )
        return self

    @property
    def duration_s(self) -> float:
        """Push duration in s: cycles / frequency (2000 cycles at 7.5 MHz = 0.267 ms)."""
        return self.cycles / self.frequency_hz

    def element_range(self) -> tuple[int, int]:
        """First and last (inclusive, 0-based) transmitting elements."""
        half = self.aperture_elements // 2
        return self.center_element - half, self.center_element + half


class PlaneWaveSequence(_Model):
    """Plane-wave tracking frames after a push, and the pixel grid they are beamformed to.

    Frame ``k`` (1-based, after the pre-push reference frame 0) is acquired at
    ``initial_time_s + (k - 1) / prf_hz`` after the end of the push.
    """

    angle_deg: float = Field(0.0, ge=-30.0, le=30.0, description="plane-wave steering angle")
    prf_hz: PositiveFloat = Field(7000.0, description="frame rate after the push (Hz)")
    n_frames: PositiveInt = Field(35, description="frames after the push (reference excluded)")
    initial_time_s: NonNegativeFloat = Field(
        0.13e-3, description="delay between push end and the first frame (s)"
    )
    depth_start_mm: NonNegativeFloat = Field(0.0, description="top of the field of view (mm)")
    fov_depth_mm: PositiveFloat = Field(20.0, description="field of view in depth (mm)")
    fov_lateral_mm: PositiveFloat = Field(33.0, description="field of view laterally (mm)")
    n_depth: PositiveInt = Field(250, description="pixels in depth")
    n_lateral: PositiveInt = Field(600, description="pixels laterally")
    sound_speed_m_s: PositiveFloat = Field(SOUND_SPEED_M_S, description="beamforming speed")
    channel_sampling_frequency_hz: PositiveFloat = Field(
        40e6, description="channel RF sampling rate (Hz), channel acquisitions only"
    )
    f_number: NonNegativeFloat = Field(1.5, description="receive f-number (0 = full aperture)")

    @property
    def depth_m(self) -> NDArray[np.float64]:
        """Pixel centres in depth (m), shape (n_depth,)."""
        dz = self.fov_depth_mm / self.n_depth
        return (self.depth_start_mm + (np.arange(self.n_depth) + 0.5) * dz) * 1e-3

    @property
    def lateral_m(self) -> NDArray[np.float64]:
        """Pixel centres laterally (m), shape (n_lateral,), 0 = probe centre."""
        dx = self.fov_lateral_mm / self.n_lateral
        return (-self.fov_lateral_mm / 2 + (np.arange(self.n_lateral) + 0.5) * dx) * 1e-3

    @property
    def pixel_depth_m(self) -> float:
        """Axial pixel size (m)."""
        return self.fov_depth_mm / self.n_depth * 1e-3

    @property
    def iq_sampling_frequency_hz(self) -> float:
        """Axial IQ sample rate of the pixel grid, c / (2 dz) in Hz (UFF ``sampling_frequency``)."""
        return self.sound_speed_m_s / (2.0 * self.pixel_depth_m)

    @property
    def frame_times_s(self) -> NDArray[np.float64]:
        """Times of frames 1..n_frames after the end of the push (s), shape (n_frames,)."""
        return self.initial_time_s + np.arange(self.n_frames) / self.prf_hz


class RfFrameSequence(_Model):
    """Quasi-static RF frames (focused or plane-wave B-mode lines) for strain elastography.

    The compression simulator reads these numbers: ``center_frequency_hz``,
    ``sampling_frequency_hz``, the depth range and the number of lines over the lateral field of
    view.
    """

    center_frequency_hz: PositiveFloat = Field(6.67e6, description="RF centre frequency")
    sampling_frequency_hz: PositiveFloat = Field(40e6, description="RF sampling rate")
    fractional_bandwidth: float = Field(0.6, gt=0.0, lt=2.0, description="-6 dB bandwidth / fc")
    fov_depth_mm: PositiveFloat = Field(40.0, description="RF depth range from the probe face (mm)")
    fov_lateral_mm: PositiveFloat = Field(33.0, description="lateral extent of the lines (mm)")
    n_lines: PositiveInt = Field(128, description="RF lines (A-lines)")
    sound_speed_m_s: PositiveFloat = Field(SOUND_SPEED_M_S, description="speed of sound (m/s)")

    @model_validator(mode="after")
    def _nyquist(self) -> RfFrameSequence:
        top = self.center_frequency_hz * (1 + self.fractional_bandwidth / 2)
        if self.sampling_frequency_hz < 2 * top:
            raise ValueError(
                f"sampling {self.sampling_frequency_hz / 1e6:.2f} MHz is below twice the top of "
                f"the RF band ({top / 1e6:.2f} MHz); raise sampling_frequency_hz"
            )
        return self

    @property
    def n_samples(self) -> int:
        """RF samples per line: the depth range at fs, two-way."""
        return round(2 * self.fov_depth_mm * 1e-3 / self.sound_speed_m_s
                     * self.sampling_frequency_hz)

    @property
    def depth_m(self) -> NDArray[np.float64]:
        """Depth of each RF sample (m), shape (n_samples,)."""
        dz = self.sound_speed_m_s / (2 * self.sampling_frequency_hz)
        return np.arange(self.n_samples) * dz

    @property
    def lateral_m(self) -> NDArray[np.float64]:
        """Lateral line positions (m), shape (n_lines,), 0 = probe centre."""
        dx = self.fov_lateral_mm / self.n_lines
        return (-self.fov_lateral_mm / 2 + (np.arange(self.n_lines) + 0.5) * dx) * 1e-3


class UltrasoundLimits(_Model):
    """What the system refuses to send. Checked before anything reaches the scanner."""

    max_push_voltage_v: PositiveFloat = Field(120.0, description="highest push voltage (V)")
    max_push_cycles: PositiveInt = Field(3000, description="most cycles in one push")
    max_push_duration_s: PositiveFloat = Field(0.4e-3, description="longest push (s)")
    min_push_interval_s: PositiveFloat = Field(
        0.5, description="minimum time between the starts of two pushes (transducer duty cycle)"
    )
    max_frames: PositiveInt = Field(200, description="most tracking frames after one push")
