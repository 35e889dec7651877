"""Two processes, gloo on the CPU, launched by torchrun as a user would: both ranks end with
identical weights, each saw half of every batch, and only rank 0 wrote the model folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file



def test_two_ranks_end_with_identical_weights(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "ddp_worker.py"), str(tmp_path)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # each rank took 16 of every 32 images: 192 // 32 = 6 steps per epoch on both
    assert (tmp_path / "rank0.batches").read_text() == (tmp_path / "rank1.batches").read_text() == "6"
    assert (tmp_path / "model" / "weights.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".safetensors") == [
        "rank0.safetensors", "rank1.safetensors"]
    history = json.loads((tmp_path / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]
