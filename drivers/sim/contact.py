"""Contact mechanics of the simulated lab (pure functions).

Probe on a block
    The probe face (40 x 10 mm by default) is a rigid flat punch pressed ``d`` into an elastic
    half-space of Young's modulus E and Poisson ratio nu. Sneddon's solution for a circular punch of
    radius a gives F = 2 a E / (1 - nu^2) d. For a non-circular face we use the circle of equal
    area, a = sqrt(A / pi). King (1987) found this within a few percent for compact faces (square,
    triangle); elongated faces are somewhat stiffer than their equal-area circle, and we have not
    quantified that for the 4:1 probe face, so treat absolute forces as approximate. The block
    (100 mm) is much larger than the face, so the half-space is a fair approximation. Viscosity
    (Voigt, 0.1-1 Pa s) would add 3 eta dd/dt to E d: below 0.5 % of the elastic term for depths
    >= 0.1 mm at < 1 mm/s on the softest gel, so it is neglected. Inclusions do not change the
    contact force (only the background modulus is used).

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


def flat_punch_stiffness_n_per_mm(
    youngs_modulus_kpa: float, *, face_area_mm2: float, poisson_ratio: float = 0.5
) -> float:
    """Contact stiffness dF/dd of a rigid flat punch on an elastic half-space, in N/mm.

    Parameters
    ----------
    youngs_modulus_kpa : float
        Young's modulus of the half-space in kPa (> 0).
    face_area_mm2 : float
        Area of the punch face in mm^2 (> 0); the equal-area circle is used.
    poisson_ratio : float
        Poisson ratio in [0, 0.5]; 0.5 for gelatin.

    Returns
    -------
    stiffness_n_per_mm : float
        2 a E / (1 - nu^2) with a = sqrt(A / pi).
    """
    if youngs_modulus_kpa <= 0 or face_area_mm2 <= 0:
        raise ValueError("Young's modulus and face area must be > 0")
    if not 0.0 <= poisson_ratio <= 0.5:
        raise ValueError(f"Poisson ratio must be in [0, 0.5], got {poisson_ratio}")
    radius_m = np.sqrt(face_area_mm2 * 1e-6 / np.pi)
    stiffness_n_per_m = 2.0 * radius_m * youngs_modulus_kpa * 1e3 / (1.0 - poisson_ratio**2)
    return float(stiffness_n_per_m * 1e-3)


def flat_punch_force_n(
    youngs_modulus_kpa: float,
    indentation_mm: float,
    *,
    face_area_mm2: float,
    poisson_ratio: float = 0.5,
) -> float:
    """Force in N of a rigid flat punch pressed ``indentation_mm`` into a half-space (0 if <= 0)."""
    if indentation_mm <= 0:
        return 0.0
    k = flat_punch_stiffness_n_per_mm(
        youngs_modulus_kpa, face_area_mm2=face_area_mm2, poisson_ratio=poisson_ratio
    )
    return k * float(indentation_mm)


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
