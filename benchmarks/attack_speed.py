"""PGD speed and strength: probe's attack against torchattacks' and captum.robust's PGD, in one run.

    .venv/bin/python benchmarks/attack_speed.py --threads 1          # 1000 MNIST test images, 3 rounds: ~30 min here
    .venv/bin/python benchmarks/attack_speed.py --images 500 --rounds 5
    .venv/bin/python benchmarks/attack_speed.py --sides probe-fp32 torchattacks --rounds 1
    .venv/bin/python benchmarks/attack_speed.py --table benchmarks/results/attack-speed.json  # reprint

Every side attacks the same images of the committed model (trained_models/mnist-resnet20, the
MNIST test split, a seeded random subset) with Madry et al.'s MNIST setting: PGD L∞, ε = 0.1 and
0.3, 40 steps of 0.01, a uniformly random start, in batches of the same size. Every side's
adversarial images are judged by the same fp32 forward pass, so "robust accuracy" means the same
thing for all: the share of images still classified correctly.

Sides:
  probe-fp32       probe.methods.attacks.pgd, fp32 (early stop: an image leaves the batch once an
                   iterate is adversarial, confirmed in fp32; the parameters' requires_grad off)
  probe-bf16       the same with the gradient steps under bf16 autocast (judged in fp32)
  probe-fp32-full  probe's loop without early stop: every image gets all 40 steps and the last
                   iterate is kept, like torchattacks; shows what the loop itself costs
  torchattacks     torchattacks.PGD(model, eps, alpha=0.01, steps=40, random_start=True), 3.5.x
                   (installed for the benchmark only: pip install --no-deps torchattacks; its
                   package __init__ imports scipy for other attacks, so PGD is loaded directly)
  captum           captum.robust.PGD(model, CrossEntropyLoss(reduction="none"), 0, 1).perturb(
                   radius=ε, step_size=0.01, step_num=40, random_start=True)

A round runs every side once at each ε, the order of the sides rotating from round to round so
that other processes' load hits all sides alike; one small warm-up attack per side comes first.
Reported per side and ε: the median images/s over the rounds, the mean robust accuracy over the
rounds (each round draws its own random starts: a single start moves the figure by ±0.5 points
on 500 images), and the ratio to torchattacks' images/s (ratio of medians).
The goal: probe at least as strong (robust accuracy ≤ torchattacks' + 0.5 points) and ≥ 3×
its images/s.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
import types
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_file import flags_line, machine  # noqa: E402
from probe.methods.attacks import pgd  # noqa: E402
from probe.methods.common import class_probabilities  # noqa: E402
from probe.models.folder import load_model_folder  # noqa: E402
from probe.methods.robustness import subset  # noqa: E402

SIDES = ("probe-fp32", "probe-bf16", "probe-fp32-full", "torchattacks", "captum")
EPS = (0.1, 0.3)
STEPS, STEP_SIZE = 40, 0.01


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "trained_models" / "mnist-resnet20"))
    p.add_argument("--data-dir", default=os.environ.get("PROBE_DATA_DIR", "/work/shared/datasets") + "/mnist")
    p.add_argument("--images", type=int, default=1000, help="test images attacked (default 1000)")
    p.add_argument("--batch-size", type=int, default=250, help="every side's batch (default 250)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    p.add_argument("--sides", nargs="+", choices=SIDES, default=list(SIDES))
    p.add_argument("--eps", nargs="+", type=float, default=list(EPS))
    p.add_argument("--threads", type=int, default=None, help="torch threads for every side (default: torch's)")
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "attack-speed.json"))
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--table", metavar="JSON", help="print (and rewrite) the table of an earlier run's JSON; measures nothing")
    return p.parse_args(argv)


def load_torchattacks_pgd():
    """torchattacks.PGD without running the package's __init__ (which imports scipy for TIFGSM)."""
    spec = importlib.util.find_spec("torchattacks")
    if spec is None:
        raise SystemExit("torchattacks is not installed: .venv/bin/pip install --no-deps torchattacks")
    if "torchattacks" not in sys.modules:
        pkg = types.ModuleType("torchattacks")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["torchattacks"] = pkg
    from torchattacks.attacks.pgd import PGD
    import torchattacks.attack  # noqa: F401  (its version is in the package metadata)
    return PGD


