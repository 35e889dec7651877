"""Two processes, gloo on the CPU, launched by torchrun as a user would: both ranks end with
identical weights; each step the ranks train on disjoint halves that together are the global
batch; the history's loss and error are over both ranks; each rank's BatchNorm statistics follow
its own shard during an epoch and the saved ones are the mean over ranks; only rank 0 writes."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from probe.data.batches import epoch_permutation


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(Path(__file__).parent / "ddp_worker.py"), str(folder)]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    logs = [torch.load(folder / f"rank{r}.pt") for r in (0, 1)]
    return folder, logs


def test_two_ranks_end_with_identical_weights(ddp_run):
    folder, _ = ddp_run
    r0, r1 = load_file(folder / "rank0.safetensors"), load_file(folder / "rank1.safetensors")
    assert r0.keys() == r1.keys()
    assert all(torch.equal(r0[k], r1[k]) for k in r0)
    # each rank took 16 of every 32 images: 192 // 32 = 6 steps per epoch on both
    assert (folder / "rank0.batches").read_text() == (folder / "rank1.batches").read_text() == "6"
    assert (folder / "model" / "weights.safetensors").is_file()
    assert sorted(p.name for p in folder.iterdir() if p.suffix == ".safetensors") == [
        "rank0.safetensors", "rank1.safetensors"]
    history = json.loads((folder / "model" / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["train_loss"] < history[0]["train_loss"]


def test_ranks_train_on_disjoint_shards_that_cover_each_global_batch(ddp_run):
    _, (a, b) = ddp_run
    for epoch in range(2):
        perm = epoch_permutation(192, seed=0, epoch=epoch)
        assert len(a["indices"][epoch]) == len(b["indices"][epoch]) == 6
        for step, (i0, i1) in enumerate(zip(a["indices"][epoch], b["indices"][epoch])):
            assert len(i0) == len(i1) == 16
            assert not set(i0.tolist()) & set(i1.tolist())  # disjoint
            both = torch.cat([i0, i1]).sort().values  # together: exactly the global batch
            assert torch.equal(both, perm[step * 32:(step + 1) * 32].sort().values)


def test_history_loss_and_error_are_over_both_ranks(ddp_run):
    folder, logs = ddp_run
    history = json.loads((folder / "model" / "history.json").read_text())
    for epoch, record in enumerate(history):
        per_rank = [torch.stack(log["sums"][epoch]).sum(0) for log in logs]  # (objective, plain, wrong)
        total = (per_rank[0] + per_rank[1]) / 192
        assert record["train_loss"] == pytest.approx(total[1].item(), rel=1e-5)
        assert record["train_error"] == pytest.approx(total[2].item(), rel=1e-5)
        rank0_only = per_rank[0] / 96
        assert abs(record["train_loss"] - rank0_only[1].item()) > 1e-6  # not rank 0's shard alone


def test_bn_statistics_follow_each_rank_and_are_averaged(ddp_run):
    folder, logs = ddp_run
    # 1. during an epoch, each rank's running mean is the momentum average of its own batches,
    #    starting from the averaged value of the epoch before (nothing broadcast over it)
    key = next(k for k in logs[0]["before_avg"][0] if k.endswith("running_mean"))
    for log in logs:
        m = log["momentum"]
        for epoch in range(2):
            expected = log["initial_mean"].clone() if epoch == 0 else log["after_avg"][epoch - 1][key]
            for mean in log["bn_means"][epoch]:
                expected = (1 - m) * expected + m * mean
            assert torch.allclose(log["before_avg"][epoch][key], expected, atol=1e-6)
    assert not torch.allclose(logs[0]["before_avg"][1][key], logs[1]["before_avg"][1][key], atol=1e-4)
    # 2. after each epoch every rank holds the mean of the ranks' statistics
    for epoch in range(2):
        for k, v0 in logs[0]["before_avg"][epoch].items():
            mean = (v0 + logs[1]["before_avg"][epoch][k]) / 2
            assert torch.allclose(logs[0]["after_avg"][epoch][k], mean, atol=1e-6), k
            assert torch.equal(logs[0]["after_avg"][epoch][k], logs[1]["after_avg"][epoch][k])
    # 3. the saved model holds them: the resume file the last epoch's, the weights the best epoch's
    resume = load_file(folder / "model" / "resume.safetensors")
    weights = load_file(folder / "model" / "weights.safetensors")
    best = json.loads((folder / "model" / "meta.json").read_text())["best_epoch"]
    for k, v in logs[0]["after_avg"][1].items():
        assert torch.allclose(resume["model." + k], v, atol=1e-6), k
        assert torch.allclose(weights[k], logs[0]["after_avg"][best - 1][k], atol=1e-6), k
