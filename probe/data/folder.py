"""Your own pictures in an ImageFolder layout (torchvision's), one folder per class:

    DIR/train/<class>/*.png|jpg|jpeg|bmp     required (images in subfolders of a class count too)
    DIR/val/<class>/...                      optional
    DIR/test/<class>/...                     optional

Classes: the folder names in train/, sorted; the display name is the folder's name, the slug
(what --class takes, what files are named after) its ASCII lower-case form ("Phone Right" →
phone_right). A split without a folder of its own is drawn from train/, class by class (stratified)
and seeded: HOLDOUT (10%) of each class's images for test, then as many for val, at least one each
while train keeps one.

Images are decoded upright (EXIF), transparency on white. Without a size they must all have one
size; with --size HxW each is centre-cropped to the aspect ratio W:H and resized (bilinear), the way
`probe predict --image` brings a photo to a model's input. All grey (R = G = B in every pixel, a
greyscale PNG or JPEG) → 1 channel, else 3.

Mean and std are of the training split, computed once and kept in DIR/.probe-cache/folder-stats.json
(DIR read-only: $PROBE_CACHE_DIR or ~/.cache/probe/folder-<hash of DIR>/), keyed by the training
files' paths, sizes and mtimes, the size and the channels: an added, removed or changed training
image means new statistics.

Unreadable files (damaged, not an image, not a regular file) are skipped with a DataWarning naming
them when they are few (at most 1% of the images and at most 10); more is a DataError.

A model trained here keeps its spec (classes, size, channels, mean, std) in meta.json; its data are
read again (probe evaluate, every analysis) with that spec: the same classes, each image brought to
the model's size and channels.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probe.data.files import DataWarning
from probe.data.imageset import ImageSet, channel_stats
from probe.data.paths import resolve_data_dir
from probe.data.spec import DatasetSpec, parse_size, slugify
from probe.data.user_images import IMAGE_SUFFIXES, centre_aspect, open_image
from probe.errors import DataError, ProbeError
from probe.io import atomic_write_json, read_json
from probe.progress import progress

SPLITS = ("train", "val", "test")
EXTENSIONS = IMAGE_SUFFIXES
HOLDOUT = 0.1  # of each class's images in train/, for a val or test split without its own folder
MAX_BAD_FRACTION, MAX_BAD = 0.01, 10  # unreadable files skipped with a warning, beyond: an error
STATS_FILE = "folder-stats.json"
_STATS_VERSION = 1  # bump when decoding changes, so old statistics are not reused
_STATS_KEPT = 16  # entries in the stats file (other sizes, other seeds)
MAX_STATS_BYTES = 1_000_000  # 16 entries of a few hundred bytes
_LAYOUT = "train/<class>/*.png (one folder per class, e.g. train/cat/, train/dog/)"


@dataclass
class Layout:
    root: Path
    folders: list[str]  # class folder names in train/, sorted: label i is folders[i]
    files: dict[str, list[tuple[str, int]]]  # split → [(path relative to root, label)], splits with a folder

    @property
    def slugs(self) -> list[str]:
        return [slugify(f, i) for i, f in enumerate(self.folders)]

    @property
    def carved(self) -> tuple[str, ...]:
        """The splits drawn from train/, test first."""
        return tuple(s for s in ("test", "val") if s not in self.files)


def images_in(folder: Path) -> list[str]:
    """Image files under folder (subfolders too, hidden ones not), as sorted relative paths."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.rglob("*"):
        rel = p.relative_to(folder)
        if p.suffix.lower() in EXTENSIONS and not p.is_dir() and not any(s.startswith(".") for s in rel.parts):
            found.append(rel.as_posix())
    return sorted(found)


