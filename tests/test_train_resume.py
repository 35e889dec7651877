"""Resuming, extending and finishing runs; the split seed; the resume file checked field by field;
the loss recorded; the default model folder and size bounds through the CLI."""
from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from typer.testing import CliRunner

from probe.cli import app
from probe.data.augment import AugmentConfig
from probe.data.batches import epoch_permutation, shard_batches
from probe.data.spec import MNIST
from probe.data.splits import load_splits
from probe.errors import ConfigError, ModelFileError
from probe.models.folder import ModelFolder, read_model_folder
from probe.models.inference import to_input
from probe.train import run as run_module
from probe.train.config import TrainConfig
from probe.train.distributed import rank_device
from probe.train.run import saved_config, train
from probe.train.schedule import Schedule
from probe.train.trainer import Callback, Trainer

from train_helpers import tiny_config, tiny_splits

runner = CliRunner()


class StopAfter(Callback):
    """Ctrl-C right after an epoch's checkpoint (before the final test evaluation)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.epochs:
            raise KeyboardInterrupt


class Grab(Callback):
    """Keeps the trainer's splits, to see which images a run used."""

    def on_train_start(self, trainer):
        self.train_set, self.val_set = trainer.train_set, trainer.val_set


# ---- item 1: a finished but unevaluated run --------------------------------------------------
def test_finished_run_without_test_metrics_is_evaluated_on_the_training_device(tmp_path, monkeypatch):
    out, cfg, splits = tmp_path / "m", tiny_config(epochs=2), tiny_splits()
    with pytest.raises(KeyboardInterrupt):  # killed after the last checkpoint, before the test
        train(cfg, out, splits=splits, callbacks=[StopAfter(2)])
    assert "test" not in json.loads((out / "meta.json").read_text())["metrics"]

    loads, evals = [], []
    real_load, real_eval = run_module.load_model, run_module.evaluate

    def spy_load(path, *args, **kwargs):
        loads.append((args, kwargs))
        return real_load(path, *args, **kwargs)

    def spy_eval(model, data, **kwargs):
        evals.append((next(model.parameters()).device, kwargs["device"]))
        return real_eval(model, data, **kwargs)

    trained = []
    monkeypatch.setattr(run_module, "load_model", spy_load)
    monkeypatch.setattr(run_module, "evaluate", spy_eval)
    monkeypatch.setattr(Trainer, "fit", lambda self: trained.append(1))
    meta = train(cfg, out, splits=splits, resume=True)
    assert trained == []  # no training step, only the evaluation
    training_device = torch.device("cpu")  # what setup() resolves tiny_config's device to
    # the best weights are loaded on, and evaluated on, the training device, named explicitly
    assert [torch.device(*a, **k) for a, k in loads] == [training_device]
    assert evals == [(training_device, training_device)] * 2  # val and test
    assert meta["metrics"]["test"]["n"] == 64 and meta["epochs_done"] == 2
    assert json.loads((out / "meta.json").read_text())["metrics"]["test"] == meta["metrics"]["test"]


# ---- item 4: extending a finished run --------------------------------------------------------
def test_resume_with_a_longer_length_extends_the_run_and_recomputes_the_schedule(tmp_path):
    out, splits = tmp_path / "m", tiny_splits()
    train(tiny_config(epochs=2), out, splits=splits)
    longer = saved_config(out).replace(epochs=3)
    meta = train(longer, out, splits=splits, resume=True)
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3] and meta["epochs_done"] == 3
    assert meta["train"]["epochs"] == 3 and "test" in meta["metrics"]
    steps = 192 // 16
    assert meta["extensions"] == [{"at_step": 2 * steps, "from": {"epochs": 2, "iters": None},
                                   "to": {"epochs": 3, "iters": None}}]
    # epoch 3 follows the 3-epoch cosine schedule from step 24 on (its last lr is that of step 35)
    assert history[2]["lr"] == pytest.approx(Schedule("cosine", 0.1, 3 * steps)(3 * steps - 1))
    assert saved_config(out).epochs == 3  # and a second resume continues the longer run
    with pytest.raises(ConfigError, match="already trained 36 steps.*give a longer one"):
        train(saved_config(out).replace(epochs=2), out, splits=splits, resume=True)


