"""Model files: safetensors weights + a JSON card; training checkpoints. Nothing is unpickled.

A model is two files: ``name.safetensors`` (the state dict) and ``name.json`` (the card: network
configuration, window size, input normalisation, training data hash, split, metrics, package
version and the SHA-256 of the weights file, checked on load). Checkpoints are one safetensors file
holding model and Adam state, with the epoch and history as JSON in its metadata.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from analysis.swei_cnn.model import SpatioTemporalDenseNet
from lab.provenance import package_version

CARD_FORMAT = "elastolab-swei-cnn/1"
CHECKPOINT_FORMAT = "elastolab-swei-cnn-checkpoint/1"
#: How windows must be normalised before the network sees them (recorded in every card).
NORMALISATION = "per-window z-score over (frame, depth, lateral), population std"


class ModelFileError(ValueError):
    """A model or checkpoint file that is missing, corrupt, or does not fit the request."""


@dataclass(frozen=True)
class ModelCard:
    """What a saved model is and how it was made (the JSON file next to the weights)."""

    window_px: int
    model_config: dict[str, Any]
    normalisation: str = NORMALISATION
    training_data_hash: str | None = None
    training_data_source: str | None = None
    split: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    package_version: str = ""
    weights_sha256: str = ""
    created_utc: str = ""
    format: str = CARD_FORMAT


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(weights_path: str | os.PathLike[str]) -> Path:
    """The card that belongs to a weights file: same name, ``.json``."""
    return Path(weights_path).with_suffix(".json")


def save_model(model: SpatioTemporalDenseNet, path: str | os.PathLike[str], *,
               card: ModelCard | None = None) -> ModelCard:
    """Write ``path`` (safetensors) and its JSON card; returns the card as written.

    ``card`` supplies provenance (data hash, split, metrics); window size, configuration,
    package version, creation time and the weights hash are filled in here.
    """

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ModelFileError(f"model files end in .safetensors, got {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata={"format": CARD_FORMAT})
    os.replace(tmp, path)
    base = card if card is not None else ModelCard(window_px=model.window_px, model_config={})
    written = ModelCard(**{
        **asdict(base),
        "window_px": model.window_px,
        "model_config": dict(model.config),
        "package_version": package_version(),
        "weights_sha256": _sha256(path),
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "format": CARD_FORMAT,
    })
    tmp_card = card_path(path).with_name(card_path(path).name + ".tmp")
    tmp_card.write_text(json.dumps(asdict(written), indent=2, sort_keys=True))
    os.replace(tmp_card, card_path(path))
    return written


def read_card(path: str | os.PathLike[str]) -> ModelCard:
    """The card of weights file ``path``; raises :class:`ModelFileError` if missing or invalid."""
    cpath = card_path(path)
    if not cpath.is_file():
        raise ModelFileError(f"{cpath} not found: a model is a .safetensors file plus its .json "
                             "card")
    try:
        raw = json.loads(cpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{cpath} is not a valid JSON model card: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != CARD_FORMAT:
        got = raw.get("format") if isinstance(raw, dict) else type(raw).__name__
        raise ModelFileError(f"{cpath} is not an elastolab SWEI CNN card (format {got!r}, "
                             f"expected {CARD_FORMAT!r})")
    try:
        return ModelCard(**raw)
    except TypeError as exc:
        raise ModelFileError(f"{cpath}: unexpected card fields: {exc}") from exc


def load_model(path: str | os.PathLike[str], *, window_px: int | None = None,
               device: str | torch.device = "cpu") -> tuple[SpatioTemporalDenseNet, ModelCard]:
    """Load a model saved by :func:`save_model`, in eval mode.

    Parameters
    ----------
    path : path
        The ``.safetensors`` file; its ``.json`` card must sit next to it.
    window_px : int, optional
        Window size the caller expects; a model for another size raises.
    device : str or torch.device
        Where to put the weights.

    Raises
    ------
    ModelFileError
        Missing files, a card of another format, a weights file whose SHA-256 differs from the
        card (changed or corrupt), a file safetensors cannot parse, weights that do not match the
        card's configuration, or a window size other than ``window_px``.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found")
    card = read_card(path)
    if window_px is not None and card.window_px != window_px:
        raise ModelFileError(f"{path} is a {card.window_px} x {card.window_px} px model; "
                             f"{window_px} x {window_px} px windows were requested")
    actual = _sha256(path)
    if actual != card.weights_sha256:
        raise ModelFileError(f"{path}: SHA-256 {actual[:12]}... does not match the card's "
                             f"{card.weights_sha256[:12]}...; the weights were changed or are "
                             "corrupt")
    try:
        state = load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a readable safetensors file: {exc}") from exc
    config = dict(card.model_config)
    try:
        model = SpatioTemporalDenseNet(
            config.pop("window_px"), stem_channels=tuple(config.pop("stem_channels")),
            block_config=tuple(config.pop("block_config")), **config)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{card_path(path)}: bad model configuration: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: weights do not fit the card's network: {exc}") from exc
    return model.to(device).eval(), card


# -- checkpoints ---------------------------------------------------------------------------------
def save_checkpoint(path: str | os.PathLike[str], *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, epoch: int,
                    state: dict[str, Any]) -> None:
    """Atomically write model + Adam state after ``epoch`` epochs, with JSON-able ``state``."""
    tensors = {f"model.{k}": v.detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    for index, slots in opt["state"].items():
        for name, value in slots.items():
            tensors[f"optim.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    meta = {"format": CHECKPOINT_FORMAT, "epoch": str(epoch),
            "param_groups": json.dumps(opt["param_groups"]), "state": json.dumps(state)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load_checkpoint(path: str | os.PathLike[str], *, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> tuple[int, dict[str, Any]]:
    """Restore model and optimizer from :func:`save_checkpoint`; returns (epoch, state)."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise ModelFileError(f"{path} is not a readable checkpoint: {exc}") from exc
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise ModelFileError(f"{path} is not an elastolab SWEI CNN checkpoint "
                             f"(format {meta.get('format')!r})")
    model_state = {k.removeprefix("model."): v for k, v in tensors.items()
                   if k.startswith("model.")}
    try:
        model.load_state_dict(model_state, strict=True)
    except RuntimeError as exc:
        raise ModelFileError(f"{path}: checkpoint does not fit this network: {exc}") from exc
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, index, name = k.split(".", 2)
            opt_state.setdefault(int(index), {})[name] = v
    optimizer.load_state_dict({"state": opt_state,
                               "param_groups": json.loads(meta["param_groups"])})
    return int(meta["epoch"]), json.loads(meta["state"])
