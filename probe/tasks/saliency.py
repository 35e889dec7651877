"""`probe saliency`: maps of six attribution methods side by side, with how faithful each is
(deletion/insertion, the model-randomization check); and `probe predict --image`."""
from __future__ import annotations

import csv
import difflib
import io
import time
from pathlib import Path
from typing import Sequence

import torch

from probe.methods.common import class_probabilities
from probe.methods.saliency import (REDUCTION, SIGNED, TITLES, SaliencyConfig, parse_methods,
                                     saliency)
from probe.data.augment import eval_view
from probe.device import cpu_threads, resolve_device
from probe.errors import ConfigError, ProbeError
from probe.figures.style import class_labels, save_figure
from probe.io import atomic_write_bytes, atomic_write_text
from probe.models.folder import load_model_folder
from probe.progress import progress
from probe.tasks.common import (TaskOutput, load_model_split, output_folder, resolve_model,
                                write_results)

SELECTIONS = ("correct", "wrong", "any")


def class_index(spec, name: str | int) -> int:
    """--class as a slug, code or index; unknown: the valid names and the closest match."""
    try:
        return spec.class_index(name)
    except ConfigError as e:
        words = [*spec.classes, *spec.codes, *(d.lower() for d in spec.display_names)]
        close = difflib.get_close_matches(str(name).strip().lower(), words, n=1, cutoff=0.5)
        if close:
            k = words.index(close[0]) % spec.num_classes
            raise ConfigError(f"{e} (closest match: {spec.classes[k]})") from None
        raise


def _resolve(model, class_name, root):
    """The model folder; without --model the newest whose dataset has the class. A class no
    model knows is reported against the newest model's classes, with the closest match."""
    try:
        return resolve_model(model, root=root, class_name=class_name)
    except ConfigError:
        if model is not None or class_name is None:
            raise
        try:
            folder, _ = resolve_model(None, root=root)
        except ProbeError:
            raise
        class_index(folder.spec, class_name)  # raises with the closest match
        raise


def parse_indices(text: str | Sequence[int], n_images: int, split: str) -> list[int]:
    """"3,17,40" → [3, 17, 40], each checked against the split's size."""
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        s = str(item).strip()
        if not s:
            continue
        if not s.lstrip("-").isdigit():
            raise ConfigError(f"--index {s!r}: give image numbers like 3,17,40")
        i = int(s)
        if not 0 <= i < n_images:
            raise ConfigError(f"--index {i}: the {split} split has images 0..{n_images - 1}")
        out.append(i)
    if not out:
        raise ConfigError("--index: give at least one image number, like 3,17,40")
    return out


def _warm_up(net, x: torch.Tensor) -> None:
    """One forward and backward pass: the first gradient of a process pays for setting up
    kernels, which would otherwise be billed to whichever method runs first."""
    from probe.methods.saliency import working_copy
    with working_copy(net) as work:
        inp = x[:1].detach().clone().requires_grad_()
        torch.autograd.grad(work(inp).sum(), inp)


def select_images(net, data, spec, k: int, n: int, selection: str, split: str, batch_size: int):
    """The first n images of class k in the split that the model classifies correctly
    (selection "correct"), wrongly ("wrong") or either ("any"): (indices, probabilities)."""
    candidates = (data.labels == k).nonzero().flatten()
    name = spec.classes[k]
    if len(candidates) == 0:
        raise ConfigError(f"the {split} split has no image of class {name}: try --split test or train")
    if selection == "any":
        chosen = candidates[:n]
        return chosen, class_probabilities(net, eval_view(data.images[chosen], spec), batch_size=batch_size)
    chosen, probs = [], []
    step = max(64, 4 * n)
    for s in range(0, len(candidates), step):  # predict only as far as needed
        idx = candidates[s:s + step]
        p = class_probabilities(net, eval_view(data.images[idx], spec), batch_size=batch_size)
        keep = (p.argmax(1) == k) if selection == "correct" else (p.argmax(1) != k)
        chosen.append(idx[keep])
        probs.append(p[keep])
        if sum(len(c) for c in chosen) >= n:
            break
    chosen_t, probs_t = torch.cat(chosen)[:n], torch.cat(probs)[:n]
    if len(chosen_t) == 0:
        if selection == "correct":
            raise ConfigError(f"no correctly classified image of class {name} in the {split} split "
                              f"({len(candidates)} image(s) of the class, all misclassified): use --wrong "
                              "to see why the model says otherwise, or --any")
        raise ConfigError(f"every one of the {len(candidates)} image(s) of class {name} in the {split} "
                          "split is classified correctly: nothing to show with --wrong (leave it out, or "
                          "try --split test)")
    return chosen_t, probs_t


