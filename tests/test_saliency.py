"""probe saliency: the maps against finite differences and IG's completeness, batch-size
independence, the caller's model left as found, grayscale / RGB / SFDDD's crop, user images,
the method registry (one place per method), Guided Backprop on in-place or reused ReLUs, the public API on a foreign model in float32 and float64, and the command (its
files and its error cases)."""
import copy
import io
import json
import re
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

from figure_checks import overlapping_texts
from probe.analysis.saliency import (ANALYSIS, COMPARISON_STEM, SaliencyResult, Settings, class_index,
                                     comparison_figure, comparison_figures, comparison_pages, comparison_section,
                                     comparison_stems, faithfulness, row_labels, run, saliency,
                                     section, write_files)
from probe.analysis.runner import read_outputs
from probe.cli import app, main
from probe.data.spec import CIFAR10, MNIST
from probe.data.user_images import load_user_images
from probe.errors import ConfigError, DataError
from probe.figures.saliency import overlaid, scale_of
from probe.figures.style import save_figure
from probe.methods.saliency import (METHODS, CamLayer, Method, SaliencyConfig, attribute, choose_cam_layer, explain,
                                    parse_methods)
from probe.models.classifier import Classifier
from probe.models.resnet import ResNet, get_config

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(autouse=True)
def close_figures():
    """The figures a test draws, closed after it (pyplot keeps every open one)."""
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


FAST = SaliencyConfig(smoothgrad_samples=4, ig_steps=8, occlusion_window=4, occlusion_stride=2)


class Tiny(nn.Module):
    """A small smooth network: conv → tanh → 2×2 pool → linear. Not probe's Classifier."""

    def __init__(self, channels=1, classes=3, dtype=torch.float64, act=nn.Tanh):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.act = act()
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16, classes)
        self.to(dtype)

    def forward(self, x):
        return self.fc(self.flat(self.pool(self.act(self.conv(x)))))


def tiny_classifier(spec, size=12, seed=0, arch="resnet8", width=0.25, **options) -> Classifier:
    torch.manual_seed(seed)
    spec = replace(spec, height=size, width=size)
    config = get_config(arch, num_classes=spec.num_classes, in_channels=spec.channels, width=width, **options)
    model = Classifier.from_spec(ResNet(config), spec)
    # Random BatchNorm statistics: an untrained net's maps would otherwise be nearly flat.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def finite_difference_gradient(model, x, target, h=1e-6):
    """∂logit[target]/∂x by central differences, float64, every pixel's pair in one batch.
    x: (N, C, H, W)."""
    n, d = len(x), x[0].numel()
    step = torch.eye(d, dtype=x.dtype).view(d, *x.shape[1:]) * h  # (D, C, H, W)
    with torch.no_grad():
        up = model((x[:, None] + step).flatten(0, 1))[:, target].view(n, d)
        down = model((x[:, None] - step).flatten(0, 1))[:, target].view(n, d)
    return ((up - down) / (2 * h)).view_as(x)


@pytest.mark.parametrize("channels", [1, 3])
def test_vanilla_equals_finite_differences(channels):
    torch.manual_seed(0)
    model = Tiny(channels).eval()
    x = torch.rand(2, channels, 5, 5, dtype=torch.float64)
    r = saliency(model, x, 1, methods="vanilla")
    fd = finite_difference_gradient(model, x, 1).abs().amax(1)  # (N, H, W): max over channels
    assert r.maps["vanilla"].shape == (2, 5, 5)
    torch.testing.assert_close(r.maps["vanilla"].double(), fd, rtol=1e-5, atol=1e-7)


def test_integrated_gradients_is_complete():
    """Σ attributions = f(x) − f(black); the delta is the shortfall, as captum's own convergence
    delta says; the result's rows and convergence record carry it."""
    from captum.attr import IntegratedGradients
    torch.manual_seed(1)
    model = Tiny(3).eval()
    x = torch.rand(3, 3, 6, 6, dtype=torch.float64)
    r = attribute(model, x, 2, methods="ig", config=SaliencyConfig(ig_steps=64))
    delta, got_gap = r.completeness["ig"]
    with torch.no_grad():
        gap = model(x)[:, 2] - model(torch.zeros_like(x))[:, 2]
    total = r.maps["ig"].double().sum((1, 2))
    torch.testing.assert_close(got_gap.double(), gap, rtol=1e-5, atol=1e-6)
    assert (total - gap).abs().max() <= 1e-3 * gap.abs().max() + 1e-6
    torch.testing.assert_close(delta.double(), total - gap, rtol=1e-3, atol=1e-5)
    _, captum_delta = IntegratedGradients(model).attribute(x, target=2, n_steps=64, return_convergence_delta=True)
    torch.testing.assert_close(delta.double(), captum_delta, rtol=1e-3, atol=1e-5)
    public = saliency(model, x, 2, methods="ig", config=SaliencyConfig(ig_steps=64))
    assert [row["ig_delta"] for row in public.rows] == pytest.approx(delta.tolist(), abs=1e-6)
    assert public.convergence["ig"]["max_abs_delta"] == pytest.approx(float(delta.abs().max()), rel=1e-5)


def test_maps_do_not_depend_on_the_batch_size():
    model = tiny_classifier(MNIST)
    x = torch.randint(0, 256, (5, 1, 12, 12), dtype=torch.uint8)
    deterministic = [m for m in METHODS if m != "smoothgrad"]  # SmoothGrad's noise is drawn per batch
    big = saliency(model, x, 3, methods=deterministic, config=replace(FAST, batch_size=256))
    small = saliency(model, x, 3, methods=deterministic, config=replace(FAST, batch_size=4))
    for m in deterministic:
        torch.testing.assert_close(small.maps[m], big.maps[m], rtol=1e-4, atol=1e-5, msg=m)
    # The same with and without the channels-last working copy.
    plain = saliency(model, x, 3, methods=deterministic, config=replace(FAST, channels_last=False))
    for m in deterministic:
        torch.testing.assert_close(plain.maps[m], big.maps[m], rtol=1e-4, atol=1e-5, msg=m)


def test_smoothgrad_is_seeded_and_leaves_the_global_generator_alone():
    model = tiny_classifier(MNIST)
    x = torch.rand(2, 1, 12, 12)
    torch.manual_seed(123)
    a = saliency(model, x, 0, methods="smoothgrad", config=FAST).maps["smoothgrad"]
    after = torch.rand(1)
    torch.manual_seed(123)
    b = saliency(model, x, 0, methods="smoothgrad", config=FAST).maps["smoothgrad"]
    torch.manual_seed(123)
    assert torch.equal(a, b) and torch.equal(torch.rand(1), after)


