"""`probe misclassified`: the selection and its order against a brute-force loop, the second
choice, unlabelled images, --max; the confusion matrix and per-class Wilson intervals by hand;
batch-size invariance; the caller's model left alone; the grid PDF's images are the wrong images,
pixel for pixel; the command on a tiny model, and each bad input as one line and exit code 2."""
import json
import math
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from pypdf import PdfReader
from torch import nn

import probe.cli
from probe.methods.confusion import confusion_matrix, wilson_interval
from probe.analysis.misclassified import misclassified
from probe.data.mnist import load_mnist
from probe.data.spec import CIFAR10, MNIST, SFDDD
from probe.errors import ConfigError
from probe.analysis.misclassified import Settings
from probe.figures.failures import confusion_figure, grid_pages, misclassified_pages
from probe.figures.style import save_figure
from probe.models.folder import load_model_folder

sys.path.insert(0, str(Path(__file__).parent))
from test_model_folder import write_tiny_model  # noqa: E402


# ---- tiny models and data ---------------------------------------------------------------------
class Linear(nn.Module):
    """A linear classifier of 28×28 images, computed in float64: outputs that differ per image
    enough to give a varied list of mistakes, and probabilities without float32 near-ties."""

    def __init__(self, seed: int = 0, scale: float = 0.05):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.weight = nn.Parameter(torch.randn(10, 784, generator=g, dtype=torch.float64) * scale)
        self.bias = nn.Parameter(torch.randn(10, generator=g, dtype=torch.float64))

    def forward(self, x):
        return x.flatten(1).double() @ self.weight.T + self.bias  # (N, 10)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models, one image at a time: thread hand-offs would cost more than the work
    (on a busy 2-core machine, 10× more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def fixture_test(mnist_dir):
    data = load_mnist(mnist_dir)["test"]  # 50 images, labels 0..9 in turn
    return data.images, data.labels


@pytest.fixture
def tiny(tmp_path) -> Path:
    return write_tiny_model(tmp_path / "tiny")


def brute_force(model, images, labels):
    """One image at a time, in plain Python: (index, predicted, p, second, p_second) of every
    labelled image whose top class is not its label, most confident first (image order among equals)."""
    rows = []
    model.eval()
    with torch.no_grad():
        for i in range(len(images)):
            p = model(images[i:i + 1].float() / 255).double().softmax(1)[0].tolist()
            ranked = sorted(range(len(p)), key=lambda k: (-p[k], k))
            y = int(labels[i])
            if y >= 0 and ranked[0] != y:
                rows.append((i, ranked[0], p[ranked[0]], ranked[1], p[ranked[1]]))
    rows.sort(key=lambda r: (-r[2], r[0]))
    return rows


def column(result, key: str) -> list:
    """One field of every wrong image's record; class names (here "0".."9") as numbers."""
    values = [r[key] for r in result.misclassified]
    return [int(v) for v in values] if key in ("true", "predicted", "second") else values


def check_against_brute_force(model, images, labels, result):
    expected = brute_force(model, images, labels)
    assert len(expected) > 5, "the test needs a model that makes mistakes"
    assert column(result, "index") == [r[0] for r in expected]
    assert column(result, "predicted") == [r[1] for r in expected]
    assert column(result, "second") == [r[3] for r in expected]
    assert column(result, "p_predicted") == pytest.approx([r[2] for r in expected], abs=1e-5)
    assert column(result, "p_second") == pytest.approx([r[4] for r in expected], abs=1e-5)
    assert column(result, "true") == [int(labels[r[0]]) for r in expected]
    assert result.wrong == len(expected)


def test_the_selection_and_order_equal_a_brute_force_loop(fixture_test):
    images, labels = fixture_test
    model = Linear()
    check_against_brute_force(model, images, labels, misclassified(model, images, labels, batch_size=16))


def test_the_tiny_resnet_on_its_own_split_equals_a_brute_force_loop(tiny, mnist_dir):
    model, folder = load_model_folder(tiny)
    data = folder.load_split("test", mnist_dir)
    result = misclassified(model, data.images, data.labels, batch_size=7)
    check_against_brute_force(model, data.images, data.labels, result)


def test_second_choice_is_the_second_largest_probability_and_nothing_is_listed_twice(fixture_test):
    images, labels = fixture_test
    result = misclassified(Linear(seed=1), images, labels)
    index = column(result, "index")
    assert len(set(index)) == len(index) == result.shown
    for r in result.misclassified:
        probs = result.probs[r["index"]]
        top2 = probs.topk(2)
        assert int(r["predicted"]) == int(top2.indices[0]) != int(r["true"])
        assert int(r["second"]) == int(top2.indices[1]) != int(r["predicted"])
        assert r["p_second"] == pytest.approx(float(top2.values[1]), abs=1e-6)
        assert r["p_second"] <= r["p_predicted"]
        assert r["p_true"] == pytest.approx(float(probs[int(r["true"])]), abs=1e-6)
    p = column(result, "p_predicted")
    assert p == sorted(p, reverse=True)  # most confident first


def test_unlabelled_images_are_never_counted(fixture_test):
    images, labels = fixture_test
    model = Linear()
    full = misclassified(model, images, labels)
    unlabelled = labels.clone()
    wrong = column(full, "index")
    hidden = wrong[:3] + [i for i in range(len(labels)) if i not in wrong][:2]
    unlabelled[hidden] = -1
    result = misclassified(model, images, unlabelled)
    assert not set(hidden) & set(column(result, "index"))
    assert column(result, "index") == wrong[3:]
    assert result.wrong == full.wrong - 3 and result.n == len(labels) - len(hidden)
    assert int(torch.tensor(result.confusion_matrix).sum()) == len(labels) - len(hidden)
    check_against_brute_force(model, images, unlabelled, result)


def test_max_keeps_the_most_confident_mistakes(fixture_test):
    images, labels = fixture_test
    model = Linear()
    full = misclassified(model, images, labels)
    top = misclassified(model, images, labels, max_images=4)
    assert top.shown == 4 and top.wrong == full.wrong
    assert top.misclassified == full.misclassified[:4]
    assert misclassified(model, images, labels, max_images=10_000).shown == full.wrong
    for bad in (0, -1):
        with pytest.raises(ConfigError, match="max_images"):
            misclassified(model, images, labels, max_images=bad)
        with pytest.raises(ConfigError, match="--max"):
            Settings(max_images=bad)


def test_results_do_not_depend_on_the_batch_size(tiny, mnist_dir):
    model, folder = load_model_folder(tiny)
    data = folder.load_split("test", mnist_dir)
    runs = [misclassified(model, data.images, data.labels, batch_size=b) for b in (1, 7, 500)]
    for r in runs[1:]:
        assert column(r, "index") == column(runs[0], "index")
        assert column(r, "second") == column(runs[0], "second")
        torch.testing.assert_close(r.probs, runs[0].probs, atol=1e-6, rtol=0)


def test_the_callers_model_is_left_as_it_was(tiny, mnist_dir):
    model, folder = load_model_folder(tiny)
    data = folder.load_split("test", mnist_dir)
    model.train()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    params[0].requires_grad_(False)
    grads = [p.grad for p in params]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    misclassified(model, data.images, data.labels)
    assert model.training and all(m.training for m in model.modules())
    assert all(p.grad is g for p, g in zip(params, grads))
    assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
    # Eval mode inside: BatchNorm's running statistics are not updated by the analysis.
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


# ---- the confusion matrix and per-class accuracy ------------------------------------------------
def test_confusion_matrix_sums_diagonal_and_normalized_rows(fixture_test):
    images, labels = fixture_test
    result = misclassified(Linear(), images, labels)
    cm = confusion_matrix(labels, result.probs.argmax(1), 10)
    assert cm.matrix.tolist() == result.confusion_matrix
    assert int(cm.matrix.sum()) == len(labels)
    assert int(cm.matrix.trace()) == len(labels) - result.wrong
    assert cm.support == np.bincount(labels.numpy(), minlength=10).tolist()
    # Every wrong image is counted in its (true, predicted) cell.
    off = torch.zeros(10, 10, dtype=torch.long)
    for y, k in zip(column(result, "true"), column(result, "predicted")):
        off[y, k] += 1
    diag_free = cm.matrix.clone().fill_diagonal_(0)
    assert torch.equal(diag_free, off)
    torch.testing.assert_close(cm.row_normalized.sum(1), torch.ones(10, dtype=torch.float64))
    assert [sum(row) for row in result.confusion_matrix_row_normalized] == pytest.approx([1.0] * 10)


@pytest.mark.parametrize("normalized", [False, True])
def test_the_confusion_figure_colours_the_mistakes_on_their_own_scale(normalized):
    """The diagonal (~99%) would make every mistake the same pale colour: it is drawn as numbers on
    grey, and the mistakes are coloured from 0 to the largest of them; cells with no image, and
    the row of a class with none, stay white."""
    import matplotlib.pyplot as plt
    matrix = np.array([[980, 0, 2], [5, 990, 1], [0, 0, 0]])
    fig = confusion_figure(matrix, ["a", "b", "c"], normalized=normalized)
    ax = fig.axes[0]
    mesh = ax.collections[0]
    values = np.ma.asarray(mesh.get_array()).reshape(3, 3)
    coloured = ~np.ma.getmaskarray(values)
    assert coloured.tolist() == [[False, False, True], [True, False, True], [False, False, False]]
    largest = 5 / 996 * 100 if normalized else 5
    assert mesh.norm.vmin == 0 and mesh.norm.vmax == pytest.approx(largest)
    smallest = mesh.cmap(mesh.norm(values[1, 2]))  # one image: visibly coloured, not white
    assert sum(smallest[:3]) < 2.4 and mesh.cmap(mesh.norm(largest))[:3] != smallest[:3]
    grey = [p for p in ax.patches if p.get_facecolor()[:3] == pytest.approx((0.88,) * 3)]
    assert sorted((p.get_x(), p.get_y()) for p in grey) == [(0, 0), (1, 1), (2, 2)]
    texts = {(t.get_position()): t.get_text() for t in ax.texts}
    assert texts[(0.5, 0.5)] == ("99.8" if normalized else "980") and texts[(2.5, 2.5)] == "—"
    assert texts[(2.5, 1.5)] == ("0.1" if normalized else "1")
    assert ax.get_facecolor()[:3] == (1.0, 1.0, 1.0)  # the masked cells show white
    label = fig.axes[1].get_ylabel()
    assert label == ("mistakes, % of the true class" if normalized else "mistakes (images)")
    if not normalized:
        assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == ["0", "1", "2", "3", "4", "5"]
    perfect = confusion_figure(np.diag([5, 6]), ["a", "b"], normalized=normalized)
    assert len(perfect.axes) == 1 and perfect.axes[0].get_title().endswith("no mistakes")
    plt.close("all")


def wilson_by_hand(correct: int, n: int, z: float = 1.96):
    """The textbook formula, written out: (p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)."""
    p = correct / n
    centre = p + z ** 2 / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z ** 2 / (4 * n ** 2))
    return (centre - spread) / (1 + z ** 2 / n), (centre + spread) / (1 + z ** 2 / n)


