"""Plane-wave delay-and-sum beamforming and IQ demodulation, vectorised.

Conventions (shared with the simulators in ``drivers/ultrasound``):

- Channel data are ``(sample, element)`` or ``(frame, sample, element)``; sample ``n`` was
  recorded at ``t0 + n / sampling_frequency`` after the transmit event.
- Pixel grids are given by pixel centres ``depth_m`` (``z``, positive into the tissue) and
  ``lateral_m`` (``x``, 0 at the array centre); images are ``(depth, lateral)`` or
  ``(frame, depth, lateral)``.
- IQ is down-mixed with ``exp(-2j pi f_mod t)``. Beamformed IQ on the pixel grid is *baseband in
  depth*: the phase at a pixel is referred to the two-way time ``2 z / c``, so a speckle pattern
  sampled at the axial step ``dz`` carries the residual frequency ``f - f_mod`` at the sample rate
  ``c / (2 dz)`` (the ``sampling_frequency`` stored with the IQ). A scatterer that moves by ``u``
  away from the probe turns its IQ phase by ``-4 pi f u / c``.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import scipy.sparse
from numpy.typing import NDArray


def rf_to_iq(
    rf: NDArray[np.floating] | NDArray[np.integer],
    *,
    sampling_frequency: float,
    modulation_frequency: float,
    t0: float,
    cutoff_frequency: float | None = None,
    axis: int = -2,
    filter_order: int = 5,
) -> NDArray[np.complexfloating]:
    """Demodulate real RF to baseband IQ: down-mix, zero-phase low-pass, times 2.

    Parameters
    ----------
    rf : ndarray, real (float or int16), e.g. shape (sample, element) or (frame, sample, element)
        RF signals; fast time along `axis`.
    sampling_frequency : float
        Sampling rate of `rf` along `axis` in Hz (for channel RF: the channel rate, stored as
        ``channel_sampling_frequency``).
    modulation_frequency : float
        Down-mixing frequency in Hz (usually the transducer centre frequency).
    t0 : float
        Time of the first sample after the transmit event in s (required: the mixing phase is
        referred to the transmit event, which :func:`das_plane_wave` relies on).
    cutoff_frequency : float, optional
        Low-pass cut-off in Hz; default ``min(modulation_frequency, sampling_frequency / 4)``.
    axis : int
        Fast-time axis of `rf`; default -2 (the ``sample`` axis of ``(..., sample, element)``).
    filter_order : int
        Order of the Butterworth low-pass applied forwards and backwards (zero phase).

    Returns
    -------
    iq : ndarray, same shape as `rf`, complex64 for float32/int input, complex128 for float64
        ``2 * lowpass(rf * exp(-2j pi f_mod (t0 + n / fs)))``; the envelope ``|iq|`` equals the RF
        amplitude.

    Notes
    -----
    The same down-mixing and filter as MUST's ``rf2iq`` (Garcia), whose default cut-off is
    ``min(f_mod, fs / 4)`` expressed as ``Wn = min(2 f_mod / fs, 0.5)``.

    Examples
    --------
    >>> fs, fc = 40e6, 7.5e6
    >>> t = np.arange(400) / fs
    >>> rf = np.cos(2 * np.pi * fc * t) * np.exp(-((t - 5e-6) / 1e-6) ** 2)
    >>> iq = rf_to_iq(rf[:, None], sampling_frequency=fs, modulation_frequency=fc, t0=0.0)
    >>> round(float(np.abs(iq[200, 0])), 2)
    1.0
    """
    rf = np.asarray(rf)
    if not np.issubdtype(rf.dtype, np.floating) and not np.issubdtype(rf.dtype, np.integer):
        raise TypeError(f"rf must be real (float or integer), got dtype {rf.dtype}")
    if sampling_frequency <= 0 or modulation_frequency <= 0:
        raise ValueError("sampling_frequency and modulation_frequency must be > 0 Hz")
    if cutoff_frequency is None:
        cutoff_frequency = min(modulation_frequency, sampling_frequency / 4)
    wn = 2.0 * cutoff_frequency / sampling_frequency
    if not 0.0 < wn < 1.0:
        raise ValueError(
            f"cutoff {cutoff_frequency} Hz must lie between 0 and the Nyquist frequency "
            f"{sampling_frequency / 2} Hz"
        )
    work = np.float64 if rf.dtype == np.float64 else np.float32
    out = np.complex128 if work == np.float64 else np.complex64
    n = rf.shape[axis]
    t = t0 + np.arange(n) / sampling_frequency
    shape = [1] * rf.ndim
    shape[axis] = n
    mixed = rf.astype(work, copy=False) * np.exp(-2j * np.pi * modulation_frequency * t).reshape(
        shape
    )
    b, a = scipy.signal.butter(filter_order, wn)
    iq = scipy.signal.filtfilt(b, a, mixed, axis=axis) * 2.0
    return iq.astype(out, copy=False)


def das_matrix(
    n_samples: int,
    *,
    element_positions_m: NDArray[np.floating],
    depth_m: NDArray[np.floating],
    lateral_m: NDArray[np.floating],
    channel_sampling_frequency: float,
    sound_speed: float,
    t0: float,
    angle_rad: float = 0.0,
    f_number: float = 1.5,
    modulation_frequency: float | None = None,
    max_entries_per_chunk: int = 4_000_000,
) -> scipy.sparse.csr_matrix:
    """Sparse delay-and-sum operator for one plane-wave transmit.

    Parameters
    ----------
    n_samples : int
        Fast-time samples per channel.
    element_positions_m : ndarray, shape (element,)
        Lateral element centres in m (elements at depth 0).
    depth_m, lateral_m : ndarray, shape (depth,), (lateral,)
        Pixel centres in m.
    channel_sampling_frequency : float
        Sampling rate of the channel data in Hz (the store's ``channel_sampling_frequency``;
        not the axial rate ``sampling_frequency`` of the beamformed IQ).
    sound_speed : float
        Speed of sound in m/s (required, never assumed).
    t0 : float
        Time of sample 0 after the transmit event in s (required; the store's ``channel_t0``).
    angle_rad : float
        Steering angle of the plane wave (positive: towards +x). Transmit time to ``(x, z)`` is
        ``(z cos a + (x - x_first) sin a) / c`` with ``x_first`` the first element to fire.
    f_number : float
        Receive f-number: element ``e`` contributes to a pixel when ``|x - x_e| <= z / (2 F)``;
        0 = full aperture. Every pixel keeps at least the nearest element.
    modulation_frequency : float, optional
        Given for IQ data (complex weights that restore the carrier phase, see module notes);
        None for real RF.
    max_entries_per_chunk : int
        Memory bound while building (pixel x element pairs per chunk).

    Returns
    -------
    matrix : scipy.sparse.csr_matrix, shape (depth * lateral, n_samples * element)
        ``image.ravel() = matrix @ channel.ravel()`` with ``channel`` shaped (sample, element) and
        the image (depth, lateral), both C order. Linear interpolation in fast time; samples
        outside the record contribute nothing. Plain sum over the aperture (no normalisation).
    """
    xe, z, x = (_axis_vector(v, name) for v, name in (
        (element_positions_m, "element_positions_m"), (depth_m, "depth_m"),
        (lateral_m, "lateral_m")))
    if n_samples < 2:
        raise ValueError(f"need at least 2 samples per channel, got {n_samples}")
    if channel_sampling_frequency <= 0 or sound_speed <= 0:
        raise ValueError("channel_sampling_frequency and sound_speed must be > 0")
    if not np.isfinite(t0):
        raise ValueError(f"t0 must be finite, got {t0}")
    if f_number < 0:
        raise ValueError(f"f_number must be >= 0, got {f_number}")
    ne, nz, nx = xe.size, z.size, x.size
    x_first = xe.min() if angle_rad >= 0 else xe.max()
    is_iq = modulation_frequency is not None
    rows_per_chunk = max(1, max_entries_per_chunk // (nx * ne))
    rows_i, cols_i, vals_i = [], [], []
    for r0 in range(0, nz, rows_per_chunk):
        zc = z[r0 : r0 + rows_per_chunk][:, None, None]  # (z, 1, 1)
        xc = x[None, :, None]  # (1, x, 1)
        dx = xc - xe[None, None, :]  # (1, x, e)
        t_tx = (zc * np.cos(angle_rad) + (xc - x_first) * np.sin(angle_rad)) / sound_speed
        tau = t_tx + np.sqrt(dx**2 + zc**2) / sound_speed  # (z, x, e)
        idx = (tau - t0) * channel_sampling_frequency
        keep = (idx >= 0) & (idx <= n_samples - 2)
        if f_number > 0:
            in_aperture = np.abs(dx) <= zc / (2.0 * f_number)
            nearest = np.abs(dx) == np.abs(dx).min(axis=-1, keepdims=True)
            keep &= in_aperture | nearest
        zi, xi, ei = np.nonzero(keep)
        frac = idx[zi, xi, ei]
        i0 = np.floor(frac).astype(np.int64)
        w1 = frac - i0
        pix = (zi + r0) * nx + xi
        if is_iq:
            t_ref = 2.0 * z[zi + r0] / sound_speed  # baseband in depth
            phase = np.exp(2j * np.pi * modulation_frequency * (tau[zi, xi, ei] - t_ref))
        else:
            phase = 1.0
        rows_i.append(np.concatenate([pix, pix]))
        cols_i.append(np.concatenate([i0 * ne + ei, (i0 + 1) * ne + ei]))
        vals_i.append(np.concatenate([(1.0 - w1) * phase, w1 * phase]))
    dtype = np.complex128 if is_iq else np.float64
    return scipy.sparse.csr_matrix(
        (np.concatenate(vals_i).astype(dtype), (np.concatenate(rows_i), np.concatenate(cols_i))),
        shape=(nz * nx, n_samples * ne),
    )


def das_plane_wave(
    data: NDArray[np.floating] | NDArray[np.complexfloating] | NDArray[np.integer],
    *,
    element_positions_m: NDArray[np.floating],
    depth_m: NDArray[np.floating],
    lateral_m: NDArray[np.floating],
    channel_sampling_frequency: float,
    sound_speed: float,
    t0: float,
    angle_rad: float = 0.0,
    f_number: float = 1.5,
    modulation_frequency: float | None = None,
) -> NDArray[np.floating] | NDArray[np.complexfloating]:
    """Delay-and-sum beamform plane-wave channel data to a pixel grid.

    Parameters
    ----------
    data : ndarray, shape (sample, element) or (frame, sample, element)
        Real RF (float or int16) or complex baseband IQ (from :func:`rf_to_iq`).
    element_positions_m : ndarray, shape (element,)
        Lateral element centres in m.
    depth_m, lateral_m : ndarray, shape (depth,), (lateral,)
        Pixel centres in m.
    channel_sampling_frequency : float
        Sampling rate of the channel data in Hz (the store's ``channel_sampling_frequency``;
        not the axial rate ``sampling_frequency`` of the beamformed IQ).
    sound_speed : float
        Speed of sound in m/s (required, never assumed).
    t0 : float
        Time of sample 0 after the transmit event in s (required; the store's ``channel_t0``).
    angle_rad : float
        Plane-wave steering angle in rad (see :func:`das_matrix`).
    f_number : float
        Receive f-number (0 = full aperture).
    modulation_frequency : float, optional
        Required for IQ input: the down-mixing frequency in Hz.

    Returns
    -------
    image : ndarray, shape (depth, lateral) or (frame, depth, lateral)
        Beamformed RF (float32, real input) or baseband IQ (complex64, complex input); see the
        module notes for the phase convention.

    Examples
    --------
    >>> xe = (np.arange(16) - 7.5) * 0.3e-3
    >>> rf = np.zeros((200, 16), dtype=np.float32)
    >>> img = das_plane_wave(rf, element_positions_m=xe, depth_m=np.array([2e-3]),
    ...                      lateral_m=np.array([0.0]), channel_sampling_frequency=40e6,
    ...                      sound_speed=1540.0, t0=0.0)
    >>> img.shape
    (1, 1)
    """
    arr = np.asarray(data)
    if arr.ndim not in (2, 3):
        raise ValueError(
            f"data must be (sample, element) or (frame, sample, element), got shape {arr.shape}"
        )
    is_iq = np.iscomplexobj(arr)
    if is_iq and modulation_frequency is None:
        raise ValueError("IQ input needs modulation_frequency (the down-mixing frequency in Hz)")
    if not is_iq and modulation_frequency is not None:
        raise ValueError("modulation_frequency is only meaningful for complex IQ input")
    if np.any(~np.isfinite(arr)):
        raise ValueError("channel data contain NaN or infinite values")
    ne = _axis_vector(element_positions_m, "element_positions_m").size
    for grid, grid_name in ((depth_m, "depth_m"), (lateral_m, "lateral_m")):
        _axis_vector(grid, grid_name)  # refuse meshgrids before any work
    if arr.shape[-1] != ne:
        raise ValueError(
            f"data have {arr.shape[-1]} channels but {ne} element positions were given"
        )
    frames = arr[None] if arr.ndim == 2 else arr
    nf, ns = frames.shape[0], frames.shape[1]
    matrix = das_matrix(
        ns,
        element_positions_m=element_positions_m,
        depth_m=depth_m,
        lateral_m=lateral_m,
        channel_sampling_frequency=channel_sampling_frequency,
        sound_speed=sound_speed,
        t0=t0,
        angle_rad=angle_rad,
        f_number=f_number,
        modulation_frequency=modulation_frequency,
    )
    work = np.complex64 if is_iq else np.float32
    matrix = matrix.astype(work)
    flat = frames.reshape(nf, ns * ne).astype(work, copy=False).T  # (sample*element, frame)
    image = np.asarray(matrix @ flat).T.reshape(nf, np.size(depth_m), np.size(lateral_m))
    image = image.astype(work, copy=False)
    return image[0] if arr.ndim == 2 else image



def _axis_vector(values: NDArray[np.floating], name: str) -> NDArray[np.float64]:
    """A 1-D, non-empty, finite coordinate vector; refuses meshgrids and scalars.

    A 2-D meshgrid flattened silently would be read as ``depth * lateral`` pixels per axis (and
    beamform for hours): pass the 1-D axes (``depth_m = zz[:, 0]``, ``lateral_m = xx[0]``).
    """
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"{name} must be a 1-D vector of coordinates in m, got shape {arr.shape}; for a "
            "meshgrid pass its axes (e.g. depth_m=zz[:, 0], lateral_m=xx[0, :])")
    if arr.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def carrier_to_baseband(
    iq: NDArray[np.complexfloating],
    *,
    depth_m: NDArray[np.floating],
    sound_speed: float,
    modulation_frequency: float,
    depth_axis: int = -2,
) -> NDArray[np.complexfloating]:
    """Convert beamformed IQ with the carrier phase kept to IQ baseband in depth.

    Many beamformers (PyMUST's ``dasmtx``, USTB with ``demodulation`` off, Verasonics' IQ
    reconstructions) return pixel IQ whose phase still turns with the two-way carrier
    ``exp(2j pi f_mod 2 z / c)``. :func:`analysis.displacement.loupas` and ``kasai`` need IQ
    *baseband in depth* (see the module notes); this removes the carrier term.

    Parameters
    ----------
    iq : ndarray, complex, shape (..., depth, lateral) by default
        Beamformed IQ with the carrier phase.
    depth_m : ndarray, shape (depth,)
        Pixel depths in m (1-D).
    sound_speed : float
        Speed of sound in m/s used by the beamformer.
    modulation_frequency : float
        Demodulation frequency in Hz.
    depth_axis : int
        Axis of `iq` that runs along `depth_m`.

    Returns
    -------
    iq_baseband : ndarray, same shape and dtype as `iq`
        ``iq * exp(-2j pi f_mod 2 z / c)``.

    Examples
    --------
    >>> z = np.arange(4) * 0.1e-3
    >>> carrier = np.exp(2j * np.pi * 7.5e6 * 2 * z / 1540.0)[:, None] * np.ones((1, 3))
    >>> bb = carrier_to_baseband(carrier.astype(np.complex64), depth_m=z, sound_speed=1540.0,
    ...                          modulation_frequency=7.5e6)
    >>> bool(np.allclose(bb, 1.0, atol=1e-5))
    True
    """
    arr = np.asarray(iq)
    if not np.iscomplexobj(arr):
        raise TypeError(f"iq must be complex, got dtype {arr.dtype}")
    z = _axis_vector(depth_m, "depth_m")
    if arr.ndim < 1 or arr.shape[depth_axis] != z.size:
        raise ValueError(f"iq has {arr.shape[depth_axis] if arr.ndim else 0} samples along axis "
                         f"{depth_axis} but depth_m has {z.size}")
    if sound_speed <= 0 or modulation_frequency <= 0:
        raise ValueError("sound_speed and modulation_frequency must be > 0")
    shape = [1] * arr.ndim
    shape[depth_axis] = z.size
    phase = np.exp(-2j * np.pi * modulation_frequency * 2.0 * z / sound_speed).reshape(shape)
    return (arr * phase).astype(arr.dtype, copy=False)
