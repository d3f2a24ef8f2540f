"""The simulated world couples motion to force: through the real drivers of a SimLab."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.sim.contact import cylinder_force_n
from drivers.sim.lab import DEFAULT_BLOCK_ORIGIN_M, build_sim_lab
from drivers.sim.phantom import BlockPhantom, CylinderPhantom
from lab.gelatin import flat_punch_force_n


def test_flat_punch_model_numbers():
    # Sneddon: F = 2 a E d / (1 - nu^2), a = sqrt(A / pi) for the 40 x 10 mm face
    a_m = np.sqrt(400e-6 / np.pi)
    expected = 2 * a_m * 37.55e3 * 1e-3 / (1 - 0.25)
    assert flat_punch_force_n(37.55, 1.0, face_area_mm2=400.0) == pytest.approx(expected)
    assert expected == pytest.approx(1.130, abs=1e-3)
    assert flat_punch_force_n(37.55, -0.5, face_area_mm2=400.0) == 0.0


def test_cylinder_model_has_slope_e_beyond_the_toe():
    e_kpa, area = 72.64, np.pi * 1e-4
    f = [cylinder_force_n(e_kpa, d, radius_mm=10, height_mm=40) for d in (0.8, 2.8)]
    slope_pa = (f[1] - f[0]) / area / ((2.8 - 0.8) / 40)
    assert slope_pa == pytest.approx(e_kpa * 1e3, rel=1e-12)
    # continuous at the end of the toe (2 e_t)
    d_toe = 2 * 0.003 * 40
    below = cylinder_force_n(e_kpa, d_toe - 1e-9, radius_mm=10, height_mm=40)
    above = cylinder_force_n(e_kpa, d_toe + 1e-9, radius_mm=10, height_mm=40)
    assert below == pytest.approx(above, abs=1e-6)


def test_probe_one_mm_into_a_37_55_kpa_block():
    with build_sim_lab(seed=11) as lab:
        surface = np.array([*DEFAULT_BLOCK_ORIGIN_M, np.pi, 0.0, 0.0])
        above = surface + np.array([0, 0, 0.005, 0, 0, 0])
        lab.robot.move_linear(above, speed_m_s=0.05, acceleration_m_s2=0.5).wait(10.0)
        lab.probe_sensor.bias()
        target = surface - np.array([0, 0, 0.001, 0, 0, 0])
        lab.robot.move_linear(target, speed_m_s=0.002, acceleration_m_s2=0.1).wait(10.0)
        contact = lab.world.probe_contact()
        assert contact.indentation_mm == pytest.approx(1.0, abs=1e-9)
        assert contact.phantom is not None and contact.phantom.youngs_modulus_kpa == 37.55
        assert (contact.lateral_offset_mm, contact.elevation_offset_mm) == (0.0, 0.0)
        readings = [lab.probe_sensor.read().fz_n for _ in range(20)]
        model = flat_punch_force_n(37.55, 1.0, face_area_mm2=400.0)
        assert np.mean(readings) == pytest.approx(model, abs=0.005)  # noise 3 mN, 2 mN steps


@pytest.mark.parametrize("gelatin_percent", [7.5, 17.5])
def test_indentation_at_0_01_mm_s_gives_e_back(gelatin_percent):
    cylinder = CylinderPhantom("cyl", gelatin_percent)
    with build_sim_lab(seed=5, cylinder=cylinder, blocks=[]) as lab:
        hexapod, sensor = lab.hexapod, lab.indenter_sensor
        hexapod.servo(True)
        hexapod.reference().wait(60.0)
        hexapod.move_to(z_mm=-0.8).wait(60.0)  # plate 0.2 mm above the cylinder
        sensor.bias()
        hexapod.set_velocity(0.01)
        status = hexapod.move_to(z_mm=-4.0)
        z_mm, force_n = [], []
        while not status.done:
            lab.clock.sleep(0.25)
            force = sensor.read().fz_n
            if force > 2.0:  # the 2 N limit of the protocol
                hexapod.stop()
                break
            z_mm.append(hexapod.position()["z_mm"])
            force_n.append(force)
        z, f = np.asarray(z_mm), np.asarray(force_n)
        contact = z[np.argmax(f > 0.01)]  # first force above the noise
        strain = (contact - z) / cylinder.height_mm
        stress_pa = f / (cylinder.area_mm2 * 1e-6)
        window = (strain >= 0.02) & (strain <= 0.07)
        assert np.count_nonzero(window) > 100
        slope_kpa = np.polyfit(strain[window], stress_pa[window], 1)[0] / 1e3
        assert slope_kpa == pytest.approx(cylinder.youngs_modulus_kpa, rel=0.01)


def test_sim_lab_faults_and_close_are_complete():
    lab = build_sim_lab(seed=2, blocks=[(BlockPhantom("soft", 5.0), (0.3, 0.1, 0.1))])
    lab.faults.disconnect("hexapod")
    lab.close()
    lab.close()  # idempotent; the autouse fixture checks no thread or socket is left


def test_serve_runs_a_wire_simulator_until_stopped():
    import threading

    from drivers.force.netft import NetFtSensor
    from drivers.sim.lab import serve
    from lab.clock import WallClock

    stop = threading.Event()
    address: list[tuple[str, int]] = []
    ready = threading.Event()

    def on_ready(addr: tuple[str, int]) -> None:
        address.append(addr)
        ready.set()

    thread = threading.Thread(
        target=serve, args=("netft",), kwargs={"stop": stop, "on_ready": on_ready,
                                               "announce": False},
    )
    thread.start()
    try:
        assert ready.wait(5.0)
        with NetFtSensor(*address[0], clock=WallClock(), timeout_s=2.0) as sensor:
            assert np.isfinite(sensor.read().fz_n)
    finally:
        stop.set()
        thread.join(5.0)
    assert not thread.is_alive()
