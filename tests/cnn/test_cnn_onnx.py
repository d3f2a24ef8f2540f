"""ONNX export of the SWEI CNN: onnxruntime agrees with torch, normalisation included."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch

from analysis.swei_cnn.dense import zscore_windows
from analysis.swei_cnn.export_onnx import INPUT_NAME, export_onnx
from analysis.swei_cnn.io import save_model
from analysis.swei_cnn.model import swei_cnn


def test_onnx_matches_torch_on_raw_displacement(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = swei_cnn(9).eval()
    save_model(model, tmp_path / "m.safetensors")
    card = export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx")
    assert card["output"]["unit"] == "kPa"
    assert card["input"]["shape"] == ["batch", 1, model.frames, 9, 9]
    assert json.loads((tmp_path / "m.onnx.json").read_text())["check"]["windows"] == 4
    rng = np.random.default_rng(5)
    windows = rng.normal(0.0, 3e-6, (3, model.frames, 9, 9)).astype(np.float32)
    windows[2] = 1e-6  # a constant window: zeros after normalisation, no NaN
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"),
                                           providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: windows[:, None]})[0]
    with torch.no_grad():  # the project's own path: zscore_windows, then the model
        want = model(torch.from_numpy(zscore_windows(windows))[:, None]).numpy()
    assert got.shape == (3,) and np.all(np.isfinite(got))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    # unit-free input: the same windows in micrometres give the same moduli
    got_um = session.run(None, {INPUT_NAME: windows[:, None] * 1e6})[0]
    np.testing.assert_allclose(got_um, got, rtol=1e-4)
    with pytest.raises(FileExistsError):
        export_onnx(tmp_path / "m.safetensors", tmp_path / "m.onnx")
