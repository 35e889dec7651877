"""The command line: every command documented, data check counts, clean one-line errors, and a
whole train → list → evaluate → predict → sanity round on files written by the tests."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from probe.cli import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]


def commands(group: typer.Typer, prefix=()):
    for info in group.registered_commands:
        yield (*prefix, info.name), info
    for sub in group.registered_groups:
        yield from commands(sub.typer_instance, (*prefix, sub.name))


ALL = [" ".join(path) for path, _ in commands(app)]


def test_the_commands_are_there():
    assert {"data check", "data fetch", "models zoo", "models list", "train", "evaluate", "predict",
            "sanity"} <= set(ALL)


@pytest.mark.parametrize("command", ALL)
def test_every_command_has_help_and_is_in_the_readme(command):
    result = runner.invoke(app, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    _, info = next((p, i) for p, i in commands(app) if " ".join(p) == command)
    assert (info.callback.__doc__ or "").strip(), f"{command} has no help text"
    # the docstring's words, flowed: no line break of the source left in the terminal's text
    assert info.help == " ".join(info.callback.__doc__.split()), command
    summary = " ".join(info.help.split()[:6])
    assert summary in " ".join(result.output.replace("│", " ").split()), f"{command}: {summary!r} is not shown whole"
    assert f"probe {command}" in (ROOT / "README.md").read_text(), f"README does not show `probe {command}`"


def test_every_analysis_of_the_registry_has_its_command():
    from probe.analysis.registry import ANALYSES
    for entry in ANALYSES.values():
        assert entry.command in ALL, f"analysis {entry.name}: no `probe {entry.command}` command"


def test_data_check_prints_the_counts(mnist_dir):
    result = runner.invoke(app, ["data", "check", "--dataset", "mnist", "--data-dir", str(mnist_dir)])
    assert result.exit_code == 0, result.output
    assert re.search(r"train\D+180\b", result.output) and re.search(r"val\D+20\b", result.output)
    assert re.search(r"test\D+50\b", result.output)


def run_cli(*args, **env):
    """A real process, as a user runs it: what reaches the terminal is what we check."""
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=120)


def test_a_corrupt_file_is_one_line_and_exit_code_2(mnist_dir, tmp_path):
    bad = tmp_path / "mnist"
    bad.mkdir()
    for f in mnist_dir.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    (bad / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    result = run_cli("data", "check", "--dataset", "mnist", "--data-dir", str(bad))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert "train-images-idx3-ubyte.gz" in result.stderr


def test_missing_folder_and_unknown_names_are_clean_errors(tmp_path):
    for args, words in [
        (["data", "check", "--dataset", "mnist", "--data-dir", str(tmp_path / "nope")], "nope"),
        (["train", "--preset", "no-such-preset", "--out", str(tmp_path / "m")], "unknown preset"),
        (["evaluate", "--model", str(tmp_path / "none")], "no such model folder"),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert words in result.output and "Traceback" not in result.output


def test_train_list_evaluate_predict_on_fixture_files(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "trained_models" / "tiny"
    args = ["train", "--dataset", "mnist", "--arch", "resnet8", "--width", "0.25", "--epochs", "1",
            "--batch-size", "30", "--data-dir", str(mnist_dir), "--out", str(out), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "epoch   1/1" in result.output and "test error" in result.output
    again = runner.invoke(app, args)  # the folder exists now: refused, nothing overwritten
    assert again.exit_code == 2 and "--resume" in again.output

    listing = runner.invoke(app, ["models", "list"])
    assert listing.exit_code == 0 and re.search(r"tiny\s+mnist\s+resnet8 ×0.25", listing.output)

    ev = runner.invoke(app, ["evaluate", "--model", str(out), "--data-dir", str(mnist_dir)])
    assert ev.exit_code == 0 and "(50 images)" in ev.output
    # every accuracy with its n and 95% Wilson interval, the overall one and each class's
    from probe.methods.confusion import wilson_interval
    first = ev.output.splitlines()[0]
    accuracy = float(re.search(r"accuracy ([\d.]+)%", first).group(1)) / 100
    low, high = wilson_interval(round(accuracy * 50), 50)
    assert f"accuracy {100 * accuracy:.2f}% ({100 * low:.2f}–{100 * high:.2f}%)" in first
    per_class = [line for line in ev.output.splitlines()[1:] if " of " in line]
    assert per_class and sum(int(re.search(r" of +([\d,]+)", line).group(1).replace(",", "")) for line in per_class) == 50

    csv_path = tmp_path / "p.csv"
    pr = runner.invoke(app, ["predict", "--model", str(out), "--data-dir", str(mnist_dir), "-o", str(csv_path)])
    assert pr.exit_code == 0, pr.output
    assert f"(accuracy {100 * accuracy:.2f}% of 50, 95% interval {100 * low:.2f}–{100 * high:.2f}%;" in pr.output
    rows = list(csv.DictReader(csv_path.open()))
    assert len(rows) == 50 and set(rows[0]) >= {"image", "label", "prediction", "p_0", "p_9"}
    assert all(abs(sum(float(r[f"p_{k}"]) for k in range(10)) - 1) < 1e-4 for r in rows)
    kaggle = runner.invoke(app, ["predict", "--model", str(out), "--data-dir", str(mnist_dir),
                                 "--format", "kaggle", "-o", str(tmp_path / "k.csv")])
    assert kaggle.exit_code == 2 and "SFDDD" in kaggle.output


def test_sanity_passes_for_a_small_resnet(tmp_path):
    result = runner.invoke(app, ["sanity", "--arch", "resnet8", "--width", "0.5",
                                 "--dataset", "mnist", "--data-dir", str(tmp_path / "absent")])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS") == 3


def test_models_zoo_lists_paper_parameter_counts():
    result = runner.invoke(app, ["models", "zoo"])
    assert result.exit_code == 0
    assert re.search(r"resnet20\s.*269,722", result.output)
    assert re.search(r"resnet110\s.*1,727,962", result.output)


def test_python_m_probe_and_cli_py_run_the_same_app():
    a = subprocess.run([sys.executable, "-m", "probe", "--help"], capture_output=True, text=True)
    b = run_cli("--help")
    assert a.returncode == b.returncode == 0
    for cmd in ("train", "evaluate", "data", "models", "sanity", "predict"):
        assert cmd in a.stdout and cmd in b.stdout


def test_sfddd_train_evaluate_and_kaggle_submission(sfddd_dir, tmp_path):
    out = tmp_path / "sfddd-tiny"
    train = runner.invoke(app, ["train", "--dataset", "sfddd", "--arch", "resnet8", "--width", "0.25",
                                "--epochs", "1", "--batch-size", "20", "--data-dir", str(sfddd_dir),
                                "--out", str(out), "--quiet"])
    assert train.exit_code == 0, train.output
    ev = runner.invoke(app, ["evaluate", "--model", str(out), "--data-dir", str(sfddd_dir)])
    assert ev.exit_code == 0 and "log loss" in ev.output and "phone_right" in ev.output
    sub = tmp_path / "submission.csv"
    pr = runner.invoke(app, ["predict", "--model", str(out), "--data-dir", str(sfddd_dir),
                             "--split", "kaggle", "--format", "kaggle", "-o", str(sub)])
    assert pr.exit_code == 0, pr.output
    rows = list(csv.reader(sub.open()))
    assert rows[0] == ["img"] + [f"c{i}" for i in range(10)]
    assert sorted(r[0] for r in rows[1:]) == [f"img_{100000 + i}.jpg" for i in range(6)]
    assert all(abs(sum(map(float, r[1:])) - 1) < 1e-4 for r in rows[1:])


def test_resume_with_only_the_folder_and_conflicting_options(mnist_dir, tmp_path):
    out = tmp_path / "m"
    base = ["--data-dir", str(mnist_dir), "--out", str(out), "--quiet"]
    first = runner.invoke(app, ["train", "--dataset", "mnist", "--arch", "resnet8", "--width", "0.25",
                                "--epochs", "1", "--batch-size", "30", *base])
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, ["train", "--resume", "--data-dir", str(mnist_dir), "--out", str(out)])
    assert again.exit_code == 0 and "already complete" in again.output
    other = runner.invoke(app, ["train", "--resume", "--lr", "0.5", *base])
    assert other.exit_code == 2 and "different run" in other.output
    both = runner.invoke(app, ["train", "--arch", "preact_resnet20", "--depth", "56", *base])
    assert both.exit_code == 2 and "not both" in both.output
    neg = runner.invoke(app, ["train", "--dataset", "mnist", "--epochs", "1", "--lr", "-1", *base])
    assert neg.exit_code == 2 and "--lr must be positive" in neg.output
    a_file = tmp_path / "file"
    a_file.write_text("x")
    to_file = runner.invoke(app, ["train", "--dataset", "mnist", "--epochs", "1", "--data-dir",
                                  str(mnist_dir), "--out", str(a_file)])
    assert to_file.exit_code == 2 and "is a file" in to_file.output


@pytest.mark.parametrize("checkpoint", ["none", "this run's", "an older run's", "resumed"])
def test_ctrl_c_in_training_says_whether_there_is_anything_to_resume(checkpoint, tmp_path, monkeypatch):
    """Ctrl-C before the first checkpoint must not promise a resume that cannot happen (nor point at
    the checkpoint of an older run that --force is replacing); the command it gives carries the
    options the run needs again (--data-dir)."""
    import time
    import probe.train.run
    from probe.train.checkpoint import RESUME
    out, data = tmp_path / "my run", tmp_path / "my data"
    out.mkdir()
    if checkpoint == "an older run's" or checkpoint == "resumed":
        (out / RESUME).write_bytes(b"")
        os.utime(out / RESUME, (time.time() - 3600, time.time() - 3600))

    def interrupted(*args, **kwargs):
        if checkpoint == "this run's":
            (out / RESUME).write_bytes(b"")  # written by this run, then Ctrl-C
        raise KeyboardInterrupt
    monkeypatch.setattr(probe.train.run, "train", interrupted)
    monkeypatch.setattr(probe.train.run, "saved_config", lambda folder: probe.train.config.preset_config(
        None, dataset="mnist", epochs=1))
    args = ["train", "--resume"] if checkpoint == "resumed" else ["train", "--dataset", "mnist", "--epochs", "1", "--force"]
    result = runner.invoke(app, [*args, "--out", str(out), "--data-dir", str(data)])
    assert result.exit_code == 130, result.output
    if checkpoint in ("this run's", "resumed"):
        assert (f"the last checkpoint in {out} is whole; continue with probe train --resume --out '{out}' "
                f"--data-dir '{data}'") in result.output
    else:
        assert "interrupted before the first checkpoint: nothing to resume" in result.output
        assert "--resume" not in result.output


@pytest.mark.parametrize("options, words", [
    (["--adv-steps", "3"], "--adv-steps: the steps of PGD adversarial training; give --adversarial pgd"),
    (["--adversarial", "fgsm-rs", "--eps", "0.3", "--adv-steps", "3"], "(FGSM-RS takes one step)"),
    (["--adv-step-size", "0.1"], "--adv-step-size: the step of adversarial training; add --adversarial"),
])
def test_adversarial_options_without_their_attack_are_refused_not_ignored(options, words, tmp_path):
    result = runner.invoke(app, ["train", "--dataset", "mnist", "--iters", "3", "--out", str(tmp_path / "m"), *options])
    assert result.exit_code == 2 and words in result.output and not (tmp_path / "m").exists(), result.output
