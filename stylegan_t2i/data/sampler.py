"""`InfiniteSampler`: an endless, resumable, rank-partitioned stream of dataset indices."""
from __future__ import annotations

from typing import Iterator

import torch


class InfiniteSampler(torch.utils.data.Sampler):
    """Yields indices forever: epoch e is a permutation of range(num_items) seeded by seed + e.

    The epochs are concatenated into one global stream and rank r yields global positions
    r, r+W, r+2W, ... of it. So within an epoch no two ranks share an index, and the k-th items
    of the W ranks together are the k-th block of W items of the stream: data-parallel training
    with per-rank batch B sees exactly what one process with batch B*W sees (DESIGN.md, DDP),
    also when W does not divide num_items.

    `state_dict()` holds (epoch, position) of the next block of W items, i.e. of rank 0's next
    index, so the state of any one rank (rank 0 writes the checkpoint) resumes every rank, and
    a sampler that loads it continues the same stream. With a DataLoader that is exact for
    `num_workers=0`; worker prefetching draws indices ahead of the batches actually consumed.
    """

    def __init__(
        self,
        num_items:  int,            # dataset length
        rank:       int = 0,        # this process's rank
        world_size: int = 1,        # number of processes W
        seed:       int = 0,        # epoch e uses permutation seed seed + e
        shuffle:    bool = True,    # False: every epoch is 0, 1, ..., num_items - 1
    ):
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
        self.num_items = num_items
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.shuffle = shuffle
        self._global_pos = rank  # position of the next yielded index in the concatenated stream

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, None
        while True:
            e, pos = divmod(self._global_pos, self.num_items)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            self._global_pos += self.world_size
            yield int(perm[pos])

    def state_dict(self) -> dict[str, int]:
        epoch, position = divmod(self._global_pos - self.rank, self.num_items)
        return {"epoch": epoch, "position": position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._global_pos = state["epoch"] * self.num_items + state["position"] + self.rank
