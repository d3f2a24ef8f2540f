"""Store runners on a tiny hand-built session store following the store contract."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analysis.displacement import default_axial_kernel, loupas
from analysis.runners import run_displacement, run_labels, run_tof
from lab.store import ArraySpec, SessionStore, StoreError
from protocols.swei import swei_table_arrays

C, F0, PRF = 1540.0, 7.5e6, 7000.0
FRAMES, DEPTH, LATERAL = 30, 6, 90
DZ, DX = 0.08e-3, 0.1e-3
SPEED = 3.0
PUSH_LATERAL_M = -0.3e-3  # 3 px left of the first pixel


def wave_iq(seed: int) -> np.ndarray:
    """IQ whose phase encodes a depth-invariant shear wave moving right (unit envelope ratio).

    The envelope is real and positive along depth, so angle(R_a) = 0 and Loupas returns the
    encoded displacement exactly: iq = env * exp(-4j pi f0 u / c).
    """
    rng = np.random.default_rng(seed)
    env = rng.uniform(0.5, 2.0, size=(DEPTH, LATERAL))
    x = np.arange(LATERAL) * DX - PUSH_LATERAL_M
    t = np.arange(FRAMES)[:, None, None] / PRF
    u = 5e-6 * np.exp(-0.5 * ((t - 0.4e-3 - x / SPEED) / 0.25e-3) ** 2) * np.ones((1, DEPTH, 1))
    iq = np.empty((FRAMES + 1, DEPTH, LATERAL), np.complex64)
    iq[0] = env
    iq[1:] = env * np.exp(-4j * np.pi * F0 * u / C)
    return iq


def synthetic_indentation(modulus_kpa: float, samples: int = 6000) -> dict[str, np.ndarray]:
    pos = np.linspace(0.0, 0.3 + 0.075 * 40.0, samples)
    strain = np.clip((pos - 0.3) / 40.0, 0.0, None)
    stress_pa = modulus_kpa * 1e3 * np.where(strain < 0.01, strain**2 / 0.02, strain - 0.005)
    force = np.round(stress_pa * math.pi * 0.01**2 / 0.0031) * 0.0031
    return {"time_s": np.arange(samples) / 200.0, "position_mm": pos,
            "force_n": force.astype(np.float32), "run": np.zeros(samples, np.int32)}


def make_store(path: Path, *, n_seq: int = 3, with_indentation: bool = True) -> Path:
    store = SessionStore.create(path)
    store.root.require_group("phantoms").attrs["phantoms"] = [
        {"phantom_id": "B10", "kind": "block", "gelatin_percent": 10.0,
         "youngs_modulus_kpa": 55.0, "inclusions": []}]
    swei = store.require_table(
        "swei", row_dim="seq", arrays=swei_table_arrays(FRAMES, DEPTH, LATERAL),
        attrs={"sampling_frequency": C / (2 * DZ), "modulation_frequency": F0, "sound_speed": C,
               "PRF": PRF, "initial_time": 0.13e-3,
               "depth_m": ((np.arange(DEPTH) + 0.5) * DZ).tolist(),
               "lateral_m": (np.arange(LATERAL) * DX).tolist()})
    for k in range(n_seq):
        swei.append(f"B10/pos000/push{k}", {
            "iq": wave_iq(k)[None], "push_index": np.array([k], np.int16),
            "push_element": np.array([10], np.int16), "phantom_index": np.array([0], np.int32),
            "position_index": np.array([0], np.int32), "probe_pose": np.zeros((1, 6)),
            "contact_force_n": np.array([0.2], np.float32), "t_start_s": np.array([float(k)]),
        }, {"phantom_id": "B10", "push_lateral_m": PUSH_LATERAL_M})
    if with_indentation:
        table = store.require_table("indentation", row_dim="sample", arrays=[
            ArraySpec("time_s", (), "float64", ("sample",), row_chunk=8192),
            ArraySpec("position_mm", (), "float64", ("sample",), row_chunk=8192),
            ArraySpec("force_n", (), "float32", ("sample",), row_chunk=8192),
            ArraySpec("run", (), "int32", ("sample",), row_chunk=8192),
        ])
        for i, (percent, modulus) in enumerate([(10.0, 27.0), (10.0, 27.0), (5.0, 17.42)]):
            table.append(f"C{percent:g}-{i}", synthetic_indentation(modulus), {
                "phantom_id": f"C{percent:g}-{i}", "gelatin_percent": percent,
                "radius_mm": 10.0, "height_mm": 40.0, "contact_position_mm": 0.3,
                "stop_reason": "strain"})
    return path


KW = {"sampling_frequency": C / (2 * DZ), "modulation_frequency": F0, "sound_speed": C}


def test_run_displacement_writes_every_sequence_and_resumes(tmp_path: Path) -> None:
    path = make_store(tmp_path / "s.zarr", n_seq=3, with_indentation=False)
    seen: list[tuple[int, int]] = []
    assert run_displacement(path, progress=lambda d, t: seen.append((d, t)), num_workers=2) == 3
    assert seen == [(1, 3), (2, 3), (3, 3)]
    assert run_displacement(path) == 0  # nothing left
    store = SessionStore.open(path)
    table = store.table("displacement")
    assert table.keys() == store.table("swei").keys()
    disp = table.read("displacement_m", "B10/pos000/push1")[0]
    quality = table.read("quality", "B10/pos000/push1")[0]
    expected, _ = loupas(wave_iq(1), return_quality=True, **KW)
    np.testing.assert_allclose(disp, expected, rtol=1e-6)
    assert disp.shape == (FRAMES, DEPTH, LATERAL) and disp.dtype == np.float32
    assert 4e-6 < disp.max() < 5.1e-6  # the encoded 5 um wave, positive away from the probe
    assert np.all((quality >= 0) & (quality <= 1))
    assert table.group.attrs["method"] == "loupas"


def test_run_displacement_skips_existing_records(tmp_path: Path) -> None:
    path = make_store(tmp_path / "s.zarr", n_seq=3, with_indentation=False)
    store = SessionStore.open(path, "a")
    assert run_displacement(path) == 3
    # drop to a fresh store holding only the first record, as after an interruption
    path2 = make_store(tmp_path / "t.zarr", n_seq=3, with_indentation=False)
    store2 = SessionStore.open(path2, "a")
    first = store.table("displacement").records[0]["key"]
    table = store2.require_table("displacement", row_dim="seq", arrays=[
        ArraySpec(n, (FRAMES, DEPTH, LATERAL), "float32", ("seq", "frame", "depth", "lateral"))
        for n in ("displacement_m", "quality")],
        attrs={"method": "loupas", "reference": "fixed", "axial_kernel": default_axial_kernel(
            sampling_frequency=KW["sampling_frequency"],
            modulation_frequency=KW["modulation_frequency"])})
    table.append(first, {n: store.table("displacement").read(n, first) for n in
                         ("displacement_m", "quality")})
    assert run_displacement(path2) == 2
    assert SessionStore.open(path2).table("displacement").keys() == store.table("swei").keys()
    with pytest.raises(StoreError, match="computed with method='loupas'"):
        run_displacement(path2, method="kasai")
    # nor another kernel: one table never mixes estimators (e.g. a store half-done by a
    # version whose default kernel was 1 sample on coarse grids)
    with pytest.raises(StoreError, match=r"axial_kernel=3; delete it to recompute"):
        run_displacement(path2, axial_kernel=7)


def test_run_displacement_with_a_chosen_kernel(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import analysis.runners

    path = make_store(tmp_path / "s.zarr", n_seq=2, with_indentation=False)
    for bad in (4, 0, -3, 2.0, True):
        with pytest.raises(ValueError, match="axial_kernel must be an odd number"):
            run_displacement(path, axial_kernel=bad)  # type: ignore[arg-type]
    kernels: list[int] = []

    def recording_loupas(iq: np.ndarray, **kw: object) -> object:
        kernels.append(kw["axial_kernel"])  # type: ignore[arg-type]
        return loupas(iq, **kw)  # type: ignore[call-overload]

    monkeypatch.setattr(analysis.runners, "loupas", recording_loupas)
    assert run_displacement(path, axial_kernel=5, num_workers=1) == 2
    assert kernels == [5, 5]
    table = SessionStore.open(path).table("displacement")
    assert table.group.attrs["axial_kernel"] == 5
    np.testing.assert_allclose(table.read("displacement_m", "B10/pos000/push1")[0],
                               loupas(wave_iq(1), axial_kernel=5, **KW), rtol=1e-6)


def test_run_displacement_on_a_distributed_cluster(tmp_path: Path) -> None:
    from dask.distributed import LocalCluster

    path = make_store(tmp_path / "s.zarr", n_seq=2, with_indentation=False)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                      dashboard_address=None) as cluster:
        assert run_displacement(path, scheduler_address=cluster.scheduler_address) == 2
    disp = SessionStore.open(path).table("displacement").read("displacement_m",
                                                               "B10/pos000/push0")[0]
    np.testing.assert_allclose(disp, loupas(wave_iq(0), **KW), rtol=1e-6)


def test_run_labels_and_tof_with_calibrated_alpha(tmp_path: Path) -> None:
    path = make_store(tmp_path / "s.zarr", n_seq=2)
    labels = run_labels(path, plot_path=tmp_path / "labels.png")
    assert [lab["gelatin_percent"] for lab in labels] == [5.0, 10.0]
    assert labels[1]["youngs_modulus_kpa"] == pytest.approx(27.0, rel=0.01)
    assert labels[1]["runs_used"] == ["C10-0", "C10-1"]
    assert (tmp_path / "labels.png").stat().st_size > 0
    store = SessionStore.open(path)
    assert store.root["labels"].attrs["labels"] == labels

    run_displacement(path)
    alpha = run_tof(path, alpha=0.75, distance_px=21)
    store = SessionStore.open(path)
    speed = store.read_array("maps/tof_speed_m_s")
    kpa = store.read_array("maps/tof_kpa")
    assert alpha == 0.75 and kpa.shape == (2, DEPTH, LATERAL) and kpa.dtype == np.float32
    valid = np.isfinite(speed)
    assert np.isnan(speed[:, :, :10]).all()  # window past the image edge: NaN, never 0
    assert abs(np.median(speed[valid]) / SPEED - 1) < 0.03
    np.testing.assert_allclose(kpa[valid], 0.75 * 3000 * speed[valid] ** 2 / 1e3, rtol=1e-5)
    # default alpha: calibrated so the block phantom (10 %) matches its label
    alpha = run_tof(path, distance_px=21)
    kpa = SessionStore.open(path).read_array("maps/tof_kpa")
    assert np.median(kpa[np.isfinite(kpa)]) == pytest.approx(27.0, rel=0.03)
    assert SessionStore.open(path).root["maps/tof_kpa"].attrs["alpha"] == pytest.approx(alpha)


def test_run_tof_subset_and_calibration_keys(tmp_path: Path) -> None:
    store_path = make_store(tmp_path / "s.zarr", n_seq=2)
    run_displacement(store_path)
    keys = SessionStore.open(store_path).table("displacement").keys()
    with pytest.raises(StoreError, match="keys not in"):
        run_tof(store_path, keys=["nope"])
    with pytest.raises(ValueError, match="calibration_keys must be among"):
        run_tof(store_path, keys=keys[:1], calibration_keys=keys[1:2])
    run_tof(store_path, keys=keys[:1], alpha=0.75, distance_px=21)
    maps = SessionStore.open(store_path).read_array("maps/tof_kpa")
    assert np.isfinite(maps[0]).any()
    assert np.isnan(maps[1:]).all()  # not computed: NaN, never zero


def test_run_tof_distance_is_physical(tmp_path: Path) -> None:
    """The signal distance is given in mm and converted with the store's 0.1 mm lateral step:
    2.0 mm span -> 21 px (20 pitches), and the invalid edge is half that window wide."""
    path = make_store(tmp_path / "s.zarr", n_seq=2)
    run_displacement(path)
    run_tof(path, alpha=0.75, distance_mm=2.0)
    store = SessionStore.open(path)
    options = store.root["maps/tof_kpa"].attrs["options"]
    assert options["distance_px"] == 21
    speed = store.read_array("maps/tof_speed_m_s")
    assert np.isnan(speed[:, :, :10]).all()
    assert abs(np.nanmedian(speed) / SPEED - 1) < 0.03
    # the default is [SWEI]'s 65 px on its 33 mm / 600 px grid: 3.53 mm -> 37 px here
    run_tof(path, alpha=0.75)
    assert SessionStore.open(path).root["maps/tof_kpa"].attrs["options"]["distance_px"] == 37
    # the CLI option, and a clear error for a distance that is not one
    from typer.testing import CliRunner

    from lab.cli import app

    runner = CliRunner()
    ok = runner.invoke(app, ["analyze", "tof", str(path), "--alpha", "0.75",
                             "--distance-mm", "3.0"])
    assert ok.exit_code == 0, ok.output
    assert SessionStore.open(path).root["maps/tof_kpa"].attrs["options"]["distance_px"] == 31
    bad = runner.invoke(app, ["analyze", "tof", str(path), "--distance-mm", "0"])
    assert bad.exit_code == 2 and "--distance-mm" in bad.output
