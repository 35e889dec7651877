"""The confusion matrix, per-class accuracy with its 95% Wilson interval, and the most confused
pairs of classes."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from probe.errors import ConfigError

Z95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(correct: int, n: int, z: float = Z95) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (None for n = 0). Unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0 or n successes."""
    if n == 0:
        return None
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(b: int, c: int) -> float:
    """The two-sided exact McNemar test of two classifiers on the same images: b images only the
    first gets wrong, c only the second. Under "equally good" each of the b + c discordant
    images is equally likely to fall either way, so min(b, c) is Binomial(b + c, 1/2); the
    p-value is twice its lower tail, at most 1 (b + c = 0: nothing tells them apart, p = 1)."""
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"mcnemar_exact: {name} = {value!r}, not a count")
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1))
    return min(1.0, 2 * tail / 2 ** n)  # exact integers; one rounding, in the division


@dataclass
class Confusion:
    matrix: torch.Tensor  # (K, K) int64: row = true class, column = prediction

    @property
    def num_classes(self) -> int:
        return self.matrix.shape[0]

    @property
    def row_normalized(self) -> torch.Tensor:
        """Each row divided by its count (rows of absent classes stay 0)."""
        rows = self.matrix.sum(1, keepdim=True).clamp(min=1)
        return self.matrix.double() / rows

    @property
    def support(self) -> list[int]:
        return self.matrix.sum(1).tolist()

    def per_class(self) -> list[dict]:
        out = []
        for k, (correct, n) in enumerate(zip(self.matrix.diagonal().tolist(), self.support)):
            interval = wilson_interval(correct, n)
            out.append({"class": k, "correct": correct, "n": n,
                        "accuracy": correct / n if n else None,
                        "ci95": list(interval) if interval else None})
        return out

    def most_confused(self, top: int = 10) -> list[dict]:
        """The largest off-diagonal cells: (true, predicted, count, fraction of the true class)."""
        off = self.matrix.clone()
        off.fill_diagonal_(0)
        flat = off.flatten()
        order = torch.sort(flat, descending=True, stable=True).indices
        out = []
        for i in order[:top].tolist():
            count = int(flat[i])
            if count == 0:
                break
            t, p = divmod(i, self.num_classes)
            out.append({"true": t, "predicted": p, "count": count,
                        "fraction_of_true": count / self.support[t]})
        return out


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> Confusion:
    """Counts over the labelled images (label ≥ 0)."""
    labels, predicted = labels.cpu().long(), predicted.cpu().long()
    keep = labels >= 0
    if keep.any() and int(labels[keep].max()) >= num_classes:
        raise ConfigError(f"label {int(labels[keep].max())} for a model of {num_classes} classes: "
                          f"labels must be 0..{num_classes - 1} (or -1 for an unlabelled image)")
    cells = labels[keep] * num_classes + predicted[keep]
    return Confusion(torch.bincount(cells, minlength=num_classes ** 2).view(num_classes, num_classes))
