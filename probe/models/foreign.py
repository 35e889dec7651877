"""Models that probe did not train, beside its own model folders:

- a TorchScript file (`torch.jit.save(torch.jit.script(model), "mynet.pt")`),
- a torch.export file (`torch.export.save(torch.export.export(model, (x,)), "mynet.pt2")`),
- a network from a Python factory (`--model-factory pkg.module:fn`, e.g. torchvision.models:resnet18)
  and its state dict (`torch.save(model.state_dict(), ...)`, read with weights_only=True, or a
  safetensors file),

each with a model info (probe.models.model_info) for what the file cannot say: class names,
input size, mean/std, Grad-CAM's layer, the dataset. A pickled whole model
(`torch.save(model)`) is never unpickled: unpickling runs whatever code the file names.

A ForeignModel is a ModelFolder to the analyses and the report (name, spec, meta, splits,
sha256s), with no training history and no training config; `load()` gives a Classifier
(Normalize where a mean/std is given → the network) that says which saliency methods it cannot
serve (`unavailable`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import os
import pickle
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from probe.data.spec import DatasetSpec, get_spec, is_own_data, slugify
from probe.data.splits import load_splits
from probe.device import resolve_device
from probe.errors import ConfigError, ModelFileError
from probe.models.classifier import Classifier
from probe.io import open_regular
from probe.models.folder import MAX_WEIGHTS_BYTES, ModelFolder, load_model_folder, read_model_folder, read_safetensors
from probe.models.model_info import ModelInfo, info_options, parse_info, read_info_file

KINDS = {"torchscript": "TorchScript file", "export": "torch.export file", "factory": "state dict"}
NO_DATASET = "no dataset"  # the spec's name for a model whose info names no dataset
SHOWN = 3  # keys named in a state dict's error
HOW_TO_SAVE = ("save it as TorchScript (torch.jit.save(torch.jit.script(model), 'mynet.pt')), as torch.export "
               "(torch.export.save(torch.export.export(model, (x,)), 'mynet.pt2')), or save model.state_dict() and "
               "give the code that builds the network: --model-factory pkg.module:function")


# ---- what kind of file ----------------------------------------------------------------------------


def file_kind(path: Path) -> str:
    """torchscript, export, torch-save (a state dict or a pickled object) or safetensors; else a
    ModelFileError that says what probe reads."""
    with open_regular(path, ModelFileError) as f:
        if os.fstat(f.fileno()).st_size > MAX_WEIGHTS_BYTES:
            raise ModelFileError(f"{path}: {os.fstat(f.fileno()).st_size:,} bytes, more than any model probe "
                                 f"reads ({MAX_WEIGHTS_BYTES:,}); the file is damaged or of another kind")
        head = f.read(16)
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError) as e:
            raise ModelFileError(f"{path}: a damaged zip archive ({e})") from None
        inner = {n.split("/", 1)[1] for n in names if "/" in n}
        if any(n.startswith("code/") for n in inner) and "constants.pkl" in inner:
            return "torchscript"
        if "models/model.json" in inner or "archive_format" in inner:
            return "export"
        if "data.pkl" in inner:
            return "torch-save"
    elif head[:2] == b"\x80\x02" or head[:1] == b"\x80":  # torch.save's legacy (pre-zip) format
        return "torch-save"
    elif len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    raise ModelFileError(f"{path}: not a model folder, nor a model file probe reads: a TorchScript file, "
                         "a torch.export file (.pt2), or a state dict (torch.save or safetensors) with "
                         "--model-factory pkg.module:function")


def read_state_dict(path: Path, kind: str) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file: safetensors, or torch.save's with weights_only=True (a
    pickled object is refused, never run). A training checkpoint {"state_dict": ...} (or
    "model_state_dict", "model") gives the dict inside."""
    if kind == "safetensors":
        return read_safetensors(path)[0]
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError:
        raise ModelFileError(f"{path}: a pickled model (torch.save(model)), which probe does not unpickle "
                             f"(it can run any code): {HOW_TO_SAVE}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ModelFileError(f"{path}: cannot be read as a state dict ({str(e).splitlines()[0][:200]})") from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, not a state dict of tensors: {HOW_TO_SAVE}")
    return state


# ---- the model info and the dataset -------------------------------------------------------------


def sidecar(path: Path) -> Path:
    """The model info beside a model file: mynet.json for mynet.pt."""
    return path.with_suffix(".json")


def model_info(path: Path, given: dict | None) -> ModelInfo:
    """The JSON beside the file (unless a --model-info FILE is given), updated key by key by `given`."""
    given = dict(given or {})
    info_file, source = given.pop("info_file", None), given.pop("info_source", None)
    side = sidecar(path)
    doc, where = {}, []
    if info_file is None and side.is_file():
        doc, where = read_info_file(side), [side.name]
    if source or given:
        where.append(source or "options")
    return parse_info(doc | given, " and ".join(where) or "no model info")


