"""RDT framing, the Net F/T driver against its simulator, and the serial backend on a pty."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from drivers_testkit import expected_rdt

from drivers.base import DeviceError, DeviceTimeoutError
from drivers.force import rdt
from drivers.force.netft import NetFtSensor
from drivers.force.serial_ft import SerialFtSensor, parse_record_line
from drivers.force.spec import NANO17
from drivers.sim.faults import ForceSpike
from drivers.sim.netft import NetFtSimServer
from drivers.sim.phantom import CylinderPhantom
from drivers.sim.serial_ft import SerialFtSimResponder
from drivers.sim.world import SimWorld
from lab.clock import SimClock

ONE_SAMPLE = bytes.fromhex("1234 0002 00000001")
BIAS = bytes.fromhex("1234 0042 00000000")


def _record(seq: int, fz_counts: int, status: int = 0) -> bytes:
    return struct.pack(">III6i", seq, 7 * seq, status, 10, -20, fz_counts, 1, 2, 3)


def test_request_and_record_framing():
    assert rdt.encode_request(rdt.CMD_START_REALTIME, 1) == ONE_SAMPLE
    assert rdt.decode_request(ONE_SAMPLE) == (2, 1)
    assert rdt.decode_request(b"\x12\x35" + ONE_SAMPLE[2:]) is None  # wrong header
    assert rdt.decode_request(ONE_SAMPLE + b"\x00") is None  # wrong size
    record = rdt.decode_record(_record(5, 250_000))
    assert (record.rdt_sequence, record.ft_sequence, record.counts[2]) == (5, 35, 250_000)
    assert record.encode() == _record(5, 250_000)
    with pytest.raises(ValueError, match="36 bytes"):
        rdt.decode_record(_record(5, 1)[:-1])


def test_read_and_bias_exact_datagrams():
    clock = SimClock(12.5)
    pairs = [(ONE_SAMPLE, [_record(1, 250_000)]), (BIAS, []), (ONE_SAMPLE, [_record(2, 0)]),
             (ONE_SAMPLE, [b"short", _record(3, 0, status=0x8000_0000)])]
    with expected_rdt(pairs) as (host, port):
        with NetFtSensor(host, port, clock=clock, counts_per_force=1e6, counts_per_torque=1e3,
                         timeout_s=1.0) as sensor:
            first = sensor.read()
            sensor.bias()
            second = sensor.read()
    np.testing.assert_allclose(first.force_n, [1e-5, -2e-5, 0.25])
    np.testing.assert_allclose(first.torque_nm, [1e-3, 2e-3, 3e-3])
    assert first.t_s == 12.5 and not first.saturated
    assert second.saturated and second.fz_n == 0.0  # status bit 31
    assert sensor.malformed_packets == 1


def test_silent_device_times_out():
    with expected_rdt([(ONE_SAMPLE, [])]) as (host, port):
        with NetFtSensor(host, port, clock=SimClock(), timeout_s=0.2) as sensor:
            with pytest.raises(DeviceTimeoutError) as info:
                sensor.read()
    assert "0x0002" in (info.value.command or "")


@pytest.fixture
def netft():
    clock = SimClock()
    world = SimWorld(clock, np.random.default_rng(3), cylinder=CylinderPhantom("c", 7.5))
    server = NetFtSimServer(world, "indenter_sensor").start()
    sensor = NetFtSensor(*server.address, clock=clock, spec=NANO17, timeout_s=1.0)
    sensor.connect()
    try:
        yield world, server, sensor
    finally:
        sensor.close()
        server.close()
        world.close()


def test_read_after_sleep_sees_the_world_at_the_new_time(netft):
    world, _, sensor = netft
    sensor.bias()
    assert abs(sensor.read().fz_n) < 0.02
    world.hexapod_move({"Z": -3.0}, velocity_mm_s=0.01)  # contact at -1 mm
    world.clock.sleep(200.0)  # Z = -2 mm: 1 mm into the 40 mm cylinder
    sample = sensor.read()
    assert sample.t_s == 200.0
    assert sample.fz_n == pytest.approx(world.cylinder_force_n(), abs=0.01)
    assert world.cylinder_force_n() == pytest.approx(37.55e3 * np.pi * 1e-4 * (1 / 40 - 0.003))


def test_streaming_decimates_timestamps_and_counts_losses(netft):
    world, _, sensor = netft
    received = []
    sensor.start_streaming(rate_hz=100.0, callback=received.append)
    for _ in range(10):
        world.clock.sleep(0.05)
        sensor.read()  # newest streamed sample, no new request
    world.faults.packet_loss_probability = 0.5
    world.clock.sleep(1.0)
    world.faults.packet_loss_probability = 0.0
    world.clock.sleep(0.1)
    last = sensor.read()
    sensor.stop_streaming()
    samples = sensor.drain()
    times = np.array([s.t_s for s in samples])
    assert times[0] == 0.0 and last.t_s == pytest.approx(1.6)
    assert np.all(np.diff(times) > 0)
    np.testing.assert_allclose(np.diff(times)[:50], 0.01)  # every 2nd RDT record of 200 Hz
    assert 50 < sensor.lost_packets < 150  # about half of 200 records
    assert len(received) == len(samples)
    assert sensor.out_of_order_packets == 0


def test_packet_drop_fault_loses_exactly_the_chosen_records(netft):
    world, _, sensor = netft
    sensor.start_streaming(rate_hz=200.0)
    world.faults.drop_packets("probe_sensor", 0.1, count=3)  # not this sensor: no effect
    drop = world.faults.drop_packets("indenter_sensor", 0.1, count=3)
    world.clock.sleep(0.2)
    assert sensor.read().t_s == pytest.approx(0.2)  # the newest: after the gap
    sensor.stop_streaming()
    times = np.array([s.t_s for s in sensor.drain()])
    expected = np.round(np.arange(0, 0.2001, 0.005), 6)
    expected = expected[(expected < 0.1) | (expected > 0.11)]  # 0.100, 0.105, 0.110 lost
    np.testing.assert_allclose(times, expected, atol=1e-9)  # timestamps from the sequence
    assert sensor.lost_packets == 3 and drop.dropped == 3
    with pytest.raises(ValueError, match="count"):
        world.faults.drop_packets("probe_sensor", 0.0, count=0)


def test_streaming_rate_must_divide_rdt_rate(netft):
    _, _, sensor = netft
    with pytest.raises(ValueError, match="divide"):
        sensor.start_streaming(rate_hz=150.0)


def test_dropout_spike_and_malformed(netft):
    world, _, sensor = netft
    sensor.bias()
    world.faults.force_spikes.append(ForceSpike("indenter_sensor", 1.0, 0.01, 5.0))
    world.clock.sleep(1.0)
    assert sensor.read().fz_n == pytest.approx(5.0, abs=0.02)
    world.clock.sleep(0.02)
    assert abs(sensor.read().fz_n) < 0.02
    world.faults.sensor_dropout.add("indenter_sensor")
    sensor.timeout_s = 0.2
    with pytest.raises(DeviceTimeoutError):
        sensor.read()
    world.faults.sensor_dropout.clear()
    world.faults.malformed_replies.add("indenter_sensor")
    with pytest.raises(DeviceTimeoutError):
        sensor.read()  # wrong-size datagrams are discarded
    assert sensor.malformed_packets >= 1
    world.faults.malformed_replies.clear()
    assert abs(sensor.read().fz_n) < 0.02


def test_saturation_flag_from_status_and_range(netft):
    world, _, sensor = netft
    world.faults.force_spikes.append(ForceSpike("indenter_sensor", 1.0, 1.0, 20.0))  # > 17 N
    world.clock.sleep(1.5)
    sample = sensor.read()
    assert sample.saturated
    assert sample.fz_n == pytest.approx(17.0, abs=0.1)  # clipped at the range
    world.clock.sleep(1.0)
    assert not sensor.read().saturated


def test_serial_sensor_on_a_pty():
    clock = SimClock()
    world = SimWorld(clock, np.random.default_rng(5), cylinder=CylinderPhantom("c", 12.5))
    with SerialFtSimResponder(world, "indenter_sensor") as responder:
        with SerialFtSensor(responder.port, clock=clock, spec=NANO17) as sensor:
            sensor.bias()
            world.hexapod_move({"Z": -2.0}, velocity_mm_s=1.0)
            clock.sleep(5.0)
            sample = sensor.read()
            assert sample.fz_n == pytest.approx(world.cylinder_force_n(), abs=0.01)
            assert sample.t_s == 5.0
            world.faults.malformed_replies.add("indenter_sensor")
            with pytest.raises(DeviceError, match="malformed"):
                sensor.read()
            world.faults.malformed_replies.clear()
            world.faults.sensor_dropout.add("indenter_sensor")
            sensor.timeout_s = 0.2
            sensor._serial.timeout = 0.2  # type: ignore[union-attr]
            with pytest.raises(DeviceTimeoutError):
                sensor.read()
            with pytest.raises(DeviceError, match="not implemented"):
                sensor.start_streaming()
    world.close()


def test_parse_record_line():
    assert parse_record_line(" 0, 1, -2, 3, 4, 5, 6\r\n") == (0, (1, -2, 3, 4, 5, 6))
    with pytest.raises(ValueError):
        parse_record_line("0,1,2")


def test_start_streaming_waits_for_the_first_record(netft):
    """start_streaming returns only once the device streams; a silent device is an error (and
    the receiving thread is not left running: the suite's leak check would fail)."""
    world, _, sensor = netft
    world.faults.sensor_dropout.add("indenter_sensor")
    sensor.timeout_s = 0.2
    with pytest.raises(DeviceTimeoutError, match="no record"):
        sensor.start_streaming(rate_hz=100.0)
    world.faults.sensor_dropout.clear()
    sensor.start_streaming(rate_hz=100.0)
    assert len(sensor.drain()) >= 1  # the first record is there on return
    sensor.stop_streaming()
