"""`probe experiment degradation`: He et al.'s (2015) degradation experiment in one command.

For each depth, the plain network and its residual twin (`plain<d>`, `resnet<d>`: the same
network but for the shortcuts) are trained with the same seed, schedule and data (with --subset
K: the first K of a seeded stratified draw of the training split, the same for every run), each
in its own model folder of the experiment folder:

    trained_models/degradation-mnist/
        experiment.json        the manifest: the settings every run shares (a rerun with other
                               settings is refused), the depths, the data folder
        plain20/ resnet20/ ... ordinary model folders (`probe report --model` reads each)
        degradation.png/.pdf   Figure 6: plain left, ResNet right, one colour per depth
        results.json           the numbers (DegradationResult), summary.md the page

Run by run it resumes: a complete run is skipped, an interrupted one continues from its
checkpoint (probe.train.run.train's resume). The depths may grow between reruns (each depth's
pair stands on its own); the other settings may not.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import probe
from probe.analysis.base import SettingsBase, check_int, load_split_cached
from probe.analysis.curves import folder_curves
from probe.analysis.runner import Outcome
from probe.data.spec import get_spec
from probe.data.splits import load_splits
from probe.data.subset import stratified_subset
from probe.device import resolve_device
from probe.errors import ConfigError, ModelFileError, ProbeError
from probe.experiments import degradation_results as results
from probe.experiments.degradation_results import FIGURE, DegradationResult, RunRecord
from probe.figures.degradation import KINDS
from probe.figures.style import save_figure
from probe.io import atomic_write_json, atomic_write_text
from probe.models.folder import META, load_model, read_json, read_model_folder
from probe.models.inference import inference_copy, predict_logits
from probe.train import checkpoint as ckpt
from probe.train.config import TrainConfig
from probe.train.run import paper_warmup, train

MANIFEST, RESULTS, SUMMARY = "experiment.json", "results.json", "summary.md"
NAME = "degradation"
SPLIT_SEED = 0  # every run validates and tests on the same images
# Training options a rerun may change without changing the runs (probe.train.run.RESUMABLE_CHANGES).
NOT_COMPARED = {"arch", "device", "compile", "eval_batch_size", "warmup_iters"}


def _check_depths(depths) -> tuple[int, ...]:
    if isinstance(depths, (int, str)) or not depths:
        raise ConfigError("--depths: give one or more depths 6n+2, e.g. --depths 20 56 110")
    for d in depths:
        if isinstance(d, bool) or not isinstance(d, int) or d < 8 or (d - 2) % 6:
            raise ConfigError(f"--depths {d!r}: a CIFAR-style ResNet has depth 6n+2 with n ≥ 1 "
                              "(8, 14, 20, 32, 44, 56, 110, ...)")
    if len(set(depths)) != len(depths):
        raise ConfigError(f"--depths {' '.join(map(str, depths))}: a depth given twice")
    return tuple(sorted(depths))


@dataclass(frozen=True)
class Settings(SettingsBase):
    """What every run of the experiment shares (with the trainer's defaults: batch 128, lr 0.1,
    the paper's schedule, its lr/10 warm-up for depth ≥ 110), and its depths."""
    dataset: str = "mnist"
    depths: tuple[int, ...] = (20, 56, 110)
    epochs: int = 20
    subset: int | None = None  # the first K of a seeded stratified draw of the training split
    seed: int = 0  # the weights, the data order, the augmentation and the subset
    width: float = 1.0
    batch_size: int = 128

    def __post_init__(self):
        spec = get_spec(self.dataset)  # an unknown name: a ConfigError
        object.__setattr__(self, "depths", _check_depths(self.depths))
        check_int("--epochs", self.epochs, 1)
        check_int("--seed", self.seed, 0)
        check_int("--batch-size", self.batch_size, 1)
        if self.subset is not None:
            least = max(spec.num_classes, self.batch_size)  # one image per class, and one whole batch
            check_int("--subset", self.subset, least, why=f"a whole batch of --batch-size {self.batch_size}, and an "
                                                          f"image of each of {spec.name}'s {spec.num_classes} classes")
        if isinstance(self.width, bool) or not isinstance(self.width, (int, float)) or not self.width > 0:
            raise ConfigError(f"--width {self.width!r}: give a positive number")

    def shared(self) -> dict:
        """The settings a rerun into the same folder must repeat (all but the depths)."""
        return {k: v for k, v in self.to_json().items() if k != "depths"}

    def config(self, kind: str, depth: int, device: str = "auto") -> TrainConfig:
        """The training config of one run: the same for plain and residual but for the arch."""
        base = TrainConfig(dataset=self.dataset, arch=f"{kind}{depth}", width=float(self.width), epochs=self.epochs,
                           batch_size=self.batch_size, seed=self.seed, split_seed=SPLIT_SEED, device=device)
        return paper_warmup(base, depth)


def default_folder(settings: Settings, root: str | Path = "trained_models") -> Path:
    return Path(root) / f"{NAME}-{settings.dataset}"


def run_names(depths) -> list[tuple[str, int, str]]:
    """(kind, depth, folder name) of every run, depth by depth, plain first."""
    return [(kind, d, f"{kind}{d}") for d in sorted(depths) for kind in KINDS]


# ---- the manifest ----------------------------------------------------------------------------


def _train_key(settings: Settings) -> dict:
    return {k: v for k, v in settings.config("resnet", settings.depths[0]).to_dict().items() if k not in NOT_COMPARED}


def _normal(config: dict, where: Path, keep=frozenset()) -> dict:
    """A saved training config with today's defaults for the options it predates (a run made
    before an option existed trained as its default), less what may differ between runs."""
    try:
        full = TrainConfig.from_dict(config).to_dict()
    except (ConfigError, TypeError) as e:
        raise ModelFileError(f"{where}: not a training config ({e})") from None
    return {k: v for k, v in full.items() if k not in NOT_COMPARED - keep}


def is_experiment(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def read_manifest(out: Path) -> dict:
    doc = read_json(out / MANIFEST, "an experiment manifest")
    if not isinstance(doc, dict) or doc.get("experiment") != NAME or not isinstance(doc.get("settings"), dict):
        raise ModelFileError(f"{out / MANIFEST}: not the manifest of a degradation experiment")
    return doc


def manifest_settings(out: Path) -> Settings:
    """The experiment's settings, as its manifest records them (every depth it has)."""
    doc = read_manifest(out)
    try:
        return Settings(**(doc["settings"] | {"depths": tuple(doc.get("depths") or ())}))
    except (TypeError, ConfigError) as e:
        raise ModelFileError(f"{out / MANIFEST}: settings that are not those of a degradation experiment ({e})") from None


def _differences(saved: dict, now: dict) -> list[str]:
    return [f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(saved) | set(now))
            if saved.get(k) != now.get(k)]


def prepare_manifest(out: Path, settings: Settings, data_dir, check: Callable[[], object] = lambda: None) -> list[int]:
    """Write (or check and extend) the manifest before any run starts; the experiment's depths.
    check: what else must hold before the manifest is written (the data load, the subset fits)."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder: give a folder for the experiment")
    depths = set(settings.depths)
    if is_experiment(out):
        doc = read_manifest(out)
        saved = _normal({"epochs": 1} | (doc.get("train") or {}), out / MANIFEST) | doc["settings"]
        diff = _differences(saved, _train_key(settings) | settings.shared())
        if diff:
            raise ConfigError(f"{out} holds a degradation experiment with other settings ({'; '.join(diff)}): "
                              "rerun it with its own settings, or give another --out")
        depths |= set(doc.get("depths") or ())
    elif out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise ConfigError(f"{out} already holds files but no {MANIFEST}: give a new or empty --out for the experiment")
    check()
    atomic_write_json(out / MANIFEST, {
        "experiment": NAME, "schema": 1, "settings": settings.shared(), "depths": sorted(depths),
        "train": _train_key(settings), "runs": [name for _, _, name in run_names(depths)],
        "data_dir": str(Path(data_dir).resolve()) if data_dir is not None else None,
        "probe": probe.__version__, "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return sorted(depths)


# ---- the runs ----------------------------------------------------------------------------------


def run_state(folder: Path, config: TrainConfig) -> str:
    """"complete" (trained and tested), "partial" (a checkpoint to resume) or "new"; a folder
    holding another run is refused."""
    if (folder / META).is_file():
        meta = read_json(folder / META, "a model description")
        train_cfg = meta.get("train") if isinstance(meta, dict) else None
        if not isinstance(train_cfg, dict):
            raise ModelFileError(f"{folder / META}: no training config; delete {folder} to train it again")
        keep = {"arch", "warmup_iters"}
        diff = _differences(_normal(train_cfg, folder / META, keep), _normal(config.to_dict(), folder / META, keep))
        if diff:
            raise ConfigError(f"{folder} holds another run ({'; '.join(diff)}): move it out of the experiment")
        if "test" in (meta.get("metrics") or {}):
            return "complete"
    return "partial" if (folder / ckpt.RESUME).is_file() else "new"


class Data:
    """The splits, loaded once and only when a run needs them; train cut to the subset."""

    def __init__(self, settings: Settings, data_dir):
        self.settings, self.data_dir, self._splits = settings, data_dir, None

    def splits(self) -> dict:
        if self._splits is None:
            s = self.settings
            splits = load_splits(s.dataset, self.data_dir, seed=SPLIT_SEED)
            if s.subset is not None:
                splits["train"] = stratified_subset(splits["train"], s.subset, s.seed)
            self._splits = splits
        return self._splits


def train_runs(settings: Settings, out: Path, data: Data, *, device: str = "auto", callbacks=(),
               say: Callable[[str], None] = lambda line: None) -> dict[str, str]:
    """Train the runs of `settings.depths` not complete yet; {run name: "trained", "resumed" or
    "skipped" (complete)}."""
    status = {}
    todo = run_names(settings.depths)
    for i, (kind, depth, name) in enumerate(todo, 1):
        config = settings.config(kind, depth, device)
        state = run_state(out / name, config)
        if state == "complete":
            status[name] = "skipped"
            say(f"[{i}/{len(todo)}] {name}: complete, skipped")
            continue
        say(f"[{i}/{len(todo)}] {name}: " + ("resuming from its checkpoint" if state == "partial" else "training"))
        train(config, out / name, resume=state == "partial", splits=data.splits(), callbacks=callbacks)
        status[name] = "resumed" if state == "partial" else "trained"
    return status


# ---- the numbers ----------------------------------------------------------------------------------


def _test_wrong(folder, test, device) -> list[int]:
    """Indices of the test images the folder's kept weights get wrong (BatchNorm folded into the
    convs: the same predictions, about twice as fast on a CPU)."""
    model, _ = load_model(folder.path, device)
    logits = predict_logits(inference_copy(model), test.images, test.spec, device=device, channels_last=True)  # (N, K)
    return (logits.argmax(1) != test.labels.cpu()).nonzero().flatten().tolist()


def _last_epoch_images(folder) -> int | None:
    """The images the last epoch's training error counts: its steps × the batch (an epoch drops its
    last incomplete batch, so not the split's size), at most the split."""
    history, meta = folder.history(), folder.meta
    batch, size = (meta.get("train") or {}).get("batch_size"), (meta.get("split_sizes") or {}).get("train")
    steps = [r.get("step") for r in history[-2:]]
    if not history or not isinstance(batch, int) or not all(isinstance(s, int) for s in steps):
        return size if isinstance(size, int) else None
    counted = (steps[-1] - (steps[0] if len(steps) == 2 else 0)) * batch
    return min(counted, size) if isinstance(size, int) else counted


