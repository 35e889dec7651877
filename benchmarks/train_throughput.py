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

Beside img/s, the run prints what bounds them: the CPU's SIMD flags (/proc/cpuinfo), the fp32
GEMM peak (a 2048² matmul, timed before and after the rounds), each side's GFLOP/s (training
FLOPs per image = 3 × 2 × the forward multiply-accumulates of the convs and the linear layer,
counted by hooks on the model) and its share of that peak, img per CPU second (this process
and its DataLoader workers: with --threads 1, per core, and far less affected than wall time
by other processes on the cores), and the peak RSS. --convs-only adds a side that runs only
the convolutions of probe's network, forward and backward: the ceiling of any step.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import reference_resnet as ref  # noqa: E402
from conv_ceiling import ConvWork  # noqa: E402
from results_file import CPU_FLAGS, cpu_flags  # noqa: E402

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
    p.add_argument("--convs-only", action="store_true",
                   help="also time the convolutions of probe's network alone (channels_last, "
                   "forward + backward): the ceiling of any training step of this network")
    p.add_argument("--gemm-size", type=int, default=2048,
                   help="side of the fp32 matmul timed for the GEMM peak (default 2048)")
    p.add_argument("--json", type=Path, default=None, help="write every timing to this file")
    p.add_argument("--quiet", action="store_true", help="print only the summary")
    args = p.parse_args(argv)
    if args.repeats < 1 or args.steps < 1 or args.batch_size < 1 or args.workers < 0 \
            or args.gemm_size < 1:
        p.error("--repeats, --steps, --batch-size and --gemm-size must be positive, --workers not "
                "negative")
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
        self.model = self.trainer.model
        self.epoch = 0

    def run(self) -> int:
        record = self.trainer._train_epoch(self.epoch)
        self.epoch += 1
        return self.trainer.steps_per_epoch * self.trainer.cfg.batch_size if record else 0


class ConvsOnlySide:
    """The ceiling: only the convolutions of probe's network (conv_ceiling.ConvWork: each fed a
    random input of its shape, channels_last), forward and backward (input and weight gradients;
    the stem's input needs none, as in training), --steps times. No BatchNorm, ReLU, addition,
    loss, optimizer or data: what a step would cost if everything but the convs were free. In
    bf16 (inputs and weights), the ceiling of a bf16 step."""

    def __init__(self, model: torch.nn.Module, input_shape, batch_size: int, steps: int, precision: str = "fp32"):
        self.name = "convs only (CL)" if precision == "fp32" else f"convs only {precision} (CL)"
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.convs = ConvWork(model, input_shape, batch_size, weight_grads=True, first_input_grad=False, dtype=dtype)
        self.flops_per_image = 3 * 2 * sum(forward_macs(conv, tuple(shape)) for conv, shape in self.convs.convs)
        self.steps, self.batch_size = steps, batch_size

    def run(self) -> int:
        for _ in range(self.steps):
            self.convs.run()
        return self.steps * self.batch_size


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


def gemm_peak(n: int = 2048, repeats: int = 7) -> dict:
    """fp32 matmul GFLOP/s of an n×n by n×n product (2n³ FLOPs), with the benchmark's threads:
    the practical ceiling of the convolutions, which oneDNN runs as GEMM-like kernels. Per wall
    second, and per CPU second of this process (which other processes on the cores affect less)."""
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    rates, cpu_rates = [], []
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        torch.mm(a, b, out=out)
        rates.append(2 * n ** 3 / (time.perf_counter() - t0) / 1e9)
        cpu_rates.append(2 * n ** 3 / max(time.process_time() - c0, 1e-9) / 1e9)
    return {"n": n, "gflops": rates, "median_gflops": statistics.median(rates),
            "gflops_per_cpu_second": cpu_rates,
            "median_gflops_per_cpu_second": statistics.median(cpu_rates)}


