"""The robustness curve's searches side by side: sweep (the default), bisect and nested, on the
same images of a committed model, in one run, alternating the order each round.

    .venv/bin/python benchmarks/robustness_search.py                      # mnist-resnet20, 1,000 images
    .venv/bin/python benchmarks/robustness_search.py --model trained_models/mnist-resnet20-robust
    .venv/bin/python benchmarks/robustness_search.py --rounds 3 --json benchmarks/results/robustness-search.json

Each search attacks the report's images (the seeded subset of --limit test images) with the
report's attack (PGD L∞, 20 steps, MNIST's 13 ε) through the BatchNorm-folded copy the report
uses. Printed per search: the median seconds, the attacks per image, the accuracy at every ε;
then each search's time as a ratio to bisection's, and the largest difference in accuracy from
the nested curve (PGD is a random search: two nested runs with other seeds differ by ~2.5 points
where the curve falls steeply). The machine's CPU flags go with the figures.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch  # noqa: E402

from results_file import flags_line, machine, write_json  # noqa: E402


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "trained_models" / "mnist-resnet20"))
    p.add_argument("--data-dir", default=None, help="the MNIST folder (default $PROBE_DATA_DIR/mnist)")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--searches", default="sweep,bisect,nested")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    import probe
    from probe.analysis.robustness import MNIST_LINF
    from probe.data.mnist import load_mnist
    from probe.methods.robustness import attack_curve, subset
    from probe.models.inference import inference_copy

    if args.threads:
        torch.set_num_threads(args.threads)
    data_dir = args.data_dir or os.path.join(os.environ.get("PROBE_DATA_DIR", str(ROOT / "data")), "mnist")
    test = load_mnist(data_dir)["test"]
    index = subset(len(test.labels), args.limit)
    images, labels = test.images[index], test.labels[index]
    model, _ = probe.load_model(args.model)
    fast = inference_copy(model)
    searches = args.searches.split(",")
    print(flags_line(), f"| {torch.get_num_threads()} thread(s) | {Path(args.model).name}, {len(labels):,} images, "
          f"PGD-{args.steps}, {len(MNIST_LINF)} ε", flush=True)
    seconds = {s: [] for s in searches}
    curves = {}
    for r in range(args.rounds):
        for s in (searches if r % 2 == 0 else list(reversed(searches))):
            started = time.perf_counter()
            curves[s] = attack_curve(fast, images, labels, MNIST_LINF, steps=args.steps, examples=0, search=s)
            seconds[s].append(time.perf_counter() - started)
            print(f"round {r + 1} {s}: {seconds[s][-1]:.1f} s, {curves[s].attacks / len(labels):.2f} attacks per image",
                  flush=True)
    median = {s: statistics.median(v) for s, v in seconds.items()}
    rows = {}
    for s in searches:
        acc = [round(100 * a, 1) for a in curves[s].accuracy]
        row = {"median_seconds": round(median[s], 2), "seconds": [round(v, 2) for v in seconds[s]],
               "attacks_per_image": round(curves[s].attacks / len(labels), 3), "accuracy_percent": acc}
        if "bisect" in median:
            row["speedup_over_bisect"] = round(median["bisect"] / median[s], 2)
        if "nested" in curves:
            row["max_abs_diff_from_nested_points"] = round(max(
                abs(a - b) for a, b in zip(acc, (100 * v for v in curves["nested"].accuracy))), 1)
        rows[s] = row
        print(f"{s:>7}: {median[s]:6.1f} s" + (f" = {row['speedup_over_bisect']:.2f}× bisection's speed"
                                                  if "speedup_over_bisect" in row else "")
              + (f"; at most {row['max_abs_diff_from_nested_points']} points from nested" if "nested" in curves else "")
              + f"; accuracy % at ε {MNIST_LINF}: {acc}")
    doc = {"benchmark": "robustness_search", "model": Path(args.model).name, "images": len(labels),
           "steps": args.steps, "eps": MNIST_LINF, "threads": torch.get_num_threads(), "searches": rows,
           "machine": machine()}
    write_json(args.json, doc)
    return doc


if __name__ == "__main__":
    main()
