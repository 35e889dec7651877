"""Predictions and evaluation of a trained model on a dataset split."""
from __future__ import annotations

import csv
import io
from pathlib import Path

import torch

from probe.analysis.base import MAX_BATCH, check_int
from probe.data.augment import eval_view
from probe.data.imageset import ImageSet
from probe.data.spec import DatasetSpec
from probe.data.user_images import expand_image_paths, load_user_images
from probe.errors import ConfigError
from probe.io import atomic_write_text, check_writable
from probe.device import resolve_device
from probe.models.inference import inference_copy, metrics_from_logits, predict_logits
from probe.methods.common import class_probabilities
from probe.methods.confusion import wilson_interval
from probe.models.foreign import open_model


def split_logits(model_dir, split: str, data_dir=None, device: str = "auto", batch_size: int = 500,
                 labelled: bool = False) -> tuple[ImageSet, torch.Tensor]:
    """A split of the model's own dataset (drawn with its split seed and rule, so that 'val' is the
    validation set it was chosen on) and the model's logits (N, K) on it. labelled: a split
    without labels is an error. model_dir: a model folder or file, or a ModelFolder read."""
    check_int("--batch-size", batch_size, 1, MAX_BATCH)
    dev = resolve_device(device)
    folder = open_model(model_dir)
    loaded = folder.load(dev)
    model = inference_copy(loaded)  # probe's ResNets: BatchNorm folded, channels_last; others as they are
    data = folder.load_split(split, data_dir)
    if labelled and (data.labels < 0).all():
        raise ConfigError(f"the {split!r} split has no labels to evaluate against; use `probe predict`")
    return data, predict_logits(model, data.images, data.spec, batch_size=batch_size, device=dev,
                                channels_last=model is not loaded)


def evaluate_model(model_dir, *, split: str = "test", data_dir=None, device: str = "auto",
                   batch_size: int = 500) -> dict:
    data, logits = split_logits(model_dir, split, data_dir, device, batch_size, labelled=True)
    result = metrics_from_logits(logits, data.labels, data.spec.num_classes)
    return result | {"model": open_model(model_dir).name, "split": split, "dataset": data.spec.name,
                     "classes": list(data.spec.classes)}


def format_evaluation(r: dict) -> str:
    lines = [f"{r['model']} on {r['dataset']} {r['split']} ({r['n']:,} images): "
             f"accuracy {100 * r['accuracy']:.2f}% ({_ci(r['accuracy'], r['n'])})  error {100 * r['error']:.2f}%  "
             f"loss {r['loss']:.4f}" + (f"  log loss {r['log_loss']:.4f}" if r['dataset'] == "sfddd" else "")]
    width = max(len(c) for c in r["classes"])
    counts = r.get("per_class_n") or [None] * len(r["classes"])
    for name, acc, n in zip(r["classes"], r["per_class_accuracy"], counts):
        lines.append(f"  {name:<{width}}  " + ("     — (no image)" if acc is None else f"{100 * acc:6.2f}%"
                                                 + (f"  of {n:>6,}  ({_ci(acc, n)})" if n else "")))
    lines.append("  (95% Wilson intervals)")
    return "\n".join(lines)


def _ci(accuracy: float, n: int) -> str:
    """'99.52–99.77%': the 95% Wilson interval of an accuracy over n images."""
    low, high = wilson_interval(round(accuracy * n), n)
    return f"{100 * low:.2f}–{100 * high:.2f}%"


def predictions_csv(data: ImageSet, probs: torch.Tensor, fmt: str) -> str:
    """csv: one row per image with label, prediction and class probabilities;
    kaggle: SFDDD's submission layout img,c0..c9."""
    spec: DatasetSpec = data.spec
    names = data.names or [str(i) for i in range(len(data))]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if fmt == "kaggle":
        if not spec.codes:
            raise ConfigError(f"--format kaggle is SFDDD's submission layout, not {spec.name}'s")
        w.writerow(["img", *spec.codes])
        # 9 significant digits of a float64 softmax: no probability the model gave is written as 0
        # (Kaggle's log loss would clip it to 1e-15 and punish it hard).
        for name, p in zip(names, probs.double().tolist()):
            w.writerow([name, *(f"{v:.9g}" for v in p)])
        return buf.getvalue()
    w.writerow(["image", "label", "prediction", "confidence", *(f"p_{c}" for c in spec.classes)])
    conf, pred = probs.max(1)
    for name, y, k, c, p in zip(names, data.labels.tolist(), pred.tolist(), conf.tolist(), probs.tolist()):
        w.writerow([name, spec.classes[y] if y >= 0 else "", spec.classes[k], f"{c:.6f}",
                    *(f"{v:.6f}" for v in p)])
    return buf.getvalue()


def write_predictions(model_dir, *, split: str = "test", data_dir=None, fmt: str = "csv",
                      output=None, device: str = "auto", batch_size: int = 500) -> tuple[Path, str]:
    output = Path(output) if output else Path("reports") / f"{open_model(model_dir).name}-{split}.csv"
    check_int("--batch-size", batch_size, 1, MAX_BATCH)
    check_writable(output)  # a bad -o is said before a long prediction, not after it
    data, logits = split_logits(model_dir, split, data_dir, device, batch_size)
    atomic_write_text(output, predictions_csv(data, logits.double().softmax(1), fmt))
    summary = f"{len(data):,} predictions for {data.spec.name} {split}"
    if (data.labels >= 0).any():
        m = metrics_from_logits(logits, data.labels, data.spec.num_classes)
        summary += (f" (accuracy {100 * m['accuracy']:.2f}% of {m['n']:,}, 95% interval {_ci(m['accuracy'], m['n'])}; "
                    f"log loss {m['log_loss']:.4f})")
    return output, summary


def predict_images(model_dir, paths, *, device: str = "auto", top: int = 3) -> str:
    """`probe predict --image`: the top classes of a user's own image files, one line each, every
    file brought to the model's input the way its dataset's images were (probe.data.user_images)."""
    folder = open_model(model_dir)
    net, spec = folder.load(resolve_device(device)), folder.spec
    user = load_user_images(expand_image_paths(paths), spec)  # a folder: its images
    probs = class_probabilities(net, eval_view(user.images, spec))
    p, kk = probs.topk(min(top, spec.num_classes), dim=1)
    width = max(len(str(q)) for q in user.paths)
    lines = []
    for path, note, pr, ks in zip(user.paths, user.notes, p.tolist(), kk.tolist()):
        guesses = "  ".join(f"{spec.classes[c]} {v:.3f}" for c, v in zip(ks, pr))
        lines.append(f"{str(path):<{width}}  {guesses}   ({note})")
    lines += [f"{str(path):<{width}}  skipped: {why.removeprefix(f'{path}: ')}" for path, why in user.skipped]
    return "\n".join(lines)
