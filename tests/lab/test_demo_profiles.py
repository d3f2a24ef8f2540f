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
