"""Inference passes of a BatchNorm-folded ResNet with fewer kernels on the CPU.

oneDNN can run a convolution together with the ReLU after it, or with the residual addition and
that ReLU, as one kernel (post-ops): each activation is written once, where separate ops read and
write it again for the ReLU and again for the addition. The numbers are the same (the post-op
acts on the float32 accumulator the plain convolution would write; tests compare bitwise), and a
forward pass of resnet20 is 1.05-1.22× faster on a 2-core AVX-512 CPU (benchmarks/inference_speed.py):
occlusion, the misclassified and robustness passes of a report, predictions.

Used for batches of MIN_IMAGES or more, and only where nothing can tell the difference:
- no gradient being recorded: grad mode off, or neither the input nor a parameter needing one
  (Grad-CAM's pass up to its layer);
- no forward-mode AD or torch.func transform, no autocast, not under torch.compile;
- float32 on the CPU, and a convolution that torch itself would run on oneDNN (a batch of one
  image goes to another kernel, whose sums round differently);
- no hook or replaced forward on any module the fused kernel stands in for, so Grad-CAM's hooks,
  Guided Backprop's ReLUs and captum's layer hooks see every module exactly as before;
- finite inputs and weights: oneDNN's ReLU post-op turns NaN into 0, where torch.relu keeps it.
  A ResNet checks its input and weights once per pass (`finite_pass`); a block called on its
  own checks its input.
"""
from __future__ import annotations

import contextlib
from contextvars import ContextVar
from typing import Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import forward_ad as _forward_ad
from torch.nn.modules import module as _module


def _kernels_available() -> bool:
    try:
        torch.ops.mkldnn._convolution_pointwise  # noqa: B018 - a build without oneDNN lacks it
    except (AttributeError, RuntimeError):
        return False
    return torch.backends.mkldnn.is_available()


AVAILABLE = _kernels_available()
# Below this many images a pass is no faster fused: each fused call sets up its oneDNN kernel
# anew (resnet20 at 1×28×28, one thread: 0.83× at 2 images, 1.02× at 16, 1.20× at 64, 1.27× at 128).
MIN_IMAGES = 64


def plain_conv(m: nn.Module) -> bool:
    return type(m) is nn.Conv2d and m.padding_mode == "zeros" and isinstance(m.padding, tuple)


def plain_relu(m: nn.Module) -> bool:
    return type(m) is nn.ReLU


def folded_bn(m: nn.Module) -> bool:
    return type(m) is nn.Identity


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Every pass with the separate ops while inside: what the fused kernels are compared against."""
    global AVAILABLE
    was, AVAILABLE = AVAILABLE, False
    try:
        yield
    finally:
        AVAILABLE = was


def usable(x: torch.Tensor, modules: Iterable[nn.Module]) -> bool:
    """Whether this pass may run fused: see the module's docstring."""
    if x.dim() != 4 or not _fusable_input(x):
        return False
    # the fused kernels have no derivative: not under forward-mode AD or torch.func's transforms
    if _forward_ad._current_level >= 0 or torch._C._functorch.is_functorch_wrapped_tensor(x):
        return False
    modules = tuple(modules)
    if not as_built(modules):
        return False
    # ... nor a backward one: only where autograd would record nothing anyway
    if torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())):
        return False
    finite = _FINITE.get()
    return all_finite(x, modules) if finite is None else finite


def _fusable_input(x: torch.Tensor) -> bool:
    """A batch the fused kernels could take: float32 on the CPU, MIN_IMAGES or more, oneDNN on,
    no autocast, not compiling."""
    return AVAILABLE and x.device.type == "cpu" and x.dtype == torch.float32 and len(x) >= MIN_IMAGES \
        and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu") \
        and not torch.compiler.is_compiling()


def as_built(modules: Iterable[nn.Module]) -> bool:
    """No forward hook (global or on any of the modules) and no replaced forward: computing
    these modules another way, nobody could tell."""
    if _module._global_forward_hooks or _module._global_forward_pre_hooks:
        return False
    return not any(m._forward_hooks or m._forward_pre_hooks or "forward" in m.__dict__ for m in modules)


# Whether the pass now running (`finite_pass`) has finite inputs and weights; None outside one.
_FINITE: ContextVar[bool | None] = ContextVar("probe_fused_finite", default=None)


def all_finite(x: torch.Tensor, modules: Iterable[nn.Module]) -> bool:
    """No NaN or ±inf in x or the modules' parameters. A sum is one fast pass; where it overflows
    to inf the tensor counts as not finite, and the pass merely runs unfused."""
    sums = [x.sum(), *(p.sum() for m in modules for p in m.parameters())]
    return bool(torch.stack(sums).sum().isfinite())


@contextlib.contextmanager
def finite_pass(x: torch.Tensor, model: nn.Module) -> Iterator[None]:
    """While inside (a model's forward pass), the fused kernels' check of finite numbers is made
    once, on the pass's input and the model's weights, instead of at every block. Checked only
    where a kernel could be fused (float32 on the CPU, no autocast)."""
    if _FINITE.get() is not None or not _fusable_input(x):
        yield
        return
    token = _FINITE.set(all_finite(x, (model,)))
    try:
        yield
    finally:
        _FINITE.reset(token)


def _onednn(conv: nn.Conv2d, x: torch.Tensor, padding) -> bool:
    """Whether torch's own convolution runs this one on oneDNN too: only then are the fused
    kernel's numbers the separate ops' (one image, or a 1×1 conv on one thread, goes to another
    kernel: torch.nn.functional.conv2d picks by shape and threads)."""
    if not AVAILABLE or not torch.backends.mkldnn.enabled or torch.is_autocast_enabled("cpu"):
        return False
    try:
        backend = torch._C._select_conv_backend(x, conv.weight, conv.bias, conv.stride, padding,
                                                conv.dilation, False, (0, 0), conv.groups, None)
    except (AttributeError, RuntimeError, TypeError):  # a torch without this query: play safe
        return False
    return backend == torch._C._ConvBackend.Mkldnn


def _conv(conv: nn.Conv2d, x: torch.Tensor, padding) -> torch.Tensor:
    return F.conv2d(x, conv.weight, conv.bias, conv.stride, padding, conv.dilation, conv.groups)


def conv_relu(conv: nn.Conv2d, x: torch.Tensor, padding: tuple[int, int] | None = None) -> torch.Tensor:
    """relu(conv(x)), as one kernel where torch would run the conv on oneDNN; `padding` instead
    of the conv's own if given."""
    padding = conv.padding if padding is None else padding
    if not _onednn(conv, x, padding):
        return torch.relu(_conv(conv, x, padding))
    return torch.ops.mkldnn._convolution_pointwise(
        x, conv.weight, conv.bias, padding, conv.stride, conv.dilation, conv.groups, "relu", [], "")


def conv_add(conv: nn.Conv2d, x: torch.Tensor, other: torch.Tensor, relu: bool,
             padding: tuple[int, int] | None = None) -> torch.Tensor:
    """conv(x) + other, then relu if asked, as one kernel where torch would run the conv on oneDNN;
    `padding` instead of the conv's own if given."""
    padding = conv.padding if padding is None else padding
    if not _onednn(conv, x, padding):
        out = _conv(conv, x, padding) + other
        return torch.relu(out) if relu else out
    return torch.ops.mkldnn._convolution_pointwise.binary(
        x, other, conv.weight, conv.bias, padding, conv.stride, conv.dilation, conv.groups, "add", None,
        "relu" if relu else None, [], "" if relu else None)
