"""elastolab import: files made by their own libraries (scipy, hdf5storage, pyuff-ustb, NumPy)
from simulated acquisitions, imported, analysed, and compared with the simulated store."""

from __future__ import annotations

from pathlib import Path

import hdf5storage
import numpy as np
import pytest
import pyuff_ustb as uff
import scipy.io
from data_testkit import F0, PRF, T0, C, make_swei_store, wave_iq

from analysis.runners import run_displacement
from analysis.strain.runners import run_strain
from drivers.sim.phantom import BlockPhantom
from drivers.sim.world import ProbeContact
from drivers.ultrasound.sequences import PlaneWaveSequence, PushSequence
from drivers.ultrasound.sim_compression import simulate_rf_frame
from drivers.ultrasound.sim_system import SimUltrasound
from lab.clock import SimClock
from lab.export import export_store
from lab.importers import (
    ImportDataError,
    Parameters,
    import_beamformed,
    import_channel,
    import_rf_pair,
    parse_names,
)
from lab.store import ArraySpec, SessionStore
from lab.verify import verify_store
from lab.xr import open_dataset
from protocols.swei import swei_table_arrays

IMAGING = PlaneWaveSequence(depth_start_mm=7.0, fov_depth_mm=3.0, fov_lateral_mm=4.0,
                            n_depth=30, n_lateral=40, n_frames=3)


class _World:
    def __init__(self) -> None:
        self.contact = ProbeContact(BlockPhantom("blk", 7.5, speckle_seed=3),
                                    lateral_offset_mm=1.0, elevation_offset_mm=0.0,
                                    indentation_mm=0.5, force_n=0.2, in_contact=True)

    def probe_contact(self) -> ProbeContact:
        return self.contact


@pytest.fixture(scope="module")
def channel_acquisition() -> tuple[object, object]:
    system = SimUltrasound(_World(), SimClock(), np.random.default_rng(0), fidelity="channel",
                           snr_db=30.0)
    system.connect()
    acq = system.acquire_swei(PushSequence(center_element=64), IMAGING)
    return acq, system.probe


@pytest.fixture(scope="module")
def simulated_displacement(channel_acquisition, tmp_path_factory) -> np.ndarray:
    """The acquisition analysed as the session store holds it."""
    acq, _ = channel_acquisition
    path = tmp_path_factory.mktemp("sim") / "sim.zarr"
    store = SessionStore.create(path)
    acquired, depth, lateral = acq.iq.shape
    table = store.require_table("swei", row_dim="seq", arrays=swei_table_arrays(
        acquired - 1, depth, lateral, rf_shape=acq.rf.shape), attrs={
        k: acq.metadata[k] for k in ("sampling_frequency", "modulation_frequency", "sound_speed",
                                     "PRF", "initial_time", "depth_m", "lateral_m")})
    table.append("blk/pos000/push0", {
        "iq": acq.iq[None], "rf": acq.rf[None], "push_index": [0], "push_element": [64],
        "phantom_index": [0], "position_index": [0], "probe_pose": np.zeros((1, 6)),
        "contact_force_n": [0.2], "t_start_s": [0.0]})
    run_displacement(path, num_workers=1)
    return open_dataset(path, "displacement").displacement_m.values[0]


def _verasonics_dict(acq, probe, *, with_sound_speed: bool = True) -> dict[str, object]:
    meta = acq.metadata
    out = {"RcvData": np.transpose(acq.rf, (1, 2, 0)),  # MATLAB (sample, channel, frame)
           "Trans": {"frequency": meta["center_frequency"] / 1e6,  # MHz, as Verasonics
                     "x_m": np.asarray(probe.element_positions_m)},
           "Receive": {"fs": meta["channel_sampling_frequency"]},
           "P": {"t0": meta["channel_t0"], "angle": meta["angle_rad"], "PRF": meta["PRF"],
                 "initial_time": meta["initial_time"]}}
    if with_sound_speed:
        out["Resource"] = {"c": meta["sound_speed"]}
    return out


