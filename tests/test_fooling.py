"""Fooling images: from noise (raw and natural) and from data they reach p ≥ confidence on a tiny
trained model, on the 8-bit grid, and every saved PNG read back still does; rounding that breaks
an image is repaired on the grid (by hand, on a one-pixel model); the `probe fool` command as
typed, and its mistakes as one line and exit code 2."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from probe.methods.common import class_probabilities, evaluating  # noqa: E402
from probe.methods.fooling import (_fool_loop, choose_sources, fool_from_dataset,  # noqa: E402
                                    fool_from_noise, goal_for)
from probe.cli import app, main  # noqa: E402
from probe.errors import ConfigError  # noqa: E402
from probe.tasks.fooling import read_png, save_png  # noqa: E402

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def round_trip(images: torch.Tensor, folder: Path) -> torch.Tensor:
    for i, im in enumerate(images):
        save_png(im, folder / f"{i}.png")
    return torch.stack([read_png(folder / f"{i}.png", images.shape[1]) for i in range(len(images))])


@pytest.mark.parametrize("style", ["raw", "natural"])
def test_fooling_from_noise_reaches_the_confidence_and_survives_saving(stamp_net_and_data, style, tmp_path):
    net, _, _ = stamp_net_and_data
    r = fool_from_noise(net, [0, 3, 9], shape=(1, 28, 28), n=2, confidence=0.99, style=style,
                        steps=None if style == "raw" else 40, center=0.13)
    assert len(r) == 6 and r.target.tolist() == [0, 0, 3, 3, 9, 9]
    assert r.images.dtype == torch.uint8 and r.images.shape == (6, 1, 28, 28)
    assert (r.p_target >= 0.99).all() and r.fooled.all() and (r.predicted == r.target).all()
    back = round_trip(r.images, tmp_path)
    assert torch.equal(back, r.images)  # the PNG holds exactly what was judged
    p_back = class_probabilities(net, back).gather(1, r.target.view(-1, 1)).flatten()
    assert (p_back >= 0.99).all()
    assert (r.steps >= 0).all() and (r.seconds > 0).all()
    if style == "natural":
        assert (r.steps >= 40).all()  # the regularizers get their whole budget
    # The two images of a target start from different noise.
    assert not torch.equal(r.images[0], r.images[1])


def test_fooling_from_data_is_the_smallest_change_found_and_survives_saving(stamp_net_and_data, tmp_path):
    net, images, labels = stamp_net_and_data
    r = fool_from_dataset(net, images, labels, [1, 6], n=3, confidence=0.99, steps=20)
    assert len(r) == 6 and r.fooled.all() and (r.p_target >= 0.99).all()
    # Correctly classified originals of other classes, changed within the recorded bound, on the grid.
    clean = class_probabilities(net, images).argmax(1)
    assert (clean[r.source_index] == labels[r.source_index]).all()
    assert (r.source_label != r.target).all() and torch.equal(r.original, images[r.source_index])
    delta = (r.images.float() - r.original.float()) / 255
    assert torch.allclose(r.linf, delta.abs().flatten(1).amax(1)) and torch.allclose(r.l2, delta.flatten(1).norm(dim=1))
    assert (r.linf <= r.eps + 1e-6).all() and (r.linf > 0).all()
    assert torch.allclose(r.eps * 255, (r.eps * 255).round(), atol=1e-4)  # whole 1/255 steps
    # Smaller than an unbounded change: the bisection went below the first success (255/255).
    assert (r.eps < 1).all()
    back = round_trip(r.images, tmp_path)
    p_back = class_probabilities(net, back).gather(1, r.target.view(-1, 1)).flatten()
    assert (p_back >= 0.99).all()
    # A source class, when given, is the only one changed.
    r3 = fool_from_dataset(net, images, labels, [5], n=2, source=2, steps=20)
    assert (r3.source_label == 2).all() and r3.fooled.all()


def test_sources_take_the_classes_in_turn():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 3])
    pairs, short = choose_sources(labels.clone(), labels, [0, 3], 4, seed=0)
    by_target = {t: [int(labels[i]) for i, tt in pairs if tt == t] for t in (0, 3)}
    assert sorted(by_target[0]) == [1, 1, 2, 3] or len(set(by_target[0])) == 3
    assert 0 not in by_target[0] and 3 not in by_target[3] and short == {}
    pairs, short = choose_sources(labels.clone(), labels, [1], 4, source=2)
    assert [int(labels[i]) for i, _ in pairs] == [2, 2] and short == {1: 2}


class OnePixel(nn.Module):
    """Two classes; logit of class 1 = 1000·(x − 100.3/255): p(1) ≥ 0.9901 from x ≈ 101.476/255 on."""

    def forward(self, x):
        z = 1000 * (x.flatten(1)[:, :1] - 100.3 / 255)
        return torch.cat([torch.zeros_like(z), z], 1)


def test_rounding_that_breaks_an_image_is_repaired_on_the_grid():
    model = OnePixel()
    goal = goal_for(0.99)
    # Steps of 0.5/255 from 95.48/255 cross the goal at 101.48/255, which rounds down to 101/255:
    # below the goal. One step of +1/255 on the grid repairs it.
    x = torch.full((1, 1, 1, 1), 95.48 / 255)
    with evaluating(model):
        out = _fool_loop(model, x, torch.tensor([1]), goal=goal, steps=50, repair=5,
                         lr=torch.tensor([0.5 / 255]))
    assert out["p_continuous"][0] >= goal and out["p_rounded"][0] < goal
    assert int(out["repair_steps"][0]) == 1 and int(out["images"][0, 0, 0, 0]) == 102
    p = torch.sigmoid(model(out["images"].float() / 255)[:, 1])
    assert p >= 0.99


def test_bad_arguments_are_config_errors(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    for call in (lambda: fool_from_noise(net, [0], shape=(1, 28, 28), confidence=1.5),
                 lambda: fool_from_noise(net, [0], shape=(1, 28, 28), confidence=0),
                 lambda: fool_from_noise(net, [0], shape=(1, 28, 28), n=0),
                 lambda: fool_from_noise(net, [0], shape=(1, 28, 28), style="cubist"),
                 lambda: fool_from_dataset(net, images, labels, [12]),
                 lambda: fool_from_dataset(net, images.float(), labels, [1])):
        with pytest.raises(ConfigError):
            call()


# ---- the command ------------------------------------------------------------------------------
def check_saved(out: Path, channels: int = 1) -> dict:
    """Every PNG under images/ read back and classified again by a fresh copy of the model:
    each still fools it, and results.json says so."""
    from probe.models.folder import load_model
    doc = json.loads((out / "results.json").read_text())
    net, _ = load_model(Path("trained_models/tiny"), "cpu")
    files = sorted((out / "images").glob("*.png"))
    records = doc["results"]["images"]
    assert len(files) == len(records) == doc["results"]["count"]
    assert {f"images/{f.name}" for f in files} == {r["file"] for r in records}
    classes = doc["results"]["classes"]
    for r in records:
        image = read_png(out / r["file"], channels).unsqueeze(0)
        p = float(class_probabilities(net, image)[0, classes.index(r["target"])])
        assert p >= doc["results"]["confidence"] and abs(p - r["p_target_saved"]) < 1e-5
        assert r["fooled_after_saving"] and Path(r["file"]).name.split("-to-")[1].startswith(r["target"] + "-")
    assert doc["results"]["rates"]["after_saving"] == doc["results"]["rates"]["before_saving"] == 1.0
    return doc


def test_fool_from_noise_with_every_option_left_out(stamp_project):
    cwd, _ = stamp_project
    result = runner.invoke(app, ["fool", "--from", "noise"])
    assert result.exit_code == 0, result.output
    out = cwd / "reports" / "tiny" / "fool-noise"
    assert (out / "fooling.png").is_file() and (out / "fooling.pdf").is_file()
    doc = check_saved(out)
    assert doc["results"]["targets"] == [str(i) for i in range(10)] and doc["results"]["count"] == 40
    assert doc["settings"]["style"] == "raw" and doc["settings"]["confidence"] == 0.99
    assert sorted(p.name for p in (out / "images").glob("noise-to-3-*.png")) == [f"noise-to-3-0{i}.png" for i in range(4)]
    assert "before saving 40/40" in result.output and "after saving as PNG and reading back 40/40" in result.output


def test_fool_natural_for_one_target(stamp_project):
    cwd, _ = stamp_project
    result = runner.invoke(app, ["fool", "--from", "noise", "--target", "3", "--n", "2", "--confidence", "0.95",
                                 "--style", "natural", "--steps", "30", "--out", "nat"])
    assert result.exit_code == 0, result.output
    doc = check_saved(cwd / "nat")
    assert doc["results"]["count"] == 2 and doc["results"]["style"] == "natural"


def test_fool_from_dataset(stamp_project):
    cwd, data_dir = stamp_project
    result = runner.invoke(app, ["fool", "--from", "dataset", "--data-dir", str(data_dir), "--target", "all",
                                 "--n", "1", "--steps", "8"])
    assert result.exit_code == 0, result.output
    out = cwd / "reports" / "tiny" / "fool-dataset"
    doc = check_saved(out)
    assert doc["results"]["count"] == 10 and (out / "fooling.png").is_file()
    for r in doc["results"]["images"]:
        assert r["source"] != r["target"] and 0 < r["linf"] <= r["eps"] + 1e-6 and r["l2"] > 0
        assert Path(r["file"]).name.startswith(f"{r['source']}-to-{r['target']}-")
    assert doc["results"]["median_linf"] > 0 and "median change: L∞" in result.output
    # Again with fewer images: the earlier run's files are gone, not mixed in.
    result = runner.invoke(app, ["fool", "--from", "dataset", "--data-dir", str(data_dir), "--target", "4",
                                 "--source", "7", "--n", "1", "--steps", "15"])
    assert result.exit_code == 0, result.output
    assert [p.name for p in (out / "images").glob("*.png")] == ["7-to-4-00.png"]


FOOL_ERRORS = [
    (["fool", "--confidence", "1.5"], "--confidence 1.5"),
    (["fool", "--confidence", "0"], "--confidence 0"),
    (["fool", "--from", "somewhere"], "--from 'somewhere'"),
    (["fool", "--target", "nine"], "'nine'"),
    (["fool", "--n", "0"], "--n 0"),
    (["fool", "--style", "cubist"], "--style 'cubist'"),
    (["fool", "--from", "dataset", "--style", "natural"], "--style natural"),
    (["fool", "--from", "noise", "--source", "3"], "--source"),
    (["fool", "--from", "dataset", "--source", "3", "--target", "3"], "same class"),
    (["fool", "--from", "dataset", "--source", "eleven"], "unknown class 'eleven'"),
    (["fool", "--from", "dataset", "--data-dir", "no/such/folder"], "no/such/folder"),
]


@pytest.mark.parametrize("argv,words", FOOL_ERRORS, ids=[" ".join(a) for a, _ in FOOL_ERRORS])
def test_fool_mistakes_are_one_line_and_exit_2(stamp_project, argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err
