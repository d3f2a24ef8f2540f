"""Target maps of inclusion phantoms from geometry + probe pose agree with the simulated truth."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.metrics import dice
from analysis.swei_cnn.targets import image_points_in_block_mm, inclusion_target_map
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.sim.world import SimWorld
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence
from drivers.ultrasound.sim_system import SimUltrasound
from lab.clock import SimClock
from lab.gelatin import DICE_THRESHOLD_KPA, youngs_modulus_kpa

ORIGIN_M = (0.30, -0.30, 0.10)
PHANTOM = BlockPhantom("inc", 7.5, inclusions=(
    Inclusion(x_mm=1.5, z_mm=9.0, radius_mm=3.0, gelatin_percent=15.0),
    Inclusion(x_mm=-4.0, z_mm=12.0, radius_mm=2.0, gelatin_percent=5.0),
), speckle_seed=3)
IMAGING = PlaneWaveSequence(depth_start_mm=4.0, fov_depth_mm=12.0, fov_lateral_mm=14.0,
                            n_depth=48, n_lateral=56, n_frames=3)
DOWN = (np.pi, 0.0, 0.0)  # probe face pointing down, image lateral axis along base x


def _row(phantom: BlockPhantom) -> dict:
    """The phantom as the store's phantom table holds it."""
    return {"phantom_id": phantom.phantom_id, "gelatin_percent": phantom.gelatin_percent,
            "origin_m": list(ORIGIN_M),
            "inclusions": [{"x_mm": i.x_mm, "z_mm": i.z_mm, "radius_mm": i.radius_mm,
                            "gelatin_percent": i.gelatin_percent} for i in phantom.inclusions]}


@pytest.mark.parametrize("offset_mm, press_mm", [((0.0, 0.0), 0.1), ((-2.5, 4.0), 0.4),
                                                  ((3.0, -7.0), 0.05)])
def test_geometry_targets_match_the_simulated_truth(offset_mm, press_mm) -> None:
    pose = [ORIGIN_M[0] + offset_mm[0] * 1e-3, ORIGIN_M[1] + offset_mm[1] * 1e-3,
            ORIGIN_M[2] - press_mm * 1e-3, *DOWN]
    clock = SimClock()
    world = SimWorld(clock, np.random.default_rng(0), blocks=[(PHANTOM, ORIGIN_M)],
                     robot_home_pose=pose)
    try:
        system = SimUltrasound(world, clock, np.random.default_rng(1))
        system.connect()
        stored_pose = world.robot_pose()  # what the SWEI protocol stores with the sequence
        truth = system.acquire_swei(PushSequence(center_element=64), IMAGING).truth
    finally:
        world.close()
    target = inclusion_target_map(_row(PHANTOM), probe_pose=stored_pose,
                                  depth_m=IMAGING.depth_m, lateral_m=IMAGING.lateral_m,
                                  modulus_kpa_of=youngs_modulus_kpa)
    assert target.shape == truth.youngs_modulus_kpa.shape
    assert (truth.youngs_modulus_kpa > DICE_THRESHOLD_KPA).any()
    assert dice(target, truth.youngs_modulus_kpa, threshold=DICE_THRESHOLD_KPA) >= 0.98
    soft = youngs_modulus_kpa(5.0)
    assert dice(-target, -truth.youngs_modulus_kpa, threshold=-(soft + 1.0)) >= 0.98
    assert np.mean(np.isclose(target, truth.youngs_modulus_kpa)) >= 0.98


def test_labels_set_the_values_and_rotation_mirrors_the_map() -> None:
    labels = {7.5: 40.0, 15.0: 100.0, 5.0: 20.0}
    pose = [*ORIGIN_M, *DOWN]
    target = inclusion_target_map(_row(PHANTOM), probe_pose=pose, depth_m=IMAGING.depth_m,
                                  lateral_m=IMAGING.lateral_m, modulus_kpa_of=labels.__getitem__)
    assert set(np.unique(target).tolist()) == {20.0, 40.0, 100.0}
    # turning the probe half a turn about the vertical flips the image's lateral axis
    turned = inclusion_target_map(_row(PHANTOM), probe_pose=[*ORIGIN_M, 0.0, np.pi, 0.0],
                                  depth_m=IMAGING.depth_m, lateral_m=-IMAGING.lateral_m[::-1],
                                  modulus_kpa_of=labels.__getitem__)
    np.testing.assert_array_equal(turned, target[:, ::-1])
    x, _, z = image_points_in_block_mm(pose, origin_m=ORIGIN_M, depth_m=[0.01], lateral_m=[0.002])
    assert (x[0, 0], z[0, 0]) == pytest.approx((2.0, 10.0))


def test_unknown_placement_is_refused() -> None:
    row = _row(PHANTOM)
    del row["origin_m"]
    with pytest.raises(ValueError, match="no origin_m"):
        inclusion_target_map(row, probe_pose=[0, 0, 0, *DOWN], depth_m=[0.01], lateral_m=[0.0],
                             modulus_kpa_of=youngs_modulus_kpa)
