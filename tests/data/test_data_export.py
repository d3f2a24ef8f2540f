"""Export round trips: each file read back with its own library and compared with the store."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import hdf5storage
import numpy as np
import pytest
import pyuff_ustb as uff
from data_testkit import (
    DEPTH,
    DEPTH_M,
    FRAMES,
    LABELS,
    LATERAL,
    LATERAL_M,
    N_SEQ,
    PRF,
    add_maps_and_labels,
    make_swei_store,
    tof_map,
    wave_iq,
)

from analysis.runners import run_displacement
from lab.export import export_store
from lab.store import StoreError
from lab.xr import open_dataset


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = make_swei_store(tmp_path_factory.mktemp("export") / "s.zarr")
    run_displacement(path, num_workers=1)
    add_maps_and_labels(path)
    return path


@pytest.fixture(scope="module")
def displacement(store_path: Path) -> np.ndarray:
    return open_dataset(store_path, "displacement").displacement_m.values


def test_hdf5_round_trip(store_path: Path, displacement: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    summary = export_store(store_path, out, fmt="hdf5", block_mb=1e-3)  # one row per block
    assert summary["what"] == ["iq", "displacement", "maps", "labels"]
    with h5py.File(out, "r") as f:
        iq = f["iq/iq"]
        assert iq.shape == (N_SEQ, FRAMES + 1, DEPTH, LATERAL) and iq.dtype == np.complex64
        for k in range(N_SEQ):
            np.testing.assert_array_equal(iq[k], wave_iq(k))
        assert iq.attrs["dims"] == "seq,acquired_frame,depth,lateral"
        assert iq.dims[2]["depth_m"] is not None
        np.testing.assert_allclose(iq.dims[2]["depth_m"][:], DEPTH_M)
        np.testing.assert_allclose(f["iq/lateral_m"][:], LATERAL_M)
        assert [s.decode() for s in f["iq/seq"][:]] == [f"B10/pos000/push{k}"
                                                        for k in range(N_SEQ)]
        assert f["iq"].attrs["PRF"] == PRF
        d = f["displacement/displacement_m"]
        np.testing.assert_array_equal(d[...], displacement)
        assert d.attrs["units"] == "m" and d.attrs["dims"] == "seq,frame,depth,lateral"
        np.testing.assert_array_equal(f["displacement/frame"][:], np.arange(1, FRAMES + 1))
        np.testing.assert_array_equal(f["maps/tof_kpa"][...], tof_map())
        assert f["maps/tof_kpa"].attrs["units"] == "kPa"
        np.testing.assert_allclose(f["labels/youngs_modulus_kpa"][:],
                                   [lab["youngs_modulus_kpa"] for lab in LABELS])
        assert f["iq/contact_force_n"].attrs["units"] == "N"


def test_mat_round_trip(store_path: Path, displacement: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "s.mat"
    export_store(store_path, out, fmt="mat", what=["iq", "displacement", "labels"],
                 block_mb=1e-3)
    assert out.read_bytes()[:19] == b"MATLAB 7.3 MAT-file"
    m = hdf5storage.loadmat(str(out))
    swei = m["iq"][0]
    iq = swei["iq"]
    assert iq.shape == (N_SEQ, FRAMES + 1, DEPTH, LATERAL) and iq.dtype == np.complex64
    np.testing.assert_array_equal(iq, np.stack([wave_iq(k) for k in range(N_SEQ)]))
    np.testing.assert_allclose(np.ravel(swei["depth_m"]), DEPTH_M)
    assert swei["probe_pose"].shape == (N_SEQ, 6)
    assert str(np.ravel(swei["units"]["contact_force_n"])[0]) == "N"
    assert str(np.ravel(swei["dims"]["iq"])[0]) == "seq,acquired_frame,depth,lateral"
    assert float(np.ravel(swei["attrs"]["PRF"])[0]) == PRF
    np.testing.assert_array_equal(m["displacement"][0]["displacement_m"], displacement)
    np.testing.assert_allclose(np.ravel(m["labels"][0]["youngs_modulus_kpa"]),
                               [lab["youngs_modulus_kpa"] for lab in LABELS])
    # MATLAB reads HDF5 axes reversed: the file stores (lateral, depth, frame, seq)
    with h5py.File(out, "r") as f:
        assert f["iq/iq"].shape == (LATERAL, DEPTH, FRAMES + 1, N_SEQ)
        assert f["iq/iq"].attrs["MATLAB_class"] == b"single"


def test_uff_round_trip(store_path: Path, displacement: np.ndarray, tmp_path: Path) -> None:
    out = tmp_path / "s.uff"
    export_store(store_path, out, fmt="uff", block_mb=1e-3)
    f = uff.Uff(str(out))
    for k in range(N_SEQ):
        bf = f.read(f"b_data_iq_{k + 1:04d}")
        assert isinstance(bf, uff.BeamformedData)
        np.testing.assert_allclose(bf.scan.x_axis.ravel(), LATERAL_M)
        np.testing.assert_allclose(bf.scan.z_axis.ravel(), DEPTH_M)
        assert float(bf.sampling_frequency) == pytest.approx(1540.0 / (2 * 0.08e-3))
        assert float(bf.modulation_frequency) == 7.5e6 and bf.frame_rate == 7000
        data = np.asarray(bf.data)  # HDF5 order (frame, wave, channel, pixel), pixels z-fastest
        assert data.shape == (FRAMES + 1, 1, 1, DEPTH * LATERAL)
        image = data[:, 0, 0, :].reshape(FRAMES + 1, LATERAL, DEPTH).transpose(0, 2, 1)
        np.testing.assert_allclose(image, wave_iq(k), rtol=1e-6)
        # the pixel order is the scan's own: pixel p sits at (scan.x[p], scan.z[p])
        p = 3 * DEPTH + 7
        assert bf.scan.x.ravel()[p] == pytest.approx(LATERAL_M[3])
        assert bf.scan.z.ravel()[p] == pytest.approx(DEPTH_M[7])
        info = json.loads(bf.info)
        assert info["record_key"] == f"B10/pos000/push{k}" and info["sound_speed"] == 1540.0
        disp = np.asarray(f.read(f"b_data_displacement_{k + 1:04d}").data)
        np.testing.assert_array_equal(
            disp[:, 0, 0].reshape(FRAMES, LATERAL, DEPTH).transpose(0, 2, 1), displacement[k])
    maps = np.asarray(f.read("b_data_map_tof_kpa").data)
    np.testing.assert_array_equal(
        maps[:, 0, 0].reshape(N_SEQ, LATERAL, DEPTH).transpose(0, 2, 1), tof_map())


def test_refusals(store_path: Path, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="not labels"):
        export_store(store_path, tmp_path / "a.uff", fmt="uff", what=["labels"])
    with pytest.raises(StoreError, match="unknown export item"):
        export_store(store_path, tmp_path / "a.h5", fmt="hdf5", what=["strain"])
    bare = make_swei_store(tmp_path / "bare.zarr", n_seq=1)
    with pytest.raises(StoreError, match="nothing to export for \\['displacement'\\]"):
        export_store(bare, tmp_path / "b.h5", fmt="hdf5", what=["displacement"])
    existing = tmp_path / "exists.mat"
    existing.write_bytes(b"keep")
    with pytest.raises(StoreError, match="refusing to overwrite"):
        export_store(store_path, existing, fmt="mat")
    assert existing.read_bytes() == b"keep"
    assert not list(tmp_path.glob("*.partial"))


@pytest.mark.parametrize("fmt", ["hdf5", "mat", "uff"])
def test_streamed_in_blocks_of_bounded_size(store_path: Path, tmp_path: Path, fmt: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from lab import export

    seq_bytes = (FRAMES + 1) * DEPTH * LATERAL * 8
    largest = []
    original = export._Writer.blocks

    def spy(self, da):  # type: ignore[no-untyped-def]
        for rows, value in original(self, da):
            largest.append(value.nbytes)
            yield rows, value

    monkeypatch.setattr(export._Writer, "blocks", spy)
    summary = export_store(store_path, tmp_path / f"s.{fmt}", fmt=fmt,  # type: ignore[arg-type]
                           what=["iq"], block_mb=2.5 * seq_bytes / 2**20)
    # two sequences fit the budget, three do not; UFF holds one sequence per object
    assert max(largest) == (seq_bytes if fmt == "uff" else 2 * seq_bytes)
    assert summary["bytes_read"] >= N_SEQ * seq_bytes


def test_cli_export(store_path: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from lab.cli import app

    out = tmp_path / "cli.h5"
    result = CliRunner().invoke(app, ["export", str(store_path), "--format", "hdf5",
                                      "--what", "maps,labels", "--out", str(out)])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert sorted(f) == ["labels", "maps"]
    bad = CliRunner().invoke(app, ["export", str(store_path), "--format", "npz"])
    assert bad.exit_code == 2 and "--format must be one of" in bad.output
    refused = CliRunner().invoke(app, ["export", str(store_path), "--format", "uff",
                                       "--what", "labels", "--out", str(tmp_path / "x.uff")])
    assert refused.exit_code == 2 and "not labels" in refused.output
