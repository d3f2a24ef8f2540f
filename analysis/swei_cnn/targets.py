"""Per-pixel training and scoring targets of inclusion phantoms from their geometry.

A real lab has no simulated truth: the target Young's modulus of an inclusion phantom's image
comes from what is known about the phantom and the probe,

- the phantom's geometry in the session config (``phantoms`` table: the block's top-surface
  centre ``origin_m`` on the bench, its background concentration and its cylindrical inclusions
  ``x_mm``, ``z_mm``, ``radius_mm``, ``gelatin_percent``; cylinders run along the block's
  elevation axis y, block axes parallel to the robot base axes),
- the probe pose stored with each sequence (``swei/probe_pose``: probe-face centre
  ``[x, y, z]`` in m and rotation vector ``[rx, ry, rz]`` in rad; the image's lateral axis is the
  tool x axis, depth the tool z axis), and
- the indentation labels of the concentrations (``labels``: E per gelatin %),

so the modulus of pixel (depth d, lateral l) is the label of the concentration found at the
bench point ``p + l e_x + d e_z`` of the phantom. Pure functions; the store reader is
:func:`analysis.swei_cnn.runners.load_swei_training_set`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.spatial.transform import Rotation

__all__ = ["image_points_in_block_mm", "inclusion_target_map"]


def image_points_in_block_mm(
    probe_pose: ArrayLike, *, origin_m: ArrayLike, depth_m: ArrayLike, lateral_m: ArrayLike,
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Block-frame coordinates (mm) of every image pixel.

    Parameters
    ----------
    probe_pose : array_like, shape (6,)
        Tool pose ``[x, y, z, rx, ry, rz]`` (m, rad; rotation vector), probe-face centre.
    origin_m : array_like, shape (3,)
        Block top-surface centre in the same base frame (m).
    depth_m, lateral_m : array_like, shape (depth,), (lateral,)
        Pixel centres (m) along the tool z and x axes.

    Returns
    -------
    x_mm, y_mm, z_mm : ndarray, shape (depth, lateral)
        Lateral, elevation and depth-below-the-top-surface coordinates (mm).
    """
    pose = np.asarray(probe_pose, dtype=np.float64).reshape(-1)
    origin = np.asarray(origin_m, dtype=np.float64).reshape(-1)
    if pose.shape != (6,) or not np.isfinite(pose).all():
        raise ValueError(f"probe_pose must be 6 finite numbers [x, y, z, rx, ry, rz], got {pose}")
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ValueError(f"origin_m must be 3 finite numbers, got {origin}")
    axes = Rotation.from_rotvec(pose[3:]).as_matrix()  # columns: tool x, y, z in the base frame
    d = np.asarray(depth_m, dtype=np.float64).reshape(-1)[:, None, None]
    lat = np.asarray(lateral_m, dtype=np.float64).reshape(-1)[None, :, None]
    points = pose[:3] + lat * axes[:, 0] + d * axes[:, 2]  # (depth, lateral, 3) base frame, m
    rel = (points - origin) * 1e3
    return rel[..., 0], rel[..., 1], -rel[..., 2]


def inclusion_target_map(
    phantom: Mapping[str, Any], *, probe_pose: ArrayLike, depth_m: ArrayLike,
    lateral_m: ArrayLike, modulus_kpa_of: Callable[[float], float],
) -> NDArray[np.float32]:
    """Target Young's modulus (kPa) of every pixel of one sequence of a block phantom.

    Parameters
    ----------
    phantom : mapping
        Row of the store's phantom table: ``gelatin_percent``, ``origin_m`` (3 floats, m) and
        ``inclusions`` (mappings with ``x_mm``, ``z_mm``, ``radius_mm``, ``gelatin_percent``).
    probe_pose : array_like, shape (6,)
        Probe pose of the sequence (see :func:`image_points_in_block_mm`).
    depth_m, lateral_m : array_like
        Pixel centres (m).
    modulus_kpa_of : callable
        Concentration (%) -> target modulus (kPa), e.g. the indentation labels.

    Returns
    -------
    youngs_modulus_kpa : ndarray, shape (depth, lateral), float32

    Raises
    ------
    ValueError
        A phantom without ``origin_m`` (its position on the bench is unknown) or an inclusion
        without its geometry.
    """
    origin = phantom.get("origin_m")
    if origin is None:
        raise ValueError(f"phantom {phantom.get('phantom_id')!r} has no origin_m: its place on the "
                         "bench is needed to know which pixels see its inclusions")
    x, _, z = image_points_in_block_mm(probe_pose, origin_m=origin, depth_m=depth_m,
                                       lateral_m=lateral_m)
    out = np.full(x.shape, modulus_kpa_of(float(phantom["gelatin_percent"])), dtype=np.float64)
    inclusions: Sequence[Mapping[str, Any]] = phantom.get("inclusions") or ()
    for k, inc in enumerate(inclusions):
        missing = {"x_mm", "z_mm", "radius_mm", "gelatin_percent"} - set(inc)
        if missing:
            raise ValueError(f"phantom {phantom.get('phantom_id')!r} inclusion {k} lacks "
                             f"{sorted(missing)}")
        inside = (x - inc["x_mm"]) ** 2 + (z - inc["z_mm"]) ** 2 <= float(inc["radius_mm"]) ** 2
        out[inside] = modulus_kpa_of(float(inc["gelatin_percent"]))
    return out.astype(np.float32)
