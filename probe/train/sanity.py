"""The checks to run before a long training run (the seed author's habit):
1. the initial loss is about ln(classes): the output layer starts unbiased;
2. autograd's gradients match central finite differences in float64;
3. the network can overfit one small batch to 100% within a step budget.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from probe.data.spec import get_spec
from probe.errors import DataError
from probe.models.resnet import get_config
from probe.models.inference import to_input
from probe.train.run import build_classifier


def _batch(spec, n: int, data_dir, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n real training images when the dataset is at hand, else random images (and say so)."""
    try:
        from probe.data.splits import load_splits
        train = load_splits(spec.name, data_dir, seed=seed, splits=("train",))["train"]
        from probe.data.augment import eval_view
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
        return to_input(eval_view(train.images[idx], spec)), train.labels[idx], "real"
    except DataError:
        g = torch.Generator().manual_seed(seed)
        return (torch.rand(n, *spec.input_shape, generator=g),
                torch.randint(0, spec.num_classes, (n,), generator=g), "random")


def run_sanity(arch: str, dataset: str, *, data_dir=None, width: float = 1.0, seed: int = 0,
               overfit_images: int = 20, overfit_steps: int = 150) -> list[dict]:
    spec = get_spec(dataset)
    torch.manual_seed(seed)
    cfg = get_config(arch, num_classes=spec.num_classes, in_channels=spec.channels, width=width)
    x, y, source = _batch(spec, 128, data_dir, seed)
    results = []

    # Train mode, as the first step sees it: in eval mode a fresh BatchNorm's running
    # statistics (0, 1) normalise nothing and deep nets' activations blow up.
    model = build_classifier(cfg, spec).train()
    with torch.no_grad():
        loss0 = float(F.cross_entropy(model(x), y))
    expected = math.log(spec.num_classes)
    results.append({"check": "initial loss ≈ ln(classes)", "value": loss0, "target": expected,
                    "passed": abs(loss0 - expected) < 0.25 * expected,
                    "detail": f"{loss0:.4f} vs ln {spec.num_classes} = {expected:.4f} ({source} images)"})

    results.append(_gradient_check(build_classifier(cfg, spec).double().eval(), spec, seed))

    model = build_classifier(cfg, spec).train()
    xb, yb = x[:overfit_images], y[:overfit_images]
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps, acc = None, 0.0
    for step in range(1, overfit_steps + 1):
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc = float((logits.argmax(1) == yb).float().mean())
        if acc == 1.0 and loss.item() < 0.1:
            steps = step
            break
    results.append({"check": f"overfits {overfit_images} images", "value": acc, "target": 1.0,
                    "passed": steps is not None,
                    "detail": (f"100% after {steps} steps" if steps else
                               f"{100 * acc:.0f}% after {overfit_steps} steps")})
    return results


def _gradient_check(model: torch.nn.Module, spec, seed: int, n_params: int = 8) -> dict:
    """Loss gradients w.r.t. a few input pixels and weights against central differences."""
    g = torch.Generator().manual_seed(seed + 1)
    c = spec.channels
    x = torch.rand(2, c, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1])
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn():
        return F.cross_entropy(model(x), y)

    loss = loss_fn()
    grads = torch.autograd.grad(loss, [x, *params])
    worst, eps = 0.0, 1e-6
    probes = [(x, grads[0], i) for i in torch.randint(0, x.numel(), (n_params,), generator=g).tolist()]
    for _ in range(n_params):
        k = int(torch.randint(0, len(params), (1,), generator=g))
        probes.append((params[k], grads[1 + k], int(torch.randint(0, params[k].numel(), (1,), generator=g))))
    with torch.no_grad():
        for tensor, grad, i in probes:
            flat = tensor.view(-1)
            old = flat[i].item()
            flat[i] = old + eps
            up = loss_fn().item()
            flat[i] = old - eps
            down = loss_fn().item()
            flat[i] = old
            numeric = (up - down) / (2 * eps)
            analytic = grad.reshape(-1)[i].item()
            worst = max(worst, abs(numeric - analytic) / max(1e-8, abs(numeric) + abs(analytic)))
    return {"check": "gradients = finite differences (float64)", "value": worst, "target": 1e-5,
            "passed": worst < 1e-5, "detail": f"max relative difference {worst:.2e} over {2 * n_params} entries"}


def format_sanity(results: list[dict]) -> str:
    return "\n".join(f"{'PASS' if r['passed'] else 'FAIL'}  {r['check']}: {r['detail']}" for r in results)