NAMES = parse_names(["rf=RcvData", "center_frequency=Trans.frequency*1e6",
                     "element_positions=Trans.x_m", "channel_sampling_frequency=Receive.fs",
                     "sound_speed=Resource.c", "t0=P.t0", "angle=P.angle", "prf=P.PRF",
                     "initial_time=P.initial_time"])


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_channel_mat_matches_the_simulated_store(channel_acquisition, simulated_displacement,
                                                 tmp_path: Path, version: str) -> None:
    acq, probe = channel_acquisition
    source = tmp_path / f"verasonics_{version}.mat"
    if version == "v5":
        scipy.io.savemat(source, _verasonics_dict(acq, probe))
    else:
        hdf5storage.savemat(str(source), _verasonics_dict(acq, probe),
                            store_python_metadata=False, truncate_existing=True)
    meta = acq.metadata
    out = import_channel(source, tmp_path / "imp.zarr", depth_m=np.asarray(meta["depth_m"]),
                         lateral_m=np.asarray(meta["lateral_m"]), names=NAMES,
                         f_number=IMAGING.f_number)
    swei = open_dataset(out, "swei")
    # the same beamformer on the same int16 RF: the IQ of the simulated store, to rounding
    np.testing.assert_allclose(swei.iq.values[0], acq.iq, rtol=0,
                               atol=1e-5 * np.abs(acq.iq).max())
    assert swei.attrs["sampling_frequency"] == pytest.approx(meta["sampling_frequency"])
    run_displacement(out, num_workers=1)
    disp = open_dataset(out, "displacement").displacement_m.values[0]
    scale = np.abs(simulated_displacement).max()
    np.testing.assert_allclose(disp, simulated_displacement, rtol=0, atol=1e-4 * scale)
    assert verify_store(out).clean


def test_missing_parameters_are_named_never_assumed(channel_acquisition, tmp_path: Path) -> None:
    acq, probe = channel_acquisition
    source = tmp_path / "no_c.mat"
    scipy.io.savemat(source, _verasonics_dict(acq, probe, with_sound_speed=False))
    grid = dict(depth_m=np.asarray(acq.metadata["depth_m"]))
    with pytest.raises(ImportDataError, match=r"sound_speed -> --sound-speed") as err:
        import_channel(source, tmp_path / "a.zarr", names=NAMES, **grid)
    assert "t0" not in str(err.value)  # only what is missing
    bare = tmp_path / "bare.mat"
    scipy.io.savemat(bare, {"rf": np.transpose(acq.rf, (1, 2, 0))})
    with pytest.raises(ImportDataError) as err:
        import_channel(bare, tmp_path / "b.zarr", **grid)
    for option in ("--sampling-frequency", "--center-frequency", "--sound-speed", "--t0",
                   "--pitch-mm", "--angle-deg", "--prf", "--initial-time"):
        assert option in str(err.value)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()
    # given on the command line instead, they are used
    meta = acq.metadata
    given = Parameters(sound_speed=meta["sound_speed"])
    import_channel(source, tmp_path / "c.zarr", names=NAMES, parameters=given, **grid)
    with pytest.raises(ImportDataError, match="unknown key"):
        parse_names(["speed=c"])


def test_uff_channel_data_import(channel_acquisition, simulated_displacement,
                                 tmp_path: Path) -> None:
    acq, probe = channel_acquisition
    meta = acq.metadata
    data = np.transpose(acq.rf, (1, 2, 0))[:, :, None, :].astype(np.float32)
    pitch = float(np.diff(probe.element_positions_m).mean())
    cd = uff.ChannelData(
        sampling_frequency=meta["channel_sampling_frequency"], initial_time=meta["channel_t0"],
        sound_speed=meta["sound_speed"], modulation_frequency=0.0, PRF=meta["PRF"],
        data=data, probe=uff.LinearArray(N=data.shape[1], pitch=pitch),
        pulse=uff.Pulse(center_frequency=meta["center_frequency"]),
        sequence=uff.Wave(wavefront=uff.Wavefront.plane,
                          source=uff.Point(distance=np.inf, azimuth=meta["angle_rad"],
                                           elevation=0.0)))
    source = tmp_path / "channel.uff"
    cd.write(str(source), "channel_data", ignore_missing_compulsory_fields=True)
    with pytest.raises(ImportDataError, match="initial-time"):
        import_channel(source, tmp_path / "x.zarr", depth_m=np.asarray(meta["depth_m"]))
    out = import_channel(source, tmp_path / "imp.zarr", depth_m=np.asarray(meta["depth_m"]),
                         lateral_m=np.asarray(meta["lateral_m"]), f_number=IMAGING.f_number,
                         parameters=Parameters(initial_time=meta["initial_time"]))
    run_displacement(out, num_workers=1)
    disp = open_dataset(out, "displacement").displacement_m.values[0]
    scale = np.abs(simulated_displacement).max()
    np.testing.assert_allclose(disp, simulated_displacement, rtol=0, atol=1e-3 * scale)


