"""Synthetic shear-wave displacement for tests and benchmarks (not a physics simulator).

A plane shear-wave pulse leaves a push column at ``push_lateral_px`` and travels laterally at
``c = sqrt(E / (3 rho))`` ([SWEI], incompressible solid, rho = 1000 kg/m^3). The pulse is the time
derivative of a Gaussian (a bipolar particle velocity-like shape) of width ``pulse_width_s``,
decaying as ``1 / sqrt(distance)`` with a depth profile around the push focus, plus white noise.
Good enough for a network to learn speed from spatio-temporal slopes; nothing here models
diffraction, reflections, viscosity or speckle decorrelation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from lab.gelatin import DENSITY_KG_M3, GELATIN_YOUNGS_MODULUS_KPA, shear_wave_speed_m_s


def shear_wave_sequence(
    youngs_modulus_kpa: float,
    *,
    shape: tuple[int, int, int] = (35, 40, 60),
    pixel_m: tuple[float, float] = (1e-4, 1e-4),
    prf_hz: float = 7000.0,
    push_lateral_px: float = -10.0,
    initial_time_s: float = 1.3e-4,
    pulse_width_s: float = 2.5e-4,
    amplitude_m: float = 5e-6,
    noise_m: float = 1e-7,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    """One displacement sequence, shape (frame, depth, lateral), float32, metres.

    Parameters
    ----------
    youngs_modulus_kpa : float
        Young's modulus of the medium (kPa), sets the wave speed.
    shape : (int, int, int)
        (frame, depth, lateral).
    pixel_m : (float, float)
        Pixel spacing (depth, lateral) in metres.
    prf_hz : float
        Frame rate (Hz); frame k is at ``initial_time_s + k / prf_hz`` after the push.
    push_lateral_px : float
        Lateral pixel coordinate of the push column (may lie outside the image).
    initial_time_s, pulse_width_s : float
        First frame time and pulse width (s).
    amplitude_m, noise_m : float
        Peak displacement and white-noise standard deviation (m).
    rng : numpy.random.Generator
        Noise source.
    """
    frames, depth, lateral = shape
    c = shear_wave_speed_m_s(youngs_modulus_kpa, DENSITY_KG_M3)
    t = initial_time_s + np.arange(frames) / prf_hz
    x = (np.arange(lateral) - push_lateral_px) * pixel_m[1]
    z = (np.arange(depth) - depth / 2) * pixel_m[0]
    dist = np.abs(x)
    lag = t[:, None] - dist[None, :] / c - 0.6e-3  # (frame, lateral)
    s = lag / pulse_width_s
    pulse = -s * np.exp(-0.5 * s * s) / np.sqrt(1.0 + dist / 2e-3)
    depth_profile = np.exp(-0.5 * (z / (depth * pixel_m[0])) ** 2)
    u = amplitude_m * pulse[:, None, :] * depth_profile[None, :, None]
    u += rng.normal(0.0, noise_m, u.shape)
    return u.astype(np.float32)


def homogeneous_data_set(
    *,
    gelatin_percents: Sequence[float] = (5.0, 7.5, 10.0, 12.5, 15.0, 17.5),
    positions: int = 8,
    pushes: int = 7,
    shape: tuple[int, int, int] = (35, 40, 60),
    seed: int = 0,
    **wave: float,
) -> dict[str, NDArray]:
    """Sequences for every (concentration, position, push), as arrays of a training set.

    Push ``k`` sits at ``-10 - 8 k`` lateral pixels; amplitudes vary randomly per sequence.
    Returns a dict with ``displacement`` (seq, frame, depth, lateral) float32 and the
    ``youngs_modulus_kpa``, ``gelatin_percent``, ``phantom_index``, ``position_index`` and
    ``push_index`` (seq,) arrays.
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("displacement", "youngs_modulus_kpa",
                                             "gelatin_percent", "phantom_index",
                                             "position_index", "push_index")}
    for p_idx, pct in enumerate(gelatin_percents):
        e = GELATIN_YOUNGS_MODULUS_KPA[float(pct)]
        for pos in range(positions):
            for push in range(pushes):
                amp = float(rng.uniform(2e-6, 8e-6))
                out["displacement"].append(shear_wave_sequence(
                    e, shape=shape, push_lateral_px=-10.0 - 8.0 * push, amplitude_m=amp,
                    rng=rng, **wave))
                out["youngs_modulus_kpa"].append(e)
                out["gelatin_percent"].append(pct)
                out["phantom_index"].append(p_idx)
                out["position_index"].append(pos)
                out["push_index"].append(push)
    return {k: np.asarray(v, dtype=np.float32 if k == "displacement" else None)
            for k, v in out.items()}
