"""The stamp digits (28×28 images of faint noise holding their class's own 6×6 stamp at two random
places, in MNIST's exact file format) and a resnet8 ×0.5 trained on them: 100% test accuracy and
confident enough for p ≥ 0.99 in every class. The attack and fooling tests need a model that has
learnt something; training it takes 7 s of every test run, so the trained folder is committed in
tests/data/ and the data regenerated (seeded) each run.

    python tests/stamp_model.py    # retrain and rewrite tests/data/stamp-resnet8 (after a change
                                   # to the model-folder format or the trainer)
"""
from __future__ import annotations

import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from fixtures import idx_bytes  # noqa: E402
from train_helpers import tiny_config  # noqa: E402

COMMITTED = Path(__file__).parent / "data" / "stamp-resnet8"


def stamp_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels): local patterns a tiny ResNet (global average pooling) learns in a few epochs."""
    stamps = np.random.default_rng(123).random((10, 6, 6)) > 0.5  # one fixed pattern per class
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    rng.shuffle(labels)
    images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
    for i, c in enumerate(labels):
        for _ in range(2):
            r, q = rng.integers(1, 21, 2)
            patch = images[i, r:r + 6, q:q + 6]
            patch[stamps[c]] = 255
    return images, labels


def write_stamp_mnist(folder: Path, n_train: int = 600, n_test: int = 60) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        images, labels = stamp_digits(n, seed)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2051), mtime=0))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels, 2049), mtime=0))
    return folder


def train_stamp_model(data: Path, model: Path) -> None:
    from probe.train.run import train
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the committed weights were made on one thread
    try:
        torch.manual_seed(0)
        train(tiny_config(epochs=20, batch_size=16, lr=0.2, width=0.5, augment=False), model, data_dir=data)
    finally:
        torch.set_num_threads(threads)


def stamp_model(base: Path) -> tuple[Path, Path]:
    """(model folder, data folder) under `base`: a copy of the committed model (tests may write
    beside it) and freshly written stamp digits."""
    model, data = base / "trained_models" / "tiny", base / "mnist"
    if not (model / "weights.safetensors").is_file():
        write_stamp_mnist(data)
        shutil.copytree(COMMITTED, model, dirs_exist_ok=True)
    return model, data


if __name__ == "__main__":
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        data, fresh = write_stamp_mnist(Path(tmp) / "mnist"), Path(tmp) / "tiny"
        train_stamp_model(data, fresh)
        shutil.rmtree(COMMITTED, ignore_errors=True)
        COMMITTED.mkdir(parents=True)
        for name in ("weights.safetensors", "meta.json"):
            shutil.copy2(fresh / name, COMMITTED / name)
    print(f"wrote {COMMITTED}")