def class_folders(base: Path) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan(root: Path) -> Layout:
    """The folder's classes and files; every fault of the layout is a DataError saying what to do."""
    if not root.is_dir():
        if root.exists():
            raise DataError(f"{root} is a file: --data-dir takes the folder that holds {_LAYOUT}")
        raise DataError(f"{root}: no such folder: pass --data-dir DIR, a folder that holds {_LAYOUT}")
    train = root / "train"
    if not train.is_dir():
        raise DataError(f"{root}: no train/ folder: put the images in {root}/{_LAYOUT}; val/ and test/ "
                        "alike are optional")
    folders = class_folders(train)
    if not folders:
        loose = len([p for p in train.iterdir() if p.suffix.lower() in EXTENSIONS])
        lie = f" ({loose} image{' lies' if loose == 1 else 's lie'} directly in it)" if loose else ""
        raise DataError(f"{train}: no class folders{lie}: "
                        "make one folder per class (train/cat/, train/dog/, ...) and put each image in its class's")
    if len(folders) == 1:
        raise DataError(f"{train}: only one class folder ({folders[0]}): a classifier needs at least two; "
                        "add a folder per class")
    files = {}
    for split in SPLITS:
        base = root / split
        if not base.is_dir():
            continue
        stray = [f for f in class_folders(base) if f not in folders]
        if stray:
            raise DataError(f"{base / stray[0]}: class {stray[0]!r} has no folder in train/ ({', '.join(folders)}): "
                            f"rename it to one of those, or add train/{stray[0]}/ with images")
        files[split] = [(f"{split}/{f}/{rel}", label) for label, f in enumerate(folders) for rel in images_in(base / f)]
        if split != "train" and not files[split]:
            raise DataError(f"{base}: no images in its class folders: add them, or remove {split}/ to draw "
                            f"{split} from train/")
    _check_classes(train, folders, files["train"])
    return Layout(root, folders, files)


def _check_classes(train: Path, folders: list[str], files: list[tuple[str, int]]) -> None:
    counts = Counter(label for _, label in files)
    empty = [f for i, f in enumerate(folders) if not counts[i]]
    if empty:
        more = f", as are {', '.join(empty[1:])}" if len(empty) > 1 else ""
        raise DataError(f"{train / empty[0]}: a class folder without images ({', '.join(EXTENSIONS)}){more}: "
                        f"add images or remove the folder{'s' if more else ''}")
    seen: dict[str, str] = {}
    for i, f in enumerate(folders):
        slug = slugify(f, i)
        if slug in seen:
            raise DataError(f"{train}: class folders {seen[slug]!r} and {f!r} both become the class name "
                            f"{slug!r}: rename one")
        seen[slug] = f


def carve(labels, carved: tuple[str, ...], seed: int) -> dict[str, np.ndarray]:
    """Positions in train/'s file list → {"train", *carved}: per class (in label order, one
    generator seeded with `seed`), round(HOLDOUT × n) of its images, at least 1, for each carved
    split in turn, as long as train keeps one. Each index array sorted."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {s: [] for s in ("train", *carved)}
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        start = 0
        for s in carved:
            k = max(0, min(max(1, int(HOLDOUT * len(idx) + 0.5)), len(idx) - start - 1))
            out[s].append(idx[start:start + k])
            start += k
        out["train"].append(idx[start:])
    return {s: np.sort(np.concatenate(v)) if v else np.zeros(0, np.int64) for s, v in out.items()}


def split_files(layout: Layout, seed: int) -> dict[str, list[tuple[str, int]]]:
    """split → [(path relative to root, label)]: the split's own folder, or drawn from train/."""
    train = layout.files["train"]
    parts = carve([label for _, label in train], layout.carved, seed)
    out = {s: [train[i] for i in parts[s].tolist()] for s in parts}
    return {s: layout.files[s] if s in layout.files and s != "train" else out[s] for s in SPLITS}


# ---- decoding -----------------------------------------------------------------------------------

