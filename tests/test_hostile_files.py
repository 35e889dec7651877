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
    assert f"{fifo}: is a FIFO (named pipe), not a regular file" in err
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and os.listdir(tmp_path) == ["out.csv"]


# ---- 2. JSON that breaks the parser: nested 200,000 deep, a 5,000-digit integer -------------------

DEEP, LONG_INT = "[" * 200_000, '{"n": ' + "7" * 5000 + "}"


def tiny_model(folder: Path) -> Path:
    from test_model_folder import write_tiny_model
    return write_tiny_model(folder)


@pytest.mark.parametrize("text", [DEEP, LONG_INT], ids=["deep", "long-int"])
def test_a_hostile_meta_json_is_one_line_and_does_not_hide_the_other_models(text, tmp_path, capsys):
    tiny_model(tmp_path / "good")
    (tiny_model(tmp_path / "bad") / "meta.json").write_text(text)
    err = cli_error(["predict", "--model", tmp_path / "bad", "-o", tmp_path / "p.csv"], capsys)
    assert f"{tmp_path / 'bad' / 'meta.json'}: corrupt JSON" in err
    with pytest.raises(SystemExit) as e:
        main(["models", "list", "--root", str(tmp_path)])
    out = capsys.readouterr().out
    assert any(line.startswith("good ") and "50.00%" in line for line in out.splitlines())
    assert e.value.code == 0 and "bad: corrupt JSON" in out


@pytest.mark.parametrize("text", [DEEP, LONG_INT], ids=["deep", "long-int"])
def test_a_hostile_history_json_is_one_line_in_curves(text, tmp_path, capsys):
    folder = tiny_model(tmp_path / "m")
    (folder / "history.json").write_text(text)
    err = cli_error(["curves", folder, "--out", tmp_path / "out"], capsys)
    assert f"{folder / 'history.json'}: corrupt JSON" in err


@pytest.mark.parametrize("text", [DEEP, LONG_INT], ids=["deep", "long-int"])
def test_a_hostile_resume_state_is_one_line_in_train_resume(text, tmp_path, capsys):
    from safetensors.torch import save_file
    import torch
    (tmp_path / "run").mkdir()
    save_file({"rng.torch": torch.get_rng_state()}, tmp_path / "run" / "resume.safetensors",
              metadata={"state": text})
    err = cli_error(["train", "--resume", "--out", tmp_path / "run"], capsys)
    assert f"{tmp_path / 'run' / 'resume.safetensors'}: corrupt JSON" in err


def test_a_hostile_model_info_file_or_option_is_one_config_error(tmp_path):
    from probe.errors import ConfigError
    from probe.models.model_info import info_options
    (tmp_path / "info.json").write_text(DEEP)
    with pytest.raises(ConfigError, match="info.json: corrupt JSON"):
        info_options([str(tmp_path / "info.json")])
    with pytest.raises(ConfigError, match="--model-info factory_kwargs=: corrupt JSON"):
        info_options(["factory_kwargs=" + "[" * 100_000])
    with pytest.raises(ConfigError, match="--model-info classes=: corrupt JSON"):
        info_options(["classes=" + LONG_INT.replace('{"n": ', "[").replace("}", "]")])


# ---- 3. files too large to read whole ------------------------------------------------------------

def sparse(path: Path, size: int = 7 * 2 ** 30) -> Path:
    """A file of `size` bytes that takes no disk (and, read whole, `size` bytes of memory)."""
    with open(path, "r+b" if path.exists() else "wb") as f:
        f.truncate(size)
    return path


