"""A user's own pictures (a photo of a driver, a scanned digit) brought to a dataset's stored
form the way that dataset's images were made, so a model sees them as it saw its training data:

- MNIST: white ink on black, the digit fitted into a 20×20 box (aspect kept, anti-aliased) and
  placed in the 28×28 field by its centre of mass (LeCun et al.'s recipe). A dark-on-light scan
  is inverted, its paper level subtracted. A 28×28 image on a dark background is taken as is
  (an MNIST image saved as PNG comes back unchanged).
- Other datasets (CIFAR-10, SFDDD): the photo's orientation (EXIF) applied, the centre cropped
  to the dataset's aspect ratio, resized to its stored size (SFDDD: 64×48, JPEG draft decoding
  and bilinear resizing as its loader does); the network's crop (SFDDD's centre 32×32) is
  applied later by `probe.data.augment.eval_view`, as for the dataset's own images.

Only regular files are read, each at most MAX_BYTES and MAX_PIXELS, and decoded at most MAX_SIDE
pixels a side (a larger image is reduced as it is decoded: see open_image).
"""
from __future__ import annotations

import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from probe.data.files import read_regular
from probe.data.spec import MAX_SIDE, DatasetSpec
from probe.errors import DataError

MAX_BYTES = 100 * 2 ** 20
MAX_PIXELS = 100_000_000  # 10k × 10k: larger is a decompression bomb, not a photo
MNIST_BOX = 20  # the digit's box inside the 28×28 field


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")  # what open_image is for; a folder dataset takes the same


def expand_image_paths(paths: Sequence[str | Path]) -> tuple[str, ...]:
    """--image as given, each folder replaced by the image files in it (in the order of their
    names, numbers read as numbers; not its subfolders): `--image scans/` takes every picture in
    scans. A path that does not exist is a DataError."""
    out = []
    for given in paths:
        path = Path(given)
        if not path.exists():  # a typo is a mistake to say, not a file to skip (a corrupt one is skipped)
            raise DataError(f"--image {given}: no such file or folder")
        if not path.is_dir():
            out.append(str(given))
            continue
        files = sorted((f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()),
                       key=lambda f: _natural(f.name))
        if not files:
            raise DataError(f"--image {given}: a folder with no image files ({', '.join(IMAGE_SUFFIXES)}); "
                            "give the files, or the folder that holds them")
        out += [str(f) for f in files]
    return tuple(out)


