"""Occlusion's windowed passes (probe.models.windowed): every window's logits computed on the
changed region only must be the logits of the occluded images themselves, and the maps captum's."""
import pytest
import torch
from torch import nn

from test_saliency import tiny_classifier

from probe.analysis.saliency import saliency
from probe.data.spec import CIFAR10, MNIST
from probe.errors import ConfigError
from probe.methods.saliency import SaliencyConfig, _occlusion
from probe.models import fused
from probe.models.classifier import Classifier
from probe.models.inference import inference_copy
from probe.models.resnet import PostActBlock, ResNet, get_config
from probe.models.windowed import WindowGrid, _plan, occluded_logits


def folded(arch="resnet14", spec=MNIST, size=20, seed=0, dtype=torch.float32, **options) -> Classifier:
    """A probe ResNet with random BatchNorm statistics (the maps of an untrained net are flat),
    as every analysis computes on it: its inference copy."""
    return inference_copy(tiny_classifier(spec, size, seed, arch=arch, width=0.5, **options).to(dtype))


def occluded_images(x: torch.Tensor, grid: WindowGrid, value: float) -> torch.Tensor:
    """(N, rows, cols, C, H, W): every image with every window of the grid set to value, written out."""
    out = x[:, None, None].repeat(1, grid.rows, grid.cols, 1, 1, 1)
    for i in range(grid.rows):
        for j in range(grid.cols):
            top, left = i * grid.stride, j * grid.stride
            out[:, i, j, :, top:top + grid.window, left:left + grid.window] = value
    return out


def logits_of_occluded_images(model, x, grid, value) -> torch.Tensor:
    images = occluded_images(x, grid, value)
    with torch.no_grad():
        return model(images.flatten(0, 2).contiguous(memory_format=torch.channels_last)).view(
            *images.shape[:3], -1)


CASES = {  # model options, image side, window, stride, fill value, batch size
    "post-activation, shortcut A": (dict(arch="resnet14"), 20, 3, 2, 0.0, 256),
    "shortcut B": (dict(arch="resnet14", shortcut="B"), 20, 3, 2, 0.0, 256),
    "the plain twin": (dict(arch="resnet14", shortcut="none"), 20, 3, 2, 0.0, 256),
    "three channels, grey fill": (dict(arch="resnet14", spec=CIFAR10), 20, 3, 2, 0.5, 256),
    "windows cut at the edge": (dict(arch="resnet14"), 21, 4, 3, 0.0, 256),
    "chunks, the last one a single row": (dict(arch="resnet14"), 20, 3, 2, 1.0, 3 * 9 + 1),
    "one window per chunk row, stride = window": (dict(arch="resnet14"), 20, 2, 2, 0.0, 1),
    "float64 (no oneDNN kernels)": (dict(arch="resnet14", dtype=torch.float64), 20, 3, 2, 0.0, 256),
    "pre-activation, shortcut A": (dict(arch="preact_resnet14"), 20, 3, 2, 0.0, 256),
    "pre-activation, shortcut B, edge windows": (dict(arch="preact_resnet14", shortcut="B"), 21, 4, 3, 0.3, 256),
    "pre-activation plain twin": (dict(arch="preact_resnet14", shortcut="none", spec=CIFAR10), 20, 3, 2, 0.0, 25),
}


@pytest.mark.parametrize("case", CASES)
def test_each_window_s_logits_are_those_of_the_occluded_image(case):
    options, size, window, stride, value, batch = CASES[case]
    model = folded(size=size, **options)
    dtype = options.get("dtype", torch.float32)
    channels = 3 if options.get("spec") is CIFAR10 else 1
    x = torch.rand(3, channels, size, size, dtype=dtype)
    grid = WindowGrid(size, size, window, stride)
    assert len(_plan(model, grid)[2]) >= 1  # at least one block ran on the regions
    ours = occluded_logits(model, x, grid, value, batch)
    expected = logits_of_occluded_images(model, x, grid, value)
    assert ours.shape == expected.shape == (3, grid.rows, grid.cols, 10)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(ours, expected, rtol=0, atol=tol * expected.abs().max().item())
    assert (ours.std(dim=(1, 2)) > 1e-3).all()  # the windows do change the logits


def test_with_the_separate_ops_the_same():
    model, grid = folded(), WindowGrid(20, 20, 3, 2)
    x = torch.rand(2, 1, 20, 20)
    with fused.disabled():
        plain = occluded_logits(model, x, grid, 0.0, 256)
    torch.testing.assert_close(plain, occluded_logits(model, x, grid, 0.0, 256), rtol=0, atol=1e-5)


def test_the_regions_stop_before_they_would_cover_half_the_image():
    """After the stem a window's region is 2 pixels wider, and each basic block adds 4. A 4-pixel
    window on a 28×28 digit: 6, 10, 14, 18 (41% of the image) after the first stage's three blocks;
    a 3-pixel one on 20×20: 5, 9, 13, then 17 would be 72%. On 12×12 not one block would fit: the
    stem alone does not pay, and the occluded images are computed as they are."""
    model = folded("resnet20")  # three blocks a stage
    assert len(_plan(model, WindowGrid(28, 28, 4, 2))[2]) == 3
    assert len(_plan(model, WindowGrid(20, 20, 3, 2))[2]) == 2
    assert len(_plan(model, WindowGrid(16, 16, 3, 2))[2]) == 1
    assert _plan(model, WindowGrid(12, 12, 3, 2)) is None
    # a stem of its own width: the first block projects its shortcut
    assert _plan(folded("resnet14", stem_filters=4, shortcut="B"), WindowGrid(20, 20, 3, 2)) is None


