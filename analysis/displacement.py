"""Axial displacement from beamformed IQ: Loupas 2-D autocorrelation and Kasai (phase only).

Both estimators take IQ shaped ``(..., frame, depth, lateral)`` where frame 0 is the pre-push
reference, and return the displacement of frames 1..F in metres, shaped
``(..., frame - 1, depth, lateral)``, in the real dtype of the input.

IQ convention
-------------
The IQ must be *baseband in depth*: demodulated RF (``exp(-2j pi f_demod t)``) whose phase at a
pixel is referred to the two-way time ``2 z / c`` of its depth, as
:func:`analysis.beamforming.das_plane_wave` returns it. Many beamformers (PyMUST's ``dasmtx``,
most scanner IQ exports) keep the carrier phase ``exp(2j pi f_demod 2 z / c)`` instead. On such
IQ Kasai is unaffected (the carrier term is the same in every frame and cancels in the
temporal lag) but Loupas is not: the carrier adds ``f_demod`` to the axial frequency it
measures (aliased at ``sampling_frequency``), so the displacement comes out scaled by
``f_demod / f_mean'`` with no warning; on speckle with ``f_demod = 7.5 MHz`` it was 1.40x at
``sampling_frequency = 9.625 MHz``, 5.2x at 15 MHz and 0.49x at 30 MHz. Convert first::

    from analysis.beamforming import carrier_to_baseband
    iq = carrier_to_baseband(iq, depth_m=depth_m, sound_speed=c, modulation_frequency=f_demod)

Rates: ``sampling_frequency`` here is always the *axial* rate of the beamformed IQ,
``c / (2 dz)`` (UFF ``beamformed_data.sampling_frequency``, the ``swei`` table attribute); the
channel RF rate is ``channel_sampling_frequency`` everywhere (beamforming, the store).

Implementation notes
--------------------
complex64 input runs through fused Numba kernels (:mod:`analysis._loupas_numba`): one pass down
depth per lateral strip and output frame that forms the lag-one products, sums them over the
axial kernel and writes the displacement, vectorised across the lateral columns, with tasks
spread over Numba's threads. They compile at the first call (or load Numba's on-disk cache),
never at import.

complex128 input runs through the same kernels by default (``precision="single"``): it is
converted to complex64 a block of sequences at a time (at most 256 MiB of input per block) and
the result returned as float64, so it costs the conversion plus what complex64 costs
(``bench/loupas.py --dtypes-only``). The estimate is then as precise as float32 arithmetic
(phase error below 1.2e-7 rad, far below the estimator's own variance on echo data).
``precision="double"``, and complex64 when Numba cannot be imported, runs through NumPy
(:mod:`analysis._loupas_numpy`): the arithmetic on real float planes (in-phase and quadrature)
in small lateral blocks whose working buffers stay in the CPU cache, with every ufunc writing
into preallocated buffers; blocks are spread over a few threads (NumPy releases the GIL in its
loops). The complex autocorrelations are smoothed over the axial kernel by shifted adds of
zero-padded buffers (cumulative sums in float64 for kernels longer than 9 samples), then turned
into phases with ``arctan2`` (the full-quadrant angle).

Both paths agree to float32 rounding (see the tests); ``bench/loupas.py`` compares them with a
plain NumPy transcription of the formulas.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
from collections.abc import Iterator
from types import ModuleType
from typing import Literal, overload

import numpy as np
from numpy.typing import NDArray

from analysis._loupas_numpy import EstimatorConfig, Reference, run_numpy

__all__ = ["Precision", "Reference", "default_axial_kernel", "kasai", "loupas"]

Precision = Literal["single", "double"]
#: complex128 input is converted to complex64 in blocks of about this many bytes (input side).
_CONVERT_BLOCK_BYTES = 256 * 2**20

#: Widest lateral strip of one Numba task (wider strips amortise the per-row loop set-up).
_MAX_STRIP = 1024
#: Narrowest strip the Numba path splits down to for more parallel tasks.
_MIN_STRIP = 64


#: The shortest default axial kernel (samples). Loupas' centre-frequency term correlates axially
#: adjacent samples inside the kernel, so a one-sample kernel leaves only the phase of a single
#: speckle sample: on the demo's 0.25 mm pixel grid (1.23 samples per 1.5 wavelengths at
#: 7.5 MHz) that gave a displacement SNR of -1 dB against the simulated truth, three samples
#: (0.75 mm, far below the 5-15 mm shear wavelength) 10.8 dB, five 13.1 dB (7.5 % block, push 3).
MIN_DEFAULT_AXIAL_KERNEL = 3


def default_axial_kernel(*, sampling_frequency: float, modulation_frequency: float) -> int:
    """Default axial kernel: the odd number of samples closest to 1.5 wavelengths, at least
    :data:`MIN_DEFAULT_AXIAL_KERNEL` (3; a coarse pixel grid holds fewer samples than that).

    Parameters
    ----------
    sampling_frequency : float
        Axial IQ sampling rate in Hz (``c / (2 dz)`` on a pixel grid of axial step ``dz``).
    modulation_frequency : float
        Demodulation (centre) frequency in Hz.

    Returns
    -------
    axial_kernel : int
        Odd kernel length in samples, at least 1. One wavelength spans
        ``2 * sampling_frequency / modulation_frequency`` samples.

    Examples
    --------
    >>> default_axial_kernel(sampling_frequency=9.625e6, modulation_frequency=7.5e6)
    3
    >>> default_axial_kernel(sampling_frequency=3.08e6, modulation_frequency=7.5e6)  # 0.25 mm
    3
    """
    _check_positive("sampling_frequency", sampling_frequency)
    _check_positive("modulation_frequency", modulation_frequency)
    samples = 1.5 * 2.0 * sampling_frequency / modulation_frequency
    return max(MIN_DEFAULT_AXIAL_KERNEL, 2 * round((samples - 1.0) / 2.0) + 1)


@overload
def loupas(
    iq: NDArray[np.complexfloating], *, sampling_frequency: float, modulation_frequency: float,
    sound_speed: float, axial_kernel: int | None = ..., ensemble: int = ...,
    reference: Reference = ..., return_quality: Literal[False] = ..., workers: int | None = ...,
    precision: Precision = ...,
) -> NDArray[np.floating]: ...
@overload
def loupas(
    iq: NDArray[np.complexfloating], *, sampling_frequency: float, modulation_frequency: float,
    sound_speed: float, axial_kernel: int | None = ..., ensemble: int = ...,
    reference: Reference = ..., return_quality: Literal[True], workers: int | None = ...,
    precision: Precision = ...,
) -> tuple[NDArray[np.floating], NDArray[np.floating]]: ...
def loupas(
    iq: NDArray[np.complexfloating],
    *,
    sampling_frequency: float,
    modulation_frequency: float,
    sound_speed: float,
    axial_kernel: int | None = None,
    ensemble: int = 2,
    reference: Reference = "fixed",
    return_quality: bool = False,
    workers: int | None = None,
    precision: Precision = "single",
) -> NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Axial displacement by 2-D autocorrelation (Loupas, Powers & Gill 1995).

    Parameters
    ----------
    iq : ndarray, shape (..., frame, depth, lateral), complex64 or complex128
        Beamformed IQ *baseband in depth*, ``iq = lowpass(rf(t) * exp(-2j pi f_demod t))``
        with the pixel phase referred to ``2 z / c`` (module notes, "IQ convention"); IQ that
        keeps the carrier phase must go through
        :func:`analysis.beamforming.carrier_to_baseband` first, or the displacement is scaled
        silently. Frame 0 is the pre-push reference. At least 2 frames and 2 depth samples;
        must be finite.
    sampling_frequency : float
        *Axial* IQ sampling rate in Hz (``c / (2 dz)`` on a pixel grid of axial step ``dz``;
        not the channel RF rate).
    modulation_frequency : float
        Demodulation frequency ``f_demod`` in Hz, added back to the mean-frequency estimate.
    sound_speed : float
        Speed of sound in m/s (required: it scales the result).
    axial_kernel : int, optional
        Odd number of depth samples over which the complex autocorrelations are summed; default
        :func:`default_axial_kernel` (about 1.5 wavelengths). Windows are truncated at the
        first and last depth samples.
    ensemble : int, optional
        Frames per autocorrelation estimate (Loupas' N). ``reference="fixed"`` needs 2 (the
        reference frame and the frame itself). With ``"progressive"``, the lag-one
        autocorrelation of step k sums the ``ensemble - 1`` frame pairs around k (pairs
        ``k - (ensemble - 2) // 2`` to ``k + (ensemble - 1) // 2``, clipped to the sequence), a
        moving average of the per-frame motion before cumulation.
    reference : {"fixed", "progressive"}, optional
        ``"fixed"``: frame k against frame 0. ``"progressive"``: frame k against frame k - 1,
        cumulated over frames, so every output is still relative to frame 0.
    return_quality : bool, optional
        Also return the correlation coefficient map (see Returns).
    workers : int, optional
        Threads to use; default the CPUs available to this process (capped at Numba's thread
        count on the Numba path). 1 runs in the calling thread without a thread pool: pass 1
        inside an outer parallel scheduler.
    precision : {"single", "double"}, optional
        Arithmetic of complex128 input: ``"single"`` (default) the fused float32 kernels, as
        fast as complex64; ``"double"`` float64 arithmetic through NumPy (several times
        slower). complex64 input always uses float32 arithmetic. The output dtype follows `iq`
        either way.

    Returns
    -------
    displacement_m : ndarray, shape (..., frame - 1, depth, lateral), real dtype of `iq`
        Axial displacement of frames 1..F relative to frame 0 in metres; positive = away from
        the probe (deeper). NaN only where the mean-frequency estimate is not positive (possible
        in pure noise when ``sampling_frequency > 2 * modulation_frequency``).
    quality : ndarray, same shape and dtype, only with ``return_quality=True``
        Correlation coefficient ``|R_t| / sqrt(E_ref E_cur)`` in [0, 1] over the axial kernel
        (0 where there is no signal); for ``"progressive"`` it is that of the frame-to-frame pair.

    Raises
    ------
    ValueError
        On a non-complex dtype, fewer than 3 dimensions, fewer than 2 frames or depth samples,
        NaN or inf in `iq`, an even or non-positive kernel, or a bad option.

    Notes
    -----
    With ``x(m, n)`` the IQ at depth sample m of frame n, summed over the axial kernel (m) and
    the frames of the ensemble (n):

    * ``R_t = sum conj(x(m, n)) x(m, n + 1)`` (temporal lag one; for the fixed reference the
      pair is (frame 0, frame k)), ``phi = angle(R_t)``;
    * ``R_a = sum conj(x(m, n)) x(m + 1, n)`` (axial lag one, over both frames),
      ``f_mean = f_demod + fs * angle(R_a) / (2 pi)``;
    * ``u = -c phi / (4 pi f_mean)``.

    Sign convention: with ``exp(-2j pi f t)`` demodulation, a scatterer moving away from the
    probe by ``u`` delays its echo by ``2 u / c`` and turns the IQ phase by
    ``-4 pi f_mean u / c``; hence the minus sign, which makes motion away from the probe
    (towards larger depth) positive. Data demodulated with ``exp(+2j pi f t)`` must be
    conjugated first. The estimate is unambiguous for ``|u| < c / (4 f_mean)`` per pair
    (about 51 um at 7.5 MHz); use ``reference="progressive"`` for larger total motion.

    References
    ----------
    .. [1] T. Loupas, J. T. Powers, R. W. Gill, "An axial velocity estimator for ultrasound
       blood flow imaging, based on a full evaluation of the Doppler equation by means of a
       two-dimensional autocorrelation approach", IEEE TUFFC 42(4), 1995.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frame = rng.standard_normal((64, 8)) + 1j * rng.standard_normal((64, 8))
    >>> # phase turning negative frame after frame: motion away from the probe
    >>> iq = np.stack([frame * np.exp(-0.1j * k) for k in range(3)]).astype(np.complex64)
    >>> u = loupas(iq, sampling_frequency=9.6e6, modulation_frequency=7.5e6, sound_speed=1540.0)
    >>> u.shape, u.dtype, bool(np.all(u[1] > u[0]) and np.all(u[0] > 0))
    ((2, 64, 8), dtype('float32'), True)
    """
    return _estimate(
        iq, method="loupas", sampling_frequency=sampling_frequency,
        modulation_frequency=modulation_frequency, sound_speed=sound_speed,
        axial_kernel=axial_kernel, ensemble=ensemble, reference=reference,
        return_quality=return_quality, workers=workers, precision=precision,
    )


