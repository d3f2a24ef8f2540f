"""Typed parameters of one unit of work, as the planner derives them and the protocols read them.

Frozen dataclasses, one per unit kind, with the same field names the stored plan has always used:
``to_json`` gives exactly the flat dict of plain JSON types a store's ``plan`` attribute holds
(so a plan's hash, :func:`lab.provenance.plan_hash`, is unchanged), and :func:`params_from_json`
reads it back, refusing a dict with missing or unknown keys. Units: mm, m, N, s, Hz as named;
poses are ``[x, y, z, rx, ry, rz]`` in m and rad (robot base frame).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

__all__ = [
    "CompressionParams",
    "IndentationParams",
    "ProbeParams",
    "SweiParams",
    "UnitParams",
    "params_from_json",
]


@dataclass(frozen=True, kw_only=True)
class _Params:
    def to_json(self) -> dict[str, Any]:
        """Flat dict of plain JSON types (tuples as lists), as stored in the plan."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        names = {f.name for f in fields(cls)}
        missing, unknown = sorted(names - set(data)), sorted(set(data) - names)
        if missing or unknown:
            raise ValueError(f"{cls.__name__}: stored unit parameters do not match this version "
                             f"(missing {missing}, unknown {unknown})")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True, kw_only=True)
class IndentationParams(_Params):
    """One indentation run of a cylinder under the hexapod plate (hexapod Z in mm, down < 0)."""

    cylinder_id: str
    run: int
    gelatin_percent: float
    radius_mm: float
    height_mm: float
    velocity_mm_s: float
    sample_rate_hz: float
    max_strain: float
    contact_force_n: float
    approach_gap_mm: float
    force_stop_n: float
    start_z_mm: float
    lowest_z_mm: float
    retract_velocity_mm_s: float


@dataclass(frozen=True, kw_only=True)
class ProbeParams(_Params):
    """Where and how the probe goes for a unit: position on the block and the moves there.

    ``x_mm``, ``y_mm`` in the block frame; ``origin_m`` the block's top-surface centre (base
    frame); poses above the position (clearance), at travel height and at the deepest allowed
    search depth; travel, acceleration and approach speeds; the contact-force set-point (N).
    """

    x_mm: float
    y_mm: float
    origin_m: tuple[float, ...]
    above_pose: tuple[float, ...]
    travel_pose: tuple[float, ...]
    deepest_pose: tuple[float, ...]
    travel_speed_m_s: float
    acceleration_m_s2: float
    approach_speed_m_s: float
    contact_force_n: float


@dataclass(frozen=True, kw_only=True)
class SweiParams(ProbeParams):
    """One SWEI probe position: push sequences then plane-wave imaging (``frames`` per push)."""

    block_id: str
    position_index: int
    push_elements: tuple[int, ...]
    frames: int
    prf_hz: float
    depth_px: int
    lateral_px: int


@dataclass(frozen=True, kw_only=True)
class CompressionParams(ProbeParams):
    """One quasi-static compression step: press ``applied_strain`` x ``height_mm``, record RF."""

    block_id: str
    step: int
    applied_strain: float
    height_mm: float
    depth_samples: int
    lines: int


UnitParams = IndentationParams | SweiParams | CompressionParams

_BY_KIND: dict[str, type[_Params]] = {
    "indentation": IndentationParams, "swei": SweiParams, "compression": CompressionParams,
}


def params_from_json(kind: Literal["indentation", "swei", "compression"],
                     data: dict[str, Any]) -> UnitParams:
    """The typed parameters of a stored unit of ``kind`` (ValueError on an unknown kind or keys)."""
    if kind not in _BY_KIND:
        raise ValueError(f"unknown unit kind {kind!r}; expected one of {sorted(_BY_KIND)}")
    return _BY_KIND[kind].from_json(data)