def _record(kind: str, depth: int, folder, previous: RunRecord | None, test_split, device) -> RunRecord:
    curves = folder_curves(folder)
    sha = folder.weights_sha256()
    meta = folder.meta
    if previous is not None and previous.weights_sha256 == sha and previous.test_wrong is not None:
        wrong, n = previous.test_wrong, previous.test_n
    else:
        test = test_split(folder)
        wrong, n = _test_wrong(folder, test, device), len(test)
    train_n = _last_epoch_images(folder)
    return RunRecord(depth=depth, kind=kind, name=folder.name, epoch=curves.epoch, train_error=curves.train_error,
                     val_error=curves.val_error, train_n=train_n,
                     val_n=curves.val_n, best_epoch=curves.best_epoch, parameters=meta.get("parameters"),
                     test_n=n, test_wrong=wrong, weights_sha256=sha, history_sha256=folder.history_sha256(),
                     train_seconds=meta.get("train_seconds"))


def collect(out: Path, settings: Settings, *, data_dir=None, device: str = "auto",
            previous: DegradationResult | None = None, log: bool = True) -> DegradationResult:
    """The result of every complete run of the experiment (its manifest's depths); a run's test
    evaluation is reused from `previous` while its weights are unchanged."""
    dev = resolve_device(device)
    runs, missing = [], []
    for kind, depth, name in run_names(settings.depths):
        if run_state(out / name, settings.config(kind, depth)) != "complete":
            missing.append(name)
            continue
        old = previous.run(kind, depth) if previous is not None else None
        runs.append(_record(kind, depth, read_model_folder(out / name), old,
                            lambda f: load_split_cached(f, "test", data_dir), dev))
    return DegradationResult(settings.dataset, settings.to_json(), list(settings.depths), runs, missing, log)


