"""probe.data.augment and probe.data.batches as the trainer uses them: crops vary and stay in
bounds, ranks draw different augmentations and take disjoint shards that cover every batch, and
each dataset gets its own augmentation (no flips for digits or drivers' hands)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from probe.data.augment import AugmentConfig, augment_batch, default_augment, random_crop
from probe.data.batches import epoch_permutation, shard_batches, step_generator
from probe.data.spec import CIFAR10, MNIST, SFDDD


def coordinate_images(n: int, h: int, w: int) -> torch.Tensor:
    """(n, 2, h, w) uint8 whose channel 0 is the row and channel 1 the column index plus 1
    (0 is left for zero padding): a crop's offset can be read off its top-left pixel."""
    rows = torch.arange(1, h + 1, dtype=torch.uint8)[:, None].expand(h, w)
    cols = torch.arange(1, w + 1, dtype=torch.uint8)[None, :].expand(h, w)
    return torch.stack([rows, cols])[None].expand(n, 2, h, w).contiguous()


def offsets(crops: torch.Tensor) -> list[tuple[int, int]]:
    return [(int(c[0, 0, 0]) - 1, int(c[1, 0, 0]) - 1) for c in crops]


def test_random_crops_vary_cover_every_offset_and_stay_in_bounds():
    x = coordinate_images(400, 12, 16)
    crops = random_crop(x, (8, 10), torch.Generator().manual_seed(0))
    assert crops.shape == (400, 2, 8, 10)
    found = offsets(crops)
    assert all(0 <= top <= 4 and 0 <= left <= 6 for top, left in found)  # in bounds
    assert set(found) == {(t, l) for t in range(5) for l in range(7)}  # all 35 offsets occur
    for c, (top, left) in zip(crops, found):  # each crop is the window at its offset
        assert torch.equal(c, x[0, :, top:top + 8, left:left + 10])


def test_pad_crop_shifts_vary_within_the_padding():
    x = coordinate_images(300, 8, 8)
    out = augment_batch(x, AugmentConfig(pad=2), torch.Generator().manual_seed(1))
    padded = F.pad(x, (2, 2, 2, 2))
    shifts = set()
    for i in range(len(x)):
        match = [(a, b) for a in range(5) for b in range(5)
                 if torch.equal(out[i], padded[i, :, a:a + 8, b:b + 8])]
        assert len(match) == 1  # exactly one window of the padded image
        shifts.add(match[0])
    assert shifts == {(a, b) for a in range(5) for b in range(5)}  # not always (0, 0)


def test_sfddd_crops_vary_and_stay_inside_the_stored_image():
    x = coordinate_images(200, 48, 64)
    crops = augment_batch(x, default_augment(SFDDD), torch.Generator().manual_seed(2))
    assert crops.shape == (200, 2, 32, 32)
    found = offsets(crops)
    assert all(0 <= top <= 16 and 0 <= left <= 32 for top, left in found)
    assert len(set(found)) > 100  # 17 × 33 offsets possible; 200 draws hit many
    assert len({t for t, _ in found}) > 10 and len({l for _, l in found}) > 20


def test_ranks_and_steps_draw_different_augmentations():
    x = coordinate_images(64, 12, 12)
    cfg = AugmentConfig(pad=2, flip=True)

    def draw(step, rank):
        return augment_batch(x, cfg, step_generator(0, step, rank))

    assert torch.equal(draw(5, 0), draw(5, 0))  # reproducible: a resumed run sees the same
    assert not torch.equal(draw(5, 0), draw(5, 1))  # another rank: other crops and flips
    assert not torch.equal(draw(5, 0), draw(6, 0))  # another step too
    a = torch.rand(8, generator=step_generator(0, 5, rank=0))
    assert not torch.equal(a, torch.rand(8, generator=step_generator(0, 5, rank=1)))


@pytest.mark.parametrize("world_size", [2, 4])
def test_shards_are_disjoint_and_cover_every_global_batch(world_size):
    perm = epoch_permutation(200, seed=3, epoch=1)
    shards = [shard_batches(perm, 40, r, world_size) for r in range(world_size)]
    assert all(len(s) == 5 for s in shards)  # the same number of steps on every rank
    for b in range(5):
        parts = [shards[r][b] for r in range(world_size)]
        assert all(len(p) == 40 // world_size for p in parts)
        seen = [set(p.tolist()) for p in parts]
        assert sum(len(s) for s in seen) == len(set().union(*seen))  # pairwise disjoint
        assert set().union(*seen) == set(perm[b * 40:(b + 1) * 40].tolist())  # cover the batch


def test_each_dataset_gets_its_own_augmentation():
    assert default_augment(CIFAR10) == AugmentConfig(pad=4, flip=True)
    # a flipped digit or a mirrored driver (left and right hands are classes) is another image
    assert default_augment(MNIST) == AugmentConfig(pad=2) and not default_augment(MNIST).flip
    assert default_augment(SFDDD) == AugmentConfig(crop=(32, 32)) and not default_augment(SFDDD).flip


def test_no_flip_config_never_flips():
    x = coordinate_images(200, 8, 8)
    for spec in (MNIST, SFDDD):
        cfg = default_augment(spec)
        out = augment_batch(x if spec is MNIST else coordinate_images(200, 48, 64), cfg,
                            torch.Generator().manual_seed(4))
        cols = out[:, 1]  # column channel: left to right it must increase (or be padding)
        inside = cols[:, :, 1:] > 0
        assert ((cols[:, :, 1:] > cols[:, :, :-1]) | ~inside | (cols[:, :, :-1] == 0)).all()
