"""In-memory datasets and the batch iterator every run uses.

Data small enough to fit in memory is kept as whole tensors and batches are index slices: no DataLoader
workers and no per-sample collation, which dominate the step time of small models.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DataSplits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    # Domain adaptation (dataset `domain_shift`): the whole target domain. Its training inputs are the unlabelled
    # stream, its validation labels the oracle's; the test split above is already the target's.
    target: DataSplits | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example: (channels, length) for sequences, (channels, height, width) for images."""
        return tuple(self.x_train.shape[1:])


def split_train_val(x: torch.Tensor, y: torch.Tensor, val_fraction: float, seed: int):
    """A seeded random train/validation split (the data seed, not the run seed: every run sees the same)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    n_val = max(1, int(round(len(x) * val_fraction)))
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool) -> torch.Tensor:
    """The example order of one epoch: a permutation drawn from (seed, epoch) alone, or 0..n-1."""
    if not shuffle:
        return torch.arange(n)
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


class InMemoryLoader:
    """Iterates (x, y) mini-batches of in-memory tensors.

    Shuffled loaders draw a new permutation every epoch from (seed, epoch), so two runs with the same seed
    see the same batches in the same order whatever else differs. Under data parallelism each rank takes
    an interleaved, equal-sized shard of every permutation (the same contract as DistributedSampler).
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        self.x, self.y = x, y
        self.batch_size = min(batch_size, len(x))
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self.per_rank = len(x) // world_size if world_size > 1 else len(x)

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        order = epoch_order(len(self.x), self.seed, self.epoch, self.shuffle)
        self.epoch += 1
        if self.world_size > 1:
            order = order[self.rank : self.per_rank * self.world_size : self.world_size]
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]
