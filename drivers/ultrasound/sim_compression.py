"""Quasi-static compression simulator: RF frames of a gelatin block compressed by the probe.

What it models
--------------
* **Mechanics** (:mod:`drivers.sim.fem`). A 2-D plane-strain, linear-elastic, small-strain
  finite-element model of the block's depth x lateral cross-section, compressed between
  frictionless rigid plates (the bottom face and the probe), with nearly incompressible gelatin
  (Poisson's ratio 0.495 by default). A homogeneous block has exactly uniform strain, and a stiff
  inclusion strains less.
* **Imaging.** Point scatterers, uniform random over the block cross-section (seeded by the
  phantom's ``speckle_seed``, Gaussian amplitudes), moved with the FEM displacement, imaged in the
  probe's frame (the probe is the compressing plate, so depth 0 is the top surface at every step).
  RF = sum of a separable 2-D point-spread function: a Gaussian envelope times a cosine carrier
  along depth (centre frequency, pulse-echo fractional bandwidth) and a Gaussian lateral beam.
  Each scatterer's axial PSF is evaluated exactly at the RF samples (no quantisation of the
  sub-sample motion that strain imaging measures); its lateral position is split linearly between
  the two nearest lines, then the lines are convolved with the lateral beam.
* **Speckle statistics.** The default density (150 scatterers / mm^2, about 13 per resolution
  cell of 0.17 mm axial x 0.5 mm lateral FWHM) gives fully developed speckle: near-Gaussian RF
  (excess kurtosis ~0.3, i.e. ~3 / scatterers per cell) and a near-Rayleigh envelope (mean / std
  ~1.81 against 1.91 for Rayleigh). Sparse scatterers (a few per cell) give spiky RF with a
  *higher* peak-to-rms ratio, which at a fixed PSNR means relatively *more* noise.
* **Noise.** Uniform white noise (0 to fs / 2) at a requested PSNR, as in [GLUENet] (12.7 dB
  case); see :func:`add_psnr_noise` for the definition. Fully developed speckle over a
  2000 x 250 frame has ``max |rf| / rms(rf)`` ~5.2-5.5 (about 14.5 dB), so at 12.7 dB the noise
  variance is about 1.5 times the echo variance over the full band; the echo occupies only
  ~1/3 of the band, and a scanner-like band-pass (:mod:`analysis.strain.bandpass`) recovers
  ~4.8 dB of it.

What it does not model: attenuation, diffraction (depth-dependent beam), out-of-plane motion,
finite-strain kinematics, friction at the plate, frequency-dependent scattering.

Sign conventions
----------------
Depth increases away from the probe. Displacements are Lagrangian: the tissue imaged at pixel
``(i, j)`` of the zero-strain frame moves by ``axial_displacement`` along depth (positive = away
from the probe) and ``lateral_displacement`` along the line axis. Compression from the probe moves
tissue *toward* the probe, so the axial displacement is negative, grows with depth, and the axial
strain ``d(axial displacement)/d(depth)`` is negative; the applied strain is the positive
compression fraction (``-mean axial strain`` of a homogeneous block).

References
----------
.. [GLUENet] Kibria & Rivaz, "GLUENet: ultrasound elastography using convolutional neural
   network", 2018 (``papers/gluenet-cnn-glue-strain-elastography.txt``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter1d

from drivers.sim.fem import (
    DEFAULT_ELEMENT_MM,
    FEM_POISSON_RATIO,
    block_unit_solution,
    check_applied_strain,
)
from drivers.sim.phantom import BlockPhantom

__all__ = [
    "DEFAULT_SCATTERERS_PER_MM2",
    "CompressionPair",
    "RfFrame",
    "add_psnr_noise",
    "simulate_compression_pair",
    "simulate_rf_frame",
]

#: Scatterer density over the cross-section: ~13 per resolution cell (fully developed speckle).
DEFAULT_SCATTERERS_PER_MM2 = 150.0


def _bilinear(
    field: NDArray[np.float64], x0: float, dx: float, z0: float, dz: float,
    x: NDArray[np.float64], z: NDArray[np.float64],
) -> NDArray[np.float64]:
    """Bilinear interpolation of ``field`` (z, x) on a regular grid, clamped at the edges."""
    fx = np.clip((x - x0) / dx, 0, field.shape[1] - 1)
    fz = np.clip((z - z0) / dz, 0, field.shape[0] - 1)
    ix = np.minimum(fx.astype(np.int64), max(field.shape[1] - 2, 0))
    iz = np.minimum(fz.astype(np.int64), max(field.shape[0] - 2, 0))
    tx = fx - ix
    tz = fz - iz
    ix1 = np.minimum(ix + 1, field.shape[1] - 1)
    iz1 = np.minimum(iz + 1, field.shape[0] - 1)
    return ((1 - tz) * ((1 - tx) * field[iz, ix] + tx * field[iz, ix1])
            + tz * ((1 - tx) * field[iz1, ix] + tx * field[iz1, ix1]))


# --------------------------------------------------------------------------------------------
# Scatterers and RF
# --------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=8)
def _scatterers(
    phantom: BlockPhantom, density_per_mm2: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Reference (zero-strain) scatterers of the whole cross-section: x_mm, z_mm, amplitude."""
    width_mm, _, height_mm = phantom.size_mm
    n = round(density_per_mm2 * width_mm * height_mm)
    rng = np.random.default_rng(phantom.speckle_seed)
    x = rng.uniform(-width_mm / 2, width_mm / 2, n)
    z = rng.uniform(0.0, height_mm, n)
    amp = rng.standard_normal(n)
    for arr in (x, z, amp):
        arr.setflags(write=False)
    return x, z, amp