@overload
def kasai(
    iq: NDArray[np.complexfloating], *, sampling_frequency: float, modulation_frequency: float,
    sound_speed: float, axial_kernel: int | None = ..., ensemble: int = ...,
    reference: Reference = ..., return_quality: Literal[False] = ..., workers: int | None = ...,
    precision: Precision = ...,
) -> NDArray[np.floating]: ...
@overload
def kasai(
    iq: NDArray[np.complexfloating], *, sampling_frequency: float, modulation_frequency: float,
    sound_speed: float, axial_kernel: int | None = ..., ensemble: int = ...,
    reference: Reference = ..., return_quality: Literal[True], workers: int | None = ...,
    precision: Precision = ...,
) -> tuple[NDArray[np.floating], NDArray[np.floating]]: ...
def kasai(
    iq: NDArray[np.complexfloating],
    *,
    sampling_frequency: float,
    modulation_frequency: float,
    sound_speed: float,
    axial_kernel: int | None = None,
    ensemble: int = 2,
    reference: Reference = "fixed",
    return_quality: bool = False,
    workers: int | None = None,
    precision: Precision = "single",
) -> NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]]:
    """Axial displacement from the lag-one phase only (Kasai et al. 1985).

    Same inputs, outputs, sign convention and errors as :func:`loupas`, but the mean frequency
    is fixed at `modulation_frequency`: ``u = -c angle(R_t) / (4 pi f_demod)``. This is right
    only when the echo spectrum is centred on the demodulation frequency; attenuation and the
    transducer response usually shift it, which biases Kasai by ``f_mean / f_demod``.
    `sampling_frequency` only sets the default axial kernel. Kasai is insensitive to a carrier
    phase left in the IQ (module notes), Loupas is not.

    References
    ----------
    .. [1] C. Kasai, K. Namekawa, A. Koyano, R. Omoto, "Real-time two-dimensional blood flow
       imaging using an autocorrelation technique", IEEE Trans. Sonics Ultrason. 32(3), 1985.

    Examples
    --------
    >>> iq = np.ones((2, 16, 4), np.complex64)
    >>> iq[1] *= np.exp(-1j * 0.2)
    >>> u = kasai(iq, sampling_frequency=9.6e6, modulation_frequency=7.5e6, sound_speed=1540.0)
    >>> round(float(u[0, 8, 0]) * 1e6, 3)  # 1540 * 0.2 / (4 pi 7.5e6) in micrometres
    3.268
    """
    return _estimate(
        iq, method="kasai", sampling_frequency=sampling_frequency,
        modulation_frequency=modulation_frequency, sound_speed=sound_speed,
        axial_kernel=axial_kernel, ensemble=ensemble, reference=reference,
        return_quality=return_quality, workers=workers, precision=precision,
    )