def test_uff_beamformed_round_trip_and_carrier_mat(tmp_path: Path) -> None:
    store = make_swei_store(tmp_path / "s.zarr", n_seq=1)
    run_displacement(store, num_workers=1)
    reference = open_dataset(store, "displacement").displacement_m.values[0]
    export_store(store, tmp_path / "one.uff", fmt="uff", what=["iq"])
    given = Parameters(sound_speed=C, initial_time=T0)
    with pytest.raises(ImportDataError, match="iq-convention"):
        import_beamformed(tmp_path / "one.uff", tmp_path / "x.zarr", iq_convention="",
                          parameters=given)  # type: ignore[arg-type]
    out = import_beamformed(tmp_path / "one.uff", tmp_path / "imp.zarr", iq_convention="baseband",
                            parameters=given)
    np.testing.assert_allclose(open_dataset(out, "swei").iq.values[0], wave_iq(0), rtol=1e-6)
    run_displacement(out, num_workers=1)
    np.testing.assert_allclose(open_dataset(out, "displacement").displacement_m.values[0],
                               reference, rtol=1e-5, atol=1e-12)
    # carrier-phase IQ in a MAT file (as PyMUST returns it), converted on import
    swei = open_dataset(store, "swei")
    depth_m = swei.depth_m.values
    carrier = wave_iq(0) * np.exp(2j * np.pi * F0 * 2 * depth_m / C)[None, :, None]
    scipy.io.savemat(tmp_path / "carrier.mat", {
        "iq": np.transpose(carrier, (1, 2, 0)), "depth": depth_m,
        "lateral": swei.lateral_m.values, "fc": F0, "c": C, "PRF": PRF, "initial_time": T0})
    out2 = import_beamformed(tmp_path / "carrier.mat", tmp_path / "imp2.zarr",
                             iq_convention="carrier")
    run_displacement(out2, num_workers=1)
    np.testing.assert_allclose(open_dataset(out2, "displacement").displacement_m.values[0],
                               reference, rtol=1e-4, atol=1e-11)


def test_rf_pair_import_matches_strain_of_the_simulated_store(tmp_path: Path) -> None:
    phantom = BlockPhantom("inc", 7.5, size_mm=(24.0, 24.0, 24.0), speckle_seed=4)
    geom = dict(depth_mm=8.0, width_mm=8.0, n_lines=32, element_mm=0.5)
    frames = [simulate_rf_frame(phantom, applied_strain=0.01 * k, psnr_db=35.0,
                                rng_noise=np.random.default_rng(k), **geom) for k in range(2)]
    sim = SessionStore.create(tmp_path / "sim.zarr")
    shape = frames[0].rf.shape
    table = sim.require_table("compression", row_dim="frame", arrays=[
        ArraySpec("rf", shape, "float32", ("frame", "depth", "line")),
        ArraySpec("applied_strain", (), "float32", ("frame",))], attrs={
        "sampling_frequency": 40e6, "center_frequency": 6.67e6, "sound_speed": 1540.0,
        "depth_m": frames[0].depth_m.tolist(), "lateral_m": frames[0].lateral_m.tolist()})
    for k, f in enumerate(frames):
        table.append(f"inc/step{k:02d}", {"rf": f.rf[None],
                                          "applied_strain": np.float32([f.applied_strain])})
    kw = dict(coarse="dp", max_strain=0.02)
    run_strain(tmp_path / "sim.zarr", **kw)
    np.save(tmp_path / "pre.npy", frames[0].rf)
    np.save(tmp_path / "post.npy", frames[1].rf)
    with pytest.raises(ImportDataError, match="--line-pitch-mm"):
        import_rf_pair(tmp_path / "pre.npy", tmp_path / "post.npy", tmp_path / "x.zarr",
                       line_pitch_m=None, parameters=Parameters(
                           channel_sampling_frequency=40e6, center_frequency=6.67e6,
                           sound_speed=1540.0, t0=0.0))
    out = import_rf_pair(tmp_path / "pre.npy", tmp_path / "post.npy", tmp_path / "imp.zarr",
                         line_pitch_m=float(np.diff(frames[0].lateral_m).mean()),
                         parameters=Parameters(channel_sampling_frequency=40e6,
                                               center_frequency=6.67e6, sound_speed=1540.0,
                                               t0=0.0), phantom_id="inc")
    run_strain(out, **kw)
    expected = SessionStore.open(tmp_path / "sim.zarr").read_array("strain/dp/axial_strain")
    got = SessionStore.open(out).read_array("strain/dp/axial_strain")
    np.testing.assert_array_equal(got, expected)
    assert verify_store(out).clean