def test_the_callers_model_is_left_as_it_was():
    model = tiny_classifier(MNIST).train()
    params = list(model.parameters())
    params[0].grad = torch.full_like(params[0], 7.0)
    params[1].requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 12, 12)
    saliency(model, x, 1, methods="all", config=FAST)
    assert model.training
    assert torch.equal(params[0].grad, torch.full_like(params[0], 7.0))
    assert all(p.grad is None for p in params[1:])
    assert not params[1].requires_grad and all(p.requires_grad for p in params[2:])
    for k, v in model.state_dict().items():  # weights and BatchNorm statistics untouched
        assert torch.equal(v, before[k]), k
    # Without a working copy (the model itself is used): the same promise.
    saliency(model, x, 1, methods="all", config=replace(FAST, channels_last=False))
    assert model.training and not params[1].requires_grad
    assert torch.equal(params[0].grad, torch.full_like(params[0], 7.0))
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_three_channel_model_every_method():
    model = tiny_classifier(CIFAR10, size=16)
    x = torch.randint(0, 256, (2, 3, 16, 16), dtype=torch.uint8)
    r = saliency(model, x, torch.tensor([1, 7]), methods="all", config=FAST)
    for m in METHODS:
        assert r.maps[m].shape == (2, 16, 16) and r.maps[m].dtype == torch.float32, m
        assert torch.isfinite(r.maps[m]).all(), m
    for m in ("vanilla", "smoothgrad", "guided", "gradcam"):
        assert (r.maps[m] >= 0).all(), m  # absolute values, or ReLU'd
    assert (r.maps["ig"] < 0).any() and (r.maps["ig"] > 0).any()  # signed
    # vanilla: the largest |∂logit/∂x| over the three channels
    xf = (x.float() / 255).requires_grad_()
    logits = model(xf)
    g, = torch.autograd.grad(logits[0, 1] + logits[1, 7], xf)
    torch.testing.assert_close(r.maps["vanilla"], g.abs().amax(1), rtol=1e-4, atol=1e-6)
    assert r.targets == [1, 7] and [row["target"] for row in r.rows] == ["1", "7"]


def test_gradcam_of_another_model_needs_a_layer():
    model = Tiny(1, dtype=torch.float32).eval()
    x = torch.rand(2, 1, 8, 8)
    with pytest.raises(ConfigError, match="gradcam needs a layer"):
        saliency(model, x, 0, methods="gradcam")
    by_module = saliency(model, x, 0, methods="gradcam", layer=model.act).maps["gradcam"]
    by_name = saliency(model, x, 0, methods="gradcam", layer="act").maps["gradcam"]
    assert by_module.shape == (2, 8, 8) and torch.allclose(by_module, by_name)
    with pytest.raises(ConfigError, match="no layer 'nope'"):
        saliency(model, x, 0, methods="gradcam", layer="nope")
    # The other methods need no layer (Guided Backprop needs ReLUs: Tiny's Tanh has none to guide).
    relu = Tiny(1, dtype=torch.float32, act=nn.ReLU).eval()
    assert saliency(relu, x, 0, methods="vanilla,guided").maps["guided"].shape == (2, 8, 8)
    with pytest.raises(ConfigError, match="Guided Backprop cannot run on this model: it needs the model's ReLUs"):
        saliency(model, x, 0, methods="guided")


def test_gradcam_layer_of_a_small_input_has_at_least_8x8():
    """resnet8 on a 12×12 input: the last feature map is 3×3, so "auto" takes stage1 (12×12); on
    32×32 the last one is 8×8 and is kept; a stage is named by its last part."""
    model = tiny_classifier(MNIST)
    x = torch.rand(2, 1, 12, 12)
    auto = choose_cam_layer(model, x)
    assert (auto.name, auto.size) == ("net.stages.stage1", (12, 12)) and "only 3×3" in auto.reason
    assert choose_cam_layer(model, x, None) == CamLayer("net.stages.stage3", (3, 3), "the model's last feature map")
    assert choose_cam_layer(model, x, "stage2") == CamLayer("net.stages.stage2", (6, 6), "as asked")
    big = tiny_classifier(CIFAR10, size=32)
    assert choose_cam_layer(big, torch.rand(1, 3, 32, 32)).name == "net.stages.stage3"
    with pytest.raises(ConfigError, match="no layer 'stage9'.*stage1, stage2, stage3"):
        choose_cam_layer(model, x, "stage9")
    r = saliency(model, x, 1, methods="gradcam", config=FAST)
    assert r.gradcam == {"layer": "net.stages.stage1", "size": [12, 12], "reason": auto.reason}
    last = saliency(model, x, 1, methods="gradcam", config=FAST, layer=None)
    assert not torch.allclose(r.maps["gradcam"], last.maps["gradcam"])  # a finer map than the 3×3 blob
    assert "Grad-CAM explains net.stages.stage1, a 12×12 feature map (the last feature map is only 3×3" \
        in section(r).children[0].text
    f = faithfulness(model, x, 1, r)  # the randomization check recomputes Grad-CAM on the same layer
    assert f.randomization["n"]["gradcam"] == 2
    assert saliency(model, x, 1, methods="vanilla").gradcam is None


def test_occlusion_window_is_sized_to_the_image():
    c = SaliencyConfig()
    assert c.occlusion_shape(28, 28) == (4, 2)
    assert c.occlusion_shape(32, 32) == (4, 2)
    assert c.occlusion_shape(224, 224) == (32, 16)
    assert c.occlusion_shape(3, 3) == (2, 1)
    assert SaliencyConfig(occlusion_window=6, occlusion_stride=3).occlusion_shape(28, 28) == (6, 3)


def test_method_names():
    assert parse_methods("all") == list(METHODS)
    assert parse_methods("ig, Vanilla,ig") == ["ig", "vanilla"]
    with pytest.raises(ConfigError, match="did you mean 'gradcam'"):
        parse_methods("gradcan")
    with pytest.raises(ConfigError, match="no method"):
        parse_methods(" , ")


def test_explain_is_batched_like_saliency():
    model = tiny_classifier(MNIST)
    x = torch.rand(4, 1, 12, 12)
    t = torch.tensor([0, 1, 2, 3])
    ref = saliency(model, x, t, methods="occlusion", config=FAST).maps["occlusion"]
    with torch.no_grad():
        direct = explain(model.eval(), x, t, "occlusion", replace(FAST, batch_size=5))
    torch.testing.assert_close(direct, ref, rtol=1e-4, atol=1e-5)


