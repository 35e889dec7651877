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


def test_predict_prints_an_image_name_that_is_not_utf8(tmp_path):
    """Where the locale makes stdout strict (LANG=en_US.UTF-8 on a desktop), printing the name
    of `probe predict --image img_<0xff>.png` was a UnicodeEncodeError and a traceback."""
    import os
    import subprocess

    from test_model_folder import write_tiny_model
    model = write_tiny_model(tmp_path / "tiny")
    image = os.path.join(os.fsencode(tmp_path), b"img_\xff.png")
    from PIL import Image
    Image.new("L", (28, 28), 30).save(os.fsdecode(image), "PNG")
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONUTF8="0", PYTHONIOENCODING="utf-8:strict")
    r = subprocess.run([sys.executable, str(root / "cli.py"), "predict", "--model", str(model),
                        "--image", os.fsdecode(image)], capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode(errors="replace")[-800:]
    assert b"img_\xff.png" in r.stdout  # the name's own bytes


@pytest.mark.parametrize("value", [7.12667995733019e+16, -0.5, 1.5])
def test_curves_of_a_history_whose_error_is_not_a_fraction(tmp_path, value):
    """A val_error of 7e16 in history.json went into the Wilson interval of the best epoch:
    ValueError (math domain error) and a traceback from `probe curves`."""
    import json

    from typer.testing import CliRunner

    from probe.cli import app
    from test_model_folder import write_tiny_model
    model = write_tiny_model(tmp_path / "tiny")
    history = [{"epoch": 1, "train_error": 0.5, "val_error": 0.4, "best": False},
               {"epoch": 2, "train_error": 0.3, "val_error": value, "best": True}]
    (model / "history.json").write_text(json.dumps(history))
    r = CliRunner().invoke(app, ["curves", str(model), "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert r.stderr.strip().count("\n") == 0 and "val_error is" in r.stderr and "not a fraction" in r.stderr
