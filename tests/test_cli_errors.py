"""Every mistake is one line on stderr and exit code 2: Typer's usage errors included, which the
console script (`probe.cli.main`) turns from a multi-line box into one line."""
import pytest

from probe.cli import main

# (arguments, words the one line must hold)
USAGE_ERRORS = [
    (["train", "--dataset", "imagenet"], "'imagenet' is not one of"),
    (["train", "--batch-size", "0", "--dataset", "mnist", "--epochs", "1"], "--batch-size"),
    (["--bogus"], "No such option: --bogus"),
    (["evaluate"], "Missing option '--model'"),
    (["models", "zoo", "--input", "3x0x32"], "--input '3x0x32'"),
    (["models", "zoo", "--input", "abc"], "--input 'abc'"),
    (["evaluate", "--model", "no/such/folder"], "no/such/folder: no such model folder"),
    (["report", "--model", "trained_models/mnist-resnet20", "--device", "tpu"], "unknown device 'tpu'"),
]


@pytest.mark.parametrize("argv,words", USAGE_ERRORS, ids=[" ".join(a) for a, _ in USAGE_ERRORS])
def test_usage_errors_are_one_line_and_exit_2(argv, words, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err


def test_an_unwritable_output_names_the_users_path(tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")

    def too_late(*args, **kwargs):
        raise AssertionError("predicted before the output path was checked")

    monkeypatch.setattr("probe.analysis.predict.predict_logits", too_late)
    with pytest.raises(SystemExit) as e:
        main(["predict", "--model", "trained_models/mnist-resnet20", "--split", "val",
              "-o", str(tmp_path / "file" / "out.csv"), "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and ".tmp" not in err and err.count("\n") == 1
    assert f"{tmp_path / 'file' / 'out.csv'}: {tmp_path / 'file'} is a file, not a folder" in err


def test_help_still_works(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "train" in capsys.readouterr().out
