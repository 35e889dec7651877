"""Accuracy against ε: how fast a model's accuracy falls under FGSM or PGD as the allowed change
grows, with a 95% interval per point and the adversarial examples of a few images."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from torch import nn

from probe.methods.attacks import METHODS, NORMS, PRECISIONS, attack, check_eps, perturbation_size
from probe.methods.common import as_input, class_probabilities, model_dtype
from probe.methods.confusion import wilson_interval
from probe.errors import ConfigError


@dataclass
class RobustnessCurve:
    """One point per ε (ascending, ε = 0 first: the clean images). Tensors are (E, N) over the E
    values of ε and the N images, or (E, k, C, H, W) for the k example images."""
    eps: list[float]
    predicted: torch.Tensor  # (E, N) the class the model gives each adversarial image (fp32)
    p_predicted: torch.Tensor  # (E, N)
    p_true: torch.Tensor  # (E, N)
    labels: torch.Tensor  # (N,)
    linf: torch.Tensor  # (E, N) size of each image's change
    l2: torch.Tensor  # (E, N)
    seconds: list[float]  # attack time per ε
    example_index: torch.Tensor  # (k,) into the images
    examples: torch.Tensor  # (E, k, C, H, W) float [0, 1]: the example images attacked afresh at each ε
    example_predicted: torch.Tensor  # (E, k) the class the model gives each of them
    example_p: torch.Tensor  # (E, k) its probability
    num_classes: int = 0  # the model's outputs
    method: str = "pgd"
    norm: str = "linf"
    target: int | None = None
    settings: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def correct(self) -> list[int]:
        return (self.predicted == self.labels).sum(1).tolist()

    @property
    def accuracy(self) -> list[float]:
        return [c / self.n for c in self.correct]

    @property
    def clean_accuracy(self) -> float:
        return self.accuracy[0]

    def at_target(self) -> list[int] | None:
        """Targeted attacks: per ε, how many images not of the target class the model now puts
        in the target class."""
        if self.target is None:
            return None
        other = self.labels != self.target
        return ((self.predicted == self.target) & other).sum(1).tolist()

    def points(self) -> list[dict]:
        """One JSON-able record per ε."""
        out = []
        hits = self.at_target()
        n_other = int((self.labels != self.target).sum()) if self.target is not None else None
        for j, eps in enumerate(self.eps):
            correct = self.correct[j]
            lo, hi = wilson_interval(correct, self.n)
            changed = self.linf[j] > 0
            point = {"eps": eps, "accuracy": correct / self.n, "correct": correct, "n": self.n,
                     "ci95": [lo, hi], "seconds": round(self.seconds[j], 3),
                     "mean_linf": float(self.linf[j][changed].mean()) if changed.any() else 0.0,
                     "mean_l2": float(self.l2[j][changed].mean()) if changed.any() else 0.0}
            if hits is not None:
                point |= {"at_target": hits[j], "not_of_target": n_other,
                          "target_rate": hits[j] / n_other if n_other else None}
            out.append(point)
        return out


def attack_curve(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, eps, *,
                 method: str = "pgd", norm: str = "linf", steps: int = 40, step_size=None,
                 random_start: bool = True, restarts: int = 1, target: int | None = None,
                 seed: int = 0, batch_size: int = 500, precision: str = "fp32",
                 examples: int = 6, progress=None) -> RobustnessCurve:
    """Accuracy of `model` on `images` attacked at each ε (ε = 0, the clean accuracy, is always
    included), judged in fp32.

    Attacks are nested: an image broken at a smaller ε keeps its adversarial image at every
    larger ε (it lies in every larger ball), and only the images still unbroken are attacked
    again. So the curve never rises, and the work shrinks as ε grows. Images the model gets
    wrong without any change count as wrong at every ε and are not attacked. Targeted
    (`target`: a class index): the attack drives the images towards the target and stops on
    each image once it is there; accuracy is still the share classified as their true class.

    images: (N, C, H, W) uint8 or float [0, 1]; labels (N,) ≥ 0. progress: an optional
    callable(eps_index, n_done, n_to_attack).
    """
    labels, eps_list = _checked(images, labels, eps, method, norm, precision)
    clean = as_input(images, torch.device("cpu"), model_dtype(model))  # (N, C, H, W) [0, 1]
    probs = class_probabilities(model, clean, batch_size=batch_size)  # (N, K)
    if target is not None and not 0 <= int(target) < probs.shape[1]:
        raise ConfigError(f"target class {target} is not one of 0..{probs.shape[1] - 1}")
    options = {"method": method, "norm": norm, "steps": steps, "step_size": step_size,
               "random_start": random_start, "restarts": restarts, "batch_size": batch_size,
               "precision": precision, "target": target}
    adv = clean.clone()  # the current adversarial image of each image
    done = _broken(probs, labels, target)  # nothing left to do for these
    pick = _examples(probs.argmax(1), labels, examples)
    rows = {k: [] for k in ("predicted", "p_predicted", "p_true", "linf", "l2", "examples",
                            "example_predicted", "example_p")}
    seconds = []
    for j, e in enumerate(eps_list):
        started = time.perf_counter()
        todo = (~done).nonzero().flatten()  # (M,)
        if e > 0 and len(todo):
            report = (lambda n, j=j, m=len(todo): progress(j, n, m)) if progress else None
            new = _attack(model, clean[todo], labels[todo], e, seed + j, options, report)
            p_new = class_probabilities(model, new, batch_size=batch_size)  # fp32 judge
            adv[todo], probs[todo] = new, p_new
            done[todo] = _broken(p_new, labels[todo], target)
        seconds.append(time.perf_counter() - started)
        _record(rows, probs, labels, adv, clean)
        # The examples are attacked afresh at each ε (same settings), so the columns of their
        # figure show the change growing; in the curve a broken image keeps its first example.
        ex = _attack(model, clean[pick], labels[pick], e, seed + j, options) if e > 0 and len(pick) else clean[pick]
        p_ex = class_probabilities(model, ex, batch_size=batch_size) if len(pick) else probs[:0]
        rows["examples"].append(ex)
        rows["example_predicted"].append(p_ex.argmax(1))
        rows["example_p"].append(p_ex.max(1).values)
    return RobustnessCurve(eps=eps_list, labels=labels, seconds=seconds, example_index=pick,
                           num_classes=probs.shape[1], method=method, norm=norm,
                           target=None if target is None else int(target), settings=_settings(options, seed),
                           **{k: torch.stack(v) for k, v in rows.items()})


def _checked(images, labels, eps, method: str, norm: str, precision: str) -> tuple[torch.Tensor, list[float]]:
    """The labels as a CPU long tensor and the ascending ε list with 0, else a ConfigError."""
    if method not in METHODS:
        raise ConfigError(f"method {method!r}: use one of {', '.join(METHODS)}")
    if norm not in NORMS or precision not in PRECISIONS:
        raise ConfigError(f"norm {norm!r} / precision {precision!r}: use {'|'.join(NORMS)} / {'|'.join(PRECISIONS)}")
    labels = torch.as_tensor(labels, dtype=torch.long).cpu()
    if len(labels) != len(images) or len(labels) == 0:
        raise ConfigError(f"{len(images)} images and {len(labels)} labels: need as many of each, at least one")
    if (labels < 0).any():
        raise ConfigError("every image needs a label (≥ 0) to measure accuracy")
    return labels, sorted({0.0, *(check_eps(e) for e in ([eps] if isinstance(eps, (int, float)) else eps))})


def _broken(probs: torch.Tensor, labels: torch.Tensor, target: int | None) -> torch.Tensor:
    """(N,) bool: at the target (targeted) or away from the true class."""
    pred = probs.argmax(1)
    return pred == target if target is not None else pred != labels


def _attack(model, x, labels, eps: float, seed: int, options: dict, progress=None) -> torch.Tensor:
    target = options["target"]
    goal = torch.full((len(x),), int(target)) if target is not None else None
    return attack(model, x, labels, eps, **(options | {"target": goal}), seed=seed, progress=progress)


def _record(rows: dict, probs: torch.Tensor, labels: torch.Tensor, adv: torch.Tensor, clean: torch.Tensor) -> None:
    """One ε's row of the curve: each image's class, its probability, the true class's, the change."""
    top_p, top_k = probs.max(1)
    rows["predicted"].append(top_k)
    rows["p_predicted"].append(top_p)
    rows["p_true"].append(probs[torch.arange(len(labels)), labels])
    linf, l2 = perturbation_size(adv, clean)
    rows["linf"].append(linf)
    rows["l2"].append(l2)


