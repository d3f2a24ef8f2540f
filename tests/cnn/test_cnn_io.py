"""Model files: round trip, hash check, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from analysis.swei_cnn.io import ModelCard, ModelFileError, load_model, read_card, save_model
from analysis.swei_cnn.model import FRAMES, swei_cnn


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    model = swei_cnn(9, growth_rate=4, head_hidden=8)
    model.set_target_scale(50.0, 20.0)
    path = tmp_path / "m.safetensors"
    card = save_model(model.eval(), path, card=ModelCard(
        window_px=9, model_config={}, training_data_hash="abc", split={"kind": "positions"},
        metrics={"val_mae_kpa": 3.0}))
    return model, path, card


def test_round_trip(saved) -> None:
    model, path, card = saved
    loaded, loaded_card = load_model(path, window_px=9)
    x = torch.randn(3, 1, FRAMES, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))
    assert loaded_card == card == read_card(path)
    assert card.training_data_hash == "abc" and card.window_px == 9
    assert len(card.weights_sha256) == 64 and card.package_version


def test_window_mismatch(saved) -> None:
    _, path, _ = saved
    with pytest.raises(ModelFileError, match=r"9 x 9 px model; 33 x 33 px windows"):
        load_model(path, window_px=33)


def test_changed_weights_fail_the_hash(saved) -> None:
    _, path, _ = saved
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="does not match the card"):
        load_model(path)


def test_garbage_file_with_matching_card(tmp_path, saved) -> None:
    _, path, _ = saved
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x80\x04 this is a pickle, not safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    import hashlib

    card["weights_sha256"] = hashlib.sha256(bad.read_bytes()).hexdigest()
    bad.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        load_model(bad)


def test_missing_or_foreign_card(tmp_path, saved) -> None:
    _, path, _ = saved
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "nope.safetensors")
    path.with_suffix(".json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelFileError, match="not an elastolab SWEI CNN card"):
        load_model(path)
    path.with_suffix(".json").unlink()
    with pytest.raises(ModelFileError, match=r"\.json card"):
        load_model(path)
