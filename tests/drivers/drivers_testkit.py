"""Helpers for the driver tests: scripted GCS and RDT peers that fail on unused pairs."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator, Sequence

import numpy as np
from pipython import GCSDevice
from pipython.pidevice.interfaces.pigateway import PIGateway

from drivers.hexapod.connection import PipythonGcsConnection
from drivers.hexapod.gcs import GcsHexapod, HexapodSpec
from drivers.sim.gcs import GcsController, GcsSimServer
from drivers.sim.world import SimWorld
from lab.clock import SimClock

#: What pipython's GCSDevice sends when it is handed a connected gateway, then our connect().
GCS_CONNECT_PAIRS = [
    ("CSV?", "2.0"), ("ERR?", "0"),            # pipython: GCS 2 or GCS 3?
    ("ERR?", "0"),                              # GcsHexapod.connect(): clear a stale error
    ("*IDN?", "(c)2024 PI, C-887.52, 0, 1"), ("ERR?", "0"),
]


class ScriptedGateway(PIGateway):
    """A pipython gateway that expects exact commands and plays back exact replies.

    ``pairs`` are ``(sent, reply)`` with terminators left out: ``sent`` is the command without its
    LF, ``reply`` the wire text without the final LF (inner lines keep GCS's ``" \\n"``), or None
    when the controller sends nothing.
    """

    def __init__(self, pairs: Sequence[tuple[str, str | None]]) -> None:
        self.pairs = list(pairs)
        self.index = 0
        self._pending = ""
        self._connected = True

    def __enter__(self) -> ScriptedGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __str__(self) -> str:
        return "ScriptedGateway"

    @property
    def timeout(self) -> int:
        return 100  # ms: a missing reply fails fast

    def settimeout(self, value: int) -> None:
        return None

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def connectionid(self) -> int:
        return 0

    def send(self, msg: str) -> None:
        sent = msg[:-1] if msg.endswith("\n") else msg
        if self.index >= len(self.pairs):
            raise AssertionError(f"unexpected extra command {sent!r}")
        expected, reply = self.pairs[self.index]
        if sent != expected:
            raise AssertionError(f"command {self.index}: expected {expected!r}, sent {sent!r}")
        self.index += 1
        self._pending = "" if reply is None else reply + "\n"

    def read(self) -> str:
        out, self._pending = self._pending, ""
        return out

    def flush(self) -> None:
        self._pending = ""

    def close(self) -> None:
        self._connected = False

    def unload(self) -> None:
        self.close()

    def assert_all_used(self) -> None:
        unused = self.pairs[self.index:]
        if unused:
            raise AssertionError(f"pairs not used: {unused}")


@contextlib.contextmanager
def expected_gcs(
    spec: HexapodSpec, pairs: Sequence[tuple[str, str | None]], **kwargs: object
) -> Iterator[GcsHexapod]:
    """A connected GcsHexapod over pipython whose wire traffic must be exactly ``pairs``.

    The connect handshake (``GCS_CONNECT_PAIRS``) is prepended. Checked in ``finally``: a test
    that raises still proves nothing else was sent.
    """
    gateway = ScriptedGateway([*GCS_CONNECT_PAIRS, *pairs])
    hexapod = GcsHexapod(
        lambda: PipythonGcsConnection(GCSDevice(gateway=gateway)), SimClock(), spec,
        **kwargs,  # type: ignore[arg-type]
    )
    hexapod.connect()
    try:
        yield hexapod
    finally:
        hexapod.close()
        gateway.assert_all_used()


@contextlib.contextmanager
def running_gcs_sim(seed: int = 1) -> Iterator[tuple[SimWorld, GcsSimServer]]:
    """A GCS simulator on loopback with its own world; closed afterwards."""
    world = SimWorld(SimClock(), np.random.default_rng(seed))
    server = GcsSimServer(GcsController(world)).start()
    try:
        yield world, server
    finally:
        server.close()
        world.close()


@contextlib.contextmanager
def expected_rdt(
    pairs: Sequence[tuple[bytes, Sequence[bytes]]], timeout_s: float = 2.0
) -> Iterator[tuple[str, int]]:
    """A UDP peer on loopback that expects exact datagrams and answers with exact datagrams.

    Yields its ``(host, port)``. A thread receives each expected request (byte for byte) and sends
    its replies. Checked in ``finally``: every pair used, no mismatch, nothing extra received.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(timeout_s)
    errors: list[BaseException] = []
    used = [0]

    def play() -> None:
        try:
            for i, (expected, replies) in enumerate(pairs):
                data, addr = sock.recvfrom(2048)
                if data != expected:
                    raise AssertionError(
                        f"datagram {i}: expected {expected.hex()}, got {data.hex()}"
                    )
                used[0] += 1
                for reply in replies:
                    sock.sendto(reply, addr)
        except BaseException as err:  # reported by the context manager
            errors.append(err)

    thread = threading.Thread(target=play, name="rdt-script", daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[:2]
    finally:
        thread.join(timeout=timeout_s + 1.0)
        sock.settimeout(0.05)
        extra = b""
        try:
            extra, _ = sock.recvfrom(2048)
        except TimeoutError:
            pass  # nothing extra was sent: what we want
        sock.close()
        if errors:
            raise errors[0]
        if used[0] != len(pairs):
            raise AssertionError(f"pairs not used: {list(pairs)[used[0]:]}")
        if extra:
            raise AssertionError(f"unexpected extra datagram {extra.hex()}")
