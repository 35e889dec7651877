"""Models that probe did not train (issue 17): a tiny CNN of the user's own saved as TorchScript,
as torch.export and as a state dict with its factory; each loaded by `probe.load_model` and run
through the analyses' commands on MNIST-shaped files written by the tests; a report of one of them;
the files probe refuses (a pickled model, a factory that does not import, a state dict of another
network); and `--image` for `probe fool --from dataset` and `probe attack`."""
import hashlib
import json
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import probe
import probe.cli

FACTORY = "mynets.tiny:build"
NETS = textwrap.dedent('''
    import torch
    from torch import nn


    class TinyCNN(nn.Module):
        """1×28×28 → 10 logits; every ReLU its own module."""
        def __init__(self, width=4, classes=10):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                          nn.Conv2d(width, width, 3, padding=1, stride=2), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(width, classes)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))


    def build(width=4, classes=10):
        torch.manual_seed(0)
        return TinyCNN(width, classes)
''')


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """The user's package (mynets, on sys.path) and the network in each format, with mynet.json
    beside each file naming MNIST: {format: path}, and the network itself under "net"."""
    root = tmp_path_factory.mktemp("user")
    (root / "mynets").mkdir()
    (root / "mynets" / "__init__.py").write_text("")
    (root / "mynets" / "tiny.py").write_text(NETS)
    sys.path.insert(0, str(root))
    from mynets.tiny import build
    net = build().eval()
    x = torch.rand(3, 1, 28, 28)
    files = {"torchscript": root / "script.pt", "export": root / "exported.pt2", "factory": root / "weights.pt"}
    torch.jit.save(torch.jit.script(net), str(files["torchscript"]))
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}),
                      str(files["export"]))
    torch.save(net.state_dict(), files["factory"])
    for kind, path in files.items():
        info = {"dataset": "mnist"} | ({"factory": FACTORY, "cam_layer": "features.2"} if kind == "factory" else {})
        path.with_suffix(".json").write_text(json.dumps(info))
    yield {**files, "net": net, "root": root}
    sys.path.remove(str(root))


@pytest.fixture(autouse=True)
def _elsewhere(tmp_path, monkeypatch):
    """Every command runs in the test's own folder: reports/ (made before an error too) and
    data/ are never the repository's."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PROBE_DATA_DIR", raising=False)


def cli(capsys, *args) -> tuple[int, str, str]:
    """probe.cli.main as the console script runs it: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        probe.cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)


def digit_png(path: Path) -> Path:
    """A hand-drawn-like 1 on white paper, as a user would scan it."""
    a = np.full((60, 40), 250, np.uint8)
    a[8:52, 18:24] = 20
    Image.fromarray(a).save(path)
    return path


FORMATS = ["torchscript", "export", "factory"]


# ---- probe.load_model --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
def test_load_model_gives_the_network(kind, saved, one_thread):
    model, meta = probe.load_model(saved[kind])
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), saved["net"](x), atol=1e-5)
    assert meta["kind"] == kind and not model.training
    assert model.spec.name == "mnist" and list(model.spec.classes) == [str(k) for k in range(10)]


def test_the_api_does_not_pass_the_plain_gradient_off_as_guided_backprop(saved, one_thread):
    """A TorchScript model has no nn.ReLU to guide: "all" leaves Guided Backprop (and Grad-CAM)
    out, and naming it is a ConfigError saying why; so is a network with F.relu in forward."""
    model, _ = probe.load_model(saved["torchscript"])
    x = torch.rand(2, 1, 28, 28)
    result = probe.saliency(model, x, 1, methods="all")
    assert "guided" not in result.methods and "gradcam" not in result.methods and "vanilla" in result.methods
    assert set(result.skipped) == {"guided", "gradcam"}
    with pytest.raises(probe.ProbeError, match="Guided Backprop cannot run on this model: .*plain gradient"):
        probe.saliency(model, x, 1, methods="guided")

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.Linear(2 * 26 * 26, 10)

        def forward(self, x):
            return self.fc(torch.nn.functional.relu(self.conv(x)).flatten(1))
    with pytest.raises(probe.ProbeError, match="has none .*F.relu in forward"):
        probe.saliency(Functional(), x, 1, methods="guided")
    # "all" (in any spelling) is what the model can serve, the rest said with why
    for every in ("all", "All", ["all"], "vanilla, ALL"):
        r = probe.saliency(Functional(), x, 1, methods=every)
        assert r.methods == ["vanilla", "smoothgrad", "ig", "occlusion"], every
        assert set(r.skipped) == {"gradcam", "guided"} and "F.relu" in r.skipped["guided"]
        assert any(line.startswith("Left out: Grad-CAM") for line in r.summary())
    with_layer = probe.saliency(Functional(), x, 1, layer="conv")
    assert "gradcam" in with_layer.methods and list(with_layer.skipped) == ["guided"]