def _natural(name: str) -> list:
    """A sort key that reads numbers as numbers and ignores case: scan_2 before scan_10, a.PNG beside a.png."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.lower()) for part in re.split(r"(\d+)", name)]


@dataclass
class UserImages:
    """images: (N, C, H, W) uint8 at the dataset's stored size; notes: what was done to each;
    skipped: the files that could not be read, each with why (the others are analysed)."""
    images: torch.Tensor
    paths: list[Path]
    notes: list[str]
    spec: DatasetSpec
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.paths]


def open_image(path: Path, draft: tuple[int, int] | None, *, native: bool = False) -> tuple[Image.Image, tuple[int, int]]:
    """The decoded image (upright, transparency on white) and its size in the file.

    draft: the size the caller brings it down to, at most (JPEG: libjpeg decodes at 1/2..1/8
    scale down to it, the SFDDD loader's way). Whatever the format, an image of more than
    MAX_SIDE pixels a side is reduced by a whole factor as soon as it is decoded, to at most
    MAX_SIDE (no dataset image is larger): a 10,000×10,000 PNG costs its one decoded copy, not
    the ten a full-size pipeline made (2.6 GB). native: the caller keeps the decoded size (a
    folder dataset without --size), so such an image is refused instead."""
    data = read_regular(path, MAX_BYTES, "image")
    try:
        with warnings.catch_warnings():  # MAX_PIXELS below is the bound, said in a DataError
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        size = img.size
        if size[0] * size[1] > MAX_PIXELS:
            raise DataError(f"{path}: {size[0]}×{size[1]} pixels, more than {MAX_PIXELS:,}; scale it down first")
        if native and max(size) > MAX_SIDE:
            raise DataError(f"{path}: {size[0]}×{size[1]} pixels, more than {MAX_SIDE} a side; "
                            "give --size HxW to bring the images to one size")
        if img.format == "JPEG" and (draft is not None or max(size) > MAX_SIDE):
            img.draft(img.mode, draft or _within(size, MAX_SIDE))  # decoded at 1/2..1/8 scale
        img.load()
        if max(img.size) > MAX_SIDE:
            img = _reduced(img, math.ceil(max(img.size) / MAX_SIDE))
        img = ImageOps.exif_transpose(img)  # a phone's portrait photo stands upright
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")  # transparent = paper: composite on white
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            img = Image.alpha_composite(white, rgba)
        return img, size
    except Image.DecompressionBombError:  # Pillow's own bound (2 × MAX_IMAGE_PIXELS), met first
        raise DataError(f"{path}: more than {MAX_PIXELS:,} pixels; scale it down first") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        why = "not a format Pillow knows" if isinstance(e, UnidentifiedImageError) else str(e)
        raise DataError(f"{path}: not an image that can be read (PNG, JPEG or BMP expected): {why}") from None


def _within(size: tuple[int, int], side: int) -> tuple[int, int]:
    """size scaled down to at most `side` pixels on its longer side."""
    scale = side / max(size)
    return max(1, int(size[0] * scale)), max(1, int(size[1] * scale))


def _reduced(img: Image.Image, factor: int) -> Image.Image:
    """img shrunk by a whole factor (each pixel the mean of a factor × factor box). Modes that
    Image.reduce does not take (palette, 1-bit, 16-bit grey) are converted first."""
    if img.mode not in ("L", "LA", "RGB", "RGBA", "I", "F", "CMYK", "YCbCr", "PA"):
        img = img.convert("RGBA" if "transparency" in img.info else "I" if img.mode.startswith("I;") else
                          "L" if img.mode == "1" else "RGB")
    return img.reduce(factor)


def centre_aspect(img: Image.Image, width: int, height: int) -> Image.Image:
    """The largest centred crop of img with the aspect ratio width:height."""
    w, h = img.size
    if w * height > h * width:  # too wide
        new_w = max(1, round(h * width / height))
        left = (w - new_w) // 2
        return img.crop((left, 0, left + new_w, h))
    new_h = max(1, round(w * height / width))
    top = (h - new_h) // 2
    return img.crop((0, top, w, top + new_h))


def _border(a: np.ndarray) -> np.ndarray:
    k = max(1, min(a.shape) // 20)
    return np.concatenate([a[:k].ravel(), a[-k:].ravel(), a[:, :k].ravel(), a[:, -k:].ravel()])


def mnist_like(img: Image.Image, side: int = 28, box: int = MNIST_BOX, *,
               size: tuple[int, int] | None = None) -> tuple[np.ndarray, str]:
    """A picture of a digit → uint8 (side, side) as MNIST made its images, and a note."""
    w0, h0 = size or img.size
    a = np.asarray(img.convert("L"), dtype=np.float32)
    notes = []
    if a.shape == (side, side) and np.median(_border(a)) < 128:
        return a.astype(np.uint8), "as is (already 28×28, light on dark)"
    if np.median(_border(a)) >= 128:  # dark ink on light paper: MNIST's ink is white
        a = 255 - a
        notes.append("inverted")
    a = np.clip(a - np.median(_border(a)), 0, None)  # the paper's level becomes black
    if a.max() <= 0:
        return np.zeros((side, side), np.uint8), ", ".join(notes + ["blank"])
    a = a * (255 / a.max())
    rows, cols = np.nonzero(a > 0.1 * 255)
    a = a[rows.min():rows.max() + 1, cols.min():cols.max() + 1]  # the ink's bounding box
    h, w = a.shape
    scale = box / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    digit = np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((nw, nh), Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 255)
    field = np.zeros((side, side), np.float32)
    top, left = (side - nh) // 2, (side - nw) // 2
    field[top:top + nh, left:left + nw] = digit
    # Centre of mass to the centre of the field, by a whole-pixel shift that keeps the digit inside.
    yy, xx = np.mgrid[0:side, 0:side]
    mass = field.sum()
    dy = int(np.clip(round((side - 1) / 2 - (yy * field).sum() / mass), -top, side - nh - top))
    dx = int(np.clip(round((side - 1) / 2 - (xx * field).sum() / mass), -left, side - nw - left))
    field = np.roll(field, (dy, dx), axis=(0, 1))
    notes.append(f"digit fitted to {box}×{box}, centred by mass (from {w0}×{h0})")
    return np.clip(np.rint(field), 0, 255).astype(np.uint8), ", ".join(notes)


def load_user_images(paths: Sequence[str | Path], spec: DatasetSpec) -> UserImages:
    """The files as the dataset's stored images: uint8 (N, C, spec.height, spec.width). A file
    that cannot be read is skipped (said in `skipped`) where others can: one corrupt scan does
    not cost the batch; where none can, the first one's DataError."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise DataError("no image files given")
    out, notes, read, skipped = [], [], [], []
    for path in paths:
        try:
            arr, note = _stored(path, spec)
        except DataError as e:
            if len(paths) == 1:
                raise
            skipped.append((path, str(e)))
            continue
        out.append(arr)
        notes.append(note)
        read.append(path)
    if not out:
        raise DataError(f"none of the {len(paths)} image files could be read: {skipped[0][1]}")
    images = torch.from_numpy(np.stack(out)).contiguous()
    return UserImages(images, read, notes, spec, skipped)


def _stored(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, str]:
    """One file as the dataset's stored image (C, H, W) uint8, and a note of what was done."""
    # MNIST: no draft decoding (a digit may be a small part of a large scan)
    draft = None if spec.name == "mnist" else (spec.width * 2, spec.height * 2)
    img, size = open_image(path, draft)
    if spec.name == "mnist" and spec.channels == 1:
        arr, note = mnist_like(img, spec.height, size=size)
        return arr[None], note
    img = centre_aspect(img, spec.width, spec.height)
    img = img.convert("L" if spec.channels == 1 else "RGB")
    if img.size != (spec.width, spec.height):
        img = img.resize((spec.width, spec.height), Image.Resampling.BILINEAR)
    arr = np.asarray(img, dtype=np.uint8)
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)  # (C, H, W)
    if arr.shape[0] != spec.channels:
        raise DataError(f"{path}: {arr.shape[0]} channels, the model takes {spec.channels}")
    return arr, ("as is" if size == (spec.width, spec.height) else
                 f"{size[0]}×{size[1]} → centre {spec.width}:{spec.height} crop → {spec.width}×{spec.height}")
