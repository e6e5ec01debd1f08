"""`BatchShare`: the rows of a global batch that one data-parallel process computes.

Random inputs (latents, per-pixel noise, interpolation factors, timesteps) are drawn for the
whole global batch from the RNG state every rank shares, then sliced: a rank then draws
exactly what one process draws for the same samples, and all ranks' RNG states stay equal
(see stylegan_t2i/distributed.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchShare:
    total:  int     # Global batch size.
    start:  int     # First row of this process.
    stop:   int     # One past its last row.

    def __post_init__(self):
        assert 0 <= self.start < self.stop <= self.total, self

    @property
    def size(self) -> int:
        return self.stop - self.start

    def take(self, x):
        """This share's rows of a global-batch tensor or list."""
        assert len(x) == self.total, (len(x), self.total)
        return x[self.start:self.stop]

    def randn(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Standard normal [size, *shape]: rows start..stop of a [total, *shape] draw."""
        return torch.randn([self.total, *shape], device=device)[self.start:self.stop]

    def rand(self, *shape: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Uniform [0, 1) [size, *shape], sliced from a [total, *shape] draw."""
        return torch.rand([self.total, *shape], device=device)[self.start:self.stop]

    def randint(self, high: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """Integers in [0, high) [size], sliced from a [total] draw."""
        return torch.randint(0, high, (self.total,), device=device)[self.start:self.stop]


def whole_batch(batch: int) -> BatchShare:
    """The share of a single process: every row."""
    return BatchShare(batch, 0, batch)
