"""The checks to run before a long training run (the seed author's habit):
1. the initial loss is about ln(classes): the net starts with no preference among the classes;
2. autograd's gradients match central finite differences in float64;
3. the network can overfit one small batch to 100% within a step budget.

Checks 2 and 3 use the network exactly as training builds it. Check 1 is judged on the same
weights with every residual branch's last BN gamma zeroed (Goyal et al. 2017), so each block
starts as its shortcut: a correct deep post-activation ResNet at its default init starts well
above ln(classes) (ResNet-110: ~4.3-4.6 vs 2.30, because the residual sum grows with depth,
and training copes), so judging that number would fail correct nets. The default-init loss is
reported beside it. The plain twin has no branches to zero and is judged as built.

Images: real training images when the data folder exists; a broken or hostile folder is the
user's error (DataError), never papered over with random images. Random images only when asked
(random_images=True) or when there is no data folder at all, and the output says which.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from probe.data.augment import eval_view
from probe.data.paths import resolve_data_dir
from probe.data.spec import get_spec
from probe.data.splits import load_splits
from probe.models.inference import to_input
from probe.models.resnet import get_config
from probe.train.run import build_classifier

LOSS_TOLERANCE = 0.10  # relative, of ln(classes)
GRAD_ATOL, GRAD_RTOL = 1e-5, 1e-3  # torch.autograd.gradcheck's defaults
GRAD_EPS = 1e-7  # float64: rounding error ~1e-15 / ε stays far below GRAD_ATOL
GRAD_EPS_SMALL = 1e-8  # the retry where GRAD_EPS straddles a kink (rounding still ≪ atol)


def _batch(spec, n: int, data_dir, seed: int, random_images: bool) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n training images → (x in [0, 1], labels, a phrase saying where they came from)."""
    folder = resolve_data_dir(spec.name, data_dir)
    if random_images or not folder.exists():
        g = torch.Generator().manual_seed(seed)
        why = "as asked" if random_images else f"no data folder at {folder}"
        return (torch.rand(n, *spec.input_shape, generator=g),
                torch.randint(0, spec.num_classes, (n,), generator=g),
                f"{n} random images ({why})")
    train = load_splits(spec.name, data_dir, seed=seed, splits=("train",))["train"]  # DataError propagates
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:n]
    return (to_input(eval_view(train.images[idx], spec)), train.labels[idx],
            f"{len(idx)} real training images from {folder}")


def run_sanity(arch: str, dataset: str, *, data_dir=None, width: float = 1.0, seed: int = 0,
               overfit_images: int = 20, overfit_steps: int = 150,
               random_images: bool = False) -> list[dict]:
    """[{"check", "value", "target", "passed", "detail"}]; the first entry ("images", info=True)
    says which images were used and is not a check."""
    spec = get_spec(dataset)
    cfg = get_config(arch, num_classes=spec.num_classes, in_channels=spec.channels, width=width)
    x, y, source = _batch(spec, 128, data_dir, seed, random_images)
    results = [{"check": "images", "info": True, "passed": True, "value": None, "target": None,
                "detail": source}]
    # One thread: these batches are tiny (20 images, 4 of 8×8), so more threads gain little,
    # and on cores shared with a training run their spin-waits made a step 10-30× slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results.append(_initial_loss(cfg, spec, x, y, seed))
        torch.manual_seed(seed)
        results.append(_gradient_check(build_classifier(cfg, spec).double().train(), spec, seed))
        torch.manual_seed(seed)
        results.append(_overfit(build_classifier(cfg, spec).train(), x[:overfit_images],
                                y[:overfit_images], overfit_steps))
    finally:
        torch.set_num_threads(threads)
    return results


def _initial_loss(cfg, spec, x, y, seed: int) -> dict:
    # Train mode, as the first step sees it: in eval mode a fresh BatchNorm's running
    # statistics (0, 1) normalise nothing and deep nets' activations blow up.
    torch.manual_seed(seed)
    model = build_classifier(cfg, spec).train()
    with torch.no_grad():
        default = float(F.cross_entropy(model(x), y))
    expected = math.log(spec.num_classes)
    rule = f"pass if within ±{LOSS_TOLERANCE:.0%} of ln {spec.num_classes} = {expected:.4f}"
    if cfg.shortcut == "none" or cfg.zero_init_residual:
        loss, how = default, "as built"
        extra = ""
    else:
        # The same weights (same seed) with each branch's last BN gamma zeroed.
        torch.manual_seed(seed)
        twin = build_classifier(dataclasses.replace(cfg, zero_init_residual=True), spec).train()
        with torch.no_grad():
            loss = float(F.cross_entropy(twin(x), y))
        how = "with residual branches zeroed (Goyal et al. 2017)"
        extra = f"; at the default init training uses: {default:.4f}"
    return {"check": "initial loss ≈ ln(classes)", "value": loss, "target": expected,
            "passed": abs(loss - expected) <= LOSS_TOLERANCE * expected,
            "detail": f"{loss:.4f} {how} ({rule}){extra}"}


