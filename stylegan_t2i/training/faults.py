"""Numerical faults: skip non-finite steps, stop after too many in a row."""
from __future__ import annotations


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was."""


class NonFiniteCounter:
    """Counts consecutive non-finite steps and raises `TrainingDiverged` at `limit`."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0

    def record(self, finite: bool, kimg: float) -> bool:
        """Note one step; returns `finite` (whether the optimizer step may be taken)."""
        if finite:
            self.in_a_row = 0
            return True
        self.in_a_row += 1
        if self.in_a_row >= self.limit:
            raise TrainingDiverged(
                f"{self.in_a_row} non-finite losses or gradients in a row at kimg {kimg:.1f}; stopped. "
                f"The last good checkpoint is untouched: lower --lr and resume from it with --resume PATH")
        return False
