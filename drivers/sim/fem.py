"""Plane-strain finite elements of a gelatin block compressed between two rigid plates.

A 2-D plane-strain, linear-elastic, small-strain model of the block's depth x lateral
cross-section (:class:`drivers.sim.phantom.BlockPhantom`, its modulus map from
``modulus_map_kpa``). Bilinear quadrilaterals on a regular grid with *selective reduced
integration* (deviatoric part 2 x 2 Gauss points, volumetric part one point) so the nearly
incompressible gelatin does not lock. Boundary conditions: the bottom face is held axially
(``u_z = 0``) and the top face is pushed down by a rigid plate (the probe) to
``u_z = applied_strain * height``; both contacts are frictionless, and one bottom node is pinned
laterally to remove the rigid-body mode. The problem is linear, so one solve at unit strain serves
every applied strain (cached per phantom and mesh). The RF rendering on top of it is
:mod:`drivers.ultrasound.sim_compression`.

Sign convention: depth positive down (away from the probe); compression gives negative axial
strain.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from numpy.typing import NDArray

from drivers.sim.phantom import BlockPhantom

__all__ = [
    "DEFAULT_ELEMENT_MM",
    "FEM_POISSON_RATIO",
    "MAX_APPLIED_STRAIN",
    "PlaneStrainSolution",
    "block_unit_solution",
    "check_applied_strain",
    "solve_plane_strain",
]

#: Largest applied strain accepted (small-strain linear model; the paper goes to 7 %).
MAX_APPLIED_STRAIN = 0.2
#: Element size of the block mesh (mm) unless a caller asks otherwise.
DEFAULT_ELEMENT_MM = 0.5
#: Poisson's ratio of the FEM: gelatin is incompressible (:data:`lab.gelatin.POISSON_RATIO`), but
#: the displacement formulation needs nu < 0.5; 0.495 is incompressible to within 1 %.
FEM_POISSON_RATIO = 0.495


@dataclass(frozen=True)
class PlaneStrainSolution:
    """Nodal displacements of a plane-strain block (mm) and its element strains.

    Attributes
    ----------
    x_mm : ndarray, shape (n_x_nodes,)
        Lateral node coordinates (mm), block frame (0 = centre line).
    z_mm : ndarray, shape (n_z_nodes,)
        Depth node coordinates (mm), 0 = top surface, positive down.
    lateral_displacement_mm, axial_displacement_mm : ndarray, shape (n_z_nodes, n_x_nodes)
        World-frame displacement (mm) of each node; axial positive = down (away from the probe).
    axial_strain, lateral_strain : ndarray, shape (n_z_nodes - 1, n_x_nodes - 1)
        ``d u_z / d z`` and ``d u_x / d x`` at element centres (dimensionless; axial negative in
        compression).
    applied_strain : float
        Plate displacement / block height (positive = compression).
    """

    x_mm: NDArray[np.float64]
    z_mm: NDArray[np.float64]
    lateral_displacement_mm: NDArray[np.float64]
    axial_displacement_mm: NDArray[np.float64]
    axial_strain: NDArray[np.float64]
    lateral_strain: NDArray[np.float64]
    applied_strain: float

    def scaled(self, applied_strain: float) -> PlaneStrainSolution:
        """The same block at another applied strain (linear elasticity: fields scale)."""
        k = applied_strain / self.applied_strain
        return PlaneStrainSolution(
            self.x_mm, self.z_mm, self.lateral_displacement_mm * k,
            self.axial_displacement_mm * k, self.axial_strain * k, self.lateral_strain * k,
            float(applied_strain),
        )


def _element_matrices(hx: float, hz: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Unit-modulus stiffness parts of a hx x hz bilinear quad (DOFs: ux, uz per node).

    Returns ``(k_mu, k_lambda)``: the deviatoric part for mu = 1 (2 x 2 Gauss) and the volumetric
    part for lambda = 1 (one-point rule). Nodes counter-clockwise from (-, -) in (x, z).
    """
    xi_a = np.array([-1.0, 1.0, 1.0, -1.0])
    eta_a = np.array([-1.0, -1.0, 1.0, 1.0])

    def b_matrix(xi: float, eta: float) -> NDArray[np.float64]:
        dn_dx = xi_a * (1 + eta * eta_a) / 4 * (2 / hx)
        dn_dz = eta_a * (1 + xi * xi_a) / 4 * (2 / hz)
        b = np.zeros((3, 8))
        b[0, 0::2] = dn_dx
        b[1, 1::2] = dn_dz
        b[2, 0::2] = dn_dz
        b[2, 1::2] = dn_dx
        return b

    area = hx * hz
    d_mu = np.diag([2.0, 2.0, 1.0])
    g = 1 / np.sqrt(3.0)
    k_mu = np.zeros((8, 8))
    for xi in (-g, g):
        for eta in (-g, g):
            b = b_matrix(xi, eta)
            k_mu += b.T @ d_mu @ b * (area / 4)
    b0 = b_matrix(0.0, 0.0)
    m = np.array([1.0, 1.0, 0.0])
    k_lambda = np.outer(b0.T @ m, b0.T @ m) * area
    return k_mu, k_lambda


