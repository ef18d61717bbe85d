"""Under DDP every process iterates its own shard of each batch order: together the shards are
the batches of one process with the global batch size, every process has as many batches, and
a validation or test split counts every example once."""

import pytest
import torch

from optstudy.data.batches import TensorBatches


def labels_of(batches: TensorBatches) -> list[list[int]]:
    """The labels of each batch, as lists."""
    return [y.tolist() for _, y in batches]


@pytest.mark.parametrize(("n", "world", "batch"), [(64, 2, 8), (67, 2, 8), (67, 3, 5), (10, 4, 1)])
def test_shards_of_a_shuffled_epoch_together_are_the_one_process_batches(n, world, batch):
    data = torch.arange(n)
    one = labels_of(TensorBatches(data, data, batch * world, shuffle=True, seed=3, epoch=lambda: 1))
    shards = [
        labels_of(
            TensorBatches(
                data, data, batch, shuffle=True, seed=3, epoch=lambda: 1, rank=r, world_size=world
            )
        )
        for r in range(world)
    ]
    assert {len(s) for s in shards} == {len(one)}
    assert len(TensorBatches(data, data, batch, shuffle=True, world_size=world)) == len(one)
    for i, batch_of_one in enumerate(one):
        together = sorted(y for s in shards for y in s[i])
        if i < len(one) - 1:
            assert together == sorted(batch_of_one)
        else:  # the last one is padded with the epoch's first examples, as DistributedSampler
            assert set(batch_of_one) <= set(together)
            assert len(together) == len(batch_of_one) + (-n % world)


@pytest.mark.parametrize(
    ("n", "world", "batch"), [(216, 2, 64), (217, 2, 64), (10, 3, 3), (7, 2, 1)]
)
def test_shards_of_a_fixed_split_hold_every_example_once_in_as_many_batches(n, world, batch):
    data = torch.arange(n)
    shards = [
        labels_of(TensorBatches(data, data, batch, rank=r, world_size=world)) for r in range(world)
    ]
    expected = len(TensorBatches(data, data, batch, world_size=world))
    assert {len(s) for s in shards} == {expected}
    assert sorted(y for s in shards for b in s for y in b) == list(range(n))
    assert all(1 <= len(b) <= batch + 1 for s in shards for b in s)


def test_a_resumed_shard_skips_the_batches_already_done():
    data = torch.arange(40)
    args = {"shuffle": True, "seed": 1, "rank": 1, "world_size": 2}
    whole = labels_of(TensorBatches(data, data, 4, **args))
    assert labels_of(TensorBatches(data, data, 4, completed=lambda: 3, **args)) == whole[3:]
