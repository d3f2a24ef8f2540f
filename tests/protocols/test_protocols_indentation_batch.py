"""Drive batches of the indentation protocol: at most 5 um of travel and half the lookahead."""

from __future__ import annotations

import pytest

from protocols.indentation import (
    BATCH_SAMPLES_MAX,
    BATCH_TRAVEL_MM,
    LOOKAHEAD_S,
    batch_samples,
)


@pytest.mark.parametrize(("velocity_mm_s", "period_s", "expected"), [
    (0.01, 0.005, 100),  # default: 0.5 s = 5 um
    (0.1, 0.005, 10),  # 10x faster: 10 samples = 5 um
    (20.0, 0.005, 1),  # 100 um a sample: one sample per batch
    (0.001, 1.0, 1),  # 1 Hz: a 0.5 s cap is below one sample
    (0.001, 0.005, 100),  # 0.25 um in 0.5 s: the sample cap
    (0.002, 0.01, 50),  # 0.5 s at 100 Hz (0.5 um... of 5 um): the time cap
])
def test_batch_is_bounded_by_travel_time_and_count(velocity_mm_s, period_s, expected):
    n = batch_samples(velocity_mm_s, period_s)
    assert n == expected
    assert 1 <= n <= BATCH_SAMPLES_MAX
    if n > 1:
        assert n * velocity_mm_s * period_s <= BATCH_TRAVEL_MM + 1e-12
        assert n * period_s <= LOOKAHEAD_S / 2 + 1e-12


def test_plate_keeps_its_speed_at_a_low_sample_rate(tmp_path):
    """At 10 Hz a batch of 20 samples (2 s) outlasted the 1 s lookahead: the plate stopped at
    each target until the next renewal. The batch is now capped at half the lookahead."""
    import numpy as np

    from lab.config import parse_config
    from lab.session import run_session
    from lab.store import SessionStore
    from protocols.testing import tiny_config_dict

    cfg = tiny_config_dict(protocols=("indentation",))
    cfg["protocols"][0]["sample_rate_hz"] = 10.0
    path = tmp_path / "s.zarr"
    assert run_session(parse_config(cfg), path, show_progress=False).status == "complete"
    table = SessionStore.open(path).table("indentation")
    for rec in table.records:
        t, pos = table.read("time_s", rec["key"]), table.read("position_mm", rec["key"])
        speed = (np.diff(pos) / np.diff(t))[t[1:] > 1.0]
        np.testing.assert_allclose(speed, rec["meta"]["velocity_mm_s"], rtol=0.01)