def _p(p: float) -> str:
    return f"{p:.2f}".removeprefix("0") if p < 0.995 else "1.0"


def run_saliency(model: str | Path | None = None, *, class_name: str | None = None,
                 methods: str | Sequence[str] = "all", n: int = 6, split: str = "val",
                 selection: str = "correct", index: str | Sequence[int] | None = None,
                 images: Sequence[str | Path] | None = None, scale: str = "method", overlay: bool = False,
                 faithfulness: bool = True, data_dir=None, out=None, device: str = "auto",
                 batch_size: int = 256, threads: int | None = None, seed: int = 0,
                 root="trained_models") -> TaskOutput:
    """Maps of each method for n images of a class (or the images picked by index, or the
    user's own files), the deletion/insertion curves and the randomization check; figures,
    attributions.safetensors, faithfulness.csv and results.json in reports/<model>/saliency/."""
    from probe.methods.faithfulness import FaithfulnessConfig, deletion_insertion, randomization_check
    from probe.data.user_images import load_user_images
    from probe.figures.saliency import (faithfulness_figure, randomization_figure,
                                        randomization_maps_figure, saliency_figure)
    started = time.perf_counter()
    method_list = parse_methods(methods)
    if n < 1:
        raise ConfigError(f"--n {n}: show at least 1 image")
    if scale not in ("method", "image"):
        raise ConfigError(f"--scale {scale!r}: use method (one colour scale per method) or image")
    if selection not in SELECTIONS:
        raise ConfigError(f"selection {selection!r}: use one of {', '.join(SELECTIONS)}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: use 1 or more")
    if images and index is not None:
        raise ConfigError("give --image files or --index numbers, not both")
    if (images or index is not None) and selection != "correct":
        raise ConfigError(f"--{selection} picks images of --class; with --index or --image the images are given")
    if class_name is None and not images and index is None:
        raise ConfigError("which class? give --class (a name, a code like c2, or an index), "
                          "or pick images with --index or --image")

    folder, how = _resolve(model, class_name, root)
    spec = folder.spec
    k = class_index(spec, class_name) if class_name is not None else None
    out = output_folder(folder, "saliency", out)
    dev = resolve_device(device)
    net, _ = load_model_folder(folder.path, dev)
    short = class_labels(spec, short=True)
    config = SaliencyConfig(batch_size=batch_size, seed=seed)
    fconfig = FaithfulnessConfig(batch_size=batch_size, seed=seed)

    with cpu_threads(threads, dev) as thread_info:
        # ---- the images and the class each map explains -------------------------------------
        data_info: dict = {"dataset": spec.name}
        if images:
            user = load_user_images(images, spec)
            frames = user.images
            probs = class_probabilities(net, eval_view(frames, spec), batch_size=batch_size)
            targets = torch.full((len(frames),), k) if k is not None else probs.argmax(1)
            rows = [{"file": str(p), "note": note, "label": None, "role": None}
                    for p, note in zip(user.paths, user.notes)]
            row_labels = [(p.name if len(p.name) <= 12 else p.name[:11] + "…") for p in user.paths]
            data_info |= {"source": "files", "files": [str(p) for p in user.paths]}
            what = f"{len(frames)} file{'s' if len(frames) != 1 else ''}"
        else:
            data = load_model_split(folder, split, data_dir)
            data_info |= {"split": split, "n": len(data),
                          "split_seed": folder.train_config.get("split_seed", folder.train_config.get("seed", 0))}
            if index is not None:
                idx = torch.tensor(parse_indices(index, len(data), split))
                probs = class_probabilities(net, eval_view(data.images[idx], spec), batch_size=batch_size)
                labels = data.labels[idx]
                targets = (torch.full((len(idx),), k) if k is not None
                           else torch.where(labels >= 0, labels, probs.argmax(1)))
                roles = [None] * len(idx)
                what = f"{split} images {', '.join(map(str, idx.tolist()))}"
            else:
                idx, probs = select_images(net, data, spec, k, n, selection, split, batch_size)
                labels = data.labels[idx]
                roles = [None] * len(idx)
                targets = torch.full((len(idx),), k)
                what = {"correct": f"the first {len(idx)} correctly classified", "any": f"the first {len(idx)}",
                        "wrong": f"the first {len(idx)} misclassified"}[selection] \
                    + f" {split} image{'s' if len(idx) != 1 else ''} of class {spec.classes[k]}"
                if selection == "wrong":  # each image twice: why the true class, why the prediction
                    pred = probs.argmax(1)
                    idx, labels, probs = (t.repeat_interleave(2, 0) for t in (idx, labels, probs))
                    targets = torch.stack([torch.full_like(pred, k), pred], 1).flatten()
                    roles = ["true", "predicted"] * (len(idx) // 2)
            frames = data.images[idx]
            rows = [{"index": int(i), **({"image": data.names[int(i)]} if data.names else {}),
                     "label": spec.classes[int(y)] if y >= 0 else None, "role": r}
                    for i, y, r in zip(idx.tolist(), labels.tolist(), roles)]
            row_labels = [f"#{i}" + (" true" if r == "true" else " said" if r == "predicted" else "")
                          for i, r in zip(idx.tolist(), roles)]
        x = eval_view(frames, spec)  # (N, C, h, w): what the network sees and the maps cover

        # ---- maps and faithfulness -----------------------------------------------------------
        _warm_up(net, x.float() / 255)
        n_rows = len(x)
        with progress(f"saliency of {n_rows} image(s)") as bar:
            task = bar.add_task("", total=len(method_list))
            result = saliency(net, x, targets, methods=method_list, config=config, probs=probs,
                              progress=lambda _m: bar.advance(task))
        di = rand = None
        if faithfulness:
            with progress("deletion and insertion") as bar:
                bar.add_task("", total=None)
                di = deletion_insertion(net, x, targets, result.maps, config=fconfig)
            with progress("randomization check") as bar:
                from probe.methods.faithfulness import cascade_groups
                task = bar.add_task("", total=len(method_list) * len(cascade_groups(net)))
                rand = randomization_check(net, x, targets, methods=method_list, config=config,
                                           trained_maps=result.maps, threshold=fconfig.flag_threshold,
                                           seed=seed, progress=lambda _m: bar.advance(task))

    # ---- rows, figures, files --------------------------------------------------------------------
    p_target = result.p_target
    predicted = result.predicted
    for r, row in enumerate(rows):
        row.update({"row": r, "target": spec.classes[int(targets[r])], "predicted": spec.classes[int(predicted[r])],
                    "p_target": round(float(p_target[r]), 6),
                    "p_predicted": round(float(result.probs[r, predicted[r]]), 6)})
        if result.ig_delta is not None:
            row["ig_delta"] = round(float(result.ig_delta[r]), 6)
            row["ig_gap"] = round(float(result.ig_gap[r]), 6)
    row_labels = [f"{lab}\n{short[int(t)]} {_p(float(p))}" for lab, t, p in zip(row_labels, targets, p_target)]

    figures = []
    h, w = x.shape[-2:]
    crop_box = None
    if tuple(frames.shape[-2:]) != (h, w):
        H, W = frames.shape[-2:]
        crop_box = ((H - h) // 2, (W - w) // 2, h, w)  # eval_view's centre crop
    title_class = ("each twice: maps for the true class and for the prediction" if selection == "wrong"
                   else f"maps for class {spec.display_names[k]}" if k is not None
                   else "maps for the predicted class" if images else "maps for each image's class")
    title = f"{folder.name}: {what}; {title_class} (rows: image, class explained, its probability)"
    fig = saliency_figure(result.maps, x, signed=SIGNED, row_labels=row_labels,
                          frames=frames if crop_box else None, crop_box=crop_box, scale=scale,
                          overlay=overlay, title=title)
    figures += save_figure(fig, out, "saliency")
    if di is not None:
        figures += save_figure(faithfulness_figure(di, title=f"{folder.name}: deletion and insertion, "
                                                   f"mean of {n_rows} image(s)"), out, "faithfulness")
        figures += save_figure(randomization_figure(rand, title=f"{folder.name}: model-randomization check"),
                               out, "randomization")
        figures += save_figure(randomization_maps_figure(rand, x[0], 0, signed=SIGNED,
                                                         title=f"{folder.name}: {row_labels[0].split(chr(10))[0]}, "
                                                               "maps as the model is re-initialized from the top"),
                               out, "randomization-maps")

    from safetensors.torch import save as st_save
    tensors = {m: result.maps[m].float().contiguous() for m in result.maps}
    attributions = out / "attributions.safetensors"
    atomic_write_bytes(attributions, st_save(tensors, metadata={"format": "probe saliency maps",
                                                                "layout": "N×H×W float32, rows as in results.json"}))
    files = [*figures, attributions]

    fsum = di.summary() if di is not None else {}
    rsum = rand.summary() if rand is not None else {}
    table = _table(result, fsum, rand)
    if di is not None:
        csv_path = out / "faithfulness.csv"
        atomic_write_text(csv_path, _csv(table))
        files.append(csv_path)

    ips = result.images_per_second()
    results = {
        "methods": method_list,
        "rows": rows,
        "targets": [spec.classes[int(t)] for t in targets],
        "indices": [r.get("index") for r in rows] if not images else None,
        "classes": list(spec.classes),
        "attributions": {"file": attributions.name, "keys": method_list, "shape": [n_rows, int(h), int(w)],
                         "dtype": "float32", "signed": [m for m in method_list if m in SIGNED],
                         "reduction": {m: REDUCTION[m] for m in method_list},
                         "space": "the network's input (after the dataset's evaluation crop)"},
        "seconds": {m: round(s, 4) for m, s in result.seconds.items()},
        "images_per_second": {m: round(v, 2) for m, v in ips.items()},
        "table": table,
    }
    if result.ig_delta is not None:
        rel = (result.ig_delta.abs() / result.ig_gap.abs().clamp_min(1e-12))
        results["ig_convergence"] = {"delta": result.ig_delta.tolist(), "gap": result.ig_gap.tolist(),
                                     "max_abs_delta": float(result.ig_delta.abs().max()),
                                     "max_relative_delta": float(rel.max())}
    if di is not None:
        results["deletion_insertion"] = {"fractions": di.fractions.tolist(), "methods": fsum}
        results["randomization"] = rsum
    settings = {"class": spec.classes[k] if k is not None else None, "methods": method_list, "n": n,
                "split": None if images else split,
                "selection": "files" if images else "index" if index is not None else selection,
                "scale": scale, "overlay": overlay, "faithfulness": faithfulness,
                "saliency": config.to_dict(int(h), int(w)), "deletion_insertion": fconfig.to_dict() | {"blur_sigma": fconfig.sigma(int(h), int(w))},
                "randomization": {"cascading": True, "correlation": "Spearman of |map|",
                                  "threshold": fconfig.flag_threshold, "seed": seed},
                "colour_scale": {"clip_percentile": 99.5, "absolute": "sequential from 0",
                                 "signed": "diverging, symmetric about 0"},
                "device": str(dev), "batch_size": batch_size, **thread_info}
    path = write_results(out, "saliency", folder=folder, settings=settings, results=results,
                         figures=figures, started=started, data=data_info)
    files.append(path)

    lines = [f"model: {folder.path} ({how})", f"{what}: {', '.join(TITLES[m] for m in method_list)}"]
    if result.ig_delta is not None:
        lines.append(f"integrated gradients: largest |convergence delta| {results['ig_convergence']['max_abs_delta']:.3g} "
                     f"({100 * results['ig_convergence']['max_relative_delta']:.2g}% of f(x) − f(black))")
    lines += _format_table(table, faithfulness)
    if rand is not None and rand.flagged:
        lines.append("flagged (maps barely change when the model is re-initialized): "
                     + ", ".join(TITLES[m] for m in rand.flagged))
    lines.append(f"{len(figures) // 2} figure(s) (PNG + PDF), attributions.safetensors"
                 + (", faithfulness.csv" if di is not None else "") + ", results.json"
                 + (f"; {thread_info['threads']} CPU thread(s): {thread_info['why']}" if "why" in thread_info else ""))
    return TaskOutput(out, files, lines, results)


def _table(result, fsum: dict, rand) -> list[dict]:
    ips = result.images_per_second()
    rows = []
    for m in result.methods:
        row = {"method": m, "seconds": round(result.seconds[m], 4), "images_per_second": round(ips.get(m, 0.0), 2)}
        if fsum:
            row |= {"deletion_auc": round(fsum[m]["deletion_auc"], 4), "insertion_auc": round(fsum[m]["insertion_auc"], 4)}
        if rand is not None:
            row |= {"spearman_randomized": round(rand.final[m], 4), "flagged": m in rand.flagged}
        rows.append(row)
    if fsum:
        rows.append({"method": "random", "deletion_auc": round(fsum["random"]["deletion_auc"], 4),
                     "insertion_auc": round(fsum["random"]["insertion_auc"], 4)})
    return rows


def _csv(table: list[dict]) -> str:
    keys = ["method", "deletion_auc", "insertion_auc", "spearman_randomized", "flagged", "seconds",
            "images_per_second"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, keys, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in table:
        w.writerow({k: row.get(k, "") for k in keys})
    return buf.getvalue()


def _format_table(table: list[dict], faithfulness: bool) -> list[str]:
    if faithfulness:
        head = f"{'method':<22}{'deletion↓':>10}{'insertion↑':>11}{'random ρ':>10}{'img/s':>9}"
    else:
        head = f"{'method':<22}{'img/s':>9}"
    lines = [head]
    for r in table:
        name = TITLES.get(r["method"], "random order")
        if faithfulness:
            rho = r.get("spearman_randomized")
            rho_s = "" if rho is None else f"{rho:.2f}" + ("*" if r.get("flagged") else " ")
            ips = f"{r['images_per_second']:.1f}" if "images_per_second" in r else ""
            lines.append(f"{name:<22}{r['deletion_auc']:>10.3f}{r['insertion_auc']:>11.3f}{rho_s:>10}{ips:>9}")
        else:
            lines.append(f"{name:<22}{r['images_per_second']:>9.1f}")
    if faithfulness:
        lines.append("(areas under the curves, mean over the images; random ρ: Spearman of the trained "
                     "and the re-initialized model's maps, * flagged)")
    return lines


def run_predict_images(model: str | Path, paths: Sequence[str | Path], *, device: str = "auto",
                       top: int = 3) -> str:
    """The top classes of a user's own image files, each brought to the model's input the way
    its dataset's images were (see probe.data.user_images)."""
    from probe.data.user_images import load_user_images
    net, folder = load_model_folder(model, resolve_device(device))
    spec = folder.spec
    user = load_user_images(paths, spec)
    probs = class_probabilities(net, eval_view(user.images, spec))
    p, kk = probs.topk(min(top, spec.num_classes), dim=1)
    width = max(len(str(q)) for q in user.paths)
    lines = []
    for path, note, pr, ks in zip(user.paths, user.notes, p.tolist(), kk.tolist()):
        guesses = "  ".join(f"{spec.classes[c]} {v:.3f}" for c, v in zip(ks, pr))
        lines.append(f"{str(path):<{width}}  {guesses}   ({note})")
    return "\n".join(lines)
