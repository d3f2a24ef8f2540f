"""The hexapod driver and PI's pipython against the GCS simulator over TCP."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from drivers_testkit import running_gcs_sim
from pipython import GCSDevice, GCSError

from drivers.base import DeviceError, DeviceTimeoutError, LimitError
from drivers.hexapod.connection import (
    GcsControllerError,
    PipythonGcsConnection,
    PyvisaGcsConnection,
    SocketGcsConnection,
    _OnceClosingSocket,
)
from drivers.hexapod.gcs import GcsHexapod
from drivers.sim.gcs import GcsSimServer
from drivers.sim.world import SimWorld


@pytest.fixture
def gcs_sim() -> Iterator[tuple[SimWorld, GcsSimServer]]:
    with running_gcs_sim() as sim:
        yield sim


def test_pipython_gcsdevice_works_unchanged(gcs_sim):
    world, server = gcs_sim
    host, port = server.address
    # pipython closes the gateway twice (GCSDevice.__exit__ and __del__, or PISocket.__exit__);
    # our subclass only makes close() idempotent, the protocol code is PI's.
    gateway = _OnceClosingSocket(host, port)
    with GCSDevice(gateway=gateway) as pidevice:
        assert "C-887" in pidevice.qIDN()
        assert pidevice.qSAI() == ["X", "Y", "Z", "U", "V", "W"]
        pidevice.SVO(["X", "Y", "Z", "U", "V", "W"], [True] * 6)
        assert all(pidevice.qSVO().values())
        pidevice.FRF()
        world.clock.advance(30.0)
        assert all(pidevice.qFRF().values())
        pidevice.MOV({"X": 1.5, "Z": -2.0})
        assert pidevice.qONT()["X"] is False
        world.clock.advance(5.0)
        assert pidevice.qONT() == dict.fromkeys("XYZUVW", True)
        pos = pidevice.qPOS()
        assert pos["X"] == pytest.approx(1.5) and pos["Z"] == pytest.approx(-2.0)
        with pytest.raises(GCSError) as info:
            pidevice.MOV("Z", 40.0)  # outside travel: the controller sets error 7
        assert info.value.val == 7
        assert pidevice.qERR() == 0


@pytest.mark.parametrize("client", ["socket", "pipython", "pyvisa"])
def test_driver_moves_in_virtual_time(gcs_sim, client):
    world, server = gcs_sim
    host, port = server.address
    opener = {
        "socket": lambda: SocketGcsConnection(host, port, timeout_s=1.0),
        "pipython": lambda: PipythonGcsConnection.tcp(host, port, timeout_s=1.0),
        "pyvisa": lambda: PyvisaGcsConnection(host, port, timeout_s=1.0),
    }[client]
    with GcsHexapod(opener, world.clock, poll_interval_s=0.1) as hexapod:
        hexapod.servo(True)
        hexapod.reference().wait(timeout_s=60.0)
        hexapod.set_velocity(0.5)
        t0 = world.clock.now()
        hexapod.move_to(z_mm=-1.0, u_deg=0.25).wait(timeout_s=10.0)
        assert world.clock.now() - t0 == pytest.approx(2.0, abs=0.11)  # 1 mm at 0.5 mm/s
        assert hexapod.on_target()
        assert hexapod.position()["z_mm"] == pytest.approx(-1.0)
        hexapod.move_relative(z_mm=0.25).wait(timeout_s=10.0)
        assert hexapod.position()["z_mm"] == pytest.approx(-0.75)
        status = hexapod.move_to(z_mm=-10.0)
        with pytest.raises(DeviceTimeoutError):
            status.wait(timeout_s=1.0)  # 19 s of motion left
        hexapod.stop()
        assert hexapod.error() == 0  # the halt's error 10 was read by stop()
        assert status.done and not status.success
        z = hexapod.position()["z_mm"]
        world.clock.advance(5.0)
        assert hexapod.position()["z_mm"] == z  # halted


def test_soft_limits_narrow_the_travel(gcs_sim):
    world, server = gcs_sim
    host, port = server.address
    hexapod = GcsHexapod(
        lambda: SocketGcsConnection(*server.address), world.clock,
        soft_limits={"z_mm": (-5.0, 1.0)},
    )
    with hexapod, pytest.raises(LimitError):
        hexapod.move_to(z_mm=-6.0)
    with pytest.raises(ValueError, match="inside the travel"):
        GcsHexapod(lambda: SocketGcsConnection(host, port), world.clock,
                   soft_limits={"z_mm": (-30.0, 1.0)})


def test_move_without_reference_surfaces_controller_error(gcs_sim):
    world, server = gcs_sim
    with GcsHexapod(lambda: SocketGcsConnection(*server.address), world.clock) as hexapod:
        with pytest.raises(GcsControllerError) as info:
            hexapod.move_to(x_mm=1.0)
    assert info.value.code == 5 and info.value.command == "MOV X 1"


def test_disconnect_gives_clear_error_and_other_faults(gcs_sim):
    world, server = gcs_sim
    hexapod = GcsHexapod(
        lambda: SocketGcsConnection(*server.address, timeout_s=0.3), world.clock
    )
    with hexapod:
        world.faults.malformed_replies.add("hexapod")
        with pytest.raises(DeviceError, match="malformed"):
            hexapod.position()
        world.faults.malformed_replies.clear()
        world.faults.reply_delay_s["hexapod"] = 1.0
        with pytest.raises(DeviceTimeoutError):
            hexapod.position()
        world.faults.reply_delay_s.clear()
        world.faults.disconnect("hexapod")
        with pytest.raises(DeviceError):
            hexapod.position()
    with pytest.raises(DeviceError):  # refused while the link is down
        GcsHexapod(lambda: SocketGcsConnection(*server.address, timeout_s=0.3),
                   world.clock).connect()
    world.faults.reconnect("hexapod")
    with GcsHexapod(lambda: SocketGcsConnection(*server.address), world.clock) as hexapod:
        assert len(hexapod.position()) == 6


def test_garbage_client_does_not_disturb_others(gcs_sim):
    world, server = gcs_sim
    with socket.create_connection(server.address, timeout=1.0) as rogue:
        rogue.sendall(b"\xff\xfe\x00 MOV X \n\x07" + b"A" * 5000 + b"\nPOS? X\n")
        expected = "\xb1\nX=0.000000\n".encode("cp1252")  # #7 ready, then POS? X
        reply = b""
        while len(reply) < len(expected):
            reply += rogue.recv(100)
        assert reply == expected
        rogue.sendall(b"ERR?\n")  # one error register per controller, as on the C-887
        assert rogue.recv(100) == b"2\n"
        with GcsHexapod(lambda: SocketGcsConnection(*server.address), world.clock) as hexapod:
            assert hexapod.position()["x_mm"] == 0.0


def test_pyvisa_link_to_a_closed_port_is_a_clear_error():
    """pyvisa-py connects lazily: the failure surfaces at the first exchange, as a DeviceError
    naming the command, within the timeout."""
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    try:
        conn = PyvisaGcsConnection("127.0.0.1", port, timeout_s=0.5)
    except DeviceError as err:
        assert "cannot open" in str(err)
        return
    try:
        with pytest.raises(DeviceError, match=r"\*IDN\?"):
            conn.query("*IDN?")
    finally:
        conn.close()