def foreign_spec(path: Path, info: ModelInfo) -> DatasetSpec:
    """The DatasetSpec the analyses see: the named dataset's (its class names replaced by the
    info's, where given), else one made of the info's classes and input size."""
    spec = _spec_of(path, info)
    for key in ("mean", "std"):
        values = getattr(info, key)
        if values is not None and len(values) not in (1, spec.channels):
            raise ConfigError(f"{path}: {len(values)} {key} values for {spec.channels} channel(s)")
    return spec


def _spec_of(path: Path, info: ModelInfo) -> DatasetSpec:
    hint = f"add it to {sidecar(path).name} (or give --model-info KEY=VALUE)"
    if info.dataset is not None and not is_own_data(info.dataset):
        spec = get_spec(info.dataset)
        if info.input is not None and tuple(info.input) != spec.input_shape:
            raise ConfigError(f"{path}: input {'×'.join(map(str, info.input))} but {spec.name} images are "
                              f"{'×'.join(map(str, spec.input_shape))}")
        if info.classes is not None:
            if len(info.classes) != spec.num_classes:
                raise ConfigError(f"{path}: {len(info.classes)} classes but {spec.name} has {spec.num_classes}")
            spec = dataclasses.replace(spec, classes=info.classes, display_names=info.classes)
        return spec
    missing = [k for k in ("classes", "input") if getattr(info, k) is None]
    if missing and info.dataset is not None:  # folder, idx: the files cannot say what the network takes
        raise ConfigError(f"{path}: a {info.dataset} dataset's classes and size come from your files, and the "
                          f"network's {' and '.join(missing)} must be given: {hint}, e.g. "
                          "{\"classes\": [\"circle\", \"square\"], \"input\": \"3x32x32\"}")
    if missing:
        raise ConfigError(f"{path}: its {' and '.join(missing)} are not known: {hint}, e.g. "
                          "{\"classes\": [\"cat\", \"dog\"], \"input\": \"3x32x32\"}, or name its probe dataset: "
                          "{\"dataset\": \"cifar10\"}")
    c, h, w = info.input
    mean = _per_channel(info.mean, c) if info.mean is not None else (0.5,) * c
    std = _per_channel(info.std, c) if info.std is not None else (0.5,) * c
    if info.dataset is not None:  # a folder (or IDX) dataset: its classes are the folders' slugs
        slugs = tuple(slugify(name, k) for k, name in enumerate(info.classes))
        return DatasetSpec(info.dataset.lower(), slugs, info.classes, c, h, w, mean, std)
    return DatasetSpec(NO_DATASET, info.classes, info.classes, c, h, w, mean, std)


def _per_channel(values, channels: int) -> tuple[float, ...]:
    return tuple(values) * channels if len(values) == 1 else tuple(values)


# ---- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ForeignModel(ModelFolder):
    """A model file and its model info, as the analyses and the report see a model folder."""
    info: ModelInfo = ModelInfo()
    kind: str = "torchscript"

    @property
    def name(self) -> str:
        return self.info.name or self.path.stem

    @property
    def has_dataset(self) -> bool:
        return self.info.dataset is not None

    @property
    def format_words(self) -> str:
        """What the file is, for the model card."""
        if self.kind == "factory":
            kwargs = ", ".join(f"{k}={v!r}" for k, v in self.info.factory_kwargs.items())
            return f"a state dict, the network built by {self.info.factory}({kwargs})"
        return {"torchscript": "TorchScript (torch.jit.save)",
                "export": "a torch.export program (torch.export.save)"}[self.kind]

    @property
    def split_seed(self) -> int:
        return self.info.split_seed

    @property
    def split_by(self) -> str:
        return "driver"

    def load_split(self, split: str, data_dir=None):
        if not self.has_dataset:
            raise ConfigError(f"{self.name}: no dataset, so no {split} split: name it in the model info "
                              f"({sidecar(self.path).name}: {{\"dataset\": \"mnist\"}}, or --model-info dataset=mnist), "
                              "or give your own images with --image")
        # by the model's spec: a folder dataset's images brought to the network's size and channels
        data = load_splits(self.spec, data_dir, seed=self.split_seed, splits=(split,))[split]
        return dataclasses.replace(data, spec=self.spec)  # the model's class names

    def history(self) -> list[dict]:
        return []

    def weights_file(self) -> Path:
        return self.path

    def meta_sha256(self) -> str:
        said = {k: v for k, v in self.info.to_json().items() if k != "source"} | {"kind": self.kind}
        return hashlib.sha256(json.dumps(said, sort_keys=True, default=str).encode()).hexdigest()

    def history_sha256(self) -> None:
        return None

    def load(self, device="cpu") -> "ForeignClassifier":
        return load_foreign(self, resolve_device(device))


