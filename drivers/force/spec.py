"""Force/torque sensor specifications: ranges, resolution, noise.

Values are approximate datasheet figures for the calibrations we model; check the calibration sheet
of your transducer (and set the ranges in the config) before trusting the saturation flag on
hardware. Nano17 SI-12-0.12: 12 N (Fx, Fy), 17 N (Fz), 0.12 N m, resolution 1/320 N (the 3.1 mN of
[SWEI]). Nano43 SI-9-0.125: 9 N, 0.125 N m, resolution 1/512 N.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class SensorSpec:
    """Range and resolution of a six-axis force/torque transducer.

    Attributes
    ----------
    model : str
        Transducer and calibration, e.g. ``"Nano17 SI-12-0.12"``.
    force_range_n : tuple of 3 float
        Sensing range of Fx, Fy, Fz in newtons (symmetric, +/-).
    torque_range_nm : tuple of 3 float
        Sensing range of Tx, Ty, Tz in newton metres.
    force_resolution_n : float
        Force quantisation step in newtons.
    torque_resolution_nm : float
        Torque quantisation step in newton metres.
    force_noise_n : float
        Standard deviation of the force noise in newtons (simulation only).
    torque_noise_nm : float
        Standard deviation of the torque noise in newton metres (simulation only).
    """

    model: str
    force_range_n: tuple[float, float, float]
    torque_range_nm: tuple[float, float, float]
    force_resolution_n: float
    torque_resolution_nm: float
    force_noise_n: float
    torque_noise_nm: float

    def saturated(self, force_n: NDArray[np.floating], torque_nm: NDArray[np.floating]) -> bool:
        """True if any channel is at or beyond its range (or not a finite number)."""
        # plain floats: this runs once per sample at 200 Hz, where small-array numpy dominates
        values = [*np.asarray(force_n, dtype=float).tolist(),
                  *np.asarray(torque_nm, dtype=float).tolist()]
        ranges = (*self.force_range_n, *self.torque_range_nm)
        return not all(abs(v) < r for v, r in zip(values, ranges, strict=True))


NANO17 = SensorSpec(
    model="Nano17 SI-12-0.12",
    force_range_n=(12.0, 12.0, 17.0),
    torque_range_nm=(0.12, 0.12, 0.12),
    force_resolution_n=1.0 / 320.0,
    torque_resolution_nm=1.0 / 64000.0,
    force_noise_n=0.002,
    torque_noise_nm=1e-5,
)

NANO43 = SensorSpec(
    model="Nano43 SI-9-0.125",
    force_range_n=(9.0, 9.0, 9.0),
    torque_range_nm=(0.125, 0.125, 0.125),
    force_resolution_n=1.0 / 512.0,
    torque_resolution_nm=1.0 / 32000.0,
    force_noise_n=0.003,
    torque_noise_nm=2e-5,
)
