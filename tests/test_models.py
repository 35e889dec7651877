"""The ResNet family: sizes from the paper, shapes, the plain twin, gradients, captum safety."""
import copy
import dataclasses
import inspect
import itertools
import json

import pytest
import torch
from torch import nn

from probe.data.spec import MNIST
from probe.errors import ConfigError
from probe.models import (Classifier, Normalize, ResNet, ResNetConfig, ShortcutA, build,
                          build_model, count_macs, count_parameters, get_config, list_presets,
                          zoo_table)
from probe.models import classifier as classifier_module
from probe.models import fused
from probe.models import resnet as resnet_module

COMBOS = list(itertools.product(("basic", "bottleneck"), (False, True), ("A", "B", "none")))


def small(block, preact, shortcut, **kw):
    """The smallest net of each kind: resnet8 / resnet11_bottleneck."""
    name = "resnet11_bottleneck" if block == "bottleneck" else "resnet8"
    return build_model(name, preact=preact, shortcut=shortcut, **kw)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# ---- sizes -----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch, params", [("resnet20", 269_722), ("resnet32", 464_154),
                                          ("resnet44", 658_586), ("resnet56", 853_018),
                                          ("resnet110", 1_727_962)])
def test_parameter_counts_match_the_paper(arch, params):
    assert count_parameters(build_model(arch)) == params


def test_twins_have_the_same_parameters():
    # A is parameter-free and pre-activation moves the stem's BN to the end: same counts.
    assert count_parameters(build_model("plain20")) == 269_722
    assert count_parameters(build_model("preact_resnet20")) == 269_722


def test_option_b_adds_exactly_the_projections():
    # Two shape changes (16→32, 32→64): each a 1×1 conv and a BN (gamma, beta).
    extra = (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert count_parameters(build_model("resnet20", shortcut="B")) == 269_722 + extra
    b = build_model("resnet20", shortcut="B")
    projections = [blk.shortcut for blk in b.blocks() if not isinstance(blk.shortcut, nn.Identity)]
    assert [p.conv.kernel_size for p in projections] == [(1, 1), (1, 1)]


def test_depth_is_counted_from_the_config():
    assert get_config("resnet110").depth == 110
    assert get_config("preact_resnet164_bottleneck").depth == 164
    assert get_config("resnet14").stages == (2, 2, 2)
    assert get_config("plain8").shortcut == "none"
    assert get_config("resnet29_bottleneck").stages == (3, 3, 3)


# ---- names -----------------------------------------------------------------------------------

def test_presets_are_listed_and_build():
    names = list_presets()
    for n in ("resnet20", "resnet1202", "preact_resnet110", "plain110", "resnet164_bottleneck"):
        assert n in names
    assert get_config("ResNet-20") == get_config("resnet20")


@pytest.mark.parametrize("bad", ["resnet21", "vgg16", "resnet21_bottleneck", "plain0", ""])
def test_unknown_names_say_what_is_known(bad):
    with pytest.raises(ConfigError, match="resnet20|6n\\+2|9n\\+2"):
        build_model(bad)


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError):
        build_model("resnet20", shortcut="C")
    with pytest.raises(ConfigError):
        build_model("resnet20", no_such_option=1)
    with pytest.raises(ConfigError):
        ResNetConfig(stages=(3, 3), filters=(16, 32, 64, 128))
    with pytest.raises(ConfigError):
        build_model("plain20", zero_init_residual=True)
    with pytest.raises(ConfigError):  # A cannot shrink channels
        build(stages=(1, 1), filters=(32, 16))


def test_config_round_trips_through_json():
    cfg = get_config("preact_resnet56", width=0.5, in_channels=1, shortcut="B")
    back = ResNetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(cfg))))
    assert back == cfg
    with pytest.raises(ConfigError):
        ResNetConfig.from_dict({**cfg.to_dict(), "colour": "red"})


def test_seed_style_filters_name_the_stem_first():
    m = build(stages=(1, 1, 1), filters=(64, 128, 256, 512), stem="imagenet")
    assert m.config.stem_filters == 64 and m.config.filters == (128, 256, 512)
    assert m.stem.conv.out_channels == 64 and m.fc.in_features == 512
    assert m(torch.rand(2, 3, 64, 64)).shape == (2, 10)
    # 64 → 7×7/2 → 32 → max-pool/2 → 16 → stage strides 1, 2, 2 → 4
    feats = m.stages(m.stem(torch.rand(1, 3, 64, 64)))
    assert feats.shape == (1, 512, 4, 4)


# ---- shapes and behaviour --------------------------------------------------------------------

