"""Where a model fails: every wrong image of a split, ordered by the confidence of the wrong
answer, with the true class, the prediction and the second choice (the seed's grid)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from probe.analysis.common import class_probabilities
from probe.errors import ConfigError


@dataclass
class Misclassified:
    """The wrong images, most confident mistake first. Tensors are (M,) over the M wrong images,
    except `probs` (N, K): every image's class probabilities, kept for the confusion matrix."""
    index: torch.Tensor  # into the analysed images
    label: torch.Tensor
    predicted: torch.Tensor
    p_predicted: torch.Tensor
    second: torch.Tensor  # the second-largest probability's class
    p_second: torch.Tensor
    p_true: torch.Tensor
    probs: torch.Tensor
    labels: torch.Tensor  # (N,) every image's label
    total_wrong: int  # before --max

    def __len__(self) -> int:
        return len(self.index)

    @property
    def n(self) -> int:
        return len(self.labels)

    @property
    def all_predicted(self) -> torch.Tensor:
        return self.probs.argmax(1)  # (N,)

    def records(self, class_names=None, image_names=None) -> list[dict]:
        """One JSON-able record per wrong image."""
        name = (lambda k: class_names[k]) if class_names is not None else (lambda k: k)
        out = []
        for j in range(len(self)):
            i = int(self.index[j])
            out.append({
                "index": i, **({"image": image_names[i]} if image_names is not None else {}),
                "true": name(int(self.label[j])), "predicted": name(int(self.predicted[j])),
                "p_predicted": round(float(self.p_predicted[j]), 6),
                "second": name(int(self.second[j])), "p_second": round(float(self.p_second[j]), 6),
                "p_true": round(float(self.p_true[j]), 6),
            })
        return out


def misclassified(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                  max_images: int | None = None, batch_size: int = 500, progress=None) -> Misclassified:
    """images: (N, C, H, W) uint8 or float [0, 1], as the model takes them; labels: (N,) int.
    Unlabelled images (label < 0) are never counted as wrong. max_images keeps the most
    confident mistakes only (the total is still reported)."""
    if max_images is not None and max_images < 1:
        raise ConfigError(f"--max {max_images}: show at least 1 image (or leave --max out for all)")
    labels = labels.cpu().long()
    if len(labels) != len(images):
        raise ConfigError(f"{len(images)} images but {len(labels)} labels")
    probs = class_probabilities(model, images, batch_size=batch_size, progress=progress)  # (N, K)
    top_p, top_k = probs.topk(min(2, probs.shape[1]), dim=1)  # (N, 2)
    wrong = (top_k[:, 0] != labels) & (labels >= 0)
    index = wrong.nonzero().flatten()
    # Most confident mistake first; the stable sort keeps image order among equals.
    order = torch.sort(top_p[index, 0], descending=True, stable=True).indices
    index = index[order]
    total = len(index)
    if max_images is not None:
        index = index[:max_images]
    second = top_k[index, 1] if top_k.shape[1] > 1 else top_k[index, 0]
    return Misclassified(
        index=index, label=labels[index], predicted=top_k[index, 0], p_predicted=top_p[index, 0],
        second=second, p_second=probs[index, second], p_true=probs[index, labels[index]],
        probs=probs, labels=labels, total_wrong=total)