def test_per_class_accuracy_and_its_wilson_interval_by_hand():
    # class 0: 10 images, 8 right (2 taken for class 1); class 1: 4 images, 3 right (1 for 0);
    # class 2: none at all; class 3: 5 images, all called class 0.
    labels = torch.tensor([0] * 10 + [1] * 4 + [3] * 5)
    predicted = torch.tensor([0] * 8 + [1, 1] + [1, 1, 1, 0] + [0] * 5)
    cm = confusion_matrix(labels, predicted, 4)
    assert cm.matrix.tolist() == [[8, 2, 0, 0], [1, 3, 0, 0], [0, 0, 0, 0], [5, 0, 0, 0]]
    per_class = cm.per_class()
    assert [r["correct"] for r in per_class] == [8, 3, 0, 0]
    assert [r["n"] for r in per_class] == [10, 4, 0, 5]
    assert per_class[0]["accuracy"] == 0.8 and per_class[1]["accuracy"] == 0.75
    assert per_class[2]["accuracy"] is None and per_class[2]["ci95"] is None
    assert per_class[3]["accuracy"] == 0.0
    # 8 of 10: p = 0.8, z²/n = 0.38415 → centre 0.99207/1.38415, half-width 0.31362/1.38415
    assert per_class[0]["ci95"] == pytest.approx([0.4902, 0.9433], abs=5e-5)
    assert per_class[0]["ci95"] == pytest.approx(wilson_by_hand(8, 10), abs=1e-4)
    assert per_class[1]["ci95"] == pytest.approx([0.3006, 0.9544], abs=5e-5)
    assert per_class[1]["ci95"] == pytest.approx(wilson_by_hand(3, 4), abs=1e-4)
    # 0 of 5: the interval starts at 0 and is not empty (the normal approximation would give [0, 0]).
    assert per_class[3]["ci95"] == pytest.approx([0.0, 0.4345], abs=5e-5)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert wilson_interval(0, 0) is None
    # Row-normalized: rows sum to 1, the absent class's row is all 0.
    rows = cm.row_normalized
    assert rows[0].tolist() == [0.8, 0.2, 0, 0] and rows[3].tolist() == [1, 0, 0, 0]
    assert rows[2].tolist() == [0, 0, 0, 0]
    assert rows.sum(1).tolist() == pytest.approx([1, 1, 0, 1])
    assert cm.most_confused() == [
        {"true": 3, "predicted": 0, "count": 5, "fraction_of_true": 1.0},
        {"true": 0, "predicted": 1, "count": 2, "fraction_of_true": 0.2},
        {"true": 1, "predicted": 0, "count": 1, "fraction_of_true": 0.25}]


