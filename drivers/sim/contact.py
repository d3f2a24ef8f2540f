"""Contact mechanics of the simulated lab (pure functions): the plate on a cylinder.

Probe on a block
    The flat-punch law (Sneddon, equal-area circle) is shared with planning: see
    :mod:`lab.gelatin`.

Plate on a cylinder
    Unconfined compression of a lubricated cylinder (radius r, height l0): stress = E strain, so
    F = E pi r^2 (dl / l0), with a small toe region where the plate first meets the slightly uneven
    top face. The toe is quadratic up to 2 e_t and joins the line F = E A (e - e_t) with the same
    slope, so the stress-strain slope beyond 2 e_t is exactly E (what the indentation analysis
    recovers) and the line extrapolates to zero force at e = e_t.
"""

from __future__ import annotations

import numpy as np

#: Toe strain e_t of the cylinder contact model (0.3 %); the toe ends at 2 e_t = 0.6 %.
TOE_STRAIN = 0.003


def cylinder_force_n(
    youngs_modulus_kpa: float,
    compression_mm: float,
    *,
    radius_mm: float,
    height_mm: float,
    toe_strain: float = TOE_STRAIN,
) -> float:
    """Force in N of a cylinder compressed by ``compression_mm`` between two lubricated plates.

    Parameters
    ----------
    youngs_modulus_kpa : float
        Young's modulus of the cylinder in kPa.
    compression_mm : float
        Shortening dl in mm (<= 0 means no contact, force 0).
    radius_mm, height_mm : float
        Radius r and uncompressed height l0 in mm.
    toe_strain : float
        e_t of the toe region (>= 0); 0 gives the pure line F = E A dl / l0.

    Returns
    -------
    force_n : float
        E A e^2 / (4 e_t) for e < 2 e_t, else E A (e - e_t), with e = dl / l0 and A = pi r^2.
    """
    if radius_mm <= 0 or height_mm <= 0:
        raise ValueError("cylinder radius and height must be > 0 mm")
    if toe_strain < 0:
        raise ValueError(f"toe strain must be >= 0, got {toe_strain}")
    strain = float(compression_mm) / height_mm
    if strain <= 0:
        return 0.0
    stiffness_n = youngs_modulus_kpa * 1e3 * np.pi * (radius_mm * 1e-3) ** 2
    if toe_strain > 0 and strain < 2.0 * toe_strain:
        return float(stiffness_n * strain**2 / (4.0 * toe_strain))
    return float(stiffness_n * (strain - toe_strain))