def test_a_sparse_7gb_weights_or_history_is_refused_before_reading(tmp_path, capsys):
    from probe.errors import ModelFileError
    from probe.models.folder import load_model, read_model_folder
    folder = tiny_model(tmp_path / "m")
    sparse(folder / "history.json")
    with pytest.raises(ModelFileError, match=r"history.json: 7,516,192,768 bytes, more than any"):
        read_model_folder(folder).history()
    sparse(folder / "weights.safetensors")
    with pytest.raises(ModelFileError, match=r"weights.safetensors: 7,516,192,768 bytes, more than any"):
        load_model(folder)
    with pytest.raises(ModelFileError, match=r"weights.safetensors: more than"):
        read_model_folder(folder).weights_sha256()  # the report's cache key: not 7 GB hashed
    err = cli_error(["predict", "--model", folder, "-o", tmp_path / "p.csv"], capsys)
    assert "weights.safetensors: 7,516,192,768 bytes" in err


def test_weights_declaring_more_than_the_network_holds_are_refused_before_reading(tmp_path):
    """A legal header whose one tensor is 2 GB (sparse): judged by meta.json's network, not read."""
    import json
    import struct
    from probe.errors import ModelFileError
    from probe.models.folder import load_model
    folder = tiny_model(tmp_path / "m")
    n = 2 ** 29
    header = json.dumps({"w": {"dtype": "F32", "shape": [n], "data_offsets": [0, 4 * n]}}).encode()
    weights = folder / "weights.safetensors"
    weights.write_bytes(struct.pack("<Q", len(header)) + header)
    sparse(weights, 8 + len(header) + 4 * n)
    with pytest.raises(ModelFileError, match="2,147,483,648 bytes of tensors, more than the network in meta.json"):
        load_model(folder)
    sparse(weights, 8 + len(header) + 4 * n - 1)  # one byte short of what the header says
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(folder)


# ---- 4. meta.json values that pass a type check and break later ---------------------------------

HOSTILE_VALUES = [1e300, -1e300, float("inf"), float("nan"), 10 ** 39, -(10 ** 39), 65536, 0, -1, 2.5,
                  "x", "", [], [1e300], [65536] * 3, ["x"] * 3, {"a": 1}, True, None]


def meta_fields(meta: dict) -> list[tuple[str, ...]]:
    """Every field of the architecture and the dataset, and the others the analyses read."""
    return ([("arch", k) for k in meta["arch"]] + [("dataset", k) for k in meta["dataset"]]
            + [("train", "seed"), ("train", "split_seed"), ("train", "split_by"), ("metrics", "test", "error"),
               ("format_version",), ("parameters",), ("arch_name",), ("created",), ("name",)])


def test_every_meta_field_holding_a_hostile_value_is_a_model_file_error_or_works(tmp_path):
    """18 values × every field: read, list, describe and load end in a ModelFileError or a
    result, never an OverflowError, a TypeError or a 16 GiB allocation."""
    import json
    from probe.errors import ModelFileError
    from probe.models.folder import load_model, read_model_folder
    from probe.report.structure import model_card
    from probe.report.tables import models_text
    folder = tiny_model(tmp_path / "models" / "m")
    base = json.loads((folder / "meta.json").read_text())
    refused = 0
    for where in meta_fields(base):
        for value in HOSTILE_VALUES:
            meta = json.loads(json.dumps(base))
            *path, key = where
            target = meta
            for p in path:
                target = target.setdefault(p, {})
            target[key] = value
            (folder / "meta.json").write_text(json.dumps(meta))  # NaN and Infinity as Python writes them
            said = f"{'.'.join(where)} = {value!r:.40}"
            text = models_text(tmp_path / "models")
            try:
                read = read_model_folder(folder)
            except ModelFileError as e:
                refused += 1
                assert "\n" not in str(e) and len(str(e)) < 600, said
                assert f"m: {str(e).split(': ', 1)[1][:40]}" in text, said  # listed as unreadable
                continue
            model_card(read, "m")
            try:
                load_model(folder)
            except ModelFileError:
                pass
    assert refused > 300


