"""What the strain analysis needs of a pre/post RF pair with its ground truth (a typing Protocol).

:class:`drivers.ultrasound.sim_compression.CompressionPair` satisfies it; the analysis never
imports the simulator, so any source of pairs with known displacement (another simulator, a
phantom with a tracked reference) can train and validate the flow CNN or feed the study.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["RfPair"]


class RfPair(Protocol):
    """Pre/post RF frames (depth_sample, line), float32, with their true displacement and strain.

    Displacements are Lagrangian, in RF samples (axial, positive away from the probe) and lines
    (lateral); ``axial_strain`` is dimensionless and negative under compression; frequencies in
    Hz; ``applied_strain`` is the positive compression fraction.
    """

    @property
    def rf_pre(self) -> NDArray[np.float32]: ...
    @property
    def rf_post(self) -> NDArray[np.float32]: ...
    @property
    def axial_displacement_samples(self) -> NDArray[np.float32]: ...
    @property
    def lateral_displacement_samples(self) -> NDArray[np.float32]: ...
    @property
    def axial_strain(self) -> NDArray[np.floating]: ...
    @property
    def sampling_frequency(self) -> float: ...
    @property
    def center_frequency(self) -> float: ...
    @property
    def applied_strain(self) -> float: ...
