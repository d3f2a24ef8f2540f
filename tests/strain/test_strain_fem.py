"""FEM of the compression simulator against elasticity, and the RF frames against their truth."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.fem import block_unit_solution, solve_plane_strain
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.ultrasound.sim_compression import simulate_compression_pair, simulate_rf_frame


@pytest.mark.parametrize("nu", [0.3, 0.495])
def test_homogeneous_block_strain_equals_applied(nu: float) -> None:
    sol = solve_plane_strain(np.full((12, 16), 37.55), element_mm=1.0, applied_strain=0.03,
                             poisson_ratio=nu)
    np.testing.assert_allclose(sol.axial_strain, -0.03, rtol=1e-9, atol=1e-12)
    # Frictionless plates, plane strain: eps_xx = nu / (1 - nu) * |eps_zz| everywhere.
    np.testing.assert_allclose(sol.lateral_strain, nu / (1 - nu) * 0.03, rtol=1e-6)
    # Top face moved down by strain * height, bottom fixed.
    np.testing.assert_allclose(sol.axial_displacement_mm[0], 0.03 * 12.0)
    np.testing.assert_allclose(sol.axial_displacement_mm[-1], 0.0, atol=1e-12)


def test_stiff_inclusion_strains_less() -> None:
    phantom = BlockPhantom("inc", 7.5, size_mm=(30.0, 30.0, 30.0),
                           inclusions=(Inclusion(0.0, 15.0, 4.0, 17.5),))
    sol = block_unit_solution(phantom, 1.0).scaled(0.02)
    centre = sol.axial_strain[15, 15]
    background = sol.axial_strain[15, 2]
    assert abs(centre) < 0.7 * abs(background)
    # Load is shared: the mean axial strain of the block is still the applied one.
    assert sol.axial_strain.mean() == pytest.approx(-0.02, rel=1e-6)


def test_fem_rejects_bad_input() -> None:
    bad = np.full((4, 4), 20.0)
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        solve_plane_strain(bad, element_mm=1.0, applied_strain=0.01)
    with pytest.raises(ValueError, match="applied_strain"):
        solve_plane_strain(np.full((4, 4), 20.0), element_mm=1.0, applied_strain=0.0)
    with pytest.raises(ValueError, match="applied_strain"):
        solve_plane_strain(np.full((4, 4), 20.0), element_mm=1.0, applied_strain=-0.01)
    with pytest.raises(ValueError, match="> 0 kPa"):
        solve_plane_strain(np.full((4, 4), -1.0), element_mm=1.0, applied_strain=0.01)


SMALL = BlockPhantom("small", 10.0, size_mm=(20.0, 20.0, 20.0), speckle_seed=3)


def test_frames_share_scatterers_and_truth_matches_rf() -> None:
    kw = dict(depth_mm=6.0, width_mm=6.0, n_lines=32, element_mm=1.0)
    a = simulate_rf_frame(SMALL, applied_strain=0.0, **kw)
    b = simulate_rf_frame(SMALL, applied_strain=0.0, **kw)
    np.testing.assert_array_equal(a.rf, b.rf)
    assert a.rf.dtype == np.float32 and a.rf.shape == (312, 32)
    pair = simulate_compression_pair(SMALL, applied_strain=0.02, **kw)
    # Homogeneous block: u = -strain * depth, strain = -0.02.
    np.testing.assert_allclose(pair.axial_strain, -0.02, rtol=1e-4)
    np.testing.assert_allclose(pair.axial_displacement_m[:, 16], -0.02 * pair.depth_m, atol=1e-9)
    # Warping the post frame by the true motion restores the pre frame.
    from scipy.ndimage import map_coordinates

    i, j = np.mgrid[0:312, 0:32].astype(float)
    warped = map_coordinates(pair.rf_post.astype(float),
                             [i + pair.axial_displacement_samples,
                              j + pair.lateral_displacement_samples], order=3)
    core = (slice(20, 290), slice(4, 28))
    r_true = np.corrcoef(warped[core].ravel(), pair.rf_pre[core].ravel())[0, 1]
    r_none = np.corrcoef(pair.rf_post[core].ravel(), pair.rf_pre[core].ravel())[0, 1]
    assert r_true > 0.9
    assert r_none < 0.5


def test_requested_psnr_is_measured() -> None:
    kw = dict(depth_mm=6.0, width_mm=6.0, n_lines=32, element_mm=1.0, applied_strain=0.0)
    clean = simulate_rf_frame(SMALL, **kw).rf.astype(float)
    noisy = simulate_rf_frame(SMALL, psnr_db=12.7, rng_noise=np.random.default_rng(0),
                              **kw).rf.astype(float)
    noise = noisy - clean
    psnr = 10 * np.log10(np.max(np.abs(clean)) ** 2 / noise.var())
    assert psnr == pytest.approx(12.7, abs=0.1)
    assert np.max(np.abs(noise)) <= np.sqrt(3) * noise.std() * 1.01  # uniform noise


def test_frame_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        simulate_rf_frame(SMALL, applied_strain=0.01, depth_mm=6.0, width_mm=30.0, n_lines=8)
    with pytest.raises(ValueError, match="rng_noise"):
        simulate_rf_frame(SMALL, applied_strain=0.01, depth_mm=6.0, width_mm=6.0, n_lines=8,
                          psnr_db=10.0)
    with pytest.raises(ValueError, match="applied_strain"):
        simulate_rf_frame(SMALL, applied_strain=-0.01, depth_mm=6.0, width_mm=6.0, n_lines=8)
    with pytest.raises(ValueError, match="applied_strain"):
        simulate_compression_pair(SMALL, applied_strain=0.0, depth_mm=6.0, width_mm=6.0,
                                  n_lines=8)
