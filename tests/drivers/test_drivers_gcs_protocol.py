"""Exact GCS command/reply tests: GcsHexapod through pipython against a scripted controller."""

from __future__ import annotations

import pytest
from drivers_testkit import expected_gcs

from drivers.base import DeviceError, LimitError
from drivers.hexapod.connection import GcsControllerError
from drivers.hexapod.gcs import H820, format_number
from drivers.sim.gcs import GcsController, format_reply
from drivers.sim.world import SimWorld
from lab.clock import SimClock

ALL_ON = "X=1 \nY=1 \nZ=1 \nU=1 \nV=1 \nW=1"


def test_move_z_then_error_query():
    with expected_gcs(H820, [("MOV Z -0.25", None), ("ERR?", "0")]) as hexapod:
        hexapod.move_to(z_mm=-0.25)


def test_limit_rejected_before_sending():
    with expected_gcs(H820, []) as hexapod, pytest.raises(LimitError, match="z_mm"):
        hexapod.move_to(z_mm=-60.0)


def test_unknown_axis_and_nan_rejected_before_sending():
    with expected_gcs(H820, []) as hexapod:
        with pytest.raises(LimitError, match="unknown axis"):
            hexapod.move_to(q_mm=1.0)
        with pytest.raises(LimitError, match="finite"):
            hexapod.move_to(x_mm=float("nan"))
        with pytest.raises(LimitError):
            hexapod.set_velocity(25.0)


def test_axes_sent_in_gcs_order_and_on_target_polled():
    pairs = [
        ("MOV X 1 Z -0.5 W 2.5", None), ("ERR?", "0"),
        ("ONT? X Z W", "X=0 \nZ=0 \nW=0"), ("ERR?", "0"),
        ("ONT? X Z W", "X=1 \nZ=1 \nW=1"), ("ERR?", "0"),
    ]
    with expected_gcs(H820, pairs) as hexapod:
        status = hexapod.move_to(w_deg=2.5, z_mm=-0.5, x_mm=1.0)
        status.wait(timeout_s=1.0)
        assert status.success


def test_position_parses_multiline_reply():
    reply = "X=1.000000 \nY=-2.500000 \nZ=0.000000 \nU=0.100000 \nV=0.000000 \nW=-3.000000"
    with expected_gcs(H820, [("POS?", reply), ("ERR?", "0")]) as hexapod:
        assert hexapod.position() == {
            "x_mm": 1.0, "y_mm": -2.5, "z_mm": 0.0, "u_deg": 0.1, "v_deg": 0.0, "w_deg": -3.0,
        }


def test_controller_error_carries_code_command_and_device():
    with expected_gcs(H820, [("MOV Z 1", None), ("ERR?", "5")]) as hexapod:
        with pytest.raises(GcsControllerError) as info:
            hexapod.move_to(z_mm=1.0)
    assert info.value.code == 5
    assert info.value.command == "MOV Z 1"
    assert info.value.device == "hexapod"


def test_stop_reads_and_clears_the_halt_error():
    pairs = [("MOV Z -1", None), ("ERR?", "0"), ("HLT", None), ("ERR?", "10")]
    with expected_gcs(H820, pairs) as hexapod:
        status = hexapod.move_to(z_mm=-1.0)
        hexapod.stop()
        assert status.done and not status.success
        with pytest.raises(DeviceError, match="without reaching"):
            status.wait(timeout_s=1.0)


def test_servo_reference_velocity_and_relative_move():
    pairs = [
        ("SVO X 1 Y 1 Z 1 U 1 V 1 W 1", None), ("ERR?", "0"),
        ("FRF", None), ("ERR?", "0"),
        ("FRF?", ALL_ON), ("ERR?", "0"),
        ("VLS 0.01", None), ("ERR?", "0"),
        ("MOV?", "X=0 \nY=0 \nZ=-24.9 \nU=0 \nV=0 \nW=0"), ("ERR?", "0"),
    ]
    with expected_gcs(H820, pairs) as hexapod:
        hexapod.servo(True)
        hexapod.reference().wait(timeout_s=1.0)
        hexapod.set_velocity(0.01)
        with pytest.raises(LimitError):  # -24.9 - 0.2 leaves the travel: nothing sent
            hexapod.move_relative(z_mm=-0.2)


def test_malformed_reply_raises_clear_error():
    with expected_gcs(H820, [("POS?", "garbage"), ("ERR?", "0")]) as hexapod:
        with pytest.raises(DeviceError, match="malformed axis reply"):
            hexapod.position()


def test_error_query_is_a_bare_err():
    with expected_gcs(H820, [("ERR?", "7")]) as hexapod:
        assert hexapod.error() == 7


@pytest.mark.parametrize(
    ("value", "text"), [(-0.25, "-0.25"), (3.0, "3"), (0.01, "0.01"), (-0.0, "0"), (1e-7, "0")]
)
def test_number_formatting(value, text):
    assert format_number(value) == text


def test_reply_format_uses_space_before_lf_continuation():
    assert format_reply(["X=1", "Y=0"]) == "X=1 \nY=0\n"


def test_controller_error_codes_like_a_c887():
    clock = SimClock()
    world = SimWorld(clock, __import__("numpy").random.default_rng(0))
    try:
        gcs = GcsController(world)
        assert gcs.handle("FOO 1") is None
        assert gcs.handle("ERR?") == "2\n"
        assert gcs.handle("ERR?") == "0\n"
        assert gcs.handle("MOV Z 1") is None  # not referenced, servo off
        assert gcs.handle("ERR?") == "5\n"
        assert gcs.handle("POS? Q") is None  # faulty query: no reply, error 15
        assert gcs.handle("ERR?") == "15\n"
        gcs.handle("SVO X 1 Y 1 Z 1 U 1 V 1 W 1")
        gcs.handle("FRF")
        clock.advance(60.0)
        assert gcs.handle("FRF? X Y") == "X=1 \nY=1\n"
        assert gcs.handle("MOV Z 30") is None
        assert gcs.handle("ERR?") == "7\n"
        assert gcs.handle("VLS 0") is None
        assert gcs.handle("ERR?") == "17\n"
        assert gcs.handle("\x05") == "0\n"
        assert gcs.handle("MOV X 1") is None
        assert gcs.handle("ERR?") == "0\n"
        assert gcs.handle("\x05") == "3f\n"
        assert gcs.handle("ONT? X") == "X=0\n"
        clock.advance(2.0)  # 1 mm at 1 mm/s
        assert gcs.handle("ONT? X") == "X=1\n"
        assert gcs.handle("POS? X") == "X=1.000000\n"
    finally:
        world.close()
