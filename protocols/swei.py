"""SWEI acquisition at one probe position: contact, push + plane-wave sequences, retract.

One unit (``swei/{block}/pos{p:03d}``):

1. travel above the position (up to the travel height, across, down to 10 mm above the surface);
2. force-controlled approach to the contact force (0.2 N in [SWEI]) with the Nano43: bias in air
   at the stand-off, slow descent, settle within the force band
   (:class:`drivers.robot.contact.ContactLogic`, through the guard);
3. for each push element: hold the contact while the push duty cycle recovers, read the force,
   push + ``frames`` plane-wave frames, read the force again; append the sequence to ``swei``
   (and its ground truth to ``truth/swei`` when the system is simulated) right away, so a
   finished sequence is durable before the next push;
4. retract to the clearance height.

``contact_force_n`` of a record is the mean of the force samples taken from the end of the
previous sequence (or of the approach) to the end of this one. Records follow
``docs/dataset.md``: key ``"{block}/pos{p:03d}/push{k}"``, ``push_index`` k (0-based), the
element at the push centre, the tool pose at the push, the clock time of the push.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from drivers.ultrasound.base import check_sequences
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence
from lab.safety import GuardedDevices
from lab.store import ArraySpec, SessionStore
from protocols.common import (
    CONTROL_PERIOD_S,
    Report,
    approach_position,
    no_report,
    retract_to,
)
from protocols.params import SweiParams
from protocols.plan import Unit

log = logging.getLogger(__name__)

TABLE = "swei"
TRUTH_TABLE = "truth/swei"
#: Metadata keys that describe the whole table (the rest are per record).
_TABLE_ATTRS = ("sampling_frequency", "modulation_frequency", "center_frequency", "sound_speed",
                "initial_time", "PRF", "angle_rad", "depth_m", "lateral_m", "fidelity",
                "channel_sampling_frequency", "channel_t0")


def sequences(params: SweiParams) -> tuple[list[PushSequence], PlaneWaveSequence]:
    """The push and imaging sequences of a unit."""
    pushes = [PushSequence(center_element=int(e)) for e in params.push_elements]
    imaging = PlaneWaveSequence(prf_hz=params.prf_hz, n_frames=params.frames,
                                n_depth=params.depth_px, n_lateral=params.lateral_px)
    return pushes, imaging


#: Frame blocks per sequence in the ``iq`` chunking (see :func:`swei_table_arrays`).
IQ_FRAME_BLOCKS = 5


def swei_table_arrays(frames: int, depth: int, lateral: int, *,
                      rf_shape: tuple[int, ...] | None = None) -> list[ArraySpec]:
    """Array schema of the ``swei`` table (one row per push sequence, row dimension ``seq``).

    Parameters
    ----------
    frames : int
        F, the tracked frames after the push; one sequence's IQ holds F + 1 acquired frames
        (dimension ``acquired_frame``, 0 = the pre-push reference). ``frames`` means F
        everywhere (config, displacement, CNN), see :mod:`lab.variables`.
    depth, lateral : int
        Image pixels of one frame.
    rf_shape : tuple of int, optional
        Shape (frame, sample, element) of one sequence's int16 channel RF when it is recorded;
        None leaves the ``rf`` array out.

    Returns
    -------
    arrays : list of ArraySpec
        ``iq`` (complex64), ``push_index``, ``push_element`` (int16), ``phantom_index``,
        ``position_index`` (int32), ``probe_pose`` (6 float64), ``contact_force_n`` (float32),
        ``t_start_s`` (float64), then ``rf`` (int16) when `rf_shape` is given.
    """
    # One sequence per chunk-row, split into about five frame blocks: Zarr compresses the
    # blocks concurrently, which made appends ~3.7x faster than one 42 MB chunk
    # (bench/store_write.py); readers of a whole sequence are unaffected.
    acquired = frames + 1
    frames_per_chunk = max(1, math.ceil(acquired / IQ_FRAME_BLOCKS))
    arrays = [
        ArraySpec("iq", (acquired, depth, lateral), "complex64",
                  ("seq", "acquired_frame", "depth", "lateral"),
                  inner_chunks=(frames_per_chunk, depth, lateral)),
        ArraySpec("push_index", (), "int16", ("seq",)),
        ArraySpec("push_element", (), "int16", ("seq",)),
        ArraySpec("phantom_index", (), "int32", ("seq",)),
        ArraySpec("position_index", (), "int32", ("seq",)),
        ArraySpec("probe_pose", (6,), "float64", ("seq", "pose")),
        ArraySpec("contact_force_n", (), "float32", ("seq",)),
        ArraySpec("t_start_s", (), "float64", ("seq",)),
    ]
    if rf_shape is not None:
        arrays.append(ArraySpec("rf", tuple(rf_shape), "int16",
                                ("seq", "acquired_frame", "sample", "element")))
    return arrays


def _tables(store: SessionStore, acq: Any) -> tuple[Any, Any]:
    acquired, depth, lateral = acq.iq.shape
    frames = acquired - 1
    arrays = swei_table_arrays(frames, depth, lateral,
                               rf_shape=None if acq.rf is None else tuple(acq.rf.shape))
    attrs = {k: acq.metadata[k] for k in _TABLE_ATTRS if k in acq.metadata}
    table = store.require_table(TABLE, row_dim="seq", arrays=arrays, attrs=attrs)
    truth = None
    if acq.truth is not None:
        truth = store.require_table(TRUTH_TABLE, row_dim="seq", arrays=[
            ArraySpec("displacement_m", (frames, depth, lateral), "float32",
                      ("seq", "frame", "depth", "lateral")),
            ArraySpec("youngs_modulus_kpa", (depth, lateral), "float32",
                      ("seq", "depth", "lateral")),
        ], attrs={"description": "simulated ground truth, same keys and order as swei"})
    return table, truth


def run_unit(unit: Unit, devices: GuardedDevices, store: SessionStore, *,
             phantom_index: int, report: Report = no_report) -> dict[str, Any]:
    """Do one SWEI position (see module docstring); returns a summary for the runner.

    Raises
    ------
    drivers.base.DeviceError
        Any device fault (the runner makes the devices safe and discards the unit).
    lab.safety.SafetyError
        A limit was refused or tripped.
    """
    p = unit.params
    if not isinstance(p, SweiParams):
        raise TypeError(f"{unit.unit_id}: an SWEI unit needs SweiParams, got {type(p).__name__}")
    speed, accel = p.travel_speed_m_s, p.acceleration_m_s2
    pushes, imaging = sequences(p)
    us = devices.ultrasound
    for push in pushes:  # refuse impossible sequences and set-points before moving anything
        check_sequences(push, imaging, probe=us.probe, limits=us.limits)
    devices.probe_sensor.check_setpoint(p.contact_force_n)
    contact, result = approach_position(devices, p, unit_id=unit.unit_id, report=report)
    forces: list[float] = [float(result.force_n)]
    last_key = ""
    for k, push in enumerate(pushes):
        wait_s = us.push_ready_in_s()
        if wait_s > 0:
            forces += contact.hold(wait_s).force_n.tolist()
        devices.clock.sleep(CONTROL_PERIOD_S)
        forces.append(devices.probe_sensor.read().fz_n)
        pose = devices.robot.tool_pose()
        t_start = devices.clock.now()
        acq = us.acquire_swei(push, imaging)
        forces.append(devices.probe_sensor.read().fz_n)
        mean_force = float(np.mean(forces))
        forces = []
        key = f"{p.block_id}/pos{p.position_index:03d}/push{k}"
        table, truth = _tables(store, acq)
        meta = {"unit_id": unit.unit_id, "phantom_id": p.block_id,
                "position_mm": [p.x_mm, p.y_mm],
                "push_lateral_m": acq.metadata.get("push_lateral_m"),
                "t_push_s": acq.metadata.get("t_push_s")}
        data = {
            "iq": acq.iq[None], "push_index": np.array([k], np.int16),
            "push_element": np.array([push.center_element], np.int16),
            "phantom_index": np.array([phantom_index], np.int32),
            "position_index": np.array([p.position_index], np.int32),
            "probe_pose": pose[None], "contact_force_n": np.array([mean_force], np.float32),
            "t_start_s": np.array([t_start], np.float64),
        }
        if acq.rf is not None:
            data["rf"] = acq.rf[None]
        table.append(key, data, meta)
        if truth is not None:
            truth.append(key, {"displacement_m": acq.truth.displacement_m[None],
                               "youngs_modulus_kpa": acq.truth.youngs_modulus_kpa[None]},
                         {"unit_id": unit.unit_id})
        last_key = key
        report(phase="push", push=f"{k + 1}/{len(pushes)}", force_n=mean_force, last=key)
    report(phase="retract")
    retract_to(devices, p.above_pose[2], speed_m_s=speed, acceleration_m_s2=accel)
    return {"last_record": last_key, "contact_force_n": float(result.force_n)}