# ---- the grid's PDF holds the images themselves --------------------------------------------------
PLACED = re.compile(rb"1 0 0 1 ([-\d.]+) ([-\d.]+) cm ([-\d.]+) 0 0 ([-\d.]+) ([-\d.]+) ([-\d.]+) cm /(\w+) Do")


def placed_images(pdf: Path, page: int = 0) -> list[dict]:
    """The images a PDF page draws, in reading order (rows top to bottom, then left to right):
    their pixels as the page shows them (the placement matrix applied) and their size on the page."""
    p = PdfReader(pdf).pages[page]
    content = p.get_contents().get_data()
    xobjects = {im.name.rsplit(".", 1)[0]: im for im in p.images}
    placed = []
    for m in PLACED.finditer(content):
        tx, ty, a, d, e, f = map(float, m.groups()[:6])
        name = m.group(7).decode()
        pixels = np.asarray(xobjects[name].image)
        # PDF draws an image's first row at the top of its unit square; a negative d flips it.
        if d < 0:
            pixels = pixels[::-1]
        if a < 0:
            pixels = pixels[:, ::-1]
        top = ty + f + min(d, 0) + abs(d)
        placed.append({"pixels": pixels, "x": tx + e + min(a, 0), "top": top,
                       "width": abs(a), "height": abs(d)})
    assert len(placed) == len(p.images), "every image of the page is placed once"
    placed.sort(key=lambda r: (-round(r["top"], 1), r["x"]))
    return placed


