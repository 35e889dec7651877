"""`probe fool`: fooling images from noise or from data, each saved as an 8-bit PNG under
images/, read back with Pillow and classified again; a figure, and results.json with both rates
(before and after saving)."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from probe.methods.common import class_probabilities
from probe.methods.fooling import STYLES, check_confidence, fool_from_dataset, fool_from_noise, goal_for
from probe.data.augment import eval_view
from probe.device import resolve_device
from probe.errors import ConfigError
from probe.figures.fooling import dataset_figures, noise_figures
from probe.figures.style import save_figure
from probe.io import atomic_writer
from probe.models.folder import load_model_folder
from probe.progress import progress
from probe.tasks.common import TaskOutput, load_model_split, output_folder, resolve_model, write_results

SOURCES = ("noise", "dataset")


def check_fool_options(source: str, target: str, n: int, confidence, style, source_class, steps) -> None:
    """ConfigError for any option out of range, before a model or a dataset is read."""
    if source not in SOURCES:
        raise ConfigError(f"--from {source!r}: use noise (gradient ascent from random noise) or "
                          "dataset (the smallest change to correctly classified images)")
    check_confidence(confidence)
    if n < 1:
        raise ConfigError(f"--n {n}: make at least 1 image per target")
    if style is not None and source != "noise":
        raise ConfigError(f"--style {style}: applies to --from noise only")
    if style is not None and style not in STYLES:
        raise ConfigError(f"--style {style!r}: use raw or natural")
    if source_class is not None and source != "dataset":
        raise ConfigError("--source: applies to --from dataset only (the class of the images to change)")
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps}: give at least 1 step")
    if not str(target).strip():
        raise ConfigError("--target: give a class or all")


def save_png(image: torch.Tensor, path: Path) -> None:
    """(C, H, W) uint8 → an 8-bit grayscale or RGB PNG, written atomically."""
    from PIL import Image
    arr = image.permute(1, 2, 0).contiguous().numpy()  # (H, W, C)
    pil = Image.fromarray(arr[:, :, 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")
    with atomic_writer(path) as f:
        pil.save(f, format="PNG")


def read_png(path: Path, channels: int) -> torch.Tensor:
    """A PNG → (C, H, W) uint8, as a user would load it (Pillow, converted to L or RGB)."""
    from PIL import Image
    with Image.open(path) as im:
        arr = np.array(im.convert("L" if channels == 1 else "RGB"))
    t = torch.from_numpy(arr)
    return t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()


def run_fool(model=None, *, source: str = "noise", target: str = "all", n: int = 4,
             confidence: float = 0.99, style: str | None = None, source_class: str | None = None,
             split: str = "test", steps: int | None = None, seed: int = 0, data_dir=None, out=None,
             device: str = "auto", batch_size: int = 500, threads: int | None = None,
             root="trained_models") -> TaskOutput:
    """The `probe fool` command: see the module's docstring. Returns what was written."""
    from probe.tasks.attacks import attack_threads
    started = time.perf_counter()
    dev = resolve_device(device)
    with attack_threads(threads, dev) as thread_info:
        return _run_fool(model, source=source, target=target, n=n, confidence=confidence, style=style,
                         source_class=source_class, split=split, steps=steps, seed=seed,
                         data_dir=data_dir, out=out, dev=dev, batch_size=batch_size, root=root,
                         started=started, thread_info=thread_info)


