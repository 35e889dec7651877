"""The model-folder reader: every fault of a meta.json or weights file is one ModelFileError naming
the file and the field; inference leaves the model as it found it; the committed model still
reproduces its published test error."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import probe
from probe.data.spec import MNIST
from probe.errors import ModelFileError
from probe.models.classifier import Classifier
from probe.models.folder import load_model, read_model_folder, save_meta, save_weights
from probe.models.inference import metrics_from_logits, predict_logits
from probe.models.resnet import ResNet, get_config
from probe.report.tables import models_text

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "trained_models" / "mnist-resnet20"


def write_tiny_model(folder: Path, seed: int = 0) -> Path:
    """A resnet8 ×0.25 model folder for MNIST's spec, as `probe train` writes it."""
    torch.manual_seed(seed)
    arch = get_config("resnet8", num_classes=10, in_channels=1, width=0.25)
    model = Classifier.from_spec(ResNet(arch), MNIST)
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder, model.state_dict())
    save_meta(folder, {"name": folder.name, "arch_name": "resnet8", "arch": arch.to_dict(),
                       "dataset": MNIST.to_dict(), "train": {"seed": 0}, "parameters": 1,
                       "metrics": {"val": {"error": 0.5}, "test": {"error": 0.5}}})
    return folder


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny_model(tmp_path / "tiny")


def edit_meta(folder: Path, change) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    change(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


# (what is broken, the edit, words the message must hold)
BROKEN_META = [
    ("dataset is a string", lambda m: m.update(dataset="mnist"), "'dataset'"),
    ("arch missing", lambda m: m.pop("arch"), "'arch'"),
    ("stages not numbers", lambda m: m["arch"].update(stages="abc"), "'arch'"),
    ("mean not numbers", lambda m: m["dataset"].update(mean=["a"]), "'dataset'"),
    ("metrics a list", lambda m: m.update(metrics=[1]), "'metrics'"),
    ("an error above 1", lambda m: m["metrics"]["test"].update(error=7), "metrics.test.error"),
    ("classes differ from outputs", lambda m: m["arch"].update(num_classes=3), "arch.num_classes"),
    ("channels differ from first conv", lambda m: m["arch"].update(in_channels=3), "arch.in_channels"),
    ("a newer format", lambda m: m.update(format_version=99), "newer probe"),
    ("format version a string", lambda m: m.update(format_version="1"), "format_version"),
    ("not an object", lambda m: (m.clear(), m.update(x=1)), "'dataset'"),
]


@pytest.mark.parametrize("what,change,words", BROKEN_META, ids=[b[0] for b in BROKEN_META])
def test_a_broken_meta_is_one_error_naming_the_file_and_field(tiny, what, change, words):
    edit_meta(tiny, change)
    with pytest.raises(ModelFileError) as e:
        load_model(tiny)
    assert "meta.json" in str(e.value) and words in str(e.value)
    assert "\n" not in str(e.value)


def test_null_metrics_are_read_as_none(tiny):
    edit_meta(tiny, lambda m: m.update(metrics=None))
    model, meta = load_model(tiny)
    assert meta["metrics"] is None and model.spec.name == "mnist"
    assert "—" in models_text(tiny.parent)


def test_nan_weights_are_refused(tiny):
    state = load_file(tiny / "weights.safetensors")
    name = next(k for k in state if k.endswith("fc.weight"))
    state[name][0, 0] = math.nan
    save_file(state, tiny / "weights.safetensors")
    with pytest.raises(ModelFileError, match=r"weights.safetensors.*fc.weight.*NaN"):
        load_model(tiny)


def test_weights_of_another_shape_are_refused(tiny, tmp_path):
    other = write_tiny_model(tmp_path / "other")
    edit_meta(other, lambda m: m["arch"].update(width=0.5))
    with pytest.raises(ModelFileError, match="do not fit the architecture"):
        load_model(other)


def test_a_file_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelFileError, match="not a model folder; give a folder"):
        read_model_folder(tmp_path / "f")
    with pytest.raises(ModelFileError, match="models list"):
        read_model_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFileError, match="meta.json: file not found"):
        read_model_folder(tmp_path / "empty")


def test_load_model_auto_device_and_the_spec(tiny):
    model, meta = probe.load_model(tiny, device="auto")
    assert next(model.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert not model.training and model.spec == MNIST
    folder = read_model_folder(tiny)
    assert folder.name == "tiny" and len(folder.weights_sha256()) == 64 and folder.history() == []


def test_models_list_shows_the_good_and_says_why_a_bad_one_cannot_be_read(tmp_path):
    write_tiny_model(tmp_path / "good")
    bad = write_tiny_model(tmp_path / "bad")
    edit_meta(bad, lambda m: m["arch"].update(stages="abc"))
    (tmp_path / "worse").mkdir()
    (tmp_path / "worse" / "meta.json").write_text("{not json")
    text = models_text(tmp_path)
    lines = text.splitlines()
    assert any(line.startswith("good ") and "50.00%" in line for line in lines)
    assert any(line.startswith("bad ") and "unreadable" in line for line in lines)
    assert "bad: field 'arch'" in text and "worse: corrupt JSON" in text


def test_predict_logits_uses_eval_mode_and_restores_the_mode(tiny):
    model, _ = load_model(tiny)
    model.train()
    images = torch.randint(0, 256, (7, 1, 28, 28), dtype=torch.uint8)
    # In train mode BatchNorm would use the batch's statistics: one image at a time would differ.
    whole = predict_logits(model, images, MNIST, batch_size=7)
    singles = predict_logits(model, images, MNIST, batch_size=1)
    assert model.training
    torch.testing.assert_close(whole, singles, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        model.eval()
        expected = model(images.float() / 255)
    torch.testing.assert_close(whole, expected, rtol=1e-4, atol=1e-5)


def test_an_empty_class_is_null_in_json(tmp_path):
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    m = metrics_from_logits(logits, torch.tensor([0, 0]), 3)
    assert m["per_class_accuracy"] == [0.5, None, None]
    from probe.io import atomic_write_json
    atomic_write_json(tmp_path / "m.json", {"a": math.nan, "b": [math.inf, 1.0]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"a": None, "b": [None, 1.0]}


def test_the_committed_model_reproduces_its_test_error(real_mnist_dir):
    from probe.analysis.predict import evaluate_model
    meta = json.loads((COMMITTED / "meta.json").read_text())
    result = evaluate_model(COMMITTED, split="test", data_dir=real_mnist_dir, device="cpu")
    assert result["n"] == 10_000
    assert round(result["error"] * 10_000) == round(meta["metrics"]["test"]["error"] * 10_000) == 34


def test_a_copied_model_folder_loads_the_same(tmp_path):
    copy = Path(shutil.copytree(COMMITTED, tmp_path / "copy"))
    a, _ = load_model(COMMITTED)
    b, _ = load_model(copy)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    assert a.cam_layer is a.net.stages[-1]
