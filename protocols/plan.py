"""A session plan: the ordered list of units of work a session performs, derived from its config.

A *unit* is the smallest piece of work that is done completely or redone from scratch: one
indentation run on one cylinder (``indentation/cyl-7.5-a``), one SWEI probe position with all its
push sequences (``swei/block-7.5/pos003``), one quasi-static compression step
(``compression/block-incl/step02``). Every unit starts and ends at a safe point (probe retracted,
hexapod back at its start height and stopped), so a session can be paused between units and
resumed at the first incomplete unit after a crash.

The plan is pure data (JSON-serialisable) and is derived deterministically from the config:
probe positions are drawn from a generator seeded by the SWEI ``seed`` and the block id, so the
same config always gives the same plan (and :func:`lab.provenance.plan_hash`). It is stored in the
session store before the first motion, and :func:`check_plan` checks every target of every unit
against the safety limits without touching hardware (``--dry-run``).

Bench layout
------------
A block's ``origin_m`` (config) is the robot base-frame position of its top-surface centre, block x
along base x, block y along base y, depth along -z. Blocks without one stand in a row on the table
in config order, ``BLOCK_SPACING_M`` apart along the base x axis, centred on x = 0 at
y = ``BENCH_Y_M``, on a table at z = 0 (so the origin's z is the block height); a block with an
``origin_m`` keeps its slot in that row empty. :func:`check_plan` reports blocks whose footprints
overlap and, through the poses of every unit, probe positions outside the workspace box.
"""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from lab.config import (
    BlockConfig,
    CompressionConfig,
    CylinderConfig,
    IndentationConfig,
    SafetyConfig,
    SessionConfig,
    SweiConfig,
)
from lab.gelatin import flat_punch_force_n, youngs_modulus_kpa

UnitKind = Literal["indentation", "swei", "compression"]

#: Distance between neighbouring block centres on the bench (m).
BLOCK_SPACING_M = 0.15
#: y of the block centres in the robot base frame (m).
BENCH_Y_M = -0.30
#: Probe orientation [rx, ry, rz] (rad): face down.
PROBE_DOWN_RAD = (float(np.pi), 0.0, 0.0)
#: Height of the probe face above a block surface when travelling and before an approach (m).
CLEARANCE_M = 0.010
#: Height of travel moves above the tallest block top (m).
TRAVEL_CLEARANCE_M = 0.020
#: Deepest the probe may go below a block surface while looking for contact (m).
MAX_SEARCH_DEPTH_M = 0.005
#: Linear speed for travel between positions (m/s); the safety cap applies if lower.
TRAVEL_SPEED_M_S = 0.04
#: Linear acceleration for all robot moves (m/s^2); the safety cap applies if lower.
ACCELERATION_M_S2 = 0.2
#: Probe speed while looking for contact (m/s).
APPROACH_SPEED_M_S = 0.002
#: Probe face area used to predict contact forces in the plan check (mm^2): 40 x 10 mm.
PROBE_FACE_AREA_MM2 = 400.0
#: Seconds one simulated or real ultrasound acquisition is assumed to take (estimates only).
ACQUISITION_S = 0.05


@dataclass(frozen=True)
class Unit:
    """One unit of work.

    Attributes
    ----------
    unit_id : str
        Unique id, ``"{kind}/{phantom_id}[/{position or step}]"``.
    kind : {"indentation", "swei", "compression"}
    protocol_index : int
        Index of the protocol in ``config.protocols``.
    phantom_id : str
    index : int
        Position index (SWEI), step index (compression) or run index (indentation).
    params : dict
        Everything the protocol needs, in plain JSON types (mm, m, N, s as named).
    records : dict of str to list of str
        Record keys this unit appends, by table (derived ``truth/...`` tables use the same keys).
    estimated_s : float
        Estimated duration in seconds.
    """

    unit_id: str
    kind: UnitKind
    protocol_index: int
    phantom_id: str
    index: int
    params: dict[str, Any]
    records: dict[str, list[str]]
    estimated_s: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Unit:
        return cls(**data)


@dataclass(frozen=True)
class Plan:
    """Ordered units plus the bench layout they refer to."""

    units: tuple[Unit, ...]
    layout: dict[str, list[float]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"units": [u.to_json() for u in self.units], "layout": self.layout}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(tuple(Unit.from_json(u) for u in data["units"]), dict(data.get("layout", {})))

    def unit_ids(self) -> list[str]:
        return [u.unit_id for u in self.units]

    def estimate_duration_s(self, start: int = 0) -> float:
        """Estimated seconds for units ``start`` onwards."""
        return float(sum(u.estimated_s for u in self.units[start:]))

    def record_keys(self, table: str) -> list[str]:
        """All record keys the plan appends to ``table``, in order."""
        return [k for u in self.units for k in u.records.get(table, [])]


