"""The trainer: schedules, augmentation, batching, checkpoints, resume, bad input."""
from __future__ import annotations

import json
import math
import os

import pytest
import torch
from safetensors.torch import load_file

from probe.data.augment import AugmentConfig, augment_batch, center_crop, eval_view
from probe.data.batches import epoch_permutation, shard_batches
from probe.data.spec import SFDDD
from probe.errors import ConfigError, ModelFileError, TrainingError
from probe.train.config import preset_config
from probe.models.folder import load_model
from probe.train.run import paper_warmup, train
from probe.train.schedule import Schedule
from probe.train.trainer import Callback

from train_helpers import tiny_config, tiny_splits


# ---- schedules ------------------------------------------------------------------------------
def test_paper_schedule_drops_tenfold_at_half_and_three_quarters():
    s = Schedule("paper", 0.1, 64_000, warmup_steps=400)
    assert s(0) == pytest.approx(0.01) and s(399) == pytest.approx(0.01)  # ResNet-110 warm-up
    assert s(400) == pytest.approx(0.1) and s(31_999) == pytest.approx(0.1)
    assert s(32_000) == pytest.approx(0.01) and s(47_999) == pytest.approx(0.01)
    assert s(48_000) == pytest.approx(0.001) and s(63_999) == pytest.approx(0.001)


def test_onecycle_and_cosine_shapes():
    one = Schedule("onecycle", 0.2, 1000)
    lrs = [one(t) for t in range(1000)]
    assert max(lrs) == pytest.approx(0.2, rel=1e-3)
    assert lrs.index(max(lrs)) == pytest.approx(250, abs=2)
    assert lrs[0] == pytest.approx(0.2 / 25) and lrs[-1] < 0.2 / 500
    cos = Schedule("cosine", 0.1, 100, warmup_steps=10)
    assert cos(0) == pytest.approx(0.01) and cos(9) == pytest.approx(0.1)
    assert all(cos(t) >= cos(t + 1) for t in range(10, 99))


def test_paper_schedule_warms_up_resnet110_and_deeper_only():
    assert paper_warmup(tiny_config(schedule="paper"), 110).warmup_iters == 400
    assert paper_warmup(tiny_config(schedule="paper"), 1202).warmup_iters == 400
    assert paper_warmup(tiny_config(schedule="paper"), 56).warmup_iters is None
    assert paper_warmup(tiny_config(schedule="cosine"), 110).warmup_iters is None
    assert paper_warmup(tiny_config(schedule="paper", warmup_iters=50), 110).warmup_iters == 50
    # 0 is an explicit "no warm-up", not "unset"
    off = paper_warmup(tiny_config(schedule="paper", warmup_iters=0), 110)
    assert off.warmup_iters == 0
    assert Schedule("paper", 0.1, 1000, warmup_steps=off.warmup_iters)(0) == pytest.approx(0.1)


@pytest.mark.parametrize("schedule", ["onecycle", "constant"])
def test_warmup_with_a_schedule_that_ignores_it_is_a_config_error(schedule):
    with pytest.raises(ConfigError, match=f"--warmup-iters 100 does nothing with the {schedule}"):
        tiny_config(schedule=schedule, warmup_iters=100)
    assert tiny_config(schedule=schedule, warmup_iters=0).warmup_iters == 0  # "none" is true of them


def test_unknown_schedule_and_empty_run_are_config_errors():
    with pytest.raises(ConfigError, match="unknown schedule"):
        Schedule("linear", 0.1, 10)
    with pytest.raises(ConfigError, match="no steps"):
        Schedule("paper", 0.1, 0)


