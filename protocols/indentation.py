"""Unconfined compression of one gelatin cylinder with the hexapod and the Nano17 ([SWEI]).

One unit (``indentation/{cylinder}``):

1. the operator places the cylinder (simulated: the world puts it under the plate);
2. servo on, reference, plate to ``start_z_mm`` (``approach_gap_mm`` above the cylinder), bias
   the Nano17 with the plate in air;
3. drive the plate down at ``velocity_mm_s`` (0.01 mm/s), reading force and position every
   ``1 / sample_rate_hz`` (200 Hz). The force is the newest sample of the guard's watched
   stream (:class:`lab.safety.GuardedForceSensor`: no request on the wire per sample), so
   ``sample_rate_hz`` should not exceed the sensor's ``rate_hz`` (samples would repeat). The
   plate position at each sample time comes from the controller's data recorder (RTR/DRR?),
   read once per batch (:func:`batch_samples`: at most 5 um of travel and 0.5 s) and
   interpolated, instead of one ``POS?`` a sample; the protocol's own strain and force stops
   may therefore act up to one batch late (the guard's watch still checks every force sample at
   the safety limit). The force is tared by the mean of ``TARE_SAMPLES`` samples in air (the
   Net F/T bias is one noisy sample, a few mN off). Contact is where the moving average of
   ``CONTACT_SAMPLES`` samples first reaches ``contact_force_n`` (the 5 mN default is only a few
   quantisation steps of the Nano17); ``contact_position_mm`` is the plate travel at the first
   sample of that window. The run ends at
   ``max_strain`` (7 %) beyond contact (``stop_reason = "strain"``) or when the force reaches
   ``force_stop_n`` (``"force_limit"``), whichever comes first; the guard's watchdog trips at
   the safety limit (2 N) if the force ever gets past the protocol's own stop. The plate is
   never commanded more than ``LOOKAHEAD_S`` of travel ahead (targets are renewed as it moves),
   so a lost link cannot let it run on to the bottom of the search range;
4. halt, retract the plate to the start height, append the run to ``indentation``.

Samples (``docs/dataset.md``): ``time_s`` since the start of the drive, ``position_mm`` plate
travel from the start height (positive = compressing), ``force_n`` Fz (compression positive),
``run`` the run index; record key = cylinder id, meta with the cylinder, the contact position and
the stop reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np

from drivers.base import Wrench
from lab.config import CylinderConfig
from lab.safety import GuardedDevices
from lab.store import ArraySpec, SessionStore
from protocols.common import MOTION_TIMEOUT_S, ProtocolError, Report, no_report
from protocols.params import IndentationParams
from protocols.plan import Unit

log = logging.getLogger(__name__)

TABLE = "indentation"
#: Samples in the moving average that detects contact.
CONTACT_SAMPLES = 5
#: Samples averaged in air to tare the force (the sensor's bias is a single sample).
TARE_SAMPLES = 40
#: The plate is commanded at most this many seconds of travel ahead of where it is, so that if
#: the link to the controller drops mid-run the plate stops on its own within that travel (a GCS
#: controller finishes its last MOV whether or not anyone is listening).
LOOKAHEAD_S = 1.0
#: Samples per batch of the drive: every force sample streams in (and the guard checks it as it
#: is read), the plate positions of a batch come from the hexapod's data recorder in one read.
#: The protocol's own stops (strain, force) act at most one batch late; the guard's force limit
#: acts on every sample. A batch is at most ``BATCH_SAMPLES_MAX`` samples and at most
#: ``BATCH_TRAVEL_MM`` of plate travel (:func:`batch_samples`): 100 samples (0.5 s) at the
#: default 200 Hz and 0.01 mm/s. On the default demo's stiffest cylinder (15 %, 97.2 kPa, r 10 mm,
#: l0 40 mm: 763 N/m) the force stop then overshoots ``force_stop_n`` by at most
#: 763 N/m x 5 um = 3.8 mN, inside the 50 mN between 1.95 N and the 2 N limit; a cylinder stiffer
#: than 10 000 N/m (e.g. 17.5 % with r 20 mm, l0 5 mm) would reach the guard's limit instead (a
#: trip, not an overshoot).
BATCH_SAMPLES_MAX = 100
BATCH_TRAVEL_MM = 0.005
#: Rows per chunk of the indentation arrays.
ROW_CHUNK = 8192


def _table(store: SessionStore) -> Any:
    return store.require_table(TABLE, row_dim="sample", arrays=[
        ArraySpec("time_s", (), "float64", ("sample",), row_chunk=ROW_CHUNK),
        ArraySpec("position_mm", (), "float64", ("sample",), row_chunk=ROW_CHUNK),
        ArraySpec("force_n", (), "float32", ("sample",), row_chunk=ROW_CHUNK),
        ArraySpec("run", (), "int32", ("sample",), row_chunk=ROW_CHUNK),
    ], attrs={"units": {"time_s": "s", "position_mm": "mm", "force_n": "N"},
              "description": "unconfined compression runs; position = plate travel from the "
                             "start height, positive compressing; force compression positive"})


def batch_samples(velocity_mm_s: float, period_s: float) -> int:
    """Samples per drive batch: at most ``BATCH_TRAVEL_MM`` of travel, half of ``LOOKAHEAD_S``
    (so the target is renewed well before the plate reaches it) and ``BATCH_SAMPLES_MAX``; >= 1.
    """
    by_travel = BATCH_TRAVEL_MM / (velocity_mm_s * period_s)
    by_time = LOOKAHEAD_S / 2 / period_s
    return int(max(1, min(BATCH_SAMPLES_MAX, np.floor(min(by_travel, by_time) + 1e-9))))


def _sample_batches(sensor: Any, hexapod: Any, clock: Any, period_s: float, size: int
                    ) -> Iterator[list[tuple[Wrench, float]]]:
    """Batches of ``(force sample, plate z in mm at its time)``, ``size`` at a time.

    One force sample per ``period_s`` (read as it comes, so the guard checks each one); the
    plate's z at each sample time is interpolated in the controller's recorded positions (taken
    at the sample rate or faster), read once per batch.
    """
    t_record, record_period_s = hexapod.record_position("z_mm", rate_hz=1.0 / period_s)
    last: list[float] = []  # the last recorded point, to interpolate across batch edges
    index = 0
    while True:
        samples = []
        for _ in range(size):
            clock.sleep(period_s)
            samples.append(sensor.read())
        points = last + hexapod.recorded_positions()
        start = index - len(last)
        times = t_record + (start + np.arange(len(points))) * record_period_s
        z = np.interp([w.t_s for w in samples], times, points)
        index = start + len(points)
        last = points[-1:]
        yield list(zip(samples, z.tolist(), strict=True))


def run_unit(unit: Unit, devices: GuardedDevices, store: SessionStore, *,
             report: Report = no_report) -> dict[str, Any]:
    """Do one indentation run (see module docstring); returns a summary for the runner.

    Raises
    ------
    ProtocolError
        No contact within twice the approach gap.
    drivers.base.DeviceError, lab.safety.SafetyError
        Device faults and guard trips (the runner makes the devices safe).
    """
    p = unit.params
    if not isinstance(p, IndentationParams):
        raise TypeError(f"{unit.unit_id}: an indentation unit needs IndentationParams, got "
                        f"{type(p).__name__}")
    hexapod, sensor, clock = devices.hexapod, devices.indenter_sensor, devices.clock
    cylinder = CylinderConfig(id=p.cylinder_id, gelatin_percent=p.gelatin_percent,
                              radius_mm=p.radius_mm, height_mm=p.height_mm)
    start_z, lowest_z = p.start_z_mm, p.lowest_z_mm
    hexapod.check(z_mm=start_z)  # refuse before anything moves
    hexapod.check(z_mm=lowest_z)
    report(phase="place", unit=unit.unit_id)
    devices.operator.place_cylinder(cylinder, contact_z_mm=start_z - p.approach_gap_mm)
    hexapod.servo(True)
    hexapod.reference().wait(MOTION_TIMEOUT_S)
    hexapod.set_velocity(p.retract_velocity_mm_s)
    hexapod.move_to(z_mm=start_z).wait(MOTION_TIMEOUT_S)
    period = 1.0 / p.sample_rate_hz
    clock.sleep(period)
    sensor.bias()
    air: list[float] = []
    for _ in range(TARE_SAMPLES):
        clock.sleep(period)
        air.append(sensor.read().fz_n)
    tare_n = float(np.mean(air))

    height = p.height_mm
    full_travel = start_z - lowest_z
    t_s: list[float] = []
    position: list[float] = []
    force: list[float] = []
    contact_mm: float | None = None
    stop_reason = ""
    report(phase="drive")
    hexapod.set_velocity(p.velocity_mm_s)
    t0 = clock.now()
    lookahead_mm = p.velocity_mm_s * LOOKAHEAD_S
    hexapod.move_to(z_mm=max(lowest_z, start_z - lookahead_mm))
    renew_at = t0 + LOOKAHEAD_S / 4
    batches = _sample_batches(sensor, hexapod, clock, period,
                               batch_samples(p.velocity_mm_s, period))
    while not stop_reason:
        batch = next(batches)
        if clock.now() >= renew_at:  # from the newest position (a batch is half the lookahead)
            hexapod.move_to(z_mm=max(lowest_z, batch[-1][1] - lookahead_mm))
            renew_at = clock.now() + LOOKAHEAD_S / 4
        for sample, z_now in batch:
            travel = start_z - z_now
            fz = sample.fz_n - tare_n
            t_s.append(sample.t_s - t0)
            position.append(travel)
            force.append(fz)
            if contact_mm is None:
                if (len(force) >= CONTACT_SAMPLES
                        and np.mean(force[-CONTACT_SAMPLES:]) >= p.contact_force_n):
                    contact_mm = position[-CONTACT_SAMPLES]
            elif (travel - contact_mm) / height >= p.max_strain:
                stop_reason = "strain"
                break
            if fz >= p.force_stop_n:
                stop_reason = "force_limit"
                break
            if travel >= full_travel - 1e-9:
                hexapod.stop(success=False)
                missing = "contact" if contact_mm is None else "the stop strain"
                raise ProtocolError(hexapod.name, f"plate reached its lowest point ({lowest_z} "
                                    f"mm) without {missing} on {cylinder.id}; check the "
                                    "placement and approach_gap_mm")
            if len(t_s) % 200 == 0:
                report(force_n=fz, position_mm=travel)
    hexapod.stop(success=True)
    if contact_mm is None:  # stopped on force before three samples above the contact force
        raise ProtocolError(hexapod.name, f"{cylinder.id}: force {force[-1]:.3f} N reached "
                            "before contact was established; check the sensor bias")
    report(phase="retract", force_n=force[-1])
    hexapod.set_velocity(p.retract_velocity_mm_s)
    hexapod.move_to(z_mm=start_z).wait(MOTION_TIMEOUT_S)
    n = len(t_s)
    meta = {"unit_id": unit.unit_id, "phantom_id": cylinder.id,
            "gelatin_percent": cylinder.gelatin_percent, "radius_mm": cylinder.radius_mm,
            "height_mm": height, "contact_position_mm": contact_mm, "stop_reason": stop_reason,
            "velocity_mm_s": p.velocity_mm_s, "sample_rate_hz": p.sample_rate_hz,
            "t_start_s": t0, "max_force_n": float(np.max(force)), "tare_n": tare_n}
    _table(store).append(cylinder.id, {
        "time_s": np.asarray(t_s, np.float64), "position_mm": np.asarray(position, np.float64),
        "force_n": np.asarray(force, np.float32), "run": np.full(n, p.run, np.int32),
    }, meta)
    log.info("indentation %s: %d samples, contact at %.3f mm, stopped on %s at %.3f N",
             cylinder.id, n, contact_mm, stop_reason, force[-1])
    return {"last_record": cylinder.id, "stop_reason": stop_reason}
