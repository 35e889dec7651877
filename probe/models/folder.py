"""The model-folder format: weights.safetensors + meta.json + history.json.

`probe train` writes it, every analysis reads it, and neither imports the other: both import
this module. Every file is written atomically, so a crash leaves the last complete version of
each; no file is a pickle.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError

from probe.data.spec import DatasetSpec
from probe.errors import ModelFileError, ProbeError
from probe.io import atomic_write_bytes, atomic_write_json, open_regular, parse_json
from probe.io import read_json as pio_read_json
from probe.models.config import ResNetConfig
from probe.text import shown

# PyTorch is imported where tensors are made, not here: reading and checking meta.json (every
# `probe models list`) needs none of it, and importing torch takes ~2 s.
if TYPE_CHECKING:
    import torch

    from probe.data.imageset import ImageSet
    from probe.models.classifier import Classifier

WEIGHTS, META, HISTORY = "weights.safetensors", "meta.json", "history.json"
FORMAT_VERSION = 1


def plain_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """safetensors wants contiguous, unshared CPU tensors (channels_last weights are not)."""
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_weights(folder: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save as st_save
    atomic_write_bytes(Path(folder) / WEIGHTS, st_save(plain_tensors(state), metadata={"format": "probe"}))


def save_meta(folder: Path, meta: dict) -> None:
    atomic_write_json(Path(folder) / META, {"format_version": FORMAT_VERSION, **meta})


def save_history(folder: Path, history: list[dict]) -> None:
    atomic_write_json(Path(folder) / HISTORY, history)


MAX_META_BYTES = 10_000_000  # a real meta.json is a few kB
MAX_HISTORY_BYTES = 64 * 2 ** 20  # a history.json is ~300 bytes an epoch
# A resnet1202 ×4 is 0.3 GB of fp32 weights; a resume file holds them twice (momentum). Larger is
# not a model of this family (a foreign model file is bounded by the same figure).
MAX_WEIGHTS_BYTES = 4 * 2 ** 30
MAX_HEADER_BYTES = 100_000_000  # the safetensors format's own bound on its JSON header
_DTYPE_BYTES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}


def _corrupt(path: Path, why: str) -> ModelFileError:
    return ModelFileError(f"{path}: corrupt or truncated safetensors file ({why}); "
                          "copy the file again, or retrain")


def _declared_bytes(path: Path, header) -> int:
    """The bytes of tensor data the header declares, each tensor's extent checked against its
    shape and dtype (so that the file's size can be judged before its data is read)."""
    if not isinstance(header, dict):
        raise _corrupt(path, "the header is not a JSON object")
    end = 0
    for name, t in header.items():
        if name == "__metadata__":
            continue
        ok = (isinstance(t, dict) and t.get("dtype") in _DTYPE_BYTES and isinstance(t.get("shape"), list)
              and all(isinstance(d, int) and d >= 0 for d in t["shape"]) and isinstance(t.get("data_offsets"), list)
              and len(t["data_offsets"]) == 2 and all(isinstance(o, int) for o in t["data_offsets"]))
        if not ok:
            raise _corrupt(path, f"tensor {str(name)[:80]!r} is not described by dtype, shape and data_offsets")
        begin, stop = t["data_offsets"]
        if not 0 <= begin <= stop or stop - begin != math.prod(t["shape"]) * _DTYPE_BYTES[t["dtype"]]:
            raise _corrupt(path, f"tensor {str(name)[:80]!r}: its offsets do not fit its shape and dtype")
        end = max(end, stop)
    return end


def read_safetensors(path: Path, max_data_bytes: int | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header metadata, or a ModelFileError naming the file. Sizes are judged before
    the data is read: the file against MAX_WEIGHTS_BYTES, the header's tensors against the file
    and against max_data_bytes (what the model in meta.json can hold)."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: file not found; is this a model folder made by `probe train`?")
    with open_regular(path, ModelFileError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_WEIGHTS_BYTES:
            raise ModelFileError(f"{path}: {size:,} bytes, more than any model probe trains or reads "
                                 f"({MAX_WEIGHTS_BYTES:,}); the file is damaged or of another kind")
        head = f.read(8)
        header_len = int.from_bytes(head, "little")
        if len(head) < 8 or header_len > min(size - 8, MAX_HEADER_BYTES):
            raise _corrupt(path, "the header's length does not fit the file")
        header = parse_json(f.read(header_len), str(path), "a safetensors header", ModelFileError)
        declared = _declared_bytes(path, header)
        if 8 + header_len + declared != size:
            raise _corrupt(path, f"the header declares {declared:,} bytes of tensors, the file holds "
                                 f"{size - 8 - header_len:,}")
        if max_data_bytes is not None and declared > max_data_bytes:
            raise ModelFileError(f"{path}: {declared:,} bytes of tensors, more than the network in "
                                 f"meta.json can hold ({max_data_bytes:,}); retrain or restore the model folder")
        f.seek(0)
        data = f.read(size + 1)
    from safetensors.torch import load as st_load
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError) as e:
        raise _corrupt(path, str(e)) from None
    return tensors, header.get("__metadata__", {}) or {}


def read_json(path: Path, what: str = "a model folder's file", max_bytes: int = MAX_META_BYTES):
    """A JSON file of a model folder (or experiment folder), bounded: ModelFileError naming it."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: file not found; is this a model folder made by `probe train`?")
    return pio_read_json(path, what, max_bytes, ModelFileError)


def _sha256(path: Path) -> str:
    """In 1 MB pieces: a hash never holds a whole (perhaps huge, sparse) file in memory."""
    with open_regular(path, ModelFileError) as f:
        if os.fstat(f.fileno()).st_size > MAX_WEIGHTS_BYTES:
            raise ModelFileError(f"{path}: more than {MAX_WEIGHTS_BYTES:,} bytes; the file is damaged")
        return hashlib.file_digest(f, "sha256").hexdigest()


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
        from probe.data.splits import load_splits
        return load_splits(self.spec, data_dir, seed=self.split_seed, split_by=self.split_by,
                           splits=(split,))[split]

    def history(self) -> list[dict]:
        """history.json: one record per epoch ([] for a folder without one)."""
        path = self.path / HISTORY
        if not path.is_file():
            return []
        history = read_json(path, "a training history", MAX_HISTORY_BYTES)
        if not isinstance(history, list) or not all(isinstance(r, dict) and "epoch" in r for r in history):
            raise ModelFileError(f"{path}: not a training history (a list of epoch records)")
        return history

    def weights_file(self) -> Path:
        return self.path / WEIGHTS

    def weights_sha256(self) -> str:
        return _sha256(self.weights_file())

    def meta_sha256(self) -> str:
        return _sha256(self.path / META)

    def history_sha256(self) -> str | None:
        """None for a folder without history.json."""
        path = self.path / HISTORY
        return _sha256(path) if path.is_file() else None

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
    meta = read_json(meta_path, "a model description")
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path}: not a model description (a JSON object)")
    version = meta.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _meta_error(meta_path, "format_version", f"is {shown(version)}, not a version number")
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
            raise _meta_error(meta_path, f"metrics.{split[:40]}.error", f"is {shown(err)}, not a fraction")
    train = meta.get("train") or {}
    for key in ("seed", "split_seed"):  # the analyses draw the model's own validation split with them
        seed = train.get(key)
        if seed is not None and not (isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2 ** 63):
            raise _meta_error(meta_path, f"train.{key}", f"is {shown(seed)}, not a seed (a whole number ≥ 0)")
    if train.get("split_by", "driver") not in ("driver", "random"):
        raise _meta_error(meta_path, "train.split_by", f"is {shown(train['split_by'])}, not 'driver' or 'random'")
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
    import torch

    from probe.device import resolve_device
    from probe.models.classifier import Classifier
    from probe.models.resnet import ResNet
    folder = read_model_folder(path)
    dev = resolve_device(device)
    # What meta.json's network can hold, before building it: its parameters and as many buffers
    # (BatchNorm's statistics) in float64 at most, and a few counters. A file declaring more is not its.
    fits = 8 * 3 * folder.arch.num_parameters() + 4096
    tensors, _ = read_safetensors(folder.path / WEIGHTS, max_data_bytes=fits)
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
