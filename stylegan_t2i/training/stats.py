"""Running means of named training values between two log ticks."""
from __future__ import annotations

from collections import defaultdict

import torch


class RunningMeans:
    def __init__(self):
        self._sum: dict[str, float] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, float | torch.Tensor]) -> None:
        for name, value in values.items():
            v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            self._sum[name] += v
            self._count[name] += 1

    def flush(self) -> dict[str, float]:
        """Means since the last flush (counters such as Faults/* are summed, not averaged)."""
        out = {name: (s if name.startswith("Faults/") else s / self._count[name])
               for name, s in self._sum.items()}
        self._sum.clear()
        self._count.clear()
        return out