def forward_macs(model: torch.nn.Module, input_shape) -> int:
    """Multiply-accumulates of one image's forward pass through the model's convs and linear
    layers, counted by forward hooks on a batch of one (BatchNorm, ReLU, additions aside)."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, torch.nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output[0].numel() * k
        else:
            total += output[0].numel() * module.in_features
    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def train_flops_per_image(model: torch.nn.Module, input_shape) -> int:
    """Training FLOPs of one image: forward, and a backward of twice its work (the gradients
    of the inputs and of the weights); 2 FLOPs per multiply-accumulate."""
    return 3 * 2 * forward_macs(model, input_shape)


def _child_pids() -> list[str]:
    """Living child processes (the reference's persistent DataLoader workers), from /proc."""
    try:
        return [pid for f in Path("/proc/self/task").glob("*/children") for pid in f.read_text().split()]
    except OSError:
        return []


def _children_peak_rss_kib() -> list[int]:
    """VmHWM (peak RSS, KiB) of each living child process, from /proc."""
    peaks = []
    for pid in _child_pids():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:  # exited meanwhile
            continue
        peaks += [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    return peaks


def cpu_seconds() -> float:
    """CPU time used so far by this process (all its threads) and its living children (the
    DataLoader workers: their per-image NumPy work is part of the reference's cost)."""
    total = time.process_time()
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in _child_pids():
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def peak_rss_mib() -> dict:
    """Peak resident memory: this process (both models, the data, probe's and the reference's
    training) and, separately, the largest of its children (the reference's persistent
    DataLoader workers, alive at this point). Linux; elsewhere what getrusage says."""
    if sys.platform == "darwin":  # ru_maxrss in bytes
        return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20, 1),
                "largest_child": None}
    children = _children_peak_rss_kib()
    return {"self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_child": round(max(children) / 1024, 1) if children else None}


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
            "platform": platform.platform(), "cpu_flags": cpu_flags()}


def run_rounds(sides, repeats: int, n_images: int, say) -> tuple[dict, dict]:
    """Wall and CPU seconds of each side's epochs: 1 warm-up + repeats rounds, the order rotated
    each round."""
    seconds = {s.name: [] for s in sides}
    cpu = {s.name: [] for s in sides}
    for r in range(repeats + 1):
        shift = r % len(sides)  # rotate the order so no side always runs first
        for side in sides[shift:] + sides[:shift]:
            c0, t0 = cpu_seconds(), time.perf_counter()
            seen = side.run()
            dt, dc = time.perf_counter() - t0, cpu_seconds() - c0
            assert seen == n_images, (side.name, seen, n_images)
            seconds[side.name].append(dt)
            cpu[side.name].append(dc)
            say(f"  repeat {r}{' (warm-up)' if r == 0 else ''}: {side.name:<15} "
                f"{dt:7.2f} s  {n_images / dt:8.1f} img/s  ({dc:.2f} CPU s)")
    return seconds, cpu


def summarize(seconds: dict[str, list[float]], cpu: dict[str, list[float]], n_images: int,
              flops: dict[str, int], gemm: dict) -> dict:
    """Medians of the timed rounds, ratios to the reference, GFLOP/s and their share of the
    GEMM peak: per wall second, and per CPU second."""
    ref_name = ReferenceSide.name
    results = {}
    for name, secs in seconds.items():
        timed = secs[1:]
        ips = [n_images / s for s in timed]
        med = statistics.median(ips)
        gflops = med * flops[name] / 1e9
        per_cpu = statistics.median(n_images / c for c in cpu[name][1:])
        results[name] = {
            "seconds": secs, "images_per_second": ips,
            "median_images_per_second": med,
            "with_warmup_images_per_second": n_images * len(secs) / sum(secs),
            "cpu_seconds": cpu[name],
            "median_images_per_cpu_second": per_cpu,
            "train_flops_per_image": flops[name], "median_gflops": gflops,
            "fraction_of_gemm_peak": gflops / gemm["median_gflops"],
            "fraction_of_gemm_peak_per_cpu_second":
                per_cpu * flops[name] / 1e9 / gemm["median_gflops_per_cpu_second"],
        }
    ref_res = results[ref_name]
    for name, res in results.items():
        if name == ref_name:
            continue
        # Paired: each probe repeat against the reference repeat of the same round.
        paired = [p / q for p, q in zip(res["images_per_second"], ref_res["images_per_second"])]
        res["ratio_of_medians"] = res["median_images_per_second"] / ref_res["median_images_per_second"]
        res["median_paired_ratio"] = statistics.median(paired)
        res["ratio_per_cpu_second"] = res["median_images_per_cpu_second"] / \
            ref_res["median_images_per_cpu_second"]
        res["ratio_with_warmup"] = res["with_warmup_images_per_second"] / \
            ref_res["with_warmup_images_per_second"]
    return results