# -- validation ------------------------------------------------------------------------------


def _check_positive(name: str, value: float) -> None:
    if not (isinstance(value, int | float | np.floating | np.integer) and math.isfinite(value)
            and value > 0):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def _validate_iq(iq: object) -> np.ndarray:
    if not isinstance(iq, np.ndarray):
        raise ValueError(f"iq must be a NumPy array, got {type(iq).__name__}")
    if iq.dtype not in (np.complex64, np.complex128):
        raise ValueError(
            f"iq must be complex64 or complex128 baseband IQ, got {iq.dtype}; build it as "
            "I + 1j * Q (real RF must be demodulated first)"
        )
    if iq.ndim < 3:
        raise ValueError(
            f"iq must be shaped (..., frame, depth, lateral), got {iq.ndim}-d shape {iq.shape}"
        )
    frames, depth, lateral = iq.shape[-3:]
    if frames < 2:
        raise ValueError(f"iq needs at least 2 frames (reference + one), got {frames}")
    if depth < 2:
        raise ValueError(f"iq needs at least 2 depth samples for the axial lag, got {depth}")
    if lateral < 1 or math.prod(iq.shape[:-3]) < 1:
        raise ValueError(f"iq is empty (shape {iq.shape})")
    return np.ascontiguousarray(iq)


