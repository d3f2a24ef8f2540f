"""Every demo profile's session config plans within the safety limits (a dry run: nothing runs)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from lab.demo_context import PROFILES, demo_config
from lab.session import plan_session


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_plans_without_limit_problems(name: str) -> None:
    profile = PROFILES[name]
    plan, problems = plan_session(demo_config(profile))
    assert problems == []
    compressions = [u for u in plan.units if u.unit_id.startswith("compression/")]
    assert len(compressions) == len(profile.compression_strains)
    swei = [u for u in plan.units if u.unit_id.startswith("swei/")]
    assert len(swei) >= len(profile.concentrations) * profile.positions_per_block


def test_the_plan_check_refuses_a_compression_beyond_the_force_limit() -> None:
    """The check the profiles pass is live: 7 % of the inclusion block needs more than 8 N."""
    too_far = replace(PROFILES["smoke"], compression_strains=(0.0, 0.07))
    _, problems = plan_session(demo_config(too_far))
    assert any("compression force limit" in p and "0.07" in p for p in problems)


@pytest.mark.timeout(2400)  # two smoke demo sessions: 5 min with 12 busy processes
def test_a_seed_repeats_the_profile_on_new_data(tmp_path) -> None:
    """--seed N: new speckle, training inclusion blocks and lab noise; seed 0 is the profile;
    a demo directory of one seed is never resumed with another."""
    from lab.demo import run_demo
    from lab.demo_context import SPECKLE_SEEDS_PER_RUN, DemoError, profile_hash

    base = demo_config(PROFILES["default"])
    again = demo_config(replace(PROFILES["default"], seed=0))
    other = demo_config(replace(PROFILES["default"], seed=3))
    assert base == again
    speckle = {p.id: p.speckle_seed for p in base.phantoms if p.kind == "block"}
    speckle3 = {p.id: p.speckle_seed for p in other.phantoms if p.kind == "block"}
    assert speckle.keys() == speckle3.keys()
    assert all(speckle3[k] == speckle[k] + 3 * SPECKLE_SEEDS_PER_RUN for k in speckle)
    assert max(speckle.values()) < SPECKLE_SEEDS_PER_RUN  # runs never share a speckle seed
    inclusions = [p.inclusions for p in base.phantoms if p.id.startswith("block-train")]
    assert inclusions != [p.inclusions for p in other.phantoms if p.id.startswith("block-train")]
    assert base.lab.sim_seed == 0 and other.lab.sim_seed == 3
    assert profile_hash(PROFILES["smoke"]) != profile_hash(replace(PROFILES["smoke"], seed=1))
    with pytest.raises(DemoError, match="seed must be an integer"):
        run_demo(tmp_path / "x", profile="smoke", seed=-1)
    (tmp_path / "d").mkdir()
    run_demo(tmp_path / "d", profile="smoke", seed=1, stop_after="labels", show_progress=False)
    with pytest.raises(DemoError, match="results are never mixed"):
        run_demo(tmp_path / "d", profile="smoke", show_progress=False)