def test_load_model_takes_the_model_info_as_keys(saved, tmp_path, one_thread):
    """No JSON beside the file: the info given; a mean/std puts probe's Normalize before the network."""
    path = tmp_path / "bare.pt"
    path.write_bytes(saved["torchscript"].read_bytes())
    names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    model, meta = probe.load_model(path, info={"classes": names, "input": "1x28x28", "mean": [0.5], "std": [0.25]})
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), saved["net"]((x - 0.5) / 0.25), atol=1e-5)
    assert list(model.spec.classes) == names and meta["info"]["source"] == "options"
    with pytest.raises(probe.ProbeError, match="its classes and input are not known"):
        probe.load_model(path)


def test_an_export_with_a_fixed_batch_takes_any_number_of_images(saved, tmp_path, one_thread):
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(saved["net"], (torch.rand(2, 1, 28, 28),)), str(path))
    model, _ = probe.load_model(path, info={"dataset": "mnist"})
    x = torch.rand(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(model(x), saved["net"](x), atol=1e-5)


# ---- the analyses' commands ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", FORMATS)
def test_misclassified(kind, saved, mnist_dir, tmp_path, capsys, one_thread):
    code, out, err = cli(capsys, "misclassified", "--model", saved[kind], "--data-dir", mnist_dir,
                         "--split", "test", "--out", tmp_path)
    assert code == 0, err
    assert "test images misclassified" in out
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["model"]["weights_sha256"] == hashlib.sha256(saved[kind].read_bytes()).hexdigest()
    assert doc["data"]["dataset"] == "mnist" and doc["results"]["n"] == 50


@pytest.mark.parametrize("kind", FORMATS)
def test_saliency_leaves_out_what_cannot_be_hooked(kind, saved, mnist_dir, tmp_path, capsys, one_thread):
    code, out, err = cli(capsys, "saliency", "--model", saved[kind], "--data-dir", mnist_dir, "--split", "test",
                         "--class", "1", "--any", "--n", "2", "--method", "vanilla,gradcam,guided",
                         "--no-faithfulness", "--out", tmp_path)
    assert code == 0, err
    doc = json.loads((tmp_path / "results.json").read_text())["results"]
    if kind == "factory":  # the network's code: its layers can be hooked
        assert doc["methods"] == ["vanilla", "gradcam", "guided"] and doc["gradcam"]["layer"] == "net.features.2"
        assert not doc.get("skipped")
    else:
        assert doc["methods"] == ["vanilla"] and set(doc["skipped"]) == {"gradcam", "guided"}
        assert "Left out: Grad-CAM, as a" in out and "no layer that can be hooked" in out
    assert (tmp_path / "saliency.png").is_file()


@pytest.mark.parametrize("kind", FORMATS)
def test_attack(kind, saved, mnist_dir, tmp_path, capsys, one_thread):
    code, out, err = cli(capsys, "attack", "--model", saved[kind], "--data-dir", mnist_dir, "--eps", "0,0.1",
                         "--steps", "2", "--limit", "8", "--out", tmp_path)
    assert code == 0, err
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["results"]["n"] == 8 and doc["results"]["eps"] == [0.0, 0.1]
    assert doc["models"][0]["name"] == saved[kind].stem


def test_saliency_of_a_factory_model_without_cam_layer_says_how_to_get_it(saved, mnist_dir, tmp_path, capsys,
                                                                         one_thread):
    weights = tmp_path / "no-info.pt"  # no JSON beside it: no cam_layer
    weights.write_bytes(saved["factory"].read_bytes())
    code, out, err = cli(capsys, "saliency", "--model", weights, "--model-info", "dataset=mnist",
                         "--model-factory", FACTORY, "--data-dir", mnist_dir, "--split", "test", "--class", "1",
                         "--any", "--n", "1", "--method", "vanilla,gradcam", "--no-faithfulness", "--out", tmp_path)
    assert code == 0, err
    assert "no Grad-CAM layer is known" in out and "cam_layer" in out
    code, out, err = cli(capsys, "saliency", "--model", saved["torchscript"], "--data-dir", mnist_dir,
                         "--split", "test", "--class", "1", "--method", "gradcam", "--out", tmp_path)
    one_line_error(code, err, "gradcam cannot run on script", "no layer that can be hooked")


def test_report_of_a_model_without_history_or_dataset(saved, tmp_path, capsys, one_thread):
    """Only fooling from noise needs no data; the card says what is not known, the other sections why."""
    bare = tmp_path / "bare.pt"  # no JSON beside it: no dataset
    bare.write_bytes(saved["torchscript"].read_bytes())
    code, out, err = cli(capsys, "report", "--model", bare, "--model-info", "classes=10",
                         "--model-info", "input=1x28x28", "--format", "html", "--out", tmp_path / "report")
    assert code == 0, err
    page = (tmp_path / "report" / "report.html").read_text()
    assert "no training history" in page and "not trained by probe" in page
    assert "Not shown: no training history: probe did not train this model" in page
    assert page.count("Not shown: no dataset") == 4  # misclassified, saliency, fooled from data, robustness
    assert "Fooled from noise" in page and "TorchScript" in page


# ---- what is refused ----------------------------------------------------------------------------------


class Payload:
    """Unpickling this would create `marker`: proof that probe never unpickles a model file."""
    marker = ""

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_model_is_refused_unopened(saved, tmp_path, capsys):
    full = tmp_path / "full.pt"
    torch.save(saved["net"], full)
    code, out, err = cli(capsys, "misclassified", "--model", full)
    one_line_error(code, err, "a pickled model (torch.save(model))", "does not unpickle", "TorchScript",
                   "--model-factory")
    payload = Payload()
    payload.marker = str(tmp_path / "ran")
    evil = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(1), "x": payload}, evil)
    for args in (["--model", evil], ["--model", evil, "--model-factory", FACTORY]):
        code, out, err = cli(capsys, "misclassified", *args)
        one_line_error(code, err, "does not unpickle")
    assert not (tmp_path / "ran").exists()
    with pytest.raises(probe.ProbeError, match="pickled model"):
        probe.load_model(full)


