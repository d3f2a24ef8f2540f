"""The plan: deterministic, JSON-serialisable, within margins, checked against every limit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from lab.config import parse_config
from lab.provenance import plan_hash
from protocols.params import CompressionParams, IndentationParams, SweiParams
from protocols.plan import Plan, bench_layout, build_plan, check_plan
from protocols.testing import tiny_config_dict


def _config(**edits):
    data = tiny_config_dict()
    for dotted, value in edits.items():
        node = data
        *parts, last = dotted.split(".")
        for part in parts:
            node = node[int(part)] if part.isdigit() else node[part]
        node[last] = value
    return parse_config(data)


def test_plan_is_deterministic_and_round_trips_through_json():
    cfg = _config()
    a, b = build_plan(cfg), build_plan(cfg)
    assert a == b
    assert plan_hash(a.to_json()) == plan_hash(b.to_json())
    back = Plan.from_json(json.loads(json.dumps(a.to_json())))
    assert back == a
    other = build_plan(_config(**{"protocols.1.seed": 99}))
    xy = [(u.params.x_mm, u.params.y_mm) for u in a.units if u.kind == "swei"]
    xy_other = [(u.params.x_mm, u.params.y_mm) for u in other.units if u.kind == "swei"]
    assert xy != xy_other


def test_unit_ids_and_record_keys_follow_the_dataset_contract():
    plan = build_plan(_config(**{"protocols.1.positions_per_block": 3}))
    ids = plan.unit_ids()
    assert ids == ["indentation/cyl-7.5", "indentation/cyl-17.5",
                   "swei/block-a/pos000", "swei/block-a/pos001", "swei/block-a/pos002",
                   "compression/block-a/step00", "compression/block-a/step01"]
    assert plan.record_keys("swei") == [f"block-a/pos{p:03d}/push{k}"
                                        for p in range(3) for k in range(2)]
    assert plan.record_keys("indentation") == ["cyl-7.5", "cyl-17.5"]
    assert plan.record_keys("compression") == ["block-a/step00", "block-a/step01"]


def test_probe_positions_lie_within_the_margins_on_the_block():
    cfg = _config(**{"protocols.1.positions_per_block": 200, "protocols.1.position_margin_mm": 30})
    plan = build_plan(cfg)
    xy = np.array([(u.params.x_mm, u.params.y_mm) for u in plan.units if u.kind == "swei"])
    assert xy.shape == (200, 2)
    assert np.all(np.abs(xy) <= 50 - 30)
    assert xy.std(axis=0).min() > 5  # spread over the allowed square, not clustered
    origin = bench_layout(cfg)["block-a"]
    pose = plan.units[2].params.above_pose
    assert pose[0] == pytest.approx(origin[0] + plan.units[2].params.x_mm * 1e-3)
    assert pose[2] > origin[2]


def test_default_config_is_within_limits_and_estimates_paper_durations():
    cfg = parse_config({
        "phantoms": [{"kind": "cylinder", "id": "c", "gelatin_percent": 7.5}],
        "protocols": [{"kind": "indentation", "cylinders": ["c"]}],
    })
    plan = build_plan(cfg)
    assert check_plan(plan, cfg) == []
    # 1 mm gap + 7 % of 40 mm at 0.01 mm/s = 380 s of drive, plus the retract.
    assert 380 <= plan.estimate_duration_s() <= 400


@pytest.mark.parametrize(("edits", "expected"), [
    ({"safety.workspace_max_m": (0.35, -0.15, 0.105)}, "outside the robot workspace"),
    ({"protocols.1.contact_force_n": 3.0}, "contact force set-point 3.0 N"),
    ({"protocols.0.force_stop_n": 2.5}, "force_stop_n 2.5 N is not below"),
    ({"safety.hexapod_limits_mm": {"Z": (-1.0, 25.0)}}, "outside the soft limits"),
    ({"protocols.0.velocity_mm_s": 5.0}, "exceeds the hexapod velocity cap"),
    ({"protocols.2.strains": (0.0, 0.08)}, "not below the compression force limit"),
])
def test_check_plan_finds_each_limit_problem(edits, expected):
    cfg = _config(**edits)
    problems = check_plan(build_plan(cfg), cfg)
    assert any(expected in p for p in problems), problems


def test_a_block_smaller_than_its_margins_cannot_be_planned():
    cfg = _config(**{"protocols.1.position_margin_mm": 60})
    with pytest.raises(ValueError, match="smaller than twice the position margin"):
        build_plan(cfg)


# -- typed unit parameters -------------------------------------------------------------------------
STORED_PLAN = Path(__file__).parent / "data" / "stored-plan-v1.json"


def test_unit_params_are_frozen_typed_models_that_serialise_flat():
    plan = build_plan(_config())
    kinds = {"indentation": IndentationParams, "swei": SweiParams, "compression": CompressionParams}
    for unit in plan.units:
        assert type(unit.params) is kinds[unit.kind]
        with pytest.raises(dataclasses.FrozenInstanceError):
            unit.params.contact_force_n = 0.0  # type: ignore[misc]
        flat = unit.to_json()["params"]
        assert set(flat) == {f.name for f in dataclasses.fields(unit.params)}
        assert all(not isinstance(v, tuple | dict) for v in flat.values())  # plain JSON, flat
    swei = next(u for u in plan.units if u.kind == "swei")
    assert isinstance(swei.params, SweiParams) and len(swei.params.above_pose) == 6


def test_a_plan_stored_before_typed_params_loads_and_serialises_identically():
    """A store written with the dict parameters: same JSON back, so its plan hash still holds."""
    stored = json.loads(STORED_PLAN.read_text())
    plan = Plan.from_json(stored)
    assert plan.to_json() == stored
    assert plan_hash(plan.to_json()) == plan_hash(stored)
    data = tiny_config_dict()
    data["protocols"][1]["positions_per_block"] = 1
    assert build_plan(parse_config(data)).to_json() == stored  # what the planner writes today


@pytest.mark.parametrize(("edit", "message"), [
    (lambda p: p.pop("contact_force_n"), r"missing \['contact_force_n'\]"),
    (lambda p: p.update(colour="red"), r"unknown \['colour'\]"),
])
def test_stored_unit_params_that_do_not_match_are_refused(edit, message):
    stored = json.loads(STORED_PLAN.read_text())
    edit(stored["units"][2]["params"])
    with pytest.raises(ValueError, match=message):
        Plan.from_json(stored)
