"""resume.safetensors: what `probe train --resume` continues from. The model folder's other
files (weights, meta, history) are probe.models.folder's.

The resume state is one file (model, optimizer buffers, RNG, counters, history), so it can never be
half old and half new; no file is a pickle.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from probe.errors import ModelFileError
from probe.io import atomic_write_bytes
from probe.models.folder import (HISTORY, META, WEIGHTS, plain_tensors, read_json,  # noqa: F401
                                 read_safetensors, save_history, save_meta, save_weights)

RESUME = "resume.safetensors"


def save_resume(folder: Path, model_state: dict, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """state: JSON-able counters and config. Optimizer buffers are stored per parameter index."""
    tensors = {f"model.{k}": v for k, v in model_state.items()}
    for i, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"optim.{i}.{name}"] = value
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"state": json.dumps(state)}
    atomic_write_bytes(folder / RESUME, st_save(plain_tensors(tensors), metadata=meta))


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
