"""Batches cut from a split held in memory: a seeded permutation per epoch, sharded per rank."""
from __future__ import annotations

import torch

from probe.errors import ConfigError


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The same order for a (seed, epoch) whatever happened before: resumable and rank-agnostic."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen)


def shard_batches(perm: torch.Tensor, batch_size: int, rank: int = 0, world_size: int = 1,
                  drop_last: bool = True) -> list[torch.Tensor]:
    """Split one epoch's order into this rank's batches of batch_size // world_size images.

    Every rank gets the same number of batches (DDP needs matching collective calls), and
    together the ranks cover disjoint indices of each global batch.
    """
    if batch_size % world_size:
        raise ConfigError(f"--batch-size {batch_size} is not divisible by the {world_size} processes")
    per_rank = batch_size // world_size
    n_batches = len(perm) // batch_size if drop_last else -(-len(perm) // batch_size)
    batches = []
    for b in range(n_batches):
        global_batch = perm[b * batch_size:(b + 1) * batch_size]
        mine = global_batch[rank::world_size][:per_rank]
        if len(mine):
            batches.append(mine)
    return batches


def step_generator(seed: int, step: int, rank: int = 0, device="cpu") -> torch.Generator:
    """Augmentation randomness of one optimizer step on one rank (ranks must not draw the same
    crops and flips for their shards), on the device the images are on: a GPU draws its crop
    offsets itself instead of receiving them from the CPU every step."""
    return torch.Generator(device=device).manual_seed(seed * 7_919 + step * 104_729 + rank * 15_485_863 + 1)
