"""Small simulated-lab session configs for tests, benchmarks and demos.

Sizes are cut far below the paper's so a whole session runs in seconds: indentation at 0.1 mm/s
sampled at 50 Hz from 0.2 mm above the cylinder, SWEI on a 40 x 64 pixel grid with a few pushes,
compression RF of a few hundred samples. Physics and code paths are those of a full session.
"""

from __future__ import annotations

from typing import Any

from lab.config import SessionConfig, parse_config


def tiny_config_dict(
    *, protocols: tuple[str, ...] = ("indentation", "swei", "compression"), positions: int = 2,
    push_elements: tuple[int, ...] = (48, 80), frames: int = 20, seed: int = 3,
    sensor_timeout_s: float = 0.3, max_retries: int = 2,
) -> dict[str, Any]:
    """A tiny all-simulated session as a plain dict (edit it, then :func:`parse_config`)."""
    sensor = {"backend": "sim", "rate_hz": 50.0, "timeout_s": sensor_timeout_s}
    protos: list[dict[str, Any]] = []
    if "indentation" in protocols:
        protos.append({"kind": "indentation", "cylinders": ["cyl-7.5", "cyl-17.5"],
                       "velocity_mm_s": 0.1, "sample_rate_hz": 50.0, "approach_gap_mm": 0.2})
    if "swei" in protocols:
        protos.append({"kind": "swei", "blocks": ["block-a"], "positions_per_block": positions,
                       "push_elements": list(push_elements), "frames": frames, "depth_px": 40,
                       "lateral_px": 64, "seed": seed})
    if "compression" in protocols:
        protos.append({"kind": "compression", "blocks": ["block-a"], "strains": [0.0, 0.01],
                       "depth_samples": 400, "lines": 32})
    return {
        "name": "tiny",
        "max_retries": max_retries,
        # the probe watch at 100 Hz: fast enough for the stiffest block it may press (config)
        "lab": {"sim_seed": seed,
                "probe_force_sensor": {**sensor, "rate_hz": 100.0, "model": "nano43"},
                "indenter_force_sensor": {**sensor, "model": "nano17"},
                "ultrasound": {"backend": "sim", "fidelity": "image", "snr_db": 30.0}},
        "safety": {"push_min_interval_s": 0.5},
        "phantoms": [
            {"kind": "cylinder", "id": "cyl-7.5", "gelatin_percent": 7.5},
            {"kind": "cylinder", "id": "cyl-17.5", "gelatin_percent": 17.5},
            {"kind": "block", "id": "block-a", "gelatin_percent": 7.5, "speckle_seed": 1},
            {"kind": "block", "id": "block-incl", "gelatin_percent": 7.5, "speckle_seed": 2,
             "inclusions": [{"x_mm": 0.0, "z_mm": 10.0, "radius_mm": 4.0,
                             "gelatin_percent": 15.0}]},
        ],
        "protocols": protos,
    }


def tiny_config(**kwargs: Any) -> SessionConfig:
    """:func:`tiny_config_dict` validated."""
    return parse_config(tiny_config_dict(**kwargs), source="tiny_config")