def _run_fool(model, *, source, target, n, confidence, style, source_class, split, steps, seed, data_dir,
              out, dev, batch_size, root, started, thread_info) -> TaskOutput:
    check_fool_options(source, target, n, confidence, style, source_class, steps)
    everything = str(target).strip().lower() == "all"
    folder, how = resolve_model(model, root=root, class_name=None if everything else target)
    spec = folder.spec
    targets = list(range(spec.num_classes)) if everything else [spec.class_index(target)]
    src = spec.class_index(source_class) if source_class is not None else None
    if src is not None and targets == [src]:
        raise ConfigError(f"--source {source_class} and --target {target} are the same class: "
                          "nothing to change")
    out = output_folder(folder, f"fool-{source}", out)
    style_ = (style or "raw") if source == "noise" else None
    if source == "dataset":
        data = load_model_split(folder, split, data_dir)  # before the model: a missing folder fails fast
    net, _ = load_model_folder(folder.path, dev)

    if source == "noise":
        with progress(f"ascending {len(targets) * n} noise images"):
            result = fool_from_noise(net, targets, shape=spec.input_shape, n=n, confidence=confidence,
                                     style=style_, steps=steps, center=spec.mean, seed=seed)
    else:
        view = eval_view(data.images, spec)  # (N, C, H, W) uint8, the network's input
        with progress(f"searching the smallest change, {len(targets) * n} images") as bar:
            task = bar.add_task("", total=1)
            result = fool_from_dataset(net, view, data.labels, targets, n=n, confidence=confidence,
                                       source=src, seed=seed, batch_size=batch_size,
                                       **({"steps": steps} if steps is not None else {}),
                                       progress=lambda r, total: bar.update(task, completed=r / total))

    # Every image its own PNG, read back and classified again.
    images_dir = out / "images"
    images_dir.mkdir(exist_ok=True)
    for old in images_dir.glob("*-to-*.png"):
        old.unlink()  # an earlier run's images would mix with this run's
    names, count = [], {}
    for i in range(len(result)):
        t = int(result.target[i])
        s = "noise" if source == "noise" else spec.classes[int(result.source_label[i])]
        k = count.get(t, 0)
        count[t] = k + 1
        names.append(f"{s}-to-{spec.classes[t]}-{k:02d}.png")
        save_png(result.images[i], images_dir / names[-1])
    back = torch.stack([read_png(images_dir / name, spec.channels) for name in names])  # (M, C, H, W)
    identical = bool(torch.equal(back, result.images))
    probs = class_probabilities(net, back, batch_size=batch_size)
    p_saved = probs.gather(1, result.target.view(-1, 1)).flatten()
    fooled_saved = p_saved >= confidence
    m = len(result)
    before = int(result.fooled.sum())
    after = int(fooled_saved.sum())
    reached = int((result.p_continuous >= goal_for(confidence)).sum())

    figures = []
    kind = f"from noise ({style_})" if source == "noise" else f"from {split} images"
    title = (f"{folder.name}: fooling images {kind}" if source == "noise"
             else f"{folder.name}: the smallest L∞ change to each target ({split} images)")
    shown = dataclasses.replace(result, p_target=p_saved)  # the figure shows what the saved files give
    makers = noise_figures if source == "noise" else dataset_figures
    pages = makers(shown, spec, title=title)
    for i, fig in enumerate(pages, 1):
        figures += save_figure(fig, out, "fooling" if len(pages) == 1 else f"fooling-{i:02d}")

    records = result.records(list(spec.classes))
    for r, name, p in zip(records, names, p_saved.tolist()):
        r |= {"file": f"images/{name}", "p_target_saved": round(p, 6), "fooled_after_saving": p >= confidence}
    rates = {"reached_before_rounding": reached / m, "before_saving": before / m, "after_saving": after / m}
    results = {
        "source": source, "style": style_, "targets": [spec.classes[t] for t in targets], "n": n,
        "confidence": confidence, "images": records, "count": m,
        "fooled_before_saving": before, "fooled_after_saving": after, "rates": rates,
        "rounding_broke": int(result.rounding_broke.sum()),
        "repaired": int((result.rounding_broke & result.fooled).sum()),
        "png_identical_to_judged": identical, "classes": list(spec.classes),
    }
    if source == "dataset":
        ok = result.fooled
        results |= {
            "median_linf": float(result.linf[ok].median()) if ok.any() else None,
            "median_l2": float(result.l2[ok].median()) if ok.any() else None,
            "shortfall": {spec.classes[t]: k for t, k in (result.shortfall or {}).items()},
        }
    settings = {"from": source, "style": style_, "target": target, "n": n, "confidence": confidence,
                "steps": steps, "seed": seed, "device": str(dev), "threads": thread_info,
                **({"split": split, "source_class": source_class} if source == "dataset" else {})}
    data_info = ({"dataset": spec.name, "split": split, "n": len(data)} if source == "dataset"
                 else {"dataset": spec.name, "input": "uniform noise" if style_ == "raw" else "faint noise around the dataset mean"})
    path = write_results(out, f"fool-{source}", folder=folder, settings=settings, results=results,
                         figures=figures, started=started, data=data_info)

    lines = [f"model: {folder.path} ({how})",
             f"fooling images {kind}: {m} ({n} per target × {len(targets)} target{'s' if len(targets) > 1 else ''}), "
             f"goal p(target) ≥ {confidence:g}"]
    if source == "dataset" and result.shortfall:
        lines.append("too few correctly classified images for: "
                     + ", ".join(f"{spec.classes[t]} (−{k})" for t, k in result.shortfall.items()))
    lines.append(f"fooled before saving {before}/{m} ({100 * before / m:.1f}%), after saving as PNG and "
                 f"reading back {after}/{m} ({100 * after / m:.1f}%)")
    lines.append(f"rounding to 8 bits broke {results['rounding_broke']}; {results['repaired']} of them "
                 "repaired by further steps on the 1/255 grid"
                 if results["rounding_broke"] else "rounding to 8 bits broke none")
    if source == "dataset" and results["median_linf"] is not None:
        lines.append(f"median change: L∞ {results['median_linf']:.4f} ({round(results['median_linf'] * 255)}/255), "
                     f"L2 {results['median_l2']:.3f}")
    threads = f"{thread_info['threads']} CPU thread{'s' if thread_info['threads'] > 1 else ''}" + (
        f" ({thread_info['why']})" if thread_info.get("why") else "") if dev.type == "cpu" else str(dev)
    lines.append(f"median {int(result.steps.float().median())} gradient steps, "
                 f"{time.perf_counter() - started:.1f} s in all on {threads}")
    if not identical:
        lines.append("warning: a PNG read back differs from the image judged")
    lines.append(f"{len(pages)} figure page(s) (PNG + PDF), {m} PNGs in images/, results.json")
    return TaskOutput(out, [*figures, *(images_dir / x for x in names), path], lines, results)
