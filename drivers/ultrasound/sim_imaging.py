"""Imaging physics of the SWEI simulator: speckle that moves with the tissue, IQ and channel RF.

Two fidelity levels share the tissue model (:func:`tissue_scatterers`):

``image`` (fast, bulk training data) -- :func:`image_domain_iq`
    IQ is formed directly on the pixel grid as the sum of point scatterers convolved with a
    separable complex point-spread function: a Gaussian axial envelope whose width follows from
    the pulse-echo bandwidth of the probe, times a Gaussian lateral beam of FWHM
    ``lambda * max(F#, 1)`` (plane-wave transmit, dynamic receive at f-number ``F#``). A
    scatterer at depth ``zeta`` contributes ``r h(z - zeta) exp(2j (k0 - km) z) exp(-2j k0 zeta)``
    at pixel depth ``z`` (``k = 2 pi f / c``; ``f0`` the centre and ``fm`` the modulation
    frequency), the baseband-in-depth convention of :mod:`analysis.beamforming`. A displacement
    ``u`` (positive away from the probe) moves ``zeta`` to ``zeta + u``, so a rigid shift turns
    the IQ phase by ``-4 pi f0 u / c``. The axial sums are done once per sequence on a fine
    depth grid (:func:`speckle_field`, at least 3 samples per envelope sigma); a frame reads
    that field at ``z - u`` (cubic interpolation) and turns it by ``exp(-2j k0 u)``, the tissue
    translating locally with the displacement of the pixel (its variation over the +-3 sigma =
    +-0.2 mm of the envelope is neglected), then the lateral beam is applied to the columns, so
    a lateral displacement gradient still blurs and decorrelates the speckle. The cost does not
    grow with the scatterer density beyond building that field.

``channel`` (full path) -- :func:`channel_rf`
    Channel RF (sample, element) of a 0-degree (or steered) plane wave from the same point
    scatterers: transmit delay ``(z cos a + x sin a) / c``, receive delay ``|x_e - x_s| / c`` to
    each element, element directivity ``sinc(w sin(theta) / lambda) cos(theta)``, a Gaussian-
    enveloped pulse at ``f0``. The simulator beamforms it with :mod:`analysis.beamforming`.

Noise and push artefact (:func:`band_limited_noise`): electronic noise is complex Gaussian,
filtered by the same PSF as the echoes (what a receive chain passes), scaled so that the image
SNR ``mean |IQ_signal|^2 / noise variance`` over the field of view of the pre-push frame equals
the requested ``snr_db``. Reverberation of the push: frames less than
``PUSH_ARTEFACT_DURATION_S`` (0.13 ms, the [SWEI] recording delay) after the end of the push get
extra clutter of the same spectrum at ``+20 dB`` relative to the echoes, decaying as
``(1 - t / 0.13 ms)^2``; with the default ``initial_time`` of 0.13 ms no frame is affected.

Speckle is tied to the tissue: the scatterers of each tissue cell (a pixel; cells counted from
the block's top surface and lateral origin, elevation in ``ELEVATION_SLICE_MM`` slices) are
drawn from a generator seeded by ``(speckle_seed, lateral cell, elevation slice)``, so the same
tissue gives the same speckle from any probe position (to within one pixel). A cell holds
``scatterers_per_resolution_cell`` (10 by default: fully developed speckle, a Rayleigh envelope)
times its share of a resolution cell (axial x lateral FWHM of the PSF: 0.15 x 0.31 mm at
7.5 MHz, F# 1.5), at least one; each at a uniform depth in the cell, at the column centre,
with a uniform reflectivity of unit variance. On the default demo grid (0.25 x 0.21 mm pixels)
that is 11 per pixel (the former model had 1, 0.9 per resolution cell, envelope mean / std
1.47 instead of 1.91). Note that a 0.25 mm axial pixel is 1.7 envelope FWHM: adjacent depth
samples are almost uncorrelated, so a one-sample Loupas kernel tracks the phase of single speckle
samples (about 0 dB displacement SNR on that grid); the default kernel of three samples gives
about 11 dB (:data:`analysis.displacement.MIN_DEFAULT_AXIAL_KERNEL`).

Not modelled: attenuation and time-gain compensation, side lobes and grating lobes in the image
mode, multiple scattering, elevation beam, frequency-dependent scattering, speed-of-sound
inhomogeneity.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.ndimage
import scipy.signal
from numpy.typing import NDArray

from drivers.ultrasound.sequences import PlaneWaveSequence, ProbeModel

__all__ = [
    "ELEVATION_SLICE_MM",
    "PUSH_ARTEFACT_DURATION_S",
    "PUSH_ARTEFACT_LEVEL_DB",
    "SCATTERERS_PER_RESOLUTION_CELL",
    "ImagingGeometry",
    "Scatterers",
    "SpeckleField",
    "band_limited_noise",
    "channel_rf",
    "image_domain_iq",
    "push_artefact_amplitude",
    "speckle_field",
    "tissue_scatterers",
]

#: Reverberation after the push lasts this long after the push ends (s).
PUSH_ARTEFACT_DURATION_S = 0.13e-3
#: Clutter level right after the push, relative to the echo power (dB).
PUSH_ARTEFACT_LEVEL_DB = 20.0
#: Speckle decorrelates between elevation slices this thick (about the elevation beam width).
ELEVATION_SLICE_MM = 1.0
#: Default scatterer density: mean scatterers per resolution cell (fully developed speckle).
SCATTERERS_PER_RESOLUTION_CELL = 10.0
#: Depth samples per axial-envelope sigma of the pre-convolved speckle field (at least).
FINE_SAMPLES_PER_SIGMA = 3.0


@dataclass(frozen=True)
class ImagingGeometry:
    """Pixel grid, PSF and the padded scatterer grid of one probe and plane-wave sequence.

    The scatterer grid is the pixel grid extended by ``pad_depth`` rows above and below and
    ``pad_lateral`` columns left and right, so the PSF at the border sees tissue outside the
    field of view.
    """

    probe: ProbeModel
    imaging: PlaneWaveSequence

    @property
    def wavelength_m(self) -> float:
        return self.imaging.sound_speed_m_s / self.probe.center_frequency_hz

    @property
    def dz_m(self) -> float:
        return self.imaging.fov_depth_mm / self.imaging.n_depth * 1e-3

    @property
    def dx_m(self) -> float:
        return self.imaging.fov_lateral_mm / self.imaging.n_lateral * 1e-3

    @property
    def axial_sigma_m(self) -> float:
        """Standard deviation of the Gaussian axial envelope (m): c / (4 pi sigma_f)."""
        fwhm_f = self.probe.fractional_bandwidth * self.probe.center_frequency_hz
        sigma_f = fwhm_f / (2.0 * np.sqrt(2.0 * np.log(2.0)))
        sigma_t = 1.0 / (2.0 * np.pi * sigma_f)
        return self.imaging.sound_speed_m_s * sigma_t / 2.0

    @property
    def pulse_sigma_s(self) -> float:
        """Standard deviation of the pulse-echo envelope in time (s)."""
        return 2.0 * self.axial_sigma_m / self.imaging.sound_speed_m_s

    @property
    def lateral_sigma_m(self) -> float:
        """Standard deviation of the Gaussian lateral beam (m): FWHM lambda * max(F#, 1)."""
        fwhm = self.wavelength_m * max(self.imaging.f_number, 1.0)
        return fwhm / (2.0 * np.sqrt(2.0 * np.log(2.0)))

    @property
    def resolution_cell_m2(self) -> float:
        """Area of a resolution cell (m^2): axial FWHM of the envelope x lateral beam FWHM."""
        fwhm_per_sigma = 2.0 * np.sqrt(2.0 * np.log(2.0))
        return fwhm_per_sigma**2 * self.axial_sigma_m * self.lateral_sigma_m

    def scatterers_per_cell(self, scatterers_per_resolution_cell: float) -> int:
        """Scatterers per pixel cell for a density per resolution cell (at least 1)."""
        if not (np.isfinite(scatterers_per_resolution_cell) and scatterers_per_resolution_cell > 0):
            raise ValueError("scatterers_per_resolution_cell must be finite and > 0, got "
                             f"{scatterers_per_resolution_cell}")
        cells = self.dz_m * self.dx_m / self.resolution_cell_m2
        return max(1, round(scatterers_per_resolution_cell * cells))

    @property
    def axial_taps(self) -> int:
        """Half-length of the axial PSF in pixels (covers 3 sigma plus a sub-pixel offset)."""
        return int(np.ceil(3.0 * self.axial_sigma_m / self.dz_m + 1.0))

    @property
    def pad_depth(self) -> int:
        return self.axial_taps + 1

    @property
    def pad_lateral(self) -> int:
        return int(np.ceil(3.0 * self.lateral_sigma_m / self.dx_m))

    @property
    def padded_depth_m(self) -> NDArray[np.float64]:
        """Row depths of the scatterer grid (m), shape (n_depth + 2 pad_depth,)."""
        i = np.arange(-self.pad_depth, self.imaging.n_depth + self.pad_depth)
        return (self.imaging.depth_start_mm * 1e-3) + (i + 0.5) * self.dz_m

    @property
    def padded_lateral_m(self) -> NDArray[np.float64]:
        """Column positions of the scatterer grid (m), shape (n_lateral + 2 pad_lateral,)."""
        j = np.arange(-self.pad_lateral, self.imaging.n_lateral + self.pad_lateral)
        return -self.imaging.fov_lateral_mm / 2 * 1e-3 + (j + 0.5) * self.dx_m

    def lateral_kernel(self) -> NDArray[np.float32]:
        """Lateral PSF samples, shape (2 pad_lateral + 1,)."""
        j = np.arange(-self.pad_lateral, self.pad_lateral + 1) * self.dx_m
        return np.exp(-0.5 * (j / self.lateral_sigma_m) ** 2).astype(np.float32)

    def axial_kernel(self) -> NDArray[np.float32]:
        """Axial envelope at whole-pixel offsets, shape (2 axial_taps + 1,)."""
        i = np.arange(-self.axial_taps, self.axial_taps + 1) * self.dz_m
        return np.exp(-0.5 * (i / self.axial_sigma_m) ** 2).astype(np.float32)

    def crop(self, padded: NDArray) -> NDArray:
        """The field of view of an array on the padded grid (last two axes)."""
        pz, px = self.pad_depth, self.pad_lateral
        return padded[..., pz : pz + self.imaging.n_depth, px : px + self.imaging.n_lateral]


@dataclass(frozen=True)
class Scatterers:
    """Point scatterers of the tissue cells of the padded grid, ``per_cell`` in each.

    Attributes
    ----------
    amplitude : ndarray, shape (padded depth, padded lateral, per_cell), float32
        Reflectivity (uniform in [-sqrt 3, sqrt 3), unit variance; 0 above the tissue surface).
    offset : ndarray, shape (padded depth, padded lateral, per_cell), float32
        Depth of each scatterer within its cell, in pixels, uniform in [-0.5, 0.5).
    """

    amplitude: NDArray[np.float32]
    offset: NDArray[np.float32]

    @property
    def per_cell(self) -> int:
        """Scatterers per pixel cell."""
        return int(self.amplitude.shape[-1])


def tissue_scatterers(
    geometry: ImagingGeometry,
    *,
    speckle_seed: int,
    lateral_offset_mm: float = 0.0,
    elevation_offset_mm: float = 0.0,
    indentation_mm: float = 0.0,
    scatterers_per_resolution_cell: float = SCATTERERS_PER_RESOLUTION_CELL,
) -> Scatterers:
    """Scatterers of the tissue under the probe, tied to tissue cells (see module notes).

    Parameters
    ----------
    geometry : ImagingGeometry
        Pixel grid and padding.
    speckle_seed : int
        The phantom's speckle seed.
    lateral_offset_mm, elevation_offset_mm : float
        Probe centre in the block frame (mm).
    indentation_mm : float
        Depth of the probe face below the block surface (mm). Cells above the surface or above
        the probe face (negative image depth) have no scatterer.
    scatterers_per_resolution_cell : float
        Mean number of scatterers in one resolution cell (axial x lateral FWHM of the PSF),
        > 0; each pixel cell gets :meth:`ImagingGeometry.scatterers_per_cell` of them.

    Returns
    -------
    Scatterers
    """
    per_cell = geometry.scatterers_per_cell(scatterers_per_resolution_cell)
    dz_mm, dx_mm = geometry.dz_m * 1e3, geometry.dx_m * 1e3
    rows = geometry.padded_depth_m.size
    cols = geometry.padded_lateral_m.size
    # tissue cell of the first padded row / column, counted from the surface / block centre
    row0 = int(np.floor((geometry.padded_depth_m[0] * 1e3 + indentation_mm) / dz_mm))
    col0 = int(np.floor((geometry.padded_lateral_m[0] * 1e3 + lateral_offset_mm) / dx_mm))
    slice_index = int(np.floor(elevation_offset_mm / ELEVATION_SLICE_MM + 0.5))
    tissue_rows = row0 + np.arange(rows)
    n_draw = max(int(tissue_rows.max()) + 1, 0)
    amplitude = np.zeros((rows, cols, per_cell), dtype=np.float32)
    offset = np.zeros((rows, cols, per_cell), dtype=np.float32)
    inside = (tissue_rows >= 0) & (geometry.padded_depth_m >= 0)  # nothing inside the probe
    for j in range(cols):
        key = [int(speckle_seed) & 0xFFFFFFFF, (col0 + j) % 2**32, slice_index % 2**32]
        gen = np.random.default_rng(key)
        # uniform reflectivity (unit variance): its envelope is closer to Rayleigh at a given
        # density than with Gaussian reflectivities (lighter tails)
        column_amp = np.float32(np.sqrt(3.0)) * (
            np.float32(2.0) * gen.random((n_draw, per_cell), dtype=np.float32) - np.float32(1.0))
        column_off = gen.random((n_draw, per_cell), dtype=np.float32) - np.float32(0.5)
        amplitude[inside, j] = column_amp[tissue_rows[inside]]
        offset[inside, j] = column_off[tissue_rows[inside]]
    return Scatterers(amplitude=amplitude, offset=offset)


@dataclass(frozen=True)
class SpeckleField:
    """Echoes of the resting tissue before the lateral PSF, finely sampled in depth.

    ``field[f, j] = sum_s r_s h(z_f - zeta_s) exp(-2j k0 zeta_s)`` over the scatterers of
    column ``j`` (``h`` the axial envelope), at depths ``z_f = start_m + f * step_m``.
    """

    field: NDArray[np.complex64]
    start_m: float
    step_m: float


def speckle_field(scatterers: Scatterers, geometry: ImagingGeometry) -> SpeckleField:
    """The pre-convolved axial speckle of ``scatterers`` (see module notes, "Speckle").

    Each echo ``r exp(-2j k0 zeta)`` is split linearly between the two fine samples around its
    depth ``zeta`` (which keeps its centre), then convolved with the axial envelope; the split
    adds ``step^2 / 6`` to the envelope's variance, which the kernel takes off again.
    """
    dz = geometry.dz_m
    sigma = geometry.axial_sigma_m
    per_pixel = max(1, int(np.ceil(dz / (sigma / FINE_SAMPLES_PER_SIGMA))))
    step = dz / per_pixel
    taps = int(np.ceil(4.0 * sigma / step))
    z_rows = geometry.padded_depth_m
    start = float(z_rows[0] - 0.5 * dz - (taps + 2) * step)
    n_fine = z_rows.size * per_pixel + 2 * taps + 6
    cols = scatterers.amplitude.shape[1]
    k0 = 2.0 * np.pi * geometry.probe.center_frequency_hz / geometry.imaging.sound_speed_m_s
    zeta = z_rows[:, None, None] + scatterers.offset.astype(np.float64) * dz
    weight = scatterers.amplitude * np.exp(-2j * k0 * zeta)
    pos = (zeta - start) / step
    i0 = np.floor(pos).astype(np.int64)
    frac = pos - i0
    flat = (i0 * cols + np.arange(cols)[None, :, None]).ravel()
    deposits = np.zeros(n_fine * cols, dtype=np.complex128)
    for idx, w in ((flat, ((1.0 - frac) * weight).ravel()), (flat + cols, (frac * weight).ravel())):
        deposits += np.bincount(idx, weights=w.real, minlength=deposits.size)
        deposits += 1j * np.bincount(idx, weights=w.imag, minlength=deposits.size)
    deposits = deposits.reshape(n_fine, cols)
    sigma_kernel = np.sqrt(sigma**2 - step**2 / 6.0)
    kernel = np.exp(-0.5 * (np.arange(-taps, taps + 1) * step / sigma_kernel) ** 2)
    re = scipy.ndimage.correlate1d(deposits.real, kernel, axis=0, mode="constant")
    im = scipy.ndimage.correlate1d(deposits.imag, kernel, axis=0, mode="constant")
    return SpeckleField(field=(re + 1j * im).astype(np.complex64), start_m=start, step_m=step)


def _shifted_echoes(
    speckle: SpeckleField, z_rows: NDArray[np.float64], u: NDArray[np.float32], k0: float
) -> NDArray[np.complex64]:
    """Echoes at the padded pixels of tissue moved by ``u`` (rows, cols): a local translation.

    ``exp(-2j k0 u) field(z - u)``, the field read by Keys cubic interpolation (a = -0.5).
    """
    cols = speckle.field.shape[1]
    pos = (z_rows[:, None] - u.astype(np.float64) - speckle.start_m) / speckle.step_m
    i0 = np.floor(pos).astype(np.int64)
    t = (pos - i0).astype(np.float32)
    t2 = t * t
    t3 = t2 * t
    weights = (-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
               -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2)
    base = (i0 - 1) * cols + np.arange(cols)[None, :]
    flat_field = speckle.field.ravel()
    out = weights[0] * flat_field[base]
    for m in (1, 2, 3):
        out += weights[m] * flat_field[base + m * cols]
    phase = np.float32(-2.0 * k0) * u
    rotation = np.empty(u.shape, dtype=np.complex64)
    rotation.real = np.cos(phase)
    rotation.imag = np.sin(phase)
    return out * rotation


def _lateral_filter(field: NDArray[np.complex64], kernel: NDArray[np.float32]) -> NDArray:
    re = scipy.ndimage.correlate1d(field.real, kernel, axis=-1, mode="constant")
    im = scipy.ndimage.correlate1d(field.imag, kernel, axis=-1, mode="constant")
    return (re + 1j * im).astype(np.complex64)


def band_limited_noise(
    geometry: ImagingGeometry, rng: np.random.Generator
) -> NDArray[np.complex64]:
    """One frame of complex Gaussian noise with the axial PSF spectrum, on the padded grid.

    Returns
    -------
    noise : ndarray, shape (padded depth, padded lateral), complex64
        Scaled so that after the lateral PSF filter (as :func:`image_domain_iq` applies it) the
        noise has ``E|n|^2 = 1`` at every pixel of the field of view.
    """
    shape = (geometry.padded_depth_m.size, geometry.padded_lateral_m.size)
    ka = geometry.axial_kernel()
    kl = geometry.lateral_kernel()
    gain = np.sqrt(2.0 * float(np.sum(ka.astype(np.float64) ** 2))
                   * float(np.sum(kl.astype(np.float64) ** 2)))
    white = rng.standard_normal((2, *shape), dtype=np.float32)
    white *= np.float32(1.0 / gain)
    re = scipy.ndimage.correlate1d(white[0], ka, axis=0, mode="constant")
    im = scipy.ndimage.correlate1d(white[1], ka, axis=0, mode="constant")
    return (re + 1j * im).astype(np.complex64)


def push_artefact_amplitude(time_after_push_s: NDArray[np.floating]) -> NDArray[np.float64]:
    """Clutter amplitude relative to the echo RMS at times after the end of the push."""
    t = np.asarray(time_after_push_s, dtype=np.float64)
    level = 10 ** (PUSH_ARTEFACT_LEVEL_DB / 20)
    frac = np.clip(1.0 - t / PUSH_ARTEFACT_DURATION_S, 0.0, 1.0)
    return np.where(t < PUSH_ARTEFACT_DURATION_S, level * frac**2, 0.0)


def image_domain_iq(
    displacement_m: NDArray[np.floating],
    scatterers: Scatterers,
    geometry: ImagingGeometry,
    *,
    snr_db: float | None,
    rng: np.random.Generator,
    time_after_push_s: NDArray[np.floating] | None = None,
    modulation_frequency: float | None = None,
) -> NDArray[np.complex64]:
    """IQ frames of scatterers moved by an axial displacement field (fast image-domain mode).

    Parameters
    ----------
    displacement_m : ndarray, shape (frame, padded depth, padded lateral), float
        Axial displacement (m, positive away from the probe) of each scatterer cell on the padded
        grid of `geometry` (``geometry.padded_depth_m`` x ``geometry.padded_lateral_m``).
    scatterers : Scatterers
        From :func:`tissue_scatterers` on the same geometry.
    geometry : ImagingGeometry
        Probe, sequence and PSF.
    snr_db : float or None
        Image SNR of the added noise (see module notes); None = noise-free.
    rng : numpy.random.Generator
        Noise source.
    time_after_push_s : ndarray, shape (frame,), optional
        Time of each frame after the end of the push (negative = before the push); frames inside
        the push artefact window get clutter. None = no artefact.
    modulation_frequency : float, optional
        Demodulation frequency (Hz); default the probe centre frequency.

    Returns
    -------
    iq : ndarray, shape (frame, depth, lateral), complex64
        Baseband IQ on the field of view.
    """
    u = np.asarray(displacement_m, dtype=np.float32)
    expected = (geometry.padded_depth_m.size, geometry.padded_lateral_m.size)
    if u.ndim != 3 or u.shape[1:] != expected:
        raise ValueError(f"displacement must be (frame, {expected[0]}, {expected[1]}) on the "
                         f"padded grid, got {u.shape}")
    if not np.all(np.isfinite(u)):
        raise ValueError("displacement contains NaN or infinite values")
    c = geometry.imaging.sound_speed_m_s
    f0 = geometry.probe.center_frequency_hz
    fm = f0 if modulation_frequency is None else float(modulation_frequency)
    k0 = 2 * np.pi * f0 / c
    kl = geometry.lateral_kernel()
    n_frames = u.shape[0]
    if time_after_push_s is None:
        artefact = np.zeros(n_frames)
    else:
        t_after = np.asarray(time_after_push_s, dtype=np.float64).ravel()
        if t_after.size != n_frames:
            raise ValueError(f"time_after_push_s has {t_after.size} entries for {n_frames} frames")
        artefact = push_artefact_amplitude(np.where(t_after >= 0, t_after, np.inf))
    demod = None
    if fm != f0:
        z_pad = geometry.padded_depth_m
        demod = np.exp(2j * 2 * np.pi * (f0 - fm) / c * z_pad).astype(np.complex64)[:, None]
    speckle = speckle_field(scatterers, geometry)
    z_rows = geometry.padded_depth_m

    def echoes(k: int) -> NDArray[np.complex64]:
        axial = _shifted_echoes(speckle, z_rows, u[k], k0)
        return axial if demod is None else axial * demod

    first = echoes(0)
    signal_power = float(np.mean(np.abs(geometry.crop(_lateral_filter(first, kl))) ** 2))
    noise_rms = 0.0 if snr_db is None else np.sqrt(signal_power / 10 ** (snr_db / 10))
    iq = np.empty((n_frames, geometry.imaging.n_depth, geometry.imaging.n_lateral),
                  dtype=np.complex64)
    for k in range(n_frames):  # frame by frame keeps the working set in cache
        axial = first if k == 0 else echoes(k)
        if noise_rms > 0:
            axial += np.float32(noise_rms) * band_limited_noise(geometry, rng)
        if artefact[k] > 0:
            level = np.float32(artefact[k] * np.sqrt(signal_power))
            axial += level * band_limited_noise(geometry, rng)
        iq[k] = geometry.crop(_lateral_filter(axial, kl))
    return iq


def channel_rf(
    x_m: NDArray[np.floating],
    z_m: NDArray[np.floating],
    amplitude: NDArray[np.floating],
    *,
    probe: ProbeModel,
    imaging: PlaneWaveSequence,
    n_samples: int,
    t0: float = 0.0,
    pulse_sigma_s: float | None = None,
    max_pairs_per_chunk: int = 2_000_000,
) -> NDArray[np.float64]:
    """Channel RF of a plane-wave transmit from point scatterers (pulse-echo, linear model).

    Parameters
    ----------
    x_m, z_m, amplitude : ndarray, shape (scatterer,)
        Scatterer lateral position, depth (m) and reflectivity.
    probe : ProbeModel
        Element positions, centre frequency, bandwidth, element width (pitch - kerf).
    imaging : PlaneWaveSequence
        Steering angle, speed of sound and channel sampling frequency.
    n_samples : int
        Samples per channel.
    t0 : float
        Time of sample 0 after the transmit event (s).
    pulse_sigma_s : float, optional
        Envelope standard deviation of the two-way pulse; default from the probe bandwidth.
    max_pairs_per_chunk : int
        Memory bound (scatterer x element pairs per chunk).

    Returns
    -------
    rf : ndarray, shape (sample, element), float64
        ``sum_s r_s D_e(s) env(t - tau_es) cos(2 pi f0 (t - tau_es))``, with the envelope a
        Gaussian of ``pulse_sigma_s`` centred on the round-trip time ``tau_es``.

    Notes
    -----
    Each echo is deposited as its complex baseband weight ``r D exp(-2j pi f0 tau)`` on the two
    nearest samples (linear split, which keeps the echo's centre), the deposits are convolved with
    the Gaussian envelope, and the carrier is put back analytically: the carrier phase is exact at
    every sample; the envelope is widened by the split by under 1 %.
    """
    xs = np.asarray(x_m, dtype=np.float64).ravel()
    zs = np.asarray(z_m, dtype=np.float64).ravel()
    amp = np.asarray(amplitude, dtype=np.float64).ravel()
    if not (xs.size == zs.size == amp.size):
        raise ValueError("x_m, z_m and amplitude must have the same length")
    if np.any(~np.isfinite(xs)) or np.any(~np.isfinite(zs)) or np.any(~np.isfinite(amp)):
        raise ValueError("scatterer positions and amplitudes must be finite")
    fs = imaging.channel_sampling_frequency_hz
    c = imaging.sound_speed_m_s
    f0 = probe.center_frequency_hz
    xe = probe.element_positions_m
    ne = xe.size
    width = (probe.pitch_mm - probe.kerf_mm) * 1e-3
    wavelength = c / f0
    angle = np.deg2rad(imaging.angle_deg)
    x_first = xe.min() if angle >= 0 else xe.max()
    sigma_t = (ImagingGeometry(probe, imaging).pulse_sigma_s if pulse_sigma_s is None
               else pulse_sigma_s)
    deposits = np.zeros(n_samples * ne, dtype=np.complex128)
    chunk = max(1, max_pairs_per_chunk // ne)
    for s0 in range(0, xs.size, chunk):
        x = xs[s0 : s0 + chunk, None]
        z = zs[s0 : s0 + chunk, None]
        a = amp[s0 : s0 + chunk, None]
        dx = xe[None, :] - x
        r = np.sqrt(dx**2 + z**2)
        sin_t = np.divide(dx, r, out=np.zeros_like(dx), where=r > 0)
        cos_t = np.divide(z, r, out=np.ones_like(dx), where=r > 0)
        directivity = np.sinc(width * sin_t / wavelength) * cos_t
        tau = (z * np.cos(angle) + (x - x_first) * np.sin(angle) + r) / c
        pos = (tau - t0) * fs
        i0 = np.floor(pos).astype(np.int64)
        w1 = pos - i0
        ok = (i0 >= 0) & (i0 < n_samples - 1) & (z > 0)
        weight = (a * directivity * np.exp(-2j * np.pi * f0 * tau))[ok]
        e_idx = np.broadcast_to(np.arange(ne)[None, :], ok.shape)[ok]
        flat = i0[ok] * ne + e_idx
        w1 = w1[ok]
        for idx, w in ((flat, (1.0 - w1) * weight), (flat + ne, w1 * weight)):
            deposits += np.bincount(idx, weights=w.real, minlength=deposits.size)
            deposits += 1j * np.bincount(idx, weights=w.imag, minlength=deposits.size)
    deposits = deposits.reshape(n_samples, ne)
    half = int(np.ceil(4 * sigma_t * fs))
    env = np.exp(-0.5 * ((np.arange(-half, half + 1) / fs) / sigma_t) ** 2)
    baseband = scipy.signal.fftconvolve(deposits, env[:, None], mode="same", axes=0)
    t = t0 + np.arange(n_samples) / fs
    return np.real(baseband * np.exp(2j * np.pi * f0 * t)[:, None])