# ---- the registry, ReLUs, the public API --------------------------------------------------------

def tiny_cnn(dtype):
    """A plain nn.Sequential CNN: no cam_layer, nothing of probe's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(dtype)


@pytest.mark.parametrize("which", ["resnet", "sequential"])
def test_gradcam_and_guided_equal_captums_and_leave_the_relus_as_they_were(which):
    """probe computes Grad-CAM and Guided Backprop itself (no captum hooks per call): the maps must
    be captum's LayerGradCam (+ interpolate) and GuidedBackprop's, in float64 to 1e-12, and every
    ReLU module's forward is its own again afterwards, also when the model raises inside."""
    from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam
    from probe.methods.saliency import _gradcam, _guided
    model = tiny_classifier(MNIST).double() if which == "resnet" else tiny_cnn(torch.float64).eval()
    layer = model.cam_layer if which == "resnet" else model[2]
    torch.manual_seed(3)
    x = torch.rand(5, 1, 12, 12, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        guided_captum = GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=t).abs().amax(1)
        cam = LayerGradCam(model, layer).attribute(x.clone().requires_grad_(), target=t, relu_attributions=True)
    cam_captum = LayerAttribution.interpolate(cam, (12, 12), interpolate_mode="bilinear")[:, 0]
    guided = _guided(model, x.clone(), t, SaliencyConfig(), None)
    gradcam = _gradcam(model, x.clone(), t, SaliencyConfig(), layer)
    assert guided.abs().max() > 0 and gradcam.abs().max() > 0
    torch.testing.assert_close(guided, guided_captum, rtol=0, atol=1e-12)
    torch.testing.assert_close(gradcam, cam_captum, rtol=0, atol=1e-12)
    # a frozen copy (probe's working copies): autograd records only from the layer on, same map;
    # and an in-place op after the layer sees a copy, as with captum (which keeps the layer's output)
    from probe.methods.saliency import layer_name
    frozen = copy.deepcopy(model).requires_grad_(False)
    cam_frozen = _gradcam(frozen, x.clone(), t, SaliencyConfig(), layer_name(model, layer))
    torch.testing.assert_close(cam_frozen, cam_captum, rtol=0, atol=1e-12)
    if which == "sequential":
        for net in (model, frozen):
            net[3].inplace = True
            torch.testing.assert_close(_gradcam(net, x.clone(), t, SaliencyConfig(), "2"), cam_captum, rtol=0, atol=1e-12)
            net[3].inplace = False
    # Guided differs from the plain gradient (negative gradients are cut at every ReLU).
    plain = x.clone().requires_grad_()
    grad, = torch.autograd.grad(model(plain).gather(1, t[:, None]).sum(), plain)
    assert not torch.allclose(grad.abs().amax(1), guided)
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert relus and all("forward" not in m.__dict__ for m in relus)
    with pytest.raises(RuntimeError):
        _guided(model, torch.rand(2, 3, 12, 12, dtype=torch.float64), t[:2], SaliencyConfig(), None)  # 3 channels
    assert all("forward" not in m.__dict__ for m in relus)
    torch.testing.assert_close(model(x), model(x.clone()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_public_api_on_a_plain_sequential_cnn(dtype, tmp_path):
    model = tiny_cnn(dtype).train()
    model[0].weight.grad = torch.ones_like(model[0].weight)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.rand(3, 1, 10, 10, dtype=dtype)
    r = saliency(model, x, None, methods="all", classes=["cat", "dog", "owl"], layer="2", config=FAST)
    assert isinstance(r, SaliencyResult) and r.methods == list(METHODS)
    assert all(v.shape == (3, 10, 10) and v.dtype == torch.float32 for v in r.maps.values())
    with torch.no_grad():
        assert r.targets == model.eval()(x).argmax(1).tolist()  # None: each image's prediction
    model.train()
    f = faithfulness(model, x, r.targets, r, layer="2")
    assert f.methods == list(METHODS) and set(f.curves) == {*METHODS, "random"}
    assert f.randomized.shape == (6, len(f.randomization["steps"]), 10, 10)
    both = r.with_faithfulness(f)
    figures = both.figures()
    assert list(figures) == ["saliency", "faithfulness", "randomization", "randomization-maps"]
    assert list(f.figures()) == ["faithfulness", "randomization", "randomization-maps"]
    # each map on its own scale, and a key for each kind of map shown: 0..top, −top..top
    keys = [ax for ax in figures["randomization-maps"].axes if ax.get_title() in ("maps ≥ 0", "signed maps")]
    assert sorted(ax.get_title() for ax in keys) == ["maps ≥ 0", "signed maps"]
    assert sorted([t.get_text() for t in ax.get_xticklabels()] for ax in keys) == [["0", "top"], ["−top", "0", "top"]]
    assert not overlapping_texts(figures["randomization-maps"])
    for stem, fig in figures.items():
        save_figure(fig, tmp_path, stem)
    assert both.summary()[0] == "3 images: " + ", ".join(m.title for m in METHODS.values())
    files = write_files(both, tmp_path)
    assert [p.name for p in files] == ["attributions.safetensors", "faithfulness.csv"]
    # The caller's model as it was: training mode, .grad, requires_grad, weights.
    assert model.training and torch.equal(model[0].weight.grad, torch.ones_like(model[0].weight))
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # The JSON and the arrays give the result back.
    # Maps of the caller's own: deletion and insertion, no randomization (no recipe to recompute them).
    own = faithfulness(model, x, r.targets, {"mine": torch.rand(3, 10, 10)})
    assert own.randomization is None and set(own.curves) == {"mine", "random"}
    assert list(own.figures()) == ["faithfulness"]
    again = SaliencyResult.from_json(json.loads(json.dumps(both.to_json())), both.arrays())
    assert json.dumps(again.faithfulness_result.randomization) == json.dumps(f.randomization)  # NaN too
    assert torch.equal(again.faithfulness_result.randomized, f.randomized)


def test_one_name_per_method_in_tables_legends_and_columns(monkeypatch):
    """A method is one registry entry: added there, it is computed, drawn, tabled and summed up
    under the registry's names, and the table, legend and column titles all come from it."""
    zero = Method("half", "Half the image", "Half", False, False, "the image's first channel halved", 7,
                  lambda model, x, t, config, layer: x[:, 0] / 2)
    monkeypatch.setitem(METHODS, "half", zero)
    model = tiny_cnn(torch.float32)
    x = torch.rand(2, 1, 8, 8)
    r = saliency(model, x, 1, methods="vanilla,half", config=FAST)
    torch.testing.assert_close(r.maps["half"], x[:, 0] / 2)
    r = r.with_faithfulness(faithfulness(model, x, 1, r))
    table = next(c for c in section(r).children if hasattr(c, "rows"))
    assert [row[0] for row in table.rows] == ["Gradient", "Half the image", "random order"]
    fig = r.figures()["faithfulness"]
    legend = [t.get_text().split(":")[0] for t in fig.legends[0].get_texts()]
    assert legend == ["Gradient", "Half the image", "random order"]
    columns = column_titles(r.figures()["saliency"])
    assert columns == ["image", "Gradient", "Half"]
    assert "Half the image" in r.summary()[0]


def _columns(fig) -> dict[str, list]:
    """A figure's maps by method (their column): the images labelled "map <method>"."""
    cols: dict[str, list] = {}
    for ax in fig.axes:
        for im in ax.images:
            if im.get_label().startswith("map "):
                cols.setdefault(im.get_label().removeprefix("map "), []).append(im)
    return cols


def column_titles(fig) -> list[str]:
    """The headings of a grid's columns, left to right."""
    texts = [t for ax in fig.axes for t in ax.texts if t.get_gid() == "column title"]
    return [t.get_text() for t in sorted(texts, key=lambda t: t.get_position()[0])]


def test_comparison_shares_one_colour_scale_per_method_across_the_models():
    model = tiny_cnn(torch.float32)
    louder = tiny_cnn(torch.float32)
    with torch.no_grad():
        louder[-1].weight.mul_(3)
        louder[-1].bias.mul_(3)  # the same network, every logit ×3: every gradient ×3
    x = torch.rand(2, 1, 8, 8)
    a = saliency(model, x, 1, methods="vanilla,ig", name="quiet", config=FAST)
    b = saliency(louder, x, 1, methods="vanilla,ig", name="loud", config=FAST)
    torch.testing.assert_close(b.maps["vanilla"], 3 * a.maps["vanilla"])
    own = [[im.get_clim() for col in _columns(r.figures()["saliency"]).values() for im in col][:1] for r in (a, b)]
    assert own[0] != own[1]  # each model alone: its own scale
    fig = comparison_figure([a, b])
    cols = list(_columns(fig).values())
    assert len(cols) == 2 and all(len(c) == 4 for c in cols)  # 2 images × 2 models per method
    for m, col in zip(("vanilla", "ig"), cols):
        clims = {im.get_clim() for im in col}
        assert len(clims) == 1, (m, clims)  # the same vmin/vmax for both models
        vmin, vmax, _ = scale_of(torch.cat([a.maps[m], b.maps[m]]), m == "ig")
        assert next(iter(clims)) == (pytest.approx(vmin), pytest.approx(vmax))
    labels = [t.get_text() for ax in fig.axes for t in ax.texts]  # the rows' labels
    assert any(t.startswith("#0\nquiet\n") for t in labels) and any(t.startswith("loud\n") for t in labels)
    part = comparison_section([a, b])
    assert part.title == "Side by side: what each model looks at" and part.children[1].stem == COMPARISON_STEM
    other = saliency(model, torch.rand(2, 1, 8, 8), 1, methods="vanilla", config=FAST)
    with pytest.raises(ConfigError, match="different images"):
        comparison_figure([a, other])


def test_three_models_side_by_side_take_pages_on_one_scale_and_no_text_runs_into_another():
    """Found in the demo report: three models × four images in one figure made maps of 0.45 in
    under column titles and colour-bar numbers that ran into each other. Now a page holds
    COMPARISON_ROWS rows, every page on the same colour scale per method."""
    x = torch.rand(4, 1, 12, 12)
    models = [tiny_classifier(MNIST, seed=s) for s in range(3)]
    results = [saliency(m, x, 1, methods=list(METHODS), name=f"model-{s}", config=FAST, overlay="auto")
               for s, m in enumerate(models)]
    assert comparison_pages(results) == [[0, 1], [2, 3]]
    assert comparison_stems(results) == [COMPARISON_STEM, COMPARISON_STEM + "-2"]
    pages = list(comparison_figures(results))
    assert len(pages) == 2
    # one scale per method on both pages: the maps drawn with a colour map (an overlay is RGBA), and
    # every colour bar's ends
    drawn = [m for m in METHODS if m not in overlaid(list(METHODS), "auto")]
    clims = [{m: {im.get_clim() for im in col} for m, col in _columns(fig).items() if m in drawn} for fig in pages]
    assert clims[0] == clims[1] and all(len(c) == 1 for c in clims[0].values()) and len(clims[0]) == len(drawn) >= 3
    bars = [[tuple(ax.get_xticks()) for ax in fig.axes if not ax.get_label().startswith("map ") and ax.get_xticks().size]
            for fig in pages]
    assert bars[0] == bars[1] and len(bars[0]) == len(METHODS)
    for p, fig in enumerate(pages):
        assert all(len(_columns(fig)[m]) == 2 * 3 for m in METHODS)  # 2 images × 3 models
        assert fig.get_size_inches()[0] > 6.0  # the full text width: maps of a readable size
        assert not overlapping_texts(fig)
        assert any(f"(page\u00a0{p + 1}\u00a0of\u00a02)" in t.get_text() for t in fig.texts)  # one line
    part = comparison_section(results)
    refs = [c for c in part.children if hasattr(c, "stem")]
    assert [r.stem for r in refs] == comparison_stems(results)
    assert "(images 1–2 of 4)" in refs[0].caption and "(images 3–4 of 4)" in refs[1].caption
    two = comparison_pages(results[:2])
    assert two == [[0, 1, 2, 3]]  # two models: all four images on one page, as before
    import matplotlib.pyplot as plt
    for fig in (*pages, comparison_figure(results[:2]), results[0].figures()["saliency"]):
        assert not overlapping_texts(fig)
        plt.close(fig)


def test_a_grid_of_many_rows_goes_on_pages_with_one_scale_and_readable_headings():
    """12 images of 7 columns: squeezed onto one page the headings and colour-bar ticks ran into one
    another; now 8 rows a page at the full width, the same colour scale on every page."""
    import matplotlib.pyplot as plt
    from probe.analysis.saliency import PAGE_ROWS, grid_pages, section
    model = tiny_classifier(MNIST)
    x = torch.rand(12, 1, 12, 12, generator=torch.Generator().manual_seed(3))
    r = saliency(model, x, 1, methods=list(METHODS), config=FAST, overlay="auto")
    assert grid_pages(r) == [list(range(PAGE_ROWS)), list(range(PAGE_ROWS, 12))]
    figs = r.figures()
    pages = [figs["saliency"], figs["saliency-2"]]
    drawn = [m for m in METHODS if m not in overlaid(list(METHODS), "auto")]
    clims = [{m: {im.get_clim() for im in col} for m, col in _columns(fig).items() if m in drawn} for fig in pages]
    assert clims[0] == clims[1] and all(len(c) == 1 for c in clims[0].values())
    for fig, rows in zip(pages, (PAGE_ROWS, 12 - PAGE_ROWS)):
        assert all(len(_columns(fig)[m]) == rows for m in METHODS)
        assert not overlapping_texts(fig)
        plt.close(fig)
    # the last page's maps as large as the first's (its fewer rows do not make them grow)
    sizes = [{round(float(abs(im.get_extent()[1] - im.get_extent()[0])), 6) for col in _columns(fig).values()
              for im in col} for fig in pages]
    assert sizes[0] == sizes[1] and len(sizes[0]) == 1
    refs = [c for c in section(r).children if getattr(c, "stem", "").startswith("saliency")]
    assert [ref.stem for ref in refs] == ["saliency", "saliency-2"]
    assert "(rows 9–12 of 12," in refs[1].caption and len(refs[1].data["rows"]) == 4


def test_the_randomization_keys_stay_inside_a_narrow_figure():
    """One cascade step and two methods: a figure of three columns still holds both colour keys."""
    import matplotlib.pyplot as plt
    from probe.figures.saliency import randomization_maps_figure
    g = torch.Generator().manual_seed(0)
    maps = {"vanilla": torch.rand(8, 8, generator=g), "ig": torch.randn(8, 8, generator=g)}
    fig = randomization_maps_figure(torch.rand(1, 8, 8, generator=g), maps,
                                    {m: v[None] for m, v in maps.items()}, ["fc"], title="t")
    keys = [ax for ax in fig.axes if ax.get_title() in ("maps ≥ 0", "signed maps")]
    assert len(keys) == 2 and all(0 <= ax.get_position().x0 < ax.get_position().x1 <= 1 for ax in keys)
    assert keys[0].get_position().x1 < keys[1].get_position().x0 and not overlapping_texts(fig)
    plt.close(fig)


def test_colour_bars_say_what_the_values_are_and_auto_overlays_the_coarse_maps():
    model = tiny_classifier(MNIST)
    x = torch.rand(2, 1, 12, 12)
    r = saliency(model, x, 1, methods="vanilla,ig,gradcam", config=FAST, overlay="auto")
    fig = r.figures()["saliency"]
    texts = [t.get_text() for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]
    words = " ".join(" ".join(texts).split())
    for unit in ("|gradient|", "attribution (signed)", "class activation"):  # then "×10⁻³" where long
        assert any(t == unit or t.startswith(unit + "\n×10") for t in texts), unit
    assert "99.5th percentile" in words and "Grad-CAM: drawn over the image" in words
    assert column_titles(fig) == ["image", "Gradient", "Integrated\nGradients", "Grad-CAM on\nthe image"]
    under = [im.get_label() for im in fig.axes[0].images if im.get_label().startswith("under ")]
    assert under == ["under map gradcam"] * 2  # Grad-CAM alone drawn over its image, in both rows
    assert "Grad-CAM drawn over the image" in section(r).children[0].text


def test_faithfulness_table_and_legend_show_the_same_numbers(monkeypatch):
    model = tiny_cnn(torch.float32)
    x = torch.rand(3, 1, 8, 8)
    r = saliency(model, x, 1, methods="vanilla,occlusion", config=FAST)
    r = r.with_faithfulness(faithfulness(model, x, 1, r))
    table = next(c for c in section(r).children if hasattr(c, "rows"))
    assert "images/s" not in table.columns and "ρ signed" in table.columns and "n" in table.columns
    legend = [t.get_text() for t in r.figures()["faithfulness"].legends[0].get_texts()]
    assert legend == [f"{row[0]}: {row[1]} / {row[2]}" for row in table.rows]
    by_method = {row[0]: row for row in table.rows}
    assert by_method["Gradient"][4] == "—" and by_method["Occlusion"][4] not in ("—", "")  # ≥ 0: no signed ρ
    assert all(row[5] == "3" for row in table.rows[:2]) and "— stands for ρ signed of a map ≥ 0" in table.caption
    assert any(line.startswith("method") and "img/s" in line for line in r.summary())  # timings: the terminal's


class ReusedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)
        self.act = nn.ReLU()  # used twice below
        self.fc = nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(self.act(self.conv2(self.act(self.conv1(x)))).mean((2, 3)))


class SeparateReLUs(ReusedReLU):
    """ReusedReLU with its own ReLU for each use: the same function."""

    def __init__(self):
        super().__init__()
        self.act2 = nn.ReLU()

    def forward(self, x):
        return self.fc(self.act2(self.conv2(self.act(self.conv1(x)))).mean((2, 3)))


def test_guided_backprop_is_right_on_in_place_and_reused_relus():
    """Guided Backprop's rule goes with each ReLU call: a ReLU module used twice, or built
    in-place, gives the map of the same network with a fresh ReLU per use, and no warning."""
    torch.manual_seed(1)
    reused, separate = ReusedReLU().double(), SeparateReLUs().double()
    separate.load_state_dict(reused.state_dict(), strict=False)
    x = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        a = attribute(reused, x, 1, methods="guided").maps["guided"]
        b = attribute(separate, x, 1, methods="guided").maps["guided"]
        faithfulness(reused, x, 1, {"guided": torch.rand(3, 5, 5)})  # the randomization check recomputes it
    assert a.abs().max() > 0
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    in_place = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten(), nn.Linear(48, 2)).double()
    fresh = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(48, 2)).double()
    fresh.load_state_dict(in_place.state_dict())
    y = torch.rand(2, 1, 4, 4, dtype=torch.float64)
    torch.testing.assert_close(attribute(in_place, y, 0, methods="guided").maps["guided"],
                               attribute(fresh, y, 0, methods="guided").maps["guided"], rtol=0, atol=1e-12)


