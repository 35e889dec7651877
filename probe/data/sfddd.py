"""State Farm Distracted Driver Detection, in Kaggle's layout:

    <data_dir>/driver_imgs_list.csv        subject,classname,img   (p002,c0,img_44733.jpg)
    <data_dir>/imgs/train/c0..c9/*.jpg     22,424 labelled 640×480 JPEGs of 26 drivers
    <data_dir>/imgs/test/*.jpg             79,726 unlabelled ones (Kaggle's test set)

data_dir may also be the imgs/ folder itself (the CSV is then looked for next to it).
Every image is decoded once (JPEG draft mode: the decoder itself scales by 1/2..1/8), resized to
64×48 and the uint8 arrays cached in <data_dir>/.probe-cache/, keyed by every file's path, size
and mtime, so an added, removed or changed file means a new cache.

A file the CSV lists but the disk lacks is an error (the unzip is incomplete, and a silent
hole would change the split); a JPEG the CSV does not list has no driver, so it cannot be split
by driver: it is left out with a DataWarning. Every class must have images (a model trained
without c3 never predicts it). Only regular files are read: a FIFO named img_1.jpg is refused by
name, never waited on; Ctrl-C during decoding cancels the queued work and ends at once.
"""
from __future__ import annotations

import csv
import hashlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from probe.data.files import DataWarning, check_regular, one_line, open_regular
from probe.data.imageset import ImageSet
from probe.data.paths import resolve_data_dir
from probe.data.spec import SFDDD
from probe.errors import DataError
from probe.io import atomic_writer
from probe.progress import progress

CSV_NAME = "driver_imgs_list.csv"
CSV_HEADER = ["subject", "classname", "img"]
KAGGLE = "state-farm-distracted-driver-detection"
_FIX = (f"download it again (`kaggle competitions download -c {KAGGLE}`) and unzip it so that the "
        f"folder holds imgs/train/c0..c9 and {CSV_NAME}")
_SIZE = (SFDDD.width, SFDDD.height)  # (W, H) = (64, 48), PIL's order
_CACHE_VERSION = "1"  # bump when decoding changes, so old caches are not reused
_JPEG = (".jpg", ".jpeg")


@dataclass
class Layout:
    root: Path  # the folder with imgs/ (or imgs/ itself); caches live here
    train: Path  # imgs/train
    test: Path  # imgs/test (may not exist)
    csv: Path


def find_layout(data_dir: str | Path | None = None) -> Layout:
    folder = resolve_data_dir("sfddd", data_dir)
    for imgs in (folder / "imgs", folder):
        if (imgs / "train").is_dir():
            csv_path = next((p for p in (folder / CSV_NAME, imgs.parent / CSV_NAME) if p.exists()), None)
            if csv_path is None:
                raise DataError(f"{CSV_NAME} not found in {folder} or next to {imgs}: it lists each "
                                f"image's driver; {_FIX}")
            check_regular(csv_path)
            return Layout(folder, imgs / "train", imgs / "test", csv_path)
    raise DataError(f"no SFDDD in {folder}: expected imgs/train/c0..c9 there; {_FIX} "
                    "(or pass --data-dir / set PROBE_DATA_DIR)")


