"""The SWEI CNN as an ONNX model usable outside the project, checked with onnxruntime.

The exported graph includes the input normalisation, so an outside user feeds raw axial
displacement windows (any unit: each window is z-scored inside the graph, exactly as
:func:`analysis.swei_cnn.dense.zscore_windows` does) and reads Young's modulus in kPa. The model
card written next to it (``NAME.onnx.json``) states the input definition and the output unit.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from analysis.swei_cnn.io import load_model
from analysis.swei_cnn.model import SpatioTemporalDenseNet

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "export_onnx"]

INPUT_NAME = "displacement_windows"
OUTPUT_NAME = "youngs_modulus_kpa"
#: ONNX opset of the export (onnxruntime >= 1.10 runs it).
OPSET = 17


class _ZScored(nn.Module):
    """z-score each (frame, depth, lateral) window (population std, constant -> zeros), then
    the network: the same numbers as ``zscore_windows`` followed by the model."""

    def __init__(self, model: SpatioTemporalDenseNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(dim=(2, 3, 4), keepdim=True)
        std = (x - mean).square().mean(dim=(2, 3, 4), keepdim=True).sqrt()
        std = torch.where(std == 0, torch.ones_like(std), std)
        return self.model((x - mean) / std)


def model_card(model: SpatioTemporalDenseNet, source_card: dict[str, Any]) -> dict[str, Any]:
    """What the ONNX model takes and returns, plus the provenance of the weights."""
    return {
        "format": "elastolab-swei-cnn-onnx/1",
        "input": {
            "name": INPUT_NAME,
            "shape": ["batch", 1, model.frames, model.window_px, model.window_px],
            "dtype": "float32",
            "quantity": "axial displacement (any unit; positive away from the probe), as "
                        "Loupas estimates it from IQ baseband in depth",
            "frames": f"the {model.frames} tracked frames after the push, in order, at the "
                      "acquisition PRF (7 kHz in training); frame k is acquired frame k",
            "window_layout": "(frame, depth, lateral): a window_px x window_px patch of "
                             "pixels centred on the pixel to estimate, depth downwards, lateral "
                             "in the image's lateral direction, on the training pixel grid",
            "normalisation": "none needed: each window is z-scored inside the graph over "
                             "(frame, depth, lateral) with the population std (constant "
                             "windows become zeros), as at training",
        },
        "output": {"name": OUTPUT_NAME, "shape": ["batch"], "dtype": "float32",
                   "quantity": "Young's modulus of the window's centre pixel", "unit": "kPa"},
        "opset": OPSET,
        "source_weights": source_card,
    }


def export_onnx(
    model_path: str | os.PathLike[str],
    onnx_path: str | os.PathLike[str],
    *,
    check_batch: int = 4,
    seed: int = 0,
) -> dict[str, Any]:
    """Export a saved SWEI CNN (``.safetensors`` + card) to ONNX and check it with onnxruntime.

    Parameters
    ----------
    model_path : path
        Weights saved by :func:`analysis.swei_cnn.io.save_model`.
    onnx_path : path
        ``.onnx`` file to write (refuses to overwrite); its card goes to ``onnx_path + .json``.
    check_batch : int
        Random displacement windows the onnxruntime check compares with torch.
    seed : int
        Seed of the check's windows.

    Returns
    -------
    dict
        The card, with ``check``: ``max_abs_difference_kpa`` and ``max_abs_output_kpa`` of
        onnxruntime against torch on the check windows.

    Raises
    ------
    FileExistsError
        `onnx_path` exists.
    RuntimeError
        onnxruntime disagrees with torch by more than 1e-4 of the output scale.
    """
    import onnxruntime

    out = Path(onnx_path)
    if out.exists():
        raise FileExistsError(f"{out} exists; refusing to overwrite it")
    model, card = load_model(model_path)
    wrapped = _ZScored(model).eval()
    shape = (check_batch, 1, model.frames, model.window_px, model.window_px)
    windows = torch.from_numpy(
        np.random.default_rng(seed).normal(0.0, 5e-6, shape).astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on the constant shape check
        torch.onnx.export(wrapped, (windows,), str(out), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], opset_version=OPSET, dynamo=False,
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {INPUT_NAME: windows.numpy()})[0]
    with torch.no_grad():
        want = wrapped(windows).numpy()
    diff = float(np.max(np.abs(got - want)))
    scale = float(np.max(np.abs(want)))
    if not diff <= 1e-4 * max(scale, 1e-6):
        out.unlink(missing_ok=True)
        raise RuntimeError(f"onnxruntime differs from torch by {diff:.3g} kPa (outputs up to "
                           f"{scale:.3g} kPa); the export was removed")
    result = model_card(model, asdict(card))
    result["check"] = {"max_abs_difference_kpa": diff, "max_abs_output_kpa": scale,
                       "windows": check_batch}
    Path(str(out) + ".json").write_text(json.dumps(result, indent=2, default=str))
    return result
