"""Text tables for the terminal: the architecture zoo and the trained models."""
from __future__ import annotations

import json
from pathlib import Path

from probe.errors import ProbeError


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    def fmt(cells):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def zoo_text(input_shape: tuple[int, int, int], num_classes: int, width: float) -> str:
    from probe.models.zoo import zoo_table
    rows = zoo_table(input_shape, num_classes, width=width)
    body = [[r["name"], str(r["depth"]), r["block"], "pre" if r["preact"] else "post", r["shortcut"],
             f"{r['params']:,}", f"{r['macs'] / 1e6:,.1f}M"] for r in rows]
    c, h, w = input_shape
    return (f"input {c}×{h}×{w}, {num_classes} classes, width ×{width:g}\n"
            + _table(["preset", "depth", "block", "act", "shortcut", "params", "mult-adds"], body, {1, 5, 6}))


def trained_models(root: Path) -> list[dict]:
    """meta.json of every model folder below root (unreadable ones are reported, not skipped)."""
    rows = []
    for meta_path in sorted(Path(root).glob("*/meta.json")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            rows.append({"name": meta_path.parent.name, "broken": True})
            continue
        if not isinstance(meta, dict) or "dataset" not in meta:
            rows.append({"name": meta_path.parent.name, "broken": True})
            continue
        rows.append(meta | {"name": meta_path.parent.name})
    return rows


def models_text(root: Path) -> str:
    if not Path(root).is_dir():
        raise ProbeError(f"{root}: no such folder; train a model with `probe train` or give --root")
    rows = []
    for m in trained_models(root):
        if m.get("broken"):
            rows.append([m["name"], "(meta.json unreadable)", "", "", "", "", ""])
            continue
        metrics = m.get("metrics", {})
        def err(split):
            e = metrics.get(split, {}).get("error")
            return "—" if e is None else f"{100 * e:.2f}%"
        width = m.get("arch", {}).get("width", 1.0)
        arch = m.get("arch_name", "?") + (f" ×{width:g}" if width != 1.0 else "")
        rows.append([m["name"], m["dataset"]["name"], arch, f"{m.get('parameters', 0):,}",
                     err("val"), err("test"), m.get("created", "")[:10]])
    if not rows:
        return f"no trained models in {root}"
    return _table(["name", "dataset", "arch", "params", "val err", "test err", "date"], rows, {3, 4, 5})
