"""`probe misclassified`: the misclassified grid, the confusion matrix and per-class accuracy."""
from __future__ import annotations

import time
from pathlib import Path

from probe.analysis.confusion import confusion_matrix
from probe.analysis.misclassified import misclassified
from probe.data.augment import eval_view
from probe.device import resolve_device
from probe.errors import ConfigError
from probe.figures.failures import confusion_figure, misclassified_pages, per_class_figure
from probe.figures.style import save_figure
from probe.models.folder import load_model_folder
from probe.progress import progress
from probe.tasks.common import (TaskOutput, load_model_split, output_folder, resolve_model,
                                write_results)


def run_misclassified(model: str | Path | None = None, *, split: str = "val", data_dir=None,
                      max_images: int | None = None, out=None, device: str = "auto",
                      batch_size: int = 500, root="trained_models") -> TaskOutput:
    started = time.perf_counter()
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max {max_images}: show at least 1 image (or leave --max out for all)")
    folder, how = resolve_model(model, root=root)
    out = output_folder(folder, "misclassified", out)
    data = load_model_split(folder, split, data_dir)
    if not (data.labels >= 0).any():
        raise ConfigError(f"the {split!r} split has no labels: nothing can be called misclassified")
    net, _ = load_model_folder(folder.path, resolve_device(device))
    spec = folder.spec
    with progress(f"predicting {len(data):,} images") as bar:
        task = bar.add_task("", total=len(data))
        result = misclassified(net, eval_view(data.images, spec), data.labels, max_images=max_images,
                               batch_size=batch_size, progress=lambda n: bar.update(task, completed=n))
    confusion = confusion_matrix(data.labels, result.all_predicted, spec.num_classes)
    per_class = confusion.per_class()

    figures = []
    title = f"{folder.name}: {result.total_wrong} of {result.n:,} {split} images misclassified"
    pages = misclassified_pages(result, data.images, spec, title=title)
    for i, fig in enumerate(pages, 1):
        figures += save_figure(fig, out, f"misclassified-{i:02d}" if len(pages) > 1 else "misclassified")
    figures += save_figure(confusion_figure(confusion, spec), out, "confusion")
    figures += save_figure(confusion_figure(confusion, spec, normalized=True), out, "confusion-normalized")
    figures += save_figure(per_class_figure(per_class, spec), out, "per-class-accuracy")

    names = list(spec.classes)
    n_labelled = int((data.labels >= 0).sum())
    results = {
        "n": n_labelled, "wrong": result.total_wrong, "shown": len(result),
        "error": result.total_wrong / n_labelled,
        "misclassified": result.records(names, data.names),
        "confusion_matrix": confusion.matrix.tolist(),
        "confusion_matrix_row_normalized": [[round(v, 6) for v in row] for row in confusion.row_normalized.tolist()],
        "per_class": [r | {"class": names[r["class"]]} for r in per_class],
        "most_confused": [r | {"true": names[r["true"]], "predicted": names[r["predicted"]]}
                          for r in confusion.most_confused()],
        "classes": names,
    }
    settings = {"split": split, "max_images": max_images, "batch_size": batch_size,
                "device": str(resolve_device(device))}
    data_info = {"dataset": spec.name, "split": split, "n": len(data),
                 "split_seed": folder.train_config.get("split_seed", folder.train_config.get("seed", 0))}
    path = write_results(out, "misclassified", folder=folder, settings=settings, results=results,
                         figures=figures, started=started, data=data_info)
    lines = [f"model: {folder.path} ({how})",
             f"{result.total_wrong} of {n_labelled:,} {split} images misclassified "
             f"(error {100 * results['error']:.2f}%)"
             + (f"; the {len(result)} most confident shown" if len(result) < result.total_wrong else "")]
    pairs = results["most_confused"][:5]
    if pairs:
        lines.append("most confused: " + ", ".join(
            f"{p['true']}→{p['predicted']} ×{p['count']}" for p in pairs))
    worst = min((r for r in results["per_class"] if r["accuracy"] is not None), key=lambda r: r["accuracy"])
    lines.append(f"lowest per-class accuracy: {worst['class']} {100 * worst['accuracy']:.2f}% "
                 f"(95% CI {100 * worst['ci95'][0]:.2f}–{100 * worst['ci95'][1]:.2f}%)")
    lines.append(f"{len(pages)} grid page(s), confusion matrix, per-class accuracy (PNG + PDF), results.json")
    return TaskOutput(out, [*figures, path], lines, results)
