"""Adversarial training: each batch replaced by adversarial images of itself before the step.

- "pgd" (Madry et al. 2018): `steps` steps of projected gradient ascent on the loss, L∞, from a
  uniformly random point of the ε-ball, step 2.5·ε/steps unless given.
- "fgsm-rs" (Wong et al. 2020, "Fast is better than free"): one step of size 1.25·ε from a
  uniformly random point of the ball, projected back: twice the cost of a plain step.

FGSM-RS can overfit catastrophically: within an epoch the model becomes robust to FGSM but not to
PGD any more (its PGD accuracy falls to near 0). The guard (RobustValidation) measures PGD
accuracy on a fixed batch of validation images after every epoch; when it falls more than
`guard_drop` below its best, training stops and the best epoch's weights (chosen by PGD
accuracy) are the model, as Wong et al. do.

Images are [0, 1] pixels; ε is in pixel units (0.3 on MNIST). The model is the Classifier, which
normalizes inside.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from probe.data.augment import eval_view
from probe.methods.attacks import pgd, project, random_in_ball
from probe.methods.common import class_probabilities
from probe.train.callbacks import Callback

METHODS = ("pgd", "fgsm-rs")


def default_step_size(method: str, eps: float, steps: int) -> float:
    return 1.25 * eps if method == "fgsm-rs" else 2.5 * eps / steps


def perturb(forward, x: torch.Tensor, y: torch.Tensor, *, method: str, eps: float, steps: int,
            step_size: float | None, generator: torch.Generator) -> torch.Tensor:
    """Adversarial images of the batch x (B, C, H, W) in [0, 1] for labels y, by the model in
    its current mode (train: BatchNorm sees the batch it will train on). Only the input gets a
    gradient (torch.autograd.grad): the parameters' .grad stay as they are."""
    alpha = step_size if step_size is not None else default_step_size(method, eps, steps)
    n_steps = 1 if method == "fgsm-rs" else steps
    clean = x.detach()
    adv = random_in_ball(clean, eps, "linf", generator)
    for _ in range(n_steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            loss = F.cross_entropy(forward(adv).float(), y, reduction="sum")
            grad, = torch.autograd.grad(loss, adv)
        adv = project(adv.detach() + alpha * grad.sign(), clean, eps, "linf")
    return adv.detach()


class RobustValidation(Callback):
    """After every epoch: PGD accuracy on the first `n` validation images (the same images every
    epoch) into the record as val_robust_accuracy (with val_robust_n), and the catastrophic-
    overfitting guard: a fall of more than `guard_drop` below the best epoch's stops training."""

    def __init__(self, val_set, *, eps: float, n: int = 500, steps: int = 10, guard_drop: float = 0.2):
        self.images = eval_view(val_set.images[:n], val_set.spec)  # what the network sees
        self.labels = val_set.labels[:n].cpu()
        self.eps, self.steps, self.guard_drop = eps, steps, guard_drop
        self.best = None

    def on_epoch_end(self, trainer, record: dict) -> None:
        start = time.perf_counter()
        model = trainer.model
        was_training = model.training
        model.eval()
        try:
            adv = pgd(model, self.images, self.labels, self.eps, steps=self.steps, seed=0,
                      batch_size=trainer.cfg.eval_batch_size)
            probs = class_probabilities(model, adv, batch_size=trainer.cfg.eval_batch_size)
        finally:
            model.train(was_training)
        acc = float((probs.argmax(1) == self.labels).float().mean())
        record.update(val_robust_accuracy=acc, val_robust_n=len(self.labels), val_robust_error=1 - acc)
        self.best = acc if self.best is None else max(self.best, acc)
        if self.best - acc > self.guard_drop:
            record["stopped"] = (f"catastrophic overfitting: PGD-{self.steps} accuracy at ε {self.eps:g} fell "
                                 f"from {self.best:.1%} to {acc:.1%}; the most robust epoch is kept")
            trainer.total_steps = trainer.state.step  # the loop ends after this epoch
        trainer.state.elapsed += time.perf_counter() - start