@pytest.mark.parametrize("block, preact, shortcut", COMBOS)
def test_output_shapes(block, preact, shortcut):
    mnist = small(block, preact, shortcut, in_channels=1, width=0.5)
    assert mnist(torch.rand(2, 1, 28, 28)).shape == (2, 10)
    cifar = small(block, preact, shortcut)
    assert cifar(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_width_scales_every_filter():
    m = build_model("resnet8", width=0.5, in_channels=1)
    assert m.stem.conv.out_channels == 8
    assert [s[0].conv2.out_channels for s in m.stages] == [8, 16, 32]


def test_bottleneck_is_1x1_3x3_1x1_with_a_quarter_inside():
    # The paper's code strides the first 1×1 (the default); torchvision's v1.5 the 3×3.
    b = build_model("resnet11_bottleneck").stages.stage2[0]
    assert [(c.kernel_size, c.out_channels, c.stride) for c in (b.conv1, b.conv2, b.conv3)] == [
        ((1, 1), 32, (2, 2)), ((3, 3), 32, (1, 1)), ((1, 1), 128, (1, 1))]
    v15 = build_model("resnet11_bottleneck", bottleneck_stride="3x3").stages.stage2[0]
    assert [(c.kernel_size, c.out_channels, c.stride) for c in (v15.conv1, v15.conv2, v15.conv3)] == [
        ((1, 1), 32, (1, 1)), ((3, 3), 32, (2, 2)), ((1, 1), 128, (1, 1))]
    assert b.eval()(torch.rand(2, 64, 16, 16)).shape == v15.eval()(torch.rand(2, 64, 16, 16)).shape == (2, 128, 8, 8)
    assert count_parameters(b) == count_parameters(v15)


def test_plain_twin_has_no_shortcuts():
    plain = build_model("plain8")
    assert all(b.shortcut is None for b in plain.blocks())
    assert not any(isinstance(m, (ShortcutA, nn.Identity)) for m in plain.stages.modules())


def test_zero_init_residual_makes_each_block_its_shortcut():
    """With the last BN gamma of every branch zeroed, a post-activation option-A block is
    relu(shortcut(x)) = shortcut(x) (x is already ≥ 0): the stages only subsample and pad.
    The plain twin with the very same weights has no such path and answers differently."""
    res = build_model("resnet8", zero_init_residual=True).eval()
    for b in res.blocks():
        assert torch.all(b.last_bn().weight == 0)
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        h = res.stem(x)  # (3, 16, 32, 32)
        h = nn.functional.pad(h[:, :, ::4, ::4], (0, 0, 0, 0, 0, 48))  # (3, 64, 8, 8)
        by_hand = res.fc(h.mean(dim=(2, 3)))
        assert torch.allclose(res(x), by_hand, atol=1e-5)

        plain = build_model("plain8").eval()
        plain.load_state_dict(res.state_dict())  # A is parameter-free: same keys
        assert not torch.allclose(plain(x), res(x), atol=1e-3)


def test_preact_zero_init_also_silences_the_branch():
    res = build_model("preact_resnet8", zero_init_residual=True).eval()
    block = res.stages.stage1[0]
    x = torch.rand(2, 16, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), x)


def test_every_parameter_gets_a_gradient():
    for block, preact, shortcut in [("basic", False, "B"), ("bottleneck", True, "B"),
                                    ("basic", True, "none")]:
        m = small(block, preact, shortcut).train()
        loss = nn.functional.cross_entropy(m(torch.rand(4, 3, 16, 16)), torch.arange(4))
        loss.backward()
        for name, p in m.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, (block, preact, name)


def test_init_is_kaiming_fan_out_and_bn_identity():
    m = build_model("resnet20")
    assert all(c.bias is None for c in m.modules() if isinstance(c, nn.Conv2d))
    conv = m.stages.stage3[1].conv1  # 64 out channels, 3×3: std = sqrt(2 / (64·9))
    assert conv.weight.std().item() == pytest.approx((2 / (64 * 9)) ** 0.5, rel=0.05)
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    assert all(torch.all(b.weight == 1) and torch.all(b.bias == 0) for b in bns)


# ---- captum safety ---------------------------------------------------------------------------

@pytest.mark.parametrize("block, preact, shortcut", COMBOS)
def test_every_relu_is_its_own_module_called_once(block, preact, shortcut):
    model = Classifier.from_spec(small(block, preact, shortcut, in_channels=1), MNIST)
    calls = {}
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    hooks = [r.register_forward_hook(lambda m, i, o: calls.__setitem__(m, calls.get(m, 0) + 1))
             for r in relus]
    model(torch.rand(2, 1, 16, 16))
    for h in hooks:
        h.remove()
    assert relus and all(not r.inplace for r in relus)
    assert len(set(map(id, relus))) == len(relus)
    assert all(calls.get(r) == 1 for r in relus)
    # Every conv is followed by a ReLU somewhere: count them (stem + per block + final).
    per_block = 3 if block == "bottleneck" else 2
    assert len(relus) == 1 + 3 * per_block


