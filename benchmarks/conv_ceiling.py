"""The ceiling of a network's passes: its convolutions alone, each fed a random input of the
shape it gets in the network (channels_last), with nothing else (no BatchNorm, ReLU, additions,
loss or optimizer). No implementation that runs the same passes on the same kernels can be
faster than this; train_throughput.py and saliency_speed.py time it beside their sides."""
from __future__ import annotations

import torch


def conv_inputs(model: torch.nn.Module, input_shape) -> list[tuple[torch.nn.Conv2d, torch.Size]]:
    """Each Conv2d of the model with the shape (C, H, W) of its input, in the order they run, from
    one forward pass of a zero image (eval mode, restored after)."""
    shapes = []
    hooks = [m.register_forward_hook(lambda m, i, o: shapes.append((m, i[0].shape[1:])))
             for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return shapes


class ConvWork:
    """The model's convolutions on a batch: forward, then backward to the inputs' gradients (every
    conv's, or every one but the first: training needs none for the images) and, with
    weight_grads, the weights' (training; saliency needs none). dtype: of the inputs and weights
    (bfloat16: what the convolutions of a bf16 autocast step compute in)."""

    def __init__(self, model: torch.nn.Module, input_shape, batch_size: int, *, weight_grads: bool,
                 first_input_grad: bool, seed: int = 0, dtype: torch.dtype = torch.float32):
        gen = torch.Generator().manual_seed(seed)
        self.convs = conv_inputs(model, input_shape)
        self.work = []
        for i, (conv, shape) in enumerate(self.convs):
            x = torch.randn(batch_size, *shape, generator=gen).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_(i > 0 or first_input_grad)
            fresh = torch.nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                                    conv.padding, groups=conv.groups, bias=False)
            fresh = fresh.to(dtype=dtype, memory_format=torch.channels_last)
            self.work.append((fresh.requires_grad_(weight_grads), x))
        self.batch_size = batch_size

    def run(self) -> None:
        for conv, x in self.work:
            y = conv(x)
            if x.requires_grad or conv.weight.requires_grad:
                y.backward(torch.ones_like(y))
            conv.weight.grad = x.grad = None
