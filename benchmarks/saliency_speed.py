"""Saliency speed: probe's library call against captum called with its documented defaults, in
one run, on the same model and the same images; and the largest difference between their maps.

    .venv/bin/python benchmarks/saliency_speed.py --data-dir ../shared/datasets/mnist
    .venv/bin/python benchmarks/saliency_speed.py --repeats 9 --threads 2 --json out.json

Model: the committed trained_models/mnist-resnet20 (resnet20 ×0.5). Images: the first --n (6)
validation images of class 3 (random images when the data is not there; said in the output).

Both sides compute the same maps: the same algorithm parameters (SmoothGrad 25 samples σ 0.15,
IG 32 Gauss-Legendre steps from black, Occlusion a 4×4 black window at stride 2, Grad-CAM on
model.cam_layer with ReLU and bilinear upsampling), the same reduction of channels, the same
seed for SmoothGrad's noise. Everything about *how* they run is left at captum's defaults on the
captum side: no batch sizes passed (NoiseTunnel then runs all samples in one batch, IG all steps
in one batch, Occlusion one perturbation per forward pass), the model as it is (NCHW, its
parameters requiring gradients). The probe side is `probe.methods.saliency.attribute(model,
images, 3, methods=[m])`, the call `probe saliency` makes: a channels-last working copy of the
model without parameter gradients, captum's batch sizes chosen for batch_size=256 inputs per
forward pass, the class probabilities, and for IG captum's convergence delta (two more forward
passes), all inside the timing.

A round first times every method together (probe: one `saliency` call with all of them, sharing
one working copy, as `probe saliency` does; captum: one call per method), then each method on
its own on both sides, alternating which side goes first; round 0 is a
warm-up left out of the medians. Reported per method: median images/s of each side, the ratio
of medians ("× captum") and the median of the per-round ratios ("paired"), and the largest
|difference| between the two sides' maps, absolute and relative to the largest |value|.

For the many-pass methods (SmoothGrad, IG) each round also times the ceiling: the network's
convolutions alone (benchmarks/conv_ceiling.py) on as many inputs as the method's passes,
forward and back to the inputs' gradients. "ceiling × captum" is captum's median over that
median: what an implementation running the same passes would gain if everything but the
convolutions were free.
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

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from conv_ceiling import ConvWork  # noqa: E402
from results_file import flags_line, machine  # noqa: E402
from probe.methods.saliency import METHODS, SaliencyConfig, attribute, seeded  # noqa: E402
from probe.models.folder import load_model_folder  # noqa: E402
from probe.provenance import versions  # noqa: E402

MODEL = ROOT / "trained_models" / "mnist-resnet20"
CONFIG = SaliencyConfig()  # probe's defaults: the same algorithm parameters on both sides


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=MODEL, help="model folder (default the committed MNIST model)")
    p.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default $PROBE_DATA_DIR/mnist)")
    p.add_argument("--n", type=int, default=6, help="images (default 6, as `probe saliency`)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list (default all six)")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds after one warm-up (default 5)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads for both sides (default torch's own, %d here)" % torch.get_num_threads())
    p.add_argument("--json", type=Path, default=None,
                   help="where to write every timing (default benchmarks/results/saliency-speed-<ISA>.json, "
                        "the instruction set torch's kernels use here: avx2, avx512, ...)")
    args = p.parse_args(argv)
    if args.n < 1 or args.repeats < 1:
        p.error("--n and --repeats must be at least 1")
    return args


def load_images(model_folder, data_dir, n: int):
    """The first n val images of class 3 as the model's input (uint8), and where they came from."""
    from probe.data.augment import eval_view
    try:
        data = model_folder.load_split("val", data_dir)
        idx = (data.labels == 3).nonzero().flatten()[:n]
        return eval_view(data.images[idx], model_folder.spec), f"val images {idx.tolist()} of class 3"
    except Exception as e:  # noqa: BLE001 - a benchmark still runs without the data
        spec = model_folder.spec
        gen = torch.Generator().manual_seed(0)
        x = torch.randint(0, 256, (n, *spec.input_shape), generator=gen, dtype=torch.uint8)
        return x, f"random images (no data: {type(e).__name__})"


def captum_defaults(model, x: torch.Tensor, target: int, method: str) -> torch.Tensor:
    """The same map through captum directly, every execution setting left at its default."""
    from captum.attr import (GuidedBackprop, IntegratedGradients, LayerAttribution, LayerGradCam,
                             NoiseTunnel, Occlusion, Saliency)
    c, h, w = x.shape[1:]
    if method == "vanilla":
        return Saliency(model).attribute(x, target=target).amax(1)
    if method == "smoothgrad":
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=CONFIG.smoothgrad_samples,
                                                      stdevs=CONFIG.smoothgrad_stdev, target=target).amax(1)
    if method == "ig":
        return IntegratedGradients(model).attribute(x, baselines=CONFIG.ig_baseline, target=target,
                                                    n_steps=CONFIG.ig_steps).sum(1)
    if method == "gradcam":
        cam = LayerGradCam(model, model.cam_layer).attribute(x, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, (h, w), interpolate_mode="bilinear")[:, 0]
    if method == "guided":
        return GuidedBackprop(model).attribute(x, target=target).abs().amax(1)
    if method == "occlusion":
        window, stride = CONFIG.occlusion_shape(h, w)
        return Occlusion(model).attribute(x, sliding_window_shapes=(c, window, window), strides=(c, stride, stride),
                                          baselines=CONFIG.occlusion_value, target=target).mean(1)
    raise ValueError(method)