def test_an_epochs_override_replaces_a_saved_iters_length(tmp_path):
    out, splits = tmp_path / "m", tiny_splits()
    train(tiny_config(epochs=None, iters=12), out, splits=splits)
    cfg = saved_config(out).replace(epochs=2)  # not "give --epochs or --iters, not both"
    assert (cfg.epochs, cfg.iters) == (2, None)
    meta = train(cfg, out, splits=splits, resume=True)
    assert meta["steps_done"] == 24 and meta["epochs_done"] == 2
    assert saved_config(out).replace(iters=30).epochs is None


def test_cli_resume_extends_with_epochs_and_needs_out(mnist_dir, tmp_path):
    out = tmp_path / "m"
    base = ["--data-dir", str(mnist_dir), "--out", str(out)]
    first = runner.invoke(app, ["train", "--dataset", "mnist", "--arch", "resnet8", "--width", "0.25",
                                "--iters", "5", "--batch-size", "30", "--quiet", *base])
    assert first.exit_code == 0, first.output
    more = runner.invoke(app, ["train", "--resume", "--epochs", "1", *base])
    assert more.exit_code == 0, more.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["steps_done"] == 180 // 30 and meta["train"]["iters"] is None and "test" in meta["metrics"]
    assert "done" in more.output and "resuming at step 5 (after epoch 1)" in more.output
    bare = runner.invoke(app, ["train", "--resume"])
    assert bare.exit_code == 2
    assert bare.output.strip().splitlines() == [
        "error: --resume needs the run's folder: --resume --out trained_models/<model>"]


# ---- item 6: world size; devices per rank -------------------------------------------------------
def rewrite_resume(folder, change_tensors=None, change_state=None):
    """Rewrite resume.safetensors with some tensors or state fields changed (None deletes)."""
    path = folder / "resume.safetensors"
    data = path.read_bytes()
    tensors = st_load(data)
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    state = json.loads(header["__metadata__"]["state"])
    for k, v in (change_tensors or {}).items():
        tensors.pop(k) if v is None else tensors.__setitem__(k, v)
    for k, v in (change_state or {}).items():
        state.pop(k) if v is None else state.__setitem__(k, v)
    meta = {"state": state if isinstance(state, str) else json.dumps(state)}
    path.write_bytes(st_save(tensors, metadata=meta))


@pytest.fixture(scope="module")
def cut_run(tmp_path_factory):
    """One epoch of a two-epoch run, stopped: the resume file every broken variant starts from."""
    out = tmp_path_factory.mktemp("cut") / "m"
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(epochs=2), out, splits=tiny_splits(), callbacks=[StopAfter(1)])
    return out


@pytest.fixture
def copy_of(cut_run, tmp_path):
    import shutil
    return shutil.copytree(cut_run, tmp_path / "m")


def test_resume_with_another_world_size_is_refused(copy_of):
    rewrite_resume(copy_of, change_state={"world_size": 2})
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), this is 1.*--nproc_per_node 2"):
        train(tiny_config(epochs=2), copy_of, splits=tiny_splits(), resume=True)


def test_each_rank_gets_its_own_gpu():
    assert rank_device("cuda", 1, 2) == "cuda"  # resolve_device makes it cuda:LOCAL_RANK
    assert rank_device("cuda:2", 0, 2) == "cuda:2" and rank_device("cuda:2", 1, 2) == "cuda:3"
    assert rank_device("cuda:1", 0, 1) == "cuda:1"  # one process: as given
    assert rank_device("cpu", 1, 2) == "cpu" and rank_device("auto", 1, 2) == "auto"
    with pytest.raises(ConfigError, match="unknown device"):
        rank_device("cuda:x", 0, 2)


def test_setup_puts_each_torchrun_process_on_its_local_gpu(monkeypatch):
    from probe.train import distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    chosen = []
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: True)  # no process group here
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    for asked, expected in (("cuda", "cuda:1"), ("auto", "cuda:1"), ("cuda:2", "cuda:3")):
        d, dev = distributed.setup(asked)
        assert (d.rank, d.local_rank, dev) == (1, 1, torch.device(expected))
    assert chosen == [torch.device("cuda:1"), torch.device("cuda:1"), torch.device("cuda:3")]
    with pytest.raises(ConfigError, match="has 4 GPU"):
        distributed.setup("cuda:3")  # local rank 1 → cuda:4, which does not exist