# ---- augmentation ---------------------------------------------------------------------------
def test_pad_crop_is_a_shift_of_the_zero_padded_image():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6) + 1
    out = augment_batch(x, AugmentConfig(pad=2), torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):  # every output must equal some 6×6 window of its own padded image
        windows = [padded[i, :, a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)


def test_flip_and_determinism():
    x = torch.randint(0, 255, (64, 3, 4, 4), dtype=torch.uint8)
    cfg = AugmentConfig(flip=True)
    a = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    b = augment_batch(x, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    flipped = [torch.equal(a[i], x[i].flip(-1)) for i in range(64)]
    same = [torch.equal(a[i], x[i]) for i in range(64)]
    assert all(f or s for f, s in zip(flipped, same))
    assert 10 < sum(flipped) < 54  # about half


def test_sfddd_crops_train_randomly_and_evaluate_in_the_centre():
    x = torch.randint(0, 255, (4, 3, 48, 64), dtype=torch.uint8)
    crops = augment_batch(x, AugmentConfig(crop=(32, 32)), torch.Generator().manual_seed(0))
    assert crops.shape == (4, 3, 32, 32)
    centre = eval_view(x, SFDDD)
    assert torch.equal(centre, x[:, :, 8:40, 16:48]) and torch.equal(centre, center_crop(x, (32, 32)))


# ---- batches --------------------------------------------------------------------------------
def test_ranks_take_disjoint_shards_of_each_global_batch():
    perm = epoch_permutation(100, seed=0, epoch=0)
    assert torch.equal(perm, epoch_permutation(100, seed=0, epoch=0))
    assert not torch.equal(perm, epoch_permutation(100, seed=0, epoch=1))
    r0, r1 = shard_batches(perm, 20, 0, 2), shard_batches(perm, 20, 1, 2)
    assert len(r0) == len(r1) == 5 and all(len(b) == 10 for b in r0 + r1)
    for b in range(5):
        both = torch.cat([r0[b], r1[b]]).sort().values
        assert torch.equal(both, perm[b * 20:(b + 1) * 20].sort().values)


# ---- a real (tiny) run ----------------------------------------------------------------------
def test_training_learns_writes_model_files_and_loads(tmp_path):
    out = tmp_path / "m"
    # no augmentation: shifting the bars by 2 px would blur the classes of 12×12 images
    meta = train(tiny_config(epochs=4, augment=False), out, splits=tiny_splits())
    assert {p.name for p in out.iterdir()} >= {"weights.safetensors", "meta.json", "history.json",
                                                "resume.safetensors"}
    history = json.loads((out / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert meta["metrics"]["test"]["error"] < 0.2  # chance is 0.9
    assert meta["best_epoch"] == 1 + min(range(4), key=lambda i: history[i]["val_error"])
    model, saved = load_model(out)
    assert not model.training and saved["metrics"]["test"] == meta["metrics"]["test"]
    assert saved["versions"]["torch"] == torch.__version__ and saved["parameters"] > 0
    # the weights file holds the best epoch, the resume file the last
    best = load_file(out / "weights.safetensors")
    assert all(torch.equal(best[k], v) for k, v in model.state_dict().items())


class StopAfter(Callback):
    """Simulates Ctrl-C right after an epoch's checkpoint."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_epoch_end(self, trainer, record):
        if record["epoch"] == self.epochs:
            raise KeyboardInterrupt


def test_killed_and_resumed_run_is_bit_identical(tmp_path):
    cfg, splits = tiny_config(epochs=3), tiny_splits()
    train(cfg, tmp_path / "whole", splits=splits)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", splits=splits, callbacks=[StopAfter(1)])
    assert json.loads((tmp_path / "cut" / "meta.json").read_text())["epochs_done"] == 1
    train(cfg, tmp_path / "cut", splits=splits, resume=True)
    for name in ("weights.safetensors", "resume.safetensors"):
        a, b = load_file(tmp_path / "whole" / name), load_file(tmp_path / "cut" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    h1 = json.loads((tmp_path / "whole" / "history.json").read_text())
    h2 = json.loads((tmp_path / "cut" / "history.json").read_text())
    assert [h["train_loss"] for h in h1] == [h["train_loss"] for h in h2]


class PoisonAfterFirstEpoch(Callback):
    def on_epoch_end(self, trainer, record):
        if record["epoch"] == 1:
            with torch.no_grad():
                next(trainer.model.parameters()).fill_(math.nan)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_files(tmp_path):
    out = tmp_path / "m"
    with pytest.raises(TrainingError, match="loss became nan"):
        train(tiny_config(), out, splits=tiny_splits(), callbacks=[PoisonAfterFirstEpoch()])
    model, meta = load_model(out)  # epoch 1's files, whole and finite
    assert meta["epochs_done"] == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ---- bad input ------------------------------------------------------------------------------
def test_existing_folder_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "m"
    train(tiny_config(epochs=1), out, splits=tiny_splits())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match="already holds a model"):
        train(tiny_config(epochs=1), out, splits=tiny_splits())
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}
    train(tiny_config(epochs=1, seed=1), out, splits=tiny_splits(), force=True)
    assert json.loads((out / "meta.json").read_text())["seed"] == 1


def test_resume_refuses_a_different_config_and_an_empty_folder(tmp_path):
    out = tmp_path / "m"
    train(tiny_config(epochs=1), out, splits=tiny_splits())
    with pytest.raises(ConfigError, match="different run.*lr"):
        train(tiny_config(epochs=1, lr=0.5), out, splits=tiny_splits(), resume=True)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(tiny_config(), tmp_path / "empty", splits=tiny_splits(), resume=True)


def test_corrupt_and_truncated_model_files_are_model_file_errors(tmp_path):
    out = tmp_path / "m"
    train(tiny_config(epochs=1), out, splits=tiny_splits())
    weights = (out / "weights.safetensors").read_bytes()
    (out / "weights.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ModelFileError, match="corrupt or truncated"):
        load_model(out)
    (out / "weights.safetensors").write_bytes(b"\x00" * 3)
    with pytest.raises(ModelFileError):
        load_model(out)
    (out / "meta.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="corrupt JSON"):
        load_model(out)
    with pytest.raises(ModelFileError, match="model folder"):
        load_model(tmp_path / "nowhere")


def test_unknown_preset_arch_and_precision():
    with pytest.raises(ConfigError, match="unknown preset"):
        preset_config("imagenet-paper")
    with pytest.raises(ConfigError, match="precision"):
        preset_config("mnist-fast", precision="fp8")
    with pytest.raises(ConfigError, match="--epochs N or --iters N"):
        preset_config(None, dataset="mnist")
    cfg = preset_config("cifar10-paper", epochs=2)  # an explicit length replaces the preset's
    assert cfg.epochs == 2 and cfg.iters is None and cfg.arch == "resnet20"


def test_unknown_arch_fails_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match=r"depth must be 6n\+2"):
        train(tiny_config(arch="resnet21"), tmp_path / "m", splits=tiny_splits())
    assert not (tmp_path / "m" / "meta.json").exists()


def test_bf16_training_runs_and_learns(tmp_path):
    meta = train(tiny_config(epochs=4, precision="bf16", augment=False), tmp_path / "m", splits=tiny_splits())
    assert meta["metrics"]["test"]["error"] < 0.2


def test_force_replaces_nothing_until_the_new_run_checkpoints(tmp_path):
    out = tmp_path / "m"
    train(tiny_config(epochs=1), out, splits=tiny_splits())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    from probe.errors import DataError
    with pytest.raises(DataError):  # the data are missing: the old model must survive
        train(tiny_config(epochs=1), out, data_dir=tmp_path / "no-data", force=True)
    assert before == {p.name: p.read_bytes() for p in out.iterdir()}


def test_resume_needs_only_the_folder_and_a_finished_run_is_left_alone(tmp_path):
    from probe.train.run import saved_config
    out = tmp_path / "m"
    cfg = tiny_config(epochs=2)
    train(cfg, out, splits=tiny_splits())
    assert saved_config(out) == cfg
    before = (out / "meta.json").read_bytes()
    meta = train(saved_config(out), out, splits=tiny_splits(), resume=True)
    assert meta["epochs_done"] == 2 and (out / "meta.json").read_bytes() == before


def test_resume_refuses_other_data(tmp_path):
    out = tmp_path / "m"
    cfg = tiny_config(epochs=2)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, splits=tiny_splits(), callbacks=[StopAfter(1)])
    with pytest.raises(ConfigError, match="trained on splits"):
        train(cfg, out, splits=tiny_splits(n_train=160), resume=True)


@pytest.mark.parametrize("changes, words", [
    (dict(lr=-1.0), "--lr must be positive"),
    (dict(label_smoothing=1.5), "label-smoothing"),
    (dict(weight_decay=-1e-4), "weight-decay"),
    (dict(iters=10), "not both"),
    (dict(schedule="linear"), "unknown schedule"),
    (dict(epochs=0), "--epochs must be positive"),
    (dict(lr=float("nan")), "--lr must be a finite number, not nan"),  # nan passed every comparison
    (dict(weight_decay=float("inf")), "--weight-decay must be a finite number"),
    (dict(width=float("nan")), "--width must be a finite number"),
    (dict(seed=-1), r"--seed -1: give a whole number from 0 to 2\^63 - 1"),  # numpy's generator refused it mid-run
    (dict(split_seed=2 ** 64), "--split-seed 18446744073709551616: give a whole number from 0"),
    (dict(epochs=5.0), "--epochs must be a whole number, not 5.0"),
])
def test_bad_options_are_config_errors_before_any_work(changes, words):
    with pytest.raises(ConfigError, match=words):
        tiny_config(**changes)


def test_unaugmented_sfddd_trains_on_the_centre_crop_it_is_evaluated_on(tmp_path):
    from probe.data.imageset import ImageSet
    g = torch.Generator().manual_seed(0)
    def sfddd(n):
        return ImageSet(torch.randint(0, 255, (n, 3, 48, 64), dtype=torch.uint8, generator=g),
                        torch.randint(0, 10, (n,), generator=g), SFDDD)
    seen = set()

    class Shapes(Callback):
        def on_train_start(self, trainer):
            trainer.model.register_forward_pre_hook(lambda m, args: seen.add(tuple(args[0].shape[-2:])))

    cfg = tiny_config(dataset="sfddd", epochs=1, augment=False)
    train(cfg, tmp_path / "m", splits={"train": sfddd(32), "val": sfddd(8), "test": sfddd(8)},
          callbacks=[Shapes()])
    assert seen == {(32, 32)}


def test_fp16_with_grad_scaler_and_label_smoothing_run_on_the_cpu(tmp_path):
    meta = train(tiny_config(epochs=2, precision="fp16", label_smoothing=0.1, augment=False),
                 tmp_path / "m", splits=tiny_splits())
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert math.isfinite(history[-1]["train_loss"]) and meta["metrics"]["test"]["n"] == 64


def test_ranks_draw_different_augmentations():
    from probe.data.batches import step_generator
    a = torch.rand(8, generator=step_generator(0, 5, rank=0))
    assert torch.equal(a, torch.rand(8, generator=step_generator(0, 5, rank=0)))
    assert not torch.equal(a, torch.rand(8, generator=step_generator(0, 5, rank=1)))


def test_metrics_by_hand():
    from probe.models.inference import metrics_from_logits
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 0, 0, -1])  # the unlabelled row is left out
    m = metrics_from_logits(logits, labels, 2)
    p = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.e), math.exp(3) / (math.exp(3) + 1)]
    assert m["n"] == 3 and m["error"] == pytest.approx(1 / 3)
    assert m["log_loss"] == pytest.approx(-sum(map(math.log, p)) / 3, rel=1e-6)
    assert m["loss"] == pytest.approx(m["log_loss"], rel=1e-6)
    none = m["per_class_accuracy"][1]  # a class with no images: no accuracy (None, or NaN before)
    assert m["per_class_accuracy"][0] == pytest.approx(2 / 3) and (none is None or math.isnan(none))


def test_auto_precision_is_what_the_device_does_natively(tmp_path, monkeypatch):
    """bf16 only where the CPU computes it natively (emulated it is ~10× slower than fp32); the
    choice is recorded in meta.json."""
    import torch

    from probe.device import native_precision, resolve_precision
    assert preset_config("mnist-fast").precision == "auto"
    for native, expected in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda native=native: native)
        assert native_precision("cpu") == expected == resolve_precision("auto", "cpu")
    assert resolve_precision("auto", "cpu", allowed=("fp32",)) == "fp32"
    assert resolve_precision("fp16", "cpu") == "fp16"
    with pytest.raises(ConfigError, match="--precision 'fp8'"):
        resolve_precision("fp8", "cpu")
    meta = train(tiny_config(epochs=1, augment=False), tmp_path / "m", splits=tiny_splits())
    assert meta["precision"] == "fp32" and meta["train"]["precision"] == "auto"  # native bf16 patched off


def test_a_gpu_run_lets_cudnn_choose_kernels_and_use_tf32(monkeypatch):
    """Set on a CUDA device only (the flags are process-wide; restored here)."""
    import torch

    from probe.device import configure_for_speed
    flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.benchmark = torch.backends.cuda.matmul.allow_tf32 = False
        configure_for_speed(torch.device("cpu"))
        assert not torch.backends.cudnn.benchmark and not torch.backends.cuda.matmul.allow_tf32
        configure_for_speed(torch.device("cuda"))
        assert torch.backends.cudnn.benchmark and torch.backends.cudnn.allow_tf32
        assert torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = flags


def test_training_beside_busy_processes_takes_one_thread_and_says_so(tmp_path, monkeypatch):
    import io
    from probe.train.callbacks import ProgressPrinter

    class ThreadsSeen(Callback):
        def on_epoch_end(self, trainer, record):
            self.threads = torch.get_num_threads()
    before = torch.get_num_threads()
    if before < 2:
        pytest.skip("one core: nothing to choose")
    monkeypatch.setattr("probe.device.recent_busy_elsewhere", lambda: float(os.cpu_count()))  # every core busy elsewhere
    seen, stream = ThreadsSeen(), io.StringIO()
    train(tiny_config(epochs=1), tmp_path / "m", splits=tiny_splits(), callbacks=[seen, ProgressPrinter(stream, bar=False)])
    assert seen.threads == 1 and torch.get_num_threads() == before
    assert f"1 thread(s) (other processes keep {os.cpu_count():.1f} of {os.cpu_count()} cores busy)" in stream.getvalue()


@pytest.mark.parametrize("arch, shortcut, adversarial", [
    ("resnet8", "A", None), ("resnet8", "B", None), ("plain8", "A", None), ("preact_resnet8", "A", None),
    ("preact_resnet8", "B", None), ("resnet11_bottleneck", "B", None), ("resnet8", "A", "pgd")])
def test_steps_with_relus_in_place_train_exactly_as_without(arch, shortcut, adversarial):
    """The step's ReLUs run in place (one write of every activation less); the weights after
    two steps are bit for bit those of the same steps with the usual ReLUs, and outside the step
    every ReLU is as built (hooks and captum see the model's own modules)."""
    from dataclasses import replace as dc_replace

    from probe.data.augment import default_augment
    from probe.models import Classifier, ResNet, get_config
    from probe.train import trainer as trainer_module
    data = tiny_splits(64)["train"]
    attack = dict(adversarial=adversarial, adv_eps=0.1, adv_steps=2) if adversarial else {}
    cfg = tiny_config(arch=arch, epochs=1, batch_size=32, **attack)
    weights = []
    for in_place in (True, False):
        torch.manual_seed(0)
        net = ResNet(dc_replace(get_config(arch, num_classes=10, in_channels=1, width=0.5), shortcut=shortcut))
        model = Classifier.from_spec(net, data.spec)
        trainer = trainer_module.Trainer(model, data, None, cfg, default_augment(data.spec), device=torch.device("cpu"))
        relus = [m for m in model.modules() if isinstance(m, torch.nn.ReLU)]
        assert len(trainer._relus) == len(relus) > 0
        if not in_place:
            trainer._relus = []
        seen = []
        for m in relus:  # what each ReLU is set to while the step runs
            m.register_forward_pre_hook(lambda mod, inp: seen.append(mod.inplace))
        trainer._train_epoch(0)
        assert seen and all(v == in_place for v in seen)
        assert not any(m.inplace for m in relus)
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert trainer_module.relus_in_place(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())) == []


def test_a_folder_of_other_files_is_never_a_model_folder(tmp_path):
    """--out at a thesis folder: not 'already holds a model', and --force must not write into it."""
    from probe.train.run import prepare_folder
    (tmp_path / "thesis.tex").write_text("x")
    for force in (False, True):
        with pytest.raises(ConfigError, match="is a folder of other files, not a model folder"):
            prepare_folder(tmp_path, tiny_config(), resume=False, force=force)
    assert [p.name for p in tmp_path.iterdir()] == ["thesis.tex"]