def print_summary(args, results: dict, gemm: dict, loads, rss: dict) -> None:
    ref_name = ReferenceSide.name
    print(f"\n{ARCH} {args.shape} batch {args.batch_size}: median of {args.repeats} repeats "
          f"× {args.steps} steps (warm-up excluded)")
    width = max(15, *map(len, results))
    print(f"  {'side':<{width}} {'img/s':>9} {'min':>8} {'max':>8} {'× ref':>7} {'paired':>7} "
          f"{'w/ warm-up':>11} {'GFLOP/s':>8} {'of peak':>8} │ {'img/CPU-s':>9} {'× ref':>6} "
          f"{'of peak':>8}")
    for name, res in results.items():
        ips = res["images_per_second"]
        ratio = f"{res['ratio_of_medians']:7.2f} {res['median_paired_ratio']:7.2f}" \
            if name != ref_name else f"{'1.00':>7} {'':>7}"
        print(f"  {name:<{width}} {res['median_images_per_second']:9.1f} {min(ips):8.1f} "
              f"{max(ips):8.1f} {ratio} {res['with_warmup_images_per_second']:11.1f} "
              f"{res['median_gflops']:8.1f} {res['fraction_of_gemm_peak']:8.0%} "
              f"│ {res['median_images_per_cpu_second']:9.1f} {res.get('ratio_per_cpu_second', 1):6.2f} "
              f"{res['fraction_of_gemm_peak_per_cpu_second']:8.0%}")
    flops = results[ref_name]["train_flops_per_image"]
    print(f"  training FLOPs per image: {flops / 1e6:.1f} M (3 × 2 × forward MACs of the convs "
          f"and the linear layer, counted by hooks)")
    print(f"  fp32 GEMM peak ({gemm['n']}² matmul, median of the runs before and after the "
          f"rounds): {gemm['median_gflops']:.1f} GFLOP/s ({gemm['before']['median_gflops']:.1f} / "
          f"{gemm['after']['median_gflops']:.1f}); per CPU second "
          f"{gemm['median_gflops_per_cpu_second']:.1f}")
    print("  right of │: per CPU second of this process and its DataLoader workers (less affected "
          "by other processes; with 1 thread, per core)")
    print("  of peak: of the fp32 GEMM's; bf16 sides can pass 100% where bf16 is native (AMX, avx512_bf16)")
    flags = cpu_flags()
    print("  CPU: " + ", ".join(f"{f} {'yes' if flags[f] else 'no'}" for f in CPU_FLAGS)
          + f"; torch kernels: {flags['torch_cpu_capability']}")
    child = "none alive" if rss["largest_child"] is None else f"{rss['largest_child']:.0f} MiB"
    print(f"  peak RSS: {rss['self']:.0f} MiB (this process); largest DataLoader worker: {child}")
    print(f"  load average before/after: {loads[0][0]:.2f} / {loads[1][0]:.2f} "
          f"(other processes share the {os.cpu_count()} cores)")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    spec, width = SHAPES[args.shape]
    n_images = args.steps * args.batch_size
    data = synthetic_images(spec, n_images)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, flush=True))

    sides = [ProbeSide(data, width, p, args.batch_size, args.repeats + 1) for p in args.precision]
    shape = (spec.channels, spec.height, spec.width)
    if args.convs_only:
        torch.manual_seed(0)
        arch = get_config(ARCH, num_classes=spec.num_classes, in_channels=spec.channels, width=width)
        sides += [ConvsOnlySide(ResNet(arch), shape, args.batch_size, args.steps, p)
                  for p in sorted(set(args.precision), key=["fp32", "bf16"].index)]
    sides.append(ReferenceSide(data, width, args.batch_size, args.workers))
    flops = {s.name: getattr(s, "flops_per_image", None) or train_flops_per_image(s.model, shape)
             for s in sides}
    say(f"{ARCH} ({'x'.join(map(str, shape))}, width {width}), "
        f"batch {args.batch_size}, {args.steps} steps = {n_images:,} images per repeat, "
        f"1 warm-up + {args.repeats} repeats, {torch.get_num_threads()} torch threads, "
        f"reference with {args.workers} persistent DataLoader workers")

    gemm_n = args.gemm_size
    gemm = {"n": gemm_n, "before": gemm_peak(gemm_n)}
    load_before = os.getloadavg()
    seconds, cpu = run_rounds(sides, args.repeats, n_images, say)
    load_after = os.getloadavg()
    gemm["after"] = gemm_peak(gemm_n)
    for key in ("gflops", "gflops_per_cpu_second"):
        gemm[f"median_{key}"] = statistics.median(gemm["before"][key] + gemm["after"][key])
    results = summarize(seconds, cpu, n_images, flops, gemm)
    rss = peak_rss_mib()
    print_summary(args, results, gemm, (load_before, load_after), rss)

    out = {
        "benchmark": "train_throughput", "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(), "arch": ARCH, "shape": args.shape,
        "input": list(shape), "width": width,
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "workers": args.workers, "persistent_workers": True,
        "augment": vars(default_augment(spec)),
        "load_average_before_after": [load_before, load_after], "gemm_peak": gemm,
        "peak_rss_mib": rss, "results": results,
    }
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