# -- layout ----------------------------------------------------------------------------------------
def bench_layout(config: SessionConfig) -> dict[str, list[float]]:
    """Base-frame position (m) of each block's top-surface centre: its ``origin_m`` if given,
    else its slot in the automatic row (see module docstring)."""
    blocks = [p for p in config.phantoms if isinstance(p, BlockConfig)]
    n = len(blocks)
    return {
        b.id: ([float(v) for v in b.origin_m] if b.origin_m is not None
               else [(i - (n - 1) / 2) * BLOCK_SPACING_M, BENCH_Y_M, b.size_mm[2] * 1e-3])
        for i, b in enumerate(blocks)
    }


def layout_problems(config: SessionConfig, layout: dict[str, list[float]]) -> list[str]:
    """Blocks whose footprints (x-y rectangles on the bench) overlap; empty when none do."""
    blocks = [p for p in config.phantoms if isinstance(p, BlockConfig)]
    problems = []
    for i, a in enumerate(blocks):
        for b in blocks[i + 1:]:
            (ax, ay, _), (bx, by, _) = layout[a.id][:3], layout[b.id][:3]
            gap_x = abs(ax - bx) - (a.size_mm[0] + b.size_mm[0]) * 0.5e-3
            gap_y = abs(ay - by) - (a.size_mm[1] + b.size_mm[1]) * 0.5e-3
            if gap_x < 0 and gap_y < 0:
                problems.append(f"blocks {a.id!r} at {np.round(layout[a.id], 4).tolist()} m and "
                                f"{b.id!r} at {np.round(layout[b.id], 4).tolist()} m overlap on "
                                "the bench; change origin_m")
    return problems


def probe_pose(origin_m: list[float], x_mm: float, y_mm: float, height_m: float) -> list[float]:
    """Tool pose (m, rad) with the probe face ``height_m`` above a block point (block frame mm)."""
    return [origin_m[0] + x_mm * 1e-3, origin_m[1] + y_mm * 1e-3, origin_m[2] + height_m,
            *PROBE_DOWN_RAD]


def probe_positions_mm(block: BlockConfig, proto: SweiConfig) -> list[tuple[float, float]]:
    """Seeded random probe positions (x, y) in mm on the block surface, within the margins."""
    half_x = block.size_mm[0] / 2 - proto.position_margin_mm
    half_y = block.size_mm[1] / 2 - proto.position_margin_mm
    if half_x < 0 or half_y < 0:
        raise ValueError(f"block {block.id!r} ({block.size_mm[0]} x {block.size_mm[1]} mm) is "
                         f"smaller than twice the position margin {proto.position_margin_mm} mm")
    seq = np.random.SeedSequence([proto.seed & 0xFFFFFFFF, zlib.crc32(block.id.encode())])
    rng = np.random.default_rng(seq)
    xy = rng.uniform([-half_x, -half_y], [half_x, half_y], size=(proto.positions_per_block, 2))
    return [(round(float(x), 4), round(float(y), 4)) for x, y in xy]


# -- plan construction -----------------------------------------------------------------------------
def build_plan(config: SessionConfig) -> Plan:
    """Derive the plan of ``config`` (deterministic; no hardware needed)."""
    phantoms = {p.id: p for p in config.phantoms}
    layout = bench_layout(config)
    safety = config.safety
    units: list[Unit] = []
    for i, proto in enumerate(config.protocols):
        if isinstance(proto, IndentationConfig):
            units += _indentation_units(i, proto, phantoms, safety)
        elif isinstance(proto, SweiConfig):
            units += _swei_units(i, proto, phantoms, layout, safety)
        else:
            units += _compression_units(i, proto, phantoms, layout, safety)
    ids = [u.unit_id for u in units]
    dupes = sorted({u for u in ids if ids.count(u) > 1})
    if dupes:
        raise ValueError(f"the config plans the same unit twice: {dupes} (a phantom listed twice "
                         "in one protocol kind?)")
    return Plan(tuple(units), layout)


def travel_z_m(layout: dict[str, list[float]]) -> float:
    """Height (m) of the probe face for travel between positions: above every block."""
    return max((o[2] for o in layout.values()), default=0.0) + TRAVEL_CLEARANCE_M


def _travel_speed(safety: SafetyConfig) -> float:
    return min(TRAVEL_SPEED_M_S, safety.robot_speed_max_m_s)


def _acceleration(safety: SafetyConfig) -> float:
    return min(ACCELERATION_M_S2, safety.robot_acceleration_max_m_s2)