def test_no_functional_relu_in_the_models():
    for mod in (resnet_module, classifier_module):
        src = inspect.getsource(mod)
        assert "F.relu" not in src and "torch.relu" not in src and "inplace=True" not in src


@pytest.mark.filterwarnings("ignore:Setting forward, backward hooks")
@pytest.mark.parametrize("arch", ["resnet8", "preact_resnet11_bottleneck", "plain8"])
def test_captum_deeplift_is_complete(arch):
    """DeepLift's attributions sum to f(x) - f(baseline) only if captum sees every ReLU."""
    from captum.attr import DeepLift
    model = Classifier.from_spec(build_model(arch, in_channels=1, width=0.5), MNIST).double()
    model.eval()
    x = torch.rand(2, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    _, delta = DeepLift(model).attribute(x, target=3, return_convergence_delta=True)
    assert delta.abs().max() < 1e-8


def test_gradcheck_in_float64():
    m = build_model("resnet8", width=0.25, in_channels=1).double().eval()
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-5)


# ---- devices and precisions ------------------------------------------------------------------

def test_channels_last_gives_the_same_answer():
    m = small("basic", True, "A").eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        m_cl = m.to(memory_format=torch.channels_last)
        out = m_cl(x.to(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)


@pytest.mark.parametrize("shortcut", ["A", "B"])
def test_autocast_bf16_runs(shortcut):
    m = small("basic", False, shortcut).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 10) and torch.isfinite(out.float()).all()
    out.float().sum().backward()


def test_no_device_calls_in_sources():
    for mod in (resnet_module, classifier_module):
        src = inspect.getsource(mod)
        assert ".cuda(" not in src and ".half(" not in src


# ---- classifier ------------------------------------------------------------------------------

def test_classifier_normalizes_first():
    net = build_model("resnet8", in_channels=3)
    mean, std = (0.2, 0.4, 0.6), (0.5, 0.25, 0.125)
    clf = Classifier(net, mean, std)
    seen = []
    h = net.stem.conv.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    clf(torch.tensor(mean).view(1, 3, 1, 1).expand(2, 3, 8, 8))  # the mean image
    h.remove()
    assert torch.allclose(seen[0], torch.zeros(2, 3, 8, 8), atol=1e-6)
    x = torch.rand(1, 3, 8, 8)
    assert torch.allclose(clf.normalize(x)[0, 2], (x[0, 2] - 0.6) / 0.125)
    assert clf.normalize.mean.shape == (1, 3, 1, 1)
    assert {n for n, _ in clf.named_buffers()} >= {"normalize.mean", "normalize.std"}
    assert not any(n.startswith("normalize") for n, _ in clf.named_parameters())


def test_classifier_from_spec_and_errors():
    clf = Classifier.from_spec(build_model("resnet8", in_channels=1), MNIST)
    assert clf.normalize.std.flatten().tolist() == pytest.approx([0.3081])
    assert clf(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    with pytest.raises(ConfigError):
        Normalize((0.5, 0.5), (0.5,))
    with pytest.raises(ConfigError):
        Normalize((0.5,), (0.0,))


# ---- zoo -------------------------------------------------------------------------------------

def test_macs_by_hand():
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)  # 32·32 outputs × 8 × (3·3·3)
    assert count_macs(nn.Sequential(conv), (3, 32, 32)) == 32 * 32 * 8 * 27
    strided = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2),
                            nn.Flatten(), nn.Linear(6 * 4 * 4, 5))
    assert count_macs(strided, (4, 8, 8)) == 4 * 4 * 6 * (2 * 9) + 96 * 5


def test_resnet20_macs_match_the_paper():
    m = build_model("resnet20").train()
    assert count_macs(m) == 40_551_040  # the paper: ~41M
    assert m.training  # mode restored


def test_zoo_table_rows():
    rows = zoo_table(presets=["resnet20", "plain20", "resnet11_bottleneck"])
    assert [r["name"] for r in rows] == ["resnet20", "plain20", "resnet11_bottleneck"]
    assert rows[0] == dict(name="resnet20", depth=20, block="basic", preact=False, shortcut="A",
                           params=269_722, macs=40_551_040)
    assert rows[1]["shortcut"] == "none" and rows[2]["block"] == "bottleneck"
    mnist = zoo_table(input_shape=(1, 28, 28), presets=["resnet20"])[0]
    assert mnist["params"] == 269_722 - 2 * 16 * 9 and mnist["macs"] < 40_551_040
    half = zoo_table(presets=["resnet20"], width=0.5)[0]
    assert half["macs"] < rows[0]["macs"] / 3