# ---- item 8: broken resume files ---------------------------------------------------------------

BROKEN = [
    # (state changes, tensor changes, words of the message)
    (dict(step=None), {}, "lacks 'step'"),
    (dict(history=None), {}, "lacks 'history'"),
    (dict(train=None), {}, "lacks 'train'"),
    (dict(step="12"), {}, "'step' in the training state is '12', not int"),
    (dict(epoch=1.5), {}, "'epoch' in the training state is 1.5, not int"),
    (dict(best_val_error="low"), {}, "'best_val_error'.*not int or float or NoneType"),
    (dict(elapsed=-3), {}, "'elapsed'.*not negative"),
    (dict(history=[1, 2]), {}, "list of objects"),
    (dict(best_epoch=5), {}, "'best_epoch' 5 is after the last epoch 1"),
    (dict(train={"lr": "fast"}), {}, "'train' in the training state is not a valid training config"),
    (dict(scaler=[1]), {}, "'scaler' in the training state is \\[1\\], not dict"),
    (dict(world_size=True), {}, "'world_size'.*not int"),
    ({}, {"optim.999.momentum_buffer": torch.zeros(3)}, "buffers for parameter 999, but the model has"),
    ({}, {"optim.0.momentum_buffer": torch.zeros(7)}, r"'optim.0.momentum_buffer' is torch.float32 \(7,\)"),
    ({}, {"optim.0.exp_avg": torch.zeros(3)}, "unknown optimizer buffer 'optim.0.exp_avg'"),
    ({}, {"optim.x.momentum_buffer": torch.zeros(3)}, "not optim.<parameter index>.<buffer>"),
    ({}, {"model.net.fc.weight": None}, "do not fit the architecture \\(missing net.fc.weight"),
    ({}, {"model.extra": torch.zeros(1)}, "unknown extra"),
    ({}, {"model.net.fc.bias": torch.zeros(3)}, r"'model.net.fc.bias' has shape \(3,\), the model's is \(10,\)"),
    ({}, {"rng.torch": torch.zeros(4)}, "'rng.torch' is torch.float32"),
    ({}, {"stray": torch.zeros(1)}, "unexpected tensor 'stray'"),
]


@pytest.mark.parametrize("state, tensors, words", BROKEN,
                         ids=[w.split("'")[1] if "'" in w else w[:20] for _, _, w in BROKEN])
def test_broken_resume_files_are_model_file_errors_naming_file_and_field(copy_of, state, tensors, words):
    names = st_load((copy_of / "resume.safetensors").read_bytes())
    assert "model.net.fc.weight" in names, sorted(names)[:5]  # the table's names are real ones
    rewrite_resume(copy_of, change_tensors=tensors, change_state=state)
    with pytest.raises(ModelFileError) as e:
        train(tiny_config(epochs=2), copy_of, splits=tiny_splits(), resume=True)
    assert str(e.value).startswith(f"{copy_of / 'resume.safetensors'}: ")
    assert len(str(e.value).splitlines()) == 1
    import re
    assert re.search(words, str(e.value)), str(e.value)


def test_a_state_that_is_not_an_object_and_a_missing_state(copy_of):
    rewrite_resume(copy_of, change_state=None)
    path = copy_of / "resume.safetensors"
    tensors = st_load(path.read_bytes())
    path.write_bytes(st_save(tensors, metadata={"state": "[1, 2]"}))
    with pytest.raises(ModelFileError, match="training state is a list, not an object"):
        train(tiny_config(epochs=2), copy_of, splits=tiny_splits(), resume=True)
    path.write_bytes(st_save(tensors, metadata={"other": "x"}))
    with pytest.raises(ModelFileError, match="no training state"):
        train(tiny_config(epochs=2), copy_of, splits=tiny_splits(), resume=True)


def test_the_untouched_cut_run_resumes(copy_of):
    meta = train(tiny_config(epochs=2), copy_of, splits=tiny_splits(), resume=True)
    assert meta["epochs_done"] == 2 and "test" in meta["metrics"]


