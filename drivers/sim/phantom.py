"""Gelatin phantoms of the simulated world: blocks with inclusions, cylinders, the phantom table.

The gelatin calibration (concentration -> Young's modulus) is :mod:`lab.gelatin`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from lab.gelatin import youngs_modulus_kpa


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
