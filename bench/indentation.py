"""Indentation of one demo cylinder on the simulated lab: wall time and wire round trips per sample.

Runs a session with one indentation unit at the default demo's settings (one 7.5 % cylinder,
40 mm high, 0.3 mm approach gap, 0.01 mm/s, 200 Hz; about 62 000 samples) through the real drivers
on their wire protocols (GCS over TCP, RDT over UDP), and counts on the simulators' side what
crossed the wire: GCS request/reply round trips, GCS commands, RDT requests and RDT records. The
reference, timed in the same run, is the simulated world alone: the same number of force and
position evaluations without any wire, driver, guard or protocol; the ratio says what the links
and the protocol cost on top of the physics. Wall time and process CPU time (all threads) are both
reported: on a loaded machine the CPU time says how much work the links do, the wall time how
long a user waits.

    PYTHONPATH=$PWD .venv/bin/python bench/indentation.py [--quick]

``--quick`` drives at 0.05 mm/s (a fifth of the samples). Results go to
``bench/results/indentation.json`` (or ``--out``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import parser, write_results

from drivers.sim.phantom import CylinderPhantom
from drivers.sim.world import SimWorld
from lab.clock import SimClock
from lab.config import parse_config
from lab.devices import build_devices
from lab.session import run_session
from lab.store import SessionStore
from protocols.indentation import TABLE


def _config(velocity_mm_s: float) -> Any:
    return parse_config({
        "name": "bench-indentation",
        "lab": {"sim_seed": 0},
        "phantoms": [{"kind": "cylinder", "id": "cyl-7.5-0", "gelatin_percent": 7.5}],
        "protocols": [{"kind": "indentation", "cylinders": ["cyl-7.5-0"], "approach_gap_mm": 0.3,
                       "sample_rate_hz": 200.0, "velocity_mm_s": velocity_mm_s}],
    }, source="bench/indentation.py")


def _wire_counts(sim: Any) -> dict[str, int]:
    gcs, netft = sim.gcs_server, sim.indenter_netft_server
    return {"gcs_round_trips": gcs.round_trips, "gcs_commands": gcs.commands_handled,
            "rdt_requests": netft.requests_received, "rdt_records": netft.records_sent}


def _session(path: Path, velocity_mm_s: float) -> tuple[float, float, int, dict[str, int]]:
    """Wall time and process CPU time (all threads: drivers, simulators, protocol) of the
    session, indentation samples stored, wire counts of the drive."""
    holder: list[Any] = []
    before: dict[str, int] = {}

    def factory(config: Any) -> Any:
        devices = build_devices(config)
        holder.append(devices)
        before.update(_wire_counts(devices.sim_lab))  # connection handshakes are not counted
        return devices

    t, cpu = time.perf_counter(), time.process_time()
    result = run_session(_config(velocity_mm_s), path, devices_factory=factory,
                         show_progress=False)
    elapsed, cpu = time.perf_counter() - t, time.process_time() - cpu
    if result.status != "complete":
        raise RuntimeError(f"benchmark session ended {result.status}: {result.message}")
    after = _wire_counts(holder[0].sim_lab)
    samples = SessionStore.open(path).root[TABLE]["force_n"].shape[0]
    return elapsed, cpu, int(samples), {k: after[k] - before[k] for k in after}


def _world_only(samples: int, rate_hz: float, velocity_mm_s: float) -> tuple[float, float]:
    """Reference: the simulated world's force and plate position, sampled ``samples`` times
    (wall and CPU seconds)."""
    clock = SimClock()
    world = SimWorld(clock, np.random.default_rng(0), blocks=[],
                     cylinder=CylinderPhantom("cyl-7.5-0", 7.5))
    try:
        world.hexapod_move({"X": 0.0, "Y": 0.0, "Z": -10.0, "U": 0.0, "V": 0.0, "W": 0.0},
                           velocity_mm_s=velocity_mm_s)
        t, cpu = time.perf_counter(), time.process_time()
        for _ in range(samples):
            clock.advance(1.0 / rate_hz)
            world.sensor_wrench("indenter_sensor")
            world.hexapod_position()
        return time.perf_counter() - t, time.process_time() - cpu
    finally:
        world.close()


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    velocity = 0.05 if args.quick else 0.01
    tmp = Path(tempfile.mkdtemp(prefix="bench-indentation-"))
    try:
        elapsed, cpu, samples, wire = _session(tmp / "indentation.zarr", velocity)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    reference, reference_cpu = _world_only(samples, 200.0, velocity)
    per_sample = {k: v / samples for k, v in wire.items()}
    round_trips = (wire["gcs_round_trips"] + wire["rdt_requests"]) / samples
    print(f"indentation of one cylinder: {samples} samples in {elapsed:.1f} s "
          f"({elapsed / samples * 1e6:.0f} us per sample), CPU {cpu:.1f} s")
    print(f"wire per sample: {round_trips:.3f} request/reply round trips "
          f"({per_sample['gcs_round_trips']:.3f} GCS, {per_sample['rdt_requests']:.3f} RDT "
          f"requests), {per_sample['gcs_commands']:.3f} GCS commands, "
          f"{per_sample['rdt_records']:.3f} RDT records")
    print(f"reference (world only): {reference:.2f} s, CPU {reference_cpu:.2f} s; session / "
          f"reference = {elapsed / reference:.1f} (wall), {cpu / reference_cpu:.1f} (CPU)")
    write_results("indentation", {
        "velocity_mm_s": velocity, "samples": samples, "session_s": elapsed,
        "session_cpu_s": cpu, "us_per_sample": elapsed / samples * 1e6,
        "round_trips_per_sample": round_trips,
        "wire_per_sample": per_sample, "wire_totals": wire, "reference_world_only_s": reference,
        "reference_world_only_cpu_s": reference_cpu, "ratio_to_reference": elapsed / reference,
        "cpu_ratio_to_reference": cpu / reference_cpu,
    }, args.out)


if __name__ == "__main__":
    main()
