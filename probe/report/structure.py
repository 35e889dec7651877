"""The report's own parts (the model card, the comparison) and the placing of each analysis's
section: its FigureRefs become Figures read from the analysis's folder, its anchors unique."""
from __future__ import annotations

from pathlib import Path

from probe.analysis import saliency
from probe.analysis.compare import compare_row, errors_section, table_parts
from probe.errors import ConfigError, ProbeError
from probe.figures.style import save_figure
from probe.models.folder import ModelFolder
from probe.models.foreign import ForeignModel, NO_DATASET
from probe.presentation import Figure, FigureRef, Section, Table, Text, pct, slug


class MissingFigure(ProbeError):
    """An analysis's section names a figure its folder does not hold (a stale or broken cache)."""


def place_figures(section: Section, folder: Path, prefix: str, analysis: str) -> Section:
    """The section with every FigureRef replaced by the Figure files stem.png + stem.pdf in
    `folder` (a missing one is an error, never a silent omission) and every anchor made unique
    in the report: sections `<prefix>-<anchor>`, figures `<prefix>-<analysis>-<stem>`."""
    children = []
    for child in section.children:
        if isinstance(child, FigureRef):
            png, pdf = Path(folder) / f"{child.stem}.png", Path(folder) / f"{child.stem}.pdf"
            if not (png.is_file() and pdf.is_file()):
                raise MissingFigure(f"{png.with_suffix('')}: the {analysis} section names figure "
                                    f"{child.stem!r}, which its folder lacks; delete {folder} to rerun it")
            child = Figure(png, pdf, child.caption, slug(f"{prefix}-{analysis}-{child.stem}"), child.data,
                           child.width)
        elif isinstance(child, Section):
            child = place_figures(child, folder, prefix, analysis)
        children.append(child)
    return Section(section.title, slug(f"{prefix}-{section.anchor}"), children)


def model_card(folder: ModelFolder, prefix: str) -> Section:
    if isinstance(folder, ForeignModel):
        return foreign_card(folder, prefix)
    m, t, a = folder.meta, folder.train_config, folder.arch
    metrics = folder.metrics
    spec = folder.spec
    arch = (f"{m.get('arch_name', '?')}: depth {a.depth}, {a.block} blocks, "
            f"{'pre' if a.preact else 'post'}-activation, shortcut {a.shortcut}, width ×{a.width:g}")
    split_rule = t.get("split_by", "driver") if spec.name == "sfddd" else "seeded random hold-out"
    sizes = m.get("split_sizes") or {}
    train_time = m.get("train_seconds") or m.get("wall_seconds")
    rows = [
        ("model", folder.name),
        ("architecture", arch),
        ("parameters", f"{m['parameters']:,}" if isinstance(m.get("parameters"), int) else "?"),
        ("dataset", f"{spec.name}: {spec.num_classes} classes, {spec.channels}×{spec.height}×{spec.width}"
                    + (f", network input {spec.input_shape[1]}×{spec.input_shape[2]} (centre crop)" if spec.crop else "")),
        ("splits", ", ".join(f"{k} {v:,}" for k, v in sizes.items() if isinstance(v, int))
                   + f" ({split_rule}, split seed {folder.split_seed})"),
        ("training", f"{m.get('epochs_done', t.get('epochs', '?'))} epochs, batch {t.get('batch_size', '?')}, "
                     f"lr {t.get('lr', '?')} ({t.get('schedule', '?')}), weight decay {t.get('weight_decay', '?')}, "
                     f"{'augmented' if t.get('augment', True) else 'no augmentation'}, precision {m.get('precision', t.get('precision', '?'))}"),
        ("seed", str(t.get("seed", m.get("seed", "?")))),
        ("validation error", pct((metrics.get("val") or {}).get("error")) + f" (best epoch {m.get('best_epoch', '?')})"),
        ("test error", pct((metrics.get("test") or {}).get("error"))),
        ("training time", f"{train_time / 60:.1f} min" if isinstance(train_time, (int, float)) else "—"),
        ("training speed", f"{m['images_per_second']:,.0f} images/s" if isinstance(m.get("images_per_second"), (int, float)) else "—"),
        ("trained with", ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items())
                         + (f" on {m.get('device')}" if m.get("device") else "")),
        ("created", str(m.get("created", "—"))),
        ("weights sha256", folder.weights_sha256()),
    ]
    return Section("Model card", f"{prefix}-card", [Table(["", ""], [list(r) for r in rows], caption=f"Model card of {folder.name}.")])



