"""Training throughput: probe's Trainer against the reference loop, in one run.

    .venv/bin/python benchmarks/train_throughput.py                      # resnet20, CIFAR shape
    .venv/bin/python benchmarks/train_throughput.py --shape mnist        # 1×28×28, width 0.5
    .venv/bin/python benchmarks/train_throughput.py --precision fp32 --repeats 9 --json out.json

Both sides train the same depth on the same synthetic uint8 images (random pixels, random
labels) with the same batch size and the same augmentation (pad + random crop, and a flip for
CIFAR). A repeat is one epoch of --steps steps on each side: probe's `Trainer._train_epoch`
(batch cut from the in-memory split, batched augmentation, channels_last, autocast for bf16),
and the reference's `for x, y in loader:` loop (DataLoader iteration included). Repeats are
interleaved (probe bf16, probe fp32, reference, then the next repeat in rotated order) so that
load from other processes hits every side alike. The first repeat is a warm-up and is left out
of the medians; it holds the reference's DataLoader worker start-up (workers are persistent,
so they start once), which the "with warm-up" figures include.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_resnet as ref  # noqa: E402

from probe.data.augment import default_augment  # noqa: E402
from probe.data.imageset import ImageSet  # noqa: E402
from probe.data.spec import CIFAR10, MNIST  # noqa: E402
from probe.models.classifier import Classifier  # noqa: E402
from probe.models.resnet import ResNet, get_config  # noqa: E402
from probe.train.config import TrainConfig  # noqa: E402
from probe.train.trainer import Trainer  # noqa: E402

SHAPES = {
    # shape: (spec, width); probe's default augmentation of the dataset on both sides.
    "cifar": (CIFAR10, 1.0),
    "mnist": (MNIST, 0.5),
}
ARCH = "resnet20"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="cifar",
                   help="cifar: 3×32×32, width 1; mnist: 1×28×28, width 0.5 (default cifar)")
    p.add_argument("--precision", nargs="+", choices=("bf16", "fp32"), default=["bf16", "fp32"],
                   help="probe precisions to time (default: bf16 fp32); the reference is fp32")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per side, after one "
                   "warm-up repeat (default 5)")
    p.add_argument("--steps", type=int, default=20, help="optimizer steps per repeat (default 20)")
    p.add_argument("--batch-size", type=int, default=128, help="default 128; small for tests")
    p.add_argument("--workers", type=int, default=2, help="reference DataLoader workers (default 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both sides (default: torch's own, %d here)"
                   % torch.get_num_threads())
    p.add_argument("--json", type=Path, default=None, help="write every timing to this file")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1 or args.batch_size < 1 or args.workers < 0:
        p.error("--repeats, --steps and --batch-size must be positive, --workers not negative")
    return args


def synthetic_images(spec, n: int, seed: int = 0) -> ImageSet:
    gen = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, spec.channels, spec.height, spec.width), generator=gen,
                           dtype=torch.uint8)
    labels = torch.randint(0, spec.num_classes, (n,), generator=gen, dtype=torch.int64)
    return ImageSet(images, labels, spec)


class ProbeSide:
    def __init__(self, data: ImageSet, width: float, precision: str, batch_size: int, epochs: int):
        spec = data.spec
        self.name = f"probe {precision}"
        config = TrainConfig(dataset=spec.name, arch=ARCH, width=width, batch_size=batch_size,
                             precision=precision, channels_last=True, epochs=epochs,
                             schedule="constant", lr=0.1, momentum=0.9, weight_decay=1e-4)
        torch.manual_seed(0)
        arch = get_config(ARCH, num_classes=spec.num_classes, in_channels=spec.channels, width=width)
        model = Classifier.from_spec(ResNet(arch), spec)
        # epochs = warm-up + repeats, so every repeat is a whole epoch of the Trainer.
        self.trainer = Trainer(model, data, None, config, default_augment(spec),
                               device=torch.device("cpu"))
        self.epoch = 0

    def run(self) -> int:
        record = self.trainer._train_epoch(self.epoch)
        self.epoch += 1
        return self.trainer.steps_per_epoch * self.trainer.cfg.batch_size if record else 0


class ReferenceSide:
    name = "reference fp32"

    def __init__(self, data: ImageSet, width: float, batch_size: int, workers: int):
        spec = data.spec
        aug = default_augment(spec)
        torch.manual_seed(0)
        self.model = ref.resnet20(num_classes=spec.num_classes, in_channels=spec.channels,
                                  width=width)
        self.optimizer = ref.make_optimizer(self.model)
        hwc = data.images.permute(0, 2, 3, 1).contiguous().numpy()  # the blog posts' (N, H, W, C)
        dataset = ref.AugmentedImages(hwc, data.labels.numpy(), spec.mean, spec.std,
                                      pad=aug.pad, flip=aug.flip)
        self.loader = ref.make_loader(dataset, batch_size=batch_size, num_workers=workers,
                                      persistent_workers=True)

    def run(self) -> int:
        return ref.train_epoch(self.model, self.loader, self.optimizer)


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "platform": platform.platform()}


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec, width = SHAPES[args.shape]
    n_images = args.steps * args.batch_size
    data = synthetic_images(spec, n_images)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    sides = [ProbeSide(data, width, p, args.batch_size, args.repeats + 1) for p in args.precision]
    sides.append(ReferenceSide(data, width, args.batch_size, args.workers))
    say(f"{ARCH} ({'x'.join(map(str, (spec.channels, spec.height, spec.width)))}, width {width}), "
        f"batch {args.batch_size}, {args.steps} steps = {n_images:,} images per repeat, "
        f"1 warm-up + {args.repeats} repeats, {torch.get_num_threads()} torch threads, "
        f"reference with {args.workers} persistent DataLoader workers")

    seconds = {s.name: [] for s in sides}
    load_before = os.getloadavg()
    for r in range(args.repeats + 1):
        shift = r % len(sides)  # rotate the order so no side always runs first
        for side in sides[shift:] + sides[:shift]:
            t0 = time.perf_counter()
            seen = side.run()
            dt = time.perf_counter() - t0
            assert seen == n_images, (side.name, seen, n_images)
            seconds[side.name].append(dt)
            say(f"  repeat {r}{' (warm-up)' if r == 0 else ''}: {side.name:<15} "
                f"{dt:7.2f} s  {n_images / dt:8.1f} img/s")
    load_after = os.getloadavg()

    ref_name = ReferenceSide.name
    results = {}
    for name, secs in seconds.items():
        timed = secs[1:]
        ips = [n_images / s for s in timed]
        results[name] = {
            "seconds": secs, "images_per_second": ips,
            "median_images_per_second": statistics.median(ips),
            "with_warmup_images_per_second": n_images * len(secs) / sum(secs),
        }
    for name, res in results.items():
        if name == ref_name:
            continue
        # Paired: each probe repeat against the reference repeat of the same round.
        paired = [p / q for p, q in zip(res["images_per_second"],
                                        results[ref_name]["images_per_second"])]
        res["ratio_of_medians"] = res["median_images_per_second"] / \
            results[ref_name]["median_images_per_second"]
        res["median_paired_ratio"] = statistics.median(paired)
        res["ratio_with_warmup"] = res["with_warmup_images_per_second"] / \
            results[ref_name]["with_warmup_images_per_second"]

    print(f"\n{ARCH} {args.shape} batch {args.batch_size}: median of {args.repeats} repeats "
          f"× {args.steps} steps (warm-up excluded)")
    print(f"  {'side':<15} {'img/s':>9} {'min':>8} {'max':>8} {'× ref':>7} {'paired':>7} "
          f"{'w/ warm-up':>11}")
    for name, res in results.items():
        ips = res["images_per_second"]
        ratio = f"{res['ratio_of_medians']:7.2f} {res['median_paired_ratio']:7.2f}" \
            if name != ref_name else f"{'1.00':>7} {'':>7}"
        print(f"  {name:<15} {res['median_images_per_second']:9.1f} {min(ips):8.1f} "
              f"{max(ips):8.1f} {ratio} {res['with_warmup_images_per_second']:11.1f}")
    print(f"  load average before/after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"(other processes share the {os.cpu_count()} cores)")

    out = {
        "benchmark": "train_throughput", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "arch": ARCH, "shape": args.shape,
        "input": [spec.channels, spec.height, spec.width], "width": width,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "workers": args.workers, "persistent_workers": True,
        "augment": vars(default_augment(spec)),
        "load_average_before_after": [load_before, load_after], "results": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