def test_settings_are_checked_in_the_users_option_names():
    assert Settings(class_name="3", methods="ig, vanilla").methods == ("ig", "vanilla")
    assert Settings(index="3, 17,40").index == (3, 17, 40)
    for kwargs, message in [({"class_name": "3", "methods": "gradcan"}, "--method: unknown method 'gradcan'"),
                            ({"class_name": "3", "n": 0}, "--n 0"),
                            ({"class_name": "3", "scale": "row"}, "--scale 'row'"),
                            ({"class_name": "3", "batch_size": 0}, "--batch-size 0"),
                            ({"class_name": "3", "threads": 0}, "--threads 0"),
                            ({"index": "3,x"}, "--index 'x'"),
                            ({"index": "3", "images": ("a.png",)}, "not both"),
                            ({"index": "3", "selection": "wrong"}, "--wrong picks images of --class"),
                            ({"class_name": "3", "overlay": "some"}, "--overlay 'some'"),
                            ({"class_name": "3", "wrong_too": -1}, "wrong_too -1"),
                            ({"class_name": "3", "gradcam_layer": " "}, "--gradcam-layer"),
                            ({}, "which class")]:
        with pytest.raises(ConfigError, match=message):
            Settings(**kwargs)


# ---- user images --------------------------------------------------------------------------------