def decode(path: Path, size: tuple[int, int] | None, mode: str):
    """One image → (uint8 (H, W, C) array in `mode` (RGB or L), whether it is grey, None), or
    (None, False, why) where it cannot be read."""
    try:
        draft = None if size is None else (size[1] * 2, size[0] * 2)  # JPEG: decode at ≥ 2× the target
        img, _ = open_image(path, draft, native=size is None)  # no --size: stored as decoded
        if size is not None and img.size != (size[1], size[0]):
            img = centre_aspect(img, size[1], size[0]).convert(mode)
            img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
        arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except DataError as e:
        return None, False, str(e)
    arr = arr[:, :, None] if arr.ndim == 2 else arr  # (H, W, C)
    grey = arr.shape[2] == 1 or bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    return arr, grey, None


def decode_all(root: Path, rel: list[str], size, mode: str, workers: int | None = None) -> list[tuple]:
    """decode() of every root/rel[i], in order, on threads (Pillow releases the GIL)."""
    pool = ThreadPoolExecutor(workers or min(8, os.cpu_count() or 1))
    out = []
    try:
        with progress(f"{root.name}: decoding {len(rel):,} images") as bar:
            task = bar.add_task("", total=len(rel))
            for result in pool.map(lambda r: decode(root / r, size, mode), rel):
                out.append(result)
                bar.advance(task)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # Ctrl-C: drop the queued decodes, go now
        raise
    pool.shutdown()
    return out


def check_unreadable(root: Path, bad: list[tuple[str, str]], total: int) -> None:
    """A few unreadable files: a warning naming them; more: a DataError listing the first."""
    if not bad:
        return
    names = ", ".join(r for r, _ in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    first = bad[0][1].removeprefix(str(root / bad[0][0])).lstrip(": ")
    if len(bad) > MAX_BAD or len(bad) > MAX_BAD_FRACTION * total:
        raise DataError(f"{root}: {len(bad)} of {total:,} images cannot be read ({names}; {bad[0][0]}: {first}): "
                        f"repair or remove them (up to 1% of the images, at most {MAX_BAD}, are skipped with a warning)")
    warnings.warn(f"{root}: skipped {len(bad)} unreadable image{'s' if len(bad) > 1 else ''} of {total:,}: "
                  f"{names} ({first})", DataWarning, stacklevel=4)


def check_one_size(root: Path, rel: list[str], arrays: list[np.ndarray]) -> tuple[int, int]:
    """The one (H, W) of the images, or a DataError naming two sizes and --size."""
    sizes = Counter(a.shape[:2] for a in arrays)
    if len(sizes) > 1:
        (h1, w1), (h2, w2) = [s for s, _ in sizes.most_common(2)]
        ex1 = next(r for r, a in zip(rel, arrays) if a.shape[:2] == (h1, w1))
        ex2 = next(r for r, a in zip(rel, arrays) if a.shape[:2] == (h2, w2))
        raise DataError(f"{root}: the images differ in size ({h1}x{w1} like {ex1}, {h2}x{w2} like {ex2}; "
                        f"height x width): give --size HxW to resize them all, e.g. --size {h1}x{w1}")
    return next(iter(sizes))


# ---- the statistics cache -----------------------------------------------------------------------

def _stats_files(root: Path) -> list[Path]:
    """The data folder first; a read-only one (a shared dataset) falls back to the user's cache."""
    user = Path(os.environ.get("PROBE_CACHE_DIR") or Path.home() / ".cache" / "probe")
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root / ".probe-cache" / STATS_FILE, user / f"folder-{tag}" / STATS_FILE]


def stats_file(root: Path) -> Path:
    """Where the statistics are kept: the data folder's cache file, else the user's that exists."""
    files = _stats_files(root)
    return next((p for p in files if p.is_file()), files[0])


