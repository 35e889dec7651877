"""Hostile and careless files (issue 18, part A): a device or pipe where an output goes, JSON
nested or numbered to break the parser, files too large to read whole, meta.json values that
pass a type check and break later, options that allocate or run without bound, huge images.
Each ends in one ProbeError line (CLI: exit code 2), never a traceback, hang or lost device."""
import os
import stat
from pathlib import Path

import pytest

from probe import io as pio
from probe.cli import main
from probe.errors import ProbeError


def cli_error(argv, capsys) -> str:
    """The one line a CLI run says before exiting with code 2."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


# ---- 1. an output path that exists and is not a regular file ------------------------------------

def test_a_device_is_never_replaced_by_an_output(monkeypatch):
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")

    def replace(*args):  # so that a failing test cannot turn /dev/full into a file
        raise AssertionError("would have replaced /dev/full")
    monkeypatch.setattr(pio.os, "replace", replace)
    for check in (pio.check_writable, lambda p: pio.atomic_write_text(p, "x")):
        with pytest.raises(ProbeError, match="/dev/full: is a character device, not a regular file"):
            check("/dev/full")
    assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_predict_refuses_a_fifo_as_output_before_predicting(tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "out.csv"
    os.mkfifo(fifo)

    def too_late(*args, **kwargs):
        raise AssertionError("predicted before the output path was checked")
    monkeypatch.setattr("probe.analysis.predict.predict_logits", too_late)
    err = cli_error(["predict", "--model", "trained_models/mnist-resnet20", "--split", "val",
                     "-o", fifo, "--data-dir", tmp_path], capsys)
    assert f"{fifo}: is a named pipe (FIFO), not a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["out.csv"]