def main(argv=None) -> dict:
    import warnings
    warnings.filterwarnings("ignore", module="captum")  # "did not already require gradients", hooks
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    print(flags_line(), flush=True)
    model, folder = load_model_folder(args.model, "cpu")
    images, source = load_images(folder, args.data_dir, args.n)
    x = images.float() / 255
    n = len(x)
    times = {m: {"probe": [], "captum": []} for m in methods}
    maps = {}
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.perf_counter()

    def probe_side(m):
        return attribute(model, images, 3, methods=[m], config=CONFIG).maps[m]

    def captum_side(m):
        with seeded(CONFIG.seed, x.device):  # the same SmoothGrad noise as probe's
            return captum_defaults(model, x, 3, m).detach()

    all_times = {"probe": [], "captum": []}  # every method: probe in one call, captum one call each
    # the ceiling of the many-pass methods: the network's convolutions alone on their passes
    passes = {"smoothgrad": CONFIG.smoothgrad_samples, "ig": CONFIG.ig_steps}
    ceilings = {m: ConvWork(model, tuple(x.shape[1:]), n * passes[m], weight_grads=False, first_input_grad=True)
                for m in methods if m in passes}
    convs_times = {m: [] for m in ceilings}
    for r in range(args.repeats + 1):
        sides = [("probe", lambda: attribute(model, images, 3, methods=methods, config=CONFIG)),
                 ("captum", lambda: [captum_side(m) for m in methods])]
        for name, fn in (sides if r % 2 else sides[::-1]):
            t0 = time.perf_counter()
            fn()
            if r > 0:
                all_times[name].append(time.perf_counter() - t0)
        for i, m in enumerate(methods):
            sides = [("probe", probe_side), ("captum", captum_side)]
            if (r + i) % 2:
                sides.reverse()
            for name, fn in sides:
                t0 = time.perf_counter()
                out = fn(m)
                dt = time.perf_counter() - t0
                if r > 0:
                    times[m][name].append(dt)
                maps[(m, name)] = out.float()
            if m in ceilings:
                t0 = time.perf_counter()
                ceilings[m].run()
                if r > 0:
                    convs_times[m].append(time.perf_counter() - t0)
    rows = []
    for m in methods:
        p, c = statistics.median(times[m]["probe"]), statistics.median(times[m]["captum"])
        paired = statistics.median(cc / pp for pp, cc in zip(times[m]["probe"], times[m]["captum"]))
        diff = float((maps[(m, "probe")] - maps[(m, "captum")]).abs().max())
        scale = float(maps[(m, "captum")].abs().max())
        rows.append({"method": m, "probe_images_per_s": n / p, "captum_images_per_s": n / c,
                     "speedup": c / p, "speedup_paired": paired, "max_abs_diff": diff,
                     "max_rel_diff": diff / scale if scale > 0 else 0.0,
                     "probe_s": times[m]["probe"], "captum_s": times[m]["captum"]})
        if m in ceilings:  # no implementation of these passes on these kernels beats captum by more
            rows[-1] |= {"convs_only_s": convs_times[m], "ceiling": c / statistics.median(convs_times[m])}
    total_p, total_c = statistics.median(all_times["probe"]), statistics.median(all_times["captum"])
    doc = {
        "benchmark": "saliency_speed", "model": str(args.model), "images": source, "n": n,
        "methods": methods, "repeats": args.repeats, "warmup_rounds": 1,
        "settings": CONFIG.to_dict(*x.shape[-2:]),
        "threads": torch.get_num_threads(), "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "machine": machine() | {"processor": platform.processor() or platform.machine(),
                                "python": platform.python_version()},
        "versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "seconds": round(time.perf_counter() - started, 2),
        "rows": rows,
        "all_methods": {"what": "probe: one attribute() call for every method (one working copy); captum: one call per method",
                        "probe_s": all_times["probe"], "captum_s": all_times["captum"],
                        "probe_images_per_s": n / total_p, "captum_images_per_s": n / total_c,
                        "speedup": total_c / total_p,
                        "speedup_paired": statistics.median(c / p for p, c in zip(all_times["probe"], all_times["captum"]))},
    }
    if args.json is None:  # one file per instruction set: a run elsewhere does not replace this machine's
        isa = torch.backends.cpu.get_cpu_capability().lower()
        args.json = ROOT / "benchmarks" / "results" / f"saliency-speed-{isa}.json"
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
    print(table(doc))
    return doc


def table(doc: dict) -> str:
    lines = [f"{doc['n']} {doc['images']}, {doc['model']}; {doc['threads']} thread(s); "
             f"medians of {doc['repeats']} rounds after a warm-up; load average before "
             f"{doc['load_average_before'][0]:.1f}" if doc["load_average_before"] else "",
             "", "| method | probe img/s | captum img/s | × captum | paired | ceiling × captum | max |Δ| | max |Δ| / max |map| |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in doc["rows"]:
        ceiling = f"{r['ceiling']:.2f}" if "ceiling" in r else ""
        lines.append(f"| {r['method']} | {r['probe_images_per_s']:.1f} | {r['captum_images_per_s']:.1f} | "
                     f"{r['speedup']:.2f} | {r['speedup_paired']:.2f} | {ceiling} | {r['max_abs_diff']:.2e} | "
                     f"{r['max_rel_diff']:.2e} |")
    a = doc["all_methods"]
    lines.append(f"| all {len(doc['rows'])}, one call | {a['probe_images_per_s']:.1f} | {a['captum_images_per_s']:.1f} | "
                 f"{a['speedup']:.2f} | {a['speedup_paired']:.2f} | | | |")
    if any("ceiling" in r for r in doc["rows"]):
        lines += ["", "ceiling × captum: captum's time over that of the network's convolutions alone on the same "
                  "passes (forward and input gradient, channels_last, nothing else): no implementation of "
                  "these passes on these kernels can be faster than that."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
