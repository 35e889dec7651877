"""Atomic writes: a failure at any point leaves the old file whole and no temporary behind."""
import os
import stat

import pytest

import probe
from probe import io as pio


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "weights.safetensors"
    pio.atomic_write_bytes(target, b"old and whole")

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(pio.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        pio.atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"old and whole"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.safetensors"]


def test_an_exception_while_writing_discards_the_new_version(tmp_path):
    target = tmp_path / "meta.json"
    pio.atomic_write_text(target, "{}")
    with pytest.raises(KeyboardInterrupt):
        with pio.atomic_writer(target) as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert target.read_text() == "{}" and len(list(tmp_path.iterdir())) == 1


def test_written_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        pio.atomic_write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644


def test_public_load_model(tmp_path):
    from train_helpers import tiny_config, tiny_splits
    from probe.train.run import train
    train(tiny_config(epochs=1), tmp_path / "m", splits=tiny_splits())
    model, meta = probe.load_model(tmp_path / "m")
    assert not model.training and meta["arch_name"] == "resnet8" and probe.__version__


def test_check_writable_says_what_a_write_would_meet_and_leaves_nothing(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        pio.check_writable(tmp_path / "file" / "out.csv")
    with pytest.raises(IsADirectoryError):
        pio.check_writable(tmp_path / "folder")
    pio.check_writable(tmp_path / "new" / "deeper" / "out.csv")  # folders to be made: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "folder"]  # nothing made or left

    def refused(*args, **kwargs):  # a read-only or full file system (root ignores mode bits)
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(pio.tempfile, "mkstemp", refused)
    with pytest.raises(PermissionError) as e:
        pio.check_writable(tmp_path / "folder" / "out.csv")
    assert e.value.filename == str(tmp_path / "folder" / "out.csv") and "cannot write here" in str(e.value)
