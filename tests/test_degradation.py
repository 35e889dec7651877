"""`probe experiment degradation`: the runs (same seed, schedule and data but for the shortcuts),
run by run resumable, the manifest's refusal, Figure 6 as drawn, the table's numbers against the
histories, the report's section, and one-line errors for bad options. One tiny experiment
(depths 8 and 14, width 0.25, 100 images, 2 epochs) trained once for the module, and interrupted
once on the way, as a Ctrl-C would."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from probe.cli import main
from probe.data.imageset import ImageSet
from probe.data.subset import stratified_order, stratified_subset
from probe.errors import ConfigError
from probe.experiments import degradation_results as results
from probe.experiments.degradation import MANIFEST, Settings, previous_result, run_degradation
from probe.figures.curves import TRAIN_WIDTH, VAL_WIDTH
from probe.methods.confusion import mcnemar_exact
from probe.report.build import run_report
from probe.train.callbacks import Callback

from fixtures import write_mnist
from train_helpers import TINY_SPEC

SETTINGS = Settings(depths=(8, 14), epochs=2, subset=100, width=0.25, batch_size=25)
RUNS = ("plain8", "resnet8", "plain14", "resnet14")
CLI = ["experiment", "degradation", "--depths", "8", "14", "--epochs", "2", "--subset", "100", "--width", "0.25",
       "--batch-size", "25", "--device", "cpu"]


class CtrlC(Callback):
    """A Ctrl-C right after plain14's first epoch was checkpointed."""

    def on_epoch_end(self, trainer, record):
        if trainer.cfg.arch == "plain14" and record["epoch"] == 1:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, one_thread):
    """The experiment folder, its data, and what the interrupted, resumed and repeated runs did."""
    base = tmp_path_factory.mktemp("degradation")
    data = write_mnist(base / "mnist", n_train=200, n_test=50)
    out = base / "exp"
    with pytest.raises(KeyboardInterrupt):
        run_degradation(SETTINGS, out, data_dir=data, device="cpu", callbacks=[CtrlC()])
    interrupted = {name: (out / name / "meta.json").is_file() for name in RUNS}
    mtimes = {name: (out / name / "weights.safetensors").stat().st_mtime_ns for name in RUNS[:2]}
    resumed = run_degradation(SETTINGS, out, data_dir=data, device="cpu")
    return {"out": out, "data": data, "interrupted": interrupted, "mtimes": mtimes,
            "resumed": resumed.result["status"], "result": resumed.result["result"]}


def meta(out, name) -> dict:
    return json.loads((out / name / "meta.json").read_text())


def test_every_run_has_the_same_seed_schedule_and_data(experiment):
    out = experiment["out"]
    configs = {name: meta(out, name)["train"] for name in RUNS}
    for name, config in configs.items():
        assert config.pop("arch") == name
        m = meta(out, name)
        assert m["split_sizes"] == {"train": 100, "val": 20, "test": 50}
        assert m["arch"]["shortcut"] == ("none" if name.startswith("plain") else "A")
        assert "test" in m["metrics"] and m["epochs_done"] == 2
    first = configs["plain8"]
    assert first["seed"] == 0 and first["epochs"] == 2 and first["schedule"] == "paper" and first["batch_size"] == 25
    assert all(c == first for c in configs.values())
    # plain and residual twins: the same parameters (option A shortcuts have none)
    assert meta(out, "plain14")["parameters"] == meta(out, "resnet14")["parameters"]


def test_an_interrupted_experiment_resumes_run_by_run(experiment):
    assert experiment["interrupted"] == {"plain8": True, "resnet8": True, "plain14": True, "resnet14": False}
    assert experiment["resumed"] == {"plain8": "skipped", "resnet8": "skipped", "plain14": "resumed",
                                     "resnet14": "trained"}
    out = experiment["out"]
    history = json.loads((out / "plain14" / "history.json").read_text())
    assert [r["epoch"] for r in history] == [1, 2]
    for name, mtime in experiment["mtimes"].items():  # the complete runs were not touched
        assert (out / name / "weights.safetensors").stat().st_mtime_ns == mtime


