"""DP, GLUE and LSQ/Kalman strain against simulated pairs with known motion."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from analysis.strain.dp import dp_displacement, steps_to_piecewise_linear
from analysis.strain.glue import glue, glue_system
from analysis.strain.lsq import kalman_strain, lsq_strain
from analysis.strain.pipeline import estimate_strain
from drivers.sim.phantom import BlockPhantom
from drivers.ultrasound.sim_compression import simulate_compression_pair

PHANTOM = BlockPhantom("uniform", 10.0, size_mm=(24.0, 24.0, 24.0), speckle_seed=11)
GEOM = dict(depth_mm=10.0, width_mm=8.0, n_lines=40, element_mm=1.0)


@pytest.fixture(scope="module")
def pair_2pct():
    return simulate_compression_pair(PHANTOM, applied_strain=0.02, **GEOM)


def test_lsq_strain_of_linear_and_quadratic_fields() -> None:
    z = np.arange(100.0)[:, None] * np.ones((1, 3))
    s = lsq_strain((-0.03 * z).astype(np.float32), window=21)
    assert s.dtype == np.float32
    assert np.all(np.isnan(s[:10])) and np.all(np.isnan(s[-10:]))
    np.testing.assert_allclose(s[10:-10], -0.03, rtol=1e-5)
    # Central LSQ slope of a quadratic is its exact derivative at the centre.
    q = lsq_strain(1e-4 * z**2, window=11)
    np.testing.assert_allclose(q[5:-5], 2e-4 * z[5:-5], rtol=1e-9)


def test_kalman_reduces_noise_and_keeps_level() -> None:
    rng = np.random.default_rng(0)
    truth = -0.02
    noisy = truth + 0.004 * rng.standard_normal((50, 120))
    smooth = kalman_strain(noisy, measurement_noise=1.6e-5, process_noise=1e-9)
    assert np.std(smooth) < 0.25 * np.std(noisy)
    assert np.mean(smooth) == pytest.approx(truth, abs=5e-4)
    causal = kalman_strain(noisy, measurement_noise=1.6e-5, process_noise=1e-9, smooth=False)
    assert np.std(causal[:, 60:]) < 0.4 * np.std(noisy)
    with pytest.raises(ValueError, match="measurement_noise"):
        kalman_strain(noisy, measurement_noise=0.0)


def test_uniform_compression_strain_equals_applied(pair_2pct) -> None:
    res = estimate_strain(pair_2pct.rf_pre, pair_2pct.rf_post, coarse="dp", max_strain=0.05,
                          strain_window=41)
    strain = res.axial_strain[res.valid]
    assert np.all(np.isfinite(strain))
    # Bounds about 1.5x the measured errors (mean -0.51 %, median |error| 4.4e-4, lateral
    # median errors 0.035 and 0.016 lines): LSQ strain equals the applied strain (negative).
    assert -float(np.mean(strain)) == pytest.approx(0.02, rel=0.008)
    assert float(np.median(np.abs(strain + 0.02))) < 6.5e-4
    # Lateral motion: matches the (small) truth, and is near zero on the centre lines.
    lat = res.lateral_displacement[res.valid]
    truth_lat = pair_2pct.lateral_displacement_samples[res.valid]
    assert float(np.median(np.abs(lat - truth_lat))) < 0.053
    centre = lat[:, lat.shape[1] // 2 - 2: lat.shape[1] // 2 + 2]
    assert float(np.median(np.abs(centre))) < 0.024


def test_glue_from_perturbed_field_converges(pair_2pct) -> None:
    truth_a = pair_2pct.axial_displacement_samples.astype(float)
    truth_l = pair_2pct.lateral_displacement_samples.astype(float)
    rng = np.random.default_rng(5)
    # Smooth perturbation of up to ~1.5 samples axially and 0.4 lines laterally.
    pert_a = gaussian_filter(rng.standard_normal(truth_a.shape), (40, 6))
    pert_a *= 1.5 / np.abs(pert_a).max()
    pert_l = 0.4 * pert_a / 1.5
    start_err = np.median(np.abs(pert_a))
    res = glue(pair_2pct.rf_pre, pair_2pct.rf_post, truth_a + pert_a, truth_l + pert_l,
               iterations=3)
    err = np.abs(res.axial - truth_a[res.region])
    err_l = np.abs(res.lateral - truth_l[res.region])
    # Measured with the default weights (5, 1, 5, 1): median 0.0135, 95th percentile 0.033
    # samples, lateral median 0.0097 lines; weights 10x larger or smaller roughly double each.
    assert np.median(err) < 0.02 < start_err
    assert np.percentile(err, 95) < 0.05
    assert np.median(err_l) < 0.015
    # Every solver solves the same system.
    small = (slice(0, 120), slice(0, 12))
    args = (pair_2pct.rf_pre[small], pair_2pct.rf_post[small], truth_a[small] + pert_a[small],
            truth_l[small] + pert_l[small])
    direct = glue(*args, solver="direct")
    for solver in ("cg-twolevel", "cg-line", "cg-jacobi"):
        other = glue(*args, solver=solver, rtol=1e-9, maxiter=5000)
        np.testing.assert_allclose(other.axial, direct.axial, atol=1e-4)


def test_dp_recovers_shift_and_handles_noise() -> None:
    rng = np.random.default_rng(2)
    pre = gaussian_filter(rng.standard_normal((200, 6)), (1.0, 0.0))
    post = np.roll(pre, 3, axis=0)
    res = dp_displacement(pre, post, axial_range=(-5, 5), lateral_range=(0, 0), block=1,
                          line_step=1)
    assert np.mean(res.axial_integer[10:-10] == 3) > 0.95

    noisy = simulate_compression_pair(PHANTOM, applied_strain=0.02, psnr_db=12.7,
                                      rng=np.random.default_rng(3), **GEOM)
    dp = dp_displacement(noisy.rf_pre, noisy.rf_post, axial_range=(-15, 3), block=4,
                         line_step=4, weight=0.1)
    err = np.abs(dp.axial - noisy.axial_displacement_samples)
    assert np.mean(err < 3.0) > 0.9  # inside GLUE's capture range (half a carrier period)
    assert dp.axial.shape == noisy.rf_pre.shape and dp.axial.dtype == np.float32


def test_steps_to_piecewise_linear() -> None:
    out = steps_to_piecewise_linear([0, 0, 0, -1, -1, -1, -2, -2, -2])
    np.testing.assert_allclose(out[1::3], [0, -1, -2])
    assert np.all(np.diff(out[1:-1]) < 0)


def test_bad_input_is_refused(pair_2pct) -> None:
    pre, post = pair_2pct.rf_pre, pair_2pct.rf_post
    zeros = np.zeros(pre.shape)
    with pytest.raises(ValueError, match="same shape"):
        estimate_strain(pre, post[:-1])
    with pytest.raises(ValueError, match="same shape"):
        glue(pre, post[:, :-1], zeros, zeros)
    bad = pre.copy()
    bad[10, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dp_displacement(bad, post, axial_range=(-5, 5))
    with pytest.raises(ValueError, match="NaN"):
        estimate_strain(pre, bad)
    with pytest.raises(ValueError, match="axial_initial"):
        glue(pre, post, zeros[:-2], zeros)
    with pytest.raises(ValueError, match="lateral_initial"):
        glue(pre, post, zeros, np.full(pre.shape, np.nan))
    with pytest.raises(ValueError, match="coarse"):
        estimate_strain(pre, post, coarse="cnn")  # no model
    with pytest.raises(ValueError, match="window"):
        lsq_strain(zeros, window=10)


def _reg_hessian_and_gradient(a0: np.ndarray, l0: np.ndarray, w: dict[str, float]):
    """GLUE's continuity term written out with difference matrices (independent of glue.py).

    R = 1/2 sum_k w_k |D_k f - mean(D_k f0)|^2 over the axial (alpha) and lateral (beta) fields,
    unknowns interleaved (axial, lateral) per sample, depth fastest.
    """
    p, q = a0.shape
    d1 = np.kron(np.eye(q), np.diff(np.eye(p), axis=0))  # along depth
    d2 = np.kron(np.diff(np.eye(q), axis=0), np.eye(p))  # across lines
    hess = np.zeros((2 * p * q, 2 * p * q))
    grad = np.zeros(2 * p * q)
    for c, f0, (w1, w2) in ((0, a0, (w["alpha1"], w["alpha2"])),
                            (1, l0, (w["beta1"], w["beta2"]))):
        x0 = f0.T.ravel()
        hess[c::2, c::2] = w1 * d1.T @ d1 + w2 * d2.T @ d2
        grad[c::2] = (w1 * d1.T @ (d1 @ x0 - np.mean(d1 @ x0))
                      + w2 * d2.T @ (d2 @ x0 - np.mean(d2 @ x0)))
    return hess, grad


def test_glue_system_weights_its_continuity_terms_as_the_cost_says() -> None:
    rng = np.random.default_rng(9)
    i1, i2 = rng.standard_normal((2, 30, 7))
    axial = gaussian_filter(rng.standard_normal((30, 7)), 2) * 3
    lateral = gaussian_filter(rng.standard_normal((30, 7)), 2)
    region = (slice(2, 27), slice(1, 6))
    weights = {"alpha1": 3.0, "alpha2": 0.7, "beta1": 2.0, "beta2": 0.4}
    a_w, b_w = glue_system(i1, i2, axial, lateral, region, **weights)
    a_0, b_0 = glue_system(i1, i2, axial, lateral, region, **dict.fromkeys(weights, 0.0))
    hess, grad = _reg_hessian_and_gradient(axial[region], lateral[region], weights)
    np.testing.assert_allclose((a_w - a_0).toarray(), hess, atol=1e-12)
    np.testing.assert_allclose(b_w - b_0, -grad, atol=1e-12)


def test_glue_weights_default_to_the_published_values() -> None:
    # Hashemi & Rivaz 2017 (and GLUENet's GLUE stage): alpha1 = beta1 = 5, alpha2 = beta2 = 1;
    # the pipeline passes its own defaults, so both signatures must carry them.
    for func in (glue, estimate_strain):
        params = inspect.signature(func).parameters
        assert {k: params[k].default for k in ("alpha1", "alpha2", "beta1", "beta2")} == {
            "alpha1": 5.0, "alpha2": 1.0, "beta1": 5.0, "beta2": 1.0}
