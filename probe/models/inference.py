"""Batched inference over a whole split: logits, loss, error, per-class accuracy."""
from __future__ import annotations

import copy
import weakref
from typing import Callable

import torch
import torch.nn.functional as F

from probe.data.augment import eval_view
from probe.data.imageset import ImageSet
from probe.errors import ConfigError
from probe.models.classifier import Classifier
from probe.models.resnet import ResNet


def to_input(x: torch.Tensor, channels_last: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The one converter of pixels: uint8 (N, C, H, W) → float [0, 1], the units every analysis
    works in (float images are only cast to `dtype`)."""
    x = x.to(dtype).div_(255) if x.dtype == torch.uint8 else x.to(dtype)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def inference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of a probe ResNet (bare or in a Classifier) for evaluation and input gradients only:
    BatchNorm folded into the convs before it (ResNet.fold_batchnorm_), weights channels_last,
    parameters frozen, eval mode. Same outputs up to float rounding (~1e-6), and on a 2-core
    AVX2 CPU about 1.6× the images/s of a forward + input-gradient pass (benchmarks/attack_speed.py).
    Made once per model and state: the copy is kept (beside a weak reference to the model) until
    a parameter or buffer of the model changes (an optimizer step, load_state_dict, .to()).
    Any other model comes back as it is (its forward is not ours to rearrange)."""
    net = model.net if isinstance(model, Classifier) else model
    if not isinstance(net, ResNet) or getattr(model, "folded_for_inference", False):
        return model
    key = _state_key(model)
    kept = _COPIES.get(model)
    if kept is not None and kept[0] == key:
        return kept[1]
    fast = copy.deepcopy(model).eval()
    (fast.net if isinstance(fast, Classifier) else fast).fold_batchnorm_()
    fast = fast.to(memory_format=torch.channels_last)
    for p in fast.parameters():
        p.grad = None
        p.requires_grad_(False)
    fast.folded_for_inference = True  # a copy of a copy would only cost time
    _COPIES[model] = (key, fast)
    return fast


_COPIES: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _state_key(model: torch.nn.Module) -> tuple:
    """Where each tensor lives, how often it was changed in place (autograd's version counter),
    and two sums of each floating tensor, its norm and a sum weighted by position (an edit
    through `.data` bypasses the counter; the weighted sum sees a sign flip or a permutation,
    which keep the norm): any change to the weights or statistics changes the key."""
    tensors = (*model.parameters(), *model.buffers())
    floats = [t.detach() for t in tensors if t.is_floating_point()]
    with torch.no_grad():
        norms = tuple(torch.stack(torch._foreach_norm(floats)).tolist()) if floats else ()
        weighted = tuple(torch.stack([(t.flatten().double() * _position_weights(t.numel(), t.device)).sum()
                                      for t in floats]).tolist()) if floats else ()
    return tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in tensors), norms, weighted


def _position_weights(n: int, device: torch.device) -> torch.Tensor:
    """1, 1 + 1/n, ... < 2: distinct for every position, so that moving values changes the sum."""
    return torch.arange(n, dtype=torch.float64, device=device).div_(max(n, 1)).add_(1)


def checked_logits(output) -> torch.Tensor:
    """A model's output when it is logits (N, K), else a ConfigError saying what to give instead
    (models returning a tuple or a dict, as some libraries' do, fail deep inside otherwise)."""
    if not isinstance(output, torch.Tensor):
        raise ConfigError(f"the model returned a {type(output).__name__}, not a tensor of logits (N, K): wrap it "
                          "in a module whose forward returns the logits alone (e.g. its output[0] or output['logits'])")
    if output.ndim != 2 or not output.is_floating_point():
        raise ConfigError(f"the model returned a {output.dtype} tensor of shape {tuple(output.shape)}, not logits "
                          "(N, K): one row of class scores per image")
    return output


def batched_logits(model: torch.nn.Module, images: torch.Tensor, prepare: Callable[[torch.Tensor], torch.Tensor], *,
                   batch_size: int = 500, num_classes: int = 0, progress=None) -> torch.Tensor:
    """The one batched forward: logits (N, K) float32 on the CPU, in eval mode (the model's
    mode restored afterwards) and inference mode. prepare: a batch as stored → the model's
    input; progress: an optional callable(n_done) after each batch."""
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                # kept on the device: one copy to the CPU at the end, not a sync per batch
                out.append(checked_logits(model(prepare(images[start:start + batch_size]))).float())
                if progress is not None:
                    progress(min(start + batch_size, len(images)))
    finally:
        model.train(was_training)
    return torch.cat(out).cpu() if out else torch.empty(0, num_classes)


def predict_logits(model: torch.nn.Module, images: torch.Tensor, spec, *, batch_size: int = 500,
                   device: torch.device | str = "cpu", channels_last: bool = False) -> torch.Tensor:
    """Logits (N, K) of stored images (the dataset's evaluation view), float32 on the CPU."""
    def prepare(batch):
        return to_input(eval_view(batch, spec).to(device, non_blocking=True), channels_last)
    return batched_logits(model, images, prepare, batch_size=batch_size, num_classes=spec.num_classes)


def metrics_from_logits(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> dict:
    """Loss, error and per-class accuracy over the labelled images (label ≥ 0)."""
    keep = labels >= 0
    logits, labels = logits[keep], labels[keep].cpu()
    n = len(labels)
    if n == 0:
        return {"n": 0}
    pred = logits.argmax(1)
    correct = pred == labels
    per_class = []
    for c in range(num_classes):
        mask = labels == c
        per_class.append(float(correct[mask].float().mean()) if mask.any() else None)  # None: no image
    # Kaggle's multi-class log loss clips probabilities to [1e-15, 1 - 1e-15].
    probs = logits.softmax(1).clamp(1e-15, 1 - 1e-15)
    probs = probs / probs.sum(1, keepdim=True)
    return {
        "n": n,
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": float(correct.float().mean()),
        "error": 1.0 - float(correct.float().mean()),
        "log_loss": float(-probs[torch.arange(n), labels].log().mean()),
        "per_class_accuracy": per_class,
        "per_class_n": torch.bincount(labels, minlength=num_classes)[:num_classes].tolist(),
    }


def evaluate(model: torch.nn.Module, data: ImageSet, *, batch_size: int = 500,
             device: torch.device | str = "cpu", channels_last: bool = False) -> dict:
    logits = predict_logits(model, data.images, data.spec, batch_size=batch_size, device=device,
                            channels_last=channels_last)
    return metrics_from_logits(logits, data.labels, data.spec.num_classes)
