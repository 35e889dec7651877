"""Model folders: weights.safetensors + meta.json + history.json, and resume.safetensors.

Every file is written atomically, so a crash leaves the last complete version of each. The
resume state is one file (model, optimizer buffers, RNG, counters, history), so it can never be
half old and half new; no file is a pickle.
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

WEIGHTS, META, HISTORY, RESUME = "weights.safetensors", "meta.json", "history.json", "resume.safetensors"
FORMAT_VERSION = 1


def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous, unshared CPU tensors (channels_last weights are not contiguous)
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    atomic_write_bytes(folder / WEIGHTS, st_save(_plain(state), metadata={"format": "probe"}))


def save_meta(folder: Path, meta: dict) -> None:
    atomic_write_json(folder / META, {"format_version": FORMAT_VERSION, **meta})


def save_history(folder: Path, history: list[dict]) -> None:
    atomic_write_json(folder / HISTORY, history)


def save_resume(folder: Path, model_state: dict, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """state: JSON-able counters and config. Optimizer buffers are stored per parameter index."""
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    for i, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state)}
    atomic_write_bytes(folder / RESUME, st_save(_plain(tensors), metadata=meta))


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata, or a ModelFileError naming the file."""
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


def load_resume(folder: Path) -> tuple[dict, dict, dict, torch.Tensor]:
    """→ (model_state, optimizer buffers {index: {name: tensor}}, state, torch rng state)."""
    tensors, meta = read_safetensors(folder / RESUME)
    try:
        state = json.loads(meta["state"])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{folder / RESUME}: no training state in the file; it cannot be resumed") from None
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    optim: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, i, name = k.split(".", 2)
            optim.setdefault(int(i), {})[name] = v
    return model_state, optim, state, tensors.get("rng.torch")


def read_json(path: Path):
    if not path.is_file():
        raise ModelFileError(f"{path}: file not found; is this a model folder made by `probe train`?")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path}: corrupt JSON ({e.__class__.__name__}: {e})") from None
