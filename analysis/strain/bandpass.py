"""Zero-phase band-pass filtering of RF frames around the transducer's centre frequency.

Real scanners band-limit their RF to the transducer band (analogue anti-aliasing and digital
band-pass filters in the receive chain), so out-of-band electronic noise never reaches the
displacement estimator. The simulated noise of [GLUENet] (uniform, white over 0 to fs / 2) is
not band-limited; :func:`bandpass_rf` removes the part of it outside the echo band, as a scanner
would. The filter is a Butterworth band-pass applied forward and backward along depth
(:func:`scipy.signal.sosfiltfilt`), so it has zero phase: echoes are not delayed, which matters
for time-delay estimation.

With the defaults (pass band ``0.5 fc .. 1.5 fc``, i.e. 3.3-10 MHz at fc = 6.67 MHz, 40 MHz
sampling) white noise loses 2/3 of its power (about 4.8 dB) while the echo (6.67 MHz, 60 %
pulse-echo bandwidth) is kept nearly whole.

References
----------
.. [GLUENet] Kibria & Rivaz, "GLUENet: ultrasound elastography using convolutional neural
   network", 2018 (``papers/gluenet-cnn-glue-strain-elastography.txt``).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.signal import butter, sosfiltfilt

__all__ = ["bandpass_edges_hz", "bandpass_rf"]


def bandpass_edges_hz(
    *, sampling_frequency: float, center_frequency: float, fractional_bandwidth: float = 1.0
) -> tuple[float, float]:
    """Pass-band edges ``fc (1 -+ fractional_bandwidth / 2)`` in Hz, validated.

    Raises
    ------
    ValueError
        Non-finite or non-positive frequencies, a fractional bandwidth outside (0, 2), or a band
        whose top reaches the Nyquist frequency ``sampling_frequency / 2``.
    """
    for name, value in (("sampling_frequency", sampling_frequency),
                        ("center_frequency", center_frequency)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive frequency in Hz, got {value}")
    if not (np.isfinite(fractional_bandwidth) and 0 < fractional_bandwidth < 2):
        raise ValueError(f"fractional_bandwidth must be in (0, 2), got {fractional_bandwidth}")
    low = center_frequency * (1 - fractional_bandwidth / 2)
    high = center_frequency * (1 + fractional_bandwidth / 2)
    nyquist = sampling_frequency / 2
    if high >= nyquist:
        raise ValueError(
            f"pass band {low:.4g}-{high:.4g} Hz reaches the Nyquist frequency {nyquist:.4g} Hz "
            f"(sampling_frequency {sampling_frequency:.4g} Hz, center_frequency "
            f"{center_frequency:.4g} Hz); lower the bandwidth or check the frequencies"
        )
    return float(low), float(high)


def bandpass_rf(
    rf: ArrayLike,
    *,
    sampling_frequency: float,
    center_frequency: float,
    fractional_bandwidth: float = 1.0,
    order: int = 4,
) -> NDArray[np.floating]:
    """Zero-phase Butterworth band-pass of RF lines along depth (axis 0).

    Parameters
    ----------
    rf : array_like, shape (depth_sample, ...) , real
        RF data, depth first (e.g. ``(depth_sample, line)``); at least ``3 * (2 order + 1)``
        samples deep (the forward-backward filter pads the ends).
    sampling_frequency : float
        RF sampling rate (Hz).
    center_frequency : float
        Transducer centre frequency (Hz).
    fractional_bandwidth : float, optional
        Pass-band width / centre frequency, in (0, 2); 1.0 (default) passes ``0.5 fc .. 1.5 fc``.
    order : int, optional
        Butterworth order (>= 1) of the single pass; forward-backward filtering squares the
        magnitude response.

    Returns
    -------
    ndarray, same shape as ``rf``
        Filtered RF; float32 for float32 input, float64 otherwise.

    Raises
    ------
    ValueError
        Bad frequencies (see :func:`bandpass_edges_hz`), a non-real or non-finite ``rf``, an
        order < 1, or too few samples along depth.

    Examples
    --------
    >>> t = np.arange(2000) / 40e6
    >>> tone = np.sin(2 * np.pi * 6.67e6 * t) + np.sin(2 * np.pi * 17e6 * t)
    >>> out = bandpass_rf(tone, sampling_frequency=40e6, center_frequency=6.67e6)
    >>> bool(np.allclose(out[200:-200], np.sin(2 * np.pi * 6.67e6 * t)[200:-200], atol=0.02))
    True
    """
    x = np.asarray(rf)
    if x.dtype.kind not in "iuf":
        raise ValueError(f"rf must be real (int or float), got dtype {x.dtype}")
    if x.ndim < 1:
        raise ValueError("rf must have a depth axis (axis 0)")
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    low, high = bandpass_edges_hz(sampling_frequency=sampling_frequency,
                                  center_frequency=center_frequency,
                                  fractional_bandwidth=fractional_bandwidth)
    min_samples = 3 * (2 * order + 1) + 1
    if x.shape[0] < min_samples:
        raise ValueError(f"rf has {x.shape[0]} samples along depth; the order-{order} "
                         f"forward-backward filter needs at least {min_samples}")
    if not np.all(np.isfinite(x)):
        raise ValueError("rf contains NaN/inf samples; clean the RF before filtering")
    sos = butter(order, [low, high], btype="bandpass", fs=sampling_frequency, output="sos")
    out = sosfiltfilt(sos, x.astype(np.float64), axis=0)
    return out.astype(np.float32 if x.dtype == np.float32 else np.float64)