@dataclass(frozen=True)
class RfFrame:
    """One simulated quasi-static RF frame and the true motion relative to zero strain.

    Attributes
    ----------
    rf : ndarray, shape (depth_sample, line), float32
        RF echo (arbitrary units), noise included.
    depth_m : ndarray, shape (depth_sample,)
        Depth of each sample (m) below the probe, ``i * sound_speed / (2 sampling_frequency)``.
    lateral_m : ndarray, shape (line,)
        Line positions (m), 0 = probe centre.
    sampling_frequency, center_frequency, sound_speed : float
        Hz, Hz, m/s (UFF names).
    applied_strain : float
        Compression fraction of this frame (0 = reference).
    lateral_offset_mm : float
        Probe centre in the block frame (mm).
    axial_displacement_m, lateral_displacement_m : ndarray, shape (depth_sample, line), float32
        True Lagrangian displacement (m) of the tissue at each zero-strain pixel, probe frame
        (axial positive = away from the probe; negative under compression).
    axial_strain : ndarray, shape (depth_sample, line), float32
        True ``d u_axial / d depth`` at each pixel (negative under compression).
    psnr_db : float or None
        Noise level used (None = noise-free).
    """

    rf: NDArray[np.float32]
    depth_m: NDArray[np.float64]
    lateral_m: NDArray[np.float64]
    sampling_frequency: float
    center_frequency: float
    sound_speed: float
    applied_strain: float
    lateral_offset_mm: float
    axial_displacement_m: NDArray[np.float32]
    lateral_displacement_m: NDArray[np.float32]
    axial_strain: NDArray[np.float32]
    psnr_db: float | None

    @property
    def sample_spacing_m(self) -> float:
        """Axial distance between RF samples (m)."""
        return self.sound_speed / (2.0 * self.sampling_frequency)

    @property
    def line_spacing_m(self) -> float:
        """Distance between lines (m)."""
        return float(self.lateral_m[1] - self.lateral_m[0]) if self.lateral_m.size > 1 else 1.0


def _image_grid(
    depth_mm: float, width_mm: float, n_lines: int, sampling_frequency: float, sound_speed: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], float, float]:
    dz_m = sound_speed / (2.0 * sampling_frequency)
    n_samples = round(depth_mm * 1e-3 / dz_m)
    if n_samples < 8:
        raise ValueError(f"depth {depth_mm} mm gives only {n_samples} RF samples; need >= 8")
    pitch_mm = width_mm / n_lines
    depth_m = np.arange(n_samples) * dz_m
    lateral_m = (-width_mm / 2 + (np.arange(n_lines) + 0.5) * pitch_mm) * 1e-3
    return depth_m, lateral_m, dz_m, pitch_mm