def test_resnet_is_a_plain_module():
    m = ResNet(get_config("resnet8"))
    assert isinstance(m, nn.Module) and m.config.depth == 8


# ---- issue 6: the paper's pre-activation projection, bottleneck stride, validation -----------

def test_preact_projection_is_a_bare_conv_on_the_preactivated_input():
    """He et al. 2016's code (ResNet-164/1001): the B shortcut of a pre-activation block is a
    1×1 conv alone, fed BN→ReLU of x; the post-activation one keeps conv + BN."""
    pre = build_model("preact_resnet20", shortcut="B")
    projections = [b.shortcut for b in pre.blocks() if not isinstance(b.shortcut, nn.Identity)]
    assert len(projections) == 2
    assert all(list(dict(p.named_children())) == ["conv"] for p in projections)
    assert count_parameters(pre) == 269_722 + 16 * 32 + 32 * 64  # convs only, no BN
    post = build_model("resnet20", shortcut="B")
    assert count_parameters(post) == 269_722 + 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    # The projection sees relu(bn1(x)), the branch's own pre-activation.
    block = pre.stages.stage2[0].eval()
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        a = block.relu1(block.bn1(x))
        branch = block.conv2(block.relu2(block.bn2(block.conv1(a))))
        assert torch.allclose(block(x), branch + block.shortcut.conv(a), atol=1e-6)
    # ResNet-164 of the 2016 paper: 1.7M parameters.
    assert count_parameters(build_model("preact_resnet164_bottleneck")) == 1_703_258


def test_old_configs_without_bottleneck_stride_keep_their_network():
    old = get_config("resnet11_bottleneck").to_dict()
    del old["bottleneck_stride"], old["zero_init_fc"]  # meta.json written before the options
    cfg = ResNetConfig.from_dict(old)
    assert cfg.bottleneck_stride == "3x3"  # what those nets were built with
    assert ResNet(cfg).stages.stage2[0].conv2.stride == (2, 2)
    assert get_config("resnet11_bottleneck").bottleneck_stride == "1x1"
    new = get_config("resnet11_bottleneck", bottleneck_stride="3x3")
    assert ResNetConfig.from_dict(new.to_dict()) == new  # saved key wins


def test_zero_init_fc_starts_at_ln_classes():
    m = build_model("resnet8", zero_init_fc=True, num_classes=7).train()
    loss = nn.functional.cross_entropy(m(torch.rand(4, 3, 16, 16)), torch.arange(4))
    assert loss.item() == pytest.approx(torch.log(torch.tensor(7.0)).item(), abs=1e-6)
    loss.backward()
    assert m.fc.weight.grad.abs().sum() > 0  # trainable: the gradient reaches it


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet56", "plain8", "resnet11_bottleneck",
                                  "preact_resnet11_bottleneck", "resnet1202"])
@pytest.mark.parametrize("shortcut, width, stem", [("A", 1.0, "cifar"), ("B", 0.5, "imagenet"),
                                                   ("none", 0.25, "cifar")])
def test_num_parameters_is_the_closed_form_of_the_built_net(arch, shortcut, width, stem):
    cfg = get_config(arch, shortcut=shortcut, width=width, stem=stem, in_channels=1, num_classes=7)
    if arch == "resnet1202":  # 19M parameters: the closed form alone, against the paper
        assert get_config(arch).num_parameters() == 19_421_274  # = the built net's (checked once)
        return
    assert cfg.num_parameters() == count_parameters(ResNet(cfg))


@pytest.mark.parametrize("arch", ["resnet20", "preact_resnet56", "plain8", "resnet11_bottleneck",
                                  "preact_resnet11_bottleneck"])
@pytest.mark.parametrize("shortcut, width, stem, shape", [("A", 1.0, "cifar", (1, 28, 28)),
                                                          ("B", 0.5, "imagenet", (3, 67, 45)),
                                                          ("none", 0.25, "cifar", (2, 9, 17))])
def test_num_macs_is_the_closed_form_of_the_built_net(arch, shortcut, width, stem, shape):
    """What the zoo shows without building anything: the forward hooks' count on the built net,
    odd sides included (each strided step rounds up)."""
    cfg = get_config(arch, shortcut=shortcut, width=width, stem=stem, in_channels=shape[0], num_classes=7)
    assert cfg.num_macs(shape) == count_macs(ResNet(cfg), shape)
    if (arch, shortcut, stem) == ("resnet20", "A", "cifar"):
        assert get_config(arch).num_macs((3, 32, 32)) == 40_551_040  # the paper: ~41M


