"""resume.safetensors: what `probe train --resume` continues from. The model folder's other
files (weights, meta, history) are probe.models.folder's.

The resume state is one file (model, optimizer buffers, RNG, counters, history), so it can never be
half old and half new; no file is a pickle. Everything read back is checked here, so a damaged or
foreign file is a ModelFileError naming the file and the field, never a KeyError or TypeError.
"""
from __future__ import annotations

import json
import math
from numbers import Real
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from probe.errors import ModelFileError
from probe.io import atomic_write_bytes, parse_json
from probe.models.folder import plain_tensors, read_safetensors

RESUME = "resume.safetensors"

_INT = (int,)
_NUM = (int, float)
# field → (accepted types, required). Optional fields are absent in files of older versions.
STATE_FIELDS = {
    "step": (_INT, True), "epoch": (_INT, True), "best_epoch": (_INT, True),
    "best_val_error": (_NUM + (type(None),), True), "elapsed": (_NUM, True),
    "images_seen": (_INT, True), "history": ((list,), True), "train": ((dict,), True),
    "train_seconds": (_NUM, False), "split_sizes": ((dict,), False), "scaler": ((dict,), False),
    "world_size": (_INT, False), "extensions": ((list,), False),
}


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


def _check_state(path: Path, state) -> dict:
    if not isinstance(state, dict):
        raise ModelFileError(f"{path}: the training state is a {type(state).__name__}, not an object")
    for name, (kinds, required) in STATE_FIELDS.items():
        if name not in state:
            if required:
                raise ModelFileError(f"{path}: the training state lacks '{name}'; it cannot be resumed")
            continue
        value = state[name]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ModelFileError(f"{path}: '{name}' in the training state is {value!r}, "
                                 f"not {' or '.join(k.__name__ for k in kinds)}")
        if isinstance(value, Real) and (value < 0 or not math.isfinite(value)):
            raise ModelFileError(f"{path}: '{name}' in the training state is {value!r}; "
                                 "it must be finite and not negative")
    if any(not isinstance(h, dict) for h in state["history"]):
        raise ModelFileError(f"{path}: 'history' in the training state must be a list of objects")
    if state["best_epoch"] > state["epoch"]:
        raise ModelFileError(f"{path}: 'best_epoch' {state['best_epoch']} is after the last epoch "
                             f"{state['epoch']}")
    return state


def load_resume(folder: Path) -> tuple[dict, dict, dict, torch.Tensor | None]:
    """→ (model_state, optimizer buffers {index: {name: tensor}}, state, torch rng state), the
    state's fields and the tensor names checked; shapes against a model are check_against's."""
    path = Path(folder) / RESUME
    tensors, meta = read_safetensors(path)
    if not isinstance(meta.get("state"), str):
        raise ModelFileError(f"{path}: no training state in the file; it cannot be resumed")
    state = _check_state(path, parse_json(meta["state"], str(path), "a training state", ModelFileError))
    model_state, optim = {}, {}
    for k, v in tensors.items():
        if k.startswith("model."):
            model_state[k[6:]] = v
        elif k.startswith("optim."):
            parts = k.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or not parts[2]:
                raise ModelFileError(f"{path}: tensor '{k}' is not optim.<parameter index>.<buffer>")
            optim.setdefault(int(parts[1]), {})[parts[2]] = v
        elif k != "rng.torch":
            raise ModelFileError(f"{path}: unexpected tensor '{k}' (not model.*, optim.* or rng.torch)")
    rng = tensors.get("rng.torch")
    if rng is not None and (rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape):
        raise ModelFileError(f"{path}: 'rng.torch' is {rng.dtype} {tuple(rng.shape)}, not the "
                             f"uint8 {tuple(torch.get_rng_state().shape)} of torch's generator state")
    if rng is not None:
        try:  # its bytes too (found by the fuzz suite: torch.set_rng_state's RuntimeError at resume)
            torch.Generator().set_state(rng)
        except RuntimeError as e:
            raise ModelFileError(f"{path}: 'rng.torch' is not a state of torch's generator ({e}); "
                                 "the file is damaged and cannot be resumed") from None
    return model_state, optim, state, rng


def check_against(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                  model_state: dict, optim: dict) -> None:
    """The saved tensors fit this model and optimizer: every key, shape and buffer, before any is
    loaded (a half-loaded model must not happen)."""
    expected = model.state_dict()
    missing, unknown = sorted(set(expected) - set(model_state)), sorted(set(model_state) - set(expected))
    if missing or unknown:
        what = "; ".join(s for s in (f"missing {', '.join(missing[:3])}" if missing else "",
                                     f"unknown {', '.join(unknown[:3])}" if unknown else "") if s)
        raise ModelFileError(f"{path}: the model tensors do not fit the architecture ({what})")
    for k, v in expected.items():
        if model_state[k].shape != v.shape:
            raise ModelFileError(f"{path}: 'model.{k}' has shape {tuple(model_state[k].shape)}, "
                                 f"the model's is {tuple(v.shape)}")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, buffers in optim.items():
        if i >= len(params):
            raise ModelFileError(f"{path}: optimizer buffers for parameter {i}, but the model has "
                                 f"{len(params)} parameters")
        for name, value in buffers.items():
            if name != "momentum_buffer":  # the one tensor SGD keeps per parameter
                raise ModelFileError(f"{path}: unknown optimizer buffer 'optim.{i}.{name}'")
            if value.shape != params[i].shape or not value.is_floating_point():
                raise ModelFileError(f"{path}: 'optim.{i}.{name}' is {value.dtype} "
                                     f"{tuple(value.shape)}, parameter {i} is {tuple(params[i].shape)}")
