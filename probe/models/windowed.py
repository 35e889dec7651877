"""The logits of an image with one window of it replaced, for every window of a grid at once
(occlusion), computed only where the change reaches in the network's first layers.

A window changes the input in a few pixels; each 3×3 convolution spreads the change by one pixel
a side. While the changed region stays under half the image (MAX_AREA), a probe ResNet's stem and
blocks run on each window's region alone: its values come from the changed pass, the ring around
it from the pass over the unchanged image (the same numbers there), and the convolutions need no
padding. After that the regions are pasted into copies of the unchanged activations and the rest
of the network runs as usual. The first stage of an MNIST or CIFAR ResNet is about half of a
forward pass, and a 4×4 window's region grows to 18×18 by its end: occlusion runs about 1.4×
faster (benchmarks/saliency_speed.py), its logits those of the occluded images to float rounding
(~1e-6).

Used for a BatchNorm-folded probe ResNet (`inference_copy`) whose first blocks are basic 3×3
blocks (post- or pre-activation) with an identity shortcut or none, of exactly probe's types (a subclass may compute
something else), and only where nothing could tell the difference: no hooks or replaced forwards
on any module, finite images, fill value and weights. Anything else returns None (the caller
computes the occluded images as they are).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from probe.models import fused
from probe.models.classifier import Classifier, Normalize
from probe.models.resnet import PostActBlock, PreActBlock, ResNet


@dataclass(frozen=True)
class WindowGrid:
    """captum's Occlusion windows over an H×W image: top-left corners (i·stride, j·stride) for
    i < rows, j < cols, as many as reach past the last pixel (the last window is cut at the
    edge where the stride does not divide H − window)."""
    height: int
    width: int
    window: int
    stride: int

    @property
    def rows(self) -> int:
        return math.ceil((self.height - self.window) / self.stride) + 1

    @property
    def cols(self) -> int:
        return math.ceil((self.width - self.window) / self.stride) + 1

    def spread(self, drops: torch.Tensor) -> torch.Tensor:
        """(N, rows, cols) values of the windows → (N, H, W): each pixel the mean of the values of
        the windows that cover it (captum's Occlusion: the sum over windows / their count)."""
        kernel = torch.ones(1, 1, self.window, self.window, dtype=drops.dtype, device=drops.device)
        total = F.conv_transpose2d(drops[:, None], kernel, stride=self.stride)[:, 0, :self.height, :self.width]
        count = F.conv_transpose2d(torch.ones_like(drops[:1, None]), kernel,
                                   stride=self.stride)[:, 0, :self.height, :self.width]
        return total / count


def occluded_logits(model: nn.Module, x: torch.Tensor, grid: WindowGrid, value: float,
                    batch_size: int) -> torch.Tensor | None:
    """(N, rows, cols, K): the logits of each image of x (N, C, H, W) with each window of `grid`
    set to `value` (in the model's input units) over every channel; None where the model is not
    one this module can compute (see the module's docstring)."""
    plan = _plan(model, grid)
    if plan is None:
        return None
    normalize, net, blocks = plan
    out = []
    with torch.no_grad():
        # NaN or inf: the fused kernels and torch.relu treat NaN differently (probe.models.fused),
        # so such inputs go through the occluded images, as the model itself would run them
        if not (math.isfinite(value) and fused.all_finite(x, (model,))):
            return None
        filled = normalize(torch.full((1, x.shape[1], 1, 1), float(value), dtype=x.dtype, device=x.device))
        chunks = [_Chunk(grid, rows, cols, x.device) for rows, cols in _chunks(grid, batch_size)]
        for image in x:
            levels = _unchanged_levels(normalize, net, blocks, image[None])
            logits = [_occluded_chunk(net, blocks, levels, filled, chunk) for chunk in chunks]
            out.append(torch.cat(logits).view(grid.rows, grid.cols, -1))
    return torch.stack(out)


# The regions stop growing before a block that would leave them larger than this share of the
# image: beyond it the crops and the paste cost more than the smaller convolutions save. Where
# not even one block fits, the occluded images are computed as they are.
MAX_AREA = 0.5


def _plan(model: nn.Module, grid: WindowGrid) -> tuple[nn.Module, ResNet, list[nn.Module]] | None:
    """(the input's normalization, the ResNet, the blocks to run on the windows' regions), or None.
    Exact types: a subclass may compute something else in a forward of its own."""
    net = model.net if type(model) is Classifier else model
    normalize = model.normalize if type(model) is Classifier else nn.Identity()
    if type(net) is not ResNet or type(normalize) not in (Normalize, nn.Identity) or not _stem_on_regions(net) \
            or type(net.stages) is not nn.Sequential or any(type(stage) is not nn.Sequential for stage in net.stages):
        return None
    if not fused.as_built(model.modules()):
        return None
    side, blocks = grid.window + 2, []  # the changed region's side after the stem
    for block in net.blocks():
        if not _block_on_regions(block):
            break
        side += 2 * block.n
        if side * side > MAX_AREA * grid.height * grid.width:
            break
        blocks.append(block)
    # the stem alone saves too little to pay for the crops and the paste (0.95-1.0× in a benchmark)
    return (normalize, net, blocks) if blocks else None


def _stem_on_regions(net: ResNet) -> bool:
    """A 3×3 stem conv with its folded BN and ReLU (post-activation) or alone (pre-activation)."""
    stem = net.stem
    alone = type(stem) is nn.Sequential and list(stem._modules) == ["conv"]
    return (alone or (net._stem_fusable() and not hasattr(stem, "pool"))) and _three_by_three(stem.conv)


def _block_on_regions(block: nn.Module) -> bool:
    """A folded basic block of 3×3 convs with an identity shortcut or none; pre-activation with its
    first BatchNorm (which sees a sum and stays) in eval mode."""
    if type(block) is PreActBlock:
        if not (type(block.bn1) is nn.BatchNorm2d and not block.bn1.training and fused.plain_relu(block.relu1)):
            return False
    elif type(block) is not PostActBlock:
        return False
    return block.fusable() and type(block.shortcut) in (nn.Identity, type(None)) \
        and all(_three_by_three(getattr(block, f"conv{i}")) for i in range(1, block.n + 1))


def _activated(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """What a block's first conv sees: a pre-activation block's BN→ReLU of its input, else the input."""
    return block.relu1(block.bn1(x)) if type(block) is PreActBlock else x


def _chunks(grid: WindowGrid, batch_size: int) -> list[tuple[range, range]]:
    """The windows in passes of at most batch_size, row-major: whole rows of windows where a row
    fits, else pieces of a row."""
    if batch_size >= grid.cols:
        per = batch_size // grid.cols
        return [(range(r, min(grid.rows, r + per)), range(grid.cols)) for r in range(0, grid.rows, per)]
    return [(range(r, r + 1), range(c, min(grid.cols, c + batch_size)))
            for r in range(grid.rows) for c in range(0, grid.cols, batch_size)]


def _three_by_three(conv: nn.Conv2d) -> bool:
    return fused.plain_conv(conv) and conv.kernel_size == (3, 3) and conv.stride == (1, 1) \
        and conv.padding == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1


def _unchanged_levels(normalize, net: ResNet, blocks: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """The unchanged image's activations that the windows' convolutions read around their regions:
    the stem's input, then each block's input and the outputs of its convolutions but the last,
    and last the output of the last block run on regions."""
    h = normalize(x)
    levels = [h]
    h = net._stem(h)
    for block in blocks:
        levels.append(h)
        inner = _activated(block, h)
        for i in range(1, block.n):
            inner = torch.relu(getattr(block, f"conv{i}")(inner))
            levels.append(inner)
        h = block(h)
    levels.append(h)
    return [t.contiguous(memory_format=torch.channels_last) for t in levels]


class _Chunk:
    """The windows of grid rows × columns (ranges): where each window's changed region lies at
    each reach (its side), and which of its pixels are inside the image; the same for every image."""

    def __init__(self, grid: WindowGrid, rows: range, cols: range, device: torch.device):
        self.grid, self.device = grid, device
        self.top = torch.tensor(rows) * grid.stride  # the windows' top rows and left columns
        self.left = torch.tensor(cols) * grid.stride
        self.rows, self.cols = len(rows), len(cols)
        self.n = self.rows * self.cols
        self._inside: dict = {}
        self._pixels: dict = {}

    def crop(self, level: torch.Tensor, grow: int, side: int) -> torch.Tensor:
        """(n, C, side, side), channels_last, a tensor of its own: `level` (1, C, H, W) on each
        window's square that starts `grow` pixels up and left of the window, zero outside the image."""
        stride = self.grid.stride
        pad = grow + stride + side  # enough on every side for the farthest window
        padded = F.pad(level, (pad, pad, pad, pad)).contiguous(memory_format=torch.channels_last)
        s_n, s_c, s_h, s_w = padded.stride()
        top, left = int(self.top[0]), int(self.left[0])
        view = padded.as_strided((self.rows, self.cols, side, side, padded.shape[1]),
                                 (stride * s_h, stride * s_w, s_h, s_w, s_c),
                                 padded.storage_offset() + (pad + top - grow) * s_h + (pad + left - grow) * s_w)
        # a copy even where a view would do (one row of windows): the windows' squares overlap
        return view.contiguous().view(self.n, side, side, padded.shape[1]).permute(0, 3, 1, 2)

    def inside(self, grow: int, side: int, dtype: torch.dtype) -> torch.Tensor:
        """(n, 1, side, side): 1 where the square's pixel is in the image, else 0."""
        key = (grow, side, dtype)
        if key not in self._inside:
            ones = torch.ones(1, 1, self.grid.height, self.grid.width, dtype=dtype, device=self.device)
            self._inside[key] = self.crop(ones, grow, side)
        return self._inside[key]

    def paste(self, level: torch.Tensor, region: torch.Tensor, grow: int) -> torch.Tensor:
        """(n, C, H, W) channels_last: copies of `level` (1, C, H, W), each with its window's region
        (n, C, side, side), starting `grow` up and left of the window, written over it inside the image."""
        side = region.shape[-1]
        if (grow, side) not in self._pixels:
            self._pixels[grow, side] = self._in_image(grow, side)
        image, ys, xs, keep = self._pixels[grow, side]
        # a copy even of one window's (contiguous() would hand back `level` itself to write over)
        full = level.expand(self.n, -1, -1, -1).clone(memory_format=torch.channels_last)
        full.permute(0, 2, 3, 1)[image, ys, xs] = region.permute(0, 2, 3, 1).reshape(-1, region.shape[1])[keep]
        return full

    def _in_image(self, grow: int, side: int) -> tuple[torch.Tensor, ...]:
        """The pixels of the squares inside the image: (window, row, column) indices, and their
        positions among all the squares' pixels."""
        steps = torch.arange(side)
        ys = (self.top - grow)[:, None] + steps  # (rows, side)
        xs = (self.left - grow)[:, None] + steps  # (cols, side)
        ys = ys[:, None, :, None].expand(self.rows, self.cols, side, side).reshape(-1)
        xs = xs[None, :, None, :].expand(self.rows, self.cols, side, side).reshape(-1)
        image = torch.arange(self.n).repeat_interleave(side * side)
        keep = torch.nonzero((ys >= 0) & (ys < self.grid.height) & (xs >= 0) & (xs < self.grid.width))[:, 0]
        return tuple(t.to(self.device) for t in (image[keep], ys[keep], xs[keep], keep))


def _occluded_chunk(net: ResNet, blocks: list[nn.Module], levels: list[torch.Tensor], filled: torch.Tensor,
                    chunk: _Chunk) -> torch.Tensor:
    """(n, K): the logits of the chunk's windows."""
    grow, side = 0, chunk.grid.window
    region = filled.expand(chunk.n, -1, side, side) * chunk.inside(grow, side, filled.dtype)  # the window, cut at the edge
    region = _conv_on_regions(net.stem.conv, levels[0], region, grow, chunk, relu=hasattr(net.stem, "relu"))
    grow += 1
    k = 1
    for block in blocks:
        post = type(block) is PostActBlock
        block_in, block_region, block_grow = levels[k], region, grow
        for i in range(1, block.n):
            region = _conv_on_regions(getattr(block, f"conv{i}"), levels[k + i - 1], region, grow, chunk, relu=True,
                                      pre=(lambda t, b=block: _activated(b, t)) if i == 1 else None)
            grow += 1
        # the block's input on the last conv's output region: the shortcut
        shortcut = None if block.shortcut is None else _assemble(block_in, block_region, block_grow, block.n, chunk)
        region = _conv_on_regions(getattr(block, f"conv{block.n}"), levels[k + block.n - 1], region, grow, chunk,
                                  relu=post, add=shortcut)
        grow += 1
        k += block.n
    full = chunk.paste(levels[-1], region, grow)
    return net.forward_from(full, len(blocks))


def _assemble(level: torch.Tensor, region: torch.Tensor, grow: int, margin: int, chunk: _Chunk) -> torch.Tensor:
    """(n, C, side + 2·margin, side + 2·margin): the changed region with `margin` pixels of the
    unchanged `level` around it."""
    side = region.shape[-1]
    out = chunk.crop(level, grow + margin, side + 2 * margin)
    out[:, :, margin:margin + side, margin:margin + side] = region
    return out


def _conv_on_regions(conv: nn.Conv2d, level: torch.Tensor, region: torch.Tensor, grow: int, chunk: _Chunk,
                     relu: bool, add: torch.Tensor | None = None, pre=None) -> torch.Tensor:
    """A 3×3 convolution (+ add, then ReLU if asked) of the changed region, one pixel larger a side
    than it, zero outside the image. `pre`: an elementwise function of the conv's input (a
    pre-activation block's BN→ReLU), after which the input is zero outside the image again, as
    the conv's own padding would be."""
    inputs = _assemble(level, region, grow, 2, chunk)
    if pre is not None:
        inputs = pre(inputs).mul_(chunk.inside(grow + 2, inputs.shape[-1], inputs.dtype))
    if add is not None:
        out = fused.conv_add(conv, inputs, add, relu=relu, padding=(0, 0))
    elif relu:
        out = fused.conv_relu(conv, inputs, padding=(0, 0))
    else:
        out = F.conv2d(inputs, conv.weight, conv.bias, padding=0)
    return out.mul_(chunk.inside(grow + 1, out.shape[-1], out.dtype))
