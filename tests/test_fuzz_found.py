"""Failures the fuzz suite (tests/fuzz/) found outside the data loaders and the report, each with
the test that failed before its fix (issue 18)."""
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import tiny_config, tiny_splits  # noqa: E402

from probe.errors import ModelFileError  # noqa: E402


@pytest.fixture(scope="module")
def resumable(tmp_path_factory):
    from probe.train.run import train
    out = tmp_path_factory.mktemp("run") / "tiny"
    torch.manual_seed(0)
    train(tiny_config(epochs=1), out, splits=tiny_splits(n_train=64))
    return out


def test_resume_state_whose_generator_bytes_are_damaged(resumable, tmp_path):
    """Bytes of 'rng.torch' damaged (its dtype and shape right): load_resume took it, and
    `probe train --resume` ended in torch.set_rng_state's RuntimeError (Invalid mt19937 state)."""
    import shutil

    from probe.train.checkpoint import RESUME, load_resume
    folder = Path(shutil.copytree(resumable, tmp_path / "tiny"))
    path = folder / RESUME
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    rng = tensors["rng.torch"].clone()
    rng[8:12] = 255  # the Mersenne Twister's position in its state: -1, out of range
    tensors["rng.torch"] = rng
    save_file(tensors, path, metadata=meta)
    with pytest.raises(ModelFileError, match=r"'rng.torch' is not a state of torch's generator"):
        load_resume(folder)
