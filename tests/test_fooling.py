"""Fooling images: from noise (raw and natural) and from data they reach p ≥ confidence on a tiny
trained model, on the 8-bit grid, and every saved PNG read back still does; rounding that breaks
an image is repaired on the grid (by hand, on a one-pixel model), and the counts of what happened
add up (on a one-pixel model where rounding breaks known images); the public functions on a tiny
nn.Sequential CNN in float32 and float64, leaving it as found; the Result's JSON round trip and
its section; every page of the figures fits a one-column page; the `probe fool` command as typed,
and its mistakes as one line and exit code 2."""
import json
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from probe.analysis.fooling import (DATASET_ANALYSIS, NOISE_ANALYSIS, RARE, STAGES,  # noqa: E402
                                    DatasetFoolingResult, DatasetSettings, NoiseFoolingResult, NoiseSettings,
                                    fool_from_dataset, fool_from_noise, from_options, page_stems, png_bytes,
                                    read_png)
from probe.analysis.runner import read_outputs  # noqa: E402
from probe.cli import app, main  # noqa: E402
from probe.errors import ConfigError, ModelFileError  # noqa: E402
from probe.figures.style import PNG_DPI  # noqa: E402
from probe.methods.common import class_probabilities, evaluating  # noqa: E402
from probe.methods.confusion import wilson_interval  # noqa: E402
from probe.methods.fooling import _fool_loop, choose_sources, goal_for  # noqa: E402
from probe.presentation import FigureRef, Table  # noqa: E402

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def round_trip(images: torch.Tensor, folder: Path) -> torch.Tensor:
    """Each image written to a PNG file and read back from it."""
    for i, im in enumerate(images):
        (folder / f"{i}.png").write_bytes(png_bytes(im))
    return torch.stack([read_png(folder / f"{i}.png", images.shape[1]) for i in range(len(images))])