def _shown(names, most: int = 12) -> str:
    names = list(names)
    return ", ".join(names[:most]) + (f", … ({len(names) - most} more)" if len(names) > most else "")


def _parameters(folder: ForeignModel) -> str:
    try:
        return f"{sum(p.numel() for p in folder.load('cpu').parameters()):,}"
    except ProbeError as e:
        return f"? ({e})"


def foreign_card(folder: ForeignModel, prefix: str) -> Section:
    """The card of a model probe did not train: what its file and model info say, and what is not
    known (its training, its history, its errors)."""
    info, spec = folder.info, folder.spec
    cam = ("— (a TorchScript or torch.export file has no layer that can be hooked: no Grad-CAM)"
           if folder.kind != "factory" else info.cam_layer or "— (none given: no Grad-CAM; \"cam_layer\" in the model info)")
    norm = (f"mean {list(info.mean)}, std {list(info.std)} (probe's Normalize before the network)" if info.mean
            else "none: the network takes [0, 1] pixels")
    data = (f"{spec.name} (its splits, split seed {folder.split_seed})" if spec.name != NO_DATASET else
            "none named: only the analyses that need no data (fooling from noise), and your own images (--image)")
    rows = [
        ("model", folder.name), ("file", str(folder.path)), ("format", folder.format_words),
        ("parameters", _parameters(folder)),
        ("classes", f"{spec.num_classes}: {_shown(spec.classes)}"),
        ("input", f"{spec.channels}×{spec.input_shape[1]}×{spec.input_shape[2]}, pixels in [0, 1]"),
        ("normalization", norm), ("Grad-CAM layer", cam), ("dataset", data),
        ("training", "unknown: not trained by probe (no training configuration)"),
        ("training history", "no training history: no learning curves"),
        ("validation error", "— (not measured by probe: see the analyses)"),
        ("model info", info.source),
        ("file sha256", folder.weights_sha256()),
    ]
    return Section("Model card", f"{prefix}-card", [Table(["", ""], [list(r) for r in rows],
                   caption=f"Model card of {folder.name}, a model probe did not train: what its file and model "
                           "info say; what they cannot say is marked unknown.")])


def comparison_section(folders: list[ModelFolder], joint=(), per_model: list[dict] = (),
                       out: Path | None = None) -> Section:
    """The models side by side: their numbers in one table, then each joint analysis's part
    (learning curves on one plot, accuracy against ε of every model), then what each model's
    own analyses show of the same images (saliency maps on one colour scale per method)."""
    s = Section("Comparison", "comparison").add(*table_parts([compare_row(f) for f in folders]))
    errors = [r["misclassified"] for r in per_model if "misclassified" in r]
    if len(errors) > 1 and all(r.split is not None and r.shown == r.wrong for r in errors):  # not cut by --max
        try:
            s.add(place_figures(errors_section(errors), out, "comparison", "errors"))
        except ConfigError as e:  # other images or other classes: said, not compared
            s.add(Section("Test error compared", "comparison-errors", [Text(f"Not compared: {e}.")]))
    for step, result, step_out in joint:
        s.add(place_figures(step.entry.section(result), step_out, "comparison", step.analysis))
    maps = [r["saliency"] for r in per_model if "saliency" in r]
    if out is not None and len(maps) > 1:
        folder = out / "saliency-side-by-side"
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for fig, stem in zip(saliency.comparison_figures(maps), saliency.comparison_stems(maps)):
                save_figure(fig, folder, stem)
            s.add(place_figures(saliency.comparison_section(maps), folder, "comparison", "saliency"))
        except (TypeError, ValueError, AttributeError, KeyError, IndexError) as e:
            # a cached result whose arrays are gone or damaged (found by the fuzz suite: its own
            # section needs none of them, the side-by-side figure all)
            s.add(Section("Side by side: what each model looks at", "comparison-saliency-side-by-side", [Text(
                f"Not compared: a saliency result cannot be drawn beside the others ({type(e).__name__}: "
                f"{str(e)[:200]}); delete the models' saliency folders under analyses/ to make them again.")]))
    return s