def png(arr: np.ndarray, path: Path, mode=None) -> Path:
    Image.fromarray(arr, mode).save(path)
    return path


def test_an_mnist_png_comes_back_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    digit = np.zeros((28, 28), np.uint8)
    digit[6:22, 12:16] = rng.integers(150, 256, (16, 4))
    u = load_user_images([png(digit, tmp_path / "d.png")], MNIST)
    assert u.images.shape == (1, 1, 28, 28) and u.images.dtype == torch.uint8
    assert np.array_equal(u.images[0, 0].numpy(), digit) and "as is" in u.notes[0]


def test_a_dark_on_light_scan_is_made_like_mnist(tmp_path):
    scan = np.full((300, 200), 235, np.uint8)  # grey paper
    scan[40:260, 20:60] = 20  # a thick dark stroke, off-centre
    u = load_user_images([png(scan, tmp_path / "scan.png")], MNIST)
    img = u.images[0, 0].float()
    assert "inverted" in u.notes[0]
    assert img[0].max() == 0 and img[:, 0].max() == 0  # black border: the paper is gone
    rows, cols = (img > 25).nonzero(as_tuple=True)
    assert rows.max() - rows.min() + 1 <= 20 and cols.max() - cols.min() + 1 <= 20  # the 20×20 box
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    com = ((yy * img).sum() / img.sum(), (xx * img).sum() / img.sum())
    assert abs(com[0] - 13.5) <= 1 and abs(com[1] - 13.5) <= 1  # centred by mass


