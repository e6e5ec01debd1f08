"""Numerical faults: skip non-finite steps, stop after too many in a row."""
from __future__ import annotations

import torch

# What the message of a stopped GAN or DDPM run advises.
RESUME_ADVICE = "The last good checkpoint is untouched: lower --lr and resume from it with --resume PATH"


class TrainingDiverged(RuntimeError):
    """Too many non-finite steps in a row; the last good checkpoint is left as it was."""


class NonFiniteCounter:
    """Counts consecutive non-finite steps and raises `TrainingDiverged` at `limit`."""

    def __init__(self, limit: int, advice: str = RESUME_ADVICE):
        self.limit = limit
        self.advice = advice    # The message's last sentence: what to do next.
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
                f"{self.advice}")
        return False


def apply_gradients(
    opt:        torch.optim.Optimizer,
    loss:       torch.Tensor,           # This rank's scalar loss.
    dist,                               # stylegan_t2i.distributed.Distributed.
    nonfinite:  NonFiniteCounter,
    kimg:       float,                  # Images shown so far / 1000, for the message.
    average:    bool = True,            # Average the ranks' gradients (False: sum them).
    grad_clip:  float | None = None,    # Clip the global gradient norm to this first.
) -> tuple[bool, torch.Tensor | None]:
    """Backward, all-reduce the gradients, clip, step; unless a loss or a gradient is non-finite
    on any rank: then every rank skips the step (leaving no gradient behind) and it is counted.
    -> (whether the step was taken, the gradient norm before clipping when `grad_clip` is given)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()     # Even when non-finite: every rank must join the gradient all-reduce.
    params = [p for group in opt.param_groups for p in group["params"]]
    finite = dist.reduce_gradients_(params, loss, average=average)
    grad_norm = None
    if finite and grad_clip is not None:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    if not nonfinite.record(finite, kimg):
        opt.zero_grad(set_to_none=True)
        return False, None
    opt.step()
    return True, grad_norm
