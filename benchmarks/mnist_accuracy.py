"""MNIST test error of the `mnist-fast` preset over seeds, and bf16 against fp32.

    PROBE_DATA_DIR=../shared/datasets python benchmarks/mnist_accuracy.py --seeds 0 1 2 \
        --precision bf16 fp32 --json benchmarks/results/mnist-accuracy.json

Each (precision, seed) trains the preset from scratch into --work (skipping runs already done
there), then prints per-run figures and, per precision, the mean ± std of the test error.
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from probe.data.splits import load_splits
from probe.train.config import preset_config
from probe.train.run import train


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="mnist-fast")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--precision", nargs="+", default=["bf16"])
    ap.add_argument("--epochs", type=int, default=None, help="override the preset's length")
    ap.add_argument("--work", type=Path, default=Path("/tmp/probe-mnist-accuracy"))
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)

    runs = []
    for precision in args.precision:
        for seed in args.seeds:
            cfg = preset_config(args.preset, seed=seed, precision=precision, epochs=args.epochs)
            out = args.work / f"{precision}-seed{seed}"
            meta_path = out / "meta.json"
            meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
            if "test" not in meta.get("metrics", {}):
                splits = load_splits(cfg.dataset, seed=cfg.split_seed)  # as train() would
                meta = train(cfg, out, splits=splits, force=True)
            run = {"precision": precision, "seed": seed, "epochs": meta["epochs_done"],
                   "test_error": meta["metrics"]["test"]["error"], "val_error": meta["metrics"]["val"]["error"],
                   "wall_seconds": meta["wall_seconds"], "images_per_second": meta["images_per_second"]}
            runs.append(run)
            print(f"{precision} seed {seed}: test error {100 * run['test_error']:.2f}%  val error "
                  f"{100 * run['val_error']:.2f}%  {run['wall_seconds']:.0f}s  {run['images_per_second']:.0f} img/s",
                  flush=True)
    summary = {}
    for precision in args.precision:
        errs = [r["test_error"] for r in runs if r["precision"] == precision]
        mean, std = statistics.mean(errs), statistics.stdev(errs) if len(errs) > 1 else 0.0
        summary[precision] = {"mean_test_error": mean, "std_test_error": std, "n": len(errs)}
        print(f"{precision}: test error {100 * mean:.3f}% ± {100 * std:.3f}% over {len(errs)} seeds")
    result = {"preset": args.preset, "runs": runs, "summary": summary}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