def solve_plane_strain(
    youngs_modulus_kpa: NDArray[np.floating],
    *,
    element_mm: float,
    applied_strain: float,
    poisson_ratio: float = FEM_POISSON_RATIO,
) -> PlaneStrainSolution:
    """Displacement of a block compressed between two frictionless rigid plates (plane strain).

    Parameters
    ----------
    youngs_modulus_kpa : ndarray, shape (n_z_elements, n_x_elements), float
        Young's modulus of each square element (kPa); row 0 touches the top plate (the probe).
    element_mm : float
        Element side length (mm).
    applied_strain : float
        Plate travel / block height, > 0 (compression), at most 0.2.
    poisson_ratio : float, optional
        In [0, 0.5); gelatin is nearly incompressible (0.495 default). Selective reduced
        integration keeps the elements free of volumetric locking up to about 0.4999.

    Returns
    -------
    PlaneStrainSolution
        Nodal displacements (mm) and element strains; block frame with x centred.

    Raises
    ------
    ValueError
        NaN/inf or non-positive moduli, a non-2-D map, a non-positive or too large strain, or a
        Poisson ratio outside [0, 0.5).

    Notes
    -----
    Boundary conditions: ``u_z = 0`` on the bottom nodes, ``u_z = applied_strain * height`` on the
    top nodes, no tangential traction on either plate, ``u_x = 0`` at the bottom-centre node.
    Linear system ``K u = f`` assembled with :mod:`scipy.sparse` and solved by sparse LU.

    Examples
    --------
    >>> sol = solve_plane_strain(np.full((10, 10), 20.0), element_mm=1.0, applied_strain=0.02)
    >>> round(float(sol.axial_strain.mean()), 6)
    -0.02
    """
    e = np.asarray(youngs_modulus_kpa, dtype=np.float64)
    if e.ndim != 2 or min(e.shape) < 1:
        raise ValueError(f"modulus map must be 2-D (depth, lateral elements), got shape {e.shape}")
    if not np.all(np.isfinite(e)):
        raise ValueError(f"modulus map contains {int(np.sum(~np.isfinite(e)))} NaN/inf values; "
                         "every element needs a finite Young's modulus")
    if np.any(e <= 0):
        raise ValueError(f"modulus map must be > 0 kPa everywhere, min is {e.min()} kPa")
    check_applied_strain(applied_strain, allow_zero=False)
    if not (np.isfinite(element_mm) and element_mm > 0):
        raise ValueError(f"element_mm must be a positive length in mm, got {element_mm}")
    if not 0.0 <= poisson_ratio < 0.5:
        raise ValueError(f"poisson_ratio must be in [0, 0.5), got {poisson_ratio}")

    nz, nx = e.shape
    h = float(element_mm)
    k_mu, k_lambda = _element_matrices(h, h)
    mu_unit = 1.0 / (2.0 * (1.0 + poisson_ratio))
    lam_unit = poisson_ratio / ((1.0 + poisson_ratio) * (1.0 - 2.0 * poisson_ratio))
    k_unit = mu_unit * k_mu + lam_unit * k_lambda  # per kPa of Young's modulus

    n_xn, n_zn = nx + 1, nz + 1
    iz, ix = np.meshgrid(np.arange(nz), np.arange(nx), indexing="ij")
    n00 = (iz * n_xn + ix).ravel()
    nodes = np.stack([n00, n00 + 1, n00 + 1 + n_xn, n00 + n_xn], axis=1)  # (elem, 4), ccw in x,z
    dofs = np.empty((nodes.shape[0], 8), dtype=np.int64)
    dofs[:, 0::2] = 2 * nodes
    dofs[:, 1::2] = 2 * nodes + 1
    rows = np.repeat(dofs, 8, axis=1).ravel()
    cols = np.tile(dofs, (1, 8)).ravel()
    vals = (e.ravel()[:, None, None] * k_unit[None]).ravel()
    n_dof = 2 * n_xn * n_zn
    k = sp.csr_matrix((vals, (rows, cols)), shape=(n_dof, n_dof))

    height = nz * h
    u = np.zeros(n_dof)
    fixed = np.zeros(n_dof, dtype=bool)
    top = np.arange(n_xn)
    bottom = (n_zn - 1) * n_xn + np.arange(n_xn)
    fixed[2 * top + 1] = True
    u[2 * top + 1] = applied_strain * height
    fixed[2 * bottom + 1] = True
    fixed[2 * bottom[nx // 2]] = True
    free = ~fixed
    rhs = -(k[free][:, fixed] @ u[fixed])
    u[free] = spla.spsolve(k[free][:, free].tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")

    ux = u[0::2].reshape(n_zn, n_xn)
    uz = u[1::2].reshape(n_zn, n_xn)
    axial_strain = 0.5 * (np.diff(uz, axis=0)[:, 1:] + np.diff(uz, axis=0)[:, :-1]) / h
    lateral_strain = 0.5 * (np.diff(ux, axis=1)[1:, :] + np.diff(ux, axis=1)[:-1, :]) / h
    x_mm = (np.arange(n_xn) - nx / 2) * h
    z_mm = np.arange(n_zn) * h
    return PlaneStrainSolution(x_mm, z_mm, ux, uz, axial_strain, lateral_strain,
                               float(applied_strain))


def check_applied_strain(applied_strain: float, *, allow_zero: bool) -> None:
    """Raise ValueError unless ``applied_strain`` is a compression fraction the model accepts."""
    ok = np.isfinite(applied_strain) and (
        applied_strain >= 0 if allow_zero else applied_strain > 0
    )
    if not ok or applied_strain > MAX_APPLIED_STRAIN:
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"applied_strain must be {bound} and <= {MAX_APPLIED_STRAIN} (a compression fraction, "
            f"e.g. 0.02 for 2 %), got {applied_strain}"
        )


@functools.lru_cache(maxsize=16)
def block_unit_solution(
    phantom: BlockPhantom,
    element_mm: float = DEFAULT_ELEMENT_MM,
    poisson_ratio: float = FEM_POISSON_RATIO,
) -> PlaneStrainSolution:
    """FEM solution of ``phantom``'s depth x lateral cross-section at unit applied strain (cached).

    The modulus of each element is the mean of a 2 x 2 sub-sampling of
    ``phantom.modulus_map_kpa`` (smoother inclusion boundaries than centre sampling). Scale with
    :meth:`PlaneStrainSolution.scaled`.
    """
    width_mm, _, height_mm = phantom.size_mm
    nx = max(1, round(width_mm / element_mm))
    nz = max(1, round(height_mm / element_mm))
    sub = (np.arange(2 * nx) + 0.5) * (element_mm / 2) - nx * element_mm / 2
    subz = (np.arange(2 * nz) + 0.5) * (element_mm / 2)
    e_fine = phantom.modulus_map_kpa(sub[None, :], subz[:, None])
    e = e_fine.reshape(nz, 2, nx, 2).mean(axis=(1, 3))
    # Solve at a strain inside the accepted range, then rescale to 1 (the model is linear).
    return solve_plane_strain(e, element_mm=element_mm, applied_strain=0.01,
                              poisson_ratio=poisson_ratio).scaled(1.0)
