"""Gelatin phantoms of the simulated world: concentration -> Young's modulus, blocks, cylinders.

Numbers from PHYSICS.md ([SWEI]): 250 Bloom gelatin, 5 % to 17.5 % by weight. The paper gives
17.42 kPa (5 %), 37.55 kPa (7.5 %), 72.64 kPa (12.5 %), 97.21 kPa (15 %) and 126.05 kPa (17.5 %);
10 % is not given, we interpolate (about 55 kPa).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

#: Young's modulus (kPa) by gelatin concentration (% by weight), from indentation in [SWEI].
GELATIN_YOUNGS_MODULUS_KPA: dict[float, float] = {
    5.0: 17.42,
    7.5: 37.55,
    10.0: 55.10,  # not reported; linear interpolation between 7.5 % and 12.5 %
    12.5: 72.64,
    15.0: 97.21,
    17.5: 126.05,
}

DENSITY_KG_M3 = 1000.0
POISSON_RATIO = 0.5  # gelatin is nearly incompressible
#: Dice threshold of [SWEI]: mean of the 7.5 % background and the 15 % inclusion targets.
DICE_THRESHOLD_KPA = 67.38


def youngs_modulus_kpa(gelatin_percent: float) -> float:
    """Young's modulus in kPa of gelatin at ``gelatin_percent`` % (5 to 17.5), interpolated."""
    c = np.array(sorted(GELATIN_YOUNGS_MODULUS_KPA))
    if not np.isfinite(gelatin_percent) or not c[0] <= gelatin_percent <= c[-1]:
        raise ValueError(
            f"gelatin concentration {gelatin_percent} % is outside the calibrated range "
            f"{c[0]}-{c[-1]} %"
        )
    e = np.array([GELATIN_YOUNGS_MODULUS_KPA[k] for k in c])
    return float(np.interp(gelatin_percent, c, e))


def shear_wave_speed_m_s(youngs_modulus_kpa: float, density_kg_m3: float = DENSITY_KG_M3) -> float:
    """Shear-wave speed c = sqrt(E / (3 rho)) in m/s of an incompressible solid."""
    if youngs_modulus_kpa <= 0:
        raise ValueError(f"Young's modulus must be > 0 kPa, got {youngs_modulus_kpa}")
    return float(np.sqrt(youngs_modulus_kpa * 1e3 / (3.0 * density_kg_m3)))


@dataclass(frozen=True)
class Inclusion:
    """Cylindrical inclusion whose axis runs along the block's elevation (y) axis.

    Centre in the block frame (mm): ``x_mm`` lateral, ``z_mm`` depth below the top surface.
    """

    x_mm: float
    z_mm: float
    radius_mm: float
    gelatin_percent: float

    @property
    def youngs_modulus_kpa(self) -> float:
        return youngs_modulus_kpa(self.gelatin_percent)


@dataclass(frozen=True)
class BlockPhantom:
    """Gelatin block (SWEI and compression). Frame: origin at the top-surface centre, x lateral,
    y elevation, z depth (positive down), all mm. Default size ~100 x 100 x 100 mm ([SWEI])."""

    phantom_id: str
    gelatin_percent: float
    size_mm: tuple[float, float, float] = (100.0, 100.0, 100.0)
    inclusions: tuple[Inclusion, ...] = ()
    viscosity_pa_s: float = 0.3
    speckle_seed: int = 0
    kind: Literal["block"] = "block"

    def __post_init__(self) -> None:
        youngs_modulus_kpa(self.gelatin_percent)  # validates the range
        if any(s <= 0 for s in self.size_mm):
            raise ValueError(f"phantom {self.phantom_id}: size must be > 0 mm, got {self.size_mm}")
        if self.viscosity_pa_s < 0:
            raise ValueError(f"phantom {self.phantom_id}: viscosity must be >= 0 Pa s")

    @property
    def youngs_modulus_kpa(self) -> float:
        """Background Young's modulus in kPa."""
        return youngs_modulus_kpa(self.gelatin_percent)

    def modulus_map_kpa(
        self, x_mm: NDArray[np.floating], z_mm: NDArray[np.floating]
    ) -> NDArray[np.float64]:
        """Young's modulus (kPa) at block-frame points; ``x_mm``/``z_mm`` broadcast together."""
        x, z = np.broadcast_arrays(np.asarray(x_mm, float), np.asarray(z_mm, float))
        e = np.full(x.shape, self.youngs_modulus_kpa)
        for inc in self.inclusions:
            inside = (x - inc.x_mm) ** 2 + (z - inc.z_mm) ** 2 <= inc.radius_mm**2
            e[inside] = inc.youngs_modulus_kpa
        return e


@dataclass(frozen=True)
class CylinderPhantom:
    """Gelatin cylinder for unconfined compression: radius 10 mm, height 40 mm ([SWEI])."""

    phantom_id: str
    gelatin_percent: float
    radius_mm: float = 10.0
    height_mm: float = 40.0
    kind: Literal["cylinder"] = "cylinder"

    def __post_init__(self) -> None:
        youngs_modulus_kpa(self.gelatin_percent)
        if self.radius_mm <= 0 or self.height_mm <= 0:
            raise ValueError(f"cylinder {self.phantom_id}: radius and height must be > 0 mm")

    @property
    def youngs_modulus_kpa(self) -> float:
        return youngs_modulus_kpa(self.gelatin_percent)

    @property
    def area_mm2(self) -> float:
        return float(np.pi * self.radius_mm**2)


Phantom = BlockPhantom | CylinderPhantom


@dataclass
class PhantomTable:
    """All phantoms of a session, by id."""

    phantoms: dict[str, Phantom] = field(default_factory=dict)

    def add(self, phantom: Phantom) -> None:
        if phantom.phantom_id in self.phantoms:
            raise ValueError(f"duplicate phantom id {phantom.phantom_id!r}")
        self.phantoms[phantom.phantom_id] = phantom