# -- the work --------------------------------------------------------------------------------


def _estimate(
    iq: NDArray[np.complexfloating], *, method: Literal["loupas", "kasai"],
    sampling_frequency: float, modulation_frequency: float, sound_speed: float,
    axial_kernel: int | None, ensemble: int, reference: Reference, return_quality: bool,
    workers: int | None, precision: Precision,
) -> NDArray[np.floating] | tuple[NDArray[np.floating], NDArray[np.floating]]:
    iq = _validate_iq(iq)
    if precision not in ("single", "double"):
        raise ValueError(f"precision must be 'single' or 'double', got {precision!r}")
    _check_positive("sampling_frequency", sampling_frequency)
    _check_positive("modulation_frequency", modulation_frequency)
    _check_positive("sound_speed", sound_speed)
    if reference not in ("fixed", "progressive"):
        raise ValueError(f"reference must be 'fixed' or 'progressive', got {reference!r}")
    if isinstance(ensemble, bool) or not isinstance(ensemble, int | np.integer) or ensemble < 2:
        raise ValueError(f"ensemble must be an integer >= 2, got {ensemble!r}")
    if reference == "fixed" and ensemble != 2:
        raise ValueError("reference='fixed' pairs each frame with frame 0, so ensemble must be 2;"
                         " use reference='progressive' for longer ensembles")
    if axial_kernel is None:
        kernel = default_axial_kernel(sampling_frequency=sampling_frequency,
                                      modulation_frequency=modulation_frequency)
    else:
        if (isinstance(axial_kernel, bool) or not isinstance(axial_kernel, int | np.integer)
                or axial_kernel < 1 or axial_kernel % 2 == 0):
            raise ValueError(f"axial_kernel must be a positive odd integer (the window is "
                             f"centred on the pixel), got {axial_kernel!r}")
        kernel = int(axial_kernel)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")

    c, f0, fs = float(sound_speed), float(modulation_frequency), float(sampling_frequency)
    config = EstimatorConfig(
        method=method, kernel=kernel, reference=reference, ensemble=int(ensemble),
        quality=return_quality, phase_to_m=-c / (4.0 * math.pi * f0),
        theta_scale=-2.0 * fs / c, theta_offset=-4.0 * math.pi * f0 / c,
        check_frequency=fs > 2.0 * f0,
    )
    lead = iq.shape[:-3]
    frames, depth, lateral = iq.shape[-3:]
    seqs = iq.reshape(-1, frames, depth, lateral)
    single = iq.dtype == np.complex64 or precision == "single"
    kernels = _numba_kernels() if single else None
    if kernels is not None and iq.dtype == np.complex128:
        out, quality = _run_numba_converted(kernels, seqs, config, workers)
    elif kernels is not None:
        out, quality = _run_numba(kernels, seqs, config, workers)
    else:
        out, quality = run_numpy(seqs, config, workers)
    out = out.reshape(*lead, frames - 1, depth, lateral)
    if quality is not None:
        return out, quality.reshape(out.shape)
    return out