def test_a_rerun_skips_every_complete_run(experiment, capsys):
    out = experiment["out"]
    before = {name: (out / name / "weights.safetensors").stat().st_mtime_ns for name in RUNS}
    with pytest.raises(SystemExit) as e:
        main([*CLI, "--out", str(out), "--data-dir", str(experiment["data"])])
    printed = capsys.readouterr().out
    assert e.value.code == 0
    assert "0 run(s) trained, 0 resumed, 4 already complete" in printed and "resnet14: complete, skipped" in printed
    assert before == {name: (out / name / "weights.safetensors").stat().st_mtime_ns for name in RUNS}


def test_other_settings_in_the_same_folder_are_refused(experiment, capsys, tmp_path):
    out = experiment["out"]
    manifest = (out / MANIFEST).read_text()
    with pytest.raises(ConfigError, match=r"epochs: 2 there, 3 now"):
        run_degradation(Settings(**(SETTINGS.to_json() | {"epochs": 3, "depths": (8,)})), out, device="cpu")
    with pytest.raises(SystemExit) as e:
        main([*CLI[:-2], "--seed", "1", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.count("\n") == 1 and "seed: 0 there, 1 now" in err
    assert (out / MANIFEST).read_text() == manifest
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="no experiment.json"):
        run_degradation(SETTINGS, tmp_path / "other", device="cpu")


def test_figure_6_two_panels_one_colour_per_depth(experiment):
    out = experiment["out"]
    assert (out / "degradation.png").is_file() and (out / "degradation.pdf").read_bytes().startswith(b"%PDF")
    fig = results.figures(previous_result(out))["degradation"]
    plain, res = fig.axes
    assert plain.get_ylim() == res.get_ylim() and plain.get_xlim() == res.get_xlim()
    lines = {line.get_gid(): line for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert set(lines) == {f"{run}-{split}" for run in RUNS for split in ("train", "val")}
    assert {line.get_gid() for line in plain.get_lines() if line.get_gid()} == \
        {f"{run}-{split}" for run in ("plain8", "plain14") for split in ("train", "val")}
    for run in RUNS:
        assert lines[f"{run}-train"].get_linewidth() == TRAIN_WIDTH < VAL_WIDTH == lines[f"{run}-val"].get_linewidth()
    for depth in (8, 14):
        assert lines[f"plain{depth}-val"].get_color() == lines[f"resnet{depth}-val"].get_color() \
            == lines[f"plain{depth}-train"].get_color()
    assert lines["plain8-val"].get_color() != lines["plain14-val"].get_color()
    assert [t.get_text() for t in fig.legends[0].get_texts()][:2] == ["depth 8", "depth 14"]


def test_the_table_holds_the_histories_last_values(experiment):
    out, result = experiment["out"], previous_result(experiment["out"])
    rows = {(r["depth"], r["kind"]): r for r in results.final_errors(result)}
    assert len(rows) == 4
    for (depth, kind), row in rows.items():
        last = json.loads((out / f"{kind}{depth}" / "history.json").read_text())[-1]
        assert row["train_error"] == last["train_error"] and row["val_error"] == last["val_error"]
        assert row["test_error"] == pytest.approx(meta(out, f"{kind}{depth}")["metrics"]["test"]["error"])
        assert (row["train_n"], row["val_n"], row["test_n"]) == (100, 20, 50)
        for split in ("train", "val", "test"):
            low, high = row[f"{split}_ci95"]
            assert 0 <= low <= row[f"{split}_error"] <= high <= 1
    for pair in results.paired_tests(result):
        plain, res = result.run("plain", pair["depth"]), result.run("resnet", pair["depth"])
        only_plain = len(set(plain.test_wrong) - set(res.test_wrong))
        only_res = len(set(res.test_wrong) - set(plain.test_wrong))
        assert (pair["only_plain"], pair["only_resnet"]) == (only_plain, only_res)
        assert pair["p_value"] == mcnemar_exact(only_plain, only_res)
    written = json.loads((out / "results.json").read_text())
    assert written["final_errors"] == json.loads(json.dumps(results.final_errors(result)))
    assert "| 14 | ResNet |" in (out / "summary.md").read_text()


def test_the_report_places_the_experiment(experiment, tmp_path):
    copy = shutil.copytree(experiment["out"], tmp_path / "degradation-mnist")
    done = run_report([copy], data_dir=experiment["data"], out=tmp_path / "report", formats=("html",))
    html = (tmp_path / "report" / "report.html").read_text()
    assert "The degradation experiment: degradation-mnist" in html and "McNemar" in html
    assert done.result["figures"] == 1
    assert "Experiments: degradation-mnist." in html and "What the network looks at" not in html


def test_the_subset_is_seeded_stratified_and_nested():
    labels = torch.arange(1000) % 10
    labels[:400] = 3  # an unbalanced split
    order = stratified_order(labels, seed=5)
    assert torch.equal(order, stratified_order(labels, seed=5)) and not torch.equal(order, stratified_order(labels, 6))
    assert sorted(order.tolist()) == list(range(1000))
    assert set(labels[order[:10]].tolist()) == set(range(10))  # the first 10: one of each class
    counts = torch.bincount(labels[order[:100]], minlength=10)
    assert counts[3] == 46 and counts.sum() == 100  # 460 of 1,000 images are 3s
    data = ImageSet(torch.zeros(1000, 1, 12, 12, dtype=torch.uint8), labels, TINY_SPEC)
    small, large = stratified_subset(data, 20, 5), stratified_subset(data, 50, 5)
    assert len(small) == 20 and len(large) == 50
    with pytest.raises(ConfigError, match="at least 10"):
        stratified_subset(data, 9, 5)
    with pytest.raises(ConfigError, match="only 1,000"):
        stratified_subset(data, 1001, 5)


BAD = [
    (["--depths", "21"], "--depths 21: a CIFAR-style ResNet has depth 6n+2"),
    (["--depths", "8", "8"], "a depth given twice"),
    ([], "--depths: give one or more depths 6n+2"),
    (["--depths", "20", "--subset", "5"], "--subset 5: give 128 or more"),
    (["--depths", "20", "--subset", "50"], "--subset 50: give 128 or more (a whole batch of --batch-size 128"),
    (["--depths", "20", "--epochs", "0"], "--epochs 0"),
    (["--depths", "abc"], "Invalid value for '--depths'"),
]


@pytest.mark.parametrize("argv,words", BAD, ids=[" ".join(a) or "no depths" for a, _ in BAD])
def test_bad_options_are_one_line_errors(argv, words, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["experiment", "degradation", *argv, "--out", str(tmp_path / "exp")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and words in err and err.count("\n") == 1, err
    assert not (tmp_path / "exp").exists()  # refused before anything was written


def test_a_subset_larger_than_the_split_leaves_no_manifest(experiment, tmp_path):
    too_many = Settings(**(SETTINGS.to_json() | {"subset": 181, "depths": (8,)}))  # the split has 180 images
    with pytest.raises(ConfigError, match="--subset 181: the training split has only 180 images"):
        run_degradation(too_many, tmp_path / "exp", data_dir=experiment["data"], device="cpu")
    assert not (tmp_path / "exp" / MANIFEST).exists()


def test_a_one_epoch_experiment_draws_its_points():
    """One epoch per run: lines of one point drew nothing (an empty Figure 6); now markers."""
    from types import SimpleNamespace
    from probe.figures.degradation import degradation_figure
    runs = [SimpleNamespace(depth=d, kind=k, epoch=[1], train_error=[0.9 - d / 100], val_error=[0.8 - d / 100])
            for d in (8, 14) for k in ("plain", "resnet")]
    fig = degradation_figure(runs, [8, 14])
    marked = [line for ax in fig.axes for line in ax.get_lines() if line.get_gid()]
    assert len(marked) == 8 and all(line.get_marker() in ("s", "D") for line in marked)
    assert {h.get_marker() for h in fig.legends[0].legend_handles[-2:]} == {"s", "D"}
    import matplotlib.pyplot as plt
    plt.close(fig)


def test_the_training_error_rests_on_the_images_its_steps_saw():
    """1,000 images in batches of 128: an epoch drops the last 104, so its error counts 896."""
    from types import SimpleNamespace
    from probe.experiments.degradation import _last_epoch_images
    meta = {"train": {"batch_size": 128}, "split_sizes": {"train": 1000}}
    two = SimpleNamespace(meta=meta, history=lambda: [{"epoch": 1, "step": 7}, {"epoch": 2, "step": 14}])
    cut = SimpleNamespace(meta=meta, history=lambda: [{"epoch": 1, "step": 3}])  # an --iters run of 3 steps
    assert _last_epoch_images(two) == 7 * 128 and _last_epoch_images(cut) == 3 * 128
    assert _last_epoch_images(SimpleNamespace(meta=meta, history=lambda: [])) == 1000
