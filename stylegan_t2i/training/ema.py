"""Exponential moving average of network weights, with a half-life in images (StyleGAN2-ADA)."""
from __future__ import annotations

import torch


def ema_beta(batch: int, nimg: int, half_life_kimg: float, rampup: float | None) -> float:
    """Decay for one step of `batch` images: 0.5 ** (batch / half_life_images).

    Early in training the half-life is at most `rampup` * images shown so far, so the average
    does not hold on to the random initialisation.
    """
    half_life = half_life_kimg * 1000
    if rampup:
        half_life = min(half_life, max(nimg, 1) * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: torch.nn.Module, net: torch.nn.Module, beta: float) -> None:
    """ema <- lerp(net, ema, beta) for parameters; buffers are copied."""
    for p_ema, p in zip(ema.parameters(), net.parameters()):
        p_ema.lerp_(p, 1 - beta)
    for b_ema, b in zip(ema.buffers(), net.buffers()):
        b_ema.copy_(b)
