"""Loupas / Kasai displacement on simulated speckle with known displacement fields."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from analysis import displacement
from analysis.displacement import default_axial_kernel, kasai, loupas

C = 1540.0
F_DEMOD = 7.5e6
DZ = 0.08e-3
FS = C / (2 * DZ)  # 9.625 MHz axial IQ sampling rate
DEPTH = 96
LATERAL = 12
KW = {"sampling_frequency": FS, "modulation_frequency": F_DEMOD, "sound_speed": C}

# u(z, x, frame) in metres for frames 1..F (frame 0 is undisplaced)
Field = Callable[[NDArray[np.float64], NDArray[np.float64], int], NDArray[np.float64]]


def speckle_iq(
    field: Field, *, frames: int, f_center: float = F_DEMOD, snr_db: float | None = None,
    seed: int = 0, dtype: type = np.complex64,
) -> tuple[NDArray[np.complexfloating], NDArray[np.float64]]:
    """Baseband IQ of moving scatterers and the true displacement at the pixel centres.

    Each lateral column is an independent A-line: random scatterers (2 per sample) with complex
    Gaussian amplitudes, a Gaussian pulse of centre frequency `f_center` (spectral std 1.2 MHz),
    demodulated at F_DEMOD: ``iq(t) = sum a g(t - tau) exp(2j pi f_c (t - tau)) exp(-2j pi f_d t)``
    with ``tau = 2 z / c`` at the pixel times ``t = 2 z_pixel / c``. Frame k moves every scatterer
    by ``field(z, x, k)``, so the IQ phase turns by about ``-4 pi f_c u / c``.
    """
    rng = np.random.default_rng(seed)
    depth_m = (np.arange(DEPTH) + 0.5) * DZ
    lateral_m = np.arange(LATERAL) * 0.3e-3
    n_scat = 2 * DEPTH
    z0 = rng.uniform(-4 * DZ, (DEPTH + 4) * DZ, size=(LATERAL, n_scat))
    amp = rng.standard_normal((LATERAL, n_scat)) + 1j * rng.standard_normal((LATERAL, n_scat))
    sigma_t = 1.0 / (2 * np.pi * 1.2e6)
    t_pix = 2 * depth_m / C
    iq = np.empty((frames + 1, DEPTH, LATERAL), np.complex128)
    truth = np.empty((frames, DEPTH, LATERAL))
    xs = np.broadcast_to(lateral_m[:, None], z0.shape)
    for k in range(frames + 1):
        z = z0 if k == 0 else z0 + field(z0, xs, k)
        tau = 2 * z / C  # (lateral, scat)
        dt = t_pix[None, :, None] - tau[:, None, :]  # (lateral, depth, scat)
        pulse = np.exp(-0.5 * (dt / sigma_t) ** 2 + 2j * np.pi * f_center * dt)
        iq[k] = (np.einsum("lds,ls->ld", pulse, amp) * np.exp(-2j * np.pi * F_DEMOD * t_pix)[
            None, :]).T
        if k > 0:
            zz, xx = np.meshgrid(depth_m, lateral_m, indexing="ij")
            truth[k - 1] = field(zz, xx, k)
    if snr_db is not None:
        power = np.mean(np.abs(iq) ** 2)
        sigma = np.sqrt(power / 10 ** (snr_db / 10) / 2)
        iq = iq + sigma * (rng.standard_normal(iq.shape) + 1j * rng.standard_normal(iq.shape))
    return iq.astype(dtype), truth


def rigid(step_m: float) -> Field:
    return lambda z, x, k: np.full_like(z, step_m * k)


def sinusoid(amplitude_m: float, wavelength_m: float) -> Field:
    return lambda z, x, k: amplitude_m * (k / 3) * np.sin(2 * np.pi * z / wavelength_m)


def shear_wave(amplitude_m: float, speed_m_s: float, width_m: float, prf_hz: float) -> Field:
    """A Gaussian displacement pulse travelling laterally from x = 0 (depth invariant)."""
    def u(z: NDArray[np.float64], x: NDArray[np.float64], k: int) -> NDArray[np.float64]:
        centre = speed_m_s * k / prf_hz
        return amplitude_m * np.exp(-(((x - centre) / width_m) ** 2)) + 0 * z
    return u


def interior(a: NDArray) -> NDArray:
    """Drop the first/last few depth samples, where the speckle is incomplete."""
    return a[:, 6:-6, :]


def test_default_kernel_is_odd_and_about_one_and_a_half_wavelengths() -> None:
    k = default_axial_kernel(sampling_frequency=FS, modulation_frequency=F_DEMOD)
    wavelength_samples = 2 * FS / F_DEMOD
    assert k % 2 == 1
    assert abs(k - 1.5 * wavelength_samples) <= 1.0
    assert default_axial_kernel(sampling_frequency=40e6, modulation_frequency=5e6) == 25
    # a coarse pixel grid (0.25 mm: 1.23 samples per 1.5 wavelengths) still gets three
    assert default_axial_kernel(sampling_frequency=3.08e6, modulation_frequency=7.5e6) == 3


def test_sign_motion_away_from_probe_is_positive() -> None:
    iq, _ = speckle_iq(rigid(+1e-6), frames=2)
    assert np.median(loupas(iq, **KW)) > 0
    iq, _ = speckle_iq(rigid(-1e-6), frames=2)
    assert np.median(loupas(iq, **KW)) < 0


@pytest.mark.parametrize("dtype,real", [(np.complex64, np.float32), (np.complex128, np.float64)])
def test_rigid_shift_recovered_and_dtype_kept(dtype: type, real: type) -> None:
    iq, truth = speckle_iq(rigid(2e-6), frames=4, dtype=dtype)
    u = loupas(iq, **KW)
    assert u.dtype == real and u.shape == truth.shape
    ratio = interior(u) / interior(truth)
    # noise-free translation: unbiased; the local spread comes from speckle (dark spots)
    assert abs(np.median(ratio) - 1) < 0.005
    low, high = np.percentile(ratio, [5, 95])
    assert low > 0.92 and high < 1.08


def test_sinusoidal_field() -> None:
    amplitude = 3e-6
    iq, truth = speckle_iq(sinusoid(amplitude, 4e-3), frames=3)
    u = loupas(iq, **KW)
    rmse = np.sqrt(np.mean((interior(u) - interior(truth)) ** 2))
    assert rmse < 0.08 * amplitude  # kernel smoothing of the gradient + speckle


def test_shear_wave_field_across_frames() -> None:
    prf = 7000.0
    iq, truth = speckle_iq(shear_wave(5e-6, 3.0, 1.0e-3, prf), frames=5)
    u = loupas(iq, **KW)
    rmse = np.sqrt(np.mean((interior(u) - interior(truth)) ** 2))
    assert rmse < 0.05 * 5e-6
    # the peak moves with the wave: column of the maximum at each depth advances
    peak_cols = np.argmax(interior(u).mean(axis=1), axis=1)
    assert np.all(np.diff(peak_cols) >= 0) and peak_cols[-1] > peak_cols[0]


@pytest.mark.parametrize("snr_db,bound", [(30.0, 0.07), (20.0, 0.16), (10.0, 0.5)])
def test_error_grows_with_noise_but_stays_bounded(snr_db: float, bound: float) -> None:
    step = 8e-6
    iq, truth = speckle_iq(rigid(step), frames=3, snr_db=snr_db, seed=1)
    u = loupas(iq, **KW)
    median_err = np.median(np.abs(interior(u) - interior(truth)))
    assert median_err < bound * step


def test_equals_kasai_when_spectrum_is_centred() -> None:
    # exactly centred: real positive envelope along depth, so angle(R_a) = 0 everywhere
    rng = np.random.default_rng(2)
    envelope = rng.uniform(0.5, 2.0, size=(DEPTH, LATERAL))
    iq = np.stack([envelope, envelope * np.exp(-0.3j)]).astype(np.complex64)
    np.testing.assert_allclose(loupas(iq, **KW), kasai(iq, **KW), rtol=1e-6)
    # speckle with a centred spectrum: same median scale (locally the mean frequency jitters)
    iq, truth = speckle_iq(rigid(2e-6), frames=2, f_center=F_DEMOD)
    ratio_loupas = np.median(interior(loupas(iq, **KW)) / interior(truth))
    ratio_kasai = np.median(interior(kasai(iq, **KW)) / interior(truth))
    assert abs(ratio_loupas - ratio_kasai) < 0.01
    assert abs(ratio_kasai - 1) < 0.01


def test_off_centre_spectrum_loupas_right_kasai_biased() -> None:
    f_center = 6.5e6  # attenuated echo: spectrum below the demodulation frequency
    iq, truth = speckle_iq(rigid(2e-6), frames=2, f_center=f_center)
    ratio_loupas = np.median(interior(loupas(iq, **KW)) / interior(truth))
    ratio_kasai = np.median(interior(kasai(iq, **KW)) / interior(truth))
    assert abs(ratio_loupas - 1) < 0.01
    # Kasai assumes f_demod and is off by f_center / f_demod (13 % here)
    assert abs(ratio_kasai - f_center / F_DEMOD) < 0.01
    assert abs(ratio_kasai - 1) > 0.1


def test_progressive_follows_motion_beyond_the_aliasing_limit() -> None:
    # 20 um per frame: frame 4 is 80 um away, beyond c / (4 f) = 51 um
    iq, truth = speckle_iq(rigid(20e-6), frames=4)
    prog = interior(loupas(iq, reference="progressive", **KW))
    fixed = interior(loupas(iq, reference="fixed", **KW))
    assert np.median(np.abs(prog - interior(truth))) < 0.03 * 80e-6
    assert np.median(np.abs(fixed[-1] - interior(truth)[-1])) > 20e-6  # wrapped


def test_progressive_equals_fixed_for_small_motion_and_ensemble_smooths() -> None:
    iq, truth = speckle_iq(rigid(1e-6), frames=5)
    fixed = interior(loupas(iq, **KW))
    prog = interior(loupas(iq, reference="progressive", **KW))
    prog3 = interior(loupas(iq, reference="progressive", ensemble=4, **KW))
    scale = interior(truth)
    assert np.median(np.abs(prog - fixed) / scale) < 0.02
    # constant velocity: averaging neighbouring pairs changes nothing but edge pairs
    assert np.median(np.abs(prog3 - prog) / scale) < 0.02


def naive_loupas(iq: NDArray, kernel: int, *, kasai_only: bool = False) -> NDArray:
    """Literal transcription of the formulas (fixed reference), float64."""
    x = iq.astype(np.complex128)
    h = kernel // 2
    frames, depth, _ = x.shape
    out = np.empty((frames - 1, *x.shape[1:]))
    for k in range(1, frames):
        for m in range(depth):
            lo, hi = max(0, m - h), min(depth, m + h + 1)
            rt = np.sum(np.conj(x[0, lo:hi]) * x[k, lo:hi], axis=0)
            hi_a = min(hi, depth - 1)
            ra = np.sum(np.conj(x[0, lo:hi_a]) * x[0, lo + 1 : hi_a + 1], axis=0) + np.sum(
                np.conj(x[k, lo:hi_a]) * x[k, lo + 1 : hi_a + 1], axis=0)
            f = F_DEMOD if kasai_only else F_DEMOD + FS * np.angle(ra) / (2 * np.pi)
            out[k - 1, m] = -C * np.angle(rt) / (4 * np.pi * f)
    return out


@pytest.mark.parametrize("kernel", [1, 3, 5, 11])
def test_matches_literal_formula(kernel: int) -> None:
    rng = np.random.default_rng(3)
    iq = rng.standard_normal((3, 24, 5)) + 1j * rng.standard_normal((3, 24, 5))
    got = loupas(iq, axial_kernel=kernel, precision="double", **KW)
    np.testing.assert_allclose(got, naive_loupas(iq, kernel), rtol=1e-9, atol=1e-15)
    got_k = kasai(iq, axial_kernel=kernel, precision="double", **KW)
    np.testing.assert_allclose(got_k, naive_loupas(iq, kernel, kasai_only=True), rtol=1e-9,
                               atol=1e-15)


def test_quality_high_for_coherent_motion_low_for_noise() -> None:
    iq, _ = speckle_iq(rigid(1e-6), frames=2)
    _, q = loupas(iq, return_quality=True, **KW)
    assert q.dtype == np.float32
    assert np.all((q >= 0) & (q <= 1))
    assert np.median(interior(q)) > 0.99
    rng = np.random.default_rng(5)
    noise = (rng.standard_normal(iq.shape) + 1j * rng.standard_normal(iq.shape)).astype(
        np.complex64)
    _, qn = kasai(noise, return_quality=True, **KW)
    assert np.median(qn) < 0.6


def test_batch_axes_and_workers_give_identical_results() -> None:
    a, _ = speckle_iq(rigid(1e-6), frames=2, seed=1)
    b, _ = speckle_iq(rigid(2e-6), frames=2, seed=2)
    batch = np.stack([a, b])
    ub = loupas(batch, workers=2, **KW)
    assert ub.shape == (2, 2, DEPTH, LATERAL)
    np.testing.assert_array_equal(ub[0], loupas(a, workers=1, **KW))
    np.testing.assert_array_equal(ub[1], loupas(b, workers=3, **KW))


@pytest.mark.parametrize(
    "iq,message",
    [
        (np.zeros((3, 8, 4), np.float32), "complex64 or complex128"),
        (np.zeros((8, 4), np.complex64), "frame, depth, lateral"),
        (np.zeros((1, 8, 4), np.complex64), "at least 2 frames"),
        (np.zeros((3, 1, 4), np.complex64), "at least 2 depth samples"),
        (np.zeros((3, 8, 0), np.complex64), "empty"),
    ],
)
def test_bad_input_rejected(iq: NDArray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        loupas(iq, **KW)


def test_nan_and_bad_options_rejected() -> None:
    iq = np.ones((3, 8, 4), np.complex64)
    iq[2, 4, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        loupas(iq, **KW)
    good = np.ones((3, 8, 4), np.complex64)
    with pytest.raises(ValueError, match="odd"):
        loupas(good, axial_kernel=4, **KW)
    with pytest.raises(ValueError, match="reference"):
        loupas(good, reference="sliding", **KW)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="ensemble must be 2"):
        loupas(good, ensemble=3, **KW)
    with pytest.raises(ValueError, match="sampling_frequency"):
        kasai(good, sampling_frequency=0.0, modulation_frequency=F_DEMOD, sound_speed=C)


# -- the Numba path (complex64) against the NumPy path ----------------------------------------

requires_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                    reason="numba is not installed")


def numpy_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make complex64 input take the NumPy path, as without Numba."""
    monkeypatch.setattr(displacement, "_numba_kernels", lambda: None)


