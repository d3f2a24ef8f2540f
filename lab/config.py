"""Session configuration: one pydantic tree, loaded from TOML once at the CLI edge.

A session file has four parts (see ``configs/sim-lab.toml``):

``[lab]``        each instrument: ``backend = "sim"`` or a real backend, address, port, timeouts
``[safety]``     force limits, robot workspace box and speed caps, hexapod soft limits, push duty
``[[phantoms]]`` the phantoms on the bench (blocks with inclusions, cylinders)
``[[protocols]]`` what to run, in order: ``kind = "indentation" | "swei" | "compression"``

Every model forbids unknown keys so a typo fails before anything moves, and
:func:`load_config` turns a validation error into one message naming the file, the key, the bad
value and what is allowed.
"""

from __future__ import annotations

import itertools
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    ValidationError,
    model_validator,
)

from lab.gelatin import GELATIN_YOUNGS_MODULUS_KPA


class ConfigError(ValueError):
    """A configuration file could not be read or is invalid; the message says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


GelatinPercent = Annotated[
    float,
    Field(ge=min(GELATIN_YOUNGS_MODULUS_KPA), le=max(GELATIN_YOUNGS_MODULUS_KPA),
          description="gelatin concentration in % by weight (calibrated 5-17.5 %)"),
]


# -- instruments ---------------------------------------------------------------------------------
class RobotConfig(_Model):
    backend: Literal["sim", "ur_rtde"] = Field(
        "sim", description="'sim' or 'ur_rtde' (real UR3)"
    )
    host: str = Field("127.0.0.1", description="UR controller address (ur_rtde backend)")
    timeout_s: PositiveFloat = Field(5.0, description="timeout of every blocking robot call")
    payload_kg: NonNegativeFloat = Field(0.35, description="probe + holder + Nano43 mass")
    tcp_offset_m: tuple[float, float, float, float, float, float] = Field(
        (0.0, 0.0, 0.12, 0.0, 0.0, 0.0), description="tool centre point (probe face), flange frame"
    )
    watchdog_min_frequency_hz: NonNegativeFloat = Field(
        10.0, description="arm ur_rtde's RTDE watchdog at this frequency (Hz): the controller "
        "stops the robot when the host is silent for longer than 1/f s (lost link, crashed "
        "host); 0 = off"
    )


class HexapodConfig(_Model):
    backend: Literal["sim", "gcs"] = Field("sim", description="'sim' or 'gcs' (real PI H-820)")
    host: str = Field("127.0.0.1", description="GCS controller address")
    port: int = Field(50000, ge=1, le=65535, description="GCS TCP port (50000 on PI controllers)")
    interface: Literal["pipython", "pyvisa"] = Field(
        "pipython", description="GCS client: PI's pipython, or pyvisa (pyvisa-py or NI-VISA)"
    )
    timeout_s: PositiveFloat = 5.0
    velocity_mm_s: PositiveFloat = Field(0.01, description="indentation plate velocity")


class ForceSensorConfig(_Model):
    backend: Literal["sim", "netft", "serial"] = Field(
        "sim", description="'sim', 'netft' (ATI Net F/T, RDT over UDP) or 'serial' (RS-232)"
    )
    model: Literal["nano17", "nano43"] = "nano17"
    host: str = Field("127.0.0.1", description="Net F/T address")
    port: int = Field(49152, ge=1, le=65535, description="RDT UDP port (49152 on Net F/T)")
    serial_port: str | None = Field(None, description="e.g. /dev/ttyUSB0 for the serial backend")
    baudrate: PositiveInt = 115200
    counts_per_force: PositiveFloat = Field(1_000_000.0, description="from the sensor calibration")
    counts_per_torque: PositiveFloat = Field(1_000_000.0, description="from the sensor calibration")
    rate_hz: PositiveFloat = Field(200.0, description="sampling rate of the force stream")
    timeout_s: PositiveFloat = 1.0

    @model_validator(mode="after")
    def _serial_needs_port(self) -> ForceSensorConfig:
        if self.backend == "serial" and not self.serial_port:
            raise ValueError("backend 'serial' needs serial_port (e.g. '/dev/ttyUSB0')")
        return self


class UltrasoundConfig(_Model):
    backend: Literal["sim", "cicada"] = Field("sim", description="'sim' or 'cicada' (Cephasonics)")
    sdk_module: str = Field("cephasonics", description="Python module of the Cephasonics SDK")
    fidelity: Literal["image", "channel"] = Field(
        "image", description="simulator: IQ directly ('image') or channel RF + beamforming"
    )
    snr_db: float = Field(30.0, description="simulator electronic noise, dB")
    timeout_s: PositiveFloat = 10.0


class LabConfig(_Model):
    robot: RobotConfig = RobotConfig()
    hexapod: HexapodConfig = HexapodConfig()
    probe_force_sensor: ForceSensorConfig = ForceSensorConfig(model="nano43")
    indenter_force_sensor: ForceSensorConfig = ForceSensorConfig(model="nano17")
    ultrasound: UltrasoundConfig = UltrasoundConfig()
    sim_seed: int = Field(0, description="seed of the simulated world (sim backends only)")


# -- safety --------------------------------------------------------------------------------------
class SafetyConfig(_Model):
    indentation_force_limit_n: PositiveFloat = Field(2.0, description="hexapod stops above this")
    probe_force_max_n: PositiveFloat = Field(2.0, description="probe contact force never exceeds")
    workspace_min_m: tuple[float, float, float] = Field(
        (-0.35, -0.45, 0.0), description="robot tool workspace box, lower corner (base frame)"
    )
    workspace_max_m: tuple[float, float, float] = Field(
        (0.35, -0.15, 0.40), description="robot tool workspace box, upper corner (base frame)"
    )
    robot_speed_max_m_s: PositiveFloat = Field(0.05, description="linear speed cap")
    robot_acceleration_max_m_s2: PositiveFloat = Field(0.5, description="linear acceleration cap")
    hexapod_limits_mm: dict[str, tuple[float, float]] = Field(
        default_factory=lambda: {"X": (-10.0, 10.0), "Y": (-10.0, 10.0), "Z": (-10.0, 25.0)},
        description="hexapod soft limits per axis (mm)",
    )
    push_min_interval_s: PositiveFloat = Field(
        0.5, description="minimum time between ARF pushes (transducer duty cycle)"
    )
    compression_force_max_n: PositiveFloat = Field(
        8.0, description="probe force limit while compressing a block (quasi-static protocol; "
        "a few % strain of a 100 mm block needs several N; below the Nano43's 9 N range)"
    )
    hexapod_velocity_max_mm_s: PositiveFloat = Field(
        1.0, description="hexapod velocity cap (mm/s)"
    )

    @model_validator(mode="after")
    def _box_ordered(self) -> SafetyConfig:
        for axis, lo, hi in zip("xyz", self.workspace_min_m, self.workspace_max_m, strict=True):
            if lo >= hi:
                raise ValueError(f"workspace {axis}: min {lo} must be < max {hi}")
        for axis, (lo, hi) in self.hexapod_limits_mm.items():
            if axis not in {"X", "Y", "Z", "U", "V", "W"}:
                raise ValueError(f"hexapod axis {axis!r} is not one of X Y Z U V W")
            if lo >= hi:
                raise ValueError(f"hexapod {axis}: lower limit {lo} must be < upper {hi}")
        return self


# -- phantoms ------------------------------------------------------------------------------------
class InclusionConfig(_Model):
    x_mm: float = Field(description="lateral centre in the block frame (0 = block centre)")
    z_mm: PositiveFloat = Field(description="depth of the centre below the top surface")
    radius_mm: PositiveFloat
    gelatin_percent: GelatinPercent


class BlockConfig(_Model):
    kind: Literal["block"] = "block"
    id: str = Field(min_length=1)
    gelatin_percent: GelatinPercent
    size_mm: tuple[PositiveFloat, PositiveFloat, PositiveFloat] = (100.0, 100.0, 100.0)
    inclusions: tuple[InclusionConfig, ...] = ()
    viscosity_pa_s: NonNegativeFloat = 0.3
    speckle_seed: int = 0
    origin_m: tuple[FiniteFloat, FiniteFloat, FiniteFloat] | None = Field(
        None, description="robot base-frame position (x, y, z in m) of the block's top-surface "
        "centre, block x along base x and depth along -z; None = automatic bench layout (a row "
        "along x at y = -0.30 m on a table at z = 0, see protocols.plan)"
    )


class CylinderConfig(_Model):
    kind: Literal["cylinder"] = "cylinder"
    id: str = Field(min_length=1)
    gelatin_percent: GelatinPercent
    radius_mm: PositiveFloat = 10.0
    height_mm: PositiveFloat = 40.0


PhantomConfig = Annotated[BlockConfig | CylinderConfig, Field(discriminator="kind")]


# -- protocols -----------------------------------------------------------------------------------
class IndentationConfig(_Model):
    kind: Literal["indentation"] = "indentation"
    cylinders: tuple[str, ...] = Field(description="cylinder phantom ids, in order")
    velocity_mm_s: PositiveFloat = 0.01
    sample_rate_hz: PositiveFloat = 200.0
    max_strain: float = Field(0.07, gt=0, lt=0.5, description="stop at this engineering strain")
    contact_force_n: PositiveFloat = Field(0.005, description="force that marks first contact")
    approach_gap_mm: PositiveFloat = Field(1.0, description="start this far above the cylinder")
    force_stop_n: PositiveFloat = Field(
        1.95, description="end the run at this force; must stay below "
        "safety.indentation_force_limit_n, where the guard trips and halts the hexapod"
    )
    start_z_mm: float = Field(0.0, description="hexapod Z (mm) where each run starts, "
                              "approach_gap_mm above the cylinder; the plate moves down (-Z)")
    retract_velocity_mm_s: PositiveFloat = Field(0.5, description="plate speed back to the start")


class SweiConfig(_Model):
    kind: Literal["swei"] = "swei"
    blocks: tuple[str, ...] = Field(description="block phantom ids, in order")
    positions_per_block: PositiveInt = Field(80, description="random probe positions per block")
    push_elements: tuple[int, ...] = Field(
        (24, 36, 48, 64, 80, 92, 104), description="push centre elements (0-based), 7 in the paper"
    )
    frames: PositiveInt = 35
    prf_hz: PositiveFloat = 7000.0
    contact_force_n: PositiveFloat = 0.2
    depth_px: PositiveInt = Field(250, description="IQ pixels in depth (20 mm FOV)")
    lateral_px: PositiveInt = Field(600, description="IQ pixels laterally (33 mm FOV)")
    position_margin_mm: NonNegativeFloat = Field(25.0, description="keep probe this far from edges")
    seed: int = 0


class CompressionConfig(_Model):
    kind: Literal["compression"] = "compression"
    blocks: tuple[str, ...]
    strains: tuple[float, ...] = Field(
        (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.07), description="applied strains, first = pre"
    )
    contact_force_n: PositiveFloat = 0.2
    depth_samples: PositiveInt = Field(2000, description="RF samples in depth (40 MHz)")
    lines: PositiveInt = Field(250, description="RF A-lines")
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
        return self


ProtocolConfig = Annotated[
    IndentationConfig | SweiConfig | CompressionConfig, Field(discriminator="kind")
]


class SessionConfig(_Model):
    """A whole session: the lab, its safety limits, the phantoms and the protocols to run."""

    name: str = Field("session", min_length=1)
    lab: LabConfig = LabConfig()
    safety: SafetyConfig = SafetyConfig()
    phantoms: tuple[PhantomConfig, ...] = ()
    protocols: tuple[ProtocolConfig, ...] = ()
    max_retries: int = Field(2, ge=0, le=10, description="retries of a unit after a fault")

    @model_validator(mode="after")
    def _references_exist(self) -> SessionConfig:
        ids = [p.id for p in self.phantoms]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
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


# -- loading -------------------------------------------------------------------------------------
def _format_validation_error(source: str, error: ValidationError) -> str:
    lines = [f"{source}: invalid configuration ({error.error_count()} problem(s)):"]
    for err in error.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        value = err.get("input")
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (typo?)"
        elif err["type"] == "literal_error":
            expected = err.get("ctx", {}).get("expected")
            msg = f"allowed: {expected}"
        lines.append(f"  - {key} = {shown}: {msg}")
    return "\n".join(lines)


def parse_config(data: dict[str, Any], *, source: str = "<config>") -> SessionConfig:
    """Validate a config mapping; raises :class:`ConfigError` with a readable message."""
    try:
        return SessionConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(source, exc)) from None


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
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
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