def _settings(options: dict, seed: int) -> dict:
    pgd = options["method"] == "pgd"
    step_size = options["step_size"]
    return {"method": options["method"], "norm": options["norm"], "steps": options["steps"] if pgd else 1,
            "step_size": step_size if step_size is not None else ("2.5·ε/steps" if pgd else "ε"),
            "random_start": options["random_start"] if pgd else False,
            "restarts": options["restarts"] if pgd else 1, "target": options["target"], "seed": seed,
            "precision": options["precision"], "batch_size": options["batch_size"], "nested": True}


def _examples(predicted: torch.Tensor, labels: torch.Tensor, k: int) -> torch.Tensor:
    """Up to k correctly classified images, one per class first (in image order), then more."""
    right = (predicted == labels).nonzero().flatten().tolist()
    chosen, seen = [], set()
    for i in right:
        if len(chosen) < k and int(labels[i]) not in seen:
            chosen.append(i)
            seen.add(int(labels[i]))
    for i in right:
        if len(chosen) >= k:
            break
        if i not in chosen:
            chosen.append(i)
    return torch.tensor(sorted(chosen, key=lambda i: int(labels[i])), dtype=torch.long)


SUBSET_SEED = 0


def subset(n_total: int, limit: int | None, seed: int = SUBSET_SEED) -> torch.Tensor:
    """The first `limit` of a seeded permutation, in ascending order (all when limit is 0/None):
    a representative sample (MNIST's test set puts its harder writers last), the same for
    every model and every run."""
    if not limit or limit >= n_total:
        return torch.arange(n_total)
    order = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))
    return order[:limit].sort().values