def read_driver_list(path: Path) -> dict[str, tuple[str, int]]:
    """driver_imgs_list.csv → {"c2/img_1.jpg": ("p002", 2)}: relative path → (driver, class index)."""
    out: dict[str, tuple[str, int]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = csv.reader(f)
            header = [h.strip() for h in next(rows, [])]
            if header != CSV_HEADER:
                raise DataError(f"{path}: header {one_line(','.join(header), 120) or '(empty)'}, expected "
                                f"{','.join(CSV_HEADER)}; {_FIX}")
            for line, row in enumerate(rows, start=2):
                if not row:
                    continue
                if len(row) != 3:
                    raise DataError(f"{path}, line {line}: {len(row)} fields, expected 3 ({','.join(CSV_HEADER)})")
                driver, code, img = (x.strip() for x in row)
                if code not in SFDDD.codes:
                    raise DataError(f"{path}, line {line}: class {code!r} is not one of c0..c9; {_FIX}")
                key = f"{code}/{img}"
                if key in out:
                    raise DataError(f"{path}, line {line}: {one_line(key, 120)} listed twice; {_FIX}")
                out[key] = (driver, SFDDD.codes.index(code))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot be read ({one_line(e)}); {_FIX}") from None
    if not out:
        raise DataError(f"{path}: lists no images; {_FIX}")
    return out


def shown(name: str, limit: int = 120) -> str:
    """A file name as one line of a message: bytes that are not UTF-8 (which Python keeps as
    lone surrogates) as \\xff, a line break as \\n."""
    return one_line(name, limit)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _decodable(folder: Path, names: list[str]) -> list[str]:
    """names without those that are not UTF-8: no driver list can name them, no CSV or report can
    show them. They are left out with a DataWarning that lists them."""
    bad = [n for n in names if not _utf8(n)]
    if bad:
        listing = ", ".join(shown(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        warnings.warn(f"{len(bad):,} JPEGs in {shown(str(folder), 1000)} have names that are not UTF-8 and "
                      f"are left out ({listing}); rename them to load them", DataWarning, stacklevel=3)
    return [n for n in names if _utf8(n)]


def scan_train(train: Path) -> list[str]:
    """Relative paths "c0/img_1.jpg" of the JPEGs in imgs/train, sorted; unknown class folders are errors."""
    found = []
    for entry in sorted(train.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            continue  # a stray file (a zip, a README) beside the class folders is not an image of a class
        if entry.name not in SFDDD.codes:
            raise DataError(f"{shown(str(entry), 1000)}: unknown class folder '{shown(entry.name)}'; SFDDD's "
                            "are c0..c9. Move it out of imgs/train")
        names = _decodable(entry, [p.name for p in entry.iterdir() if p.suffix.lower() in _JPEG])
        found += [f"{entry.name}/{n}" for n in names]
    return sorted(found)


# ---- decoding and the cache -------------------------------------------------------------------

def decode_jpeg(path: Path) -> np.ndarray:
    """One JPEG → uint8 (3, 48, 64). draft() lets libjpeg decode at 1/2..1/8 scale (at least 2× the
    target, so the resize still averages), which is most of the speed: 640×480 is decoded as 160×120."""
    try:
        with open_regular(path) as f, Image.open(f) as img:
            img.draft("RGB", (_SIZE[0] * 2, _SIZE[1] * 2))
            img = img.convert("RGB").resize(_SIZE, Image.Resampling.BILINEAR)
            return np.asarray(img).transpose(2, 0, 1)  # (H, W, 3) → (3, H, W)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: not a readable JPEG ({one_line(e)}); delete it or {_FIX}") from None


def _cache_key(base: Path, rel: list[str]) -> str:
    h = hashlib.sha256(f"v{_CACHE_VERSION} {_SIZE} draft2x bilinear\n".encode())
    for r in rel:  # rel is sorted, so the key does not depend on the order of directory listings
        st = check_regular(base / r)  # before any decoding: a FIFO would block a worker forever
        h.update(os.fsencode(r) + f"\t{st.st_size}\t{st.st_mtime_ns}\n".encode())  # any bytes a name has
    return h.hexdigest()[:20]


def _cache_dirs(root: Path) -> list[Path]:
    # The data folder first; a read-only one (a shared dataset) falls back to the user's cache.
    user = Path(os.environ.get("PROBE_CACHE_DIR") or Path.home() / ".cache" / "probe")
    tag = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root / ".probe-cache", user / f"sfddd-{tag}"]


def load_images(root: Path, base: Path, rel: list[str], part: str, workers: int | None = None) -> np.ndarray:
    """The images base/rel[i], resized, as uint8 (N, 3, 48, 64): from the cache, else decoded and cached."""
    key = _cache_key(base, rel)
    name = f"sfddd-{_SIZE[0]}x{_SIZE[1]}-{part}-{key}.npy"
    shape = (len(rel), 3, _SIZE[1], _SIZE[0])
    for folder in _cache_dirs(root):
        path = folder / name
        if path.is_file():
            try:
                arr = np.load(path, allow_pickle=False)
                if arr.shape == shape and arr.dtype == np.uint8:
                    return arr
            except (OSError, ValueError):
                pass  # a damaged cache is rebuilt below
    out = np.empty(shape, dtype=np.uint8)  # (N, 3, 48, 64)
    # Threads: Pillow releases the GIL while it decodes and resizes, and threads share `out`.
    workers = workers or min(8, os.cpu_count() or 1)
    pool = ThreadPoolExecutor(workers)
    try:
        with progress(f"SFDDD {part}: decoding {len(rel):,} JPEGs once") as bar:
            task = bar.add_task("", total=len(rel))
            for i, img in enumerate(pool.map(decode_jpeg, (base / r for r in rel))):
                out[i] = img
                bar.advance(task)
    except BaseException:
        # Ctrl-C or a bad file: drop the queued decodes and go now (a `with` block would wait
        # for every one of them, so the first Ctrl-C seemed to do nothing).
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    _write_cache(root, name, part, out)
    return out


def _write_cache(root: Path, name: str, part: str, arr: np.ndarray) -> None:
    for folder in _cache_dirs(root):
        try:
            with atomic_writer(folder / name) as f:
                np.save(f, arr, allow_pickle=False)
        except OSError:
            continue
        for old in folder.glob(f"sfddd-{_SIZE[0]}x{_SIZE[1]}-{part}-*.npy"):  # stale keys
            if old.name != name:
                old.unlink(missing_ok=True)
        return
    warnings.warn(f"could not write the SFDDD cache in {root} or the user cache; "
                  "images will be decoded again next time", DataWarning, stacklevel=3)


# ---- the public loaders -----------------------------------------------------------------------

def load_labelled(data_dir: str | Path | None = None) -> tuple[ImageSet, np.ndarray]:
    """The labelled images (imgs/train) and each one's driver: (ImageSet, drivers (N,) str array).

    Ordered by relative path (c0/..., c1/...); names are Kaggle's file names (img_44733.jpg)."""
    lay = find_layout(data_dir)
    listed = read_driver_list(lay.csv)
    on_disk = scan_train(lay.train)
    disk = set(on_disk)
    missing = [r for r in listed if r not in disk]
    if missing:
        raise DataError(f"{len(missing):,} images listed in {lay.csv} are not in {lay.train} "
                        f"(first: {one_line(missing[0], 120)}): the unzip is incomplete; {_FIX}")
    extra = [r for r in on_disk if r not in listed]
    if extra:
        warnings.warn(f"{len(extra):,} JPEGs in {lay.train} are not in {lay.csv} (first: {one_line(extra[0], 120)}): "
                      "they have no driver and are left out", DataWarning, stacklevel=2)
        on_disk = [r for r in on_disk if r in listed]
    labels = torch.tensor([listed[r][1] for r in on_disk], dtype=torch.int64)
    absent = [SFDDD.codes[c] for c in range(SFDDD.num_classes) if not (labels == c).any()]
    if absent:  # before decoding anything
        names = ", ".join(f"{c} ({SFDDD.classes[SFDDD.codes.index(c)]})" for c in absent)
        raise DataError(f"{lay.train} with {lay.csv}: no images of {len(absent)} class(es): {names}. "
                        f"A model trained without a class never predicts it; {_FIX}")
    images = load_images(lay.root, lay.train, on_disk, "train")
    drivers = np.array([listed[r][0] for r in on_disk])
    names = [r.split("/", 1)[1] for r in on_disk]
    return ImageSet(torch.from_numpy(images), labels, SFDDD, names), drivers


def load_kaggle_test(data_dir: str | Path | None = None) -> ImageSet:
    """Kaggle's unlabelled imgs/test/*.jpg: labels -1, names = file names, sorted."""
    lay = find_layout(data_dir)
    if not lay.test.is_dir():
        raise DataError(f"{lay.test} does not exist: the Kaggle test images come in the same download; {_FIX}")
    rel = sorted(_decodable(lay.test, [p.name for p in lay.test.iterdir() if p.suffix.lower() in _JPEG]))
    if not rel:
        raise DataError(f"{lay.test} holds no JPEGs; {_FIX}")
    images = load_images(lay.root, lay.test, rel, "test")
    return ImageSet(torch.from_numpy(images), torch.full((len(rel),), -1, dtype=torch.int64), SFDDD, rel)