ABSURD = [  # (how, message): refused before anything is allocated
    (lambda: ResNetConfig(stages=(1_000_000_000,)  * 3), r"'stages\[0\]': .*at most 10,000"),
    (lambda: ResNetConfig(stages=(4000,) * 3), "depth 24,002 is beyond any sensible network"),
    (lambda: ResNetConfig(filters=(16, 32, 10 ** 9)), r"'filters\[2\]': .*at most 65,536"),
    (lambda: ResNetConfig(filters=(16, 32, 65_536)), "parameters"),
    (lambda: get_config("resnet1202", width=64), "parameters"),
    (lambda: get_config("resnet1000000004"), "absurd"),
    (lambda: get_config("resnet20", num_classes=10 ** 9), "'num_classes': .*at most 100,000"),
    (lambda: get_config("resnet20", width=1e6), "'width': expected a number in 1/256..64"),
    (lambda: get_config("resnet20", width=1e300), "'width': expected a number in 1/256..64, got 1e"),
    (lambda: get_config("resnet20", width=float("nan")), "'width': expected a number"),
    (lambda: get_config("resnet20", width=float("inf")), "'width'"),
    (lambda: ResNetConfig(filters=(16, 32, 10 ** 40)), r"'filters\[2\]': expected a positive integer"),
    (lambda: ResNetConfig(stages=(3, 0, 3)), r"'stages\[1\]': expected a positive integer"),
    (lambda: ResNetConfig(stages=(1,) * 100, filters=(1,) * 100), "1..64 entries"),
]


@pytest.mark.parametrize("make, message", ABSURD)
def test_absurd_sizes_are_refused_before_allocating(make, message, monkeypatch):
    monkeypatch.setattr(ResNet, "__init__", lambda *a, **k: pytest.fail("allocated"))
    with pytest.raises(ConfigError, match=message):
        make()


BAD_FIELDS = [  # from_dict(meta.json) with one field wrong → ConfigError naming it
    ("stages", "abc", "'stages': expected a list of positive integers"),
    ("stages", 3, "'stages': expected a list"),
    ("stages", [3, "3", 3], r"'stages\[1\]'"),
    ("stages", [3, 2.5, 3], r"'stages\[1\]'"),
    ("filters", [16, True, 64], r"'filters\[1\]'"),
    ("stem_filters", "16", "'stem_filters'"),
    ("in_channels", 0, "'in_channels'"),
    ("num_classes", None, "'num_classes'"),
    ("width", "1", "'width'"),
    ("bn_eps", -1.0, "'bn_eps'"),
    ("bn_momentum", 2.0, "'bn_momentum'"),
    ("preact", "yes", "'preact'"),
    ("zero_init_residual", 1, "'zero_init_residual'"),
    ("block", ["basic"], "unknown block"),
    ("shortcut", "C", "unknown shortcut"),
    ("bottleneck_stride", "2x2", "unknown bottleneck_stride"),
]


@pytest.mark.parametrize("field, value, message", BAD_FIELDS)
def test_config_from_dict_names_the_bad_field(field, value, message):
    d = get_config("resnet20").to_dict() | {field: value}
    with pytest.raises(ConfigError, match=message):
        ResNetConfig.from_dict(d)


def test_config_from_dict_of_not_a_mapping():
    with pytest.raises(ConfigError, match="expected a mapping"):
        ResNetConfig.from_dict(["stages"])


@pytest.mark.parametrize("shape, message", [
    ((3, 0, 32), "height must be a positive integer, not 0"),
    ((0, 32, 32), "channels must be a positive integer"),
    ((3, 32, -1), "width must be a positive integer"),
    ((3, 32), "expected channels×height×width"),
    ((3, 10 ** 6, 32), "height 1000000 is more than 4096"),
])
def test_zoo_input_shape_is_checked(shape, message):
    with pytest.raises(ConfigError, match=message):
        zoo_table(shape, presets=["resnet8"])