def read_foreign(path: str | Path, given: dict | None = None) -> ForeignModel:
    """A model file and its model info, checked without running the network (load() runs it)."""
    path = Path(path)
    kind = file_kind(path)
    if kind == "torch-save":
        read_state_dict(path, kind)  # a pickled model: refused first, with what to do instead (mmap: cheap)
    info = model_info(path, given)
    if kind in ("torchscript", "export") and info.factory is not None:
        raise ConfigError(f"{path}: a {KINDS[kind]} holds its network: leave out --model-factory ({info.factory})")
    if kind in ("torch-save", "safetensors"):
        if info.factory is None:
            raise ConfigError(f"{path}: a state dict needs the code of its network: give --model-factory "
                              "pkg.module:function (or \"factory\" in the model info)")
        kind = "factory"
    spec = foreign_spec(path, info)
    meta = {"format": "foreign", "kind": kind, "file": str(path), "info": info.to_json(),
            "arch_name": info.factory or KINDS[kind], "dataset": spec.to_dict()}
    return ForeignModel(path, meta, spec, None, info=info, kind=kind)


def open_model(model, info: dict | None = None) -> ModelFolder:
    """A probe model folder, or a model file of yours with its model info (`info`: model-info
    keys, over those of the JSON beside the file). A ModelFolder comes back as it is."""
    if isinstance(model, ModelFolder):
        return model
    path = Path(model)
    if path.is_file():
        return read_foreign(path, info)
    if info:
        raise ConfigError(f"--model-info/--model-factory describe a model file (--model mynet.pt), and {path} "
                          "is not one")
    return read_model_folder(path)


def load_model(path, device: str | torch.device = "cpu", info: dict | None = None):
    """`probe.load_model`: (model, meta) of a model folder or of a model file of yours (TorchScript,
    torch.export, or a state dict with info={"factory": "pkg.module:fn"}); info: the model info's
    keys (classes, input, mean, std, cam_layer, dataset, ...), over those of mynet.json beside
    mynet.pt. The model maps [0, 1] images (N, C, H, W) to logits, in eval mode on `device`."""
    if isinstance(info, (list, tuple)):
        info = info_options(info)
    folder = open_model(path, info)
    if not isinstance(folder, ForeignModel):
        model, folder = load_model_folder(folder.path, device)
        return model, folder.meta
    return folder.load(device), folder.meta


# ---- loading and checking -----------------------------------------------------------------------


class ExportedNet(nn.Module):
    """A torch.export program as a module: its mode is not its own to change (ep.module() refuses
    train()/eval(): it was fixed when exported), and a program exported with a fixed batch size
    gets its inputs in batches of that size (the last one padded)."""

    def __init__(self, program: nn.Module, batch: int | None):
        super().__init__()
        self.program = program
        self.batch = batch

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x):  # (N, C, H, W)
        if self.batch is None or len(x) == self.batch:
            return self.program(x)
        out = []
        for chunk in x.split(self.batch):
            n = len(chunk)
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            out.append(self.program(chunk)[:n])
        return torch.cat(out)


class ForeignClassifier(Classifier):
    """Normalize (where the model info gives a mean and std) → your network. `unavailable`: the
    saliency methods it cannot serve, with the reason; `cam_layer`: the model info's layer."""

    def __init__(self, net: nn.Module, info: ModelInfo, spec: DatasetSpec, unavailable: dict[str, str]):
        super().__init__(net, info.mean, info.std, spec=spec)
        self.cam_layer_name = info.cam_layer
        self.unavailable = dict(unavailable)

    @property
    def cam_layer(self) -> nn.Module:
        if self.cam_layer_name is not None and "gradcam" not in self.unavailable:
            return self.net.get_submodule(self.cam_layer_name)
        own = getattr(self.net, "cam_layer", None)
        if isinstance(own, nn.Module) and "gradcam" not in self.unavailable:
            return own
        raise AttributeError("cam_layer")


def _not_hookable(kind: str) -> dict[str, str]:
    what = f"a {KINDS[kind]}"
    return {"gradcam": f"{what} has no layer that can be hooked (give the network's code with --model-factory "
                       "and \"cam_layer\" for Grad-CAM)",
            "guided": f"{what} has no nn.ReLU modules whose gradients could be replaced: Guided Backprop "
                      "would be the plain gradient"}


def _fixed_batch(program) -> int | None:
    """The batch size a torch.export program was exported with, where it is fixed (not a Dim)."""
    users = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users:
            val = node.meta.get("val")
            size = getattr(val, "shape", (None,))[0] if getattr(val, "ndim", 0) else None
            return size if isinstance(size, int) else None
    return None


