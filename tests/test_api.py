"""The public API (`import probe`) on a model probe did not make: a tiny nn.Sequential CNN, in
float32 and float64. Every function runs, returns a result that draws itself with class names
only, and leaves the model as it found it."""
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

import probe
from probe.errors import ConfigError

CLASSES = ["zero", "one", "two"]


def tiny_cnn(dtype) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(16, 3)).to(dtype)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def model(request):
    net = tiny_cnn(request.param)
    net.train()  # the caller's mode: every function must give it back
    return net


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 1, 8, 8, generator=g)  # (N, C, H, W) in [0, 1]
    return images, torch.tensor([0, 1, 2, 0, 1, 2])


def drawn(result) -> dict:
    figs = result.figures()
    assert figs and all(hasattr(f, "savefig") for f in figs.values())
    for f in figs.values():
        plt.close(f)
    return figs


def unchanged(model, before: dict) -> bool:
    return model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in before.items()) and \
        all(p.grad is None and p.requires_grad for p in model.parameters())


def test_every_public_name_resolves():
    for name in probe.__all__:
        assert getattr(probe, name) is not None, name
    with pytest.raises(AttributeError):
        probe.no_such_function


def test_misclassified_and_confusion(model, batch):
    images, labels = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = probe.misclassified(model, images, labels, classes=CLASSES)
    assert r.n == 6 and r.wrong == len(r.misclassified) and {m["true"] for m in r.misclassified} <= set(CLASSES)
    assert "confusion" in drawn(r) and unchanged(model, before)
    c = probe.confusion_matrix(model, images, labels, classes=CLASSES)
    assert sum(map(sum, c.matrix)) == 6 and set(drawn(c)) == {"confusion", "confusion-normalized", "per-class-accuracy"}


def test_attack_and_robustness_curve(model, batch):
    images, labels = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = probe.attack(model, images, labels, 0.1, method="pgd", steps=3)
    assert adv.dtype == next(model.parameters()).dtype and adv.shape == images.shape
    assert (adv - images.to(adv.dtype)).abs().max() <= 0.1 + 1e-6
    r = probe.robustness_curve(model, images, labels, [0.05, 0.1], classes=CLASSES, steps=3, examples=2)
    accs = [p["accuracy"] for p in r.models[0]["points"]]
    assert accs == sorted(accs, reverse=True)  # never rises with ε
    assert "robustness" in drawn(r) and unchanged(model, before)


def test_fooling_from_noise_and_from_data(model, batch):
    images, labels = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = probe.fool_from_noise(model, "two", shape=(1, 8, 8), classes=CLASSES, n=1, steps=20, confidence=0.5)
    assert r.count == 1 and r.targets == ["two"]
    drawn(r)
    d = probe.fool_from_dataset(model, images, labels, "one", classes=CLASSES, n=1, steps=20, confidence=0.5)
    assert d.count <= 1
    assert unchanged(model, before)


@pytest.mark.parametrize("targets, expected", [
    ("all", None), ("two", ["two"]), (2, ["two"]), (torch.tensor(1), ["one"]), (np.int64(0), ["zero"]),
    (torch.tensor([0, 2]), ["zero", "two"]), ([np.int64(1), "two"], ["one", "two"]),
    (None, "targets None"), (1.5, "targets 1.5"), ("seven", "unknown class 'seven'"),
    (torch.tensor(1.7), "targets tensor"), ([1.5], r"targets \[1.5\]"), ([None], "targets"), (True, "targets True"),
    (torch.tensor([[0, 1]]), "targets tensor")])
def test_the_targets_of_fooling_in_every_form_a_caller_has_them(targets, expected):
    """None (found by hand: a TypeError from deep inside), floats (never cut to an index), bools
    and lists of them are a clear ConfigError; integer tensors and NumPy integers are classes, as
    Python ints are."""
    net = tiny_cnn(torch.float32)
    if isinstance(expected, str):
        with pytest.raises(ConfigError, match=expected):
            probe.fool_from_noise(net, targets, shape=(1, 8, 8), classes=CLASSES, n=1, steps=2, confidence=0.5)
        return
    r = probe.fool_from_noise(net, targets, shape=(1, 8, 8), classes=CLASSES, n=1, steps=2, confidence=0.5)
    assert r.targets == (expected or list(CLASSES))


def test_saliency_and_faithfulness(model, batch):
    images, _ = batch
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = probe.saliency(model, images[:2], 1, methods="vanilla,ig,gradcam", classes=CLASSES, layer=model[2])
    assert set(r.maps) == {"vanilla", "ig", "gradcam"}
    assert all(m.shape == (2, 8, 8) for m in r.maps.values())
    drawn(r)
    f = probe.faithfulness(model, images[:2], 1, r, randomization=False)
    assert set(f.curves) >= {"vanilla", "ig", "gradcam"}
    drawn(f)
    assert unchanged(model, before)


def test_learning_curves_from_records():
    history = [{"epoch": e, "train_error": 0.5 / e, "val_error": 0.6 / e} for e in (1, 2, 3)]
    r = probe.learning_curves({"mine": history})
    assert r.runs[0].epoch == [1, 2, 3]
    assert set(drawn(r)) == {"curves"}


