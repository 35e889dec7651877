"""Faithfulness: deletion/insertion on a model that looks at one pixel (and a map worse than a
random order, flagged on two images or more), Spearman's rank correlation by hand, and the
model-randomization check (a map that ignores the model against vanilla gradients of a tiny
trained model; a map gone constant counts as changed; a sign flip seen by the signed
correlation; no flag resting on one image)."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from probe.errors import ConfigError
from probe.methods.common import gaussian_blur
from probe.methods.faithfulness import (RANDOM, FaithfulnessConfig, cascade_groups, deletion_insertion,
                                        map_correlation, pixel_ranks, randomization_check, rankdata, sign_test,
                                        spearman)
from probe.methods.saliency import SaliencyConfig, attribute


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


class OnePixel(nn.Module):
    """Class 1's logit is 20·(x[0, r, c] − 0.5), class 0's is 0: the model looks at one pixel."""

    def __init__(self, r=2, c=3):
        super().__init__()
        self.r, self.c = r, c
        self.scale = nn.Parameter(torch.tensor(20.0))

    def forward(self, x):
        z = self.scale * (x[:, 0, self.r, self.c] - 0.5)
        return torch.stack([torch.zeros_like(z), z], 1)


def test_deletion_and_insertion_rank_the_decisive_pixel_first():
    n, h, w = 4, 8, 8
    x = torch.rand(n, 1, h, w) * 0.3
    x[:, 0, 2, 3] = 1.0  # the decisive pixel is bright: p(class 1) ≈ 1
    good = torch.zeros(n, h, w)
    good[:, 2, 3] = 1.0  # the map that points at it
    bad = torch.rand(n, h, w)
    bad[:, 2, 3] = -1.0  # the map that ranks it last
    model = OnePixel()
    cfg = FaithfulnessConfig(steps=16, random_orders=8, insertion_start="zero")
    di = deletion_insertion(model, x, 1, {"good": good, "bad": bad}, config=cfg)
    dele, ins = di.auc("deletion"), di.auc("insertion")
    p0 = torch.sigmoid(torch.tensor(10.0))
    # The decisive pixel goes at the first step: the curve is p0 then ~0 (exactly, by hand).
    assert torch.allclose(di.curves["deletion"]["good"][:, 0], p0.expand(n))
    assert di.curves["deletion"]["good"][:, 1:].max() < 1e-3
    assert torch.allclose(dele["good"], p0 / 2 / 16 + 0 * dele["good"], atol=1e-3)
    assert dele["good"].mean() < dele[RANDOM].mean() - 0.2 < dele["bad"].mean() - 0.4
    assert ins["good"].mean() > ins[RANDOM].mean() + 0.2 > ins["bad"].mean() + 0.4
    assert 0.25 < dele[RANDOM].mean() < 0.75  # the pixel is hit half way, on average
    assert di.fractions[0] == 0 and di.fractions[-1] == 1 and len(di.fractions) == 17
    s = di.summary()
    assert set(s) == {"good", "bad", RANDOM} and len(s["good"]["deletion_curve"]) == 17


def test_curves_do_not_depend_on_the_batch_size():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 36, 4)).eval()
    x = torch.rand(5, 1, 6, 6)
    maps = {"a": torch.rand(5, 6, 6)}
    big = deletion_insertion(model, x, 2, maps, config=FaithfulnessConfig(steps=6, batch_size=256))
    small = deletion_insertion(model, x, 2, maps, config=FaithfulnessConfig(steps=6, batch_size=4))
    plain = deletion_insertion(model, x, 2, maps, config=FaithfulnessConfig(steps=6, channels_last=False))
    for kind in ("deletion", "insertion"):
        for m in ("a", RANDOM):
            torch.testing.assert_close(small.curves[kind][m], big.curves[kind][m])
            torch.testing.assert_close(plain.curves[kind][m], big.curves[kind][m], rtol=1e-4, atol=1e-5)


def test_pixel_ranks_break_ties_at_random_and_keep_order():
    g = torch.Generator().manual_seed(0)
    maps = torch.tensor([[[3.0, 1.0], [2.0, 0.0]]])
    assert pixel_ranks(maps, g).tolist() == [[0, 2, 1, 3]]
    flat = torch.zeros(1, 4, 4)
    orders = {tuple(pixel_ranks(flat, g)[0].tolist()) for _ in range(5)}
    assert len(orders) > 1  # a flat map is not deleted row by row


def test_gaussian_blur_keeps_the_mean_of_a_constant_and_smooths():
    x = torch.full((1, 2, 9, 9), 0.4)
    torch.testing.assert_close(gaussian_blur(x, 2.0), x)
    dot = torch.zeros(1, 1, 9, 9)
    dot[0, 0, 4, 4] = 1
    b = gaussian_blur(dot, 1.0)
    assert b[0, 0, 4, 4] < 0.2 and b[0, 0, 4, 5] > 0.05 and abs(float(b.sum()) - 1) < 1e-3
    # The kernel reaches 3σ: the dot's value 3 pixels away is the normalized Gaussian's there.
    g = torch.exp(-torch.arange(-3.0, 4.0) ** 2 / 2)
    g = g / g.sum()
    torch.testing.assert_close(b[0, 0, 4, 4:8], g[3] * g[3:], rtol=1e-5, atol=1e-7)
    # float64 stays float64; an image smaller than the kernel is padded by replication.
    assert gaussian_blur(torch.rand(1, 3, 5, 5, dtype=torch.float64), 1.0).dtype == torch.float64
    torch.testing.assert_close(gaussian_blur(torch.full((1, 1, 2, 2), 0.7), 3.0), torch.full((1, 1, 2, 2), 0.7))


def test_rankdata_and_spearman_by_hand():
    x = torch.tensor([[10.0, 20.0, 20.0, 5.0, 20.0]])
    assert rankdata(x).tolist() == [[2.0, 4.0, 4.0, 1.0, 4.0]]
    a = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0], [1.0, 2.0, 3.0, 4.0, 5.0]])
    b = torch.tensor([[2.0, 4.0, 6.0, 8.0, 100.0], [5.0, 4.0, 3.0, 2.0, 1.0]])
    torch.testing.assert_close(spearman(a, b), torch.tensor([1.0, -1.0], dtype=torch.float64))
    # d = rank differences (0, 0, 1, -1, 0, 0): ρ = 1 − 6Σd²/(n(n²−1)) = 1 − 12/210 without ties
    u = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    v = torch.tensor([[1.0, 2.0, 4.0, 3.0, 5.0, 6.0]])
    assert math.isclose(float(spearman(u, v)), 1 - 12 / 210, rel_tol=1e-12)
    # ties: the Pearson correlation of the average ranks
    t1, t2 = torch.tensor([[1.0, 2.0, 2.0, 3.0]]), torch.tensor([[1.0, 3.0, 2.0, 4.0]])
    expected = np.corrcoef([1, 2.5, 2.5, 4], [1, 3, 2, 4])[0, 1]
    assert math.isclose(float(spearman(t1, t2)), expected, rel_tol=1e-12)
    assert math.isnan(float(spearman(torch.ones(1, 4), torch.rand(1, 4))))  # a constant map


def test_spearman_matches_scipy_where_it_is_installed():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, (3, 40)).astype(float)  # many ties
    b = rng.normal(size=(3, 40))
    ours = spearman(torch.tensor(a), torch.tensor(b)).numpy()
    ref = [stats.spearmanr(a[i], b[i]).statistic for i in range(3)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)


@pytest.fixture(scope="module")
def trained_bars(tmp_path_factory):
    """A tiny resnet8 trained on the bars dataset (a bright bar at a class-specific row)."""
    from train_helpers import tiny_config, tiny_splits
    from probe.models.folder import load_model_folder
    from probe.train.run import train
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("bars") / "model"
    splits = tiny_splits()
    meta = train(tiny_config(epochs=8, augment=False), out, splits=splits)  # a shifted bar is another class
    torch.set_num_threads(before)
    model, _ = load_model_folder(out)
    return model, splits["val"], meta


def test_randomization_check_image_map_against_vanilla(trained_bars):
    model, val, meta = trained_bars
    assert meta["metrics"]["val"]["error"] < 0.1  # it learned the bars
    x, y = val.images[:6], val.labels[:6]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    image_map = lambda net, inp, t: inp[:, 0]  # noqa: E731 - ignores the model entirely
    r = randomization_check(model, x, y, methods={"image": image_map, **_vanilla()})
    assert r.steps == ["fc", "stage3", "stage2", "stage1", "stem"]
    assert r.spearman["image"].shape == (5, 6)
    assert torch.allclose(r.spearman["image"], torch.ones(5, 6, dtype=torch.float64))
    assert r.final["vanilla"] < 0.3  # 0.05-0.17 over seeds 0-2
    assert r.flagged == ["image"]
    for k, v in model.state_dict().items():  # the caller's model is never randomized
        assert torch.equal(v, before[k]), k
    # The layers randomized grow step by step, from the top.
    assert r.layers[0] == ["net.fc"] and r.layers[-1][-1] == "net.stem"
    assert all(set(a) < set(b) for a, b in zip(r.layers, r.layers[1:]))
    # Method names work too, with the trained maps given or computed.
    s = attribute(model, x, y, methods="vanilla")
    by_name = randomization_check(model, x, y, methods=["vanilla"], trained_maps=s.maps)
    torch.testing.assert_close(by_name.spearman["vanilla"], r.spearman["vanilla"])
    whole = randomization_check(model, x, y, methods=["vanilla"], cascade=False)
    assert whole.steps == ["all"] and whole.spearman["vanilla"].shape == (1, 6)


def _vanilla():
    from probe.methods.saliency import explainer
    return {"vanilla": explainer("vanilla")}


def test_cascade_groups_of_any_model():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.BatchNorm2d(2),
                          nn.Flatten(), nn.Linear(8, 3))
    groups = cascade_groups(model)
    assert groups[0] == ("5", ["5"])  # the top layer alone first
    names = [n for _, g in groups for n in g]
    assert names == ["5", "3", "2", "0"]
    with pytest.raises(ConfigError, match="no parameters"):
        cascade_groups(nn.ReLU())


def test_config_is_checked():
    with pytest.raises(ConfigError):
        FaithfulnessConfig(steps=0)
    with pytest.raises(ConfigError):
        FaithfulnessConfig(insertion_start="grey")
    with pytest.raises(ConfigError):
        SaliencyConfig(ig_steps=0)
    with pytest.raises(ConfigError, match="shape"):
        deletion_insertion(OnePixel(), torch.rand(2, 1, 4, 4), 1, {"m": torch.rand(2, 5, 5)})


# ---- what the numbers rest on: constant maps, signs, flags on one image, worse than random ----------


def test_a_map_gone_constant_counts_as_changed_and_a_constant_trained_map_is_left_out():
    trained = torch.rand(3, 5, 5)
    trained[2] = 0.7  # constant: no ranking to lose
    flat = torch.zeros(3, 5, 5)  # the randomized model's maps went constant
    rho = map_correlation(trained, flat)
    assert rho[:2].tolist() == [0.0, 0.0] and math.isnan(float(rho[2]))
    assert math.isnan(float(spearman(trained[:1], flat[:1])))  # Spearman itself: undefined


def test_signed_correlation_sees_a_sign_flip_that_abs_cannot():
    torch.manual_seed(0)
    a = torch.randn(2, 6, 6)
    torch.testing.assert_close(map_correlation(a, -a), torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(map_correlation(a, -a, signed=True), -torch.ones(2, dtype=torch.float64))


def _gated(kind):
    """A map of OnePixel's input that depends on the model: the trained scale (20) gives one map,
    a re-initialized scale (~N(0, 0.01)) another."""
    def explain(net, x, t):
        trained = bool(net.scale.abs() > 1)
        if kind == "flat":
            return x[:, 0] if trained else torch.zeros_like(x[:, 0])
        return (x[:, 0] - 0.5) * (1 if trained else -1)  # "flip": the signs change, |map| does not
    return explain


def test_randomization_counts_flat_maps_as_changed_and_never_flags_on_one_image():
    torch.manual_seed(0)
    x = torch.rand(4, 1, 6, 6)
    methods = {"flat": _gated("flat"), "flip": _gated("flip"), "image": lambda net, inp, t: inp[:, 0]}
    r = randomization_check(OnePixel(), x, 1, methods=methods)
    assert r.n == {"flat": 4, "flip": 4, "image": 4}
    assert r.final["flat"] == 0.0 and r.flat["flat"][-1].all()  # today's bug: dropped, mean of nothing
    assert r.final["flip"] == 1.0 and r.final_signed["flip"] == -1.0
    assert r.flagged == ["flip", "image"]
    s = r.summary()
    assert s["n"]["flat"] == 4 and s["constant_maps"]["flat"] == [4] and s["final_signed"]["flip"] == -1.0
    one = randomization_check(OnePixel(), x[:1], 1, methods=methods)
    assert one.high == ["flip", "image"] and one.flagged == [] and one.n["image"] == 1
    assert one.summary()["too_few_to_flag"] == ["flip", "image"]
    # A trained map that is constant has no rank correlation: left out of n.
    const = randomization_check(OnePixel(), x[:2], 1, methods={"c": lambda net, inp, t: torch.ones_like(inp[:, 0])})
    assert const.n == {"c": 0} and math.isnan(const.final["c"]) and const.flagged == []


def test_a_method_worse_than_the_random_order_is_flagged_on_two_images_or_more():
    n, h, w = 4, 8, 8
    x = torch.rand(n, 1, h, w) * 0.3
    x[:, 0, 2, 3] = 1.0
    good, bad = torch.zeros(n, h, w), torch.rand(n, h, w)
    good[:, 2, 3] = 1.0
    bad[:, 2, 3] = -1.0  # the decisive pixel last: worse than any random order
    cfg = FaithfulnessConfig(steps=16, random_orders=4, insertion_start="zero")
    di = deletion_insertion(OnePixel(), x, 1, {"good": good, "bad": bad}, config=cfg)
    for kind in ("deletion", "insertion"):
        v = di.versus_random(kind)
        assert v["bad"]["worse"] and v["bad"]["images_worse"] == n and v["bad"]["sign_test_p"] == 2 / 2 ** n
        assert not v["good"]["worse"] and v["good"]["images_better"] == n
    assert di.summary()["bad"]["deletion_vs_random"]["worse"] and "deletion_vs_random" not in di.summary()[RANDOM]
    one = deletion_insertion(OnePixel(), x[:1], 1, {"bad": bad[:1]}, config=cfg).versus_random("deletion")["bad"]
    assert one["mean_worse"] and not one["worse"]  # one image: too few to flag


def test_sign_test_by_hand():
    assert sign_test(4, 0) == 0.125 and sign_test(0, 4) == 0.125
    assert sign_test(2, 2) == 1.0 and sign_test(0, 0) == 1.0
    assert math.isclose(sign_test(9, 1), 2 * (1 + 10) / 2 ** 10)
