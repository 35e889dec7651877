"""The model-folder format: weights.safetensors + meta.json + history.json.

`probe train` writes it, every analysis reads it, and neither imports the other: both import
this module. Every file is written atomically, so a crash leaves the last complete version of
each; no file is a pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from probe.errors import ModelFileError
from probe.io import atomic_write_bytes, atomic_write_json

WEIGHTS, META, HISTORY = "weights.safetensors", "meta.json", "history.json"
FORMAT_VERSION = 1


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous, unshared CPU tensors (channels_last weights are not)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(Path(folder) / WEIGHTS, st_save(plain_tensors(state), metadata={"format": "probe"}))


def save_meta(folder: Path, meta: dict) -> None:
    atomic_write_json(Path(folder) / META, {"format_version": FORMAT_VERSION, **meta})


def save_history(folder: Path, history: list[dict]) -> None:
    atomic_write_json(Path(folder) / HISTORY, history)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata, or a ModelFileError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found; is this a model folder made by `probe train`?")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
    except (SafetensorError, ValueError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: corrupt or truncated safetensors file ({e}); "
                             "retrain or copy the model folder again") from None
    return tensors, header.get("__metadata__", {}) or {}


def read_json(path: Path):
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found; is this a model folder made by `probe train`?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: corrupt JSON ({e.__class__.__name__}: {e})") from None


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """The Classifier of a model folder, in eval mode on `device` (auto|cpu|cuda|cuda:N), and
    its meta.json as a dict."""
    from probe.data.spec import DatasetSpec
    from probe.device import resolve_device
    from probe.models.classifier import Classifier
    from probe.models.resnet import ResNet, ResNetConfig
    folder = Path(path)
    if not folder.is_dir():
        raise ModelFileError(f"{folder}: no such model folder; `probe models list` shows the trained models")
    meta = read_json(folder / META)
    try:
        spec = DatasetSpec.from_dict(meta["dataset"])
        arch = ResNetConfig.from_dict(meta["arch"])
    except (KeyError, TypeError) as e:
        raise ModelFileError(f"{folder / META}: not a probe model description ({e})") from None
    model = Classifier.from_spec(ResNet(arch), spec)
    tensors, _ = read_safetensors(folder / WEIGHTS)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelFileError(f"{folder / WEIGHTS}: the weights do not fit the architecture in "
                             f"meta.json ({str(e).splitlines()[0]})") from None
    return model.to(resolve_device(device)).eval(), meta