def test_nan_or_infinite_images_are_a_config_error():
    import probe
    from probe.errors import ConfigError
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3)).eval()
    x = torch.rand(2, 1, 4, 4)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ConfigError, match="NaN or infinite"):
        probe.saliency(model, x, 0, methods="vanilla")
    x[1, 0, 0, 0] = float("inf")
    with pytest.raises(ConfigError, match="NaN or infinite"):
        probe.attack(model, x, torch.tensor([0, 1]), 0.1)


def test_an_edit_through_data_that_keeps_the_norm_is_seen():
    """probe's ResNets are computed on a copy kept until the weights change: a sign flip or a
    permutation through .data keeps every norm and the version counter, and must still count."""
    from probe.models.classifier import Classifier
    from probe.models.inference import inference_copy
    from probe.models.resnet import ResNet, get_config
    from probe.data.spec import MNIST
    torch.manual_seed(0)
    model = Classifier.from_spec(ResNet(get_config("resnet8", width=0.25, in_channels=1)), MNIST).eval()
    x = torch.rand(3, 1, 12, 12)
    for edit in (lambda: model.net.fc.weight.data.neg_(),
                 lambda: model.net.stem.conv.weight.data.copy_(model.net.stem.conv.weight.data.flip(0))):
        edit()
        with torch.no_grad():
            torch.testing.assert_close(inference_copy(model)(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("methods", ["all", "vanilla", "gradcam", "ig"])
def test_a_target_beyond_the_classes_is_a_config_error_for_every_method(methods):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 5)).eval()
    with pytest.raises(ConfigError, match=r"target: 7 \(image 0\) is not one of the model's classes 0\.\.4"):
        probe.saliency(model, torch.rand(2, 1, 4, 4), 7, methods=methods, layer=model[1])


def test_a_label_beyond_the_classes_is_a_config_error():
    from probe.methods.confusion import confusion_matrix
    assert confusion_matrix(torch.tensor([0, 2, -1]), torch.tensor([0, 1, 2]), 3).matrix.sum() == 2
    with pytest.raises(ConfigError, match="label 9 for a model of 3 classes"):
        confusion_matrix(torch.tensor([0, 9]), torch.tensor([0, 1]), 3)


# ---- what a caller may get wrong: each a ConfigError naming it, before any work -----------------

CALLS = {
    "misclassified": lambda m, x, y: probe.misclassified(m, x, y),
    "attack": lambda m, x, y: probe.attack(m, x, y, 0.1, steps=2),
    "robustness_curve": lambda m, x, y: probe.robustness_curve(m, x, y, [0.1], steps=2, examples=0),
    "saliency": lambda m, x, y: probe.saliency(m, x, y, methods="vanilla"),
    "fool_from_dataset": lambda m, x, y: probe.fool_from_dataset(m, x, y, targets=[1], steps=2),
}


@pytest.mark.parametrize("call", ["misclassified", "attack", "robustness_curve", "saliency", "fool_from_dataset"])
def test_a_class_beyond_the_model_or_a_fraction_is_a_config_error(call, batch):
    images, labels = batch
    net = tiny_cnn(torch.float32)
    beyond = labels.clone()
    beyond[4] = 3  # the model has classes 0..2
    which = "target" if call == "saliency" else "labels"
    with pytest.raises(ConfigError, match=rf"{which}: 3 \(image 4\) is not one of the model's classes 0\.\.2"):
        CALLS[call](net, images, beyond)
    with pytest.raises(ConfigError, match=rf"{which}: 1\.5 is not a class index"):
        CALLS[call](net, images, labels.float() + torch.tensor([0, 0, 0, 0, 0.5, 0]))
    CALLS[call](net, images, labels.double())  # whole numbers as floats are classes


@pytest.mark.parametrize("where", ["attack", "robustness_curve"])
def test_a_target_beyond_the_model_is_a_config_error(where, batch):
    images, labels = batch
    net = tiny_cnn(torch.float32)
    call = (lambda t: probe.attack(net, images, labels, 0.1, steps=2, target=t)) if where == "attack" else \
        (lambda t: probe.robustness_curve(net, images, labels, [0.1], steps=2, examples=0, target=t))
    with pytest.raises(ConfigError, match=r"target: 3 \(image 0\) is not one of the model's classes 0\.\.2"):
        call(3)
    with pytest.raises(ConfigError, match=r"target: 1\.5 is not a class index"):
        call(1.5)


class _Wrapped(nn.Module):
    """A model of another library's kind: its forward returns more than the logits."""

    def __init__(self, as_dict: bool):
        super().__init__()
        self.net, self.as_dict = tiny_cnn(torch.float32), as_dict

    def forward(self, x):
        logits = self.net(x)
        return {"logits": logits} if self.as_dict else (logits, x.mean())


