"""What goes into a report: one Section per analysis, built from the analyses' results.json and
figure files, never from the live objects, so a cached analysis reads back exactly as a fresh one."""
from __future__ import annotations

from pathlib import Path

from probe.figures.attacks import eps_label
from probe.models.folder import ModelFolder
from probe.presentation import Figure, Section, Table, Text, slug
from probe.tasks.attacks import IN_255


def pct(x, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def figure(folder: Path, stem: str, caption: str, anchor: str, data=None, width: float = 1.0) -> Figure | None:
    png, pdf = Path(folder) / f"{stem}.png", Path(folder) / f"{stem}.pdf"
    if not (png.is_file() and pdf.is_file()):
        return None
    return Figure(png, pdf, caption, slug(anchor), data, width)


def model_card(folder: ModelFolder, prefix: str) -> Section:
    m, t, a = folder.meta, folder.train_config, folder.arch
    metrics = folder.metrics
    spec = folder.spec
    arch = (f"{m.get('arch_name', '?')}: depth {a.depth}, {a.block} blocks, "
            f"{'pre' if a.preact else 'post'}-activation, shortcut {a.shortcut}, width ×{a.width:g}")
    split_rule = t.get("split_by", "driver") if spec.name == "sfddd" else "seeded random hold-out"
    split_seed = t.get("split_seed", t.get("seed", 0))
    sizes = m.get("split_sizes") or {}
    train_time = m.get("train_seconds") or m.get("wall_seconds")
    rows = [
        ("model", folder.name),
        ("architecture", arch),
        ("parameters", f"{m['parameters']:,}" if isinstance(m.get("parameters"), int) else "?"),
        ("dataset", f"{spec.name}: {spec.num_classes} classes, {spec.channels}×{spec.height}×{spec.width}"
                    + (f", network input {spec.input_shape[1]}×{spec.input_shape[2]} (centre crop)" if spec.crop else "")),
        ("splits", ", ".join(f"{k} {v:,}" for k, v in sizes.items() if isinstance(v, int))
                   + f" ({split_rule}, split seed {split_seed})"),
        ("training", f"{m.get('epochs_done', t.get('epochs', '?'))} epochs, batch {t.get('batch_size', '?')}, "
                     f"lr {t.get('lr', '?')} ({t.get('schedule', '?')}), weight decay {t.get('weight_decay', '?')}, "
                     f"{'augmented' if t.get('augment', True) else 'no augmentation'}, precision {t.get('precision', '?')}"),
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
    return Section("Model card", f"{prefix}-card", [Table(["", ""], [list(r) for r in rows])])


def curves_section(results: dict, out: Path, prefix: str, name: str) -> Section:
    s = Section("Learning curves", f"{prefix}-curves")
    s.add(figure(out, "curves", f"{name}: training (dashed) and validation (solid) error and loss per epoch.",
                 f"{prefix}-curves", data=results["results"]))
    return s


def saliency_section(results: dict, out: Path, prefix: str, name: str) -> Section:
    r, st = results["results"], results["settings"]
    s = Section("What it looks at", f"{prefix}-saliency")
    s.add(Text(f"Attribution maps of {len(r['rows'])} {st.get('split') or ''} image(s) of class "
               f"{st.get('class')} for every method, one colour scale per method across the rows. "
               "Faithfulness: deletion removes pixels in the map's order (a faithful map makes the "
               "probability fall fast: low area), insertion restores them (high area is better); the "
               "randomization check compares each map with the map of the same network re-initialized "
               "from the top: a high rank correlation means the map barely depends on what was learned."))
    s.add(figure(out, "saliency", f"{name}: saliency maps, class {st.get('class')}.", f"{prefix}-saliency",
                 data={"rows": r["rows"], "methods": r["methods"]}))
    table = r.get("table") or []
    if table and "deletion_auc" in table[0]:
        def num(v, digits=3):
            return "—" if v is None else f"{v:.{digits}f}"
        s.add(Table(["method", "deletion area ↓", "insertion area ↑", "Spearman vs randomized", "flag",
                     "images/s"],
                    [[t["method"], num(t.get("deletion_auc")), num(t.get("insertion_auc")),
                      num(t.get("spearman_randomized"), 2),
                      "barely changes when the model is destroyed" if t.get("flagged") else "",
                      num(t.get("images_per_second"), 1)] for t in table],
                    caption="Faithfulness of each method (random order: deletion "
                            f"{num((r.get('deletion_insertion') or {}).get('methods', {}).get('random', {}).get('deletion_auc'))}, "
                            f"insertion {num((r.get('deletion_insertion') or {}).get('methods', {}).get('random', {}).get('insertion_auc'))}).",
                    numeric={1, 2, 3, 5}))
    s.add(figure(out, "faithfulness", f"{name}: deletion and insertion curves per method, with a random order "
                 "as the baseline.", f"{prefix}-faithfulness", data=r.get("deletion_insertion")))
    s.add(figure(out, "randomization", f"{name}: model-randomization check (Adebayo et al. 2018), rank "
                 "correlation of each method's maps as layers are re-initialized from the top.",
                 f"{prefix}-randomization", data=r.get("randomization")))
    s.add(figure(out, "randomization-maps", f"{name}: one image's maps as the model is re-initialized.",
                 f"{prefix}-randomization-maps"))
    return s


def fooling_section(results: dict, out: Path, prefix: str, name: str) -> Section:
    r = results["results"]
    rates = r.get("rates") or {}
    noise = r.get("source") == "noise"
    title = "Fooled from noise" if noise else "Fooled from real images"
    s = Section(title, f"{prefix}-fool-{'noise' if noise else 'dataset'}")
    how = (f"Gradient ascent from random noise ({r.get('style')}) until the model gives the target class "
           f"p ≥ {r['confidence']}" if noise else
           f"The smallest L∞ change to a correctly classified test image of another class that makes the "
           f"model say the target with p ≥ {r['confidence']}")
    s.add(Text(f"{how}; {r['count']} images. A fooling image counts only if it still fools the model after "
               f"it is saved as an 8-bit PNG and read back: fooled before saving "
               f"{pct(rates.get('before_saving'), 1)}, after saving {pct(rates.get('after_saving'), 1)}"
               + (f"; median change L∞ {r['median_linf'] * 255:.0f}/255, L2 {r['median_l2']:.2f}."
                  if not noise and r.get("median_linf") is not None else ".")))
    pages = sorted(Path(out).glob("fooling*.png"))
    for i, png in enumerate(pages, 1):
        s.add(figure(out, png.stem, f"{name}: {title.lower()}, one row per target class"
                     + ("" if noise else ": original | change (magnified) | fooled") + ".",
                     f"{prefix}-{'noise' if noise else 'dataset'}-fooling-{i}", data={"images": r["images"]}))
    return s


def robustness_section(results: dict, out: Path, folder: ModelFolder, prefix: str) -> Section:
    """A model's part of the robustness run: its accuracy against ε and its adversarial examples."""
    r, st = results["results"], results["settings"]
    mine = next((m for m in r["models"] if m["name"] == folder.name), None)
    s = Section("Robustness", f"{prefix}-robustness")
    if mine is None:
        return s.add(Text("Not shown: this model was not attacked."))
    # ε written as the robustness figure writes them (8/255 for CIFAR-10's L∞, 0.1 for MNIST's)
    in_255 = results["data"].get("dataset") in IN_255 and st.get("norm") == "linf"
    s.add(Text(f"{st['method'].upper()} {'L∞' if st['norm'] == 'linf' else 'L2'}, {st['steps']} steps, "
               f"random start, on {results['data'].get('n', '?')} {st['split']} images: accuracy against the "
               "size ε of the change (pixel values in [0, 1]). Clean accuracy on the whole split "
               f"{pct(mine['clean_accuracy_whole_split'])}, as probe evaluate says."))
    s.add(Table(["ε", "accuracy", "95% interval", "images"],
                [[eps_label(p["eps"], in_255), pct(p["accuracy"]),
                  f"{100 * p['ci95'][0]:.1f}–{100 * p['ci95'][1]:.1f}%" if p.get("ci95") else "—", f"{p['n']:,}"]
                 for p in mine["points"]], caption=f"{folder.name}: accuracy under attack.", numeric={1, 2, 3}))
    if len(r["models"]) == 1:
        s.add(figure(out, "robustness", f"{folder.name}: accuracy against ε.", f"{prefix}-robustness",
                     data={"points": mine["points"]}, width=0.75))
    stem = "examples" if len(r["models"]) == 1 else f"examples-{folder.name}"
    s.add(figure(out, stem, f"{folder.name}: adversarial examples at each ε.", f"{prefix}-adversarial-examples",
                 data={"examples": mine.get("examples")}))
    return s


def failures_section(results: dict, out: Path, prefix: str, name: str) -> Section:
    r = results["results"]
    split = results["settings"]["split"]
    s = Section("Where it fails", f"{prefix}-failures")
    s.add(Text(f"{r['wrong']} of {r['n']:,} {split} images are misclassified (error {pct(r['error'])}). "
               "Each wrong image shows the true class and its probability (upper left), the prediction "
               "(lower left, bold) and the second choice (lower right); most confident mistake first."))
    pages = sorted(Path(out).glob("misclassified*.png"))
    for i, png in enumerate(pages, 1):
        suffix = f" (page {i} of {len(pages)})" if len(pages) > 1 else ""
        s.add(figure(out, png.stem, f"{name}: misclassified {split} images{suffix}.",
                     f"{prefix}-misclassified-{i}", data={"misclassified": r["misclassified"]}))
    s.add(figure(out, "confusion", f"{name}: confusion matrix on the {split} split, counts on a log colour scale.",
                 f"{prefix}-confusion", data={"classes": r["classes"], "matrix": r["confusion_matrix"]}, width=0.75))
    s.add(figure(out, "confusion-normalized", f"{name}: confusion matrix, each row as a percentage of its true class.",
                 f"{prefix}-confusion-normalized",
                 data={"classes": r["classes"], "matrix": r["confusion_matrix_row_normalized"]}, width=0.75))
    s.add(figure(out, "per-class-accuracy", f"{name}: accuracy per class with its 95% Wilson interval.",
                 f"{prefix}-per-class", data={"per_class": r["per_class"]}, width=0.8))
    s.add(Table(["class", "images", "correct", "accuracy", "95% interval"],
                [[c["class"], f"{c['n']:,}", f"{c['correct']:,}", pct(c["accuracy"]),
                  "—" if c["ci95"] is None else f"{100 * c['ci95'][0]:.2f}–{100 * c['ci95'][1]:.2f}%"]
                 for c in r["per_class"]], caption="Per-class accuracy.", numeric={1, 2, 3, 4}))
    if r["most_confused"]:
        s.add(Table(["true class", "predicted", "images", "share of the true class"],
                    [[p["true"], p["predicted"], str(p["count"]), pct(p["fraction_of_true"])]
                     for p in r["most_confused"]], caption="The most confused pairs.", numeric={2, 3}))
    return s


def comparison_section(folders: list[ModelFolder], out: Path, group_results=()) -> Section:
    """The models side by side: their numbers in one table, their learning curves on one plot."""
    from probe.tasks.curves import COMPARE_COLUMNS, COMPARE_NUMERIC, compare_cells, compare_row
    s = Section("Comparison", "comparison")
    s.add(Table(COMPARE_COLUMNS, compare_cells([compare_row(f) for f in folders]),
                caption="The models side by side (train time: training and validation; images/s: training only).",
                numeric=COMPARE_NUMERIC))
    for step, _, step_out in group_results:
        if step.analysis == "curves":
            s.add(figure(step_out, "curves", "Learning curves of the models on one plot: each model one colour, "
                         "training dashed, validation solid.", "comparison-curves"))
    # The same inputs through each model: saliency of the same test images, fooling from the
    # same noise (seeded), one model after the other.
    for analysis, stem, what in (("saliency", "saliency", "saliency maps of the same test images"),
                                 ("fool-noise", "fooling", "fooling images grown from the same noise")):
        shown = [(f, out / "analyses" / f.name / analysis) for f in folders]
        shown = [(f, d) for f, d in shown if (d / f"{stem}.png").is_file()]
        if len(shown) > 1:
            sub = Section(f"Side by side: {what}", f"comparison-{analysis}")
            for f, d in shown:
                sub.add(figure(d, stem, f"{f.name}: {what}.", f"comparison-{analysis}-{f.name}"))
            s.add(sub)
    for step, results, step_out in group_results:
        if step.analysis == "robustness":
            st = results["settings"]
            s.add(figure(step_out, "robustness", f"Accuracy against ε of every model on the same "
                         f"{results['data'].get('n', '?')} {st['split']} images ({st['method'].upper()} "
                         f"{'L∞' if st['norm'] == 'linf' else 'L2'}, {st['steps']} steps).",
                         "comparison-robustness", data={m["name"]: m["points"] for m in results["results"]["models"]},
                         width=0.75))
    return s
