"""The plan: deterministic, JSON-serialisable, within margins, checked against every limit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lab.config import parse_config
from lab.provenance import plan_hash
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
    xy = [(u.params["x_mm"], u.params["y_mm"]) for u in a.units if u.kind == "swei"]
    xy_other = [(u.params["x_mm"], u.params["y_mm"]) for u in other.units if u.kind == "swei"]
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
    xy = np.array([(u.params["x_mm"], u.params["y_mm"]) for u in plan.units if u.kind == "swei"])
    assert xy.shape == (200, 2)
    assert np.all(np.abs(xy) <= 50 - 30)
    assert xy.std(axis=0).min() > 5  # spread over the allowed square, not clustered
    origin = bench_layout(cfg)["block-a"]
    pose = plan.units[2].params["above_pose"]
    assert pose[0] == pytest.approx(origin[0] + plan.units[2].params["x_mm"] * 1e-3)
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