def test_a_factory_that_does_not_import(saved, tmp_path, capsys):
    for factory, words in (("nosuchpackage.nets:build", "cannot import nosuchpackage.nets (ModuleNotFoundError"),
                           ("mynets.tiny:nosuch", "mynets.tiny has no function nosuch"),
                           ("mynets.tiny", "write module:function")):
        code, out, err = cli(capsys, "misclassified", "--model", saved["factory"], "--model-factory", factory)
        one_line_error(code, err, words)


def test_a_state_dict_of_another_network(saved, tmp_path, capsys):
    state = saved["net"].state_dict()
    renamed = {k.replace("features.", "body.").replace("fc.", "head."): v for k, v in state.items()}
    path = tmp_path / "other.pt"
    torch.save(renamed, path)
    code, out, err = cli(capsys, "misclassified", "--model", path, "--model-factory", FACTORY,
                         "--model-info", "dataset=mnist")
    one_line_error(code, err, "does not fit the network of mynets.tiny:build",
                   "missing keys features.0.weight, features.0.bias, features.2.weight (and 3 more)",
                   "unexpected keys body.0.weight, body.0.bias, body.2.weight (and 3 more)")
    code, out, err = cli(capsys, "misclassified", "--model", path, "--model-factory", FACTORY,
                         "--model-info", "dataset=mnist", "--model-info", 'factory_kwargs={"width": 8}')
    one_line_error(code, err, "missing keys")
    code, out, err = cli(capsys, "misclassified", "--model", saved["factory"], "--model-factory", FACTORY,
                         "--model-info", "dataset=mnist", "--model-info", 'factory_kwargs={"width": 8}')
    one_line_error(code, err, "shapes differ: features.0.weight (4, 1, 3, 3) in the file, (8, 1, 3, 3) in the network")


def test_what_the_model_info_must_say(saved, tmp_path, capsys):
    bare, weights = tmp_path / "bare.pt", tmp_path / "weights.pt"  # no JSON beside them
    bare.write_bytes(saved["torchscript"].read_bytes())
    weights.write_bytes(saved["factory"].read_bytes())
    cases = [
        (["--model", bare], "its classes and input are not known"),
        (["--model", saved["factory"].with_name("missing.pt")], "no such model folder"),
        (["--model", bare, "--model-info", "colours=3"], "unknown key 'colours'"),
        (["--model", bare, "--model-info", "classes=3", "--model-info", "input=1x28x28"],
         "gives (1, 10) for one image, not (1, 3) logits"),
        (["--model", bare, "--model-info", "classes=10", "--model-info", "input=3x28x28"],
         "does not take 3×28×28 images"),
        (["--model", bare, "--model-info", "classes=10", "--model-info", "input=1x28x28"],
         "no dataset, so no val split"),
        (["--model", bare, "--model-info", "dataset=cifar10"], "input"),
        (["--model", saved["torchscript"], "--model-factory", FACTORY], "holds its network: leave out --model-factory"),
        (["--model", weights, "--model-info", "dataset=mnist"], "needs the code of its network"),
        (["--model-info", "dataset=mnist"], "give it with --model mynet.pt"),
    ]
    for args, words in cases:
        code, out, err = cli(capsys, "misclassified", *args)
        one_line_error(code, err, words)


# ---- --image for fool and attack ------------------------------------------------------------------------


