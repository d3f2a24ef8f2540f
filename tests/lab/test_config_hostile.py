"""Hostile configs: every unsafe or absurd value is refused naming the file, the key and the value.

Each case edits the shipped ``configs/sim-lab.toml`` (which must stay valid) in one place, writes it
to a file and loads it; the error must name that file, the key and the bad value.
"""

from __future__ import annotations

import copy
import math
import tomllib
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from lab.config import (
    MAX_PLAN_UNITS,
    BlockConfig,
    ConfigError,
    load_config,
    parse_config,
    planned_unit_count,
    stiffest_contacts_n_per_m,
)
from lab.force_bounds import ELONGATED_FACE_FACTOR, min_watch_rate_hz
from lab.gelatin import youngs_modulus_kpa

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE: dict[str, Any] = tomllib.loads((CONFIGS / "sim-lab.toml").read_text())
INF, NAN = math.inf, math.nan


def edited(edits: dict[str, Any]) -> dict[str, Any]:
    """A copy of the sim-lab config with dotted keys set (numbers index lists)."""
    data = copy.deepcopy(BASE)
    for dotted, value in edits.items():
        *path, last = dotted.split(".")
        node: Any = data
        for part in path:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return data


def write_toml(data: dict[str, Any], path: Path) -> Path:
    path.write_text(tomli_w.dumps(data))
    return path


def many_blocks(n_blocks: int, positions: int) -> dict[str, Any]:
    """sim-lab with ``n_blocks`` extra blocks, each at ``positions`` SWEI positions."""
    data = copy.deepcopy(BASE)
    ids = [f"big-{i}" for i in range(n_blocks)]
    data["phantoms"] += [{"kind": "block", "id": i, "gelatin_percent": 7.5} for i in ids]
    data["protocols"] = [{"kind": "swei", "blocks": ids, "positions_per_block": positions}]
    return data