def test_cli_import_names_missing_options(channel_acquisition, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lab.cli import app

    acq, probe = channel_acquisition
    source = tmp_path / "no_c.mat"
    scipy.io.savemat(source, _verasonics_dict(acq, probe, with_sound_speed=False))
    args = ["import", "channel", str(source), "--out", str(tmp_path / "s.zarr"),
            "--depth-mm", "7:9.9:0.1"] + [a for n in ("rf=RcvData",
                                                      "center_frequency=Trans.frequency*1e6",
                                                      "element_positions=Trans.x_m",
                                                      "channel_sampling_frequency=Receive.fs",
                                                      "t0=P.t0", "angle=P.angle", "prf=P.PRF",
                                                      "initial_time=P.initial_time")
                                          for a in ("--var", n)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--sound-speed" in result.output
    result = CliRunner().invoke(app, [*args, "--sound-speed", "1540"])
    assert result.exit_code == 0, result.output
    assert open_dataset(tmp_path / "s.zarr", "swei").sizes["depth"] == 30


def test_strain_cli_takes_dp_ranges_glue_weights_and_window(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import analysis.strain.runners as runners
    from lab.cli import app

    seen: dict[str, object] = {}

    def fake_estimate(pre, post, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        raise ValueError("stop here")

    monkeypatch.setattr(runners, "estimate_strain", fake_estimate)
    rf = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.save(tmp_path / "a.npy", rf)
    np.save(tmp_path / "b.npy", rf)
    store = import_rf_pair(tmp_path / "a.npy", tmp_path / "b.npy", tmp_path / "s.zarr",
                           line_pitch_m=2e-4, parameters=Parameters(
                               channel_sampling_frequency=40e6, center_frequency=6.67e6,
                               sound_speed=1540.0, t0=0.0))
    result = CliRunner().invoke(app, [
        "strain", str(store), "--dp-axial-range", "-12,2", "--dp-lateral-range", "-1,1",
        "--alpha1", "7", "--alpha2", "0.5", "--beta1", "6", "--beta2", "0.25",
        "--strain-window", "21"])
    assert result.exit_code == 2 and "stop here" in result.output
    assert seen["dp_axial_range"] == (-12, 2) and seen["dp_lateral_range"] == (-1, 1)
    assert (seen["alpha1"], seen["alpha2"], seen["beta1"], seen["beta2"]) == (7, 0.5, 6, 0.25)
    assert seen["strain_window"] == 21 and "max_strain" not in seen


def test_estimate_strain_uses_an_explicit_dp_axial_range() -> None:
    from analysis.strain.pipeline import estimate_strain

    phantom = BlockPhantom("h", 7.5, size_mm=(24.0, 24.0, 24.0), speckle_seed=2)
    geom = dict(depth_mm=6.0, width_mm=6.0, n_lines=24, element_mm=0.5)
    pre, post = (simulate_rf_frame(phantom, applied_strain=s, psnr_db=40.0,
                                   rng_noise=np.random.default_rng(7), **geom).rf
                 for s in (0.0, 0.01))
    n = pre.shape[0]
    wide = estimate_strain(pre, post, max_strain=0.05, bandpass=False)
    # the motion is at most 1 % of the depth: a range just covering it gives the same strain
    tight = estimate_strain(pre, post, max_strain=0.05, bandpass=False,
                            dp_axial_range=(-int(0.012 * n) - 2, 2))
    both = np.isfinite(wide.axial_strain) & np.isfinite(tight.axial_strain)
    np.testing.assert_allclose(tight.axial_strain[both], wide.axial_strain[both], atol=1e-3)
    # a range that excludes the motion cannot find it
    wrong = estimate_strain(pre, post, max_strain=0.05, bandpass=False, dp_axial_range=(1, 4))
    assert np.nanmean(np.abs(wrong.coarse_axial - tight.coarse_axial)) > 1.0


def test_predict_accepts_an_imported_store(tmp_path: Path) -> None:
    import torch
    from data_testkit import FRAMES

    from analysis.swei_cnn.io import save_model
    from analysis.swei_cnn.model import swei_cnn
    from analysis.swei_cnn.runners import MAP_PATH, run_predict

    source = make_swei_store(tmp_path / "s.zarr", n_seq=1)
    export_store(source, tmp_path / "one.uff", fmt="uff", what=["iq"])
    out = import_beamformed(tmp_path / "one.uff", tmp_path / "imp.zarr", iq_convention="baseband",
                            parameters=Parameters(sound_speed=C, initial_time=T0))
    run_displacement(out, num_workers=1)
    torch.manual_seed(0)
    model = swei_cnn(5, frames=FRAMES, growth_rate=4, head_hidden=8).eval()
    save_model(model, tmp_path / "m.safetensors")
    result = run_predict(out, model_path=tmp_path / "m.safetensors")
    maps = SessionStore.open(out).read_array(MAP_PATH)
    assert np.isfinite(maps[0, 2:-2, 2:-2]).all()  # the modulus is unknown: no score, a map
    assert result["metrics"] is None and result["unscored_sequences"] == 1
