"""`IndexOrder`: the order in which training draws dataset items, an endless, resumable stream
of indices. (The image samplers are `stylegan_t2i.inference`'s; this only orders the data.)"""
from __future__ import annotations

from typing import Iterator

import torch


class IndexOrder(torch.utils.data.Sampler):
    """Yields indices forever: epoch e is a permutation of range(num_items) seeded by seed + e.
    A torch `Sampler`, so a DataLoader takes it as its `sampler=`.

    Under data-parallel training every rank iterates the same stream and keeps its slice of each
    global batch (stylegan_t2i/distributed.py), so the stream does not depend on the number of
    processes and one saved state resumes every rank.

    `state_dict()` holds (epoch, position) of the next index. With a DataLoader that is exact
    for `num_workers=0`; worker prefetching draws indices ahead of the batches actually consumed.
    """

    def __init__(
        self,
        num_items:  int,            # dataset length
        seed:       int = 0,        # epoch e uses permutation seed seed + e
        shuffle:    bool = True,    # False: every epoch is 0, 1, ..., num_items - 1
    ):
        if num_items < 1:
            raise ValueError(f"num_items must be positive, got {num_items}")
        self.num_items = num_items
        self.seed = seed
        self.shuffle = shuffle
        self._pos = 0  # position of the next yielded index in the concatenated epochs

    def _permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_items)
        return torch.randperm(self.num_items, generator=torch.Generator().manual_seed(self.seed + epoch))

    def __iter__(self) -> Iterator[int]:
        epoch, perm = -1, None
        while True:
            e, pos = divmod(self._pos, self.num_items)
            if e != epoch:
                epoch, perm = e, self._permutation(e)
            self._pos += 1
            yield int(perm[pos])

    def state_dict(self) -> dict[str, int]:
        epoch, position = divmod(self._pos, self.num_items)
        return {"epoch": epoch, "position": position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._pos = state["epoch"] * self.num_items + state["position"]