# ---- items 2 and 3: split seed, split sizes --------------------------------------------------
def test_runs_with_different_seeds_validate_and_test_on_the_same_images(mnist_dir, tmp_path):
    grabbed = {}
    for seed, split_seed in ((1, 0), (2, 0), (1, 3)):
        g = Grab()
        meta = train(tiny_config(epochs=1, seed=seed, split_seed=split_seed, batch_size=30), tmp_path / f"{seed}-{split_seed}",
                     data_dir=mnist_dir, callbacks=[g])
        grabbed[seed, split_seed] = g
        assert meta["train"]["split_seed"] == meta["split_seed"] == split_seed
        # the sizes actually used: 200 fixture images → 20 val (10%), 180 train; 50 test
        assert meta["split_sizes"] == {"train": len(g.train_set), "val": len(g.val_set), "test": 50}
        assert meta["split_sizes"] == {"train": 180, "val": 20, "test": 50}
    a, b, c = grabbed[1, 0], grabbed[2, 0], grabbed[1, 3]
    assert torch.equal(a.val_set.images, b.val_set.images) and torch.equal(a.train_set.images, b.train_set.images)
    assert not torch.equal(a.val_set.images, c.val_set.images)  # --split-seed does change it
    folder = read_model_folder(tmp_path / "2-0")
    assert torch.equal(folder.load_split("val", mnist_dir).images, b.val_set.images.cpu())


def test_old_meta_without_split_seed_splits_with_the_training_seed(mnist_dir, tmp_path):
    old = {"dataset": {"name": "mnist"}, "train": {"seed": 4}}  # written before split_seed existed
    folder = ModelFolder(tmp_path, old, MNIST, None)
    assert folder.split_seed == 4
    assert torch.equal(folder.load_split("val", mnist_dir).images,
                       load_splits("mnist", mnist_dir, seed=4)["val"].images)
    cfg = tiny_config().to_dict()
    del cfg["split_seed"]
    assert TrainConfig.from_dict(cfg | {"seed": 4}).split_seed == 4
    assert TrainConfig.from_dict(cfg | {"seed": 4, "split_seed": 0}).split_seed == 0


# ---- item 7: loss vs objective; validation without assert -----------------------------------
def test_train_loss_is_the_plain_cross_entropy_and_the_objective_is_smoothed():
    splits = tiny_splits()
    cfg = tiny_config(epochs=1, lr=1e-12, momentum=0.0, weight_decay=0.0, label_smoothing=0.3,
                      channels_last=False)
    torch.manual_seed(0)
    from probe.models.classifier import Classifier
    from probe.models.resnet import ResNet, get_config
    model = Classifier.from_spec(ResNet(get_config("resnet8", num_classes=10, in_channels=1, width=0.25)),
                                 splits["train"].spec)
    frozen = copy.deepcopy(model).train()  # lr 1e-12: the weights do not move in one epoch
    trainer = Trainer(model, splits["train"], None, cfg, AugmentConfig(), device=torch.device("cpu"))
    record = trainer._train_epoch(0)
    plain = smooth = n = 0.0
    with torch.no_grad():
        for idx in shard_batches(epoch_permutation(192, 0, 0), 16):
            logits = frozen(to_input(splits["train"].images[idx]))
            y = splits["train"].labels[idx]
            plain += F.cross_entropy(logits, y, reduction="sum").item()
            smooth += F.cross_entropy(logits, y, label_smoothing=0.3, reduction="sum").item()
            n += len(y)
    assert record["train_loss"] == pytest.approx(plain / n, rel=1e-4)
    assert record["train_objective"] == pytest.approx(smooth / n, rel=1e-4)
    assert abs(record["train_objective"] - record["train_loss"]) > 1e-3


@pytest.mark.parametrize("field, value, words", [
    ("epochs", "3", "--epochs must be"),
    ("lr", None, "--lr must be"),
    ("augment", 1, "--augment must be bool"),
    ("batch_size", 16.0, "--batch-size must be a whole number"),
    ("batch_size", True, "--batch-size must be a whole number"),
    ("split_seed", "0", "--split-seed must be a whole number"),
])
def test_config_types_are_checked_without_assert(field, value, words):
    d = tiny_config().to_dict() | {field: value}
    with pytest.raises(ConfigError, match=words):
        TrainConfig.from_dict(d)