@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("as_dict", [False, True], ids=["tuple", "dict"])
def test_a_model_that_returns_no_logits_tensor_is_told_to_wrap_it(call, as_dict, batch):
    images, labels = batch
    kind = "dict" if as_dict else "tuple"
    with pytest.raises(ConfigError, match=rf"the model returned a {kind}, not a tensor of logits \(N, K\): wrap it"):
        CALLS[call](_Wrapped(as_dict), images, labels)


@pytest.mark.parametrize("call", sorted(CALLS))
def test_float_images_in_0_255_are_refused_by_every_analysis(call, batch):
    images, labels = batch
    net = tiny_cnn(torch.float32)
    with pytest.raises(ConfigError, match=r"floats in \[0, 1\]"):
        CALLS[call](net, images * 255, labels)
    with pytest.raises(ConfigError, match=r"floats in \[0, 1\]"):
        CALLS[call](net, images - 0.5, labels)  # normalized images
    CALLS[call](net, images.clamp(0, 1) * (1 + 1e-7), labels)  # a rounding beyond 1 is still [0, 1]
    with pytest.raises(ConfigError, match=r"clamp them to \[0, 1\]: a resize or a blur overshoots"):
        CALLS[call](net, images * 1.05 - 0.02, labels)
    # integers other than uint8 were taken as 0..255 floats: refused with the dtype named
    with pytest.raises(ConfigError, match=r"images of dtype torch.int64: give uint8 pixels"):
        CALLS[call](net, (images * 255).long(), labels)


def test_a_rounding_beyond_1_in_a_half_precision_is_still_a_0_1_image():
    from probe.methods.common import as_input
    for dtype in (torch.float16, torch.bfloat16):
        one_ulp = torch.full((1, 1, 2, 2), 1.0, dtype=dtype).nextafter(torch.tensor(2.0, dtype=dtype))
        assert float(one_ulp.max()) > 1 and as_input(one_ulp, torch.device("cpu"), dtype).dtype == dtype
        with pytest.raises(ConfigError, match="values from 0 to 1.0"):
            as_input(torch.tensor([0.0, 1.05], dtype=dtype).view(1, 1, 1, 2), torch.device("cpu"))


def test_a_saliency_target_by_name_is_its_index(batch):
    images, _ = batch
    net = tiny_cnn(torch.float32)
    by_name = probe.saliency(net, images, "two", methods="vanilla", classes=CLASSES)
    by_index = probe.saliency(net, images, 2, methods="vanilla", classes=CLASSES)
    assert by_name.targets == by_index.targets == [2] * 6
    torch.testing.assert_close(by_name.attributions, by_index.attributions)
    with pytest.raises(ConfigError, match="needs classes="):
        probe.saliency(net, images, "two", methods="vanilla")


def test_eps_as_text_is_the_command_line_s_list(batch):
    images, labels = batch
    net = tiny_cnn(torch.float32)
    text = probe.robustness_curve(net, images, labels, "0.05,2/255", steps=2, examples=0)
    listed = probe.robustness_curve(net, images, labels, [0.05, 2 / 255], steps=2, examples=0)
    assert text.eps == listed.eps == [0.0, 2 / 255, 0.05]


def test_the_confusion_summary_counts_the_labelled_images():
    net = nn.Sequential(nn.Flatten(), nn.Linear(1, 2, bias=False))
    with torch.no_grad():
        net[1].weight.copy_(torch.tensor([[-1.0], [1.0]]))  # class 1 where the pixel is > 0
    images = torch.tensor([0.0, 0.0, 0.0, 0.9, 0.9]).view(5, 1, 1, 1)
    lines = probe.confusion_matrix(net, images, torch.tensor([0, 0, 1, 1, -1])).summary()
    # 3 of the 4 labelled right (the unlabelled one not counted); Wilson's 95% interval of 3/4 by hand
    z, n, p = 1.959964, 4, 0.75
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z / (1 + z * z / n) * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5
    low, high = centre - half, centre + half
    assert lines[0] == f"accuracy 75.00% of 4 labelled images (95% CI {100 * low:.2f}–{100 * high:.2f}%)"
    assert lines[1] == "most confused: 1→0 ×1"
    assert lines[2].startswith("lowest per-class accuracy: 1 50.00% of 2 ")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_half_precision_models_run_every_method_and_fooling(dtype, batch):
    """captum's SmoothGrad noise is float32 and the fooling images were kept in the model's dtype
    (k/255 is not on the grid in bfloat16): both failed on a half-precision model."""
    images, labels = batch
    net = tiny_cnn(torch.float32).to(dtype)
    r = probe.saliency(net, images, 1, methods="all", layer=net[3], classes=CLASSES)
    assert r.methods == ["vanilla", "smoothgrad", "ig", "gradcam", "guided", "occlusion"]
    assert all(torch.isfinite(m).all() for m in r.maps.values())
    noise = probe.fool_from_noise(net, [1], shape=(1, 8, 8), n=1, steps=3, classes=CLASSES)
    data = probe.fool_from_dataset(net, images, probe.misclassified(net, images, labels).probs.argmax(1), [1], n=1,
                                   steps=3, classes=CLASSES)
    for result in (noise, data):
        assert result.pixels.dtype == torch.uint8 and result.count == 1
