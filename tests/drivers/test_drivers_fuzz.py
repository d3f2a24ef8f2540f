"""Hypothesis fuzzing of the GCS and RDT servers and parsers: no crash, no hang."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drivers.base import DeviceError, Wrench
from drivers.force import rdt
from drivers.force.netft import NetFtSensor
from drivers.hexapod.connection import SocketGcsConnection
from drivers.hexapod.gcs import GcsHexapod, parse_axis_reply
from drivers.sim.gcs import GcsController, GcsSimServer
from drivers.sim.netft import NetFtSimServer
from drivers.sim.world import SimWorld
from lab.clock import SimClock

FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
GCS_WORDS = st.sampled_from(
    ["MOV", "MVR", "POS?", "ONT?", "SVO", "FRF", "FRF?", "VLS", "VLS?", "HLT", "STP", "ERR?",
     "NLM", "PLM?", "SAI?", "X", "Y", "Z", "U", "1", "0", "-1e309", "nan", "1.5", "\x05", "\x18"]
)
GCS_LINES = st.one_of(
    st.text(max_size=40), st.lists(GCS_WORDS, max_size=6).map(" ".join)
)


@pytest.fixture(scope="module")
def module_world():
    world = SimWorld(SimClock(), np.random.default_rng(0))
    yield world
    world.close()


@FAST
@given(lines=st.lists(GCS_LINES, max_size=8))
def test_gcs_controller_never_crashes(lines):
    world = SimWorld(SimClock(), np.random.default_rng(0))
    try:
        gcs = GcsController(world)
        for line in lines:
            reply = gcs.handle(line)
            assert reply is None or (reply.endswith("\n") and not reply.endswith(" \n"))
        code = gcs.handle("ERR?")
        assert code is not None and int(code) >= 0
        assert gcs.handle("ERR?") == "0\n"
    finally:
        world.close()


@FAST
@given(text=st.text(max_size=80))
def test_axis_reply_parser_raises_only_device_errors(text):
    try:
        values = parse_axis_reply(text, device="hexapod", command="POS?")
    except DeviceError:
        return
    assert set(values) <= set("XYZUVW")


@FAST
@given(data=st.binary(max_size=64))
def test_rdt_decoders_accept_or_reject_cleanly(data):
    request = rdt.decode_request(data)
    assert request is None or len(data) == 8
    try:
        record = rdt.decode_record(data)
    except ValueError:
        assert len(data) != 36
    else:
        assert record.encode() == data


@pytest.fixture(scope="module")
def gcs_server(module_world):
    server = GcsSimServer(GcsController(module_world)).start()
    yield server
    server.close()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=300))
def test_gcs_server_survives_garbage_and_keeps_serving(gcs_server, garbage, module_world):
    accepted = gcs_server.accepted
    with socket.create_connection(gcs_server.address, timeout=1.0) as rogue:
        rogue.sendall(garbage)
        rogue.shutdown(socket.SHUT_WR)  # the server handles all of it, then sees EOF
        gcs_server.join_finished_clients(accepted=accepted + 1)
    with GcsHexapod(
        lambda: SocketGcsConnection(*gcs_server.address, timeout_s=1.0), module_world.clock
    ) as hexapod:  # connect() clears the error the garbage left (one register per controller)
        assert len(hexapod.position()) == 6
        assert hexapod.error() == 0


@pytest.fixture(scope="module")
def netft_server(module_world):
    server = NetFtSimServer(module_world, "indenter_sensor").start()
    yield server
    server.close()


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.lists(st.binary(max_size=48), max_size=4))
def test_rdt_server_ignores_garbage_and_keeps_serving(netft_server, module_world, garbage):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rogue:
        for datagram in garbage:
            if rdt.decode_request(datagram) is None:
                rogue.sendto(datagram, netft_server.address)
    with NetFtSensor(*netft_server.address, clock=module_world.clock, timeout_s=1.0) as sensor:
        assert isinstance(sensor.read(), Wrench)


@settings(max_examples=30, deadline=None)
@given(replies=st.lists(st.binary(max_size=60), min_size=1, max_size=3))
def test_netft_driver_handles_any_reply_within_its_timeout(replies):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        peer.bind(("127.0.0.1", 0))
        with NetFtSensor(*peer.getsockname(), clock=SimClock(), timeout_s=0.05) as sensor:
            # the driver sends its request first; the peer then answers with fuzz
            try:
                sensor._send(rdt.CMD_SET_SOFTWARE_BIAS)  # any datagram gives the peer our address
                _, addr = peer.recvfrom(64)
                for reply in replies:
                    peer.sendto(reply, addr)
                sample = sensor.read()  # flushes the fuzz, then waits: times out or decodes
            except DeviceError:
                return
            assert isinstance(sample, Wrench)