def test_the_grid_pdf_holds_the_wrong_images_pixel_for_pixel(tiny, mnist_dir, tmp_path):
    model, folder = load_model_folder(tiny)
    data = folder.load_split("test", mnist_dir)
    result = misclassified(model, data.images, data.labels, max_images=16, classes=folder.spec)
    pages = misclassified_pages(result.misclassified, result.images, result.names, title="tiny")
    assert len(pages) == 1 == result.grid_pages
    pdf = save_figure(pages[0], tmp_path, "grid")[1]
    placed = placed_images(pdf)
    assert len(placed) == result.shown == 16
    index = column(result, "index")
    for j, im in enumerate(placed):
        want = data.images[index[j], 0].numpy().astype(int)  # (28, 28)
        got = im["pixels"].astype(int)
        assert got.shape == (28, 28, 3), "each cell is its own image, at its own 28×28 pixels"
        # Grayscale is stored as the gray colour map's RGB: R = G = B = the pixel value
        # (±1 from the colour map's rounding).
        assert (got[..., 0] == got[..., 1]).all() and (got[..., 1] == got[..., 2]).all()
        assert np.abs(got[..., 0] - want).max() <= 1, f"cell {j} is not image {index[j]}"
        assert im["width"] == pytest.approx(im["height"], rel=1e-3)  # square cells for square images