@pytest.mark.parametrize("field, value, words", [
    ("arch.width", 1e300, "'width': expected a number in 1/256..64, got 1e+300"),
    ("arch.width", 1e-300, "'width': expected a number in 1/256..64"),
    ("arch.num_classes", 10 ** 39, "'num_classes': expected a positive integer (at most 100,000), got an integer"),
    ("arch.stages", [4000, 4000, 4000], "depth 24,002 is beyond any sensible network (at most 10,000 layers"),
    ("dataset.height", 65536, "'height': expected an integer in 1..4096, got 65536"),
    ("dataset.channels", 5, "'channels': expected an integer in 1..4"),
    ("dataset.std", [1e-300], "'std': expected 1 number(s) in 1e-06..1e+06"),
    ("train.split_seed", -1, "train.split_seed' is -1, not a seed"),
])
def test_sizes_beyond_what_a_model_can_have_are_refused_with_the_bound(field, value, words, tmp_path, capsys):
    import json
    folder = tiny_model(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    part, key = field.split(".")
    meta[part][key] = value
    (folder / "meta.json").write_text(json.dumps(meta))
    err = cli_error(["predict", "--model", folder, "-o", tmp_path / "p.csv"], capsys)
    assert f"{folder / 'meta.json'}: field '{part}'" in err or f"field '{field}'" in err, err
    assert words in err, err


# ---- 5. options that allocate or run without bound -------------------------------------------

UNBOUNDED = [  # (arguments, words of the one line): refused before any model or data is read
    (["fool", "--n", "1000000000"], "--n 1000000000: give from 1 to 1,000"),
    (["fool", "--steps", "1000000000"], "--steps 1000000000: give from 1 to 10,000"),
    (["fool", "--threads", "1000000000"], "--threads 1000000000: give from 1 to 1,024"),
    (["attack", "--steps", "1000000000"], "--steps 1000000000: give from 1 to 10,000"),
    (["attack", "--restarts", "1000000000"], "--restarts 1000000000: give from 1 to 100"),
    (["attack", "--batch-size", "1000000000"], "--batch-size 1000000000: give from 1 to 100,000"),
    (["attack", "--eps", ",".join(str(k / 1000) for k in range(1000))], "--eps: 1,000 values, at most 100"),
    (["saliency", "--class", "3", "--n", "1000000000"], "--n 1000000000: give from 1 to 100"),
    (["saliency", "--index", ",".join(map(str, range(1000)))], "--index: 1,000 images, at most 100"),
    (["saliency", "--index", "7" * 5000], "--index '77777"),
    (["misclassified", "--batch-size", "1000000000"], "--batch-size 1000000000: give from 1 to 100,000"),
    (["predict", "--batch-size", "1000000000"], "--batch-size 1000000000: give from 1 to 100,000"),
]


@pytest.mark.parametrize("argv, words", UNBOUNDED, ids=[" ".join(a)[:40] for a, _ in UNBOUNDED])
def test_unbounded_options_are_refused_with_their_maximum(argv, words, tmp_path, capsys, monkeypatch):
    def too_late(*args, **kwargs):
        raise AssertionError("started before the options were checked")
    for where in ("probe.analysis.runner.run_analysis", "probe.analysis.runner.run_joint",
                  "probe.analysis.predict.open_model"):
        monkeypatch.setattr(where, too_late)
    model = tiny_model(tmp_path / "m")
    err = cli_error([*argv, "--model", model, *(["-o", tmp_path / "p.csv"] if argv[0] == "predict" else [])], capsys)
    assert words in err, err


def test_fooling_images_of_all_targets_together_are_bounded(stamp_project, capsys):
    """They are made as one batch: 10 targets × --n 200 would be 2,000 images at once."""
    err = cli_error(["fool", "--n", "200", "--steps", "1"], capsys)
    assert "--n 200 × 10 targets = 2,000 images: at most 1,000 in one run" in err, err


def test_the_public_functions_bound_their_loops_too():
    import torch
    from probe.errors import ConfigError
    from probe.methods.attacks import pgd
    from probe.methods.saliency import SaliencyConfig
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    for kwargs, words in (({"steps": 10 ** 9}, "steps must be from 1 to 10,000"),
                          ({"restarts": 10 ** 9}, "restarts must be from 1 to 100")):
        with pytest.raises(ConfigError, match=words):
            pgd(net, torch.zeros(1, 1, 2, 2), torch.zeros(1, dtype=torch.long), eps=0.1, **kwargs)
    with pytest.raises(ConfigError, match="smoothgrad_samples must be from 1 to 10,000"):
        SaliencyConfig(smoothgrad_samples=10 ** 9)


# ---- 6. a legal but huge image given to --image ---------------------------------------------------

def png_bytes(width: int, height: int, row: bytes, mode_code: int = 2) -> bytes:
    """A PNG of `height` copies of one row (colour type 2: RGB), made without the image in
    memory: a 10,000 × 10,000 one is 300 MB decoded and a few hundred kB here."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    z = zlib.compressobj(9)
    body = b"".join(z.compress(b"\x00" + row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, mode_code, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def half_black_half_white(path: Path, side: int = 10_000) -> Path:
    path.write_bytes(png_bytes(side, side, b"\x00" * (3 * (side // 2)) + b"\xff" * (3 * (side - side // 2))))
    return path


PEAK = """
import resource, sys, warnings
warnings.simplefilter("error")  # no DecompressionBombWarning either
from probe.data.spec import get_spec
from probe.data.user_images import load_user_images
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
images = load_user_images([sys.argv[1]], get_spec(sys.argv[2])).images
grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print((grown // 1024, tuple(images.shape), images[0, 0, 16, :4].tolist(), images[0, 0, 16, -4:].tolist()))
"""


@pytest.fixture(scope="module")
def big_png(tmp_path_factory) -> Path:
    """One 10,000 × 10,000 PNG for both datasets' tests (compressing it takes seconds)."""
    return half_black_half_white(tmp_path_factory.mktemp("big") / "big.png")


@pytest.mark.parametrize("dataset", ["cifar10", "mnist"])
def test_a_10000_square_png_is_decoded_reduced_in_bounded_memory(dataset, big_png):
    """It used to take 2.6 GB (full-size copies through every step); now its one decoded copy
    (300 MB) and small ones after it. The result is still the picture: black left, white right."""
    import subprocess
    import sys
    png = big_png
    out = subprocess.run([sys.executable, "-c", PEAK, str(png), dataset], capture_output=True, text=True,
                         timeout=300, env=os.environ | {"OMP_NUM_THREADS": "1"},
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr[-2000:]
    grown_mb, shape, left, right = eval(out.stdout)
    assert shape[2:] == (28, 28) if dataset == "mnist" else shape == (1, 3, 32, 32)
    assert grown_mb < 700, f"peak memory grew {grown_mb} MB"
    if dataset == "cifar10":
        assert left == [0] * 4 and right == [255] * 4


def test_an_image_too_large_for_its_folder_dataset_asks_for_a_size(tmp_path):
    from probe.data.folder import decode
    png = tmp_path / "wide.png"
    png.write_bytes(png_bytes(5000, 4, b"\x80" * 15000))
    arr, _, why = decode(png, None, "RGB")
    assert arr is None and "5000×4 pixels, more than 4096 a side; give --size HxW" in why
    arr, _, why = decode(png, (4, 8), "RGB")  # with --size 4x8 it is read, reduced
    assert why is None and arr.shape == (4, 8, 3) and (arr == 0x80).all()


def test_a_decompression_bomb_header_is_one_data_error(tmp_path):
    from probe.data.user_images import load_user_images
    from probe.data.spec import get_spec
    from probe.errors import DataError
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bytes(20_000, 20_000, b""))  # the header's 400 M pixels (the rows: empty)
    with pytest.raises(DataError, match="bomb.png: more than 100,000,000 pixels; scale it down first"):
        load_user_images([bomb], get_spec("cifar10"))