@requires_numba
@pytest.mark.parametrize("method", [loupas, kasai])
@pytest.mark.parametrize("reference,ensemble,kernel",
                         [("fixed", 2, 3), ("progressive", 2, 3), ("progressive", 3, 3),
                          ("fixed", 2, 11)])
def test_numba_path_matches_numpy_path(
    monkeypatch: pytest.MonkeyPatch, method: Callable[..., tuple[NDArray, NDArray]],
    reference: str, ensemble: int, kernel: int,
) -> None:
    assert displacement._numba_kernels() is not None  # complex64 takes the Numba path
    iq, _ = speckle_iq(shear_wave(5e-6, 3.0, 1.0e-3, 7000.0), frames=5, snr_db=20.0, seed=4)
    kw = {**KW, "reference": reference, "ensemble": ensemble, "axial_kernel": kernel,
          "return_quality": True, "workers": 1}
    u, q = method(iq, **kw)
    with monkeypatch.context() as m:
        numpy_path(m)
        u_np, q_np = method(iq, **kw)
    assert u.dtype == q.dtype == u_np.dtype == np.float32
    # both float32 with the same products; only the order of the window sums and the arctan
    # (polynomial vs libm) differ: measured max 4e-7 of the largest displacement, 4e-7 in q
    scale = np.max(np.abs(u_np))
    np.testing.assert_allclose(u, u_np, rtol=0, atol=2e-6 * scale)
    np.testing.assert_allclose(q, q_np, rtol=0, atol=2e-6)


