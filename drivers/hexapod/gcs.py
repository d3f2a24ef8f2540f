"""PI hexapod (H-820 on a C-887 controller) driven by GCS commands.

Wire commands this driver sends (each followed by ``ERR?`` through the connection):
``ERR?`` (clears an error left by an earlier client, kept in ``stale_error``) and ``*IDN?`` on
connect; ``SVO X 1 Y 1 Z 1 U 1 V 1 W 1``; ``FRF`` then ``FRF?`` polls; ``VLS v``;
``MOV``/``MVR`` with the given axes in X Y Z U V W order, then ``ONT?`` polls; ``POS?``; ``HLT``
(whose expected error 10 is read and cleared); ``ERR?``. Targets are checked against the soft
limits (and velocity against its cap) before anything is sent.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from drivers.base import DeviceError, LimitError, MotionStatus, check_finite
from drivers.hexapod.base import AXIS_KEYWORDS, KEYWORD_AXES
from drivers.hexapod.connection import GcsConnection, GcsControllerError
from lab.clock import Clock

log = logging.getLogger(__name__)

GCS_AXES = ("X", "Y", "Z", "U", "V", "W")
_ERR_STOPPED = 10


@dataclass(frozen=True)
class HexapodSpec:
    """Limits of a hexapod model: travel per axis keyword (mm or deg), velocity cap (mm/s) and the
    controller's servo cycle (s; the data recorder's rate counts in it)."""

    model: str
    travel: dict[str, tuple[float, float]]
    max_velocity_mm_s: float
    servo_cycle_s: float = 1e-4

    def __post_init__(self) -> None:
        unknown = set(self.travel) - set(KEYWORD_AXES)
        if unknown:
            raise ValueError(f"unknown axis keywords {sorted(unknown)}; use {list(KEYWORD_AXES)}")


#: PI H-820 as we model it: X Y +/-50 mm, Z +/-25 mm, U V +/-15 deg, W +/-30 deg, 20 mm/s.
H820 = HexapodSpec(
    model="PI H-820",
    travel={
        "x_mm": (-50.0, 50.0), "y_mm": (-50.0, 50.0), "z_mm": (-25.0, 25.0),
        "u_deg": (-15.0, 15.0), "v_deg": (-15.0, 15.0), "w_deg": (-30.0, 30.0),
    },
    max_velocity_mm_s=20.0,
)


def format_number(value: float) -> str:
    """Shortest fixed-point text of ``value`` with 1e-6 resolution (``-0.25``, ``3``, ``0.01``)."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def parse_axis_reply(reply: str, *, device: str, command: str) -> dict[str, str]:
    """``{"X": "1.0", ...}`` from a GCS ``AXIS=value`` reply (one line per axis)."""
    values: dict[str, str] = {}
    for line in reply.splitlines():
        line = line.strip()
        if not line:
            continue
        axis, sep, value = line.partition("=")
        if not sep or axis.strip() not in GCS_AXES or not value.strip():
            raise DeviceError(device, "malformed axis reply", command=command, reply=reply)
        values[axis.strip()] = value.strip()
    return values


def parse_gcs_array(reply: str, *, device: str, command: str) -> list[float]:
    """Values of a one-column GCS array reply (``# KEY = value`` header lines up to
    ``# END_HEADER``, then one number per line); non-finite or non-numeric values refused."""
    lines = [line.strip() for line in reply.splitlines()]
    try:
        body = lines[lines.index("# END_HEADER") + 1:]
    except ValueError:
        raise DeviceError(device, "GCS array without # END_HEADER", command=command,
                          reply=reply[:200]) from None
    try:
        values = [float(line) for line in body if line]
    except ValueError:
        raise DeviceError(device, "non-numeric value in a GCS array", command=command,
                          reply=reply[:200]) from None
    if not all(math.isfinite(v) for v in values):
        raise DeviceError(device, "non-finite value in a GCS array refused", command=command,
                          reply=reply[:200])
    return values


