"""The command line: parse, call one library function, print. A ProbeError becomes one line on
stderr and exit code 2; nothing here holds logic the library lacks."""
from __future__ import annotations

import functools
import inspect
import shlex
import sys
import time
import warnings
from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from probe.errors import ConfigError, ProbeError, ProbeWarning

app = typer.Typer(help="Train residual networks on image datasets, then take them apart.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Check and fetch datasets.", no_args_is_help=True)
models_app = typer.Typer(help="The architecture zoo and the trained models.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
experiment_app = typer.Typer(help="Experiments of several runs: trained, drawn and tabulated by one command.",
                             no_args_is_help=True)
app.add_typer(experiment_app, name="experiment")


class Dataset(str, Enum):
    mnist = "mnist"
    cifar10 = "cifar10"
    sfddd = "sfddd"


class AnyDataset(str, Enum):
    """The datasets, and your own: an image folder, an IDX set (data check and train take these)."""
    mnist = "mnist"
    cifar10 = "cifar10"
    sfddd = "sfddd"
    folder = "folder"
    idx = "idx"


def _names_print() -> None:
    """File names that are not UTF-8 (lone surrogates in Python) print as their own bytes, as in
    Python's UTF-8 mode; where the locale makes stdout strict (LANG=en_US.UTF-8), printing one
    was a UnicodeEncodeError (found by the fuzz suite: `probe predict --image img_<0xff>.png`)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="surrogateescape")
            except (ValueError, OSError):  # a stream that cannot change now: printed as it is
                pass


def command(typer_app: typer.Typer, name: str | None = None):
    """Register a command whose ProbeErrors become one clean line and exit code 2."""
    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            _names_print()
            try:
                with warnings.catch_warnings():
                    warnings.showwarning = _show_warning
                    return fn(*args, **kwargs)
            except ProbeError as e:
                typer.echo(f"error: {e}", err=True)
                raise typer.Exit(2)
            except OSError as e:  # a path the user gave: unreadable, a file for a folder, disk full
                typer.echo(f"error: {e.filename or ''}: {e.strerror or e}", err=True)
                raise typer.Exit(2)
            except KeyboardInterrupt:
                typer.echo("interrupted: every file written so far is whole", err=True)
                raise typer.Exit(130)
        return typer_app.command(name, help=_flowed(fn.__doc__))(run)
    return wrap


def _flowed(doc: str | None) -> str | None:
    """A docstring as help text: each paragraph's lines joined, for the terminal to wrap (rich
    keeps a docstring's line breaks, which left ragged lines in `probe --help`)."""
    if not doc:
        return doc
    return "\n\n".join(" ".join(part.split()) for part in inspect.cleandoc(doc).split("\n\n"))


_python_showwarning = warnings.showwarning


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """probe's own warnings (a few unreadable images skipped) as one line; others as Python says."""
    if issubclass(category, ProbeWarning):
        typer.echo(f"warning: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


DataDir = typer.Option(None, "--data-dir", help="Dataset folder (default $PROBE_DATA_DIR/<name>, then ./data/<name>).")
ModelDir = typer.Option(..., "--model", help="A trained model folder, e.g. trained_models/mnist-resnet20, or a model file of yours (see --model-info).")
Device = typer.Option("auto", "--device", help="auto, cpu or cuda.")
Workers = typer.Option(None, "--workers", help="Processes for the analyses side by side (each model's, and its attack in chunks of images), this one among them, one CPU thread each while the others work (default: one per core other processes leave free; 1: everything one after another here). CPU on Linux only; on a GPU the models take turns.")
ModelInfo = typer.Option(None, "--model-info", help="A model file of yours (--model mynet.pt: TorchScript, torch.export .pt2, or a state dict with --model-factory): its model info as a JSON file (default: mynet.json beside it), or KEY=VALUE, repeated: classes=cat,dog input=3x32x32 mean=0.49,0.48,0.45 std=0.25,0.24,0.26 cam_layer=layer4 dataset=cifar10 'factory_kwargs={\"num_classes\": 2}'.")
ModelFactory = typer.Option(None, "--model-factory", help="module:function that builds the network of a state-dict file (--model weights.pt), e.g. torchvision.models:resnet18.")


def _model(model, info: Optional[list[str]], factory: Optional[str]):
    """--model with --model-info/--model-factory: the model file read with that model info."""
    if not info and factory is None:
        return model
    from probe.models.foreign import open_model
    from probe.models.model_info import info_options
    if not model:
        raise ConfigError("--model-info/--model-factory describe a model file: give it with --model mynet.pt")
    given = info_options(info, factory)
    return [open_model(m, given) for m in model] if isinstance(model, list) else open_model(model, given)


# ---- data -----------------------------------------------------------------------------------
Size = typer.Option(None, "--size", help="--dataset folder: resize every image to HEIGHTxWIDTH, e.g. 32x32 (centre crop to that aspect, then bilinear); needed when the images differ in size.")
ClassesFile = typer.Option(None, "--classes", help="--dataset idx: a text file with one class name per line (default 0..K-1).")


@command(data_app, "check")
def data_check(dataset: AnyDataset = typer.Option(..., "--dataset", help="mnist, cifar10, sfddd, or your own: folder (DIR/train/<class>/*.png) or idx (MNIST's file format)."),
               data_dir: Optional[Path] = DataDir,
               split_by: str = typer.Option("driver", help="SFDDD validation split: driver or random."),
               seed: int = typer.Option(0, help="Seed of the validation split."),
               size: Optional[str] = Size, classes: Optional[Path] = ClassesFile):
    """Count images per split and per class, and give shape, mean and std; or say what is wrong."""
    from probe.data.check import check_dataset, format_check
    typer.echo(format_check(check_dataset(dataset.value, data_dir, seed=seed, split_by=split_by,
                                          size=size, classes_file=classes)))


@command(data_app, "fetch")
def data_fetch(dataset: Dataset = typer.Argument(..., help="mnist or cifar10 (sfddd: explains where to get it)."),
               data_dir: Optional[Path] = DataDir):
    """Download a dataset from its canonical public address and verify its checksums."""
    from probe.data.fetch import fetch_dataset
    typer.echo(f"{dataset.value} is ready in {fetch_dataset(dataset.value, data_dir)}")


# ---- models ---------------------------------------------------------------------------------
@command(models_app, "zoo")
def models_zoo(input_shape: str = typer.Option("3x32x32", "--input", help="C×H×W of the input, e.g. 1x28x28."),
               classes: int = typer.Option(10, help="Number of classes."),
               width: float = typer.Option(1.0, help="Width factor (the MNIST seed used 0.5).")):
    """Presets with their parameter counts and multiply-adds."""
    from probe.report.tables import zoo_text
    typer.echo(zoo_text(_shape(input_shape), classes, width))


@command(models_app, "list")
def models_list(root: Path = typer.Option(Path("trained_models"), "--root", help="Folder of model folders.")):
    """The trained models: dataset, architecture, parameters, val and test error, date."""
    from probe.report.tables import models_text
    typer.echo(models_text(root))


def _shape(text: str) -> tuple[int, int, int]:
    try:
        c, h, w = (int(v) for v in text.lower().replace("×", "x").split("x"))
        if min(c, h, w) < 1:
            raise ValueError
        return c, h, w
    except ValueError:
        raise ConfigError(f"--input {text!r}: write channels×height×width, e.g. 3x32x32") from None


# ---- training -------------------------------------------------------------------------------
@command(app, "train")
def train(
    preset: Optional[str] = typer.Option(None, help="cifar10-paper, mnist-seed, mnist-fast, sfddd-seed; options below override it."),
    dataset: Optional[AnyDataset] = typer.Option(None, help="mnist, cifar10, sfddd, or your own: folder (--data-dir DIR with DIR/train/<class>/*.png) or idx (any set in MNIST's file format)."),
    size: Optional[str] = Size,
    classes: Optional[Path] = ClassesFile,
    arch: Optional[str] = typer.Option(None, help="resnet20/32/44/56/110/1202, preact_resnet20, plain20, resnet<6n+2>, ..."),
    depth: Optional[int] = typer.Option(None, help="Shorthand for --arch resnet<depth>."),
    width: Optional[float] = typer.Option(None, help="Width factor of every layer."),
    epochs: Optional[int] = typer.Option(None, help="Length in epochs. With --resume: a new length for the run (extends a finished one); the schedule is recomputed for the new length and continues from the current step."),
    iters: Optional[int] = typer.Option(None, help="Length in optimizer steps (replaces --epochs; with --resume as for --epochs)."),
    batch_size: Optional[int] = typer.Option(None, help="Global batch size (split across processes)."),
    lr: Optional[float] = typer.Option(None, help="Peak learning rate."),
    schedule: Optional[str] = typer.Option(None, help="paper, cosine, onecycle or constant."),
    warmup_iters: Optional[int] = typer.Option(None, help="Warm-up steps, paper and cosine schedules only (paper: lr/10, default 400 for depth ≥ 110; cosine: a ramp). 0 turns it off."),
    nesterov: Optional[bool] = typer.Option(None, "--nesterov/--no-nesterov", help="Nesterov momentum."),
    weight_decay: Optional[float] = typer.Option(None, help="L2 weight decay."),
    label_smoothing: Optional[float] = typer.Option(None, help="Label smoothing of the training objective (history's train_loss is the plain cross-entropy, train_objective the smoothed one)."),
    augment: Optional[bool] = typer.Option(None, "--augment/--no-augment", help="Training augmentation."),
    precision: Optional[str] = typer.Option(None, help="auto (the default: what the device does natively — bf16 on CPUs with native bf16 and on Ampere+ GPUs, fp16 on older GPUs, else fp32; the choice is printed and kept in meta.json), fp32, bf16 or fp16."),
    channels_last: Optional[bool] = typer.Option(None, "--channels-last/--no-channels-last", help="NHWC memory layout (faster convolutions on CPU and GPU)."),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the model. Compiling costs minutes up front (on a 2-core CPU a 20-step MNIST epoch took 134 s against ~20 s) and each new input shape recompiles: it pays only on long runs on a GPU, never for a short CPU run."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda or cuda:N. Under torchrun each process takes its own GPU: cuda → cuda:LOCAL_RANK, cuda:N → cuda:(N+LOCAL_RANK)."),
    seed: Optional[int] = typer.Option(None, help="Seed of weights, data order and augmentation."),
    split_seed: Optional[int] = typer.Option(None, help="Seed of the validation split (default 0: every run of a dataset validates and tests on the same images)."),
    split_by: Optional[str] = typer.Option(None, help="SFDDD validation split: driver or random."),
    adversarial: Optional[str] = typer.Option(None, help="Adversarial training: pgd (Madry et al. 2018) or fgsm-rs (Wong et al. 2020: one step from a random start, twice a plain step's cost), with a PGD check of validation images every epoch that stops a run whose robustness collapses."),
    eps: Optional[float] = typer.Option(None, help="ε of adversarial training, L∞ in pixel units (0.3 on MNIST, 8/255 ≈ 0.031 on CIFAR-10)."),
    adv_steps: Optional[int] = typer.Option(None, help="PGD steps of adversarial training (default 7)."),
    adv_step_size: Optional[float] = typer.Option(None, help="Step of adversarial training (default: PGD 2.5·ε/steps, FGSM-RS 1.25·ε)."),
    data_dir: Optional[Path] = DataDir,
    out: Optional[Path] = typer.Option(None, help="Model folder (default trained_models/<dataset>-<arch>-<YYYYMMDD-HHMMSS>, never an existing folder)."),
    resume: bool = typer.Option(False, help="Continue the run in --out from its last checkpoint (needs --out)."),
    force: bool = typer.Option(False, help="Overwrite the model in --out."),
    quiet: bool = typer.Option(False, help="Print nothing but errors."),
):
    """Train a ResNet; checkpoints every epoch; the test split is evaluated once at the end."""
    import os
    from probe.train.callbacks import ProgressPrinter
    from probe.train.config import preset_config
    from probe.train.run import default_folder, saved_config, train as run_train
    if depth is not None:
        if arch is not None:
            raise ConfigError("give --arch or --depth, not both (--depth 56 means --arch resnet56)")
        arch = f"resnet{depth}"
    if resume and out is None:
        raise ConfigError("--resume needs the run's folder: --resume --out trained_models/<model>")
    options = dict(
        dataset=dataset.value if dataset else None, arch=arch, width=width, epochs=epochs,
        iters=iters, batch_size=batch_size, lr=lr, schedule=schedule, warmup_iters=warmup_iters,
        nesterov=nesterov, weight_decay=weight_decay, label_smoothing=label_smoothing,
        augment=augment, precision=precision, channels_last=channels_last, compile=compile,
        device=device, seed=seed, split_seed=split_seed, split_by=split_by, adversarial=adversarial,
        adv_eps=eps, adv_steps=adv_steps, adv_step_size=adv_step_size)
    if resume and preset is None:
        config = saved_config(out).replace(**options)  # `--resume --out DIR` alone continues DIR's run
    else:
        config = preset_config(preset, **options)
    if adv_steps is not None and config.adversarial != "pgd":
        raise ConfigError("--adv-steps: the steps of PGD adversarial training; give --adversarial pgd "
                          "(FGSM-RS takes one step)")
    if adv_step_size is not None and config.adversarial is None:
        raise ConfigError("--adv-step-size: the step of adversarial training; add --adversarial pgd or fgsm-rs")
    if out is None:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # each process would pick its own time stamp
            raise ConfigError("under torchrun give the model folder: --out trained_models/<name>")
        out = default_folder(Path("trained_models"), config)
    main_process = int(os.environ.get("RANK", "0")) == 0
    started = time.time()
    try:
        run_train(config, out, data_dir=data_dir, resume=resume, force=force, size=size, classes_file=classes,
                  callbacks=[] if quiet or not main_process else [ProgressPrinter()])
    except KeyboardInterrupt:
        again = [("--data-dir", data_dir), ("--size", size), ("--classes", classes)]
        typer.echo(_interrupted_training(Path(out), started, resume, [(o, v) for o, v in again if v is not None]),
                   err=True)
        raise typer.Exit(130)


def _interrupted_training(out: Path, started: float, resumed: bool, options: list) -> str:
    """What a Ctrl-C during training leaves: this run's last checkpoint to resume from (the one a
    --resume started from, or one written since), with the command that continues it; or none yet
    (a checkpoint older than this run is another run's, which --force was replacing)."""
    from probe.train.checkpoint import RESUME
    checkpoint = out / RESUME
    # a second's slack: a file's time stamp comes from a coarser clock than time.time()
    if checkpoint.is_file() and (resumed or checkpoint.stat().st_mtime >= started - 1):
        command = ["probe", "train", "--resume", "--out", str(out), *(str(x) for pair in options for x in pair)]
        return f"interrupted: the last checkpoint in {out} is whole; continue with {shlex.join(command)}"
    return f"interrupted before the first checkpoint: nothing to resume in {out}; run the command again"


@command(experiment_app, "degradation")
def experiment_degradation(
    dataset: Dataset = typer.Option(Dataset.mnist, help="mnist, cifar10 or sfddd."),
    depths: Optional[list[int]] = typer.Option(None, "--depths", help="Depths 6n+2, e.g. --depths 20 56 110: a plain network and its ResNet twin each."),
    more: Optional[list[int]] = typer.Argument(None, metavar="[DEPTH]...", help="More depths for --depths.", show_default=False),
    epochs: int = typer.Option(20, help="Length of every run, in epochs (the paper's schedule: lr 0.1, ÷10 at 50% and 75%)."),
    subset: Optional[int] = typer.Option(None, help="Train on the first K images of a seeded stratified draw of the training split (the same for every run), so deep nets fit a CPU."),
    width: float = typer.Option(1.0, help="Width factor of every network (the MNIST seed used 0.5)."),
    batch_size: int = typer.Option(128, help="Batch size of every run (the paper's 128)."),
    seed: int = typer.Option(0, help="Seed of the weights, data order, augmentation and subset: the same for every run."),
    out: Optional[Path] = typer.Option(None, help="Experiment folder (default trained_models/degradation-<dataset>); rerun into it to resume."),
    data_dir: Optional[Path] = DataDir, device: str = Device,
    log: bool = typer.Option(True, "--log/--no-log", help="Log-scale error axis (the default), or linear."),
    quiet: bool = typer.Option(False, help="Print only the results."),
):
    """He et al.'s degradation experiment: for each depth, the plain network and its residual
    twin trained alike, run by run resumable; then Figure 6 (plain left, ResNet right), the final
    errors with 95% intervals and an exact McNemar test per depth."""
    from probe.experiments.degradation import Settings, run_degradation
    from probe.train.callbacks import ProgressPrinter
    if more and not depths:
        from probe.errors import ConfigError
        raise ConfigError(f"unexpected argument {more[0]}: depths go after --depths")
    settings = Settings(dataset=dataset.value, depths=tuple([*(depths or []), *(more or [])]), epochs=epochs,
                        subset=subset, seed=seed, width=width, batch_size=batch_size)
    typer.echo(run_degradation(settings, out, data_dir=data_dir, device=device, log=log,
                               callbacks=[] if quiet else [ProgressPrinter()],
                               say=(lambda line: None) if quiet else typer.echo).summary())


@command(app, "evaluate")
def evaluate(model: Path = ModelDir, split: str = typer.Option("test", help="test, val or train (the model's own split)."),
             data_dir: Optional[Path] = DataDir, device: str = Device,
             batch_size: int = typer.Option(500, min=1, help="Images per forward pass."),
             model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """Accuracy, per-class accuracy and loss of a trained model on a split."""
    from probe.analysis.predict import evaluate_model, format_evaluation
    typer.echo(format_evaluation(evaluate_model(_model(model, model_info, model_factory), split=split, data_dir=data_dir, device=device,
                                                batch_size=batch_size)))


class PredictFormat(str, Enum):
    csv = "csv"
    kaggle = "kaggle"


@command(app, "predict")
def predict(model: Path = ModelDir, data_dir: Optional[Path] = DataDir,
            split: Optional[str] = typer.Option(None, help="test (the default), val, train, or kaggle (SFDDD's unlabelled imgs/test)."),
            format: Optional[PredictFormat] = typer.Option(None, help="csv (the default), or kaggle (img,c0..c9)."),
            output: Optional[Path] = typer.Option(None, "--output", "-o", help="CSV file (default: reports/<model>-<split>.csv)."),
            device: str = Device, batch_size: int = typer.Option(500, min=1, help="Images per forward pass."),
            image: Optional[list[Path]] = typer.Option(None, "--image", help="Your own PNG/JPEG file(s) instead of a split: prints the top-3 classes of each (--image a.png b.jpg)."),
            more: Optional[list[Path]] = typer.Argument(None, metavar="[PATH]...", help="More files for --image.", show_default=False),
            model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """Predictions for a split, written as CSV; or the top-3 classes of your own image files."""
    model = _model(model, model_info, model_factory)
    if image or more:
        given = [o for o, v in (("--split", split), ("--format", format), ("--output", output)) if v is not None]
        if given:  # they shape a split's CSV; files' predictions are printed
            raise ConfigError(f"{', '.join(given)}: for a split's predictions (a CSV); with --image each file's "
                              "top classes are printed")
        from probe.analysis.predict import predict_images
        typer.echo(predict_images(model, _image_paths(image, more), device=device))
        return
    from probe.analysis.predict import write_predictions
    path, summary = write_predictions(model, split=split or "test", data_dir=data_dir,
                                      fmt=(format or PredictFormat.csv).value,
                                      output=output, device=device, batch_size=batch_size)
    typer.echo(f"{summary} → {path}")


@command(app, "sanity")
def sanity(arch: str = typer.Option("resnet20", help="Architecture to check."),
           dataset: Dataset = typer.Option(Dataset.mnist, help="Gives channels, size and classes."),
           data_dir: Optional[Path] = DataDir,
           width: float = typer.Option(1.0, help="Width factor."),
           seed: int = typer.Option(0, help="Seed of the weights and of the images drawn."),
           random_images: bool = typer.Option(False, "--random-images", help="Use random images, not the dataset's (default only when there is no data folder).")):
    """The checks before training: initial loss ≈ ln(classes), gradients = finite differences,
    one small batch overfit to 100%."""
    from probe.train.sanity import format_sanity, run_sanity
    results = run_sanity(arch, dataset.value, data_dir=data_dir, width=width, seed=seed,
                         random_images=random_images)
    typer.echo(format_sanity(results))
    if not all(r["passed"] for r in results):
        raise typer.Exit(1)


# ---- analyses -------------------------------------------------------------------------------
AnalysisModel = typer.Option(None, "--model", help="A trained model folder, or a model file of yours (see --model-info) (default: the newest in trained_models/).")
Out = typer.Option(None, "--out", help="Output folder (default reports/<model>/<analysis>/).")


@command(app, "misclassified")
def misclassified(model: Optional[Path] = AnalysisModel,
                  split: str = typer.Option("val", help="val (the split the model was chosen on), test or train."),
                  max_images: Optional[int] = typer.Option(None, "--max", help="Show only the N most confident mistakes."),
                  data_dir: Optional[Path] = DataDir, out: Optional[Path] = Out, device: str = Device,
                  batch_size: int = typer.Option(500, min=1, help="Images per forward pass."),
                  model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """Every wrong image in a grid (true class, prediction, second choice), the confusion
    matrix, per-class accuracy with 95% intervals, and the most confused pairs."""
    from probe.analysis import misclassified as analysis
    from probe.analysis.runner import run_analysis
    settings = analysis.Settings(split=split, max_images=max_images, batch_size=batch_size)
    typer.echo(run_analysis(analysis.ANALYSIS, _model(model, model_info, model_factory), settings, out=out, data_dir=data_dir,
                            device=device).summary())


@command(app, "report")
def report(model: Optional[list[Path]] = typer.Option(None, "--model", help="Model folder(s); repeat for a comparison (default: the newest in trained_models/)."),
           data_dir: Optional[Path] = DataDir,
           out: Optional[Path] = typer.Option(None, "--out", help="Report folder (default reports/<model> or reports/<a>-vs-<b>)."),
           format: str = typer.Option("html,pdf", "--format", help="html, pdf or html,pdf."),
           device: str = Device,
           experiment: Optional[list[Path]] = typer.Option(None, "--experiment", help="An experiment folder (probe experiment degradation), repeatable: its section follows the models' (alone: a report of the experiment). An experiment folder given as --model counts too."),
           workers: Optional[int] = Workers,
           attack_steps: Optional[int] = typer.Option(None, "--attack-steps", help="PGD steps of the robustness section (default 20, half of `probe attack`'s 40: the report's slowest part; 40 gives the command's numbers)."),
           model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """One report of everything: model card, learning curves, failures, saliency, fooling and
    robustness, as a self-contained HTML page, a PDF, and figures.tex with vector figures."""
    from probe.report.build import run_report
    formats = tuple(f.strip() for f in format.split(",") if f.strip())
    typer.echo(run_report(_model(model, model_info, model_factory) or None, data_dir=data_dir, out=out, formats=formats,
                              device=device, experiments=experiment or (), workers=workers,
                              attack_steps=attack_steps).summary())


Runs = typer.Argument(..., help="Model folders, or names of folders in trained_models/.", show_default=False)


@command(app, "curves")
def curves(runs: list[Path] = Runs,
           out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default reports/<run>/curves/, or reports/compare/curves/ for several runs)."),
           log: bool = typer.Option(True, "--log/--no-log", help="Log scale for error and loss (the default: 0.54% against 0.62% stays visible), or linear.")):
    """Learning curves from each run's history.json: training (dashed) and validation (solid)
    error and loss against epoch, several runs on one plot, one colour per run."""
    from probe.analysis import curves as analysis
    from probe.analysis.runner import run_joint
    typer.echo(run_joint(analysis.ANALYSIS, runs, analysis.Settings(log=log), out=out).summary())


@command(app, "compare")
def compare(runs: list[Path] = Runs,
            out: Optional[Path] = typer.Option(None, "--out", help="Output folder (default reports/<run>/table/, or reports/compare/table/ for several runs).")):
    """The runs side by side: architecture, parameters, dataset, epochs, train time, val and
    test error, images/s; and the training settings that differ."""
    from probe.analysis.compare import run_compare
    typer.echo(run_compare(runs, out=out).summary())


ImageFiles = typer.Option(None, "--image", help="Your own PNG/JPEG file(s), brought to the model's input as its dataset's images were (--image a.png b.jpg, or repeat --image).")
MoreImageFiles = typer.Argument(None, metavar="[PATH]...", help="More files for --image.", show_default=False)


def _image_paths(image: Optional[list[Path]], more: Optional[list[Path]]) -> list[Path]:
    """--image a.png b.png: click gives the first to --image, the rest as arguments."""
    if more and not image:
        raise ConfigError(f"unexpected argument {str(more[0])!r}: image files go after --image")
    return [*(image or []), *(more or [])]


@command(app, "saliency")
def saliency(model: Optional[Path] = AnalysisModel,
             class_: Optional[str] = typer.Option(None, "--class", help="The class to explain: a name (phone_right), a Kaggle code (c2) or an index. Without --model: the newest model that has it."),
             method: str = typer.Option("all", "--method", help="vanilla, smoothgrad, ig, gradcam, guided, occlusion: one, a comma list, or all."),
             n: int = typer.Option(6, "--n", help="Images to explain (the first n of the class in the split)."),
             split: str = typer.Option("val", help="val (the split the model was chosen on), test or train."),
             wrong: bool = typer.Option(False, "--wrong", help="Misclassified images of the class, with maps for the true and the predicted class."),
             any_: bool = typer.Option(False, "--any", help="The first images of the class, right or wrong."),
             index: Optional[str] = typer.Option(None, "--index", help="Images by number in the split: 3,17,40 (maps for --class, else each image's label)."),
             image: Optional[list[Path]] = ImageFiles,
             more: Optional[list[Path]] = MoreImageFiles,
             scale: str = typer.Option("method", "--scale", help="method: one colour scale per method across the rows; image: each map its own."),
             overlay: str = typer.Option("auto", "--overlay", help="auto (Grad-CAM and occlusion, whose coarse maps need the image under them, drawn over it), all (every map over its image) or none."),
             gradcam_layer: str = typer.Option("auto", "--gradcam-layer", help="Grad-CAM's layer: auto (the last feature map, or the last stage with at least 8×8 when that is smaller: MNIST's 7×7 last stage is too coarse), or a stage name such as stage2."),
             faithfulness: bool = typer.Option(True, "--faithfulness/--no-faithfulness", help="Deletion/insertion curves and the model-randomization check."),
             data_dir: Optional[Path] = DataDir, out: Optional[Path] = Out, device: str = Device,
             batch_size: int = typer.Option(256, "--batch-size", help="Largest number of images in one forward pass."),
             threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: PyTorch's own; on a machine busy with other jobs --threads 1 can be several times faster)."),
             seed: int = typer.Option(0, help="Seed of SmoothGrad's noise, the random orders and the re-initialized weights."),
             model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """What the model looks at: saliency maps of six methods (through captum) side by side, and
    how faithful each is (deletion/insertion against a random order, the model-randomization
    check); the raw maps as attributions.safetensors."""
    from probe.analysis import saliency as analysis
    from probe.analysis.runner import run_analysis
    if wrong and any_:
        raise ConfigError("give --wrong or --any, not both")
    files = _image_paths(image, more)
    settings = analysis.Settings(class_name=class_, methods=method, n=n, split=split,
                                 selection="wrong" if wrong else "any" if any_ else "correct", index=index,
                                 images=tuple(map(str, files)) or None, scale=scale,
                                 overlay={"all": True, "none": False}.get(overlay, overlay), gradcam_layer=gradcam_layer,
                                 faithfulness=faithfulness, batch_size=batch_size, seed=seed, threads=threads)
    typer.echo(run_analysis(analysis.ANALYSIS, _model(model, model_info, model_factory), settings, out=out,
                            data_dir=data_dir, device=device, class_name=class_).summary())


@command(app, "fool")
def fool(model: Optional[Path] = AnalysisModel,
         source: str = typer.Option("noise", "--from", help="noise (gradient ascent from random noise) or dataset (the smallest change to correctly classified images)."),
         target: str = typer.Option("all", "--target", help="The class to fool the model into: a name, code or index, or all (one row per class)."),
         n: int = typer.Option(4, "--n", help="Images per target."),
         confidence: float = typer.Option(0.99, "--confidence", help="The target's probability to reach, judged on the saved 8-bit image."),
         style: Optional[str] = typer.Option(None, "--style", help="--from noise: raw (plain ascent, unrecognizable images; the default) or natural (L2 decay, blur and jitter: looks more like the class)."),
         source_class: Optional[str] = typer.Option(None, "--source", help="--from dataset: change only images of this class."),
         split: str = typer.Option("test", help="--from dataset: the split whose images are changed."),
         steps: Optional[int] = typer.Option(None, "--steps", help="Ascent steps before rounding (default: raw 200 at most; natural 150 regularized, then up to 150 plain where needed; dataset 40 per attempt of the search)."),
         seed: int = typer.Option(0, help="Seed of the noise and of the images chosen."),
         data_dir: Optional[Path] = DataDir, out: Optional[Path] = Out, device: str = Device,
         threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: the cores other processes leave free, measured at the start; PyTorch's when they are all free)."),
         image: Optional[list[Path]] = typer.Option(None, "--image", help="--from dataset: your own PNG/JPEG file(s) to change instead of a split's images (--image a.png b.jpg)."),
         more: Optional[list[Path]] = MoreImageFiles,
         label: Optional[str] = typer.Option(None, "--label", help="With --image: the files' class (default: the model's prediction for each, said in the output)."),
         model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """Fooling images: from noise (ascent on the target's probability) or from data (the smallest
    L∞ change that flips a correct image to the target); each saved as an 8-bit PNG under
    images/, read back and classified again."""
    from probe.analysis.fooling import from_options
    from probe.analysis.runner import run_analysis
    files = tuple(map(str, _image_paths(image, more))) or None
    entry, settings = from_options(source, style=style, source_class=source_class, split=split, target=target,
                                   n=n, confidence=confidence, steps=steps, seed=seed, threads=threads,
                                   images=files, label=label)
    typer.echo(run_analysis(entry, _model(model, model_info, model_factory), settings, out=out, data_dir=data_dir, device=device,
                            class_name=settings.class_name).summary())


@command(app, "attack")
def attack(model: Optional[list[Path]] = typer.Option(None, "--model", help="Model folder(s); repeat for several on one plot (default: the newest in trained_models/)."),
           method: str = typer.Option("pgd", "--method", help="fgsm or pgd."),
           norm: str = typer.Option("linf", "--norm", help="linf or l2."),
           eps: Optional[str] = typer.Option(None, "--eps", help="ε list in pixel units: 0,0.1,0.3 or 0,2/255,8/255 (default: a fine grid where the curve falls — MNIST L∞ 0 to 0.1 by 0.01 and 0.2, 0.3; other L∞ 0 to 8/255 by 1/255 and 10-16/255; MNIST L2 0 to 2 by 0.25 and 2.5, 3; other L2 0 to 0.5 by 0.05 and 1, 2)."),
           search: str = typer.Option("sweep", "--search", help="How each image's smallest breaking ε of the grid is found, each way PGD at the largest ε first. sweep: then one gradient step per ε with the ball growing, and PGD down the grid from there (about 2–4 attacks per image); bisect: bisection below the largest ε (1 + log2 of the grid's attacks per image at most); nested: attack at every ε the images still unbroken (slowest, the same meaning)."),
           steps: Optional[int] = typer.Option(None, "--steps", help="PGD steps (default 40)."),
           step_size: Optional[float] = typer.Option(None, "--step-size", help="PGD step in pixel units (default 2.5·ε/steps)."),
           targeted: Optional[str] = typer.Option(None, "--targeted", help="Drive the images to this class (name, code or index) instead of away from their own."),
           restarts: Optional[int] = typer.Option(None, "--restarts", help="PGD runs from a new random start on the images still unbroken (default 1)."),
           split: str = typer.Option("test", help="test, val or train (the model's own split)."),
           limit: int = typer.Option(1000, "--limit", help="Attack a seeded random subset of this many images (0: the whole split)."),
           precision: str = typer.Option("auto", "--precision", help="auto (bf16 on a CPU with native bf16, else fp32), fp32 or bf16 (autocast) for the gradient steps; images are always judged in fp32."),
           batch_size: int = typer.Option(500, "--batch-size", help="Images per batch; the search runs on chunks of this many images, each with random starts of its own (a report spreads the chunks over its processes)."),
           seed: int = typer.Option(0, help="Seed of the random starts."),
           data_dir: Optional[Path] = DataDir, out: Optional[Path] = Out, device: str = Device,
           threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads (default: the cores other processes leave free, measured at the start; PyTorch's when they are all free)."),
           image: Optional[list[Path]] = typer.Option(None, "--image", help="Your own PNG/JPEG file(s) to attack instead of a split's images (--image a.png b.jpg)."),
           more: Optional[list[Path]] = MoreImageFiles,
           label: Optional[str] = typer.Option(None, "--label", help="With --image: the files' true class (default: the model's prediction for each, said in the output)."),
           model_info: Optional[list[str]] = ModelInfo, model_factory: Optional[str] = ModelFactory):
    """Accuracy against ε under FGSM or PGD (L∞ or L2, targeted or not) for one or more models
    on one plot, adversarial examples of one image per class, and every point in results.json."""
    from probe.analysis import robustness as analysis
    from probe.analysis.runner import run_joint
    settings = analysis.Settings(method=method, norm=norm, eps=eps, steps=steps, step_size=step_size,
                                 targeted=targeted, restarts=restarts, split=split, limit=limit,
                                 precision=precision, batch_size=batch_size, seed=seed, threads=threads,
                                 search=search, images=tuple(map(str, _image_paths(image, more))) or None,
                                 label=label)
    typer.echo(run_joint(analysis.ANALYSIS, _model(model, model_info, model_factory) or None, settings, out=out, data_dir=data_dir,
                         device=device).summary())


def main(argv: list[str] | None = None) -> None:
    """The console script. Usage errors (an unknown option or choice, a value out of range)
    are one line, like every other error, not Typer's multi-line box."""
    try:  # Typer ≥ 0.20 vendors click
        from typer import _click as click
    except ImportError:
        import click
    try:
        code = app(args=argv, standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError:
        code = 0  # the help was shown
    except click.exceptions.UsageError as e:
        where = e.ctx.command_path if e.ctx else "probe"
        typer.echo(f"error: {e.format_message()} (see `{where} --help`)", err=True)
        code = 2
    except click.exceptions.ClickException as e:
        typer.echo(f"error: {e.format_message()}", err=True)
        code = e.exit_code
    except typer.Abort:
        typer.echo("interrupted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