def p_of(net, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return class_probabilities(net, images).gather(1, target.view(-1, 1)).flatten()


@pytest.mark.parametrize("style", ["raw", "natural"])
def test_fooling_from_noise_reaches_the_confidence_and_survives_saving(stamp_net_and_data, style, tmp_path):
    net, _, _ = stamp_net_and_data
    r = fool_from_noise(net, [0, 3, 9], shape=(1, 28, 28), n=2, confidence=0.99, style=style,
                        steps=None if style == "raw" else 40, center=0.13)
    assert r.count == len(r.images) == 6 and r.target.tolist() == [0, 0, 3, 3, 9, 9]
    assert r.targets == ["0", "3", "9"] and r.source == "noise" and r.style == style
    assert r.pixels.dtype == torch.uint8 and r.pixels.shape == (6, 1, 28, 28)
    assert all(x["p_target"] >= 0.99 and x["fooled"] and x["predicted"] == x["target"] for x in r.images)
    assert all(r.stages[k]["count"] == 6 for k in ("reached_before_rounding", "fooled_before_saving",
                                                   "fooled_after_saving"))
    assert r.stages["not_fooled"]["count"] == 0 and r.stages["fooled_after_saving"]["of"] == 6
    assert all(x["reached_before_rounding"] and x["fooled_after_saving"] for x in r.images)
    assert r.png_identical_to_judged and (r.p_saved >= 0.99).all()
    back = round_trip(r.pixels, tmp_path)
    assert torch.equal(back, r.pixels)  # the PNG holds exactly what was judged
    torch.testing.assert_close(p_of(net, back, r.target), r.p_saved)
    assert all(x["steps"] >= 0 and x["seconds"] > 0 for x in r.images)
    if style == "natural":
        assert all(x["steps"] >= 40 for x in r.images)  # the regularizers get their whole budget
    assert [x["file"] for x in r.images[:2]] == ["images/noise-to-0-00.png", "images/noise-to-0-01.png"]
    # The two images of a target start from different noise.
    assert not torch.equal(r.pixels[0], r.pixels[1])


def test_fooling_from_data_is_the_smallest_change_found_and_survives_saving(stamp_net_and_data, tmp_path):
    net, images, labels = stamp_net_and_data
    r = fool_from_dataset(net, images, labels, [1, 6], n=3, confidence=0.99, steps=20)
    assert r.count == 6 and r.fooled_after_saving == r.fooled_before_saving == 6
    assert all(x["fooled"] and x["p_target"] >= 0.99 for x in r.images)
    # Correctly classified originals of other classes, changed within the recorded bound, on the grid.
    index = torch.tensor([x["index"] for x in r.images])
    clean = class_probabilities(net, images).argmax(1)
    assert (clean[index] == labels[index]).all() and torch.equal(r.source_label, labels[index])
    assert all(x["source"] != x["target"] for x in r.images) and torch.equal(r.original, images[index])
    delta = (r.pixels.float() - r.original.float()) / 255
    linf, l2 = (torch.tensor([x[k] for x in r.images]) for k in ("linf", "l2"))
    eps = torch.tensor([x["eps"] for x in r.images])
    torch.testing.assert_close(linf, delta.abs().flatten(1).amax(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(l2, delta.flatten(1).norm(dim=1), atol=1e-5, rtol=0)
    assert (linf <= eps + 1e-6).all() and (linf > 0).all()
    assert torch.allclose(eps * 255, (eps * 255).round(), atol=1e-4)  # whole 1/255 steps
    # Smaller than an unbounded change: the bisection went below the first success (255/255).
    assert (eps < 1).all()
    assert r.median_linf == pytest.approx(float(linf.median()), abs=1e-6)
    back = round_trip(r.pixels, tmp_path)
    assert (p_of(net, back, r.target) >= 0.99).all()
    # A source class, when given, is the only one changed.
    r3 = fool_from_dataset(net, images, labels, [5], n=2, source=2, steps=20)
    assert r3.source_label.tolist() == [2, 2] and all(x["source"] == "2" and x["fooled"] for x in r3.images)


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


class OnePixelFour(nn.Module):
    """Four classes of one pixel x. Class 1 from x ≥ 254.05/255 on (p ≥ goal_for(0.99)): an ascent
    in steps of 0.4/255 crosses it below 254.45/255 and rounds to 254/255, where p = .988: rounding
    breaks it, one step on the grid (255/255, p = .9998) repairs it. Class 3 up to x ≤ 1.45/255: a
    descent crosses it above 1.05/255 and rounds to 1/255, where p = .998: rounding keeps it. Class 2
    never (its logit is −10)."""

    def forward(self, x):
        level = x.flatten(1)[:, :1] * 255
        z1, z3 = 1000 / 255 * (level - 252.8756), 1000 / 255 * (2.6244 - level)
        return torch.cat([torch.zeros_like(level), z1, torch.full_like(level, -10.0), z3], 1)


def test_what_happened_to_each_image_is_counted_and_the_counts_add_up():
    r = fool_from_noise(OnePixelFour(), [1, 2, 3], shape=(1, 1, 1), n=2, steps=700, repair_steps=5,
                        lr=0.4 / 255, confidence=0.99, seed=0)
    count = {k: v["count"] for k, v in r.stages.items()}
    assert count == {"reached_before_rounding": 4, "broken_by_rounding": 2, "rounded_up": 0, "repaired": 2,
                     "lost_on_grid": 0, "fooled_before_saving": 4, "lost_by_saving": 0, "gained_by_saving": 0,
                     "fooled_after_saving": 4, "not_fooled": 2}
    # Per image: the class-1 images are the ones rounding broke, repaired by one step to 255/255.
    flags = [(x["target"], x["reached_before_rounding"], x["broken_by_rounding"], x["repaired"],
              x["fooled"], x["fooled_after_saving"]) for x in r.images]
    assert flags == [("1", True, True, True, True, True)] * 2 + [("2", False, False, False, False, False)] * 2 \
        + [("3", True, False, False, True, True)] * 2
    assert r.pixels.flatten().tolist()[:2] == [255, 255] and r.pixels.flatten().tolist()[4:] == [1, 1]
    assert all(x["p_after_rounding"] < 0.99 <= x["p_before_rounding"] and x["repair_steps"] == 1 for x in r.images[:2])
    # The accounting: every stage follows from the ones before it.
    assert (count["reached_before_rounding"] - count["broken_by_rounding"] + count["rounded_up"] + count["repaired"]
            - count["lost_on_grid"] == count["fooled_before_saving"] == r.fooled_before_saving)
    assert (count["fooled_before_saving"] - count["lost_by_saving"] + count["gained_by_saving"]
            == count["fooled_after_saving"] == r.fooled_after_saving)
    assert count["fooled_after_saving"] + count["not_fooled"] == r.count == 6
    for stage in r.stages.values():
        assert stage["of"] == 6 and stage["fraction"] == stage["count"] / 6
        assert stage["ci95"] == list(wilson_interval(stage["count"], 6))
    # The report: one table of what happened, n stated, the rare stages only where they happened.
    [table] = [c for c in NOISE_ANALYSIS.section(r).children if isinstance(c, Table)]
    assert [row[0] for row in table.rows] == [STAGES[k][0] for k in STAGES if k not in RARE]
    assert all(len(cell) <= 30 for row in table.rows for cell in row)  # short cells: the table fits any page
    lo, hi = wilson_interval(2, 6)
    assert table.rows[1] == [STAGES["broken_by_rounding"][0], "2 of 6", "33.3%", f"{100 * lo:.1f}–{100 * hi:.1f}%"]
    assert "6 fooling images" in table.caption
    assert "Reached − broken + repaired = fooled before saving" in table.caption
    lines = NOISE_ANALYSIS.summary(r)
    assert ("reached the goal before rounding 4/6; rounding to 8 bits broke 2; steps on the 1/255 grid repaired 2 "
            "of the 4 below the goal after rounding") in lines
    assert any(line.startswith("fooled before saving 4/6, after saving as PNG and reading back 4/6 (66.7%")
               for line in lines)


def test_bad_arguments_are_config_errors_in_the_parameters_names(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    noise = dict(shape=(1, 28, 28))
    for call, words in ((lambda: fool_from_noise(net, [0], confidence=1.5, **noise), "confidence 1.5"),
                        (lambda: fool_from_noise(net, [0], confidence=0, **noise), "confidence 0"),
                        (lambda: fool_from_noise(net, [0], n=0, **noise), "n 0"),
                        (lambda: fool_from_noise(net, [0], style="cubist", **noise), "style 'cubist'"),
                        (lambda: fool_from_noise(net, [0], steps=0, **noise), "steps 0"),
                        (lambda: fool_from_noise(net, [0], repair_steps=-1, **noise), "repair_steps -1"),
                        (lambda: fool_from_noise(net, ["eleven"], **noise), "unknown class 'eleven'"),
                        (lambda: fool_from_noise(net, [0], classes=["a", "b"], **noise),
                         "2 class names for a model with 10"),
                        (lambda: fool_from_dataset(net, images, labels, [12]), "unknown class 12"),
                        (lambda: fool_from_dataset(net, images, labels, [3], source=3), "same class"),
                        (lambda: fool_from_dataset(net, images, labels[:5], [1]), "but 5 labels"),
                        (lambda: fool_from_dataset(net, images.float(), labels, [1]), "uint8")):
        with pytest.raises(ConfigError) as e:
            call()
        assert words in str(e.value) and "--" not in str(e.value), str(e.value)


def test_settings_are_checked_once_in_the_commands_option_names():
    for make, words in ((lambda: NoiseSettings(n=0), "--n 0"), (lambda: NoiseSettings(steps=0), "--steps 0"),
                        (lambda: NoiseSettings(confidence=1.0), "--confidence 1"),
                        (lambda: NoiseSettings(style="cubist"), "--style 'cubist'"),
                        (lambda: NoiseSettings(threads=0), "--threads 0"),
                        (lambda: DatasetSettings(split="dev"), "--split 'dev'"),
                        (lambda: NoiseSettings(target=" "), "--target"),
                        (lambda: from_options("somewhere"), "--from 'somewhere'"),
                        (lambda: from_options("dataset", style="raw"), "--style raw: applies to --from noise"),
                        (lambda: from_options("noise", source_class="3"), "--source: applies to --from dataset")):
        with pytest.raises(ConfigError, match=words.replace("(", r"\(")):
            make()
    entry, settings = from_options("dataset", target="cat", n=2, confidence=0.9, steps=None, seed=0, threads=None)
    assert entry is DATASET_ANALYSIS and settings.split == "test" and settings.class_name == "cat"
    entry, settings = from_options("noise", target="All")
    assert entry is NOISE_ANALYSIS and settings.style == "raw" and settings.class_name is None


# ---- any model: a tiny nn.Sequential CNN in float32 and float64 ----------------------------------
def tiny_cnn(dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_any_model_in_any_dtype_is_left_as_found_and_its_results_draw(dtype):
    model = tiny_cnn(dtype).train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    model[4].bias.requires_grad_(False)
    classes = ["cat", "dog", "owl"]
    noise = fool_from_noise(model, "owl", shape=(1, 8, 8), classes=classes, n=2, confidence=0.6, steps=30,
                            style="natural", name="cnn")
    images = (torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 255).to(torch.uint8)
    labels = class_probabilities(model, images).argmax(1)  # every image correct
    target = [k for k in range(3) if (labels != k).any()][0]
    data = fool_from_dataset(model, images, labels, [target], classes=classes, n=2, confidence=0.6, steps=5)
    assert model.training and torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert not model[4].bias.requires_grad and model[4].weight.requires_grad and model[4].weight.grad is None
    assert noise.targets == ["owl"] and noise.count == 2
    assert data.count >= 1 and data.count + sum(data.shortfall.values()) == 2  # too few of other classes: said
    assert data.original.dtype == data.pixels.dtype == torch.uint8
    for entry, r in ((NOISE_ANALYSIS, noise), (DATASET_ANALYSIS, data)):
        assert r.png_identical_to_judged and 0 <= r.stages["fooled_after_saving"]["fraction"] <= 1
        figs = r.figures()
        assert list(figs) == page_stems(r) == ["fooling"]
        assert [c.stem for c in entry.section(r).children if isinstance(c, FigureRef)] == ["fooling"]
        for fig in figs.values():
            plt.close(fig)


def test_a_result_reads_back_from_its_json_and_arrays(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    noise = fool_from_noise(net, [2], shape=(1, 28, 28), n=1, steps=30)
    data = fool_from_dataset(net, images, labels, [4], n=1, steps=10, split="test")
    for entry, r in ((NOISE_ANALYSIS, noise), (DATASET_ANALYSIS, data)):
        doc = json.loads(json.dumps(r.to_json()))
        back = entry.result.from_json(doc, {k: v.clone() for k, v in r.arrays().items()})
        assert type(back) is type(r) and back.images == r.images and back.stages == r.stages
        for name, array in r.arrays().items():
            assert torch.equal(getattr(back, name), array), name
        assert entry.summary(back) == entry.summary(r)
        section = entry.section(back)
        assert section.anchor == entry.name
        assert "1 of 1 (100.0%, 95% interval 20.7–100.0%) do" in section.children[0].text
        assert [c.stem for c in section.children if isinstance(c, FigureRef)] == ["fooling"]
    assert data.data_info() == {"split": "test", "n": len(images)} and "noise" in noise.data_info()["input"]
    with pytest.raises(ModelFileError, match="not a fool-dataset result"):
        DatasetFoolingResult.from_json(noise.to_json())
    with pytest.raises(ModelFileError, match="schema"):
        NoiseFoolingResult.from_json(noise.to_json() | {"schema": 0})


# ---- the figures' pages --------------------------------------------------------------------------
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def fake_result(source: str, shape: tuple[int, int, int], n: int, names: list[str]):
    """A fooling result of n images for each of the classes `names`, with random pixels (the
    figures' layout depends only on the shape, the counts and the names)."""
    g = torch.Generator().manual_seed(0)
    target = torch.arange(len(names)).repeat_interleave(n)
    m = len(target)
    done = {"count": m, "of": m, "fraction": 1.0, "ci95": list(wilson_interval(m, m))}
    common = dict(model="m", classes=names, display_names=names, codes=names, source=source, targets=names, n=n,
                  confidence=0.99, images=[{}] * m, count=m, fooled_before_saving=m, fooled_after_saving=m,
                  stages={k: done if k in ("reached_before_rounding", "fooled_before_saving", "fooled_after_saving")
                          else {**done, "count": 0, "fraction": 0.0, "ci95": list(wilson_interval(0, m))}
                          for k in STAGES},
                  png_identical_to_judged=True, target=target,
                  pixels=(torch.rand(m, *shape, generator=g) * 255).to(torch.uint8),
                  p_saved=0.99 + 0.01 * torch.rand(m, generator=g))
    if source == "noise":
        return NoiseFoolingResult(style="raw", median_steps=1, seconds=0.0, **common)
    source_label = (target + 1 + torch.randint(0, len(names) - 1, (m,), generator=g)) % len(names)
    return DatasetFoolingResult(style=None, median_steps=1, seconds=0.0, split="test",
                                original=(torch.rand(m, *shape, generator=g) * 255).to(torch.uint8),
                                source_label=source_label, p_source_original=torch.rand(m, generator=g), **common)


def page_sizes(figs: dict) -> list[tuple[float, float]]:
    """Each page's size in inches as saved (savefig's tight bounding box and its padding, at the
    PNG's resolution: text measured at a coarser one comes out wider)."""
    sizes = []
    for fig in figs.values():
        fig.set_dpi(PNG_DPI)
        box = fig.get_tightbbox(fig.canvas.get_renderer())
        pad = 2 * plt.rcParams["savefig.pad_inches"]
        sizes.append((box.width + pad, box.height + pad))
        plt.close(fig)
    return sizes


@pytest.mark.parametrize("shape,names", [((1, 28, 28), [str(k) for k in range(10)]), ((3, 32, 32), CIFAR)],
                         ids=["mnist", "cifar"])
def test_every_page_fits_a_one_column_page_and_the_width_is_used(shape, names):
    """10 targets × n = 1, 2, 4: each page at most 6.3 × 8.5 in, one page each (before: one page
    of 3.8 × 8.9 in from noise, 4.6-6.3 × 8.9 in from data, taller than a page), the grid using
    most of the width; the stems of figures(), page_stems() and the section's figures agree."""
    for n in (1, 2, 4):
        for source, entry in (("noise", NOISE_ANALYSIS), ("dataset", DATASET_ANALYSIS)):
            r = fake_result(source, shape, n, names)
            figs = entry.figures(r)
            stems = [c.stem for c in entry.section(r).children if isinstance(c, FigureRef)]
            assert list(figs) == page_stems(r) == stems == ["fooling"], (source, n)
            sizes = page_sizes(figs)
            assert all(w <= 6.3 and h <= 8.5 for w, h in sizes), (source, n, sizes)
            assert all(w >= 5.5 for w, _ in sizes), (source, n, sizes)  # not one narrow column
            if n == 4:
                assert sizes[0][1] < (6.5 if source == "noise" else 8.4), sizes


def test_many_images_take_several_pages_each_within_a_page_and_long_names_are_cut():
    r = fake_result("noise", (1, 28, 28), 8, [str(k) for k in range(10)])
    figs = NOISE_ANALYSIS.figures(r)
    stems = [c.stem for c in NOISE_ANALYSIS.section(r).children if isinstance(c, FigureRef)]
    assert list(figs) == page_stems(r) == stems == ["fooling-01", "fooling-02"]
    assert all(w <= 6.3 and h <= 8.5 for w, h in page_sizes(figs))
    for long, model in (([f"class {k} " + "with a very long name indeed " * 4 for k in range(3)], "a model " * 30),
                        ([f"class{k}" + "x" * 120 for k in range(3)], "m" * 300)):  # no space to break at
        for source, entry in (("noise", NOISE_ANALYSIS), ("dataset", DATASET_ANALYSIS)):
            r = fake_result(source, (3, 32, 32), 1, long)
            r.model = model
            assert all(w <= 6.3 and h <= 8.5 for w, h in page_sizes(entry.figures(r))), source


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
    assert doc["results"]["fooled_after_saving"] == doc["results"]["fooled_before_saving"] == doc["results"]["count"]
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
    # The figure is the only figure (the 40 PNGs are data), and the files hold the pixels judged.
    assert doc["figures"] == ["fooling.pdf", "fooling.png"] and "1 figure(s)" in result.output
    back = read_outputs(NOISE_ANALYSIS, out)
    assert torch.equal(torch.stack([read_png(out / r["file"], 1) for r in back.images]), back.pixels)


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
    # the median of the images that fool the model, the middle two averaged (numpy's median)
    fooled = [r for r in doc["results"]["images"] if r["fooled"]]
    assert doc["results"]["median_linf"] == pytest.approx(float(np.median([r["linf"] for r in fooled])), abs=1e-6)
    assert f"median change of the {len(fooled)} image" in result.output and "that fool it: L∞" in result.output
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
