"""Coarse integer displacement by dynamic programming (Rivaz et al. 2008).

For every A-line ``j`` the cost over depth ``i`` and integer displacement ``d = (d_a, d_l)``
(axial samples, lateral lines) is

    C_j(d, i) = E_j(d, i) + min_{delta in d + {-1, 0, 1}^2}
                [ (C_j(delta, i - 1) + C_{j-1}(delta, i)) / 2
                  + w ((d_a - delta_a)^2 + (d_l - delta_l)^2) ],

with the amplitude dissimilarity ``E_j(d, i) = (I1(i, j) - I2(i + d_a, j + d_l))^2`` of the
frames normalised by ``max |I1|``. The seed line has no previous line and uses
``C_j(delta, i - 1)`` alone; lines are processed outward from it, each coupled to its processed
neighbour nearer the seed. The optimum is back-tracked from the cheapest end state.

Choices of ours (the paper leaves them open):

* ``block`` > 1 runs the recursion on blocks of ``block`` samples, ``E`` being the summed
  dissimilarity over the block (``block = 1`` is the per-sample recursion; summing keeps the
  balance between data and continuity of the per-sample form). The displacement may
  change by one sample per block, so strains up to ``1 / block`` are representable; 8 at 40 MHz
  handles the 0.5-7 % of [GLUENet] and costs 8x less.
* ``line_step`` > 1 runs the DP on every ``line_step``-th line (plus the seed and the edge lines)
  and interpolates linearly across lines.
* The integer result is a staircase; :func:`steps_to_piecewise_linear` turns it into a
  piecewise-linear field through the centres of the constant runs, as GLUE expects.

Sign convention: ``I1(i, j)`` matches ``I2(i + axial, j + lateral)``; compression from the probe
gives negative axial displacement that grows with depth.

References
----------
H. Rivaz, E. Boctor, P. Foroughi, R. Zellars, G. Fichtinger, G. Hager, "Ultrasound elastography:
a dynamic programming approach", IEEE Trans. Med. Imaging 27(10), 2008.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import ArrayLike, NDArray

from analysis.strain._checks import check_frames

__all__ = ["DpResult", "dp_displacement", "steps_to_piecewise_linear"]

#: Dissimilarity given to states that look outside the post frame (normalised RF, so the largest
#: honest value is 4).
_OUTSIDE_COST = 2.0


@dataclass(frozen=True)
class DpResult:
    """Dynamic-programming displacement.

    Attributes
    ----------
    axial, lateral : ndarray, shape (depth_sample, line), float32
        Piecewise-linear displacement in samples and lines (input for GLUE).
    axial_integer, lateral_integer : ndarray, shape (depth_sample, line), int16
        The integer staircase of the processed lines (other lines: nearest processed line).
    lines : ndarray of int
        Lines on which the DP ran.
    """

    axial: NDArray[np.float32]
    lateral: NDArray[np.float32]
    axial_integer: NDArray[np.int16]
    lateral_integer: NDArray[np.int16]
    lines: NDArray[np.int64]


def _line_order(n_lines: int, seed: int, step: int) -> list[tuple[int, int | None]]:
    """(line, previous processed line) pairs, outward from the seed."""
    right = list(range(seed + step, n_lines, step))
    if seed != n_lines - 1 and (not right or right[-1] != n_lines - 1):
        right.append(n_lines - 1)
    left = list(range(seed - step, -1, -step))
    if seed != 0 and (not left or left[-1] != 0):
        left.append(0)
    order: list[tuple[int, int | None]] = [(seed, None)]
    prev = seed
    for j in right:
        order.append((j, prev))
        prev = j
    prev = seed
    for j in left:
        order.append((j, prev))
        prev = j
    return order


def _dissimilarity(
    i1: NDArray[np.float64], i2: NDArray[np.float64], j: int, da: NDArray[np.int64],
    dl: NDArray[np.int64], block: int, n_blocks: int,
) -> NDArray[np.float64]:
    """Summed squared difference per block for every state: shape (n_blocks, n_da, n_dl)."""
    n, n_lines = i1.shape
    lo, hi = int(da[0]), int(da[-1])
    pad_lo, pad_hi = max(0, -lo), max(0, hi)
    used = n_blocks * block
    col1 = i1[:used, j]
    out = np.full((n_blocks, da.size, dl.size), _OUTSIDE_COST * block)
    valid_rows = np.arange(used)[None, :] + da[:, None]
    inside = (valid_rows >= 0) & (valid_rows < n)
    for k, d in enumerate(dl):
        jj = j + int(d)
        if not 0 <= jj < n_lines:
            continue
        col2 = np.pad(i2[:, jj], (pad_lo, pad_hi))
        win = sliding_window_view(col2, used)[lo + pad_lo: lo + pad_lo + da.size]
        sq = np.where(inside, (col1[None, :] - win) ** 2, _OUTSIDE_COST)
        out[:, :, k] = sq.reshape(da.size, n_blocks, block).sum(axis=2).T
    return out


_OFFSETS = [(oa, ol) for oa in (-1, 0, 1) for ol in (-1, 0, 1)]


def _dp_line(
    energy: NDArray[np.float64], prev_cost: NDArray[np.float64] | None, weight: float
) -> tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.int64]]:
    """Run the recursion on one line; returns (cost, axial index, lateral index) per block."""
    n_blocks, n_da, n_dl = energy.shape
    cost = np.empty_like(energy)
    arg = np.zeros((n_blocks, n_da, n_dl), dtype=np.int8)
    penalty = np.array([weight * (oa * oa + ol * ol) for oa, ol in _OFFSETS])
    pad = np.full((n_da + 2, n_dl + 2), np.inf)
    cand = np.empty((len(_OFFSETS), n_da, n_dl))
    for i in range(n_blocks):
        if i == 0 and prev_cost is None:
            cost[0] = energy[0]
            continue
        if i == 0:
            base = 0.5 * prev_cost[0]  # type: ignore[index]
        elif prev_cost is None:
            base = cost[i - 1]
        else:
            base = 0.5 * (cost[i - 1] + prev_cost[i])
        pad[1:-1, 1:-1] = base
        for k, (oa, ol) in enumerate(_OFFSETS):
            cand[k] = pad[1 + oa: 1 + oa + n_da, 1 + ol: 1 + ol + n_dl]
        cand += penalty[:, None, None]
        best = np.argmin(cand, axis=0)
        arg[i] = best
        row = energy[i] + np.take_along_axis(cand, best[None], axis=0)[0]
        cost[i] = row - row.min()  # a constant per depth changes neither min nor argmin
    # Back-track from the cheapest end state.
    ia = np.empty(n_blocks, dtype=np.int64)
    il = np.empty(n_blocks, dtype=np.int64)
    a, ll = np.unravel_index(int(np.argmin(cost[-1])), (n_da, n_dl))
    for i in range(n_blocks - 1, -1, -1):
        ia[i], il[i] = a, ll
        if i > 0:
            oa, ol = _OFFSETS[int(arg[i, a, ll])]
            a, ll = a + oa, ll + ol
    return cost, ia, il


def steps_to_piecewise_linear(steps: ArrayLike) -> NDArray[np.float64]:
    """Piecewise-linear curve through the centres of the constant runs of a staircase.

    Parameters
    ----------
    steps : array_like, shape (n,)
        Integer-valued staircase (e.g. DP displacement along depth).

    Returns
    -------
    ndarray, shape (n,), float64
        Linear interpolation between the run centres; constant beyond the first and last centre.

    Examples
    --------
    >>> steps_to_piecewise_linear([0, 0, 1, 1]).tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    s = np.asarray(steps, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"steps must be a non-empty 1-D array, got shape {s.shape}")
    change = np.flatnonzero(np.diff(s) != 0) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [s.size]])
    centres = 0.5 * (starts + stops - 1)
    return np.interp(np.arange(s.size), centres, s[starts])