def simulate_rf_frame(
    phantom: BlockPhantom,
    *,
    applied_strain: float,
    depth_mm: float,
    width_mm: float,
    n_lines: int,
    lateral_offset_mm: float = 0.0,
    sampling_frequency: float = 40e6,
    center_frequency: float = 6.67e6,
    sound_speed: float = 1540.0,
    psnr_db: float | None = None,
    rng_noise: np.random.Generator | None = None,
    fractional_bandwidth: float = 0.6,
    lateral_psf_fwhm_mm: float = 0.5,
    scatterers_per_mm2: float = DEFAULT_SCATTERERS_PER_MM2,
    element_mm: float = DEFAULT_ELEMENT_MM,
    poisson_ratio: float = FEM_POISSON_RATIO,
) -> RfFrame:
    """RF frame of ``phantom`` compressed by the probe to ``applied_strain``.

    Frames of one phantom (same ``speckle_seed``) at different strains share their scatterers,
    so any two of them form a pre/post pair with known motion.

    Parameters
    ----------
    phantom : BlockPhantom
        Block and its inclusions (modulus map, size, speckle seed).
    applied_strain : float
        Compression fraction in [0, 0.2] (0 = the uncompressed reference).
    depth_mm, width_mm : float
        Imaged depth from the probe face and lateral extent of the lines (mm).
    n_lines : int
        Number of RF lines (A-lines) across ``width_mm``; at least 2.
    lateral_offset_mm : float, optional
        Probe centre in the block frame (mm); the field of view must lie inside the block.
    sampling_frequency, center_frequency, sound_speed : float, optional
        RF sampling rate (Hz), pulse centre frequency (Hz), speed of sound (m/s).
    psnr_db : float or None, optional
        Add uniform white noise with ``10 log10(max|rf|^2 / noise variance) = psnr_db``, ``rf``
        the noise-free frame (:func:`add_psnr_noise`; [GLUENet]: 12.7 dB). None: noise-free.
    rng_noise : numpy.random.Generator, optional
        Noise source; required when ``psnr_db`` is given.
    fractional_bandwidth : float, optional
        Pulse-echo -6 dB bandwidth / centre frequency of the Gaussian pulse.
    lateral_psf_fwhm_mm : float, optional
        Full width at half maximum of the Gaussian lateral beam (mm).
    scatterers_per_mm2 : float, optional
        Scatterer density over the cross-section (default 150 / mm^2, ~13 per resolution cell:
        fully developed speckle).
    element_mm, poisson_ratio : float, optional
        FEM mesh size (mm) and Poisson's ratio.

    Returns
    -------
    RfFrame
        RF (depth_sample, line) float32 with the grid, metadata and true motion.

    Raises
    ------
    ValueError
        Negative/too large strain, a field of view outside the block, too few samples or lines,
        a sampling rate below twice the top of the band, or noise requested without a generator.
    """
    check_applied_strain(applied_strain, allow_zero=True)
    if n_lines < 2:
        raise ValueError(f"n_lines must be >= 2, got {n_lines}")
    if not (depth_mm > 0 and width_mm > 0):
        raise ValueError(f"depth_mm and width_mm must be > 0, got {depth_mm}, {width_mm}")
    top_hz = center_frequency * (1 + fractional_bandwidth / 2)
    if sampling_frequency < 2 * top_hz:
        raise ValueError(f"sampling_frequency {sampling_frequency:.4g} Hz is below twice the top "
                         f"of the RF band ({top_hz:.4g} Hz)")
    block_w, _, block_h = phantom.size_mm
    if (abs(lateral_offset_mm) + width_mm / 2 > block_w / 2 + 1e-9
            or depth_mm > block_h * (1 - applied_strain)):
        raise ValueError(
            f"field of view {depth_mm} x {width_mm} mm at lateral offset {lateral_offset_mm} mm "
            f"does not fit in the {block_w} x {block_h} mm block compressed by "
            f"{applied_strain:.3g}"
        )
    if psnr_db is not None and rng_noise is None:
        raise ValueError("psnr_db was given but rng_noise is None; pass a np.random.Generator")

    depth_m, lateral_m, dz_m, pitch_mm = _image_grid(depth_mm, width_mm, n_lines,
                                                     sampling_frequency, sound_speed)
    dz_mm = dz_m * 1e3
    unit = block_unit_solution(phantom, element_mm, poisson_ratio)
    plate_mm = applied_strain * block_h  # top-surface travel: the probe's frame moves with it
    hx = unit.x_mm[1] - unit.x_mm[0]
    hz = unit.z_mm[1] - unit.z_mm[0]

    # Scatterers that can reach the field of view, moved with the FEM field (probe frame).
    sx, sz, amp = _scatterers(phantom, scatterers_per_mm2)
    sigma_samples = _axial_sigma_samples(center_frequency, sampling_frequency,
                                         fractional_bandwidth)
    sigma_lat_mm = lateral_psf_fwhm_mm / (2 * np.sqrt(2 * np.log(2)))
    margin_z = 5 * sigma_samples * dz_mm
    margin_x = 5 * sigma_lat_mm + pitch_mm
    reach = plate_mm + margin_z
    x_lo = lateral_offset_mm - width_mm / 2 - margin_x - 1.0
    x_hi = lateral_offset_mm + width_mm / 2 + margin_x + 1.0
    keep = (sz <= depth_mm + reach + 1.0) & (sx >= x_lo) & (sx <= x_hi)
    x0, z0, a = sx[keep], sz[keep], amp[keep]
    if applied_strain > 0:
        ux = applied_strain * _bilinear(unit.lateral_displacement_mm, unit.x_mm[0], hx,
                                        unit.z_mm[0], hz, x0, z0)
        uz = applied_strain * _bilinear(unit.axial_displacement_mm, unit.x_mm[0], hx,
                                        unit.z_mm[0], hz, x0, z0) - plate_mm
    else:
        ux = np.zeros_like(x0)
        uz = np.zeros_like(z0)
    depth_pos = (z0 + uz) / dz_mm  # fractional sample index
    line_pos = (x0 + ux - lateral_offset_mm + width_mm / 2) / pitch_mm - 0.5  # fractional line

    rf = _render(depth_pos, line_pos, a, n_samples=depth_m.size, n_lines=n_lines,
                 sigma_samples=sigma_samples,
                 period_samples=sampling_frequency / center_frequency,
                 sigma_lines=sigma_lat_mm / pitch_mm)
    if psnr_db is not None:
        assert rng_noise is not None
        rf = add_psnr_noise(rf, psnr_db=psnr_db, rng=rng_noise)

    # True Lagrangian motion at the zero-strain pixels (probe frame).
    gx = lateral_m * 1e3 + lateral_offset_mm
    gz = depth_m * 1e3
    gxx, gzz = np.meshgrid(gx, gz)
    if applied_strain > 0:
        ax_mm = applied_strain * _bilinear(unit.axial_displacement_mm, unit.x_mm[0], hx,
                                           unit.z_mm[0], hz, gxx, gzz) - plate_mm
        lat_mm = applied_strain * _bilinear(unit.lateral_displacement_mm, unit.x_mm[0], hx,
                                            unit.z_mm[0], hz, gxx, gzz)
        strain = applied_strain * _bilinear(unit.axial_strain, unit.x_mm[0] + hx / 2, hx,
                                            unit.z_mm[0] + hz / 2, hz, gxx, gzz)
    else:
        ax_mm = lat_mm = strain = np.zeros_like(gxx)
    return RfFrame(
        rf=rf.astype(np.float32), depth_m=depth_m, lateral_m=lateral_m,
        sampling_frequency=float(sampling_frequency), center_frequency=float(center_frequency),
        sound_speed=float(sound_speed), applied_strain=float(applied_strain),
        lateral_offset_mm=float(lateral_offset_mm),
        axial_displacement_m=(ax_mm * 1e-3).astype(np.float32),
        lateral_displacement_m=(lat_mm * 1e-3).astype(np.float32),
        axial_strain=np.asarray(strain, dtype=np.float32), psnr_db=psnr_db,
    )