def _script_or_export(folder: ForeignModel, device: torch.device) -> nn.Module:
    path = folder.path
    try:
        if folder.kind == "torchscript":
            return torch.jit.load(str(path), map_location=device)
        program = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - torch's loaders raise many kinds
        raise ModelFileError(f"{path}: a damaged {KINDS[folder.kind]} ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:200] if str(e) else ''})") from None
    return ExportedNet(program.module(), _fixed_batch(program)).to(device)


@contextlib.contextmanager
def _cwd_importable():
    """Import from the current folder too (`--model-factory mynets:tiny` with mynets.py here),
    as `python -m` does; sys.path as it was afterwards."""
    before = list(sys.path)
    if "" not in sys.path and str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        yield
    finally:
        sys.path[:] = before


def build_from_factory(factory: str, kwargs: dict) -> nn.Module:
    """The network `module:function(**kwargs)` builds; a ConfigError that says which part failed."""
    module_name, _, attr = factory.partition(":")
    try:
        with _cwd_importable():
            module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - the user's module: any error on import
        raise ConfigError(f"--model-factory {factory}: cannot import {module_name} ({type(e).__name__}: {e})") from None
    fn = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
    if not callable(fn):
        raise ConfigError(f"--model-factory {factory}: {module_name} has no function {attr}")
    try:
        net = fn(**kwargs)
    except Exception as e:  # noqa: BLE001 - the user's function
        raise ConfigError(f"--model-factory {factory}: {attr}(**{kwargs}) failed ({type(e).__name__}: {e})") from None
    if not isinstance(net, nn.Module):
        raise ConfigError(f"--model-factory {factory}: gave a {type(net).__name__}, not an nn.Module")
    return net


def _names(keys: list[str]) -> str:
    more = len(keys) - SHOWN
    return ", ".join(keys[:SHOWN]) + (f" (and {more} more)" if more > 0 else "")


def fit_state_dict(net: nn.Module, state: dict[str, torch.Tensor], path: Path, factory: str) -> None:
    """Load `state` into `net`, strictly; a ModelFileError naming the first missing and unexpected
    keys and shapes that differ. A DataParallel "module." prefix is taken off."""
    own = net.state_dict()
    if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    missing, unexpected = [k for k in own if k not in state], [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the network"
              for k in own if k in state and own[k].shape != state[k].shape]
    problems = ([f"missing keys {_names(missing)}"] if missing else []) + \
        ([f"unexpected keys {_names(unexpected)}"] if unexpected else []) + \
        ([f"shapes differ: {'; '.join(shapes[:SHOWN])}"] if shapes else [])
    if problems:
        raise ModelFileError(f"{path}: does not fit the network of {factory}: {'; '.join(problems)}")
    net.load_state_dict(state)


def _check_outputs(model: nn.Module, folder: ForeignModel) -> None:
    """One forward pass of a blank input: the network takes the input size and gives one output per class."""
    c, h, w = folder.spec.input_shape
    dev = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    try:
        with torch.inference_mode():
            out = model(torch.zeros(1, c, h, w, device=dev))
    except Exception as e:  # noqa: BLE001 - the user's network
        raise ModelFileError(f"{folder.path}: the network does not take {c}×{h}×{w} images "
                             f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
                             "check \"input\" in the model info") from None
    k = folder.spec.num_classes
    if not torch.is_tensor(out) or tuple(out.shape) != (1, k):
        got = tuple(out.shape) if torch.is_tensor(out) else type(out).__name__
        raise ModelFileError(f"{folder.path}: the network gives {got} for one image, not (1, {k}) logits "
                             f"for the {k} classes of the model info")


def load_foreign(folder: ForeignModel, device: torch.device) -> ForeignClassifier:
    """The network of a model file, wrapped and checked, in eval mode on `device`."""
    if folder.kind == "factory":
        net = build_from_factory(folder.info.factory, folder.info.factory_kwargs)
        fit_state_dict(net, read_state_dict(folder.path, file_kind(folder.path)), folder.path, folder.info.factory)
        unavailable = {}
        if folder.info.cam_layer is not None:
            try:
                net.get_submodule(folder.info.cam_layer)
            except AttributeError:
                top = ", ".join(n for n, _ in list(net.named_children())[:8])
                raise ConfigError(f"cam_layer {folder.info.cam_layer!r}: {folder.info.factory}'s network has no "
                                  f"such layer (its top layers: {top})") from None
    else:
        net = _script_or_export(folder, device)
        unavailable = _not_hookable(folder.kind)
    model = ForeignClassifier(net, folder.info, folder.spec, unavailable).to(device).eval()
    _check_outputs(model, folder)
    return model
