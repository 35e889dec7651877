"""Run by test_distributed.py under torchrun: each rank trains the same tiny run with DDP (gloo
on the CPU) and saves its final weights as rank<r>.safetensors next to the model folder."""
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from safetensors.torch import save_file  # noqa: E402

from probe.train.run import train  # noqa: E402
from probe.train.trainer import Callback  # noqa: E402
from train_helpers import tiny_config, tiny_splits  # noqa: E402


class SaveEveryRank(Callback):
    def __init__(self, folder: Path):
        self.folder = folder

    def on_train_end(self, trainer):
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, self.folder / f"rank{trainer.rank}.safetensors")
        (self.folder / f"rank{trainer.rank}.batches").write_text(str(trainer.steps_per_epoch))


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    assert int(os.environ["WORLD_SIZE"]) == 2
    train(tiny_config(epochs=2, batch_size=32, channels_last=False), out / "model",
          splits=tiny_splits(), callbacks=[SaveEveryRank(out)])
