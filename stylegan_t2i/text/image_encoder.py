"""Small CNN image encoder for contrastive (CLIP-style) pretraining and evaluation.

img [B, 3, H, W] in [-1, 1] is first resized to cfg.resolution (antialiased, so
downsampling averages instead of aliasing), then each stage is a 3x3 convolution +
GroupNorm + GELU followed by 2x2 average pooling. The last feature map is flattened rather
than globally pooled: captions name positions ("on the left"), so the embedding must keep
where things are, not only what they are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ImageEncoderConfig:
    resolution:     int = 32                    # Input size after resizing; divisible by 2**len(channels).
    channels:       tuple = (32, 64, 128)       # Width of each stage; each stage halves the size.
    embed_dim:      int = 128                   # Output embedding width E.


class ConvStage(nn.Module):
    def __init__(self,
        in_channels:    int,    # Input channels.
        out_channels:   int,    # Output channels.
    ):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm = nn.GroupNorm(min(8, out_channels), out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, C_in, H, W] -> [B, C_out, H/2, W/2]."""
        return F.avg_pool2d(F.gelu(self.norm(self.conv(x))), 2)


class ImageEncoder(nn.Module):
    def __init__(self, cfg: ImageEncoderConfig):
        super().__init__()
        self.cfg = cfg
        factor = 2 ** len(cfg.channels)
        if cfg.resolution % factor != 0:
            raise ValueError(f"ImageEncoderConfig.resolution={cfg.resolution} must be divisible by {factor}")
        widths = (3, *cfg.channels)
        self.stages = nn.Sequential(*[ConvStage(a, b) for a, b in zip(widths[:-1], widths[1:])])
        final = cfg.resolution // factor
        self.norm = nn.LayerNorm(cfg.channels[-1] * final * final)
        self.proj = nn.Linear(cfg.channels[-1] * final * final, cfg.embed_dim)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        """img: [B, 3, H, W] float in [-1, 1] -> [B, embed_dim] (not normalised)."""
        assert img.ndim == 4 and img.shape[1] == 3, img.shape
        res = self.cfg.resolution
        if img.shape[2:] != (res, res):
            img = F.interpolate(img, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        x = self.stages(img)                                    # (B, C, res / 2^n, res / 2^n)
        return self.proj(self.norm(x.flatten(1)))