def stats_key(root: Path, rel: list[str], shape: tuple[int, int, int]) -> str:
    h = hashlib.sha256(f"v{_STATS_VERSION} {shape} bilinear centre-aspect\n".encode())
    for r in rel:
        st = os.stat(root / r)
        h.update(f"{r}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def _read_stats(path: Path) -> dict:
    try:
        entries = read_json(path, "a statistics cache", MAX_STATS_BYTES).get("entries")
        return entries if isinstance(entries, dict) else {}
    except (OSError, ProbeError, AttributeError):
        return {}  # absent or damaged: computed again


def train_stats(root: Path, rel: list[str], images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Mean and std of the training images (N, C, H, W): from the cache, else computed and cached."""
    key = stats_key(root, rel, tuple(images.shape[1:]))
    for path in _stats_files(root):
        hit = _read_stats(path).get(key)
        if isinstance(hit, dict) and hit.get("images") == len(images):
            return list(hit["mean"]), list(hit["std"])
    mean, std = channel_stats(images)
    for path in _stats_files(root):
        entries = _read_stats(path)
        entries.pop(key, None)
        kept = dict(list(entries.items())[-(_STATS_KEPT - 1):])
        kept[key] = {"mean": mean, "std": std, "images": len(images), "shape": list(images.shape[1:])}
        try:
            atomic_write_json(path, {"format": _STATS_VERSION, "entries": kept})
            break
        except OSError:
            continue
    return mean, std


# ---- the loader -------------------------------------------------------------------------------

def _stack(results: list[tuple], channels: int) -> torch.Tensor:
    """Decoded (H, W, C) arrays → uint8 (N, channels, H, W); RGB of a grey set keeps one channel."""
    arr = np.stack([r[0][:, :, :channels] for r in results])  # (N, H, W, C)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)


def load_folder(spec: DatasetSpec | None = None, data_dir=None, *, seed: int = 0, splits=SPLITS,
                size=None) -> dict[str, ImageSet]:
    """The splits asked for, as ImageSets. spec None: the spec is made from the files (every
    split is decoded to decide size and channels; mean/std of train); a model's spec: its classes
    must be the folder's, and the images are brought to its size and channels."""
    root = resolve_data_dir("folder", data_dir)
    layout = scan(root)
    if spec is not None and tuple(layout.slugs) != tuple(spec.classes):
        raise DataError(f"{root}: its classes ({', '.join(layout.slugs)}) are not the model's "
                        f"({', '.join(spec.classes)}): give the --data-dir the model was trained on")
    files = split_files(layout, seed)
    wanted = tuple(splits) if spec is not None else SPLITS
    size = (spec.height, spec.width) if spec is not None else parse_size(size)
    items = [(s, rel, label) for s in wanted for rel, label in files[s]]
    results = decode_all(root, [rel for _, rel, _ in items], size, "L" if spec and spec.channels == 1 else "RGB")
    bad = [(rel, r[2]) for (_, rel, _), r in zip(items, results) if r[0] is None]
    check_unreadable(root, bad, len(items))
    kept = [(it, r) for it, r in zip(items, results) if r[0] is not None]
    h, w = size or check_one_size(root, [it[1] for it, _ in kept], [r[0] for _, r in kept])
    channels = spec.channels if spec is not None else 1 if all(r[1] for _, r in kept) else 3
    by_split = {s: [(it, r) for it, r in kept if it[0] == s] for s in wanted}
    images = {s: _stack([r for _, r in v], channels) if v else torch.zeros(0, channels, h, w, dtype=torch.uint8)
              for s, v in by_split.items()}
    if spec is None:
        mean, std = train_stats(root, [it[1] for it, _ in by_split["train"]], images["train"])
        spec = DatasetSpec(name="folder", classes=tuple(layout.slugs), display_names=tuple(layout.folders),
                           channels=channels, height=h, width=w, mean=tuple(mean), std=tuple(max(s, 1e-6) for s in std),
                           split_sizes={s: len(images[s]) for s in SPLITS})
    return {s: ImageSet(images[s], torch.tensor([it[2] for it, _ in by_split[s]], dtype=torch.int64), spec,
                        [it[1].split("/", 1)[1] for it, _ in by_split[s]]) for s in splits}