def test_a_photo_is_cropped_to_the_aspect_and_resized(tmp_path):
    from probe.data.spec import SFDDD
    photo = np.zeros((400, 400, 3), np.uint8)
    photo[:, :, 0] = 200  # red square photo; the centre 4:3 crop drops rows
    photo[:50, :, 2] = 255  # a blue band at the top: cropped away
    buf = io.BytesIO()
    Image.fromarray(photo).save(buf, "JPEG", quality=95)
    (tmp_path / "p.jpg").write_bytes(buf.getvalue())
    u = load_user_images([tmp_path / "p.jpg"], SFDDD)
    assert u.images.shape == (1, 3, 48, 64)
    assert u.images[0, 2].float().mean() < 20 and u.images[0, 0].float().mean() > 180
    assert "400×400" in u.notes[0]


def test_not_an_image_is_a_data_error(tmp_path):
    (tmp_path / "x.png").write_text("not an image")
    with pytest.raises(DataError, match="x.png"):
        load_user_images([tmp_path / "x.png"], MNIST)
    with pytest.raises(DataError, match="cannot be read"):
        load_user_images([tmp_path / "missing.png"], MNIST)


# ---- the command ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from test_model_folder import write_tiny_model
    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny")


def predictions(model_dir, data_dir, split="val"):
    from probe.models.folder import load_model_folder
    from probe.methods.common import class_probabilities
    net, folder = load_model_folder(model_dir)
    data = folder.load_split(split, data_dir)
    return data, class_probabilities(net, data.images).argmax(1)