def _gradient_check(model: torch.nn.Module, spec, seed: int, n_inputs: int = 4,
                    n_tensors: int = 12, candidates: int = 32) -> dict:
    """Loss gradients against central differences (float64, train mode as in training) on the
    largest entries: the n_inputs input pixels with the largest |gradient|, and the largest
    entry of n_tensors parameter tensors spread from the first layer to the last. Tiny entries
    say nothing (their differences are all rounding), and large ones are where bugs show.

    Rule, as torch.autograd.gradcheck: |autograd − numeric| ≤ atol + rtol·|numeric|. A deep
    ReLU net has kinks near any point, and a central difference straddling one is wrong by up
    to half the jump in slope. So an entry that fails at ε is tried again at a smaller ε; if it
    still fails and its one-sided slopes (looking at the forward pass only, so a wrong
    backward cannot hide there) differ by more than the error, a kink explains the error and
    the entry is skipped for the next largest of its tensor. Otherwise the failure stands."""
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.rand(4, spec.channels, 8, 8, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.arange(4) % spec.num_classes
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_fn() -> float:
        return F.cross_entropy(model(x), y)

    grads = torch.autograd.grad(loss_fn(), [x, *params])
    picks = torch.linspace(0, len(params) - 1, min(n_tensors, len(params))).round().long().unique().tolist()
    groups = [(x, grads[0], n_inputs)] + [(params[k], grads[1 + k], 1) for k in picks]
    worst, worst_abs, checked, kinks = 0.0, 0.0, 0, 0
    with torch.no_grad():
        base = loss_fn().item()
        for tensor, grad, wanted in groups:
            ratio, err, done, skipped = _check_largest(loss_fn, base, tensor, grad, wanted, candidates)
            if ratio >= worst:
                worst, worst_abs = ratio, err
            checked, kinks = checked + done, kinks + skipped
    expected = n_inputs + len(picks)
    passed = worst <= 1.0 and 2 * checked >= expected  # kinks everywhere say nothing either way
    skipped = f", {kinks} skipped at a ReLU kink within ε" if kinks else ""
    return {"check": "gradients = finite differences (float64)", "value": worst, "target": 1.0,
            "passed": passed,
            "detail": (f"{checked} largest entries (input and {len(picks)} parameter tensors"
                       f"{skipped}): worst |autograd − numeric| = {worst_abs:.1e} = {worst:.2g} × "
                       f"the bound {GRAD_ATOL:g} + {GRAD_RTOL:g}·|numeric| (pass if ≤ 1; "
                       f"ε = {GRAD_EPS:g}, then {GRAD_EPS_SMALL:g})"
                       + ("" if checked == expected else f"; {checked} of {expected} entries "
                          "compared (at least half needed)"))}


def _difference(loss_fn, base: float, flat, i: int, analytic: float, eps: float) -> tuple[float, float, bool]:
    """Central difference of entry i: (error, error / bound, whether a kink within eps explains
    the error)."""
    old = flat[i].item()
    flat[i] = old + eps
    up = loss_fn().item()
    flat[i] = old - eps
    down = loss_fn().item()
    flat[i] = old
    numeric = (up - down) / (2 * eps)
    err = abs(analytic - numeric)
    jump = abs((up - base) - (base - down)) / eps  # forward slope − backward slope
    return err, err / (GRAD_ATOL + GRAD_RTOL * abs(numeric)), jump >= err


def _check_largest(loss_fn, base: float, tensor, grad, wanted: int, candidates: int):
    """The `wanted` largest-gradient entries of one tensor checked (kinks skipped for the next
    largest): (worst ratio, its error, entries checked, entries skipped at a kink)."""
    flat, gflat = tensor.view(-1), grad.reshape(-1)
    worst, worst_abs, done, kinks = 0.0, 0.0, 0, 0
    for i in gflat.abs().topk(min(candidates, gflat.numel())).indices.tolist():
        if done == wanted:
            break
        err, ratio, _ = _difference(loss_fn, base, flat, i, gflat[i].item(), GRAD_EPS)
        if ratio > 1:
            err, ratio, kink = _difference(loss_fn, base, flat, i, gflat[i].item(), GRAD_EPS_SMALL)
            if ratio > 1 and kink:
                kinks += 1
                continue
        if ratio >= worst:
            worst, worst_abs = ratio, err
        done += 1
    return worst, worst_abs, done, kinks


def _overfit(model, xb, yb, steps_max: int) -> dict:
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps, acc, last = None, 0.0, math.inf
    for step in range(1, steps_max + 1):
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        acc, last = float((logits.argmax(1) == yb).float().mean()), loss.item()
        if acc == 1.0 and last < 0.1:
            steps = step
            break
    return {"check": f"overfits {len(xb)} images", "value": acc, "target": 1.0,
            "passed": steps is not None,
            "detail": (f"100% and loss < 0.1 after {steps} steps" if steps else
                       f"{100 * acc:.0f}% and loss {last:.3f} after {steps_max} steps "
                       "(pass: 100% and loss < 0.1)")}


def format_sanity(results: list[dict]) -> str:
    return "\n".join(f"{'INFO' if r.get('info') else 'PASS' if r['passed'] else 'FAIL'}  "
                     f"{r['check']}: {r['detail']}" for r in results)