# (case id, edits, key the message must name, value text it must show)
HOSTILE: list[tuple[str, dict[str, Any], str, str]] = [
    # all floats finite
    ("inf force limit", {"safety.probe_force_max_n": INF}, "safety.probe_force_max_n", "inf"),
    ("inf speed cap", {"safety.robot_speed_max_m_s": INF}, "safety.robot_speed_max_m_s", "inf"),
    ("inf hexapod velocity", {"safety.hexapod_velocity_max_mm_s": INF},
     "safety.hexapod_velocity_max_mm_s", "inf"),
    ("nan workspace box", {"safety.workspace_min_m": [NAN, -0.45, 0.0]},
     "safety.workspace_min_m.0", "nan"),
    ("infinite workspace box", {"safety.workspace_max_m": [0.35, -0.15, INF]},
     "safety.workspace_max_m.2", "inf"),
    ("nan strain", {"protocols.2.strains": [0.0, NAN, 0.02]},
     "protocols.2.compression.strains.1", "nan"),
    ("nan inclusion coordinate", {"phantoms.3.inclusions.0.x_mm": NAN},
     "phantoms.3.block.inclusions.0.x_mm", "nan"),
    ("nan hexapod limit", {"safety.hexapod_limits_mm": {"Z": [NAN, 25.0]}},
     "safety.hexapod_limits_mm.Z.0", "nan"),
    # limits within the hardware of the configured instruments
    ("force limit above the probe sensor range", {"safety.compression_force_max_n": 9.5},
     "safety.compression_force_max_n", "9.5"),
    ("force limit above the nano17 range once the probe sensor is a nano43",
     {"safety.probe_force_max_n": 12.0}, "safety.probe_force_max_n", "12.0"),
    ("indentation limit above the protocol limit", {"safety.indentation_force_limit_n": 5.0},
     "safety.indentation_force_limit_n", "above 2 N"),
    ("hexapod limits beyond H-820 travel", {"safety.hexapod_limits_mm": {"Z": [-30.0, 25.0]}},
     "hexapod_limits_mm.Z", "[-30.0, 25.0]"),
    ("hexapod velocity cap beyond the H-820", {"safety.hexapod_velocity_max_mm_s": 50.0},
     "safety.hexapod_velocity_max_mm_s", "50.0"),
    ("robot speed cap beyond collaborative speed", {"safety.robot_speed_max_m_s": 1.0},
     "safety.robot_speed_max_m_s", "1.0"),
    ("robot acceleration cap", {"safety.robot_acceleration_max_m_s2": 10.0},
     "safety.robot_acceleration_max_m_s2", "10.0"),
    ("workspace box outside UR3 reach", {"safety.workspace_max_m": [0.9, -0.15, 0.35]},
     "safety.workspace_min_m / workspace_max_m", "[0.9, -0.15, 0.35]"),
    ("payload above UR3 rating", {"lab.robot.payload_kg": 5.0}, "lab.robot.payload_kg", "5.0"),
    ("hexapod axis that does not exist", {"safety.hexapod_limits_mm": {"Q": [-1.0, 1.0]}},
     "safety.hexapod_limits_mm.Q", "'Q'"),
    # rates and counts within bounds
    ("force watch rate 1e-6 Hz", {"lab.probe_force_sensor.rate_hz": 1e-6},
     "lab.probe_force_sensor.rate_hz", "1e-06"),
    ("force watch rate below the derived minimum", {"lab.probe_force_sensor.rate_hz": 10.0},
     "lab.probe_force_sensor.rate_hz", "10.0"),
    ("indenter watch too slow for the hexapod velocity cap",
     {"lab.indenter_force_sensor.rate_hz": 2.0}, "lab.indenter_force_sensor.rate_hz", "2.0"),
    ("force rate above the Net F/T maximum", {"lab.probe_force_sensor.rate_hz": 1e6},
     "lab.probe_force_sensor.rate_hz", "1000000.0"),
    ("positions_per_block 1e8", {"protocols.1.positions_per_block": 100_000_000},
     "protocols.1.swei.positions_per_block", "100000000"),
    ("robot watchdog at 0 Hz", {"lab.robot.watchdog_min_frequency_hz": 0.0},
     "lab.robot.watchdog_min_frequency_hz", "0.0"),
    ("indentation sampled faster than its sensor", {"protocols.0.sample_rate_hz": 500.0},
     "protocols[0].sample_rate_hz", "500.0"),
    ("push element outside the probe", {"protocols.1.push_elements": [48, 200]},
     "protocols.1.swei.push_elements.1", "200"),
    ("push aperture off the array", {"protocols.1.push_elements": [2, 48]},
     "protocols.1.swei.push_elements.0", "2"),
    ("SWEI sequence too large", {"protocols.1.frames": 500, "protocols.1.depth_px": 4096,
                                 "protocols.1.lateral_px": 4096},
     "protocols.1.swei", "500 x 4096 x 4096"),
    ("push interval 0", {"safety.push_min_interval_s": 0.0},
     "safety.push_min_interval_s", "0.0"),
    ("link timeout 1e9 s", {"lab.probe_force_sensor.timeout_s": 1e9},
     "lab.probe_force_sensor.timeout_s", "1000000000.0"),
    # seeds >= 0
    ("negative world seed", {"lab.sim_seed": -1}, "lab.sim_seed", "-1"),
    ("negative SWEI seed", {"protocols.1.seed": -5}, "protocols.1.swei.seed", "-5"),
    ("negative speckle seed", {"phantoms.2.speckle_seed": -2},
     "phantoms.2.block.speckle_seed", "-2"),
    # ids in a safe character set
    ("id with a slash", {"phantoms.0.id": "cyl/../x"}, "phantoms.0.cylinder.id", "'cyl/../x'"),
    ("id with ..", {"phantoms.0.id": "a..b"}, "phantoms.0.cylinder.id", "'a..b'"),
    ("id with a newline", {"phantoms.0.id": "cyl\nx"}, "phantoms.0.cylinder.id", r"'cyl\nx'"),
    ("id with a control character", {"phantoms.0.id": "cyl\x07"}, "phantoms.0.cylinder.id",
     r"'cyl\x07'"),
    ("empty id", {"phantoms.0.id": ""}, "phantoms.0.cylinder.id", "''"),
    ("session name with a slash", {"name": "../etc"}, "name", "'../etc'"),
    ("host with a space", {"lab.robot": {"backend": "ur_rtde", "host": "10.0.0.1 x"}},
     "lab.robot.host", "'10.0.0.1 x'"),
    # backends: settings of another backend are unknown keys
    ("serial sensor with a host",
     {"lab.indenter_force_sensor": {"backend": "serial", "model": "nano17",
                                    "serial_port": "/dev/ttyUSB0", "host": "10.0.0.5"}},
     "lab.indenter_force_sensor.host", "'10.0.0.5'"),
    ("sim hexapod with a host", {"lab.hexapod": {"backend": "sim", "host": "10.0.0.2"}},
     "lab.hexapod.host", "'10.0.0.2'"),
    ("removed key robot.timeout_s", {"lab.robot.timeout_s": 5.0}, "lab.robot.timeout_s", "5.0"),
    ("unknown backend", {"lab.ultrasound.backend": "verasonics"}, "lab.ultrasound.backend",
     "'verasonics'"),
    # cross-field: geometry
    ("inclusion outside its block", {"phantoms.3.inclusions.0.z_mm": 98.0},
     "phantoms.3.block", "z_mm 98.0"),
]


