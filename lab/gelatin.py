"""Gelatin phantom physics shared by config, planning, simulators and analysis (pure, no I/O).

Numbers from PHYSICS.md ([SWEI]): 250 Bloom gelatin, 5 % to 17.5 % by weight. The paper gives
17.42 kPa (5 %), 37.55 kPa (7.5 %), 72.64 kPa (12.5 %), 97.21 kPa (15 %) and 126.05 kPa (17.5 %);
10 % is not given, we interpolate (about 55 kPa).

Probe on a block (flat punch)
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

This module sits below everything else in the project: it imports only NumPy.
"""

from __future__ import annotations

import functools

import numpy as np

#: Young's modulus (kPa) by gelatin concentration (% by weight), from indentation in [SWEI].
GELATIN_YOUNGS_MODULUS_KPA: dict[float, float] = {
    5.0: 17.42,
    7.5: 37.55,
    10.0: 55.10,  # not reported; linear interpolation between 7.5 % and 12.5 %
    12.5: 72.64,
    15.0: 97.21,
    17.5: 126.05,
}

#: Density of gelatin phantoms (kg/m^3), as in [SWEI].
DENSITY_KG_M3 = 1000.0
#: Poisson's ratio of gelatin: nearly incompressible.
POISSON_RATIO = 0.5
#: Dice threshold of [SWEI]: mean of the 7.5 % background and the 15 % inclusion targets.
DICE_THRESHOLD_KPA = 67.38


@functools.lru_cache(maxsize=256)
def youngs_modulus_kpa(gelatin_percent: float) -> float:
    """Young's modulus in kPa of gelatin at ``gelatin_percent`` % (5 to 17.5), interpolated.

    Cached (a pure function of its argument): the simulated sensors ask for it every sample.
    """
    c = np.array(sorted(GELATIN_YOUNGS_MODULUS_KPA))
    if not np.isfinite(gelatin_percent) or not c[0] <= gelatin_percent <= c[-1]:
        raise ValueError(
            f"gelatin concentration {gelatin_percent} % is outside the calibrated range "
            f"{c[0]}-{c[-1]} %"
        )
    e = np.array([GELATIN_YOUNGS_MODULUS_KPA[k] for k in c])
    return float(np.interp(gelatin_percent, c, e))


#: Voigt shear viscosity of gelatin (Pa s) at 5 % and its rise per % of gelatin: our choice
#: inside the 0.1-1 Pa s of PHYSICS.md (stiffer gels are more viscous); [SWEI] gives none.
VISCOSITY_AT_5_PERCENT_PA_S = 0.1
VISCOSITY_PER_PERCENT_PA_S = 0.04


def gelatin_viscosity_pa_s(gelatin_percent: float) -> float:
    """Shear viscosity (Pa s) of gelatin at ``gelatin_percent`` % (5 to 17.5): 0.1 to 0.6 Pa s."""
    youngs_modulus_kpa(gelatin_percent)  # validates the range
    eta = VISCOSITY_AT_5_PERCENT_PA_S + VISCOSITY_PER_PERCENT_PA_S * (gelatin_percent - 5.0)
    return round(eta, 6)


def shear_wave_speed_m_s(youngs_modulus_kpa: float, density_kg_m3: float = DENSITY_KG_M3) -> float:
    """Shear-wave speed c = sqrt(E / (3 rho)) in m/s of an incompressible solid."""
    if youngs_modulus_kpa <= 0:
        raise ValueError(f"Young's modulus must be > 0 kPa, got {youngs_modulus_kpa}")
    return float(np.sqrt(youngs_modulus_kpa * 1e3 / (3.0 * density_kg_m3)))


def flat_punch_stiffness_n_per_mm(
    youngs_modulus_kpa: float, *, face_area_mm2: float, poisson_ratio: float = POISSON_RATIO
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
    poisson_ratio: float = POISSON_RATIO,
) -> float:
    """Force in N of a rigid flat punch pressed ``indentation_mm`` into a half-space (0 if <= 0)."""
    if indentation_mm <= 0:
        return 0.0
    k = flat_punch_stiffness_n_per_mm(
        youngs_modulus_kpa, face_area_mm2=face_area_mm2, poisson_ratio=poisson_ratio
    )
    return k * float(indentation_mm)