def _indentation_units(index: int, proto: IndentationConfig, phantoms: dict[str, Any],
                       safety: SafetyConfig) -> list[Unit]:
    units = []
    for run, cyl_id in enumerate(proto.cylinders):
        cyl: CylinderConfig = phantoms[cyl_id]
        press_mm = proto.max_strain * cyl.height_mm
        # The search allows twice the nominal gap before declaring "no contact".
        lowest_z_mm = proto.start_z_mm - 2 * proto.approach_gap_mm - press_mm
        travel_mm = proto.approach_gap_mm + press_mm
        estimated = (travel_mm / proto.velocity_mm_s
                     + travel_mm / min(proto.retract_velocity_mm_s,
                                       safety.hexapod_velocity_max_mm_s) + 2.0)
        units.append(Unit(
            unit_id=f"indentation/{cyl_id}", kind="indentation", protocol_index=index,
            phantom_id=cyl_id, index=run,
            params={
                "cylinder_id": cyl_id, "run": run, "gelatin_percent": cyl.gelatin_percent,
                "radius_mm": cyl.radius_mm, "height_mm": cyl.height_mm,
                "velocity_mm_s": proto.velocity_mm_s, "sample_rate_hz": proto.sample_rate_hz,
                "max_strain": proto.max_strain, "contact_force_n": proto.contact_force_n,
                "approach_gap_mm": proto.approach_gap_mm, "force_stop_n": proto.force_stop_n,
                "start_z_mm": proto.start_z_mm, "lowest_z_mm": lowest_z_mm,
                "retract_velocity_mm_s": proto.retract_velocity_mm_s,
            },
            records={"indentation": [cyl_id]}, estimated_s=round(estimated, 3),
        ))
    return units


def _probe_params(origin: list[float], x_mm: float, y_mm: float,
                  layout: dict[str, list[float]], safety: SafetyConfig, *,
                  deepest_m: float) -> dict[str, Any]:
    """Unit params shared by the probe protocols (SWEI, compression): where and how to move.

    Position (``x_mm``, ``y_mm`` on the block, block ``origin_m``), the poses above the position,
    at travel height and `deepest_m` below the surface, and the travel, acceleration and approach
    speeds (plain JSON types).
    """
    return {
        "x_mm": x_mm, "y_mm": y_mm, "origin_m": origin,
        "above_pose": probe_pose(origin, x_mm, y_mm, CLEARANCE_M),
        "travel_pose": probe_pose(origin, x_mm, y_mm, travel_z_m(layout) - origin[2]),
        "deepest_pose": probe_pose(origin, x_mm, y_mm, -deepest_m),
        "travel_speed_m_s": _travel_speed(safety), "acceleration_m_s2": _acceleration(safety),
        "approach_speed_m_s": APPROACH_SPEED_M_S,
    }


def _probe_visit_s(speed_m_s: float) -> float:
    """Estimated seconds to travel to a probe position, approach it and retract (no work)."""
    return 0.15 / speed_m_s + 2 * CLEARANCE_M / APPROACH_SPEED_M_S


def _swei_units(index: int, proto: SweiConfig, phantoms: dict[str, Any],
                layout: dict[str, list[float]], safety: SafetyConfig) -> list[Unit]:
    units = []
    speed = _travel_speed(safety)
    for block_id in proto.blocks:
        block: BlockConfig = phantoms[block_id]
        origin = layout[block_id]
        for p, (x_mm, y_mm) in enumerate(probe_positions_mm(block, proto)):
            n_push = len(proto.push_elements)
            estimated = (_probe_visit_s(speed) + n_push * ACQUISITION_S
                         + (n_push - 1) * safety.push_min_interval_s)
            keys = [f"{block_id}/pos{p:03d}/push{k}" for k in range(n_push)]
            units.append(Unit(
                unit_id=f"swei/{block_id}/pos{p:03d}", kind="swei", protocol_index=index,
                phantom_id=block_id, index=p,
                params={
                    "block_id": block_id, "position_index": p,
                    **_probe_params(origin, x_mm, y_mm, layout, safety,
                                    deepest_m=MAX_SEARCH_DEPTH_M),
                    "push_elements": list(proto.push_elements), "frames": proto.frames,
                    "prf_hz": proto.prf_hz, "contact_force_n": proto.contact_force_n,
                    "depth_px": proto.depth_px, "lateral_px": proto.lateral_px,
                },
                records={"swei": keys}, estimated_s=round(estimated, 3),
            ))
    return units