@pytest.mark.parametrize(("edits", "key", "value"), [c[1:] for c in HOSTILE],
                         ids=[c[0] for c in HOSTILE])
def test_hostile_config_is_refused_naming_file_key_and_value(
        tmp_path: Path, edits: dict[str, Any], key: str, value: str) -> None:
    path = write_toml(edited(edits), tmp_path / "hostile.toml")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert key in msg, msg
    assert value in msg, msg


def test_the_base_of_the_hostile_cases_is_valid(tmp_path: Path) -> None:
    """Each refusal above comes from its edit: the unedited config loads."""
    assert load_config(write_toml(edited({}), tmp_path / "base.toml")).name == "sim-lab"


def test_empty_and_comment_only_files_are_refused(tmp_path: Path) -> None:
    for text in ("", "   \n", "# only a comment\n"):
        path = tmp_path / "empty.toml"
        path.write_text(text)
        with pytest.raises(ConfigError, match=r"empty.toml: the file is empty"):
            load_config(path)
    path = tmp_path / "binary.toml"
    path.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(path)


def test_watch_rate_bound_is_the_stated_formula() -> None:
    """The refused rate of the case above is below speed x stiffness / (5 % x limit); the
    first rate above it loads."""
    cfg = parse_config(edited({}))
    k, _ = stiffest_contacts_n_per_m(cfg)
    # The stiffest gelatin under the probe (blocks and their inclusions) under a 400 mm^2 flat
    # punch: 2 a E / (1 - nu^2) with a = sqrt(A / pi), times the factor of the 4:1 probe face.
    stiffest_kpa = max(youngs_modulus_kpa(pct) for p in cfg.phantoms if isinstance(p, BlockConfig)
                       for pct in (p.gelatin_percent, *(i.gelatin_percent for i in p.inclusions)))
    assert stiffest_kpa > 37.55  # the sim-lab config has a stiff inclusion: it counts
    assert k == pytest.approx(ELONGATED_FACE_FACTOR * 2 * math.sqrt(400e-6 / math.pi)
                              * stiffest_kpa * 1e3 / 0.75, rel=1e-9)
    needed = min_watch_rate_hz(2.0, speed_m_s=0.002, stiffness_n_per_m=k)
    assert needed == pytest.approx(0.002 * k / 0.1)
    parse_config(edited({"lab.probe_force_sensor.rate_hz": math.ceil(needed)}))
    with pytest.raises(ConfigError, match=f"allowed >= {needed:.1f} Hz"):
        parse_config(edited({"lab.probe_force_sensor.rate_hz": math.floor(needed)}))


def test_plan_size_bound_is_exact() -> None:
    assert planned_unit_count(parse_config(many_blocks(10, 1000))) == MAX_PLAN_UNITS == 10_000
    with pytest.raises(ConfigError, match=f"plan {MAX_PLAN_UNITS + 1000} units"):
        parse_config(many_blocks(11, 1000))
