"""Inference passes: the fused kernels of a folded ResNet against the same copy unfused, and against the model as trained.

    .venv/bin/python benchmarks/inference_speed.py                   # ~1 min; both thread counts
    .venv/bin/python benchmarks/inference_speed.py --threads 1 --rounds 15 --json out.json

Sides, each a forward pass in inference mode over one batch of channels_last images:
  fused     probe.models.inference.inference_copy: BatchNorm folded, conv→ReLU and
            conv + shortcut → ReLU as single oneDNN kernels (probe.models.fused)
  unfused   the same copy with the fused kernels off (what every inference pass ran before)
  model     the model as trained, in eval mode: conv, BatchNorm, ReLU, addition, each an op

Models: the committed mnist-resnet20 (1×28×28, batch 500: the report's misclassified and
robustness passes) and resnet20 at CIFAR's shape (3×32×32, batch 256, random weights and
statistics). A round runs every side once, the order rotating; medians over the rounds after
one warm-up. The fused logits must equal the unfused ones bit for bit: the script says if not.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from results_file import flags_line, machine, write_json  # noqa: E402
from probe.models import Classifier, ResNet, fused, get_config  # noqa: E402
from probe.models.folder import load_model_folder  # noqa: E402
from probe.models.inference import inference_copy  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args(argv)


def models() -> list[tuple[str, torch.nn.Module, tuple, int]]:
    mnist, _ = load_model_folder(ROOT / "trained_models" / "mnist-resnet20")
    torch.manual_seed(0)
    cifar = Classifier(ResNet(get_config("resnet20", num_classes=10, in_channels=3)), [0.5] * 3, [0.25] * 3)
    for m in cifar.modules():  # statistics as after training, so that the fold has work to do
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return [("mnist-resnet20", mnist.eval(), (1, 28, 28), 500), ("resnet20 cifar", cifar.eval(), (3, 32, 32), 256)]


def sides(model: torch.nn.Module) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    folded = inference_copy(model)

    def unfused(x):  # the same copy, its passes with the separate ops
        with fused.disabled():
            return folded(x)
    return {"fused": folded, "unfused": unfused, "model": model}


def time_sides(named: dict, x: torch.Tensor, rounds: int) -> dict[str, list[float]]:
    times = {name: [] for name in named}
    order = list(named)
    with torch.inference_mode():
        for r in range(rounds + 1):
            for name in order[r % len(order):] + order[:r % len(order)]:
                start = time.perf_counter()
                named[name](x)
                if r:
                    times[name].append(time.perf_counter() - start)
    return times


def main(argv=None) -> dict:
    args = parse_args(argv)
    print(flags_line(), flush=True)
    rows = []
    for label, model, shape, batch in models():
        named = sides(model)
        x = torch.rand(batch, *shape, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            same = torch.equal(named["fused"](x), named["unfused"](x))
        for threads in args.threads:
            torch.set_num_threads(threads)
            times = time_sides(named, x, args.rounds)
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"model": label, "shape": list(shape), "batch": batch, "threads": threads,
                         "bitwise_equal": same, "seconds": times,
                         "images_per_s": {k: batch / v for k, v in med.items()},
                         "fused_vs_unfused": med["unfused"] / med["fused"], "fused_vs_model": med["model"] / med["fused"]})
            r = rows[-1]
            print(f"{label:15s} batch {batch} {threads} thread(s): fused {r['images_per_s']['fused']:7.0f} img/s, "
                  f"unfused {r['images_per_s']['unfused']:7.0f}, model {r['images_per_s']['model']:7.0f}; "
                  f"fused × unfused {r['fused_vs_unfused']:.2f}, × model {r['fused_vs_model']:.2f}"
                  f"{'' if same else '  (LOGITS DIFFER)'}", flush=True)
    doc = {"benchmark": "inference_speed", "rounds": args.rounds, "machine": machine(), "rows": rows}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
