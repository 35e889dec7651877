"""`probe data check`: what a dataset folder holds, split by split, as the loaders see it."""
from __future__ import annotations

from pathlib import Path

from probe.data import folder as image_folder
from probe.data import idx
from probe.data.imageset import ImageSet, channel_stats
from probe.data.paths import resolve_data_dir
from probe.data.sfddd import find_layout, read_driver_list
from probe.data.spec import get_spec, is_own_data
from probe.data.splits import SPLITS, load_splits


def split_report(images: ImageSet) -> dict:
    mean, std = channel_stats(images.images)
    counts = dict(zip(images.spec.classes, images.class_counts()))
    unlabelled = int((images.labels < 0).sum())
    report = {"count": len(images), "class_counts": counts, "shape": list(images.images.shape[1:]),
              "mean": mean, "std": std}
    if unlabelled:
        report["unlabelled"] = unlabelled
    return report


def check_dataset(name: str, data_dir: str | Path | None = None, **kw) -> dict:
    """Load every split (kw go to load_splits: seed, split_by, splits, size, classes_file) and
    describe each one.

    {"dataset", "data_dir", "spec_mean", "spec_std", "splits": {split: {"count", "class_counts"
    {slug: n}, "shape" [C, H, W], "mean" [per channel], "std", ("unlabelled")}},
    and for SFDDD "drivers": {split: [driver ids]}}. SFDDD's unlabelled imgs/test is counted as
    split "kaggle" when the folder has one. Your own data (folder, idx) add "classes" [[slug,
    display name]], "input" [C, H, W] and "sources" {split: where its images come from}."""
    name = name.lower()
    if name == "sfddd" and "splits" not in kw:
        has_test = find_layout(data_dir).test.is_dir()
        kw["splits"] = SPLITS + (("kaggle",) if has_test else ())
    sets = load_splits(name, data_dir, **kw)
    spec = next(iter(sets.values())).spec if is_own_data(name) else get_spec(name)
    folder = resolve_data_dir(name, data_dir)
    report = {
        "dataset": spec.name, "data_dir": str(folder),
        "spec_mean": list(spec.mean), "spec_std": list(spec.std),
        "splits": {s: split_report(images) for s, images in sets.items()},
        **({"drivers": _sfddd_drivers(data_dir, sets)} if spec.name == "sfddd" else {}),
    }
    if is_own_data(name):
        report |= {"classes": [list(c) for c in zip(spec.classes, spec.display_names)],
                   "input": list(spec.input_shape), "sources": _sources(name, folder, kw.get("seed", 0))}
    return report


def _sources(name: str, folder: Path, seed: int) -> dict[str, str]:
    """{split: where its images come from}, in words."""
    if name == "idx":
        paths = idx.find_files(folder)
        train = f"{paths['train']['images'].name} less val"
        val = f"a seeded draw (seed {seed}) from {paths['train']['images'].name}"
        return {"train": train, "val": val, "test": paths["test"]["images"].name}
    layout = image_folder.scan(folder)
    carved = layout.carved
    drawn = f"drawn from train/: {image_folder.HOLDOUT:.0%} of each class (seed {seed})"
    return {"train": "train/" + (f" less {' and '.join(reversed(carved))}" if carved else ""),
            **{s: drawn if s in carved else f"{s}/" for s in ("val", "test")},
            "mean/std": f"of train, cached in {image_folder.stats_file(folder)}"}


def _sfddd_drivers(data_dir, sets: dict[str, ImageSet]) -> dict[str, list[str]]:
    """Which drivers each labelled split holds (the whole point of splitting by driver)."""
    by_name = {key.split("/", 1)[1]: driver
               for key, (driver, _) in read_driver_list(find_layout(data_dir).csv).items()}
    return {s: sorted({by_name[n] for n in images.names if n in by_name})
            for s, images in sets.items() if s != "kaggle"}


def _floats(xs) -> str:
    return " ".join(f"{x:.4f}" for x in xs)


def format_check(report: dict) -> str:
    """The report as text: one line per split, then the per-class counts as a table."""
    splits = report["splits"]
    lines = [f"{report['dataset']} in {report['data_dir']}", ""]
    if "classes" in report:  # your own data
        lines += _own_lines(report)
    lines.append(f"{'split':<8}{'images':>10}  {'shape':<10} {'mean':<22} std")
    for s, r in splits.items():
        shape = "×".join(str(d) for d in r["shape"])
        lines.append(f"{s:<8}{r['count']:>10,}  {shape:<10} {_floats(r['mean']):<22} {_floats(r['std'])}")
    lines.append(f"{'(spec)':<8}{'':>10}  {'':<10} {_floats(report['spec_mean']):<22} "
                 f"{_floats(report['spec_std'])}")
    lines.append("")
    classes = next(iter(splits.values()))["class_counts"].keys() if splits else []
    width = max([len("class")] + [len(c) for c in classes])
    lines.append(f"{'class':<{width}}" + "".join(f"{s:>10}" for s in splits))
    for c in classes:
        lines.append(f"{c:<{width}}" + "".join(f"{r['class_counts'][c]:>10,}" for r in splits.values()))
    if any("unlabelled" in r for r in splits.values()):  # Kaggle's test set
        lines.append(f"{'unlabelled':<{width}}" + "".join(f"{r.get('unlabelled', 0):>10,}" for r in splits.values()))
    if report.get("drivers"):
        lines.append("")
    for s, drivers in report.get("drivers", {}).items():
        lines.append(f"{s} drivers ({len(drivers)}): {', '.join(drivers)}")
    return "\n".join(lines)


def _own_lines(report: dict) -> list[str]:
    """Classes, input shape and the source of each split, for a folder or IDX set."""
    classes = [slug if slug == shown else f"{shown} ({slug})" for slug, shown in report["classes"]]
    c, h, w = report["input"]
    lines = [f"classes  {len(classes)}: {', '.join(classes)}",
             f"input    {c}×{h}×{w} (channels × height × width), {'grey' if c == 1 else 'colour'}"]
    lines += [f"{s:<9}{where}" for s, where in report["sources"].items()]
    return lines + [""]