def fails(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    return err


def test_cli_error_cases(tiny_model, mnist_dir, tmp_path, capsys):
    base = ["saliency", "--model", str(tiny_model), "--data-dir", str(mnist_dir), "--out", str(tmp_path / "o")]
    err = fails(capsys, *base, "--class", "thre")
    assert "unknown class 'thre'" in err and "0, 1, 2" in err
    err = fails(capsys, "saliency", "--model", str(tiny_model), "--class", "seven")
    assert "use one of" in err
    err = fails(capsys, *base, "--class", "3", "--method", "smoothgard")
    assert "unknown method 'smoothgard'" in err and "did you mean 'smoothgrad'" in err
    assert "--n 0" in fails(capsys, *base, "--class", "3", "--n", "0")
    assert "which class" in fails(capsys, *base)
    assert "--wrong or --any" in fails(capsys, *base, "--class", "3", "--wrong", "--any")
    assert "0..19" in fails(capsys, *base, "--index", "99")
    data, pred = predictions(tiny_model, mnist_dir)
    hopeless = next(k for k in range(10) if not ((data.labels == k) & (pred == k)).any() and (data.labels == k).any())
    done = runner.invoke(app, [*base, "--class", str(hopeless), "--method", "vanilla", "--no-faithfulness"])
    assert done.exit_code == 0 and f"No val image of class {hopeless} is classified correctly" in done.output


class AlwaysZero(nn.Module):
    """Looks at the image, but a fixed bias makes class 0 win every time: every image of another
    class is misclassified (a barely trained model's hopeless class)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.fc = nn.Linear(2, 10)
        with torch.no_grad():
            self.fc.bias.copy_(torch.tensor([50.0] + [0.0] * 9))

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).mean((2, 3)))


def test_a_class_the_model_always_gets_wrong_is_shown_marked(tiny_model, mnist_dir):
    """`probe saliency --class k` where no image of k is classified correctly: its images anyway,
    marked, one line saying so; and the report's misclassified images (wrong_too), each for the
    true class and the prediction, in the same run."""
    from probe.analysis.base import Context
    from probe.models.folder import read_model_folder
    ctx = Context.of(AlwaysZero(), folder=read_model_folder(tiny_model), data_dir=mnist_dir)
    labels = ctx.split("val").labels
    k = max((k for k in range(1, 10)), key=lambda c: int((labels == c).sum()))
    n = min(2, int((labels == k).sum()))
    r = run(ctx, Settings(class_name=str(k), n=2, methods="vanilla", faithfulness=False, wrong_too=2))
    assert len(r.rows) == n and all(row["label"] == str(k) and row["predicted"] == "0" for row in r.rows)
    assert r.note.startswith(f"No val image of class {k} is classified correctly (0 of {int((labels == k).sum())})")
    assert r.note in r.summary() and r.description == f"the first {n} (all misclassified) val images of class {k}"
    assert all(label.endswith("\n✗ said 0") for label in row_labels(r))
    assert r.note in [c.text for c in section(r).children if hasattr(c, "text")]
    wrong = r.wrong_result  # the first 2 misclassified images of the split, any class
    assert [row["role"] for row in wrong.rows] == ["true", "predicted"] * 2
    assert wrong.rows[0]["index"] == wrong.rows[1]["index"] and wrong.rows[1]["target"] == "0" != wrong.rows[0]["target"]
    assert list(r.figures()) == ["saliency", "saliency-wrong"]
    assert [c.stem for c in section(r).children if hasattr(c, "stem")] == ["saliency", "saliency-wrong"]
    again = SaliencyResult.from_json(json.loads(json.dumps(r.to_json())), r.arrays())
    assert torch.equal(again.wrong_result.maps["vanilla"], wrong.maps["vanilla"])


def test_closest_match_for_a_misspelt_sfddd_class():
    from probe.data.spec import SFDDD
    assert class_index(SFDDD, "c2") == class_index(SFDDD, "phone_right") == class_index(SFDDD, "2") == 2
    with pytest.raises(ConfigError, match=r"closest match: phone_right"):
        class_index(SFDDD, "phone_rigth")


def test_cli_writes_the_figures_maps_and_results(tiny_model, mnist_dir, tmp_path):
    data, pred = predictions(tiny_model, mnist_dir)
    k = int(pred[0])  # a class with at least one correctly classified val image
    out = tmp_path / "sal"
    result = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--data-dir", str(mnist_dir),
                                 "--class", str(k), "--n", "2", "--method", "vanilla,ig,gradcam",
                                 "--out", str(out), "--any"])
    assert result.exit_code == 0, result.output
    for stem in ("saliency", "faithfulness", "randomization", "randomization-maps"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").stat().st_size > 0
    doc = json.loads((out / "results.json").read_text())
    rows = doc["results"]["rows"]
    maps = load_file(out / "attributions.safetensors")
    assert set(maps) == {"vanilla", "ig", "gradcam"}
    assert all(v.shape == (len(rows), 28, 28) and v.dtype == torch.float32 for v in maps.values())
    assert [r["index"] for r in rows] == (data.labels == k).nonzero().flatten()[:2].tolist()
    assert all(r["target"] == str(k) for r in rows) and "ig_delta" in rows[0]
    s, r = doc["settings"], doc["results"]
    assert r["config"]["saliency"]["ig_steps"] == 32 and r["config"]["saliency"]["smoothgrad_samples"] == 25
    faithful = r["faithfulness"]
    assert faithful["config"]["deletion_insertion"]["steps"] == 20 and s["n"] == 2 and s["selection"] == "any"
    assert set(faithful["curves"]) == {"vanilla", "ig", "gradcam", "random"}
    assert faithful["randomization"]["steps"] == ["fc", "stage3", "stage2", "stage1", "stem"]
    assert doc["data"]["split"] == "val" and doc["data"]["n"] == len(data)
    # The result read back draws the same figures.
    again = read_outputs(ANALYSIS, out)
    assert isinstance(again, SaliencyResult) and torch.equal(again.maps["ig"], maps["ig"])
    assert list(again.figures()) == ["saliency", "faithfulness", "randomization", "randomization-maps"]
    table = (out / "faithfulness.csv").read_text().splitlines()
    assert table[0].startswith("method,deletion_auc,insertion_auc") and len(table) == 5
    assert doc["model"]["weights_sha256"] and doc["figures"]


def test_cli_wrong_images_get_two_rows(tiny_model, mnist_dir, tmp_path):
    data, pred = predictions(tiny_model, mnist_dir)
    k = next(k for k in range(10) if ((data.labels == k) & (pred != k)).any())
    out = tmp_path / "w"
    result = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--data-dir", str(mnist_dir),
                                 "--class", str(k), "--n", "1", "--wrong", "--method", "vanilla",
                                 "--no-faithfulness", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "results.json").read_text())["results"]["rows"]
    assert [r["role"] for r in rows] == ["true", "predicted"] and rows[0]["index"] == rows[1]["index"]
    assert rows[0]["target"] == str(k) and rows[1]["target"] == rows[1]["predicted"] != str(k)
    assert not (out / "faithfulness.png").exists()
    assert load_file(out / "attributions.safetensors")["vanilla"].shape == (2, 28, 28)


def test_cli_user_images_and_predict(tiny_model, tmp_path):
    digit = np.zeros((28, 28), np.uint8)
    digit[5:23, 13:16] = 255
    a = png(digit, tmp_path / "a.png")
    b = png(255 - np.kron(digit, np.ones((4, 4), np.uint8)), tmp_path / "b.png")  # a dark-on-light scan
    out = tmp_path / "u"
    result = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--image", str(a), str(b),
                                 "--method", "vanilla,occlusion", "--scale", "image", "--overlay", "all",
                                 "--no-faithfulness", "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "results.json").read_text())
    rows = doc["results"]["rows"]
    assert [Path(r["file"]).name for r in rows] == ["a.png", "b.png"]
    assert all(r["target"] == r["predicted"] for r in rows)  # the prediction is the default target
    assert "inverted" in rows[1]["note"] and doc["results"]["selection"] == "files"
    assert doc["data"]["source"] == "files" and len(doc["data"]["files"]) == 2
    pr = runner.invoke(app, ["predict", "--model", str(tiny_model), "--image", str(a), str(b)])
    assert pr.exit_code == 0, pr.output
    lines = pr.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(str(a)) and len(lines[0].split("  ")) >= 3
    for option in (["-o", "x.csv"], ["--split", "val"], ["--format", "kaggle"]):  # a split's CSV: not for files
        ignored = runner.invoke(app, ["predict", "--model", str(tiny_model), "--image", str(a), *option])
        assert ignored.exit_code == 2 and "with --image each file's top classes are printed" in ignored.output
    bad = runner.invoke(app, ["saliency", "--model", str(tiny_model), str(a)])
    assert bad.exit_code == 2 and "after --image" in bad.output


def test_image_folders_expand_in_name_order_and_a_missing_path_is_an_error(tmp_path):
    from probe.data.user_images import expand_image_paths
    from probe.errors import DataError
    for name in ("scan_10.png", "scan_2.PNG", "Scan_1.jpg", "notes.txt", "one.png"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deeper.png").write_bytes(b"")
    one = tmp_path / "one.png"
    assert [Path(p).name for p in expand_image_paths([tmp_path])] == ["one.png", "Scan_1.jpg", "scan_2.PNG",
                                                                      "scan_10.png"]
    assert expand_image_paths([one, tmp_path / "sub"]) == (str(one), str(tmp_path / "sub" / "deeper.png"))
    with pytest.raises(DataError, match=r"--image .*typo.png: no such file or folder"):
        expand_image_paths([one, tmp_path / "typo.png"])


def test_a_second_run_with_fewer_pages_leaves_no_page_of_the_first(tiny_model, mnist_dir, tmp_path):
    out = tmp_path / "s"
    common = ["saliency", "--model", str(tiny_model), "--data-dir", str(mnist_dir), "--method", "vanilla",
              "--no-faithfulness", "--out", str(out)]
    first = runner.invoke(app, [*common, "--index", "0,1,2,3,4,5,6,7,8"])  # 9 rows: two pages
    assert first.exit_code == 0, first.output
    assert {p.name for p in out.glob("saliency*")} == {"saliency.png", "saliency.pdf", "saliency-2.png",
                                                      "saliency-2.pdf"}
    (out / "mine.png").write_bytes(b"a file of the user's: never removed")
    result = runner.invoke(app, [*common, "--index", "0,1"])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.glob("saliency*")} == {"saliency.png", "saliency.pdf"}
    assert (out / "mine.png").is_file()
    assert json.loads((out / "results.json").read_text())["figures"] == ["saliency.pdf", "saliency.png"]


def test_cli_a_folder_of_images_with_a_corrupt_file(tiny_model, tmp_path):
    """--image folder: every picture in it, by name; a file that cannot be read is skipped and
    said, not the end of the batch; long names that differ at the end stay told apart."""
    digit = np.zeros((28, 28), np.uint8)
    digit[5:23, 13:16] = 255
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in (1, 2):
        png(np.roll(digit, k, axis=1), scans / f"handwritten-digit-scan-{k}.png")
    (scans / "broken.png").write_bytes(b"not a png")
    (scans / "notes.txt").write_text("not an image")  # not an image suffix: not taken
    out = tmp_path / "f"
    result = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--image", str(scans), "--method", "vanilla",
                                 "--no-faithfulness", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "skipped 1 file that could not be read: " in result.output and "broken.png" in result.output
    doc = json.loads((out / "results.json").read_text())
    assert [Path(r["file"]).name for r in doc["results"]["rows"]] == [f"handwritten-digit-scan-{k}.png" for k in (1, 2)]
    from probe.analysis.runner import read_outputs
    from probe.analysis.saliency import ANALYSIS, row_labels
    labels = [lab.split("\n")[0] for lab in row_labels(read_outputs(ANALYSIS, out))]
    assert len(set(labels)) == 2 and all(lab.endswith(f"{k}.png") for lab, k in zip(labels, (1, 2))), labels
    pr = runner.invoke(app, ["predict", "--model", str(tiny_model), "--image", str(scans)])
    assert pr.exit_code == 0 and pr.output.count("\n") == 3, pr.output
    assert re.search(r"broken\.png +skipped: not an image that can be read", pr.output), pr.output
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--image", str(empty)])
    assert bad.exit_code == 2 and f"--image {empty}: a folder with no image files" in bad.output
    only_broken = runner.invoke(app, ["saliency", "--model", str(tiny_model), "--image", str(scans / "broken.png"),
                                      "--method", "vanilla", "--out", str(out)])
    assert only_broken.exit_code == 2 and "not an image that can be read" in only_broken.output


SFDDD_HUES = [(220, 40, 40), (40, 200, 40), (40, 40, 220), (220, 220, 40), (220, 40, 220),
              (40, 220, 220), (240, 240, 240), (20, 20, 20), (240, 140, 20), (120, 60, 200)]


def colour_the_classes(folder: Path) -> None:
    """Rewrite the fixture's JPEGs (same names and sizes) as one colour per class, with noise, so
    a tiny model learns the classes in a few epochs."""
    rng = np.random.default_rng(0)
    for c in range(10):
        for path in sorted((folder / "imgs" / "train" / f"c{c}").glob("*.jpg")):
            w, h = Image.open(path).size
            img = np.clip(np.array(SFDDD_HUES[c]) + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(path, "JPEG", quality=90)


def test_sfddd_phone_right_with_no_other_option(sfddd_dir, tmp_path, monkeypatch):
    """A tiny model trained on the SFDDD fixture; `probe saliency --class phone_right` in a folder
    whose trained_models/ holds it: maps on the 32×32 centre crop, the 64×48 frame shown."""
    from probe.train.config import TrainConfig
    from probe.train.run import train
    colour_the_classes(sfddd_dir)
    monkeypatch.setenv("PROBE_DATA_DIR", str(sfddd_dir.parent))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    config = TrainConfig(dataset="sfddd", arch="resnet8", width=0.25, epochs=12, batch_size=16, lr=0.05,
                         schedule="cosine", eval_batch_size=100, device="cpu")
    meta = train(config, Path("trained_models") / "sfddd-tiny")
    assert meta["metrics"]["val"]["error"] < 0.5, meta["metrics"]
    result = runner.invoke(app, ["saliency", "--class", "phone_right"])
    assert result.exit_code == 0, result.output
    out = work / "reports" / "sfddd-tiny" / "saliency"
    assert (out / "saliency.png").is_file() and (out / "saliency.pdf").is_file()
    doc = json.loads((out / "results.json").read_text())
    assert doc["results"]["class_name"] == "phone_right" and doc["settings"]["split"] == "val"
    maps = load_file(out / "attributions.safetensors")
    assert set(maps) == set(METHODS) and all(v.shape[1:] == (32, 32) for v in maps.values())
    assert all(r["label"] == r["target"] == r["predicted"] == "phone_right" for r in doc["results"]["rows"])
    with Image.open(out / "saliency.png") as im:  # a row per image, a column per method: wider than tall
        assert im.width > im.height * 0.5 and im.width >= 6 * 200


def test_speed_benchmark_runs_and_the_maps_agree(tiny_model, tmp_path, capsys):
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import saliency_speed
    doc = saliency_speed.main(["--repeats", "1", "--n", "2", "--methods", "vanilla,occlusion", "--model", str(tiny_model),
                               "--data-dir", str(tmp_path / "none"), "--json", str(tmp_path / "s.json")])
    assert "random images" in doc["images"] and [r["method"] for r in doc["rows"]] == ["vanilla", "occlusion"]
    assert all(r["max_rel_diff"] < 1e-4 for r in doc["rows"])  # probe and captum compute the same maps
    assert json.loads((tmp_path / "s.json").read_text())["n"] == 2
    assert "| occlusion |" in capsys.readouterr().out