def add_psnr_noise(
    rf: NDArray[np.floating], *, psnr_db: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Add uniform white noise at a peak signal-to-noise ratio.

    PSNR (the usual, MSE-based definition, applied to RF):
    ``psnr_db = 10 log10(max|rf|^2 / sigma_n^2)``, with ``max|rf|`` the peak of the noise-free
    frame and ``sigma_n^2`` the noise variance. The noise is uniform on ``[-w, w]`` with
    ``w = sqrt(3) sigma_n``, independent per sample (white from 0 to half the sampling rate).

    Parameters
    ----------
    rf : ndarray, any shape, float
        Noise-free RF.
    psnr_db : float
        Peak signal-to-noise ratio (dB), finite.
    rng : numpy.random.Generator
        Noise source.

    Returns
    -------
    ndarray, same shape, float64
    """
    if not np.isfinite(psnr_db):
        raise ValueError(f"psnr_db must be finite, got {psnr_db}")
    peak = float(np.max(np.abs(rf)))
    noise_rms = peak / 10 ** (psnr_db / 20.0)
    half_width = noise_rms * np.sqrt(3.0)  # uniform on [-w, w] has variance w^2 / 3
    return np.asarray(rf, dtype=np.float64) + rng.uniform(-half_width, half_width, rf.shape)


def _axial_sigma_samples(center_frequency: float, sampling_frequency: float,
                         fractional_bandwidth: float) -> float:
    """Gaussian envelope sigma of the pulse-echo RF in samples, from the -6 dB bandwidth."""
    sigma_f = fractional_bandwidth * center_frequency / (2 * np.sqrt(2 * np.log(2)))
    sigma_t = 1.0 / (2 * np.pi * sigma_f)
    return float(sigma_t * sampling_frequency)


def _render(
    depth_pos: NDArray[np.float64], line_pos: NDArray[np.float64], amp: NDArray[np.float64], *,
    n_samples: int, n_lines: int, sigma_samples: float, period_samples: float, sigma_lines: float,
) -> NDArray[np.float64]:
    """Sum of separable PSFs: exact axial pulse per scatterer, linear split + Gaussian laterally."""
    half = int(np.ceil(4 * sigma_samples))
    inside = ((depth_pos > -half - 1) & (depth_pos < n_samples + half)
              & (line_pos > -4 * sigma_lines - 2) & (line_pos < n_lines + 4 * sigma_lines + 1))
    t, u, a = depth_pos[inside], line_pos[inside], amp[inside]
    i0 = np.floor(t).astype(np.int64)
    taps = np.arange(-half, half + 2)
    rows = i0[:, None] + taps[None, :]  # (scatterer, tap)
    d = rows - t[:, None]
    pulse = np.exp(-0.5 * (d / sigma_samples) ** 2) * np.cos(2 * np.pi * d / period_samples)
    pulse *= a[:, None]
    j0 = np.floor(u).astype(np.int64)
    f = (u - j0)[:, None]
    pad = int(np.ceil(4 * sigma_lines)) + 2  # lines kept outside the view for the lateral blur
    width = n_lines + 2 * pad
    out = np.zeros(n_samples * width)
    for dj, w in ((0, 1 - f), (1, f)):
        cols = (j0 + dj + pad)[:, None]
        ok = (rows >= 0) & (rows < n_samples) & (cols >= 0) & (cols < width)
        idx = rows * width + cols
        out += np.bincount(idx[ok], weights=(pulse * w)[ok], minlength=out.size)
    img = out.reshape(n_samples, width)
    img = gaussian_filter1d(img, sigma_lines, axis=1, mode="constant", truncate=4.0)
    return img[:, pad:pad + n_lines]


# --------------------------------------------------------------------------------------------
# Pairs
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CompressionPair:
    """Pre/post-compression RF frames with the true motion between them.

    Attributes
    ----------
    rf_pre, rf_post : ndarray, shape (depth_sample, line), float32
        RF frames at zero strain and at ``applied_strain``.
    axial_displacement_samples, lateral_displacement_samples : ndarray, (depth_sample, line)
        True displacement in RF samples and in lines (float32): the echo at pre-pixel (i, j) is at
        ``(i + axial, j + lateral)`` in the post frame.
    axial_displacement_m, lateral_displacement_m : ndarray, (depth_sample, line), float32
        The same in metres.
    axial_strain : ndarray, (depth_sample, line), float32
        True axial strain (negative under compression).
    depth_m, lateral_m : ndarray
        Pixel grid (m).
    sampling_frequency, center_frequency, sound_speed, applied_strain : float
    """

    rf_pre: NDArray[np.float32]
    rf_post: NDArray[np.float32]
    axial_displacement_samples: NDArray[np.float32]
    lateral_displacement_samples: NDArray[np.float32]
    axial_displacement_m: NDArray[np.float32]
    lateral_displacement_m: NDArray[np.float32]
    axial_strain: NDArray[np.float32]
    depth_m: NDArray[np.float64]
    lateral_m: NDArray[np.float64]
    sampling_frequency: float
    center_frequency: float
    sound_speed: float
    applied_strain: float


def simulate_compression_pair(
    phantom: BlockPhantom,
    *,
    applied_strain: float,
    depth_mm: float,
    width_mm: float,
    n_lines: int,
    sampling_frequency: float = 40e6,
    center_frequency: float = 6.67e6,
    sound_speed: float = 1540.0,
    psnr_db: float | None = None,
    rng: np.random.Generator | None = None,
    lateral_offset_mm: float = 0.0,
    **imaging: float,
) -> CompressionPair:
    """Pre (zero strain) and post (``applied_strain``) RF frames of one phantom and their motion.

    Parameters are those of :func:`simulate_rf_frame` (``rng`` draws the noise of both frames,
    independently); ``applied_strain`` must be > 0. ``imaging`` passes the optional PSF, density
    and mesh keywords through.

    Returns
    -------
    CompressionPair

    Examples
    --------
    >>> from drivers.sim.fem import (
    DEFAULT_ELEMENT_MM,
    FEM_POISSON_RATIO,
    block_unit_solution,
    check_applied_strain,
)
from drivers.sim.phantom import BlockPhantom
    >>> pair = simulate_compression_pair(BlockPhantom("b", 7.5), applied_strain=0.01,
    ...                                  depth_mm=5.0, width_mm=5.0, n_lines=16)
    >>> pair.rf_pre.shape
    (260, 16)
    """
    check_applied_strain(applied_strain, allow_zero=False)
    common = dict(depth_mm=depth_mm, width_mm=width_mm, n_lines=n_lines,
                  lateral_offset_mm=lateral_offset_mm, sampling_frequency=sampling_frequency,
                  center_frequency=center_frequency, sound_speed=sound_speed, psnr_db=psnr_db,
                  rng_noise=rng, **imaging)
    pre = simulate_rf_frame(phantom, applied_strain=0.0, **common)  # type: ignore[arg-type]
    post = simulate_rf_frame(phantom, applied_strain=applied_strain,
                             **common)  # type: ignore[arg-type]
    return pair_from_frames(post, rf_pre=pre.rf, rf_post=post.rf)


def pair_from_frames(post: RfFrame, *, rf_pre: NDArray[np.floating],
                     rf_post: NDArray[np.floating]) -> CompressionPair:
    """A :class:`CompressionPair` of RF ``rf_pre`` -> ``rf_post`` with the truth of the
    post-compression frame ``post`` (displacements also in samples / lines, float32 RF)."""
    dz = post.sample_spacing_m
    dx = post.line_spacing_m
    return CompressionPair(
        rf_pre=np.asarray(rf_pre, dtype=np.float32), rf_post=np.asarray(rf_post, np.float32),
        axial_displacement_samples=(post.axial_displacement_m / dz).astype(np.float32),
        lateral_displacement_samples=(post.lateral_displacement_m / dx).astype(np.float32),
        axial_displacement_m=post.axial_displacement_m,
        lateral_displacement_m=post.lateral_displacement_m,
        axial_strain=post.axial_strain, depth_m=post.depth_m, lateral_m=post.lateral_m,
        sampling_frequency=post.sampling_frequency, center_frequency=post.center_frequency,
        sound_speed=post.sound_speed, applied_strain=post.applied_strain,
    )
