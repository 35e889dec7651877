"""Attacks and robustness: PGD stays in the ε-ball and [0, 1] for any input (L∞ and L2), FGSM is
one signed step of ε (checked against a gradient computed by hand), targeted attacks raise the
target's probability, accuracy falls as ε grows and equals the clean accuracy at ε = 0 (and
`probe evaluate`'s), the caller's model is left as found; the public API on a plain
nn.Sequential CNN in float32 and float64 (float64 precision kept), the joint result's JSON round
trip and report sections; bisection over the ε grid gives the nested curve where success is
monotone, at 1 + ⌈log₂(E − 1)⌉ attacks per image; the examples (one image per class, at ε where the curve
falls), the fine default grids, captions that state the attack and the clean accuracy on the same
images, figures that fit the page; the `probe attack` command as typed, and its mistakes as one
line and exit code 2."""
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parent))

from probe.methods.attacks import (attack_gradient, fgsm, parse_eps_list, pgd, project,  # noqa: E402
                                    random_in_ball, resolve_precision)
from probe.methods.common import class_probabilities  # noqa: E402
from probe.methods.robustness import attack_chunk, attack_curve, chunk_slices, merge_chunks  # noqa: E402
from probe.analysis import robustness  # noqa: E402
from probe.analysis.robustness import RobustnessResult, Settings, robustness_curve  # noqa: E402
from probe.cli import app, main  # noqa: E402
from probe.errors import ConfigError  # noqa: E402

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class TinyConv(nn.Module):
    """An untrained conv net: any nn.Module mapping [0, 1] images to logits will do."""

    def __init__(self, channels=1, classes=10, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


# ---- the ε-ball and [0, 1] --------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps", [("linf", 0.0), ("linf", 0.01), ("linf", 0.1), ("linf", 0.5), ("linf", 1.0),
                                      ("l2", 0.0), ("l2", 0.05), ("l2", 0.5), ("l2", 3.0), ("l2", 100.0)])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_pgd_never_leaves_the_ball_or_the_box(norm, eps, precision):
    g = torch.Generator().manual_seed(1)
    model = TinyConv(channels=3)
    # Pixels at 0, at 1 and in between: clamping to [0, 1] must never push a pixel out of the ball.
    x = torch.rand(24, 3, 8, 8, generator=g)
    x[:8] = (x[:8] > 0.5).float()
    y = torch.randint(0, 10, (24,), generator=g)
    for kwargs in ({}, {"target": 3}, {"restarts": 2, "early_stop": False}, {"random_start": False}):
        adv = pgd(model, x, y, eps, norm=norm, steps=5, step_size=max(eps, 0.1) / 2, batch_size=10,
                  precision=precision, **kwargs)
        assert adv.shape == x.shape and adv.dtype == torch.float32
        assert adv.min() >= 0 and adv.max() <= 1
        delta = (adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert (size <= eps * (1 + 1e-6) + 1e-6).all(), (kwargs, float(size.max()))  # float32 rounding only
        if eps == 0:
            assert torch.equal(adv, x)


def test_an_linf_eps_beyond_the_pixel_range_is_refused_everywhere():
    """ε 8 meant 8/255: refused by FGSM, PGD and the curve alike; an L2 ε of 8 is a real one."""
    model, x, y = TinyConv(channels=1), torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    for run in (lambda: fgsm(model, x, y, 8), lambda: pgd(model, x, y, [0.1, 0.1, 8, 0.1], steps=1),
                lambda: attack_curve(model, x, y, [0.1, 8], steps=1, examples=0)):
        with pytest.raises(ConfigError, match=r"eps 8: an L∞ ε is in pixel units, at most 1 \(did you mean 8/255"):
            run()
    assert pgd(model, x, y, 8, norm="l2", steps=1).shape == x.shape


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_and_random_start_stay_inside_for_any_point(norm):
    g = torch.Generator().manual_seed(2)
    for trial in range(20):
        x = torch.rand(16, 1, 6, 6, generator=g)
        far = x + torch.randn(16, 1, 6, 6, generator=g) * 10 ** (trial % 4 - 2)
        eps = torch.rand(16, generator=g) * 0.6  # one ε per image
        for point in (project(far, x, eps, norm), random_in_ball(x, eps, norm, g)):
            d = (point - x).flatten(1)
            size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
            assert (size <= eps * (1 + 1e-6) + 1e-7).all() and point.min() >= 0 and point.max() <= 1
    # Inside the ball and the box, the projection changes nothing.
    x = torch.full((2, 1, 4, 4), 0.5)
    inside = x + 0.01
    assert torch.allclose(project(inside, x, 0.1, norm), inside)


# ---- FGSM by hand ---------------------------------------------------------------------------------
class Linear(nn.Module):
    """logits = W·x + b on a 1×2×2 image: the cross-entropy's input gradient is Wᵀ(softmax − onehot)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.fc.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 2.0, -0.5], [0.3, 0.2, -1.0, 1.5]]))
            self.fc.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_fgsm_is_one_signed_step_of_eps_along_the_hand_computed_gradient():
    model = Linear()
    x = torch.tensor([[[[0.5, 0.2], [0.9, 0.4]]], [[[0.1, 0.6], [0.3, 0.7]]]])  # (2, 1, 2, 2)
    y = torch.tensor([0, 2])
    W, b = model.fc.weight.detach(), model.fc.bias.detach()
    p = torch.softmax(x.flatten(1) @ W.T + b, 1)
    grad = (p - torch.eye(3)[y]) @ W  # (2, 4): d CE / d x by hand
    eps = 0.05
    expected = (x.flatten(1) + eps * grad.sign()).clamp(0, 1).view_as(x)
    adv = fgsm(model, x, y, eps)
    assert torch.allclose(adv, expected, atol=1e-7)
    assert torch.allclose((adv - x).abs(), torch.full_like(x, eps), atol=1e-7)  # every pixel moved by ε
    # Targeted: one step down the gradient of the target's cross-entropy.
    t = torch.tensor([1, 1])
    grad_t = (p - torch.eye(3)[t]) @ W
    assert torch.allclose(fgsm(model, x, y, eps, target=1), (x.flatten(1) - eps * grad_t.sign()).view_as(x), atol=1e-7)
    # L2: a step of length ε along the gradient.
    l2 = fgsm(model, x, y, eps, norm="l2")
    assert torch.allclose(l2.flatten(1), x.flatten(1) + eps * grad / grad.norm(dim=1, keepdim=True), atol=1e-6)
    # And the gradient helper agrees with the hand computation.
    g, _ = attack_gradient(model, x, y)
    assert torch.allclose(g.flatten(1), grad, atol=1e-6)


def test_fgsm_clamps_to_the_box():
    model = Linear()
    x = torch.tensor([[[[0.0, 1.0], [0.99, 0.01]]]])
    adv = fgsm(model, x, torch.tensor([0]), 0.3)
    assert adv.min() >= 0 and adv.max() <= 1 and (adv - x).abs().max() <= 0.3 + 1e-7


# ---- on a tiny trained model -------------------------------------------------------------------
def test_targeted_attacks_raise_the_targets_probability(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    x, y = images[:20], labels[:20]
    keep = y != 7
    x, y = x[keep], y[keep]
    before = class_probabilities(net, x)[:, 7]
    for adv in (pgd(net, x, y, 0.05, steps=10, target=7, early_stop=False),
                fgsm(net, x, y, 0.02, target=7)):
        after = class_probabilities(net, adv)[:, 7]
        assert (after > before).float().mean() >= 0.9, (before, after)
        assert after.mean() > before.mean()


def test_accuracy_falls_as_eps_grows_and_equals_clean_accuracy_at_0(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    clean = int((class_probabilities(net, images).argmax(1) == labels).sum()) / len(labels)
    assert clean >= 0.9  # the stamps are learnt
    eps = [0.02, 0.05, 0.1, 0.3]
    for method in ("pgd", "fgsm"):
        curve = attack_curve(net, images, labels, eps, method=method, steps=10, examples=3)
        acc = curve.accuracy
        assert curve.eps == [0.0, *eps] and acc[0] == clean
        assert all(a >= b for a, b in zip(acc, acc[1:])), acc
        assert acc[-1] < clean - 0.5, acc
        pts = curve.points()
        assert pts[0]["eps"] == 0 and pts[0]["correct"] == round(clean * len(labels))
        assert all(p["ci95"][0] - 1e-9 <= p["accuracy"] <= p["ci95"][1] + 1e-9 for p in pts)
        # The examples: clean first, then attacked afresh, inside their ball.
        assert curve.example_eps == curve.eps and curve.examples.shape[:2] == (5, 3)  # 4 ε: all shown
        assert torch.equal(curve.examples[0], images[curve.example_index].float() / 255)
        for j, e in enumerate(curve.example_eps):
            assert (curve.examples[j] - curve.examples[0]).abs().max() <= e + 1e-6
        for j, e in enumerate(curve.eps):
            assert (curve.linf[j] <= e + 1e-6).all()


def test_pgd_is_at_least_as_strong_as_fgsm_and_restarts_do_not_hurt(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    acc = {}
    for name, kw in {"fgsm": dict(method="fgsm"), "pgd": dict(method="pgd", steps=20),
                     "pgd3": dict(method="pgd", steps=20, restarts=3)}.items():
        acc[name] = attack_curve(net, images, labels, [0.05], examples=0, **kw).accuracy[1]
    assert acc["pgd"] <= acc["fgsm"] and acc["pgd3"] <= acc["pgd"], acc


class Threshold(nn.Module):
    """Two classes on a 1×1 image x: logits (0.5 − x, x − 0.5). An image x < 0.5 of class 0
    is broken exactly when the attack may add more than 0.5 − x, and PGD always finds that (the
    gradient's sign never changes): success is monotone in ε, so bisection must give the
    nested curve exactly."""

    def forward(self, x):
        v = x.flatten(1)[:, :1]
        return torch.cat([0.5 - v, v - 0.5], 1)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_bisection_gives_the_nested_curve_where_success_is_monotone_at_log2_cost(norm):
    eps = [k / 100 for k in range(11)] + [0.2, 0.3]  # MNIST's grid: 13 values
    need = torch.tensor([0.005, 0.013, 0.027, 0.038, 0.041, 0.055, 0.066, 0.079, 0.083, 0.095, 0.15, 0.25, 0.35,
                         0.45] * 3)  # the change that breaks each image, between the grid's values
    x = (0.5 - need).view(-1, 1, 1, 1)
    y = torch.zeros(len(x), dtype=torch.long)
    y[-1] = 1  # wrong when clean: wrong at every ε, never attacked
    truth = [int(((need > e) & (y == 0)).sum()) for e in eps]  # unbroken at ε
    curves = {s: attack_curve(Threshold(), x, y, eps, norm=norm, steps=10, search=s, examples=0)
              for s in ("sweep", "bisect", "nested")}
    assert curves["sweep"].correct == curves["bisect"].correct == curves["nested"].correct == truth
    assert torch.equal(curves["bisect"].predicted, curves["nested"].predicted)
    assert torch.equal(curves["sweep"].predicted, curves["nested"].predicted)
    assert curves["bisect"].attacks <= 5 * (len(x) - 1)  # the top, then ⌈log₂ 12⌉ probes per image
    assert curves["nested"].attacks == sum(truth[:-1]) > curves["bisect"].attacks
    # The sweep's step per level reaches each image's need at the first ε beyond it (the change grows by
    # 1.25 × the grid's step, then is clipped to the ball), so PGD just below fails at once: 3 attacks each
    # (the largest ε, the sweep, one failed probe) for the images broken within the grid, but 2 for those
    # the sweep breaks at the first ε > 0 (nothing below it to try), and one for the rest.
    broken_within = int(((need <= eps[-1]) & (y == 0)).sum())
    at_first = int(((need <= eps[1]) & (y == 0)).sum())
    assert curves["sweep"].attacks == 3 * broken_within - at_first + (len(x) - 1 - broken_within)
    for c in curves.values():  # every change inside its ball, and the broken images' beyond their need
        assert (c.linf <= torch.tensor(eps).view(-1, 1) + 1e-6).all()
        broken = c.predicted != y
        assert (c.linf[broken & (y == 0)] >= need.expand_as(c.linf)[broken & (y == 0)] - 1e-6).all()


def test_bisection_on_a_trained_model_is_monotone_and_close_to_nested(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    eps = [k / 100 for k in range(11)]
    bisect = attack_curve(net, images, labels, eps, steps=10, examples=0, search="bisect")
    nested = attack_curve(net, images, labels, eps, steps=10, examples=0, search="nested")
    sweep = attack_curve(net, images, labels, eps, steps=10, examples=0)
    assert bisect.search == "bisect" and nested.search == "nested" and sweep.search == "sweep"
    assert bisect.correct[0] == nested.correct[0] == sweep.correct[0]  # the same clean images
    for curve in (bisect, sweep):
        assert all(a >= b for a, b in zip(curve.correct, curve.correct[1:]))
        assert max(abs(a - b) for a, b in zip(curve.accuracy, nested.accuracy)) <= 0.05, (curve.accuracy, nested.accuracy)
        # Each image is wrong from its breaking ε on and right before it, inside every ball.
        wrong = (curve.predicted != curve.labels).int()
        assert (wrong[1:] >= wrong[:-1]).all()
        assert (curve.linf <= torch.tensor(eps).view(-1, 1) + 1e-6).all()
    assert bisect.attacks <= 5 * len(labels) and bisect.attacks < nested.attacks  # 11 ε: 1 + ⌈log₂ 10⌉
    # FGSM has no bisection: one step per ε costs as little as a probe.
    assert attack_curve(net, images[:10], labels[:10], eps, method="fgsm", examples=0).search == "nested"


def test_the_curve_of_chunks_run_anywhere_in_any_order_is_attack_curves(stamp_net_and_data):
    """attack_curve searches chunks of batch_size images, each with random starts of its own: the
    chunks run apart (as a report's processes run them), in another order, and merged give the
    same curve, image for image; each chunk's starts are its own, not the first chunk's."""
    net, images, labels = stamp_net_and_data
    images, labels, eps = images[:23], labels[:23], [0.0, 0.05, 0.1, 0.2]
    options = dict(steps=5, seed=3, batch_size=8)
    whole = attack_curve(net, images, labels, eps, examples=0, **options)
    parts = chunk_slices(len(labels), 8)
    assert [(s.start, s.stop) for s in parts] == [(0, 8), (8, 16), (16, 23)]
    chunks = {k: attack_chunk(net, images[s], labels[s], eps, k, **options) for k, s in reversed(list(enumerate(parts)))}
    merged = merge_chunks([chunks[k] for k in range(len(parts))])
    for key in ("predicted", "p_predicted", "p_true", "linf", "l2", "labels"):
        assert torch.equal(getattr(merged, key), getattr(whole, key)), key
    assert merged.attacks == whole.attacks == sum(c.attacks for c in chunks.values())
    assert merged.settings["seed"] == whole.settings["seed"] == 3  # the seed given, not a chunk's
    # PGD from the first chunk's random starts on the second chunk's images: another search
    again = attack_chunk(net, images[8:16], labels[8:16], eps, 0, **options)
    assert not torch.equal(again.p_true, chunks[1].p_true)


def test_the_examples_are_one_image_per_class_at_eps_where_the_curve_falls():
    from probe.methods.robustness import example_eps_of, pick_examples
    labels = torch.tensor([3, 0, 1, 0, 2, 1, 3, 2, 2])
    right = torch.tensor([3, 1, 1, 0, 0, 1, 3, 1, 2]) == labels  # image 1 (a 0) and 4, 7 (2s) wrong
    # Each class's first correctly classified image; a class with none right: its first image.
    assert pick_examples(right, labels, 10).tolist() == [3, 2, 5, 8, 0, 6]
    assert pick_examples(right, labels, 4).tolist() == [3, 2, 8, 0]
    assert pick_examples(torch.tensor([False, False]), torch.tensor([0, 0]), 3).tolist() == [0]
    eps = [k / 100 for k in range(11)] + [0.2, 0.3]
    acc = [0.99, 0.99, 0.98, 0.97, 0.9, 0.7, 0.5, 0.3, 0.1, 0.02, 0.0, 0.0, 0.0]
    shown = example_eps_of(eps, [acc])
    assert shown == [0.0, 0.05, 0.07, 0.08, 0.1]  # a quarter, half, three quarters and all of the fall
    assert example_eps_of(eps, [acc, [1.0] * 13]) == shown  # the mean of two models' curves
    flat = example_eps_of(eps, [[0.5] * 13])  # no fall: spread over the grid
    assert len(flat) == 5 and flat[0] == 0 and flat[-1] == 0.3 and len(set(flat)) == 5
    steep = example_eps_of(eps, [[1.0, 0.0] + [0.0] * 11])  # all at once: the rest spread out
    assert len(steep) == 5 and 0.01 in steep
    assert example_eps_of([0.0, 0.1, 0.3], [[1, 0.5, 0]]) == [0.0, 0.1, 0.3]  # a short grid: all of it


def test_default_grids_are_fine_and_keep_the_literatures_points():
    from probe.analysis.robustness import default_eps
    for dataset, norm, kept in (("mnist", "linf", [0.1, 0.2, 0.3]), ("cifar10", "linf", [2 / 255, 4 / 255, 8 / 255]),
                                ("sfddd", "linf", [8 / 255, 16 / 255]), ("mnist", "l2", [0.5, 1.0, 2.0]),
                                ("cifar10", "l2", [0.5, 1.0]), (None, "linf", [8 / 255])):
        grid = default_eps(dataset, norm)
        assert len(grid) >= 10 and grid[0] == 0 and grid == sorted(set(grid)), (dataset, norm)
        assert all(any(abs(g - k) < 1e-12 for g in grid) for k in kept), (dataset, norm, grid)
    assert default_eps("mnist", "linf")[:11] == pytest.approx([k / 100 for k in range(11)])
    assert [round(e * 255, 6) for e in default_eps("cifar10", "linf")] == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16]


def test_the_callers_model_is_left_as_found(stamp_net_and_data):
    net, images, labels = stamp_net_and_data
    net.train()
    params = list(net.parameters())
    params[0].requires_grad_(False)
    for p in params[1:]:
        p.grad = torch.ones_like(p)
    grads = [p.grad for p in params]
    stats = {k: v.clone() for k, v in net.state_dict().items()}
    try:
        pgd(net, images[:8], labels[:8], 0.1, steps=3)
        fgsm(net, images[:8], labels[:8], 0.1)
        robustness_curve(net, images[:8], labels[:8], [0.1], steps=2, examples=2)
        attack_curve(net, images[:8], labels[:8], [0.1], method="fgsm", examples=2)
        assert net.training
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
        assert all(p.grad is g for p, g in zip(params, grads))
        assert all(torch.equal(v, stats[k]) for k, v in net.state_dict().items())  # BN statistics too
    finally:
        net.eval()
        params[0].requires_grad_(True)
        for p in params:
            p.grad = None


def test_bad_arguments_are_config_errors():
    model = TinyConv()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    for call in (lambda: pgd(model, x, y, -0.1), lambda: pgd(model, x, y, float("nan")),
                 lambda: pgd(model, x, y, 0.1, norm="l1"), lambda: pgd(model, x, y, 0.1, steps=0),
                 lambda: pgd(model, x, y, 0.1, step_size=-1), lambda: fgsm(model, x, y[:1], 0.1),
                 lambda: robustness_curve(model, x, y, [0.1], method="cw"),
                 lambda: robustness_curve(model, x, y, [0.1], classes=["a", "b"]),  # 10 outputs
                 lambda: robustness_curve(model, x, y, [0.1], target=10),
                 lambda: robustness_curve(model, x, torch.tensor([0, -1]), [0.1]),
                 lambda: resolve_precision("fp8", "cpu")):
        with pytest.raises(ConfigError):
            call()


def test_eps_lists():
    assert parse_eps_list("0,0.1, 0.3") == [0.0, 0.1, 0.3]
    assert parse_eps_list("8/255 0 2/255") == [0.0, 2 / 255, 8 / 255]
    assert parse_eps_list("0.1,0.1") == [0.1]
    for bad, words in (("-0.1", "-0.1"), ("abc", "not a number"), ("1/0", "not a number"), ("", "at least one"),
                       ("nan", "≥ 0"), ("inf", "≥ 0"), ("0.1,,0.2", "an empty value"), ("0.1,", "an empty value")):
        with pytest.raises(ConfigError, match=words):
            parse_eps_list(bad)


# ---- the public API on any model ----------------------------------------------------------------
def sequential_cnn(dtype) -> nn.Sequential:
    """Not a probe ResNet: a plain nn.Sequential, as a user's notebook would have."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_public_api_on_a_sequential_cnn(dtype):
    import matplotlib.pyplot as plt
    from probe.methods.attacks import attack
    model = sequential_cnn(dtype).train()
    x = torch.randint(0, 256, (12, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    y = class_probabilities(model, x).argmax(1)  # every image right before the attack
    for method in ("pgd", "fgsm"):
        adv = attack(model, x, y, 0.1, method=method, steps=5)
        assert adv.dtype == dtype and adv.shape == x.shape  # the model's dtype, kept
        assert (adv - x.to(dtype) / 255).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    result = robustness_curve(model, x, y, [0.05, 0.3], classes=["a", "b", "c"], steps=5, examples=2,
                              name="seq", target="b")
    assert isinstance(result, RobustnessResult) and model.training  # left as found
    acc = [p["accuracy"] for p in result.models[0]["points"]]
    assert result.eps == [0.0, 0.05, 0.3] and acc[0] == 1.0 and acc == sorted(acc, reverse=True)
    assert result.target == "b" and all("target_rate" in p for p in result.models[0]["points"])
    assert result.predicted.shape == (1, 3, 12) and result.example_images.shape == (2, 3, 1, 8, 8)
    figs = result.figures()
    assert set(figs) == {"robustness", "examples"}
    for fig in figs.values():
        plt.close(fig)


def test_float64_attacks_keep_float64_precision():
    """FGSM on a float64 model: the hand-computed step to float64 precision, which a float32
    round trip of the images (0.2 is not a float32) would miss by ~1e-8."""
    model = Linear().double()
    x = torch.tensor([[[[0.5, 0.2], [0.9, 0.4]]], [[[0.1, 0.6], [0.3, 0.7]]]], dtype=torch.float64)
    y = torch.tensor([0, 2])
    W, b = model.fc.weight.detach(), model.fc.bias.detach()
    grad = (torch.softmax(x.flatten(1) @ W.T + b, 1) - torch.eye(3, dtype=torch.float64)[y]) @ W
    expected = (x.flatten(1) + 0.05 * grad.sign()).clamp(0, 1).view_as(x)
    assert torch.allclose(fgsm(model, x, y, 0.05), expected, rtol=0, atol=1e-15)
    # PGD with one step of ε from the clean image is FGSM (L∞).
    one = pgd(model, x, y, 0.05, steps=1, step_size=0.05, random_start=False, early_stop=False)
    assert one.dtype == torch.float64 and torch.allclose(one, expected, rtol=0, atol=1e-15)
    g, logits = attack_gradient(model, x, y)
    assert g.dtype == logits.dtype == torch.float64 and torch.allclose(g.flatten(1), grad, atol=1e-14)


def test_a_joint_run_its_json_round_trip_and_its_sections(stamp_trained):
    import matplotlib.pyplot as plt
    from probe.analysis.runner import context_for
    from probe.models.folder import read_model_folder
    from probe.presentation import FigureRef
    model_dir, data_dir = stamp_trained
    folder = read_model_folder(model_dir)
    contexts = [context_for(folder, device="cpu", data_dir=data_dir, name=n) for n in ("a", "b")]
    result = robustness.run(contexts, Settings(eps="0.1", steps=3, limit=20, examples=2, precision="fp32"))
    assert result.model_names == ["a", "b"] and result.n == 20 and len(result.indices) == 20
    same = [[{k: v for k, v in p.items() if k != "seconds"} for p in m["points"]] for m in result.models]
    assert same[0] == same[1]  # the same weights and seeds
    assert [r["index"] for r in result.models[0]["examples"]] == [r["index"] for r in result.models[1]["examples"]]
    doc = json.loads(json.dumps(result.to_json()))
    again = RobustnessResult.from_json(doc, result.arrays())
    assert again.to_json() == result.to_json() and torch.equal(again.example_images, result.example_images)
    figs = again.figures()
    assert set(figs) == {"robustness", "examples-a", "examples-b"}
    for fig in figs.values():
        plt.close(fig)

    def stems(section):
        return [c.stem for c in section.children if isinstance(c, FigureRef)] + \
            [s for c in section.children if hasattr(c, "children") for s in stems(c)]
    assert stems(robustness.section(result)) == ["robustness"]  # the joint plot, for the comparison
    assert stems(robustness.model_section(result, "b")) == ["examples-b"]  # each model's own part
    shown = stems(robustness.section(result)) + [s for n in ("a", "b") for s in stems(robustness.model_section(result, n))]
    assert sorted(shown) == sorted(figs)  # every figure shown once
    lines = robustness.summary(result)
    assert any(line.startswith("0.1 ") and line.count("%") == 2 for line in lines)  # one column per model
    assert "20 of 60 test images" in "\n".join(lines) and result.search == "sweep"
    nested = robustness.run(contexts[:1], Settings(eps="0.1", steps=3, limit=20, examples=0, search="nested",
                                                   precision="fp32"))
    assert nested.search == "nested" and nested.models[0]["examples"] == [] and nested.example_images is None


def hand_result(models=("m",), eps=(0.0, 0.01, 0.02), **kw) -> RobustnessResult:
    """A result as a run of 1,000 of 10,000 test images would give, without running one."""
    points = [{"eps": e, "accuracy": 0.991 - 10 * e, "correct": round(1000 * (0.991 - 10 * e)), "n": 1000,
               "ci95": [0.983 - 10 * e, 0.995 - 10 * e]} for e in eps]
    fields = dict(classes=["a", "b"], display_names=["a", "b"], codes=[], eps=list(eps), method="pgd", norm="linf",
                  steps=20, step_size=None, random_start=True, restarts=1, target=None, seed=0, precision="fp32",
                  n=1000, split="test", n_split=10000, search="bisect")
    return RobustnessResult(
        models=[{"name": m, "points": points, "clean_accuracy": 0.991, "clean_accuracy_whole_split": 0.9966,
                 "n_whole_split": 10000, "ci95_whole_split": [0.9952, 0.9976], "examples": []} for m in models],
        **(fields | kw))


@pytest.mark.parametrize("models", [("m",), ("m", "n")])
def test_captions_and_text_state_the_attack_and_the_clean_accuracy_on_the_same_images(models):
    from probe.presentation import FigureRef, Table, Text
    result = hand_result(models)

    def items(section, kind):
        return [c for c in section.children if isinstance(c, kind)]
    for section in (robustness.section(result), robustness.model_section(result, "m")):
        (curve_or_table,) = items(section, FigureRef) or items(section, Table)
        for text in (curve_or_table.caption, items(section, Text)[0].text):
            for words in ("20 steps", "size 2.5·ε/20", "no restart", "random start", "1,000 test images"):
                assert words in text, (words, text)
    part = robustness.model_section(result, "m")
    table = items(part, Table)[0]
    for text in (table.caption, items(part, Text)[1].text):
        assert "on these 1,000 images: 99.10% (98.3–99.5%)" in text
        assert "on all 10,000 test images (as probe evaluate says): 99.66% (99.5–99.8%)" in text
    assert "bisection" in items(part, Text)[0].text and "stays broken at every larger ε" in items(part, Text)[0].text
    assert "best of 3 runs" in hand_result(restarts=3).attack_words()
    assert "size 0.01" in hand_result(step_size=0.01).attack_words()
    lines = robustness.summary(result)
    assert any("99.66% on all 10,000" in line and "99.10% on the 1,000" in line for line in lines)
    assert sum(line.startswith(("0 ", "0.01 ", "0.02 ")) for line in lines) == 3  # one line per ε


def test_figures_fit_the_page_with_readable_eps_ticks():
    import matplotlib.pyplot as plt
    from probe.figures.attacks import examples_figure, robustness_figure
    from probe.figures.style import FULL_WIDTH
    for eps, in_255 in (([k / 100 for k in range(11)] + [0.2, 0.3], False),
                        ([k / 255 for k in (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16)], True),
                        ([k / 255 for k in range(17)], True)):
        points = [{"eps": e, "accuracy": max(0.0, 0.99 - 8 * e), "ci95": [0, 1]} for e in eps]
        fig = robustness_figure([("a", points), ("b", points)], in_255=in_255, title="t")
        fig.canvas.draw()
        ax = fig.axes[0]
        boxes = [t.get_window_extent() for t in ax.get_xticklabels() if t.get_text()]
        assert len(boxes) >= min(len(eps), 7) and fig.get_size_inches()[0] <= FULL_WIDTH
        assert all(a.x1 + 2 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in ax.get_xticklabels()]
        assert ax.get_xticklabels()[-1].get_text() in ("0.3", "16/255")
        plt.close(fig)
    # One column per class, the ε down the side, within the text width; long names cut to fit.
    for names, size in (([str(i) for i in range(10)], 28), (["automobile", "airplane"] + list("cdefghij"), 32)):
        images = torch.rand(10, 5, 1 if size == 28 else 3, size, size)
        fig = examples_figure(images, list(range(10)), [[i] * 5 for i in range(10)], [[0.9] * 5] * 10,
                              [0.0, 0.03, 0.05, 0.07, 0.1], names, title="t")
        width, height = fig.get_size_inches()
        # LaTeX caps a figure's height at 0.72 of the text height (~5.5 in)
        assert width <= FULL_WIDTH + 1e-9 and height < 5.5 and len(fig.axes[0].images) == 50
        # the corner names the columns (true classes) and each row says its ε: "0 1 2" never reads as ε
        texts = {t.get_text() for t in fig.axes[0].texts}
        assert {"true class", "clean", "ε = 0.03", "ε = 0.1"} <= texts and "ε" not in texts
        plt.close(fig)


def test_settings_are_checked_once_in_the_options_names():
    assert Settings(eps="0.3, 0,8/255").eps == (0.0, 8 / 255, 0.3)
    assert Settings(eps=[0.1, 0.1]).eps == (0.1,)
    opts = Settings(method="fgsm").attack_options()
    assert opts["steps"] == 1 and opts["restarts"] == 1
    assert Settings().attack_options()["steps"] == 40
    for kwargs, words in (({"method": "fgsm", "restarts": 2}, "--restarts"), ({"restarts": 0}, "--restarts 0"),
                          ({"precision": "fp8"}, "--precision 'fp8'"), ({"batch_size": 0}, "--batch-size 0"),
                          ({"split": "dev"}, "--split 'dev'"), ({"threads": 0}, "--threads 0"),
                          ({"step_size": 0}, "--step-size 0"), ({"search": "linear"}, "--search 'linear'")):
        with pytest.raises(ConfigError, match=words):
            Settings(**kwargs)
    # one message for every step that is not > 0
    for step in (0, -0.01, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"--step-size .*: give a step > 0 in pixel units"):
            Settings(step_size=step)
    # an L∞ ε beyond 1 is ε/255 mistyped; an L2 ε may well be larger
    with pytest.raises(ConfigError, match=r"--eps 8: an L∞ ε is in pixel units, at most 1 \(did you mean 8/255"):
        Settings(eps="0,8")
    assert Settings(norm="l2", eps="0,2,8").eps == (0.0, 2.0, 8.0)


# ---- the command ------------------------------------------------------------------------------
def test_attack_as_typed_in_the_issue(stamp_project):
    cwd, data_dir = stamp_project
    result = runner.invoke(app, ["attack", "--method", "pgd", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    out = cwd / "reports" / "tiny" / "robustness"
    for stem in ("robustness", "examples"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}.pdf").is_file()
    doc = json.loads((out / "results.json").read_text())
    eps = [p["eps"] for p in doc["results"]["models"][0]["points"]]
    assert eps == [k / 100 for k in range(11)] + [0.2, 0.3]  # MNIST's fine grid and its conventional points
    assert doc["results"]["search"] == "sweep" and doc["settings"]["search"] == "sweep"
    assert doc["analysis"] == "robustness" and doc["settings"]["precision"] == "auto"  # as given
    assert doc["results"]["steps"] == 40 and doc["results"]["precision"] in ("fp32", "bf16")  # as run
    assert doc["data"]["n"] == 60 and doc["data"]["indices"] == "all"  # fewer than --limit's 1000
    assert "tiny" in result.output and "0.1" in result.output and "clean accuracy" in result.output


def test_clean_accuracy_at_eps_0_equals_probe_evaluate(stamp_project):
    from probe.analysis.predict import evaluate_model
    cwd, data_dir = stamp_project
    result = runner.invoke(app, ["attack", "--method", "fgsm", "--eps", "0", "--limit", "0",
                                 "--data-dir", str(data_dir), "--out", "r"])
    assert result.exit_code == 0, result.output
    doc = json.loads((cwd / "r" / "results.json").read_text())
    model = doc["results"]["models"][0]
    evaluated = evaluate_model(cwd / "trained_models" / "tiny", split="test", data_dir=data_dir)
    n = evaluated["n"]
    assert model["points"][0]["n"] == n == 60  # the whole split
    # The same images classified the same way: the same count (evaluate's accuracy is a float32 mean).
    assert model["points"][0]["correct"] == round(evaluated["accuracy"] * n) == round(model["clean_accuracy_whole_split"] * n)
    assert model["points"][0]["accuracy"] == pytest.approx(evaluated["accuracy"], abs=1e-7)


def test_attack_options_and_several_models_on_one_plot(stamp_project):
    import shutil
    cwd, data_dir = stamp_project
    shutil.copytree(cwd / "trained_models" / "tiny", cwd / "trained_models" / "tiny2")
    result = runner.invoke(app, ["attack", "--model", "trained_models/tiny", "--model", "trained_models/tiny2",
                                 "--method", "pgd", "--norm", "l2", "--eps", "0,0.5,1", "--steps", "5",
                                 "--step-size", "0.2", "--targeted", "3", "--restarts", "2", "--limit", "20",
                                 "--precision", "fp32", "--data-dir", str(data_dir)])
    assert result.exit_code == 0, result.output
    out = cwd / "reports" / "compare" / "robustness"
    doc = json.loads((out / "results.json").read_text())
    assert [m["name"] for m in doc["results"]["models"]] == ["tiny", "tiny2"]
    assert [m["name"] for m in doc["models"]] == ["tiny", "tiny2"] and doc["results"]["target"] == "3"
    a, b = (m["points"] for m in doc["results"]["models"])
    assert [p["eps"] for p in a] == [0.0, 0.5, 1.0]
    assert [p["accuracy"] for p in a] == [p["accuracy"] for p in b]  # the same weights, the same seeds
    assert all("target_rate" in p for p in a) and doc["data"]["n"] == 20 and len(doc["data"]["indices"]) == 20
    assert {"examples-tiny.png", "examples-tiny2.png", "robustness.png"} <= set(doc["figures"])
    assert "share put in 3" in result.output


ATTACK_ERRORS = [
    (["attack", "--eps", "-0.1"], "--eps -0.1"),
    (["attack", "--eps", "abc"], "--eps 'abc'"),
    (["attack", "--eps", "0,x"], "--eps 'x'"),
    (["attack", "--targeted", "nine"], "unknown class 'nine'"),
    (["attack", "--method", "cw"], "--method 'cw'"),
    (["attack", "--norm", "l1"], "--norm 'l1'"),
    (["attack", "--method", "fgsm", "--steps", "10"], "--steps"),
    (["attack", "--steps", "0"], "--steps 0"),
    (["attack", "--step-size", "-0.01"], "--step-size"),
    (["attack", "--limit", "-5"], "--limit -5"),
    (["attack", "--model", "no/such/model"], "no/such/model"),
]


@pytest.mark.parametrize("argv,words", ATTACK_ERRORS, ids=[" ".join(a) for a, _ in ATTACK_ERRORS])
def test_attack_mistakes_are_one_line_and_exit_2(stamp_project, argv, words, capsys):
    cwd, data_dir = stamp_project
    with pytest.raises(SystemExit) as e:
        main([*argv, "--data-dir", str(data_dir)])
    err = capsys.readouterr().err
    assert e.value.code == 2, err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_the_attack_speed_benchmark_runs(real_mnist_dir, tmp_path):
    """benchmarks/attack_speed.py end to end on a few images (the real run takes ~30 min)."""
    import importlib.util
    if importlib.util.find_spec("torchattacks") is None:  # its __init__ needs scipy: not imported whole
        pytest.skip("torchattacks is not installed (pip install --no-deps torchattacks)")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import attack_speed
    doc = attack_speed.main(["--images", "12", "--rounds", "1", "--batch-size", "6", "--data-dir", str(real_mnist_dir),
                             "--json", str(tmp_path / "a.json"), "--quiet"])
    assert {r["side"] for r in doc["table"]} == set(attack_speed.SIDES)
    assert all(r["images_per_s"] > 0 and 0 <= r["robust_accuracy"] <= 1 for r in doc["table"])
    # Every side stays inside the ball it was given.
    assert all(rd["max_linf"] <= r["eps"] + 1e-6 for r in doc["runs"] for rd in r["rounds"])
    assert json.loads((tmp_path / "a.json").read_text())["images"] == 12


def test_fgsm_checks_eps_as_pgd_does():
    from probe.methods.attacks import fgsm, pgd
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x, y = torch.rand(2, 1, 4, 4), torch.tensor([0, 1])
    for attack in (fgsm, pgd):
        for eps in (-0.1, float("nan"), [0.1, 0.2, 0.3]):
            with pytest.raises(ConfigError, match="ε"):
                attack(model, x, y, eps)
    assert (fgsm(model, x, y, [0.0, 0.1]) - x).abs().amax((1, 2, 3)).tolist()[0] == 0