def test_zoo_cli_bad_shape_is_one_line_exit_2():
    from typer.testing import CliRunner
    from probe.cli import app
    r = CliRunner().invoke(app, ["models", "zoo", "--input", "3x0x32"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and ("3x0x32" in lines[0] or "3×0×32" in lines[0])


# ---- BatchNorm folded for inference ---------------------------------------------------------------

def _with_statistics(net: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, so that a fold that drops any of them shows."""
    g = torch.Generator().manual_seed(0)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            for t, lo, hi in ((m.running_mean, -1, 1), (m.running_var, 0.5, 2), (m.weight.data, 0.5, 2),
                              (m.bias.data, -1, 1)):
                t.copy_(torch.rand(t.shape, generator=g, dtype=t.dtype) * (hi - lo) + lo)
    return net.eval()


@pytest.mark.parametrize("arch, shortcut", [("resnet8", "A"), ("resnet8", "B"), ("preact_resnet8", "B"),
                                            ("plain8", "A"), ("resnet11_bottleneck", "B")])
def test_folded_batchnorm_gives_the_same_logits_and_input_gradients(arch, shortcut):
    from probe.models.inference import inference_copy
    cfg = dataclasses.replace(get_config(arch, num_classes=4, in_channels=1, width=0.5), shortcut=shortcut)
    model = _with_statistics(Classifier(ResNet(cfg), [0.2], [0.3])).double()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = inference_copy(model)
    bns = lambda m: sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())
    # post-activation: every BN follows a conv; pre-activation: bn1 and the final BN see sums
    expected = 0 if not cfg.preact else len(fast.net.blocks()) + 1
    assert bns(fast) == expected < bns(model)
    x = torch.rand(3, 1, 12, 12, dtype=torch.float64, requires_grad=True)
    out, out_fast = model(x), fast(x)
    torch.testing.assert_close(out_fast, out, rtol=0, atol=1e-10)
    g, = torch.autograd.grad(out[:, 1].sum(), x)
    g_fast, = torch.autograd.grad(out_fast[:, 1].sum(), x)
    torch.testing.assert_close(g_fast, g, rtol=0, atol=1e-10)
    # the caller's model untouched; the copy frozen, named like the original (Grad-CAM finds its layer)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters()) and not any(p.requires_grad for p in fast.parameters())
    assert {n for n, _ in fast.named_modules()} <= {n for n, _ in model.named_modules()}
    assert inference_copy(fast) is fast


def test_inference_copy_leaves_other_models_alone():
    from probe.models.inference import inference_copy
    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten())
    assert inference_copy(other) is other


def test_the_inference_copy_is_made_once_and_again_when_the_weights_change():
    from probe.models.inference import inference_copy
    model = Classifier(ResNet(get_config("resnet8", num_classes=3, in_channels=1, width=0.25)), [0.5], [0.25])
    x = torch.rand(2, 1, 8, 8)
    first = inference_copy(model)
    assert inference_copy(model) is first  # kept
    with torch.no_grad():
        model.net.fc.bias.add_(1.0)  # an in-place change (an optimizer step)
    second = inference_copy(model)
    assert second is not first
    model.eval()
    torch.testing.assert_close(second(x), model(x), rtol=0, atol=1e-5)
    model.net.fc.bias.data[0] = -5.0  # behind autograd's version counter
    third = inference_copy(model)
    assert third is not second
    torch.testing.assert_close(third(x), model(x), rtol=0, atol=1e-5)


# ---- fused kernels in inference passes -----------------------------------------------------------

needs_onednn = pytest.mark.skipif(not fused.AVAILABLE, reason="torch built without oneDNN")

class _Unfused(nn.Module):
    """The same model computed with the separate ops (fused.disabled): what each pass computed before."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        with fused.disabled():
            return self.model(x)


@pytest.fixture
def fuse_any_batch(monkeypatch):
    """The fused kernels for batches of any size (MIN_IMAGES is only a matter of speed), so that
    tiny inputs exercise them."""
    monkeypatch.setattr(fused, "MIN_IMAGES", 1)


@pytest.fixture
def fused_calls(monkeypatch, fuse_any_batch):
    """How often each fused kernel ran."""
    calls = {"conv_relu": 0, "conv_add": 0}
    for name in calls:
        def spy(*args, _real=getattr(fused, name), _name=name, **kw):
            calls[_name] += 1
            return _real(*args, **kw)
        monkeypatch.setattr(fused, name, spy)
    return calls


@needs_onednn
@pytest.mark.parametrize("arch, changes, stem_fused", [
    ("resnet8", {}, True), ("resnet8", {"shortcut": "B"}, True), ("plain8", {}, True),
    ("preact_resnet8", {"shortcut": "B"}, False), ("preact_resnet8", {"shortcut": "A"}, False),
    ("resnet11_bottleneck", {"shortcut": "B"}, True), ("resnet8", {"stem": "imagenet"}, True)])
def test_inference_passes_fuse_with_the_same_logits_bit_for_bit(arch, changes, stem_fused, fused_calls):
    """conv→ReLU and conv+shortcut→ReLU as one oneDNN kernel give exactly the numbers of the
    separate ops (the post-op acts on the same float32 accumulator), in both memory layouts."""
    from probe.models.inference import inference_copy
    cfg = dataclasses.replace(get_config(arch, num_classes=5, in_channels=3, width=0.5), **changes)
    model = _with_statistics(Classifier(ResNet(cfg), [0.4] * 3, [0.2] * 3))
    fast = inference_copy(model)
    assert all(b.fusable() for b in fast.net.blocks()) and fast.net._stem_fusable() == stem_fused
    plain = _Unfused(fast)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    # one image, and one thread, make torch pick another kernel for some convs: those stay apart
    for inp, n_threads in itertools.product((x, x.contiguous(memory_format=torch.channels_last), x[:1]),
                                            sorted({1, threads})):
        torch.set_num_threads(n_threads)
        try:
            with torch.inference_mode():
                expected = plain(inp)
                before = dict(fused_calls)
                got = fast(inp)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(got, expected)
        blocks = len(fast.net.blocks())
        assert fused_calls["conv_relu"] - before["conv_relu"] >= blocks + stem_fused
        assert fused_calls["conv_add"] - before["conv_add"] == (blocks if arch != "plain8" else 0)
    torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-5)  # and the model's own logits


@needs_onednn
def test_a_parameter_inside_a_shortcut_that_needs_a_gradient_gets_it(fuse_any_batch):
    from probe.models.inference import inference_copy
    cfg = dataclasses.replace(get_config("resnet8", num_classes=3, in_channels=1, width=0.5), shortcut="B")
    fast = inference_copy(_with_statistics(Classifier(ResNet(cfg), [0.5], [0.25])))
    plain = _Unfused(fast)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(4))
    grads = []
    weight = fast.net.stages.stage2[0].shortcut.conv.weight.requires_grad_(True)
    for net in (fast, plain):
        grads.append(torch.autograd.grad(net(x).sum(), weight)[0])
    weight.requires_grad_(False)
    assert grads[1].abs().max() > 0 and torch.equal(grads[0], grads[1])


@needs_onednn
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func's own imports
def test_a_pass_that_anything_could_tell_apart_is_not_fused(fused_calls):
    """Gradients, a hook on an inner module (captum's layer methods, Grad-CAM), a replaced ReLU
    (Guided Backprop), another dtype, autocast: every module runs as itself, with its numbers."""
    from probe.models.inference import inference_copy
    model = _with_statistics(Classifier(ResNet(get_config("resnet8", num_classes=3, in_channels=1, width=0.5)),
                                        [0.5], [0.25]))
    fast = inference_copy(model)
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        reference = _Unfused(fast)(x)
    # gradients recorded: for the input, or for a parameter
    inp = x.clone().requires_grad_()
    out = fast(inp)
    assert out.requires_grad and fused_calls == {"conv_relu": 0, "conv_add": 0}
    torch.testing.assert_close(out.detach(), reference, rtol=0, atol=0)
    conv = fast.net.blocks()[-1].conv2
    conv.weight.requires_grad_(True)
    out = fast(x)
    conv.weight.requires_grad_(False)
    assert out.grad_fn is not None and fused_calls["conv_add"] == len(fast.net.blocks()) - 1  # all blocks before it
    torch.testing.assert_close(out.detach(), reference, rtol=0, atol=0)
    # grad mode on, but nothing needing a gradient (Grad-CAM's pass up to its layer): fused
    before = dict(fused_calls)
    out = fast(x)
    assert out.grad_fn is None and torch.equal(out, reference)
    assert fused_calls["conv_add"] - before["conv_add"] == len(fast.net.blocks())
    # forward-mode AD and torch.func's transforms differentiate every op: the same tangents
    counts = dict(fused_calls)
    tangent = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    _, jvp_fast = torch.func.jvp(fast, (x,), (tangent,))
    _, jvp_plain = torch.func.jvp(_Unfused(fast), (x,), (tangent,))
    assert jvp_plain.abs().max() > 0 and torch.equal(jvp_fast, jvp_plain)
    import torch.autograd.forward_ad as fwAD
    with fwAD.dual_level():
        dual = fwAD.unpack_dual(fast(fwAD.make_dual(x, tangent))).tangent
    torch.testing.assert_close(dual, jvp_plain, rtol=0, atol=0)
    assert fused_calls == counts
    # a forward hook on a conv inside a block still sees its output, once per pass
    seen = []
    conv = fast.net.stages.stage2[0].conv1
    handle = conv.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    with torch.no_grad():
        assert torch.equal(fast(x), reference)
    handle.remove()
    assert len(seen) == 1 and fused_calls["conv_relu"] > 0  # the other blocks still fuse
    # a ReLU whose forward is replaced on the instance (Guided Backprop's way) is called
    relu = fast.net.stages.stage1[0].relu1
    relu.forward = lambda t: seen.append("relu") or t.clamp_min(0)
    with torch.no_grad():
        assert torch.equal(fast(x), reference)
    del relu.forward
    assert seen[-1] == "relu"
    # float64, and bf16 autocast, run the separate ops
    counts = dict(fused_calls)
    with torch.no_grad():
        torch.testing.assert_close(fast.double()(x.double()).float(), reference, rtol=1e-5, atol=1e-5)
        fast.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert fast(x).dtype == torch.bfloat16
    assert fused_calls == counts


@pytest.mark.parametrize("size", [8, 7])
def test_shortcut_a_takes_every_second_pixel_and_its_gradient_keeps_channels_last(size):
    """Option A: x[:, :, ::2, ::2] with zero channels appended, for even and odd sizes; the
    gradient comes back in the input's layout (a slice's is NCHW, and each elementwise op of the
    backward pass that met it beside a channels_last tensor ran 5-10× slower)."""
    short = ShortcutA(3, 5, 2)
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 2, (size + 1) // 2, (size + 1) // 2)], 1)
    for layout in (torch.contiguous_format, torch.channels_last):
        inp = x.contiguous(memory_format=layout).requires_grad_()
        out = short(inp)
        assert torch.equal(out, expected)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).contiguous(memory_format=layout)
        grad, = torch.autograd.grad(out, inp, g)
        assert grad.is_contiguous(memory_format=layout)
        want = torch.zeros_like(x)
        want[:, :, ::2, ::2] = g[:, :3]
        assert torch.equal(grad, want)


