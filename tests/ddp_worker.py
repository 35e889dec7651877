"""Run by test_distributed.py under torchrun: each rank trains the same tiny run with DDP (gloo
on the CPU) and leaves, next to the model folder, what the test checks: its final weights
(rank<r>.safetensors) and a record (rank<r>.pt) of the image indices of every step, its own
loss sums, its first BatchNorm's batch means, and its BN buffers just before and after each
epoch's averaging."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from probe.train.run import train  # noqa: E402
from probe.train.trainer import Callback, Trainer  # noqa: E402
from train_helpers import tiny_config, tiny_splits  # noqa: E402

LOG = {"indices": [], "sums": [], "bn_means": [], "before_avg": [], "after_avg": []}


def first_bn(model):
    return next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


class Record(Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_start(self, trainer):
        bn = first_bn(trainer.model)
        LOG["momentum"] = bn.momentum
        LOG["initial_mean"] = bn.running_mean.clone()

        def hook(module, args):
            if module.training:  # not validation
                LOG["bn_means"][-1].append(args[0].detach().float().mean((0, 2, 3)))
        bn.register_forward_pre_hook(hook)

    def on_epoch_start(self, trainer, epoch, n_batches):
        for k in ("indices", "sums", "bn_means"):
            LOG[k].append([])

    def on_train_end(self, trainer):
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, self.folder / f"rank{trainer.rank}.safetensors")
        (self.folder / f"rank{trainer.rank}.batches").write_text(str(trainer.steps_per_epoch))
        torch.save(LOG, self.folder / f"rank{trainer.rank}.pt")


def spy(name, before=None, after=None):
    real = getattr(Trainer, name)

    def wrapped(self, *args):
        if before:
            before(self, *args)
        out = real(self, *args)
        if after:
            after(self, out, *args)
        return out
    setattr(Trainer, name, wrapped)


def bn_buffers(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()
            if "running" in k}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    assert int(os.environ["WORLD_SIZE"]) == 2
    spy("_batch", before=lambda self, idx: LOG["indices"][-1].append(idx.clone()))
    spy("_step", after=lambda self, out, x, y: LOG["sums"][-1].append(torch.stack(
        [out[0], out[1], out[2].float()]).detach().clone()))
    spy("_average_buffers", before=lambda self: LOG["before_avg"].append(bn_buffers(self)),
        after=lambda self, out: LOG["after_avg"].append(bn_buffers(self)))
    train(tiny_config(epochs=2, batch_size=32, channels_last=False), out / "model",
          splits=tiny_splits(), callbacks=[Record(out)])