@requires_numba
def test_numba_path_is_independent_of_strips_and_threads() -> None:
    rng = np.random.default_rng(6)
    base = rng.standard_normal((24, 200)) + 1j * rng.standard_normal((24, 200))
    iq = np.stack([base * np.exp(-0.05j * k) + 0.1 * rng.standard_normal(base.shape)
                   for k in range(4)]).astype(np.complex64)
    for reference in ("fixed", "progressive"):
        # 2 workers split the 200 columns into strips (one per task), 1 worker does not
        one = loupas(iq, reference=reference, return_quality=True, workers=1, **KW)
        two = loupas(iq, reference=reference, return_quality=True, workers=2, **KW)
        np.testing.assert_array_equal(one[0], two[0])
        np.testing.assert_array_equal(one[1], two[1])


@requires_numba
@pytest.mark.parametrize("where", [(0, 3, 2), (3, 23, 7)])
def test_numba_path_rejects_inf_and_nan(where: tuple[int, int, int]) -> None:
    iq = np.ones((4, 24, 8), np.complex64)
    iq[where] = np.inf
    with pytest.raises(ValueError, match=f"NaN or inf \\(frame {where[0]}\\)"):
        loupas(iq, workers=1, **KW)
    iq[where] = np.nan  # the last row of the last frame goes through the edge-row path
    with pytest.raises(ValueError, match=f"NaN or inf \\(frame {where[0]}\\)"):
        kasai(iq, reference="progressive", workers=2, **KW)


