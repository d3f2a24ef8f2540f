"""Faults the simulated lab can inject, selectable from tests and config.

Device names used as keys: ``"robot"``, ``"hexapod"``, ``"probe_sensor"`` (Nano43 on the robot) and
``"indenter_sensor"`` (Nano17 under the hexapod plate). A :class:`FaultConfig` is mutable on
purpose: a test may switch a fault on in the middle of a run
(``world.faults.disconnect("hexapod")``) and the simulators see it at their next request.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEVICE_NAMES = ("robot", "hexapod", "probe_sensor", "indenter_sensor")


@dataclass(frozen=True)
class ForceSpike:
    """A transient force added to one sensor's Fz (e.g. a knock on the table).

    ``force_n`` is added during ``[t_start_s, t_start_s + duration_s)`` of virtual time.
    """

    sensor: str
    t_start_s: float
    duration_s: float
    force_n: float

    def active(self, sensor: str, t_s: float) -> bool:
        return sensor == self.sensor and self.t_start_s <= t_s < self.t_start_s + self.duration_s


@dataclass
class PacketDrop:
    """Lose the RDT records one sensor's simulator sends for its next ``count`` sample times at
    or after ``t_start_s`` of virtual time (a network dropping packets; the RDT sequence numbers
    still advance, so the client sees the gap)."""

    sensor: str
    t_start_s: float
    count: int = 1
    dropped: int = 0

    def take(self, sensor: str, t_s: float) -> bool:
        """Whether the record of ``sensor`` sampled at ``t_s`` is lost (counts it)."""
        if sensor != self.sensor or t_s < self.t_start_s or self.dropped >= self.count:
            return False
        self.dropped += 1
        return True


@dataclass
class FaultConfig:
    """Faults injected into the simulated instruments.

    Attributes
    ----------
    disconnected : set of str
        Devices whose link is down: wire simulators close the connection (TCP) or stop answering
        (UDP); the simulated RTDE interfaces raise ``RuntimeError`` like ur_rtde on a lost socket.
    reply_delay_s : dict of str to float
        Extra delay before each reply of a wire simulator, in wall-clock seconds (network timing is
        real time even when physics runs on a virtual clock; the wait is interruptible by close()).
    malformed_replies : set of str
        Devices whose wire simulator answers with garbage instead of a well-formed reply.
    packet_loss_probability : float
        Probability that the RDT simulator drops an outgoing record (0 to 1), drawn from the
        world's generator.
    sensor_dropout : set of str
        Sensors that stop producing data (no RDT records, no serial reply).
    force_spikes : list of ForceSpike
        Transient forces added to a sensor's Fz.
    packet_drops : list of PacketDrop
        Exact RDT records to lose (deterministic, unlike ``packet_loss_probability``).
    protective_stop_at_s : float or None
        Virtual time at which the robot enters a protective stop on its own.
    """

    disconnected: set[str] = field(default_factory=set)
    reply_delay_s: dict[str, float] = field(default_factory=dict)
    malformed_replies: set[str] = field(default_factory=set)
    packet_loss_probability: float = 0.0
    sensor_dropout: set[str] = field(default_factory=set)
    force_spikes: list[ForceSpike] = field(default_factory=list)
    packet_drops: list[PacketDrop] = field(default_factory=list)
    protective_stop_at_s: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.packet_loss_probability <= 1.0:
            raise ValueError(
                f"packet_loss_probability must be in [0, 1], got {self.packet_loss_probability}"
            )
        for name in (
            *self.disconnected, *self.reply_delay_s, *self.malformed_replies, *self.sensor_dropout
        ):
            _check_device(name)

    def disconnect(self, device: str) -> None:
        """Take ``device``'s link down."""
        self.disconnected.add(_check_device(device))

    def reconnect(self, device: str) -> None:
        """Bring ``device``'s link back up."""
        self.disconnected.discard(_check_device(device))

    def drop_packets(self, sensor: str, t_start_s: float, count: int = 1) -> PacketDrop:
        """Lose ``sensor``'s next ``count`` RDT records sampled at or after ``t_start_s``."""
        if count < 1:
            raise ValueError(f"count must be >= 1, got {count}")
        drop = PacketDrop(_check_device(sensor), float(t_start_s), int(count))
        self.packet_drops.append(drop)
        return drop

    def packet_dropped(self, sensor: str, t_s: float) -> bool:
        """Whether a :class:`PacketDrop` loses ``sensor``'s record sampled at ``t_s``."""
        return any(d.take(sensor, t_s) for d in self.packet_drops)

    def spike_n(self, sensor: str, t_s: float) -> float:
        """Sum of the spikes active on ``sensor`` at ``t_s``, in newtons."""
        return float(sum(s.force_n for s in self.force_spikes if s.active(sensor, t_s)))


def _check_device(name: str) -> str:
    if name not in DEVICE_NAMES:
        raise ValueError(f"unknown device {name!r} in fault config; expected one of {DEVICE_NAMES}")
    return name