def test_no_pass_is_larger_than_the_batch_size(monkeypatch):
    """A 40×40 image, windows of 2 at stride 1: 39 a row. With batch_size 8 a row goes in pieces."""
    model, grid = folded(size=40), WindowGrid(40, 40, 2, 1)
    sizes = []
    real = ResNet.forward_from
    monkeypatch.setattr(ResNet, "forward_from", lambda self, x, block: sizes.append(len(x)) or real(self, x, block))
    x = torch.rand(1, 1, 40, 40)
    ours = occluded_logits(model, x, grid, 0.0, 8)
    assert max(sizes) == 8 and sum(sizes) == 39 * 39
    torch.testing.assert_close(ours, logits_of_occluded_images(model, x, grid, 0.0), rtol=0, atol=2e-5)


class OwnShortcut(nn.Identity):
    def forward(self, x):
        return 2 * x


class OwnBlock(PostActBlock):
    def forward(self, x):
        return super().forward(x) + 1


def test_subclasses_and_extra_modules_are_left_to_the_occluded_images():
    """Only probe's own types run on regions: a subclass's forward may compute anything."""
    grid = WindowGrid(20, 20, 3, 2)
    model = folded()
    model.net.stages.stage1[1].shortcut = OwnShortcut()
    assert _plan(model, grid)[2] == [model.net.stages.stage1[0]]  # the regions stop before the block
    model.net.stages.stage1[0].__class__ = OwnBlock
    assert _plan(model, grid) is None
    wrapped = folded()
    wrapped.__class__ = type("Scaled", (Classifier,), {"forward": lambda self, x: Classifier.forward(self, x) / 10})
    assert _plan(wrapped, grid) is None
    extra = folded()
    extra.net.stem.add_module("clip", nn.Hardtanh(0, 0.5))  # a module the stem's fused path would skip
    assert _plan(extra, grid) is None and not extra.net._stem_fusable()
    x = torch.rand(64, 1, 20, 20)
    with torch.no_grad():
        clipped = extra(x)
        with fused.disabled():
            torch.testing.assert_close(clipped, extra(x), rtol=0, atol=0)


def test_nan_and_inf_are_left_to_the_occluded_images():
    """oneDNN's fused ReLU turns NaN into 0: images that are not finite take the plain path, and
    the maps are NaN where captum's are."""
    model, grid = folded(), WindowGrid(20, 20, 3, 2)
    x = torch.rand(2, 1, 20, 20)
    x[1, 0, 4, 4] = float("nan")
    assert occluded_logits(model, x, grid, 0.0, 256) is None
    assert occluded_logits(model, x[:1], grid, float("inf"), 256) is None
    maps = _occlusion(model, x, torch.tensor([0, 0]), SaliencyConfig(occlusion_window=3, occlusion_stride=2), None)
    assert torch.isfinite(maps[0]).all() and torch.isnan(maps[1]).any()


def test_other_models_are_left_to_the_occluded_images():
    grid = WindowGrid(20, 20, 3, 2)
    torch.manual_seed(0)
    unfolded = Classifier.from_spec(ResNet(get_config("resnet14", width=0.5)), MNIST).eval()
    assert _plan(unfolded, grid) is None  # BatchNorm not folded: not an inference copy
    hooked = folded()
    calls = []
    hooked.net.stages.stage1[0].relu1.register_forward_hook(lambda *a: calls.append(1))
    assert _plan(hooked, grid) is None
    assert _plan(nn.Sequential(nn.Flatten(), nn.Linear(400, 10)), grid) is None


@pytest.mark.parametrize("config", [SaliencyConfig(), SaliencyConfig(occlusion_window=4, occlusion_stride=3,
                                                                     occlusion_value=0.3, batch_size=20)])
def test_the_maps_are_captums(config):
    from captum.attr import Occlusion
    model = folded(size=21)
    x, t = torch.rand(4, 1, 21, 21), torch.tensor([0, 3, 3, 9])
    window, stride = config.occlusion_shape(21, 21)
    assert _plan(model, WindowGrid(21, 21, window, stride)) is not None
    ours = _occlusion(model, x, t, config, None)
    with torch.no_grad():
        theirs = Occlusion(model).attribute(x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
                                            baselines=config.occlusion_value, target=t).mean(1)
    assert ours.shape == (4, 21, 21) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * theirs.abs().max().item())


def test_spread_averages_the_windows_over_each_pixel():
    """Two windows of 2 at stride 1 on a 1×3 row... in 2-D: a 3×3 image, windows 2×2 at stride 1:
    the centre pixel is under all four windows, a corner under one, an edge's middle under two."""
    grid = WindowGrid(3, 3, 2, 1)
    drops = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out = grid.spread(drops)[0]
    assert out[0, 0] == 1 and out[0, 2] == 2 and out[2, 0] == 3 and out[2, 2] == 4
    assert out[1, 1] == 2.5 and out[0, 1] == 1.5 and out[1, 0] == 2 and out[1, 2] == 3


def test_a_stride_wider_than_the_window_is_refused():
    with pytest.raises(ConfigError, match="occlusion_stride 5 is larger than the 4-pixel window"):
        SaliencyConfig(occlusion_window=4, occlusion_stride=5).occlusion_shape(28, 28)
    model = folded(size=20)
    with pytest.raises(ConfigError, match="larger than the"):
        saliency(model, torch.rand(1, 1, 20, 20), 0, methods="occlusion",
                 config=SaliencyConfig(occlusion_window=3, occlusion_stride=4))