@requires_numba
def test_numba_thread_count_is_restored() -> None:
    import numba

    before = numba.get_num_threads()
    iq, _ = speckle_iq(rigid(1e-6), frames=2)
    for workers in (1, 2, 64):
        loupas(iq, workers=workers, **KW)
        assert numba.get_num_threads() == before


def test_import_compiles_nothing() -> None:
    # the kernels (and Numba itself) load at the first complex64 call, not at import
    code = ("import sys, analysis.displacement; "
            "assert 'numba' not in sys.modules and 'analysis._loupas_numba' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True,
                   cwd=Path(__file__).resolve().parents[2], timeout=60)


@requires_numba
@pytest.mark.parametrize("method", [loupas, kasai])
def test_complex128_runs_the_fast_kernels_and_returns_float64(
    method: Callable[..., tuple[NDArray, NDArray]],
) -> None:
    iq64, _ = speckle_iq(shear_wave(5e-6, 3.0, 1.0e-3, 7000.0), frames=5, snr_db=20.0, seed=8)
    iq128 = iq64.astype(np.complex128)
    u64, q64 = method(iq64, return_quality=True, **KW)
    u128, q128 = method(iq128, return_quality=True, **KW)
    assert u128.dtype == q128.dtype == np.float64
    # the same float32 kernels on the same values: identical up to the float64 cast
    np.testing.assert_array_equal(u128, u64.astype(np.float64))
    np.testing.assert_array_equal(q128, q64.astype(np.float64))
    double = method(iq128, precision="double", **KW)
    np.testing.assert_allclose(u128, double, rtol=0, atol=2e-6 * np.max(np.abs(double)))
    # a batch split into conversion blocks gives the same per-sequence results
    batch = np.stack([iq128, iq128 * np.exp(0.3j)])
    old_block = displacement._CONVERT_BLOCK_BYTES
    try:
        displacement._CONVERT_BLOCK_BYTES = 1
        ub = method(batch, **KW)
    finally:
        displacement._CONVERT_BLOCK_BYTES = old_block
    np.testing.assert_array_equal(ub[0], u128)
    np.testing.assert_array_equal(ub[1], method(batch[1], **KW))