def test_fool_from_dataset_with_an_image(stamp_project, tmp_path, capsys, one_thread):
    png = digit_png(tmp_path / "mine.png")
    code, out, err = cli(capsys, "fool", "--from", "dataset", "--image", png, "--target", "3", "--steps", "5",
                         "--out", tmp_path / "fool")
    assert code == 0, err
    assert "labelled with the model's own prediction (no --label): mine.png" in out
    doc = json.loads((tmp_path / "fool" / "results.json").read_text())
    assert doc["data"]["source"] == "files" and doc["data"]["files"] == [str(png)]
    assert doc["results"]["count"] == 1 and (tmp_path / "fool" / "images").is_dir()
    for args, words in ((["--from", "noise", "--image", png], "--image: applies to --from dataset only"),
                        (["--from", "dataset", "--label", "3"], "--label: the class of your --image files")):
        code, out, err = cli(capsys, "fool", *args)
        one_line_error(code, err, words)


def test_attack_with_an_image_and_its_label(stamp_project, tmp_path, capsys, one_thread):
    png = digit_png(tmp_path / "mine.png")
    code, out, err = cli(capsys, "attack", "--image", png, "--eps", "0,0.1", "--steps", "3", "--out", tmp_path / "a")
    assert code == 0, err
    assert "1 file(s), labelled with the model's own prediction (no --label): mine.png" in out
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert doc["data"]["source"] == "files" and doc["results"]["n"] == 1
    assert doc["results"]["models"][0]["clean_accuracy"] == 1.0  # its own prediction is right by definition
    code, out, err = cli(capsys, "attack", "--image", png, "--label", "7", "--eps", "0,0.1", "--steps", "3",
                         "--out", tmp_path / "b")
    assert code == 0, err
    assert "1 file(s), labelled 7 (--label)" in out
    code, out, err = cli(capsys, "attack", "--image", png, "--label", "seven", "--out", tmp_path / "c")
    one_line_error(code, err, "unknown class 'seven'")
    # three files in chunks of two: the clean accuracy counted once, on all three
    more = [digit_png(tmp_path / f"mine{k}.png") for k in range(2)]
    code, out, err = cli(capsys, "attack", "--image", png, "--image", more[0], "--image", more[1],
                         "--batch-size", "2", "--eps", "0,0.1", "--steps", "3", "--out", tmp_path / "d")
    assert code == 0, err
    model = json.loads((tmp_path / "d" / "results.json").read_text())["results"]["models"][0]
    assert model["points"][0]["n"] == model["n_whole_split"] == 3
    assert model["clean_accuracy"] == model["clean_accuracy_whole_split"] == 1.0


def test_attack_an_image_on_a_model_without_dataset(saved, tmp_path, capsys, one_thread):
    png = digit_png(tmp_path / "mine.png")
    code, out, err = cli(capsys, "attack", "--model", saved["export"], "--model-info", str(tmp_path / "info.json"),
                         "--image", png, "--eps", "0,0.1", "--steps", "2", "--out", tmp_path / "a")
    one_line_error(code, err, "info.json: no such file")
    (tmp_path / "info.json").write_text(json.dumps({"classes": 10, "input": "1x28x28"}))
    code, out, err = cli(capsys, "attack", "--model", saved["export"], "--model-info", tmp_path / "info.json",
                         "--image", png, "--eps", "0,0.1", "--steps", "2", "--out", tmp_path / "a")
    assert code == 0, err
    assert "labelled with the model's own prediction" in out


def test_a_folder_dataset_named_in_the_model_info(tmp_path, capsys, one_thread):
    """`"dataset": "folder"`: the classes (in the folders' order; their slugs are compared) and the
    input must be given, and the folder's images are brought to that input."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for name in ("Circle", "Square"):
            (tmp_path / "shapes" / split / name).mkdir(parents=True)
            for i in range(6):
                Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(
                    tmp_path / "shapes" / split / name / f"{i}.png")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 2)).eval()
    torch.jit.save(torch.jit.script(net), str(tmp_path / "shapes.pt"))
    (tmp_path / "shapes.json").write_text(json.dumps({"dataset": "folder", "input": "3x8x8"}))
    code, out, err = cli(capsys, "misclassified", "--model", tmp_path / "shapes.pt", "--data-dir", tmp_path / "shapes")
    one_line_error(code, err, "a folder dataset's classes and size come from your files", "classes")
    (tmp_path / "shapes.json").write_text(json.dumps({"dataset": "folder", "input": "3x8x8",
                                                      "classes": ["Circle", "Square"]}))
    code, out, err = cli(capsys, "misclassified", "--model", tmp_path / "shapes.pt", "--data-dir",
                         tmp_path / "shapes", "--split", "test", "--out", tmp_path / "out")
    assert code == 0, err
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["data"]["dataset"] == "folder" and doc["results"]["n"] == 12