def make_side(name: str, model: nn.Module):
    """callable(x float [0, 1] batch, y, eps) → adversarial batch."""
    if name.startswith("probe"):
        precision = "bf16" if name == "probe-bf16" else "fp32"
        early = name != "probe-fp32-full"
        return lambda x, y, eps, seed: pgd(model, x, y, eps, steps=STEPS, step_size=STEP_SIZE, random_start=True,
                                           early_stop=early, precision=precision, batch_size=len(x), seed=seed)
    if name == "torchattacks":
        PGD = load_torchattacks_pgd()

        def run(x, y, eps, seed):
            torch.manual_seed(seed)
            return PGD(model, eps=eps, alpha=STEP_SIZE, steps=STEPS, random_start=True)(x, y)
        return run
    if name == "captum":
        from captum.robust import PGD as CaptumPGD
        attack = CaptumPGD(model, loss_func=nn.CrossEntropyLoss(reduction="none"), lower_bound=0.0, upper_bound=1.0)

        def run(x, y, eps, seed):
            torch.manual_seed(seed)
            return attack.perturb(x, radius=eps, step_size=STEP_SIZE, step_num=STEPS, target=y,
                                  random_start=True, norm="Linf").detach()
        return run
    raise ValueError(name)


def attack_all(fn, x, y, eps, batch_size, seed):
    out = []
    for s in range(0, len(x), batch_size):
        out.append(fn(x[s:s + batch_size], y[s:s + batch_size], eps, seed + s).detach().cpu())
    return torch.cat(out)


def versions() -> dict:
    from importlib.metadata import version
    out = {"torch": torch.__version__, "python": platform.python_version()}
    for pkg in ("torchattacks", "captum"):
        try:
            out[pkg] = version(pkg)
        except Exception:
            out[pkg] = None
    return out


GOAL_SIDES = ("probe-fp32", "probe-bf16")  # what `probe attack` runs; probe-fp32-full is a diagnostic


def summarize(runs: dict, names: list[str], eps_list, n_images: int, rounds: int) -> tuple[list[dict], dict]:
    """Per side and ε: median images/s, mean robust accuracy, and both against torchattacks'."""
    table = []
    ref = {e: statistics.median(r["images_per_s"] for r in runs[("torchattacks", e)])
           for e in eps_list if ("torchattacks", e) in runs}
    ref_acc = {e: statistics.mean(r["robust_accuracy"] for r in runs[("torchattacks", e)])
               for e in eps_list if ("torchattacks", e) in runs}
    for name in names:
        for eps in eps_list:
            rs = runs[(name, eps)]
            speed = statistics.median(r["images_per_s"] for r in rs)
            acc = statistics.mean(r["robust_accuracy"] for r in rs)  # each round: new random starts
            row = {"side": name, "eps": eps, "images_per_s": speed,
                   "images_per_s_min": min(r["images_per_s"] for r in rs),
                   "images_per_s_max": max(r["images_per_s"] for r in rs),
                   "robust_accuracy": acc, "robust_accuracy_all": [r["robust_accuracy"] for r in rs],
                   "x_torchattacks": speed / ref[eps] if eps in ref else None,
                   "accuracy_minus_torchattacks": acc - ref_acc[eps] if eps in ref_acc else None}
            if name in GOAL_SIDES and eps in ref:
                row["goal_met"] = bool(row["x_torchattacks"] >= 3.0 and row["accuracy_minus_torchattacks"] <= 0.005)
            table.append(row)
    # Both ε together: what a robustness curve at these points costs.
    totals = {}
    for name in names:
        seconds = [sum(runs[(name, e)][r]["seconds"] for e in eps_list) for r in range(rounds)]
        totals[name] = n_images * len(eps_list) / statistics.median(seconds)
    return table, totals