@functools.cache
def _numba_kernels() -> ModuleType | None:
    """The Numba kernel module, or None when Numba cannot be imported (NumPy path then)."""
    try:
        from analysis import _loupas_numba  # lazy: importing Numba costs ~0.5 s and may be absent
    except ImportError:
        return None
    return _loupas_numba


@contextlib.contextmanager
def _numba_threads(n: int) -> Iterator[int]:
    """Set Numba's thread count for this thread to ``min(n, NUMBA_NUM_THREADS)``, then restore."""
    import numba

    n = min(n, numba.config.NUMBA_NUM_THREADS)
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(previous)


def _strip_width(seqs_shape: tuple[int, ...], progressive: bool, threads: int) -> int:
    """Lateral strip width of a Numba task: wide, but enough tasks to keep `threads` busy."""
    n_seq, frames, _, lateral = seqs_shape
    per_strip = n_seq * (1 if progressive else frames - 1)  # tasks per strip
    wanted = math.ceil(4 * threads / per_strip) if threads > 1 else 1
    strips = max(math.ceil(lateral / _MAX_STRIP), min(wanted, lateral // _MIN_STRIP))
    return math.ceil(lateral / max(strips, 1))


def _run_numba_converted(
    kernels: ModuleType, seqs: np.ndarray, config: EstimatorConfig, workers: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """complex128 sequences through the float32 kernels, converted to complex64 a block of
    sequences at a time (bounded extra memory); float64 results.

    Converting first and running the complex64 kernels measured faster than kernels that load
    complex128 and round on load (22.5 vs 28.6 ms against 12.3 ms for complex64 on one 36 x 250
    x 600 sequence, one thread): the vector loops stay those of complex64.
    """
    n_seq, frames, depth, lateral = seqs.shape
    out = np.empty((n_seq, frames - 1, depth, lateral), np.float64)
    quality = np.empty_like(out) if config.quality else None
    step = max(1, _CONVERT_BLOCK_BYTES // max(1, seqs[0].nbytes))
    for start in range(0, n_seq, step):
        block = slice(start, min(start + step, n_seq))
        part, part_q = _run_numba(kernels, seqs[block].astype(np.complex64), config, workers)
        out[block] = part
        if quality is not None and part_q is not None:
            quality[block] = part_q
    return out, quality


def _run_numba(
    kernels: ModuleType, seqs: np.ndarray, config: EstimatorConfig, workers: int,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fused Numba estimate of (sequence, frame, depth, lateral) complex64 IQ."""
    n_seq, frames, depth, lateral = seqs.shape
    out = np.empty((n_seq, frames - 1, depth, lateral), np.float32)
    quality = np.empty_like(out) if config.quality else None
    with contextlib.ExitStack() as stack:
        threads = stack.enter_context(_numba_threads(workers)) if workers > 1 else 1
        guard = kernels.run(
            seqs, out, quality, kernel=config.kernel,
            progressive=config.reference == "progressive", ensemble=config.ensemble,
            loupas=config.method == "loupas", phase_to_m=config.phase_to_m,
            theta_scale=config.theta_scale, theta_offset=config.theta_offset,
            check_frequency=config.check_frequency, threads=threads,
            width=_strip_width(seqs.shape, config.reference == "progressive", threads),
        )
    if not np.isfinite(guard).all():
        for k in range(frames):
            if not np.isfinite(seqs[:, k]).all():
                raise ValueError(f"iq contains NaN or inf (frame {k}); mask or repair it first")
    return out, quality