@dataclass
class GcsHexapod:
    """Hexapod role over a :class:`~drivers.hexapod.connection.GcsConnection`.

    Parameters
    ----------
    open_connection : callable () -> GcsConnection
        Opens the link on :meth:`connect`, e.g. ``lambda: PipythonGcsConnection.tcp(host)``.
    clock : Clock
        Motion waits poll on it.
    spec : HexapodSpec
        Travel and velocity cap; ``soft_limits`` starts as the travel range.
    name : str
        Device name for errors.
    poll_interval_s : float
        Time between on-target polls in :meth:`MotionStatus.wait`.
    soft_limits : dict, optional
        Narrower limits per axis keyword, e.g. ``{"z_mm": (-5.0, 1.0)}``.
    """

    open_connection: Callable[[], GcsConnection]
    clock: Clock
    spec: HexapodSpec = H820
    name: str = "hexapod"
    poll_interval_s: float = 0.05
    soft_limits: dict[str, tuple[float, float]] = field(default_factory=dict)
    identification: str = field(default="", init=False)
    stale_error: int = field(default=0, init=False)
    _connection: GcsConnection | None = field(default=None, init=False, repr=False)
    _velocity_mm_s: float | None = field(default=None, init=False, repr=False)
    _motion_id: int = field(default=0, init=False, repr=False)
    _stopped_motion: int = field(default=-1, init=False, repr=False)
    _recorded: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        limits = dict(self.spec.travel)
        for key, (lo, hi) in self.soft_limits.items():
            if key not in limits:
                raise ValueError(f"{self.name}: unknown axis {key!r}; use {list(KEYWORD_AXES)}")
            t_lo, t_hi = limits[key]
            if not t_lo <= lo < hi <= t_hi:
                raise ValueError(
                    f"{self.name}: soft limits {key} {(lo, hi)} must lie inside the travel "
                    f"{(t_lo, t_hi)} with min < max"
                )
            limits[key] = (float(lo), float(hi))
        self.soft_limits = limits

    # ------------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        """Open the connection and read the identification. Does not move, servo or reference."""
        if self._connection is not None:
            return
        self._connection = self.open_connection()
        try:
            # the controller keeps one error register: clear what an earlier client left there
            self.stale_error = self._connection.read_error()
            self.identification = self._connection.query("*IDN?").strip()
        except DeviceError:
            self.close()
            raise

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def __enter__(self) -> GcsHexapod:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _link(self) -> GcsConnection:
        if self._connection is None:
            raise DeviceError(self.name, "not connected; call connect() first")
        return self._connection

    # ------------------------------------------------------------------ checks
    def check(self, **axes: float) -> None:
        """Raise :class:`LimitError` if a target (mm or deg, by keyword) leaves the soft limits."""
        if not axes:
            raise LimitError(self.name, "no axis given; use x_mm, y_mm, z_mm, u_deg, v_deg, w_deg")
        for key, value in axes.items():
            if key not in self.soft_limits:
                raise LimitError(self.name, f"unknown axis {key!r}; use {list(KEYWORD_AXES)}")
            check_finite(self.name, key, value)
            lo, hi = self.soft_limits[key]
            if not lo <= value <= hi:
                raise LimitError(
                    self.name, f"{key} = {value} is outside the soft limits {lo}..{hi}"
                )

    def _gcs_args(self, axes: dict[str, float]) -> str:
        order = sorted(axes, key=lambda k: GCS_AXES.index(KEYWORD_AXES[k]))
        return " ".join(f"{KEYWORD_AXES[k]} {format_number(axes[k])}" for k in order)

    # ------------------------------------------------------------------ actions
    def servo(self, on: bool) -> None:
        """Switch closed-loop servo of all six axes on or off."""
        state = "1" if on else "0"
        self._link().command("SVO " + " ".join(f"{a} {state}" for a in GCS_AXES))

    def reference(self) -> MotionStatus:
        """Start the reference move (``FRF``); the status completes when ``FRF?`` reports all 1."""
        self._link().command("FRF")
        self._motion_id += 1
        motion = self._motion_id

        def poll() -> tuple[bool, bool]:
            if self._stopped_motion == motion:
                return True, False
            flags = parse_axis_reply(self._link().query("FRF?"), device=self.name, command="FRF?")
            done = len(flags) == len(GCS_AXES) and all(v == "1" for v in flags.values())
            return done, done

        return MotionStatus(self.name, self.clock, poll, self.poll_interval_s, command="FRF")

    def set_velocity(self, velocity_mm_s: float) -> None:
        """System velocity ``VLS`` in mm/s (0 < v <= the spec's cap)."""
        check_finite(self.name, "velocity_mm_s", velocity_mm_s)
        if not 0.0 < velocity_mm_s <= self.spec.max_velocity_mm_s:
            raise LimitError(
                self.name,
                f"velocity {velocity_mm_s} mm/s is outside 0..{self.spec.max_velocity_mm_s}",
            )
        self._link().command(f"VLS {format_number(velocity_mm_s)}")
        self._velocity_mm_s = float(velocity_mm_s)

    def _start(self, verb: str, axes: dict[str, float]) -> MotionStatus:
        command = f"{verb} {self._gcs_args(axes)}"
        self._link().command(command)
        self._motion_id += 1
        motion = self._motion_id
        gcs_axes = " ".join(KEYWORD_AXES[k] for k in sorted(
            axes, key=lambda k: GCS_AXES.index(KEYWORD_AXES[k])
        ))
        query = f"ONT? {gcs_axes}"

        def poll() -> tuple[bool, bool]:
            if self._stopped_motion == motion:
                return True, False
            flags = parse_axis_reply(self._link().query(query), device=self.name, command=query)
            done = bool(flags) and all(v == "1" for v in flags.values())
            return done, done

        return MotionStatus(self.name, self.clock, poll, self.poll_interval_s, command=command)

    def move_to(self, **axes: float) -> MotionStatus:
        """Absolute move (``MOV``), e.g. ``move_to(z_mm=-0.25)``; checked first."""
        self.check(**axes)
        return self._start("MOV", axes)

    def move_relative(self, **axes: float) -> MotionStatus:
        """Relative move (``MVR``); the resulting target is checked against the soft limits."""
        for key, value in axes.items():
            check_finite(self.name, key, value)
        if not axes or any(k not in self.soft_limits for k in axes):
            self.check(**axes)  # raises with the list of valid keywords
        target = self._target()
        self.check(**{k: target[k] + v for k, v in axes.items()})
        return self._start("MVR", axes)

    def _target(self) -> dict[str, float]:
        reply = self._link().query("MOV?")
        values = parse_axis_reply(reply, device=self.name, command="MOV?")
        return self._to_keywords(values, "MOV?", reply)

    def _to_keywords(self, values: dict[str, str], command: str, reply: str) -> dict[str, float]:
        try:
            numbers = {AXIS_KEYWORDS[a]: float(v) for a, v in values.items()}
        except ValueError:
            raise DeviceError(
                self.name, "non-numeric axis value", command=command, reply=reply
            ) from None
        if not all(math.isfinite(v) for v in numbers.values()):
            raise DeviceError(self.name, "non-finite axis value refused", command=command,
                              reply=reply)
        return numbers

    def position(self) -> dict[str, float]:
        """Current pose by axis keyword (mm, deg) from ``POS?``."""
        reply = self._link().query("POS?")
        values = parse_axis_reply(reply, device=self.name, command="POS?")
        if set(values) != set(GCS_AXES):
            raise DeviceError(
                self.name, "POS? did not list all six axes", command="POS?", reply=reply
            )
        return self._to_keywords(values, "POS?", reply)

    def on_target(self) -> bool:
        """True when all axes are on target (``ONT?``)."""
        reply = self._link().query("ONT?")
        flags = parse_axis_reply(reply, device=self.name, command="ONT?")
        return bool(flags) and all(v == "1" for v in flags.values())

    def stop(self, success: bool = False) -> None:
        """Halt all axes (``HLT``); running motion statuses finish with ``success``.

        The controller sets error 10 (stopped by command) on a halt; it is read and cleared here.
        The halt goes over a healthy link: a link that lost sync resynchronises first (see
        :mod:`drivers.hexapod.connection`), and if the halt still fails on the link it is sent
        once more over a freshly opened connection.
        """
        self._stopped_motion = -1 if success else self._motion_id
        try:
            self._halt()
        except GcsControllerError:
            raise
        except DeviceError as err:
            log.warning("%s: HLT failed on the link (%s); reopening the connection", self.name,
                        err)
            self.close()
            self._connection = self.open_connection()
            self._halt()

    def _halt(self) -> None:
        try:
            self._link().command("HLT")
        except GcsControllerError as err:
            if err.code != _ERR_STOPPED:
                raise

    def error(self) -> int:
        """The controller's last error code (``ERR?``; reading clears it)."""
        return self._link().read_error()

    # ------------------------------------------------------------------ data recorder
    def record_position(self, axis: str = "z_mm", *, rate_hz: float) -> tuple[float, float]:
        """Record ``axis``'s actual position in the controller's data recorder (table 1:
        ``RTR``, ``DRC 1 <axis> 2``) at least at ``rate_hz``; returns ``(t_start_s, period_s)``:
        point ``k`` is the position at ``t_start_s + k * period_s`` on the clock.

        Read the points with :meth:`recorded_positions`: one round trip per batch instead of a
        ``POS?`` per sample. The period is a whole number of servo cycles.
        """
        if axis not in KEYWORD_AXES:
            raise LimitError(self.name, f"unknown axis {axis!r}; use {list(KEYWORD_AXES)}")
        check_finite(self.name, "rate_hz", rate_hz)
        if not rate_hz > 0:
            raise LimitError(self.name, f"record rate must be > 0 Hz, got {rate_hz}")
        cycles = max(1, math.floor(1.0 / (rate_hz * self.spec.servo_cycle_s) + 1e-6))
        link = self._link()
        link.command(f"RTR {cycles}")
        t_start = self.clock.now()
        link.command(f"DRC 1 {KEYWORD_AXES[axis]} 2")
        self._recorded = 0
        return t_start, cycles * self.spec.servo_cycle_s

    def recorded_positions(self) -> list[float]:
        """The points recorded since the last call (mm or deg), oldest first (``DRL?``, then
        ``DRR?`` when there are new ones)."""
        link = self._link()
        reply = link.query("DRL? 1")
        table, _, count = reply.strip().partition("=")
        try:
            if table.strip() != "1":
                raise ValueError(table)
            total = int(count)
        except ValueError:
            raise DeviceError(self.name, "DRL? answer is not a count", command="DRL? 1",
                              reply=reply) from None
        new = total - self._recorded
        if new <= 0:
            return []
        command = f"DRR? {self._recorded + 1} {new} 1"
        values = parse_gcs_array(link.query(command), device=self.name, command=command)
        if len(values) != new:
            raise DeviceError(self.name, f"expected {new} recorded points, got {len(values)}",
                              command=command)
        self._recorded = total
        return values
