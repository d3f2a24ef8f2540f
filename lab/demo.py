"""``elastolab demo``: a simulated study from acquisition to elasticity maps, strain and a report.

Stages, each timed and recorded in ``DIR/demo-state.json`` so that a second run into the same
directory resumes where the first stopped (and refuses if it was made with another profile):

1. ``session``      indentation of cylinders, SWEI on homogeneous blocks and an inclusion block,
                    quasi-static compression - one session store ``DIR/session.zarr``
2. ``labels``       Young's modulus per concentration from the indentation runs
3. ``displacement`` Loupas displacement of every SWEI sequence
4. ``tof``          time-of-flight maps, alpha calibrated on the labels
5. ``cnn``          3D DenseNet training (4-fold position split, fold 0) and full maps
6. ``strain``       DP+GLUE and CNN+GLUE strain on the compression frames, failure-rate study
7. ``report``       ``DIR/report.html``, ``DIR/metrics.json``, figures in ``DIR/figures``

Profiles: ``default`` (a laptop, minutes), ``paper`` (the paper's sizes and training recipe, for a
GPU machine), ``smoke`` (seconds; the test suite runs it).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab import demo_stages
from lab.demo_context import (
    PROFILES,
    STATE_FILE,
    DemoContext,
    DemoError,
    DemoProfile,
    DemoState,
    ProfileName,
    profile_hash,
)
from lab.logs import attach_log_file, detach_log_file

log = logging.getLogger(__name__)

StageFn = Callable[[DemoContext], dict[str, Any]]

#: The stages in the order they run; each returns the result recorded in ``demo-state.json``.
STAGES: tuple[tuple[str, StageFn], ...] = (
    ("session", demo_stages.stage_session),
    ("labels", demo_stages.stage_labels),
    ("displacement", demo_stages.stage_displacement),
    ("tof", demo_stages.stage_tof),
    ("cnn", demo_stages.stage_cnn),
    ("strain", demo_stages.stage_strain),
    ("report", demo_stages.stage_report),
)
STAGE_NAMES: tuple[str, ...] = tuple(name for name, _ in STAGES)


def open_output(out_dir: Path, profile: DemoProfile) -> DemoState:
    """Start or resume a demo in ``out_dir``; refuse a directory holding anything else."""
    state_path = out_dir / STATE_FILE
    wanted = profile_hash(profile)
    if state_path.is_file():
        state = DemoState.load(state_path)
        if state.profile_hash != wanted:
            raise DemoError(
                f"{out_dir} holds a demo made with profile {state.profile!r} (hash "
                f"{state.profile_hash}); this run uses {profile.name!r} ({wanted}). Use another "
                "--out directory or delete this one; results are never mixed."
            )
        done = [s for s in STAGE_NAMES if s in state.stages]
        log.info("resuming the demo in %s: stages done: %s", out_dir, ", ".join(done) or "none")
        return state
    if out_dir.exists() and any(out_dir.iterdir()):
        raise DemoError(f"{out_dir} exists and is not a demo output directory (no {STATE_FILE});"
                        " refusing to write into it. Choose an empty or new --out directory.")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "figures").mkdir(exist_ok=True)
    state = DemoState(profile=profile.name, profile_hash=wanted)
    state.save(state_path)
    return state


def run_demo(out_dir: str | Path, *, profile: ProfileName = "default",
             show_progress: bool = True, stop_after: str | None = None,
             seed: int | None = None) -> dict[str, Any]:
    """Run (or resume) the demo into ``out_dir``; returns the metrics written to metrics.json.

    ``seed`` (default: the profile's, 0) repeats the profile on new random data: speckle, noise,
    probe positions, training inclusion blocks, splits and network initialisation.
    """
    if profile not in PROFILES:
        raise DemoError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    if stop_after is not None and stop_after not in STAGE_NAMES:
        raise DemoError(f"unknown stage {stop_after!r}; stages are {STAGE_NAMES}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed < 2**31):
        raise DemoError(f"seed must be an integer in [0, 2**31), got {seed!r}")
    out = Path(out_dir)
    prof = PROFILES[profile] if seed is None else replace(PROFILES[profile], seed=seed)
    state = open_output(out, prof)
    ctx = DemoContext(out, prof, state, show_progress)
    state_path = out / STATE_FILE
    handler = attach_log_file(out / "demo.log")
    try:
        for number, (name, stage) in enumerate(STAGES, start=1):
            if name in state.stages:
                continue
            log.info("demo stage %d/%d: %s", number, len(STAGES), name)
            t0 = time.perf_counter()
            result = stage(ctx)
            seconds = time.perf_counter() - t0
            state.stages[name] = {"seconds": seconds, "result": result}
            state.save(state_path)
            log.info("demo stage %s done in %.1f s", name, seconds)
            if name == stop_after:
                break
    finally:
        detach_log_file(handler)
    return json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() \
        else {}