def fake_records(n: int, spec) -> list[dict]:
    """n wrong images 0..n-1, true class k % K, predicted (k + 1) % K, second (k + 2) % K."""
    s, K = spec.classes, spec.num_classes
    return [{"index": k, "true": s[k % K], "predicted": s[(k + 1) % K], "second": s[(k + 2) % K],
             "p_true": 0.1, "p_predicted": 0.6, "p_second": 0.3} for k in range(n)]


def test_colour_images_keep_their_pixels_and_sfddd_its_aspect_ratio(tmp_path):
    g = torch.Generator().manual_seed(0)
    cifar = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=g)
    pdf = save_figure(misclassified_pages(fake_records(3, CIFAR10), cifar, CIFAR10)[0], tmp_path, "cifar")[1]
    for j, im in enumerate(placed_images(pdf)):
        assert im["pixels"].shape == (32, 32, 3)
        assert np.array_equal(im["pixels"], cifar[j].permute(1, 2, 0).numpy())
    frames = torch.randint(0, 256, (2, 3, 48, 64), dtype=torch.uint8, generator=g)  # SFDDD: 64 wide, 48 high
    pdf = save_figure(misclassified_pages(fake_records(2, SFDDD), frames, SFDDD)[0], tmp_path, "sfddd")[1]
    for j, im in enumerate(placed_images(pdf)):
        assert np.array_equal(im["pixels"], frames[j].permute(1, 2, 0).numpy())
        assert im["width"] / im["height"] == pytest.approx(64 / 48, rel=1e-3)


def test_pages_hold_at_most_100_images_and_every_image_once():
    images = torch.zeros(130, 1, 28, 28, dtype=torch.uint8)
    pages = misclassified_pages(fake_records(130, MNIST), images, MNIST, title="t")
    counts = [len(fig.axes[0].images) for fig in pages]  # one axes a page, an image per wrong image
    assert sum(counts) == 130 and max(counts) <= 100 and len(pages) == math.ceil(130 / counts[0]) > 1
    assert grid_pages(130, (28, 28), MNIST) == len(pages)
    assert misclassified_pages([], images, MNIST) == []
    import matplotlib.pyplot as plt
    for fig in pages:
        plt.close(fig)