def print_table(table: list[dict], totals: dict, say=print) -> None:
    say("")
    say(f"{'side':<16} {'ε':>4}  {'img/s':>8}  {'× torchattacks':>14}  {'robust acc.':>11}  {'Δ vs ta':>8}  goal")
    for row in table:
        xt = f"{row['x_torchattacks']:.2f}×" if row["x_torchattacks"] is not None else "—"
        d = (f"{100 * row['accuracy_minus_torchattacks']:+.2f}" if row["accuracy_minus_torchattacks"] is not None else "—")
        goal = {True: "met", False: "not met"}.get(row.get("goal_met"), "")
        say(f"{row['side']:<16} {row['eps']:>4}  {row['images_per_s']:8.1f}  {xt:>14}  "
            f"{100 * row['robust_accuracy']:10.2f}%  {d:>8}  {goal}")
    say("")
    say("both ε together (images × ε per second): " + ", ".join(
        f"{n} {v:.1f}" + (f" ({v / totals['torchattacks']:.2f}×)" if "torchattacks" in totals else "")
        for n, v in totals.items()))


def retable(path: str) -> dict:
    """The table of an earlier run, computed again from its timings (nothing is measured)."""
    doc = json.loads(Path(path).read_text())
    runs = {(r["side"], r["eps"]): r["rounds"] for r in doc["runs"]}
    names = list(dict.fromkeys(r["side"] for r in doc["runs"]))
    doc["table"], doc["both_eps_images_per_s"] = summarize(runs, names, doc["attack"]["eps"], doc["images"], doc["rounds"])
    print_table(doc["table"], doc["both_eps_images_per_s"])
    return doc


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.table:
        doc = retable(args.table)
        Path(args.table).write_text(json.dumps(doc, indent=1))
        return doc
    if args.threads:
        torch.set_num_threads(args.threads)
    say = (lambda *a, **k: None) if args.quiet else (lambda *a, **k: print(*a, **k, flush=True))
    say(flags_line())
    model, folder = load_model_folder(args.model, "cpu")
    data = folder.load_split("test", args.data_dir)
    index = subset(len(data), args.images)
    x = data.images[index].float() / 255  # (N, 1, 28, 28) [0, 1]
    y = data.labels[index]
    clean = float((class_probabilities(model, x).argmax(1) == y).float().mean())
    sides = {name: make_side(name, model) for name in args.sides}
    load_before = os.getloadavg()
    say(f"{folder.name}: {len(x)} MNIST test images (clean accuracy {100 * clean:.2f}%), PGD L∞ "
        f"{STEPS} steps of {STEP_SIZE}, random start, batch {args.batch_size}, ε {', '.join(map(str, args.eps))}; "
        f"{torch.get_num_threads()} torch thread(s), load average {load_before[0]:.1f}")
    for name, fn in sides.items():  # warm-up: kernels and caches, never timed
        fn(x[:16], y[:16], args.eps[0], 0)
    runs = {(s, e): [] for s in sides for e in args.eps}
    names = list(sides)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            for eps in args.eps:
                started = time.perf_counter()
                adv = attack_all(sides[name], x, y, eps, args.batch_size, seed=1000 * r)
                seconds = time.perf_counter() - started
                linf = float((adv - x).abs().max())
                acc = float((class_probabilities(model, adv).argmax(1) == y).float().mean())
                runs[(name, eps)].append({"seconds": seconds, "images_per_s": len(x) / seconds,
                                          "robust_accuracy": acc, "max_linf": linf})
                say(f"  round {r + 1}/{args.rounds} {name:<16} ε {eps:<4} {len(x) / seconds:8.1f} img/s  "
                    f"robust accuracy {100 * acc:6.2f}%  max |δ| {linf:.4f}")
    load_after = os.getloadavg()

    table, totals = summarize(runs, names, args.eps, len(x), args.rounds)
    print_table(table, totals, say)
    say(f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    doc = {
        "benchmark": "attack_speed", "model": folder.name, "weights_sha256": folder.weights_sha256(),
        "images": len(x), "subset_seed": 0, "indices": index.tolist(), "clean_accuracy": clean,
        "attack": {"norm": "linf", "eps": args.eps, "steps": STEPS, "step_size": STEP_SIZE, "random_start": True},
        "batch_size": args.batch_size, "rounds": args.rounds, "threads": torch.get_num_threads(),
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": machine() | {"processor": platform.processor() or platform.machine(),
                                "python": platform.python_version()},
        "versions": versions(), "table": table, "both_eps_images_per_s": totals,
        "runs": [{"side": s, "eps": e, "rounds": v} for (s, e), v in runs.items()],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
        say(f"→ {args.json}")
    return doc


if __name__ == "__main__":
    main()