def dp_displacement(
    rf_pre: ArrayLike,
    rf_post: ArrayLike,
    *,
    axial_range: tuple[int, int],
    lateral_range: tuple[int, int] = (-2, 2),
    weight: float = 0.15,
    seed_line: int | None = None,
    block: int = 8,
    line_step: int = 4,
) -> DpResult:
    """Integer axial and lateral displacement by 2-D dynamic programming (Rivaz et al. 2008).

    Parameters
    ----------
    rf_pre, rf_post : array_like, shape (depth_sample, line), real
        Pre- and post-compression RF frames of the same shape.
    axial_range : (int, int)
        Smallest and largest axial displacement searched (samples), e.g. ``(-150, 5)`` for up to
        7 % compression over 2000 samples.
    lateral_range : (int, int), optional
        Smallest and largest lateral displacement searched (lines).
    weight : float, optional
        Continuity weight ``w`` (>= 0) on the squared change of displacement between
        neighbouring depths; values around 0.15-0.2 are used with normalised RF.
    seed_line : int, optional
        Line where the DP starts (default: the middle line).
    block : int, optional
        Samples per DP depth step (1 = per sample; see the module notes).
    line_step : int, optional
        Run the DP on every ``line_step``-th line and interpolate in between (1 = every line).

    Returns
    -------
    DpResult
        Piecewise-linear and integer displacement, shape (depth_sample, line).

    Raises
    ------
    ValueError
        Bad frames (shapes, NaN), empty or inverted ranges, a negative weight, a seed line outside
        the frame, or a block / line step < 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> pre = rng.standard_normal((64, 4))
    >>> post = np.roll(pre, 2, axis=0)
    >>> res = dp_displacement(pre, post, axial_range=(-4, 4), lateral_range=(0, 0), block=1,
    ...                       line_step=1)
    >>> int(np.median(res.axial_integer))
    2
    """
    i1, i2 = check_frames(rf_pre, rf_post)
    n, n_lines = i1.shape
    for name, rng in (("axial_range", axial_range), ("lateral_range", lateral_range)):
        if len(rng) != 2 or int(rng[0]) > int(rng[1]):
            raise ValueError(f"{name} must be (min, max) with min <= max, got {rng}")
    if not (np.isfinite(weight) and weight >= 0):
        raise ValueError(f"weight must be >= 0, got {weight}")
    if block < 1 or line_step < 1:
        raise ValueError(f"block and line_step must be >= 1, got {block}, {line_step}")
    if block > n:
        raise ValueError(f"block {block} is longer than the frame ({n} samples)")
    seed = n_lines // 2 if seed_line is None else int(seed_line)
    if not 0 <= seed < n_lines:
        raise ValueError(f"seed_line {seed} is outside the frame (0..{n_lines - 1})")

    da = np.arange(int(axial_range[0]), int(axial_range[1]) + 1)
    dl = np.arange(int(lateral_range[0]), int(lateral_range[1]) + 1)
    n_blocks = n // block
    order = _line_order(n_lines, seed, line_step)
    costs: dict[int, NDArray[np.float64]] = {}
    ax_blocks: dict[int, NDArray[np.int64]] = {}
    lat_blocks: dict[int, NDArray[np.int64]] = {}
    for j, prev in order:
        energy = _dissimilarity(i1, i2, j, da, dl, block, n_blocks)
        cost, ia, il = _dp_line(energy, costs.get(prev) if prev is not None else None, weight)
        costs[j] = cost
        ax_blocks[j] = da[ia]
        lat_blocks[j] = dl[il]

    lines = np.array(sorted(ax_blocks))
    per_sample = np.minimum(np.arange(n) // block, n_blocks - 1)
    ax_int = np.stack([ax_blocks[j][per_sample] for j in lines], axis=1)
    lat_int = np.stack([lat_blocks[j][per_sample] for j in lines], axis=1)
    ax_lin = np.stack([steps_to_piecewise_linear(ax_int[:, k]) for k in range(lines.size)], 1)
    lat_lin = np.stack([steps_to_piecewise_linear(lat_int[:, k]) for k in range(lines.size)], 1)
    all_lines = np.arange(n_lines)
    nearest = lines[np.abs(all_lines[:, None] - lines[None, :]).argmin(axis=1)]
    pos = {j: k for k, j in enumerate(lines)}
    idx_nearest = np.array([pos[j] for j in nearest])
    return DpResult(
        axial=_interp_lines(ax_lin, lines, n_lines).astype(np.float32),
        lateral=_interp_lines(lat_lin, lines, n_lines).astype(np.float32),
        axial_integer=ax_int[:, idx_nearest].astype(np.int16),
        lateral_integer=lat_int[:, idx_nearest].astype(np.int16),
        lines=lines,
    )


def _interp_lines(values: NDArray[np.float64], lines: NDArray[np.int64],
                  n_lines: int) -> NDArray[np.float64]:
    """Linear interpolation across lines of fields known on ``lines`` (sorted)."""
    if lines.size == n_lines:
        return values
    x = np.arange(n_lines)
    k = np.clip(np.searchsorted(lines, x, side="right") - 1, 0, lines.size - 2)
    x0 = lines[k]
    x1 = lines[k + 1]
    t = ((x - x0) / np.maximum(x1 - x0, 1))[None, :]
    return (1 - t) * values[:, k] + t * values[:, k + 1]
