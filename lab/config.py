"""Session configuration: one pydantic tree, loaded from TOML once at the CLI edge.

A session file has four parts (see ``configs/sim-lab.toml``):

``[lab]``        each instrument: ``backend = "sim"`` or a real backend, address, port, timeouts
``[safety]``     force limits, robot workspace box and speed caps, hexapod soft limits, push duty
``[[phantoms]]`` the phantoms on the bench (blocks with inclusions, cylinders)
``[[protocols]]`` what to run, in order: ``kind = "indentation" | "swei" | "compression"``

Every model forbids unknown keys so a typo fails before anything moves, and
:func:`load_config` turns a validation error into one message naming the file, the key, the bad
value and what is allowed.

What is refused
---------------
Every float must be finite (``inf`` and ``nan`` are refused everywhere). Each instrument's section
is its own model, chosen by ``backend`` (``"sim"`` when omitted), so a setting of another backend
(a ``host`` for a serial sensor) is an unknown key. Every number has bounds stated in its
description: hardware ranges of the configured instruments (sensor range, H-820 travel and
velocity, UR3 payload, reach and a collaborative speed cap), rates and counts that keep planning
and a session tractable (at most :data:`MAX_PLAN_UNITS` units), and the minimum force-watch rate
that keeps the overshoot of a stopped press within
:data:`lab.force_bounds.OVERSHOOT_FRACTION` of its limit
(:func:`lab.force_bounds.min_watch_rate_hz`). Ids and names use :data:`SAFE_ID_PATTERN` (they
become store keys and file names). An empty file is refused.

Bench geometry
--------------
The automatic bench layout (:func:`bench_layout`), the travel height (:func:`travel_z_m`) and the
probe constants that planning, the simulated lab and the limit checks share live here, below
``protocols`` and ``drivers.sim``, so building a lab needs no protocol code.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import tomllib
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    model_validator,
)

from lab.force_bounds import (
    OVERSHOOT_FRACTION,
    cylinder_stiffness_n_per_m,
    min_watch_rate_hz,
    probe_contact_stiffness_n_per_m,
)
from lab.gelatin import (
    GELATIN_YOUNGS_MODULUS_KPA,
    youngs_modulus_kpa,
)

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file could not be read or is invalid; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- hardware ranges and derived bounds ------------------------------------------------------------
# Datasheet figures of the instruments a config may name. They are copies of the drivers' specs
# (drivers/force/spec.py, drivers/hexapod/gcs.py, drivers/ultrasound/sequences.py) because the
# config is a foundation and imports no driver; tests/lab/test_config_backends.py checks that
# they agree.
#: Fz sensing range (N) of each force/torque transducer a config may name, by ``model``.
SENSOR_FZ_RANGE_N: dict[str, float] = {"nano17": 17.0, "nano43": 9.0}
#: Largest force any configured sensor can read (N).
FORCE_RANGE_MAX_N = max(SENSOR_FZ_RANGE_N.values())
#: PI H-820 travel per GCS axis (mm for X Y Z, deg for U V W); see ``drivers.hexapod.gcs.H820``.
H820_TRAVEL: dict[str, tuple[float, float]] = {
    "X": (-50.0, 50.0), "Y": (-50.0, 50.0), "Z": (-25.0, 25.0),
    "U": (-15.0, 15.0), "V": (-15.0, 15.0), "W": (-30.0, 30.0),
}
#: PI H-820 velocity limit (mm/s).
H820_VELOCITY_MAX_MM_S = 20.0
#: UR3 reach (m): the tool flange stays within this distance of the shoulder joint.
UR3_REACH_M = 0.5
#: Height of the UR3 shoulder joint above the base frame origin (m, DH parameter d1).
UR3_SHOULDER_HEIGHT_M = 0.1519
#: UR3 rated payload (kg).
UR3_PAYLOAD_MAX_KG = 3.0
#: Tool speed cap we allow (m/s): the 250 mm/s reduced speed of collaborative operation
#: (ISO 10218-1); the UR3 itself moves the tool at up to 1 m/s.
ROBOT_SPEED_LIMIT_M_S = 0.25
#: Tool acceleration cap we allow (m/s^2); ur_rtde's moveL default is 1.2 m/s^2.
ROBOT_ACCELERATION_LIMIT_M_S2 = 2.0
#: Highest RDT rate of an ATI Net F/T (Hz).
FORCE_RATE_MAX_HZ = 7000.0
#: Elements of the linear probe (push elements are 0-based indices into it).
PROBE_ELEMENTS = 128
#: Elements of a push sub-aperture (``PushSequence`` default); its centre keeps it on the array.
PUSH_APERTURE_ELEMENTS = 11
_PUSH_CENTRE_MIN = PUSH_APERTURE_ELEMENTS // 2
_PUSH_CENTRE_MAX = PROBE_ELEMENTS - 1 - PUSH_APERTURE_ELEMENTS // 2
#: Most units one session may plan: keeps planning, the dry run and the plan check fast (the
#: paper's acquisition is a few hundred units).
MAX_PLAN_UNITS = 10_000
#: Most values one SWEI sequence (frames x depth x lateral) or compression frame (samples x
#: lines) may hold: 8x the paper's SWEI sequence of 35 x 250 x 600.
MAX_SEQUENCE_VALUES = 42_000_000
#: Largest seed (seeds are unsigned 32-bit so every generator and the stored JSON take them).
SEED_MAX = 2**32 - 1

#: Ids (phantoms, session name): a letter or digit, then letters, digits, ``_``, ``.``, ``-``;
#: 1-64 characters; no ``..``. They become store keys, unit ids and file names.
SAFE_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}"
_HOST_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9.:\-]{0,251}[A-Za-z0-9])?"
_SERIAL_PORT_PATTERN = r"[A-Za-z0-9_/.:\-]{1,255}"
_MODULE_PATTERN = r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*"


def _matching(pattern: str, what: str) -> Callable[[str], str]:
    compiled = re.compile(pattern)

    def check(value: str) -> str:
        if not compiled.fullmatch(value) or ".." in value:
            raise ValueError(f"not a valid {what}; allowed: {pattern} (no '..', spaces or "
                             "control characters)")
        return value

    return check


SafeId = Annotated[str, AfterValidator(_matching(
    SAFE_ID_PATTERN, "id (1-64 letters, digits, '_', '.', '-', starting with a letter or digit)"))]
Host = Annotated[str, AfterValidator(_matching(_HOST_PATTERN, "host name or IP address"))]
SerialPort = Annotated[str, AfterValidator(_matching(_SERIAL_PORT_PATTERN, "serial port"))]
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Port = Annotated[int, Field(ge=1, le=65535)]
LinkTimeout = Annotated[float, Field(ge=0.01, le=120.0)]
ForceLimit = Annotated[float, Field(ge=0.05, le=FORCE_RANGE_MAX_N)]

GelatinPercent = Annotated[
    float,
    Field(ge=min(GELATIN_YOUNGS_MODULUS_KPA), le=max(GELATIN_YOUNGS_MODULUS_KPA),
          description="gelatin concentration in % by weight (calibrated 5-17.5 %)"),
]

#: Probe orientation [rx, ry, rz] (rad): face down.
PROBE_DOWN_RAD = (float(np.pi), 0.0, 0.0)
#: Distance between neighbouring block centres on the bench (m).
BLOCK_SPACING_M = 0.15
#: y of the block centres in the robot base frame (m).
BENCH_Y_M = -0.30
#: Height of travel moves above the tallest block top (m).
TRAVEL_CLEARANCE_M = 0.020
#: Probe speed while looking for contact (m/s); the force-watch rate bound assumes it.
APPROACH_SPEED_M_S = 0.002


def _described(model: type[BaseModel]) -> type[BaseModel]:
    """Refuse, at import, a model with a field lacking a description (issue 16)."""
    missing = [n for n, f in model.model_fields.items() if not f.description]
    if missing:
        raise TypeError(f"{model.__name__}: fields without a description: {missing}")
    return model


# -- instruments ---------------------------------------------------------------------------------
def _backend_tag(value: Any) -> Any:
    """The ``backend`` of an instrument section; ``"sim"`` when the key is omitted."""
    if isinstance(value, dict):
        return value.get("backend", "sim")
    return getattr(value, "backend", "sim")


class _RobotCommon(_Model):
    payload_kg: float = Field(0.35, ge=0.0, le=UR3_PAYLOAD_MAX_KG,
                              description="probe + holder + Nano43 mass (kg, 0-3: UR3 payload)")
    tcp_offset_m: tuple[
        Annotated[float, Field(ge=-0.3, le=0.3)], Annotated[float, Field(ge=-0.3, le=0.3)],
        Annotated[float, Field(ge=-0.3, le=0.3)], Annotated[float, Field(ge=-7.0, le=7.0)],
        Annotated[float, Field(ge=-7.0, le=7.0)], Annotated[float, Field(ge=-7.0, le=7.0)],
    ] = Field((0.0, 0.0, 0.12, 0.0, 0.0, 0.0),
              description="tool centre point (probe face) in the flange frame: x y z in m "
              "(each within +/-0.3 m), rotation vector in rad (each within +/-7)")
    watchdog_min_frequency_hz: float = Field(
        10.0, ge=1.0, le=125.0,
        description="RTDE watchdog frequency (Hz, 1-125): the controller stops the robot when "
        "the host is silent for longer than 1/f s (lost link, crashed host); at most the "
        "driver's 125 Hz poll rate, at least 1 Hz so a silent host cannot let the arm run on "
        "for more than a second",
    )


@_described
class SimRobotConfig(_RobotCommon):
    backend: Literal["sim"] = Field("sim", description="simulated UR3 (ur_rtde's API in-process)")


@_described
class UrRtdeRobotConfig(_RobotCommon):
    backend: Literal["ur_rtde"] = Field(description="real UR3 through ur_rtde")
    host: Host = Field("127.0.0.1", description="UR controller address")


RobotConfig = Annotated[
    Annotated[SimRobotConfig, Tag("sim")] | Annotated[UrRtdeRobotConfig, Tag("ur_rtde")],
    Discriminator(_backend_tag),
]


@_described
class SimHexapodConfig(_Model):
    backend: Literal["sim"] = Field("sim", description="simulated H-820 (GCS over loopback)")


@_described
class GcsHexapodConfig(_Model):
    backend: Literal["gcs"] = Field(description="real PI H-820 on a C-887 controller (GCS)")
    host: Host = Field("127.0.0.1", description="GCS controller address")
    port: Port = Field(50000, description="GCS TCP port (50000 on PI controllers)")
    interface: Literal["pipython", "pyvisa"] = Field(
        "pipython", description="GCS client: PI's pipython, or pyvisa (pyvisa-py or NI-VISA)"
    )
    timeout_s: LinkTimeout = Field(5.0, description="reply timeout of each GCS command "
                                   "(s, 0.01-120)")


HexapodConfig = Annotated[
    Annotated[SimHexapodConfig, Tag("sim")] | Annotated[GcsHexapodConfig, Tag("gcs")],
    Discriminator(_backend_tag),
]


class _SensorCommon(_Model):
    model: Literal["nano17", "nano43"] = Field(
        "nano17", description="transducer: 'nano17' (Fz range 17 N) or 'nano43' (9 N)"
    )
    rate_hz: float = Field(
        200.0, ge=1.0, le=FORCE_RATE_MAX_HZ,
        description="force-stream rate, also the force-watch rate (Hz, 1-7000: the Net F/T's "
        "RDT maximum); at least lab.force_bounds.min_watch_rate_hz for the stiffest configured "
        "phantom",
    )
    timeout_s: LinkTimeout = Field(1.0, description="timeout of one force reading (s, 0.01-120)")


class _CalibratedSensor(_SensorCommon):
    counts_per_force: float = Field(1_000_000.0, gt=0.0, le=1e9,
                                    description="counts per N, from the sensor calibration")
    counts_per_torque: float = Field(1_000_000.0, gt=0.0, le=1e9,
                                     description="counts per N m, from the sensor calibration")


@_described
class SimForceSensorConfig(_SensorCommon):
    backend: Literal["sim"] = Field("sim", description="simulated Net F/T (RDT over loopback)")


@_described
class NetFtSensorConfig(_CalibratedSensor):
    backend: Literal["netft"] = Field(description="ATI Net F/T, RDT over UDP")
    host: Host = Field("127.0.0.1", description="Net F/T address")
    port: Port = Field(49152, description="RDT UDP port (49152 on Net F/T)")


@_described
class SerialFtSensorConfig(_CalibratedSensor):
    backend: Literal["serial"] = Field(description="F/T controller on RS-232 (ASCII queries)")
    serial_port: SerialPort = Field(description="e.g. /dev/ttyUSB0 or COM3")
    baudrate: Literal[9600, 19200, 38400, 57600, 115200, 230400] = Field(
        115200, description="RS-232 rate (a standard rate, 9600-230400)"
    )


ForceSensorConfig = Annotated[
    Annotated[SimForceSensorConfig, Tag("sim")] | Annotated[NetFtSensorConfig, Tag("netft")]
    | Annotated[SerialFtSensorConfig, Tag("serial")],
    Discriminator(_backend_tag),
]


@_described
class SimUltrasoundConfig(_Model):
    backend: Literal["sim"] = Field("sim", description="simulated Cicada (physics of PHYSICS.md)")
    fidelity: Literal["image", "channel"] = Field(
        "image", description="IQ directly ('image') or channel RF + beamforming ('channel')"
    )
    snr_db: float = Field(30.0, ge=0.0, le=80.0, description="electronic noise (dB, 0-80)")


@_described
class CicadaUltrasoundConfig(_Model):
    backend: Literal["cicada"] = Field(description="Cephasonics Cicada through its SDK")
    sdk_module: Annotated[str, AfterValidator(_matching(_MODULE_PATTERN, "module name"))] = Field(
        "cephasonics", description="Python module of the Cephasonics SDK"
    )
    timeout_s: LinkTimeout = Field(10.0, description="timeout of one acquisition (s, 0.01-120)")


UltrasoundConfig = Annotated[
    Annotated[SimUltrasoundConfig, Tag("sim")] | Annotated[CicadaUltrasoundConfig, Tag("cicada")],
    Discriminator(_backend_tag),
]

def _backend_models(union: Any) -> dict[str, type[_Model]]:
    """``{backend: model}`` of an instrument union above."""
    members = get_args(get_args(union)[0])
    return {get_args(m)[1].tag: get_args(m)[0] for m in members}


#: The instrument sections of ``[lab]`` and the models their ``backend`` selects.
INSTRUMENT_MODELS: dict[str, dict[str, type[_Model]]] = {
    "robot": _backend_models(RobotConfig),
    "hexapod": _backend_models(HexapodConfig),
    "probe_force_sensor": _backend_models(ForceSensorConfig),
    "indenter_force_sensor": _backend_models(ForceSensorConfig),
    "ultrasound": _backend_models(UltrasoundConfig),
}


@_described
class LabConfig(_Model):
    robot: RobotConfig = Field(SimRobotConfig(), description="the UR3 holding the probe")
    hexapod: HexapodConfig = Field(SimHexapodConfig(), description="the H-820 indenter")
    probe_force_sensor: ForceSensorConfig = Field(
        SimForceSensorConfig(model="nano43"), description="Nano43 between flange and probe")
    indenter_force_sensor: ForceSensorConfig = Field(
        SimForceSensorConfig(model="nano17"), description="Nano17 under the hexapod plate")
    ultrasound: UltrasoundConfig = Field(SimUltrasoundConfig(), description="the scanner")
    sim_seed: Seed = Field(0, description="seed of the simulated world (sim backends only; "
                           "0 to 2^32-1)")


# -- safety --------------------------------------------------------------------------------------
Coordinate = Annotated[float, Field(ge=-1.0, le=1.0)]


@_described
class SafetyConfig(_Model):
    indentation_force_limit_n: ForceLimit = Field(
        2.0, description="hexapod stops above this (N, 0.05-2: the SWEI protocol limit, and "
        "below the indenter sensor's Fz range)")
    probe_force_max_n: ForceLimit = Field(
        2.0, description="probe contact force never exceeds (N, >= 0.05, below the probe "
        "sensor's Fz range)")
    workspace_min_m: tuple[Coordinate, Coordinate, Coordinate] = Field(
        (-0.35, -0.45, 0.0), description="robot tool workspace box, lower corner (base frame, m)"
    )
    workspace_max_m: tuple[Coordinate, Coordinate, Coordinate] = Field(
        (0.35, -0.15, 0.35), description="robot tool workspace box, upper corner (base frame, "
        "m); every corner within UR3 reach (0.5 m) plus the tool length of the shoulder"
    )
    robot_speed_max_m_s: float = Field(
        0.05, gt=0.0, le=ROBOT_SPEED_LIMIT_M_S,
        description="linear speed cap (m/s, at most 0.25: collaborative reduced speed)")
    robot_acceleration_max_m_s2: float = Field(
        0.5, gt=0.0, le=ROBOT_ACCELERATION_LIMIT_M_S2,
        description="linear acceleration cap (m/s^2, at most 2)")
    hexapod_limits_mm: dict[Literal["X", "Y", "Z", "U", "V", "W"], tuple[float, float]] = Field(
        default_factory=lambda: {"X": (-10.0, 10.0), "Y": (-10.0, 10.0), "Z": (-10.0, 25.0)},
        description="hexapod soft limits per GCS axis (mm for X Y Z, deg for U V W), inside "
        "the H-820 travel: X Y +/-50, Z +/-25, U V +/-15, W +/-30",
    )
    push_min_interval_s: float = Field(
        0.5, ge=0.1, le=60.0,
        description="minimum time between ARF pushes (transducer duty cycle; s, 0.1-60)"
    )
    compression_force_max_n: ForceLimit = Field(
        8.0, description="probe force limit while compressing a block (quasi-static protocol; "
        "a few % strain of a 100 mm block needs several N; below the probe sensor's Fz range)"
    )
    hexapod_velocity_max_mm_s: float = Field(
        1.0, gt=0.0, le=H820_VELOCITY_MAX_MM_S,
        description="hexapod velocity cap (mm/s, at most the H-820's 20 mm/s)"
    )

    @model_validator(mode="after")
    def _box_ordered(self) -> SafetyConfig:
        for axis, lo, hi in zip("xyz", self.workspace_min_m, self.workspace_max_m, strict=True):
            if not lo < hi:
                raise ValueError(f"workspace {axis}: min {lo} must be < max {hi}")
        for axis, (lo, hi) in self.hexapod_limits_mm.items():
            t_lo, t_hi = H820_TRAVEL[axis]
            if not lo < hi:
                raise ValueError(f"hexapod {axis}: lower limit {lo} must be < upper {hi}")
            if not t_lo <= lo < hi <= t_hi:
                raise ValueError(f"hexapod_limits_mm.{axis} = {[lo, hi]}: outside the H-820 "
                                 f"travel; allowed within [{t_lo}, {t_hi}]")
        return self


# -- phantoms ------------------------------------------------------------------------------------
@_described
class InclusionConfig(_Model):
    x_mm: float = Field(description="lateral centre in the block frame (0 = block centre, mm)")
    z_mm: float = Field(gt=0.0, description="depth of the centre below the top surface (mm)")
    radius_mm: float = Field(ge=0.5, le=100.0, description="radius (mm, 0.5-100)")
    gelatin_percent: GelatinPercent


BlockSide = Annotated[float, Field(ge=10.0, le=300.0)]


@_described
class BlockConfig(_Model):
    kind: Literal["block"] = Field("block", description="a block for SWEI and compression")
    id: SafeId = Field(description="phantom id (letters, digits, _ . -; see SAFE_ID_PATTERN)")
    gelatin_percent: GelatinPercent
    size_mm: tuple[BlockSide, BlockSide, BlockSide] = Field(
        (100.0, 100.0, 100.0), description="x, y and height (mm, each 10-300)")
    inclusions: tuple[InclusionConfig, ...] = Field(
        (), max_length=20, description="cylindrical inclusions along y (at most 20), each "
        "wholly inside the block")
    viscosity_pa_s: float = Field(0.3, ge=0.0, le=10.0, description="Voigt viscosity (Pa s, "
                                  "0-10)")
    speckle_seed: Seed = Field(0, description="seed of the simulated speckle (0 to 2^32-1)")
    origin_m: tuple[Coordinate, Coordinate, Coordinate] | None = Field(
        None, description="robot base-frame position (x, y, z in m, each within +/-1) of the "
        "block's top-surface centre, block x along base x and depth along -z; None = automatic "
        "bench layout (a row along x at y = -0.30 m on a table at z = 0, see bench_layout)"
    )

    @model_validator(mode="after")
    def _inclusions_inside(self) -> BlockConfig:
        half_x, height = self.size_mm[0] / 2, self.size_mm[2]
        for i, inc in enumerate(self.inclusions):
            if abs(inc.x_mm) + inc.radius_mm > half_x or not inc.radius_mm < inc.z_mm < (
                    height - inc.radius_mm):
                raise ValueError(
                    f"inclusions[{i}] (x_mm {inc.x_mm}, z_mm {inc.z_mm}, radius_mm "
                    f"{inc.radius_mm}) is not inside the block {list(self.size_mm)} mm; allowed: "
                    "|x_mm| + radius_mm <= size_x / 2 and radius_mm < z_mm < height - radius_mm")
        return self


@_described
class CylinderConfig(_Model):
    kind: Literal["cylinder"] = Field("cylinder", description="a cylinder for indentation")
    id: SafeId = Field(description="phantom id (letters, digits, _ . -; see SAFE_ID_PATTERN)")
    gelatin_percent: GelatinPercent
    radius_mm: float = Field(10.0, ge=2.0, le=50.0, description="radius (mm, 2-50)")
    height_mm: float = Field(40.0, ge=5.0, le=100.0, description="height l0 (mm, 5-100)")


PhantomConfig = Annotated[BlockConfig | CylinderConfig, Field(discriminator="kind")]
PhantomIds = tuple[SafeId, ...]


# -- protocols -----------------------------------------------------------------------------------
@_described
class IndentationConfig(_Model):
    kind: Literal["indentation"] = Field("indentation", description="Young's modulus labels")
    cylinders: PhantomIds = Field(min_length=1, max_length=200,
                                  description="cylinder phantom ids, in order (1-200)")
    velocity_mm_s: float = Field(0.01, ge=0.001, le=H820_VELOCITY_MAX_MM_S,
                                 description="plate velocity while pressing (mm/s, 0.001-20; "
                                 "at most safety.hexapod_velocity_max_mm_s)")
    sample_rate_hz: float = Field(200.0, ge=1.0, le=FORCE_RATE_MAX_HZ,
                                  description="force/position samples per second (Hz, at most "
                                  "the indenter sensor's rate_hz)")
    max_strain: float = Field(0.07, gt=0, lt=0.5,
                              description="stop at this engineering strain (0-0.5, exclusive)")
    contact_force_n: float = Field(0.005, gt=0.0, le=FORCE_RANGE_MAX_N,
                                   description="force that marks first contact (N); below "
                                   "safety.indentation_force_limit_n (plan check)")
    approach_gap_mm: float = Field(1.0, gt=0.0, le=25.0,
                                   description="start this far above the cylinder (mm, <= 25)")
    force_stop_n: float = Field(
        1.95, gt=0.0, le=FORCE_RANGE_MAX_N,
        description="end the run at this force (N); must stay below "
        "safety.indentation_force_limit_n, where the guard trips and halts the hexapod"
    )
    start_z_mm: float = Field(0.0, ge=-25.0, le=25.0,
                              description="hexapod Z (mm, within the H-820's +/-25) where each "
                              "run starts, approach_gap_mm above the cylinder; the plate moves "
                              "down (-Z)")
    retract_velocity_mm_s: float = Field(0.5, gt=0.0, le=H820_VELOCITY_MAX_MM_S,
                                         description="plate speed back to the start (mm/s, <= 20; "
                                         "capped by safety.hexapod_velocity_max_mm_s)")


@_described
class SweiConfig(_Model):
    kind: Literal["swei"] = Field("swei", description="shear-wave acquisitions")
    blocks: PhantomIds = Field(min_length=1, max_length=200,
                               description="block phantom ids, in order (1-200)")
    positions_per_block: int = Field(80, ge=1, le=1000,
                                     description="random probe positions per block (1-1000)")
    push_elements: tuple[Annotated[int, Field(ge=_PUSH_CENTRE_MIN, le=_PUSH_CENTRE_MAX)],
                         ...] = Field(
        (24, 36, 48, 64, 80, 92, 104), min_length=1, max_length=16,
        description="push centre elements (0-based, 5-122 so the 11-element push aperture stays "
        "on the 128-element array; 1-16 of them, distinct), 7 in the paper")
    frames: int = Field(35, ge=2, le=500, description="plane-wave frames per push (2-500)")
    prf_hz: float = Field(7000.0, ge=100.0, le=20000.0,
                          description="plane-wave frame rate (Hz, 100-20000)")
    contact_force_n: float = Field(0.2, gt=0.0, le=FORCE_RANGE_MAX_N,
                                   description="probe contact force set-point (N); below the "
                                   "probe force limit (plan check)")
    depth_px: int = Field(250, ge=8, le=4096, description="IQ pixels in depth (20 mm FOV; 8-4096)")
    lateral_px: int = Field(600, ge=8, le=4096,
                            description="IQ pixels laterally (33 mm FOV; 8-4096)")
    position_margin_mm: float = Field(25.0, ge=0.0, le=150.0,
                                      description="keep probe this far from edges (mm, 0-150)")
    seed: Seed = Field(0, description="seed of the probe positions (0 to 2^32-1)")

    @model_validator(mode="after")
    def _sizes(self) -> SweiConfig:
        if len(set(self.push_elements)) != len(self.push_elements):
            raise ValueError(f"push_elements = {list(self.push_elements)}: listed twice")
        values = self.frames * self.depth_px * self.lateral_px
        if values > MAX_SEQUENCE_VALUES:
            raise ValueError(f"frames x depth_px x lateral_px = {self.frames} x {self.depth_px} x "
                             f"{self.lateral_px} = {values} values per sequence; allowed at "
                             f"most {MAX_SEQUENCE_VALUES}")
        return self


@_described
class CompressionConfig(_Model):
    kind: Literal["compression"] = Field("compression", description="quasi-static strain pairs")
    blocks: PhantomIds = Field(min_length=1, max_length=200,
                               description="block phantom ids, in order (1-200)")
    strains: tuple[float, ...] = Field(
        (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07), max_length=100,
        description="applied strains, first = pre (>= 0, strictly increasing, 2-100 steps, "
        "at most 0.1)"
    )
    contact_force_n: float = Field(0.2, gt=0.0, le=FORCE_RANGE_MAX_N,
                                   description="probe contact force set-point (N); below the "
                                   "probe force limit (plan check)")
    depth_samples: int = Field(2000, ge=64, le=16384,
                               description="RF samples in depth (40 MHz; 64-16384)")
    lines: int = Field(250, ge=8, le=2048, description="RF A-lines (8-2048)")
    position_mm: tuple[float, float] = Field(
        (0.0, 0.0), description="probe centre on the block (block frame x, y in mm)"
    )

    @model_validator(mode="after")
    def _strains_increasing(self) -> CompressionConfig:
        s = self.strains
        if len(s) < 2 or any(b <= a for a, b in itertools.pairwise(s)) or s[0] < 0:
            raise ValueError(f"strains must be >= 0 and strictly increasing, >= 2 steps; got {s}")
        if s[-1] > 0.1:
            raise ValueError(f"strains above 10 % are outside the linear model; got {s[-1]}")
        if self.depth_samples * self.lines > MAX_SEQUENCE_VALUES:
            raise ValueError(f"depth_samples x lines = {self.depth_samples * self.lines}; "
                             f"allowed at most {MAX_SEQUENCE_VALUES}")
        return self


ProtocolConfig = Annotated[
    IndentationConfig | SweiConfig | CompressionConfig, Field(discriminator="kind")
]


@_described
class SessionConfig(_Model):
    """A whole session: the lab, its safety limits, the phantoms and the protocols to run."""

    name: SafeId = Field("session", description="session name (letters, digits, _ . -)")
    lab: LabConfig = Field(LabConfig(), description="the instruments")
    safety: SafetyConfig = Field(SafetyConfig(), description="limits the guard enforces")
    phantoms: tuple[PhantomConfig, ...] = Field((), max_length=400,
                                                description="phantoms on the bench (<= 400)")
    protocols: tuple[ProtocolConfig, ...] = Field((), max_length=50,
                                                  description="what to run, in order (<= 50)")
    max_retries: int = Field(2, ge=0, le=10, description="retries of a unit after a fault")

    @model_validator(mode="after")
    def _references_exist(self) -> SessionConfig:
        ids = Counter(p.id for p in self.phantoms)
        dupes = sorted(i for i, n in ids.items() if n > 1)
        if dupes:
            raise ValueError(f"duplicate phantom ids {dupes}")
        kinds = {p.id: p.kind for p in self.phantoms}
        for i, proto in enumerate(self.protocols):
            wanted = "cylinder" if isinstance(proto, IndentationConfig) else "block"
            names = proto.cylinders if isinstance(proto, IndentationConfig) else proto.blocks
            for name in names:
                if kinds.get(name) != wanted:
                    known = sorted(k for k, v in kinds.items() if v == wanted)
                    raise ValueError(
                        f"protocols[{i}] ({proto.kind}) names {name!r}, which is not a "
                        f"{wanted} phantom; known {wanted}s: {known}"
                    )
        if self.safety.indentation_force_limit_n > 2.0 + 1e-9:
            raise ValueError("safety.indentation_force_limit_n above 2 N exceeds the Nano17 "
                             "protocol limit of the SWEI labs")
        return self

    @model_validator(mode="after")
    def _within_hardware(self) -> SessionConfig:
        problems = (_sensor_range_problems(self) + _reach_problems(self)
                    + _watch_rate_problems(self) + _size_problems(self))
        if problems:
            raise ValueError("; ".join(problems))
        return self


# -- cross-field checks ----------------------------------------------------------------------------
def _sensor_range_problems(config: SessionConfig) -> list[str]:
    """Force limits strictly below the Fz range of the sensor that watches them."""
    lab, safety = config.lab, config.safety
    checks = (("indentation_force_limit_n", "indenter_force_sensor"),
              ("probe_force_max_n", "probe_force_sensor"),
              ("compression_force_max_n", "probe_force_sensor"))
    problems = []
    for key, sensor_key in checks:
        model = getattr(lab, sensor_key).model
        range_n = SENSOR_FZ_RANGE_N[model]
        value = getattr(safety, key)
        if not value < range_n:
            problems.append(f"safety.{key} = {value} N: at or above the Fz range of "
                            f"lab.{sensor_key} ({model}, {range_n} N), which saturates there; "
                            f"allowed below {range_n}")
    return problems


def workspace_reach_m(config: SessionConfig) -> float:
    """Farthest a workspace box corner may be from the UR3 shoulder (m): reach + tool length.

    A necessary condition only: a corner farther than this cannot be reached in any orientation;
    the controller's inverse kinematics refuses the reachable-looking rest at run time.
    """
    return UR3_REACH_M + float(np.linalg.norm(config.lab.robot.tcp_offset_m[:3]))


def _reach_problems(config: SessionConfig) -> list[str]:
    safety = config.safety
    limit = workspace_reach_m(config)
    shoulder = np.array([0.0, 0.0, UR3_SHOULDER_HEIGHT_M])
    for corner in itertools.product(*zip(safety.workspace_min_m, safety.workspace_max_m,
                                         strict=True)):
        distance = float(np.linalg.norm(np.asarray(corner) - shoulder))
        if distance > limit:
            return [f"safety.workspace_min_m / workspace_max_m = {list(safety.workspace_min_m)} / "
                    f"{list(safety.workspace_max_m)}: corner {list(corner)} m is {distance:.3f} m "
                    f"from the UR3 shoulder; allowed at most {limit:.3f} m (reach "
                    f"{UR3_REACH_M} m + tool length)"]
    return []


def stiffest_contacts_n_per_m(config: SessionConfig) -> tuple[float, float | None]:
    """Contact stiffness (N/m) of the stiffest block under the probe (inclusions included; the
    stiffest calibrated gelatin when there are no blocks) and of the stiffest cylinder (None
    without any). Formulas in :mod:`lab.force_bounds`."""
    probe = [probe_contact_stiffness_n_per_m(youngs_modulus_kpa(pct))
             for p in config.phantoms if isinstance(p, BlockConfig)
             for pct in (p.gelatin_percent, *(i.gelatin_percent for i in p.inclusions))]
    if not probe:
        probe = [probe_contact_stiffness_n_per_m(max(GELATIN_YOUNGS_MODULUS_KPA.values()))]
    cylinders = [cylinder_stiffness_n_per_m(youngs_modulus_kpa(p.gelatin_percent),
                                            radius_mm=p.radius_mm, height_mm=p.height_mm)
                 for p in config.phantoms if isinstance(p, CylinderConfig)]
    return max(probe), max(cylinders, default=None)


def _watch_rate_problems(config: SessionConfig) -> list[str]:
    """Each force watch fast enough for the stiffest phantom it may press (see module doc)."""
    lab, safety = config.lab, config.safety
    probe_limit = safety.probe_force_max_n
    if any(isinstance(p, CompressionConfig) for p in config.protocols):
        probe_limit = min(probe_limit, safety.compression_force_max_n)
    probe_k, cylinder_k = stiffest_contacts_n_per_m(config)
    has_blocks = any(isinstance(p, BlockConfig) for p in config.phantoms)
    cases = (
        ("probe_force_sensor", APPROACH_SPEED_M_S, "the approach speed",
         probe_k if has_blocks else None, probe_limit, "block"),
        ("indenter_force_sensor", safety.hexapod_velocity_max_mm_s * 1e-3,
         "safety.hexapod_velocity_max_mm_s", cylinder_k,
         safety.indentation_force_limit_n, "cylinder"),
    )
    problems = []
    for key, speed, speed_name, stiffness, limit, what in cases:
        if stiffness is None:
            continue
        rate = getattr(lab, key).rate_hz
        needed = min_watch_rate_hz(limit, speed_m_s=speed, stiffness_n_per_m=stiffness)
        if rate < needed:
            problems.append(
                f"lab.{key}.rate_hz = {rate}: too slow to watch the stiffest {what} "
                f"({stiffness:.0f} N/m) at {speed_name} {speed * 1e3:g} mm/s: the force could "
                f"pass the {limit} N limit by more than {OVERSHOOT_FRACTION:.0%} between "
                f"samples; allowed >= {needed:.1f} Hz (or a lower speed)")
    return problems


def planned_unit_count(config: SessionConfig) -> int:
    """Units the plan of ``config`` will have (one per cylinder, probe position, strain step)."""
    n = 0
    for proto in config.protocols:
        if isinstance(proto, IndentationConfig):
            n += len(proto.cylinders)
        elif isinstance(proto, SweiConfig):
            n += len(proto.blocks) * proto.positions_per_block
        else:
            n += len(proto.blocks) * len(proto.strains)
    return n


def _size_problems(config: SessionConfig) -> list[str]:
    problems = []
    n = planned_unit_count(config)
    if n > MAX_PLAN_UNITS:
        problems.append(f"protocols plan {n} units (cylinders + blocks x positions_per_block + "
                        f"blocks x strains); allowed at most {MAX_PLAN_UNITS}")
    indenter_rate = config.lab.indenter_force_sensor.rate_hz
    for i, proto in enumerate(config.protocols):
        if isinstance(proto, IndentationConfig) and proto.sample_rate_hz > indenter_rate:
            problems.append(f"protocols[{i}].sample_rate_hz = {proto.sample_rate_hz}: faster "
                            f"than lab.indenter_force_sensor.rate_hz; allowed <= {indenter_rate}")
    return problems


# -- bench geometry --------------------------------------------------------------------------------
def bench_layout(config: SessionConfig) -> dict[str, list[float]]:
    """Base-frame position (m) of each block's top-surface centre: its ``origin_m`` if given,
    else its slot in a row along base x, ``BLOCK_SPACING_M`` apart and centred on x = 0 at
    y = ``BENCH_Y_M``, on a table at z = 0 (a block with an ``origin_m`` keeps its slot empty)."""
    blocks = [p for p in config.phantoms if isinstance(p, BlockConfig)]
    n = len(blocks)
    return {
        b.id: ([float(v) for v in b.origin_m] if b.origin_m is not None
               else [(i - (n - 1) / 2) * BLOCK_SPACING_M, BENCH_Y_M, b.size_mm[2] * 1e-3])
        for i, b in enumerate(blocks)
    }


def travel_z_m(layout: dict[str, list[float]]) -> float:
    """Height (m) of the probe face for travel between positions: above every block."""
    return max((o[2] for o in layout.values()), default=0.0) + TRAVEL_CLEARANCE_M


# -- loading -------------------------------------------------------------------------------------
def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s)):"]
    for err in error.errors():
        loc = err["loc"]
        backend = None
        if len(loc) > 2 and loc[0] == "lab" and loc[2] in INSTRUMENT_MODELS.get(str(loc[1]), {}):
            backend, loc = loc[2], loc[:2] + loc[3:]  # the key as written: no union tag
        key = ".".join(str(p) for p in loc) or "(top level)"
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = err["msg"]
        ctx = err.get("ctx", {})
        removed = REMOVED_KEYS.get((str(loc[1]), str(loc[-1]))) if len(loc) > 2 else None
        if err["type"] == "extra_forbidden" and removed:
            msg = f"no longer a setting ({removed}); delete the line"
        elif err["type"] == "extra_forbidden" and backend is not None:
            msg = f"unknown key for backend {backend!r} (typo, or a setting of another backend?)"
        elif err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "literal_error":
            msg = f"allowed: {ctx.get('expected')}"
        elif err["type"] == "union_tag_invalid":
            tags = [t.strip() for t in str(ctx.get("expected_tags", "")).split(",")]
            allowed = " or ".join([", ".join(tags[:-1]), tags[-1]] if len(tags) > 1 else tags)
            lines.append(f"  - {key}.backend = {ctx.get('tag')!r}: allowed: {allowed}")
            continue
        elif err["type"] == "finite_number":
            msg = "not a finite number; allowed: finite values only (no inf or nan)"
        elif err["type"] == "value_error" and isinstance(value, dict):  # a model's own check
            where = "" if not loc else f"{key}: "
            lines.append(f"  - {where}{msg.removeprefix('Value error, ')}")
            continue
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"  - {key} = {shown}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> SessionConfig:
    """Validate a config mapping; raises :class:`ConfigError` with a readable message."""
    try:
        return SessionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


#: Keys that earlier versions accepted and never read, dropped from stored configs on resume.
REMOVED_KEYS = {("robot", "timeout_s"): "it was never read (ur_rtde calls have no timeout)",
                ("hexapod", "velocity_mm_s"): "it was never read; the indentation velocity is "
                                               "[[protocols]] velocity_mm_s"}


def upgrade_stored_config(data: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A stored config of an earlier elastolab, in today's model; returns it and what changed.

    Earlier versions stored every instrument setting whatever the backend (a serial sensor's
    ``host``) plus keys that were never read (:data:`REMOVED_KEYS`). Such settings had no effect,
    so they are dropped; everything else is validated as written.
    """
    lab = data.get("lab")
    if not isinstance(lab, dict):
        return data, []
    notes = []
    new_lab = dict(lab)
    for section, models in INSTRUMENT_MODELS.items():
        cfg = lab.get(section)
        if not isinstance(cfg, dict):
            continue
        model = models.get(str(cfg.get("backend", "sim")))
        if model is None:
            continue
        unused = sorted(set(cfg) - set(model.model_fields))
        other = f"not a setting of backend {cfg.get('backend', 'sim')!r}"
        notes += [f"lab.{section}.{key} ({REMOVED_KEYS.get((section, key), other)})"
                  for key in unused]
        new_lab[section] = {k: v for k, v in cfg.items() if k not in unused}
    return {**data, "lab": new_lab}, notes