# ---- the command ------------------------------------------------------------------------------
def cli(capsys, *args) -> tuple[int, str, str]:
    """probe.cli.main as the console script runs it: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as e:
        probe.cli.main([str(a) for a in args])
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def test_the_command_on_a_tiny_model(tiny, mnist_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, err = cli(capsys, "misclassified", "--model", tiny, "--data-dir", mnist_dir,
                            "--split", "test", "--out", out, "--batch-size", 16)
    assert code == 0, err
    model, folder = load_model_folder(tiny)
    data = folder.load_split("test", mnist_dir)
    expected = brute_force(model, data.images, data.labels)
    assert f"{len(expected)} of 50 test images misclassified" in stdout
    assert str(out) in stdout
    for stem in ("misclassified", "confusion", "confusion-normalized", "per-class-accuracy"):
        for ext in ("png", "pdf"):
            assert (out / f"{stem}.{ext}").stat().st_size > 1000
    doc = json.loads((out / "results.json").read_text())
    r = doc["results"]
    assert r["wrong"] == len(r["misclassified"]) == len(expected)
    assert [m["index"] for m in r["misclassified"]] == [e[0] for e in expected]
    assert [m["predicted"] for m in r["misclassified"]] == [str(e[1]) for e in expected]
    if data.names is not None:
        assert [m["image"] for m in r["misclassified"]] == [data.names[e[0]] for e in expected]
    assert np.array(r["confusion_matrix"]).sum() == 50
    assert np.trace(np.array(r["confusion_matrix"])) == 50 - len(expected)
    assert r["error"] == pytest.approx(len(expected) / 50)
    assert doc["model"]["weights_sha256"] == folder.weights_sha256()
    assert doc["data"]["split"] == "test" and doc["data"]["n"] == 50
    assert doc["settings"]["batch_size"] == 16 and doc["seconds"] > 0
    assert sorted(doc["figures"]) == sorted(f"{s}.{e}" for s in ("misclassified", "confusion",
                                            "confusion-normalized", "per-class-accuracy") for e in ("png", "pdf"))
    assert len(placed_images(out / "misclassified.pdf")) == len(expected)


def test_the_newest_model_and_the_default_folder(tiny, mnist_dir, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    shutil.copytree(tiny, work / "trained_models" / "tiny")
    monkeypatch.chdir(work)
    code, stdout, err = cli(capsys, "misclassified", "--data-dir", mnist_dir, "--max", 3)
    assert code == 0, err
    assert "the newest model in trained_models/" in stdout and "val images misclassified" in stdout
    assert "the 3 most confident shown" in stdout
    doc = json.loads((work / "reports" / "tiny" / "misclassified" / "results.json").read_text())
    assert len(doc["results"]["misclassified"]) == 3
    assert doc["results"]["wrong"] > 3 and doc["data"]["split"] == "val"
    assert len(placed_images(work / "reports" / "tiny" / "misclassified" / "misclassified.pdf")) == 3


def error_cases(tiny, mnist_dir, tmp_path):
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    empty_data = tmp_path / "no-data"
    empty_data.mkdir()
    model = ["--model", tiny]
    data = ["--data-dir", mnist_dir]
    return {
        "unknown split": ([*model, *data, "--split", "tset"], "--split 'tset': use val, test, train"),
        "not a model": (["--model", not_a_model, *data], "meta.json: file not found"),
        "a file as --model": (["--model", a_file, *data], "not a model folder"),
        "no such --model": (["--model", tmp_path / "nowhere", *data], "no such model folder"),
        "dataset absent": ([*model, "--data-dir", empty_data], "not found in"),
        "max 0": ([*model, *data, "--max", 0], "--max 0"),
        "max negative": ([*model, *data, "--max", -2], "--max -2"),
        "out is a file": ([*model, *data, "--out", a_file], "is a file, not a folder"),
        "out below a file": ([*model, *data, "--out", a_file / "sub"], "cannot make the folder"),
    }


@pytest.mark.parametrize("case", ["unknown split", "not a model", "a file as --model", "no such --model",
                                  "dataset absent", "max 0", "max negative", "out is a file",
                                  "out below a file"])
def test_bad_input_is_one_line_and_exit_code_2(case, tiny, mnist_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing lands in the repository's reports/
    args, words = error_cases(tiny, mnist_dir, tmp_path)[case]
    code, stdout, err = cli(capsys, "misclassified", *args)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert words in err
    assert "Traceback" not in err + stdout


def test_no_model_at_all_is_one_line_and_exit_code_2(tmp_path, capsys, monkeypatch, mnist_dir):
    monkeypatch.chdir(tmp_path)
    for layout in ("no folder", "empty folder", "only a broken model"):
        if layout == "empty folder":
            (tmp_path / "trained_models").mkdir()
        if layout == "only a broken model":
            (tmp_path / "trained_models" / "broken").mkdir()
            (tmp_path / "trained_models" / "broken" / "meta.json").write_text("{not json")
        code, stdout, err = cli(capsys, "misclassified", "--data-dir", mnist_dir)
        assert code == 2, layout
        assert err.startswith("error: no trained model in trained_models/") and err.count("\n") == 1
        assert not (tmp_path / "reports").exists()


def test_the_library_refuses_labels_that_do_not_fit(fixture_test):
    images, labels = fixture_test
    with pytest.raises(ConfigError, match="50 images but 49 labels"):
        misclassified(Linear(), images, labels[:49])


def test_a_split_without_labels_is_refused_by_the_analysis(tiny, mnist_dir, tmp_path, monkeypatch):
    from probe.analysis import misclassified as analysis
    from probe.analysis.base import clear_split_cache
    from probe.analysis.runner import run_analysis
    from probe.data.imageset import ImageSet
    from probe.models.folder import ModelFolder
    real = ModelFolder.load_split

    def unlabelled(folder, split, data_dir=None):
        d = real(folder, split, data_dir)
        return ImageSet(d.images, torch.full_like(d.labels, -1), d.spec)
    monkeypatch.setattr(ModelFolder, "load_split", unlabelled)
    clear_split_cache()
    with pytest.raises(ConfigError, match="no labels"):
        run_analysis(analysis.ANALYSIS, tiny, analysis.Settings(split="test"), data_dir=mnist_dir,
                     out=tmp_path / "o")
    clear_split_cache()


@pytest.mark.parametrize("k", [2, 3, 10, 40])
def test_the_per_class_and_confusion_figures_have_no_text_on_text(k):
    """Found by looking: with three classes the per-class figure's legend (placed a fraction of
    the axes' height below them) sat on its x label "accuracy (%)". Every text of the two
    figures as drawn: none overlaps another, from 2 classes to 40, SFDDD's names included."""
    from figure_checks import overlapping_texts
    from probe.figures.failures import per_class_figure
    rng = np.random.default_rng(k)
    names = list(SFDDD.display_names[:k]) if k <= SFDDD.num_classes else [f"class {i}" for i in range(k)]
    per_class = []
    for c in range(k):
        n = int(rng.integers(20, 200))
        correct = int(rng.integers(n // 2, n + 1))
        per_class.append({"accuracy": correct / n, "ci95": list(wilson_interval(correct, n)), "correct": correct, "n": n})
    import matplotlib.pyplot as plt
    fig = per_class_figure(per_class, names)
    assert overlapping_texts(fig) == []
    plt.close(fig)
    matrix = rng.integers(0, 30, size=(k, k)).tolist()
    for normalized in (False, True):
        fig = confusion_figure(matrix, names, normalized=normalized)
        assert overlapping_texts(fig) == [], (k, normalized)
        plt.close(fig)


@pytest.mark.parametrize("case", ["mnist", "cifar10", "sfddd", "40 long names"])
def test_grid_labels_fit_their_cells_side_by_side_or_stacked(case, tmp_path):
    """Found by looking: 40 classes named "species 28 longname" made 3 columns whose prediction
    ran into the second choice (a width guessed from the characters, and at least 3 columns
    whatever they held). Cells are now as wide as their labels measure; short names keep the
    seed's layout (second choice lower right), long ones put it under the prediction, which
    holds more images a page. Every page is drawn; the test hook finds any text on text."""
    from probe.figures.failures import _grid_layout
    from probe.data.spec import DatasetSpec
    names = tuple(f"species {i:02d} longname" for i in range(40))
    spec = {"mnist": MNIST, "cifar10": CIFAR10, "sfddd": SFDDD}.get(case) or DatasetSpec(
        "folder", tuple(n.replace(" ", "_") for n in names), names, 3, 16, 16, (0.5,) * 3, (0.25,) * 3)
    h, w = spec.input_shape[1:]
    lay = _grid_layout(spec, h, w, 100)
    assert (lay.lines, lay.cols) == {"mnist": (2, 8), "cifar10": (3, 5), "sfddd": (2, 7), "40 long names": (3, 5)}[case]
    n = 3 * lay.cols + 1
    images = torch.randint(0, 256, (n, spec.channels, h, w), dtype=torch.uint8)
    records = [r | {"p_predicted": 1.0, "p_second": 0.5} for r in fake_records(n, spec)]  # the widest numbers
    pages = misclassified_pages(records, images, spec, title="wrong")
    assert len(pages) == grid_pages(n, (h, w), spec)
    for k, fig in enumerate(pages):
        save_figure(fig, tmp_path, f"p{k}")