@needs_onednn
def test_a_module_swapped_after_folding_is_used(fuse_any_batch):
    """The blocks check what they hold at each pass: a ReLU replaced after folding is computed."""
    from probe.models.inference import inference_copy
    fast = inference_copy(_with_statistics(Classifier(ResNet(get_config("resnet8", num_classes=3, in_channels=1,
                                                                         width=0.5)), [0.5], [0.25])))
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(5))
    as_folded, swapped = _Unfused(copy.deepcopy(fast)), _Unfused(copy.deepcopy(fast))
    for net in (fast, swapped.model):
        net.net.stages.stage1[0].relu1 = nn.Softplus()
        net.net.stem.relu = nn.Softplus()
    with torch.no_grad():
        assert torch.equal(fast(x), swapped(x)) and not torch.equal(fast(x), as_folded(x))


@needs_onednn
def test_nan_and_inf_run_unfused_and_stay_nan(fused_calls):
    """oneDNN's ReLU post-op turns NaN into 0 where torch.relu keeps it: a pass whose input or
    weights are not finite runs the separate ops, checked once a pass (and by a block on its own)."""
    from probe.models.inference import inference_copy
    fast = inference_copy(_with_statistics(Classifier(ResNet(get_config("resnet8", num_classes=3, in_channels=1,
                                                                         width=0.5)), [0.5], [0.25])))
    x = torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(6))
    x[1, 0, 3, 3] = float("nan")
    x[2, 0, 7, 7] = float("inf")
    with torch.no_grad():
        expected = _Unfused(fast)(x)
        assert torch.isnan(expected[1:]).all() and torch.isfinite(expected[0]).all()
        got = fast(x)
        assert fused_calls == {"conv_relu": 0, "conv_add": 0}
        torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
        block = fast.net.stages.stage1[0]
        h = torch.full((3, block.conv1.in_channels, 16, 16), float("nan"))
        assert torch.isnan(block(h)).all() and fused_calls == {"conv_relu": 0, "conv_add": 0}
        fast.net.fc.bias[0] = float("nan")  # a weight
        assert torch.isnan(fast(x[:1])[0, 0]) and fused_calls == {"conv_relu": 0, "conv_add": 0}
        fast.net.fc.bias[0] = 0.0
        fast(torch.rand(3, 1, 16, 16))  # finite again: fused
        assert fused_calls["conv_add"] == len(fast.net.blocks())


@needs_onednn
def test_small_batches_run_unfused_where_fusing_would_not_pay(fused_calls, monkeypatch):
    from probe.models.inference import inference_copy
    fast = inference_copy(Classifier(ResNet(get_config("resnet8", num_classes=3, in_channels=1, width=0.25)),
                                     [0.5], [0.25]))
    monkeypatch.setattr(fused, "MIN_IMAGES", 3)
    with torch.no_grad():
        fast(torch.rand(2, 1, 8, 8))
        assert fused_calls == {"conv_relu": 0, "conv_add": 0}
        fast(torch.rand(3, 1, 8, 8))
        assert fused_calls["conv_add"] == len(fast.net.blocks())