def previous_result(out: Path) -> DegradationResult | None:
    """The result written last time, or None (none, unreadable, or of another schema)."""
    try:
        doc = read_json(out / RESULTS, "the results of an experiment")
        return DegradationResult.from_json(doc.get("results") if isinstance(doc, dict) else None)
    except ProbeError:
        return None


def write_outputs(out: Path, result: DegradationResult) -> list[Path]:
    """The figure (PNG + PDF), results.json (the result, the table's numbers, the tests) and
    summary.md, in the experiment folder."""
    files = []
    for stem, fig in results.figures(result).items():
        files += save_figure(fig, out, stem)
    atomic_write_json(out / RESULTS, {"experiment": NAME, "results": result.to_json(),
                                      "final_errors": results.final_errors(result),
                                      "paired_tests": results.paired_tests(result),
                                      "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    atomic_write_text(out / SUMMARY, results.markdown(result))
    return [*files, out / RESULTS, out / SUMMARY]


# ---- the command and the report's part ------------------------------------------------------------


def run_degradation(settings: Settings, out: str | Path | None = None, *, data_dir=None, device: str = "auto",
                    log: bool = True, callbacks=(), say: Callable[[str], None] = lambda line: None,
                    root: str | Path = "trained_models") -> Outcome:
    """Train what is missing, then draw and tabulate every complete run of the experiment."""
    started = time.perf_counter()
    out = Path(out) if out is not None else default_folder(settings, root)
    data = Data(settings, data_dir)
    # the data loaded (and the subset cut) first where a run needs them: a mistake there leaves no manifest
    depths = prepare_manifest(out, settings, data_dir, lambda: any(
        run_state(out / name, settings.config(kind, d)) != "complete" for kind, d, name in run_names(settings.depths))
        and data.splits())
    status = train_runs(settings, out, data, device=device, callbacks=callbacks, say=say)
    everything = Settings(**(settings.to_json() | {"depths": tuple(depths)}))
    result = collect(out, everything, data_dir=data_dir, device=device, previous=previous_result(out), log=log)
    files = write_outputs(out, result)
    counts = {s: sum(v == s for v in status.values()) for s in ("trained", "resumed", "skipped")}
    lines = [*results.summary(result),
             f"{counts['trained']} run(s) trained, {counts['resumed']} resumed, {counts['skipped']} already complete; "
             f"{time.perf_counter() - started:.0f} s",
             f"figure: {out / FIGURE}.png (+ .pdf); {out / SUMMARY}"]
    return Outcome(out, {"status": status, "result": result}, files, lines)


def experiment_section(out: str | Path, *, data_dir=None, device: str = "auto"):
    """(section, folder of its figures) of an experiment folder, for the report: the numbers
    written by the last `probe experiment degradation`, brought up to date first where a run has
    changed or completed since (test evaluations reused while the weights are unchanged)."""
    out = Path(out)
    if not is_experiment(out):
        raise ConfigError(f"--experiment {out}: no {MANIFEST} there; run `probe experiment degradation` first")
    settings = manifest_settings(out)
    previous = previous_result(out)
    data_dir = data_dir if data_dir is not None else read_manifest(out).get("data_dir")
    result = collect(out, settings, data_dir=data_dir, device=device, previous=previous,
                     log=previous.log if previous is not None else True)
    if not result.runs:
        raise ConfigError(f"--experiment {out}: no run of it is complete yet; run `probe experiment degradation` "
                          "to train them")
    if previous is None or _stale(previous, result) or not (out / f"{FIGURE}.png").is_file():
        write_outputs(out, result)
    return results.section(result, out.name), out


def _stale(previous: DegradationResult, now: DegradationResult) -> bool:
    def key(r: DegradationResult):
        return sorted((x.name, x.weights_sha256, x.history_sha256) for x in r.runs), r.depths
    return key(previous) != key(now)
