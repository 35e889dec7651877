"""The model-folder format: weights.safetensors + meta.json + history.json.

`probe train` writes it, every analysis reads it, and neither imports the other: both import
this module. Every file is written atomically, so a crash leaves the last complete version of
each; no file is a pickle.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from probe.data.spec import DatasetSpec
from probe.data.splits import load_splits
from probe.device import resolve_device
from probe.errors import ModelFileError, ProbeError
from probe.io import atomic_write_bytes, atomic_write_json
from probe.models.classifier import Classifier
from probe.models.resnet import ResNet, ResNetConfig

if TYPE_CHECKING:
    from probe.data.imageset import ImageSet

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


MAX_META_BYTES = 10_000_000  # a real meta.json is a few kB


@dataclass(frozen=True)
class ModelFolder:
    """A model folder whose meta.json has been read and checked; the weights are read only by
    `load_model`, so listing many models stays cheap."""
    path: Path
    meta: dict
    spec: "DatasetSpec"
    arch: "ResNetConfig"

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def has_dataset(self) -> bool:
        """Whether the model's dataset is known (a model file of yours may name none)."""
        return True

    @property
    def metrics(self) -> dict:
        return self.meta.get("metrics") or {}

    @property
    def train_config(self) -> dict:
        return self.meta.get("train") or {}

    @property
    def split_seed(self) -> int:
        """The seed of the validation split the model was trained with (older folders: the seed)."""
        t = self.train_config
        return t.get("split_seed", t.get("seed", 0))

    @property
    def split_by(self) -> str:
        return self.train_config.get("split_by", "driver")

    def load_split(self, split: str, data_dir=None) -> "ImageSet":
        """A split of the model's dataset, drawn with the model's own seed and split rule, so
        that 'val' is the validation set the model was chosen on. By the spec, not its name: your
        own data (folder, idx) are read with the model's classes, size and channels."""
        return load_splits(self.spec, data_dir, seed=self.split_seed, split_by=self.split_by,
                           splits=(split,))[split]

    def history(self) -> list[dict]:
        """history.json: one record per epoch ([] for a folder without one)."""
        path = self.path / HISTORY
        if not path.is_file():
            return []
        history = read_json(path)
        if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r for r in history):
            raise ModelFileError(f"{path}: not a training history (a list of epoch records)")
        return history

    def weights_file(self) -> Path:
        return self.path / WEIGHTS

    def weights_sha256(self) -> str:
        return hashlib.sha256(self.weights_file().read_bytes()).hexdigest()

    def meta_sha256(self) -> str:
        return hashlib.sha256((self.path / META).read_bytes()).hexdigest()

    def history_sha256(self) -> str | None:
        """None for a folder without history.json."""
        path = self.path / HISTORY
        return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None

    def load(self, device: str | torch.device = "cpu") -> Classifier:
        """The Classifier, in eval mode on `device` (the weights read now)."""
        return load_model_folder(self.path, device)[0]


def _meta_error(path: Path, field: str, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: field {field!r} {why}; retrain or restore the model folder")


def read_model_folder(path: str | Path) -> ModelFolder:
    """Read and check meta.json: format version, dataset spec, architecture, their agreement,
    and the types of the fields the analyses use. Any fault is one ModelFileError naming the
    file and the field."""
    folder = Path(path)
    if not folder.is_dir():
        if folder.exists():
            raise ModelFileError(f"{folder}: not a model folder; give a folder, not a file")
        raise ModelFileError(f"{folder}: no such model folder; `probe models list` shows the trained models")
    meta_path = folder / META
    if meta_path.is_file() and meta_path.stat().st_size > MAX_META_BYTES:
        raise ModelFileError(f"{meta_path}: {meta_path.stat().st_size:,} bytes is not a model description")
    meta = read_json(meta_path)
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path}: not a model description (a JSON object)")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _meta_error(meta_path, "format_version", f"is {version!r}, not a version number")
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{meta_path}: format version {version} was written by a newer probe "
                             f"(this one reads up to {FORMAT_VERSION}); upgrade probe")
    for key in ("dataset", "arch"):
        if not isinstance(meta.get(key), dict):
            raise _meta_error(meta_path, key, "is missing or not an object")
    for key in ("metrics", "train"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise _meta_error(meta_path, key, "is not an object")
    for split, m in (meta.get("metrics") or {}).items():
        if m is not None and not isinstance(m, dict):
            raise _meta_error(meta_path, f"metrics.{split}", "is not an object")
        err = (m or {}).get("error")
        if err is not None and not (isinstance(err, (int, float)) and 0 <= err <= 1):
            raise _meta_error(meta_path, f"metrics.{split}.error", f"is {err!r}, not a fraction")
    try:
        spec = DatasetSpec.from_dict(meta["dataset"])
    except (ProbeError, TypeError, ValueError) as e:
        raise _meta_error(meta_path, "dataset", f"does not describe a dataset ({e})") from None
    try:
        arch = ResNetConfig.from_dict(meta["arch"])
    except (ProbeError, TypeError, ValueError) as e:
        raise _meta_error(meta_path, "arch", f"does not describe a network ({e})") from None
    if arch.num_classes != spec.num_classes:
        raise _meta_error(meta_path, "arch.num_classes",
                          f"is {arch.num_classes} but the dataset has {spec.num_classes} classes")
    if arch.in_channels != spec.channels:
        raise _meta_error(meta_path, "arch.in_channels",
                          f"is {arch.in_channels} but the dataset's images have {spec.channels} channels")
    return ModelFolder(folder, meta, spec, arch)


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """The Classifier of a model folder, in eval mode on `device` (auto|cpu|cuda|cuda:N), and
    its meta.json as a dict. The Classifier carries its DatasetSpec (`model.spec`)."""
    model, folder = load_model_folder(path, device)
    return model, folder.meta


def load_model_folder(path: str | Path, device: str | torch.device = "cpu"):
    """(Classifier, ModelFolder): the checked weights and the checked description."""
    folder = read_model_folder(path)
    dev = resolve_device(device)
    tensors, _ = read_safetensors(folder.path / WEIGHTS)
    bad = [k for k, v in tensors.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ModelFileError(f"{folder.path / WEIGHTS}: tensor {bad[0]!r} holds NaN or infinite values "
                             f"({len(bad)} tensor(s) in all); retrain or restore the model folder")
    model = Classifier.from_spec(ResNet(folder.arch), folder.spec)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as e:
        raise ModelFileError(f"{folder.path / WEIGHTS}: the weights do not fit the architecture in "
                             f"meta.json ({str(e).splitlines()[0]})") from None
    return model.to(dev).eval(), folder
