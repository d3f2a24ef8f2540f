"""SimUltrasound on a fake world: acquisitions, ground truth, duty cycle, contact, bad input."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
from scipy.ndimage import uniform_filter

from drivers.base import DeviceError, LimitError
from drivers.sim.phantom import BlockPhantom, Inclusion
from drivers.sim.world import ProbeContact
from drivers.ultrasound.base import UltrasoundSystem
from drivers.ultrasound.sequences import (
    PlaneWaveSequence,
    PushSequence,
    RfFrameSequence,
    UltrasoundLimits,
)
from drivers.ultrasound.sim_system import SimUltrasound
from lab.clock import SimClock

PHANTOM = BlockPhantom("blk", 7.5, inclusions=(Inclusion(x_mm=4.0, z_mm=9.0, radius_mm=2.0,
                                                         gelatin_percent=15.0),), speckle_seed=9)
SMALL = PlaneWaveSequence(depth_start_mm=5.0, fov_depth_mm=8.0, fov_lateral_mm=10.0, n_depth=80,
                          n_lateral=120, n_frames=6)
PUSH = PushSequence(center_element=60)


#: ``FakeContact(phantom, **changes)``: the probe pressing 0.5 mm into `phantom` at x = 1 mm.
FakeContact = partial(ProbeContact, lateral_offset_mm=1.0, elevation_offset_mm=0.0,
                      indentation_mm=0.5, force_n=0.2, in_contact=True)


class FakeWorld:
    def __init__(self, contact: ProbeContact) -> None:
        self.contact = contact

    def probe_contact(self) -> ProbeContact:
        return self.contact


def _system(fidelity: str = "image", contact: ProbeContact | None = None, **kw) -> SimUltrasound:
    world = FakeWorld(contact if contact is not None else FakeContact(PHANTOM))
    system = SimUltrasound(world, SimClock(), np.random.default_rng(0), fidelity=fidelity, **kw)
    system.connect()
    return system


def test_swei_acquisition_shapes_metadata_and_truth() -> None:
    system = _system()
    assert isinstance(system, UltrasoundSystem)
    t0 = system.clock.now()
    acq = system.acquire_swei(PUSH, SMALL)
    assert acq.iq.shape == (7, 80, 120) and acq.iq.dtype == np.complex64
    assert acq.rf is None
    meta = acq.metadata
    assert meta["sampling_frequency"] == pytest.approx(1540.0 / (2 * 0.1e-3))
    assert meta["modulation_frequency"] == 7.5e6 and meta["PRF"] == 7000.0
    assert meta["initial_time"] == pytest.approx(0.13e-3)
    assert len(meta["depth_m"]) == 80 and len(meta["lateral_m"]) == 120
    assert meta["t_push_s"] == t0
    truth = acq.truth
    assert truth is not None
    assert truth.displacement_m.shape == (6, 80, 120) and truth.displacement_m.dtype == np.float32
    # modulus map of the image plane: inclusion at block x = 4 mm -> image x = 3 mm (probe at 1 mm)
    # and block depth 9 mm -> image depth 8.5 mm (probe face 0.5 mm below the surface)
    depth = np.array(meta["depth_m"])
    lateral = np.array(meta["lateral_m"])
    i, j = np.argmin(abs(depth - 8.5e-3)), np.argmin(abs(lateral - 3e-3))
    assert truth.youngs_modulus_kpa[i, j] == pytest.approx(97.21)
    assert truth.youngs_modulus_kpa[0, 0] == pytest.approx(37.55)
    # the push moves tissue away from the probe, micrometres to tens of micrometres
    assert 1e-6 < truth.displacement_m.max() < 50e-6
    # the clock advanced by the push and the frames
    elapsed = system.clock.now() - t0
    assert elapsed == pytest.approx(PUSH.duration_s + SMALL.frame_times_s[-1])


def _estimate(iq: np.ndarray, c: float = 1540.0, f0: float = 7.5e6) -> np.ndarray:
    """Phase-shift displacement of frames 1.. against frame 0 (positive away from the probe)."""
    r = iq[1:].astype(np.complex128) * np.conj(iq[0].astype(np.complex128))
    r = uniform_filter(r.real, (1, 5, 5)) + 1j * uniform_filter(r.imag, (1, 5, 5))
    return -c / (4 * np.pi * f0) * np.angle(r)


@pytest.mark.parametrize("fidelity", ["image", "channel"])
def test_iq_phase_follows_the_true_displacement(fidelity: str) -> None:
    imaging = SMALL if fidelity == "image" else PlaneWaveSequence(
        depth_start_mm=7.0, fov_depth_mm=4.0, fov_lateral_mm=5.0, n_depth=40, n_lateral=70,
        n_frames=3)
    system = _system(fidelity, snr_db=30.0)
    acq = system.acquire_swei(PushSequence(center_element=64), imaging)
    if fidelity == "channel":
        assert acq.rf is not None and acq.rf.dtype == np.int16
        assert acq.rf.shape[0] == imaging.n_frames + 1 and acq.rf.shape[2] == 128
        assert acq.metadata["channel_sampling_frequency"] == 40e6
    truth = acq.truth.displacement_m
    estimate = _estimate(acq.iq)
    inner = (slice(None), slice(5, -5), slice(5, -5))
    r = np.corrcoef(estimate[inner].ravel(), truth[inner].ravel())[0, 1]
    assert r > 0.95
    rms_error = np.sqrt(np.mean((estimate[inner] - truth[inner]) ** 2))
    assert rms_error < 0.15 * np.abs(truth[inner]).max()


def test_duty_cycle_is_enforced_on_the_clock() -> None:
    system = _system()
    system.acquire_swei(PUSH, SMALL)
    assert system.push_ready_in_s() > 0
    with pytest.raises(LimitError, match="duty cycle"):
        system.acquire_swei(PUSH, SMALL)
    system.clock.advance(system.push_ready_in_s())
    assert system.push_ready_in_s() == 0
    system.acquire_swei(PUSH, SMALL)


def test_impossible_sequences_are_refused_before_anything_happens() -> None:
    system = _system()
    t0 = system.clock.now()
    with pytest.raises(LimitError, match="longer than allowed"):
        system.acquire_swei(PushSequence(cycles=5000), SMALL)
    with pytest.raises(LimitError, match="voltage"):
        system.acquire_swei(PushSequence(voltage_v=150.0), SMALL)
    with pytest.raises(LimitError, match="field of view"):
        system.acquire_swei(PUSH, PlaneWaveSequence(fov_lateral_mm=45.0, n_lateral=100,
                                                    n_depth=50, n_frames=2))
    with pytest.raises(LimitError, match="frame period"):
        system.acquire_swei(PUSH, PlaneWaveSequence(fov_depth_mm=60.0, prf_hz=20000.0,
                                                    n_depth=50, n_lateral=50, n_frames=2))
    with pytest.raises(LimitError, match="run off"):
        system.acquire_swei(PushSequence(center_element=2), SMALL)
    assert system.clock.now() == t0 and system.push_ready_in_s() == 0  # nothing was pushed
    strict = _system(limits=UltrasoundLimits(max_push_duration_s=0.2e-3))
    with pytest.raises(LimitError, match="longer than allowed"):
        strict.acquire_swei(PUSH, SMALL)  # 2000 cycles = 0.267 ms


def test_nan_in_the_modulus_map_is_refused() -> None:
    class NanPhantom(BlockPhantom):
        def modulus_map_kpa(self, x_mm, z_mm):
            e = super().modulus_map_kpa(x_mm, z_mm)
            e[np.asarray(e).shape[0] // 2] = np.nan
            return e

    system = _system(contact=FakeContact(NanPhantom("nan", 7.5)))
    with pytest.raises(ValueError, match="NaN"):
        system.acquire_swei(PUSH, SMALL)


def test_refuses_without_contact_or_connection() -> None:
    system = _system(contact=FakeContact(PHANTOM, indentation_mm=-1.0, force_n=0.0,
                                         in_contact=False))
    with pytest.raises(DeviceError, match="not in contact"):
        system.acquire_swei(PUSH, SMALL)
    with pytest.raises(DeviceError, match="not in contact"):
        system.acquire_rf_frame(RfFrameSequence(fov_depth_mm=10, fov_lateral_mm=10, n_lines=16))
    system = _system(contact=FakeContact(None, in_contact=True))
    with pytest.raises(DeviceError, match="no phantom"):
        system.acquire_swei(PUSH, SMALL)
    system = _system()
    system.close()
    with pytest.raises(DeviceError, match="not connected"):
        system.acquire_swei(PUSH, SMALL)


def test_rf_frame_comes_from_the_compression_simulator() -> None:
    system = _system(contact=FakeContact(PHANTOM, indentation_mm=1.0), rf_psnr_db=20.0)
    seq = RfFrameSequence(fov_depth_mm=10.0, fov_lateral_mm=10.0, n_lines=16)
    frame = system.acquire_rf_frame(seq)
    assert frame.rf.shape == (seq.n_samples, 16) and frame.rf.dtype == np.float32
    assert frame.metadata["applied_strain"] == pytest.approx(1.0 / 100.0)
    assert frame.metadata["sampling_frequency"] == 40e6
    assert frame.metadata["center_frequency"] == 6.67e6
    assert frame.truth is not None and frame.truth["axial_strain"].shape == frame.rf.shape
    # compression by the probe: axial strain negative, about the applied strain in the background
    assert np.median(frame.truth["axial_strain"]) == pytest.approx(-0.01, rel=0.3)