def parse_stored_config(data: dict[str, Any], *, source: str) -> SessionConfig:
    """Validate the config a store embeds, written by this or an earlier elastolab."""
    upgraded, notes = upgrade_stored_config(data)
    if notes:
        log.info("%s: ignoring settings that had no effect: %s", source, ", ".join(notes))
    return parse_config(upgraded, source=source)


def load_config(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None
                ) -> SessionConfig:
    """Read a TOML session file, apply ``overrides`` (dotted keys), validate.

    Environment variables ``ELASTOLAB__SECTION__KEY=value`` override keys too (e.g.
    ``ELASTOLAB__LAB__HEXAPOD__HOST=192.168.0.10``); values are parsed as TOML scalars.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (UTF-8): {exc.reason}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if not data:
        raise ConfigError(f"{path}: the file is empty (no keys); a session needs at least "
                          "[[phantoms]] and [[protocols]] (see configs/sim-lab.toml)")
    env = {
        k[len("ELASTOLAB__"):].lower().replace("__", "."): _parse_scalar(v)
        for k, v in os.environ.items() if k.startswith("ELASTOLAB__")
    }
    for dotted, value in {**env, **(overrides or {})}.items():
        _set_dotted(data, dotted, value)
    return parse_config(data, source=str(path))


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is not a table")
    node[parts[-1]] = value
