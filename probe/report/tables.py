"""Text tables for the terminal: the architecture zoo and the trained models."""
from __future__ import annotations

from pathlib import Path

from probe.errors import ProbeError
from probe.models.folder import META, read_model_folder
from probe.text import text_table


def zoo_text(input_shape: tuple[int, int, int], num_classes: int, width: float) -> str:
    from probe.models.zoo import zoo_table  # torch: not for `probe models list`
    rows = zoo_table(input_shape, num_classes, width=width)
    body = [[r["name"], str(r["depth"]), r["block"], "pre" if r["preact"] else "post", r["shortcut"],
             f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f}M"] for r in rows]
    c, h, w = input_shape
    return (f"input {c}×{h}×{w}, {num_classes} classes, width ×{width:g}\n"
            + text_table(["preset", "depth", "block", "act", "shortcut", "params", "mult-adds"], body, {1, 5, 6}))


def trained_models(root: Path) -> list[dict]:
    """Every model folder below root, checked: a readable one as its meta.json, an unreadable
    one as {"name", "error"} (listed, not skipped, and never hiding the others)."""
    rows = []
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir() and (p / META).exists()):
        try:
            rows.append(read_model_folder(folder).meta | {"name": folder.name})
        except ProbeError as e:
            rows.append({"name": folder.name, "error": str(e).removeprefix(f"{folder / META}: ")})
    return rows


def models_text(root: Path) -> str:
    if not Path(root).is_dir():
        raise ProbeError(f"{root}: no such folder; train a model with `probe train` or give --root")
    rows, broken = [], []
    for m in trained_models(root):
        if "error" in m:
            rows.append([m["name"], "unreadable", "", "", "", "", ""])
            broken.append(f"  {m['name']}: {m['error']}")
            continue
        metrics = m.get("metrics") or {}
        def err(split):
            e = (metrics.get(split) or {}).get("error")
            return "—" if e is None else f"{100 * e:.2f}%"
        width = m["arch"].get("width", 1.0)
        arch = str(m.get("arch_name", "?")) + (f" ×{width:g}" if width != 1.0 else "")
        params = m.get("parameters")
        rows.append([m["name"], m["dataset"]["name"], arch,
                     f"{params:,}" if isinstance(params, int) else "?",
                     err("val"), err("test"), str(m.get("created", ""))[:10]])
    if not rows:
        return f"no trained models in {root}"
    table = text_table(["name", "dataset", "arch", "params", "val err", "test err", "date"], rows, {3, 4, 5})
    return table + ("\n\nunreadable:\n" + "\n".join(broken) if broken else "")
