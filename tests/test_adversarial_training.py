"""Adversarial training: the perturbation, the history, the choice of the most robust epoch, the
catastrophic-overfitting guard, resume, and bad options."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from probe.errors import ConfigError
from probe.models.classifier import Classifier
from probe.models.resnet import ResNet, get_config
from probe.train.adversarial import RobustValidation, perturb
from probe.train.run import train

from train_helpers import tiny_config, tiny_splits


def _model():
    torch.manual_seed(0)
    return Classifier(ResNet(get_config("resnet8", num_classes=10, in_channels=1, width=0.25)), [0.1], [0.3]).eval()


@pytest.mark.parametrize("method, steps", [("fgsm-rs", 1), ("pgd", 5)])
def test_perturbation_stays_in_the_ball_and_the_box_and_raises_the_loss(method, steps):
    model, x = _model(), torch.rand(32, 1, 12, 12)
    y = model(x).argmax(1)  # the model's own labels: an attack can only raise their loss
    g = torch.Generator().manual_seed(0)
    adv = perturb(model, x, y, method=method, eps=0.2, steps=steps, step_size=None, generator=g)
    assert (adv - x).abs().max() <= 0.2 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    loss = lambda z: torch.nn.functional.cross_entropy(model(z), y).item()  # noqa: E731
    noise = (x + (torch.rand(x.shape, generator=g) * 2 - 1) * 0.2).clamp(0, 1)
    assert loss(adv) > loss(noise) > 0
    # only the input had a gradient: nothing accumulated on the parameters
    assert all(p.grad is None for p in model.parameters())


def test_fgsm_rs_is_one_step_of_one_and_a_quarter_epsilon_from_a_random_start():
    model, x = _model(), torch.rand(4, 1, 12, 12) * 0.5 + 0.25  # away from the [0, 1] edges
    y = torch.zeros(4, dtype=torch.long)
    start = torch.Generator().manual_seed(3)
    from probe.methods.attacks import random_in_ball
    x0 = random_in_ball(x, 0.1, "linf", start).requires_grad_(True)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x0), y, reduction="sum"), x0)
    by_hand = torch.maximum(torch.minimum(x0.detach() + 0.125 * grad.sign() - x, torch.tensor(0.1)),
                            torch.tensor(-0.1)) + x
    adv = perturb(model, x, y, method="fgsm-rs", eps=0.1, steps=7, step_size=None,
                  generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(adv, by_hand.clamp(0, 1))


def test_adversarial_run_records_robustness_keeps_the_most_robust_epoch_and_resumes(tmp_path):
    cfg = tiny_config(epochs=3, augment=False, adversarial="fgsm-rs", adv_eps=0.1)
    meta = train(cfg, tmp_path / "m", splits=tiny_splits())
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert all(0 <= h["val_robust_accuracy"] <= 1 and h["val_robust_n"] == 64 for h in history)
    best = min(history, key=lambda h: (h["val_robust_error"], h["epoch"]))
    assert meta["best_epoch"] == best["epoch"]
    assert meta["metrics"]["val_robust"]["accuracy"] == best["val_robust_accuracy"]
    assert meta["train"]["adversarial"] == "fgsm-rs" and meta["train"]["adv_eps"] == 0.1
    # killed after epoch 1 and resumed: the same weights as the whole run
    from test_train import StopAfter
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "cut", splits=tiny_splits(), callbacks=[StopAfter(1)])
    train(cfg, tmp_path / "cut", splits=tiny_splits(), resume=True)
    a, b = load_file(tmp_path / "m" / "resume.safetensors"), load_file(tmp_path / "cut" / "resume.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_guard_stops_a_run_whose_pgd_accuracy_collapses(tmp_path, monkeypatch):
    """A collapse is simulated: PGD accuracy 0.9 after epoch 1, then 0.1."""
    accuracies = iter([0.9, 0.1, 0.1, 0.1])

    def fake(self, trainer, record):
        acc = next(accuracies)
        record.update(val_robust_accuracy=acc, val_robust_n=64, val_robust_error=1 - acc)
        self.best = acc if self.best is None else max(self.best, acc)
        if self.best - acc > self.guard_drop:
            record["stopped"] = "catastrophic overfitting"
            trainer.total_steps = trainer.state.step
    monkeypatch.setattr(RobustValidation, "on_epoch_end", fake)
    meta = train(tiny_config(epochs=4, adversarial="fgsm-rs", adv_eps=0.1), tmp_path / "m", splits=tiny_splits())
    history = json.loads((tmp_path / "m" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "catastrophic" in history[-1]["stopped"]
    assert meta["best_epoch"] == 1  # the robust epoch's weights are the model


def test_the_real_guard_flags_a_fall_beyond_the_allowed_drop():
    class T:  # the parts of a Trainer the callback reads
        pass
    splits = tiny_splits()
    guard = RobustValidation(splits["val"], eps=0.1, n=16, steps=2, guard_drop=0.2)
    t = T()
    t.model, t.device = _model(), torch.device("cpu")
    t.cfg = tiny_config()
    t.state = type("S", (), {"step": 7, "elapsed": 0.0})()
    t.total_steps = 100
    record = {}
    guard.best = 1.0  # as if an earlier epoch had been perfectly robust
    guard.on_epoch_end(t, record)
    assert record["val_robust_n"] == 16 and record["val_robust_accuracy"] < 0.8
    assert "stopped" in record and t.total_steps == 7


@pytest.mark.parametrize("changes, words", [
    (dict(adversarial="pgd"), "--eps 0"),
    (dict(adversarial="fgsm", adv_eps=0.3), "use pgd or fgsm-rs"),
    (dict(adversarial="pgd", adv_eps=0.3, adv_steps=0), "--adv-steps 0"),
    (dict(adv_eps=0.3), "add --adversarial"),
])
def test_bad_adversarial_options_are_config_errors(changes, words):
    with pytest.raises(ConfigError, match=words.replace("-", "\\-")):
        tiny_config(**changes)
