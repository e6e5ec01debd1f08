"""Running means of named training values between two log ticks.

Tensor values are summed as tensors and read once per flush: a float() per value per step would
wait for the device on every step."""
from __future__ import annotations

from collections import defaultdict

import torch


class RunningMeans:
    def __init__(self):
        self._sum: dict[str, float | torch.Tensor] = defaultdict(float)
        self._count: dict[str, int] = defaultdict(int)

    def add(self, values: dict[str, float | torch.Tensor]) -> None:
        for name, value in values.items():
            v = value.detach().float() if isinstance(value, torch.Tensor) else float(value)
            self._sum[name] = self._sum[name] + v
            self._count[name] += 1

    def flush(self) -> dict[str, float]:
        """Means since the last flush (counters such as Faults/* are summed, not averaged)."""
        out = {name: float(s) if name.startswith("Faults/") else float(s) / self._count[name]
               for name, s in self._sum.items()}
        self._sum.clear()
        self._count.clear()
        return out
