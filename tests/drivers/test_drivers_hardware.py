"""Opt-in tests on real instruments: skipped unless an address is given in the environment.

- ``ELASTOLAB_HEXAPOD_ADDRESS=host[:port]``  PI C-887 (port 50000 by default); read-only checks
- ``ELASTOLAB_NETFT_ADDRESS=host[:port]``    ATI Net F/T (port 49152 by default)
- ``ELASTOLAB_UR_ADDRESS=host``              UR3 controller; reads pose and force only

Nothing here moves an instrument.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from drivers.force.netft import NetFtSensor
from drivers.hexapod.connection import PipythonGcsConnection
from drivers.hexapod.gcs import GcsHexapod
from drivers.robot.ur import UrRtdeRobot
from lab.clock import WallClock

pytestmark = pytest.mark.hardware


def _address(variable: str, default_port: int) -> tuple[str, int]:
    value = os.environ.get(variable)
    if not value:
        pytest.skip(f"set {variable} to run against real hardware")
    host, _, port = value.partition(":")
    return host, int(port) if port else default_port


def test_hexapod_identifies_and_reports_position():
    host, port = _address("ELASTOLAB_HEXAPOD_ADDRESS", 50000)
    with GcsHexapod(lambda: PipythonGcsConnection.tcp(host, port), WallClock()) as hexapod:
        assert "PI" in hexapod.identification or "Physik" in hexapod.identification
        assert set(hexapod.position()) == {"x_mm", "y_mm", "z_mm", "u_deg", "v_deg", "w_deg"}
        assert hexapod.error() == 0


def test_netft_reads_a_sample():
    host, port = _address("ELASTOLAB_NETFT_ADDRESS", 49152)
    with NetFtSensor(host, port, clock=WallClock(), timeout_s=1.0) as sensor:
        sample = sensor.read()
    assert np.all(np.isfinite(sample.force_n)) and np.all(np.isfinite(sample.torque_nm))


def test_ur_reports_pose_and_force():
    host, _ = _address("ELASTOLAB_UR_ADDRESS", 30004)
    robot = UrRtdeRobot.from_host(host, WallClock())
    try:
        assert robot.tool_pose().shape == (6,)
        assert robot.tool_force().force_n.shape == (3,)
    finally:
        robot.close()