def test_sound_speed_is_required_and_precision_checked() -> None:
    iq, _ = speckle_iq(rigid(1e-6), frames=2)
    with pytest.raises(TypeError, match="sound_speed"):
        loupas(iq, sampling_frequency=FS, modulation_frequency=F_DEMOD)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="precision"):
        kasai(iq, precision="half", **KW)  # type: ignore[call-overload]


def test_carrier_phase_iq_biases_loupas_until_converted() -> None:
    from analysis.beamforming import carrier_to_baseband

    iq, truth = speckle_iq(rigid(2e-6), frames=2)
    depth_m = np.arange(iq.shape[-2]) * C / (2 * FS)
    carrier = (iq * np.exp(2j * np.pi * F_DEMOD * 2 * depth_m / C)[None, :, None]).astype(
        iq.dtype)
    good = np.median(interior(loupas(iq, **KW)) / interior(truth))
    biased = np.median(interior(loupas(carrier, **KW)) / interior(truth))
    fixed = np.median(interior(loupas(carrier_to_baseband(
        carrier, depth_m=depth_m, sound_speed=C, modulation_frequency=F_DEMOD), **KW))
        / interior(truth))
    assert abs(good - 1) < 0.05 and abs(fixed - good) < 1e-3
    assert abs(biased - 1) > 0.2  # silently wrong without the conversion
    # Kasai only uses the temporal lag, where the carrier term cancels
    np.testing.assert_allclose(kasai(carrier, **KW), kasai(iq, **KW), rtol=1e-4, atol=1e-12)
