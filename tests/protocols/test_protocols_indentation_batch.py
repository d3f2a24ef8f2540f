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
