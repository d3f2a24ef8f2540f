"""Quasi-static compression: the robot presses the probe into a block, one RF frame per step.

One unit (``compression/{block}/step{k:02d}``) is self-contained, so a session can stop and
resume between any two steps:

1. travel above the block position; force-controlled approach to ``contact_force_n``; this
   contact pose is the zero of the step's compression;
2. press the probe down by ``applied_strain x block height`` (slowly, force-watched with the
   session's compression force limit);
3. acquire one RF frame; append it to ``compression`` (and the simulated truth to
   ``truth/compression``);
4. retract to the clearance height.

Frames of one block at increasing strains form the pre/post pairs of strain imaging (step 0 is
the pre-compression frame). ``applied_strain`` stores the commanded strain relative to contact;
the record meta keeps what the system reports (the simulator's strain includes the small contact
preload, as do its truth arrays, which are relative to the uncompressed block).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from drivers.ultrasound.sequences import SOUND_SPEED_M_S, RfFrameSequence
from lab.safety import GuardedDevices
from lab.store import ArraySpec, SessionStore
from protocols.common import (
    Report,
    approach_position,
    move,
    no_report,
    retract_to,
)
from protocols.params import CompressionParams
from protocols.plan import Unit

log = logging.getLogger(__name__)

TABLE = "compression"
TRUTH_TABLE = "truth/compression"
_TRUTH = ("axial_displacement_m", "lateral_displacement_m", "axial_strain")


def rf_sequence(params: CompressionParams) -> RfFrameSequence:
    """The RF frame sequence of a unit: ``depth_samples`` at 40 MHz, ``lines`` over 33 mm."""
    base = RfFrameSequence()
    depth_mm = params.depth_samples * SOUND_SPEED_M_S / (2 * base.sampling_frequency_hz) * 1e3
    return RfFrameSequence(fov_depth_mm=depth_mm, n_lines=params.lines)


def _tables(store: SessionStore, frame: Any) -> tuple[Any, Any]:
    depth, lines = frame.rf.shape
    meta = frame.metadata
    attrs = {k: meta[k] for k in ("sampling_frequency", "center_frequency", "sound_speed",
                                  "depth_m", "lateral_m") if k in meta}
    table = store.require_table(TABLE, row_dim="frame", arrays=[
        ArraySpec("rf", (depth, lines), "float32", ("frame", "depth", "line")),
        ArraySpec("applied_strain", (), "float32", ("frame",)),
    ], attrs=attrs)
    truth = None
    if frame.truth is not None:
        truth = store.require_table(TRUTH_TABLE, row_dim="frame", arrays=[
            ArraySpec(name, (depth, lines), "float32", ("frame", "depth", "line"))
            for name in _TRUTH
        ], attrs={"description": "simulated ground truth relative to the uncompressed block, "
                                 "same keys and order as compression"})
    return table, truth


def run_unit(unit: Unit, devices: GuardedDevices, store: SessionStore, *,
             report: Report = no_report) -> dict[str, Any]:
    """Do one compression step (see module docstring); returns a summary for the runner."""
    p = unit.params
    if not isinstance(p, CompressionParams):
        raise TypeError(f"{unit.unit_id}: a compression unit needs CompressionParams, got "
                        f"{type(p).__name__}")
    speed, accel = p.travel_speed_m_s, p.acceleration_m_s2
    seq = rf_sequence(p)
    devices.probe_sensor.check_setpoint(p.contact_force_n)  # refuse before moving
    _, result = approach_position(devices, p, unit_id=unit.unit_id, report=report)
    press_m = p.applied_strain * p.height_mm * 1e-3
    if press_m > 0:
        target = np.asarray(result.pose, dtype=np.float64).copy()
        target[2] -= press_m
        report(phase="press")
        move(devices, target, speed_m_s=p.approach_speed_m_s, acceleration_m_s2=accel)
    devices.clock.sleep(0.005)
    force_n = devices.probe_sensor.read().fz_n
    frame = devices.ultrasound.acquire_rf_frame(seq)
    key = f"{p.block_id}/step{p.step:02d}"
    table, truth = _tables(store, frame)
    meta = {"unit_id": unit.unit_id, "phantom_id": p.block_id, "step": p.step,
            "force_n": force_n, "contact_pose": np.asarray(result.pose).tolist(),
            "system_applied_strain": frame.metadata.get("applied_strain"),
            "t_s": frame.metadata.get("t_s")}
    table.append(key, {"rf": frame.rf[None],
                       "applied_strain": np.array([p.applied_strain], np.float32)}, meta)
    if truth is not None:
        truth.append(key, {name: frame.truth[name][None] for name in _TRUTH},
                     {"unit_id": unit.unit_id})
    report(phase="retract", force_n=force_n, last=key)
    retract_to(devices, p.above_pose[2], speed_m_s=speed, acceleration_m_s2=accel)
    return {"last_record": key, "force_n": force_n}
