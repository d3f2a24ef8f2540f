"""DDP with two CPU processes (gloo) matches single-process training step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.swei_cnn.runners import run_train, write_synthetic_store

OVERRIDES = {"growth_rate": 4, "head_hidden": 8}


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path: Path) -> None:
    store = tmp_path / "s.zarr"
    write_synthetic_store(store, gelatin_percents=(5.0, 7.5, 10.0, 12.5), positions=8, pushes=3,
                          shape=(35, 16, 20))
    result_json = tmp_path / "ddp.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "analysis.swei_cnn.ddp", "--store", str(store), "--window", "5",
           "--out", str(tmp_path / "ddp.safetensors"), "--max-steps", "2",
           "--model-overrides", json.dumps(OVERRIDES), "--result-json", str(result_json)]
    proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=240,
                          check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads(result_json.read_text())
    assert ddp["world_size"] == 2
    single = run_train(store, window_px=5, out_model_path=tmp_path / "one.safetensors",
                       max_steps=2, model_overrides=OVERRIDES)
    assert ddp["first_step_loss"] == pytest.approx(single["first_step_loss"], rel=1e-5)
    # the mean over both steps and the validation after them agree too: gradients match
    d, s = ddp["metrics"]["final"], single["metrics"]["final"]
    assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
    assert d["val_loss"] == pytest.approx(s["val_loss"], rel=1e-4)
    assert (tmp_path / "ddp.safetensors").is_file()