# ---- item 3 and size bounds through the CLI ---------------------------------------------------
def test_cli_default_folder_never_touches_an_existing_model(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(run_module, "timestamp", lambda: "20250101-120000")
    models = tmp_path / "trained_models"
    committed = models / "mnist-resnet8"  # a committed model, and an earlier run of this second
    earlier = models / "mnist-resnet8-20250101-120000"
    for folder in (committed, earlier):
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text('{"keep": true}')
    args = ["train", "--dataset", "mnist", "--arch", "resnet8", "--width", "0.25", "--iters", "2",
            "--batch-size", "30", "--data-dir", str(mnist_dir), "--quiet"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    again = runner.invoke(app, args)  # typed twice: a third folder, nothing refused
    assert again.exit_code == 0, again.output
    assert sorted(p.name for p in models.iterdir()) == [
        "mnist-resnet8", "mnist-resnet8-20250101-120000", "mnist-resnet8-20250101-120000-2",
        "mnist-resnet8-20250101-120000-3"]
    for folder in (committed, earlier):
        assert [p.name for p in folder.iterdir()] == ["meta.json"]
        assert folder.joinpath("meta.json").read_text() == '{"keep": true}'
    assert (models / "mnist-resnet8-20250101-120000-3" / "weights.safetensors").is_file()


def test_cli_refuses_an_absurd_depth_before_allocating(tmp_path):
    import time
    start = time.perf_counter()
    result = runner.invoke(app, ["train", "--dataset", "mnist", "--depth", "1000000004", "--epochs", "1",
                                 "--data-dir", str(tmp_path / "none"), "--out", str(tmp_path / "m")])
    assert result.exit_code == 2 and time.perf_counter() - start < 10
    assert result.output.startswith("error: ") and len(result.output.strip().splitlines()) == 1
    assert "parameters" in result.output or "depth" in result.output
    assert not (tmp_path / "m").exists()


def test_depth_bound_in_run(tmp_path):
    # a thin, very deep net passes ResNetConfig's parameter bound; run.py refuses it by depth
    with pytest.raises(ConfigError, match="depth 60,002 is beyond"):
        train(tiny_config(arch="resnet60002", width=0.01), tmp_path / "m", splits=tiny_splits())
    assert not (tmp_path / "m").exists()


def test_the_library_prints_nothing_and_the_printer_says_each_epoch(tmp_path, capsys):
    import io
    from probe.train.callbacks import ProgressPrinter
    train(tiny_config(epochs=1), tmp_path / "a", splits=tiny_splits())
    assert capsys.readouterr() == ("", "")
    stream = io.StringIO()
    train(tiny_config(epochs=2), tmp_path / "b", splits=tiny_splits(), callbacks=[ProgressPrinter(stream)])
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("training resnet8 on mnist (192 images) on cpu: 24 steps, 2 epochs")
    assert [line.split()[1] for line in lines[1:3]] == ["1/2", "2/2"] and "val err" in lines[1]
    assert lines[3].startswith("done in") and "test error" in lines[3]
    assert capsys.readouterr() == ("", "")


def test_a_repeated_epoch_is_best_only_if_it_improves():
    """Extending an --iters run repeats its cut-short epoch in the history (the rest of it): that
    second record was 'best' because its epoch number was, and the worse weights were kept."""
    from types import SimpleNamespace
    from probe.train.callbacks import BestEpoch, training_summary
    trainer = SimpleNamespace(state=SimpleNamespace(best_val_error=float("inf"), best_epoch=0, epoch=2, step=80,
                                                    elapsed=1.0, train_seconds=1.0, images_seen=10),
                              history=[])
    for epoch, err in ((1, 0.74), (1, 0.85), (2, 0.69), (2, 0.71)):
        record = {"epoch": epoch, "val_error": err}
        BestEpoch().on_epoch_end(trainer, record)
        trainer.history.append(record)
    assert [r["best"] for r in trainer.history] == [True, False, True, False]
    assert trainer.state.best_epoch == 2 and trainer.state.best_val_error == 0.69
    assert training_summary(trainer)["metrics"]["val"]["error"] == 0.69