def _compression_units(index: int, proto: CompressionConfig, phantoms: dict[str, Any],
                       layout: dict[str, list[float]], safety: SafetyConfig) -> list[Unit]:
    units = []
    speed = _travel_speed(safety)
    for block_id in proto.blocks:
        block: BlockConfig = phantoms[block_id]
        origin = layout[block_id]
        x_mm, y_mm = proto.position_mm
        height_mm = block.size_mm[2]
        for k, strain in enumerate(proto.strains):
            press_m = strain * height_mm * 1e-3
            estimated = (_probe_visit_s(speed) + 2 * press_m / APPROACH_SPEED_M_S
                         + ACQUISITION_S)
            key = f"{block_id}/step{k:02d}"
            units.append(Unit(
                unit_id=f"compression/{key}", kind="compression", protocol_index=index,
                phantom_id=block_id, index=k,
                params={
                    "block_id": block_id, "step": k, "applied_strain": strain,
                    "height_mm": height_mm,
                    **_probe_params(origin, x_mm, y_mm, layout, safety,
                                    deepest_m=MAX_SEARCH_DEPTH_M + press_m),
                    "contact_force_n": proto.contact_force_n,
                    "depth_samples": proto.depth_samples, "lines": proto.lines,
                },
                records={"compression": [key]}, estimated_s=round(estimated, 3),
            ))
    return units


# -- limit checks ----------------------------------------------------------------------------------
def check_plan(plan: Plan, config: SessionConfig) -> list[str]:
    """Every target of every unit against the safety limits; returns the problems found (empty =
    the plan is within limits). The guard checks the same limits again at run time."""
    safety = config.safety
    phantoms = {p.id: p for p in config.phantoms}
    problems: list[str] = []
    lo = np.asarray(safety.workspace_min_m)
    hi = np.asarray(safety.workspace_max_m)
    problems += layout_problems(config, plan.layout) if plan.layout else []

    def pose_ok(unit: Unit, name: str) -> None:
        xyz = np.asarray(unit.params[name][:3])
        if np.any(xyz < lo) or np.any(xyz > hi):
            origin = np.round(unit.params["origin_m"], 4).tolist()
            problems.append(f"{unit.unit_id}: {name} {np.round(xyz, 4).tolist()} m is outside the "
                            f"robot workspace box {lo.tolist()}..{hi.tolist()} m (block "
                            f"{unit.phantom_id!r} at origin_m {origin})")

    for unit in plan.units:
        p = unit.params
        if unit.kind == "indentation":
            z_lo, z_hi = safety.hexapod_limits_mm.get("Z", (-np.inf, np.inf))
            for name in ("start_z_mm", "lowest_z_mm"):
                if not z_lo <= p[name] <= z_hi:
                    problems.append(f"{unit.unit_id}: hexapod Z {p[name]} mm ({name}) is outside "
                                    f"the soft limits [{z_lo}, {z_hi}] mm")
            limit = safety.indentation_force_limit_n
            for name in ("force_stop_n", "contact_force_n"):
                if p[name] >= limit:
                    problems.append(f"{unit.unit_id}: {name} {p[name]} N is not below the "
                                    f"indentation force limit {limit} N")
            for name in ("velocity_mm_s", "retract_velocity_mm_s"):
                if p[name] > safety.hexapod_velocity_max_mm_s:
                    problems.append(f"{unit.unit_id}: {name} {p[name]} mm/s exceeds the hexapod "
                                    f"velocity cap {safety.hexapod_velocity_max_mm_s} mm/s")
            continue
        pose_ok(unit, "above_pose")
        pose_ok(unit, "travel_pose")
        pose_ok(unit, "deepest_pose")
        force_limit = (safety.probe_force_max_n if unit.kind == "swei"
                       else safety.compression_force_max_n)
        if p["contact_force_n"] >= force_limit:
            problems.append(f"{unit.unit_id}: contact force set-point {p['contact_force_n']} N is "
                            f"not below the probe force limit {force_limit} N")
        if unit.kind == "compression":
            block: BlockConfig = phantoms[unit.phantom_id]
            press_mm = p["applied_strain"] * p["height_mm"]
            e_kpa = youngs_modulus_kpa(block.gelatin_percent)
            predicted = flat_punch_force_n(e_kpa, press_mm, face_area_mm2=PROBE_FACE_AREA_MM2)
            predicted += p["contact_force_n"]
            if predicted >= force_limit:
                problems.append(
                    f"{unit.unit_id}: compressing {block.gelatin_percent} % gelatin by "
                    f"{p['applied_strain']:.3g} needs about {predicted:.2f} N (flat punch "
                    f"estimate), not below the compression force limit {force_limit} N"
                )
    return problems
