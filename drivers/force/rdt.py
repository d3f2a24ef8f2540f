"""ATI Net F/T Raw Data Transfer (RDT) protocol: request and record framing.

RDT runs over UDP, port 49152. A request is 8 bytes, big-endian ``>HHI``: the header 0x1234, a
command and a sample count (0 = stream until told to stop). The Net F/T answers each sample with a
36-byte big-endian record ``>III6i``: RDT sequence (one per packet sent), F/T sequence (the
internal sample counter), status word and Fx Fy Fz Tx Ty Tz in counts; dividing by the counts per
force / per torque of the active configuration gives N and N m (or the configured units).
The device ignores datagrams that are not valid requests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

RDT_PORT = 49152
RDT_HEADER = 0x1234

CMD_STOP_STREAMING = 0x0000
CMD_START_REALTIME = 0x0002
CMD_START_BUFFERED = 0x0003
CMD_START_MULTI_UNIT = 0x0004
CMD_RESET_THRESHOLD_LATCH = 0x0041
CMD_SET_SOFTWARE_BIAS = 0x0042

KNOWN_COMMANDS = frozenset(
    {
        CMD_STOP_STREAMING, CMD_START_REALTIME, CMD_START_BUFFERED, CMD_START_MULTI_UNIT,
        CMD_RESET_THRESHOLD_LATCH, CMD_SET_SOFTWARE_BIAS,
    }
)

REQUEST = struct.Struct(">HHI")
RECORD = struct.Struct(">III6i")
REQUEST_SIZE = REQUEST.size  # 8
RECORD_SIZE = RECORD.size  # 36

#: Status bit 31: the Net F/T reports an error or warning condition (saturation among them).
STATUS_ERROR = 0x8000_0000
#: Bit our simulator sets (with bit 31) when a gauge saturates; our choice, see docs/hardware.md.
STATUS_SIM_SATURATION = 0x0002_0000

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


def encode_request(command: int, sample_count: int = 0) -> bytes:
    """Bytes of an RDT request (8 bytes, big-endian)."""
    if not 0 <= command <= 0xFFFF:
        raise ValueError(f"RDT command must fit in 16 bits, got {command}")
    if not 0 <= sample_count <= 0xFFFF_FFFF:
        raise ValueError(f"RDT sample count must fit in 32 bits, got {sample_count}")
    return REQUEST.pack(RDT_HEADER, command, sample_count)


def decode_request(data: bytes) -> tuple[int, int] | None:
    """``(command, sample_count)`` of a valid request, or None for anything else."""
    if len(data) != REQUEST_SIZE:
        return None
    header, command, count = REQUEST.unpack(data)
    if header != RDT_HEADER:
        return None
    return command, count


@dataclass(frozen=True)
class RdtRecord:
    """One decoded RDT record; ``counts`` are Fx Fy Fz Tx Ty Tz in counts."""

    rdt_sequence: int
    ft_sequence: int
    status: int
    counts: tuple[int, int, int, int, int, int]

    def encode(self) -> bytes:
        return RECORD.pack(self.rdt_sequence, self.ft_sequence, self.status, *self.counts)

    def force_torque(
        self, *, counts_per_force: float, counts_per_torque: float
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Force (N) and torque (N m) of this record, shape (3,) each."""
        c = self.counts
        return (np.array([c[0] / counts_per_force, c[1] / counts_per_force,
                          c[2] / counts_per_force]),
                np.array([c[3] / counts_per_torque, c[4] / counts_per_torque,
                          c[5] / counts_per_torque]))


def decode_record(data: bytes) -> RdtRecord:
    """Decode one 36-byte record; raises ValueError on any other size."""
    if len(data) != RECORD_SIZE:
        raise ValueError(f"RDT record must be {RECORD_SIZE} bytes, got {len(data)}")
    rdt_seq, ft_seq, status, *counts = RECORD.unpack(data)
    return RdtRecord(rdt_seq, ft_seq, status, tuple(counts))  # type: ignore[arg-type]


def to_counts(
    force_n: NDArray[np.floating], torque_nm: NDArray[np.floating], *,
    counts_per_force: float, counts_per_torque: float,
) -> tuple[int, int, int, int, int, int]:
    """Force and torque converted to int32 counts (rounded half to even, clipped to the int32
    range, infinities included); NaN is refused with ValueError."""
    fx, fy, fz = np.asarray(force_n, float).reshape(3).tolist()
    tx, ty, tz = np.asarray(torque_nm, float).reshape(3).tolist()
    values = (fx * counts_per_force, fy * counts_per_force, fz * counts_per_force,
              tx * counts_per_torque, ty * counts_per_torque, tz * counts_per_torque)
    if any(v != v for v in values):  # NaN is the only value unequal to itself
        raise ValueError(f"force/torque must not be NaN, got {list(values)}")
    return tuple(round(min(max(v, _INT32_MIN), _INT32_MAX))  # type: ignore[return-value]
                 for v in values)
