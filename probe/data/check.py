"""`probe data check`: what a dataset folder holds, split by split, as the loaders see it."""
from __future__ import annotations

from pathlib import Path

import torch

from probe.data.imageset import ImageSet
from probe.data.paths import resolve_data_dir
from probe.data.sfddd import find_layout, read_driver_list
from probe.data.spec import get_spec
from probe.data.splits import SPLITS, load_splits


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of [0, 1] pixels, in float64 chunks (no full float copy of the set)."""
    c = images.shape[1]
    s = torch.zeros(c, dtype=torch.float64)
    s2 = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64) / 255  # (n, C, H, W)
        s += x.sum(dim=(0, 2, 3))
        s2 += (x * x).sum(dim=(0, 2, 3))
    n = max(1, images.numel() // c)
    mean = s / n
    std = (s2 / n - mean * mean).clamp_min(0).sqrt()
    return mean.tolist(), std.tolist()


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
    """Load every split (kw go to load_splits: seed, split_by, splits) and describe each one.

    {"dataset", "data_dir", "spec_mean", "spec_std", "splits": {split: {"count", "class_counts"
    {slug: n}, "shape" [C, H, W], "mean" [per channel], "std", ("unlabelled")}},
    and for SFDDD "drivers": {split: [driver ids]}}. SFDDD's unlabelled imgs/test is counted as
    split "kaggle" when the folder has one."""
    spec = get_spec(name)
    if spec.name == "sfddd" and "splits" not in kw:
        has_test = find_layout(data_dir).test.is_dir()
        kw["splits"] = SPLITS + (("kaggle",) if has_test else ())
    sets = load_splits(spec.name, data_dir, **kw)
    return {
        "dataset": spec.name,
        "data_dir": str(resolve_data_dir(spec.name, data_dir)),
        "spec_mean": list(spec.mean), "spec_std": list(spec.std),
        "splits": {s: split_report(images) for s, images in sets.items()},
        **({"drivers": _sfddd_drivers(data_dir, sets)} if spec.name == "sfddd" else {}),
    }


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
