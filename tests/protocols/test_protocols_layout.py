"""Blocks placed by ``origin_m``: layout, simulated world, plan checks, dry run, a real unit."""

from __future__ import annotations

import numpy as np
import pytest

from lab.config import ConfigError, parse_config
from lab.devices import build_devices
from lab.session import run_session
from lab.store import SessionStore
from protocols.plan import (
    BENCH_Y_M,
    BLOCK_SPACING_M,
    CLEARANCE_M,
    bench_layout,
    build_plan,
    check_plan,
)
from protocols.testing import tiny_config_dict

ORIGIN = [0.22, -0.36, 0.08]


def swei_config(origin: list[float] | None, *, positions: int = 2) -> dict:
    data = tiny_config_dict(protocols=("swei",), positions=positions)
    if origin is not None:
        block = next(p for p in data["phantoms"] if p["id"] == "block-a")
        block["origin_m"] = origin
    return data


def test_layout_uses_origin_and_keeps_the_other_slots():
    auto = bench_layout(parse_config(swei_config(None)))
    placed = bench_layout(parse_config(swei_config(ORIGIN)))
    assert placed["block-a"] == ORIGIN
    assert placed["block-incl"] == auto["block-incl"]  # its automatic slot is unchanged
    assert auto["block-incl"] == pytest.approx([BLOCK_SPACING_M / 2, BENCH_Y_M, 0.1])


def test_origin_must_be_three_finite_numbers():
    with pytest.raises(ConfigError, match="origin_m"):
        parse_config(swei_config([0.1, float("nan"), 0.1]))
    with pytest.raises(ConfigError, match="origin_m"):
        parse_config(swei_config([0.1, -0.3]))


def test_simulated_world_and_plan_use_the_origin():
    cfg = parse_config(swei_config(ORIGIN))
    plan = build_plan(cfg)
    assert check_plan(plan, cfg) == []
    for unit in plan.units:
        p = unit.params
        expected = [ORIGIN[0] + p.x_mm * 1e-3, ORIGIN[1] + p.y_mm * 1e-3,
                    ORIGIN[2] + CLEARANCE_M]
        np.testing.assert_allclose(p.above_pose[:3], expected, atol=1e-12)
    devices = build_devices(cfg)
    try:
        origins = {b.phantom.phantom_id: b.origin_m for b in devices.world.blocks}
        assert origins["block-a"] == tuple(ORIGIN)
    finally:
        devices.close()


def test_origin_outside_the_workspace_is_reported_by_the_plan_check():
    far = [0.50, -0.30, 0.10]  # x beyond the default box (0.35); the dry run: tests/session
    cfg = parse_config(swei_config(far))
    problems = check_plan(build_plan(cfg), cfg)
    assert problems and all("outside the robot workspace box" in p for p in problems)
    assert "origin_m [0.5, -0.3, 0.1]" in problems[0]


def test_overlapping_blocks_are_reported():
    data = swei_config(ORIGIN)
    incl = next(p for p in data["phantoms"] if p["id"] == "block-incl")
    incl["origin_m"] = [ORIGIN[0] + 0.05, ORIGIN[1], 0.1]  # 50 mm apart, 100 mm wide
    cfg = parse_config(data)
    problems = check_plan(build_plan(cfg), cfg)
    assert any("overlap" in p and "block-incl" in p for p in problems)


def test_swei_unit_places_the_probe_on_a_block_at_its_origin(tmp_path):
    cfg = parse_config(swei_config(ORIGIN, positions=1))
    result = run_session(cfg, tmp_path / "s.zarr", show_progress=False)
    assert result.status == "complete", result.message
    store = SessionStore.open(tmp_path / "s.zarr")
    unit = build_plan(cfg).units[0]
    pose = np.asarray(store.root["swei/probe_pose"][0])
    np.testing.assert_allclose(pose[:2], [ORIGIN[0] + unit.params.x_mm * 1e-3,
                                          ORIGIN[1] + unit.params.y_mm * 1e-3], atol=1e-4)
    assert ORIGIN[2] - 1e-3 < pose[2] < ORIGIN[2]  # pressed 0.2 N into the surface
    phantoms = store.root["phantoms"].attrs["phantoms"]
    assert next(p for p in phantoms if p["phantom_id"] == "block-a")["origin_m"] == ORIGIN
