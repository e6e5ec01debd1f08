"""Text-conditioned UNet ε-predictor for the DDPM baseline.

The layout is the DDPM / ADM UNet (Ho et al. 2020 Appendix B; Dhariwal & Nichol 2021 §3):
ResBlocks with GroupNorm + SiLU and the timestep injected by scale-shift normalisation, a
down path that halves the resolution between levels, a middle, an up path that concatenates
the matching down-path activation before every ResBlock, and a zero-initialised output conv
so the untrained model predicts ε = 0. At the resolutions in `attention_resolutions` (and
always in the middle) each ResBlock is followed by self-attention over the pixels and
cross-attention from the pixels to the caption's token features (Rombach et al. 2022 §3.3),
which is how the text conditions it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    resolution:             int = 32            # Input/output height and width (pixels).
    in_channels:            int = 3             # Image channels (ε has the same).
    base_channels:          int = 64            # Width of the first level; also the sinusoid size.
    channel_mult:           tuple = (1, 2, 2)   # Width of level i = base_channels * channel_mult[i].
    num_res_blocks:         int = 2             # ResBlocks per level on the down path (+1 on the up path).
    attention_resolutions:  tuple = (16, 8)     # Resolutions (pixels) that get self + cross-attention.
    context_dim:            int = 256           # Width of the text encoder's token features.
    num_heads:              int = 4             # Attention heads (every attended width must divide).
    dropout:                float = 0.0         # Dropout inside ResBlocks (Ho et al. use 0.1 on CIFAR-10).
    groups:                 int = 8             # GroupNorm groups (every width must divide).

    def __post_init__(self):
        levels = len(self.channel_mult)
        if levels < 1 or self.resolution % 2 ** (levels - 1):
            raise ValueError(f"resolution {self.resolution} is not divisible by 2**{levels - 1} "
                             f"(one halving per extra entry of channel_mult)")
        widths = [self.base_channels * m for m in self.channel_mult] + [self.base_channels]
        if any(w % self.groups or w % self.num_heads for w in widths) or self.base_channels % 2:
            raise ValueError(f"every width {widths} must be divisible by groups={self.groups} and "
                             f"num_heads={self.num_heads}, and base_channels must be even")
        if self.num_res_blocks < 1 or self.context_dim < 1:
            raise ValueError("num_res_blocks and context_dim must be >= 1")


def cpu_demo_unet(
    context_dim:    int,        # Width of the text encoder's token features.
    resolution:     int = 32,   # Image size of the run.
) -> UNetConfig:
    """A preset small enough that a 60-minute run on 2 CPU cores trains on tens of kimg."""
    return UNetConfig(resolution=resolution, base_channels=32, channel_mult=(1, 2, 2), num_res_blocks=1,
                      attention_resolutions=(8,), context_dim=context_dim, num_heads=4, groups=8)


def timestep_embedding(
    t:              torch.Tensor,   # [B] integer timesteps.
    dim:            int,            # Output width (even).
    max_period:     float = 10000.0,
) -> torch.Tensor:
    """Transformer sinusoidal position encoding (Vaswani et al. 2017 §3.5) of t: [B] -> [B, dim].

    Frequencies run geometrically from 1 down to 1/max_period, so neighbouring timesteps differ
    in the fast channels and distant ones in the slow channels.
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]    # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice with the timestep as a per-channel scale and shift."""

    def __init__(self,
        in_channels:    int,    # Input width.
        out_channels:   int,    # Output width.
        emb_dim:        int,    # Width of the timestep embedding.
        groups:         int,    # GroupNorm groups.
        dropout:        float,  # Dropout before the second conv.
    ):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)  # (B, C, 1, 1) each
        # Scale-shift norm (Dhariwal & Nichol 2021 §3, "AdaGN"): GroupNorm(h)·(1 + s) + b, so the
        # timestep sets the gain of every channel, not only its offset.
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.dropout(F.silu(h)))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head scaled dot-product attention of queries [B, N, C] over keys/values [B, L, D]."""

    def __init__(self,
        channels:   int,    # C, width of the queries and of the output.
        kv_dim:     int,    # D, width of the sequence attended to.
        num_heads:  int,    # Heads; C must be divisible by it.
    ):
        super().__init__()
        self.num_heads = num_heads
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_kv = nn.Linear(kv_dim, 2 * channels, bias=False)
        self.to_out = nn.Linear(channels, channels)

    def forward(self,
        x:      torch.Tensor,               # [B, N, C] queries.
        kv:     torch.Tensor,               # [B, L, D] keys/values source.
        mask:   torch.Tensor | None = None, # [B, L] bool, True = may be attended; needs a True per row.
    ) -> torch.Tensor:
        B, N, C = x.shape
        L, nh = kv.shape[1], self.num_heads
        q = self.to_q(x).view(B, N, nh, C // nh).transpose(1, 2)                   # (B, nh, N, hs)
        k, v = self.to_kv(kv).view(B, L, 2, nh, C // nh).permute(2, 0, 3, 1, 4)   # (B, nh, L, hs) each
        attn_mask = None if mask is None else mask[:, None, None, :]              # (B, 1, 1, L)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)          # (B, nh, N, hs)
        return self.to_out(y.transpose(1, 2).reshape(B, N, C))


class AttentionBlock(nn.Module):
    """Self-attention over the pixels, then cross-attention to the caption, each a pre-norm residual."""

    def __init__(self,
        channels:       int,    # Feature width C.
        context_dim:    int,    # Width of the caption token features.
        num_heads:      int,    # Heads of both attentions.
        groups:         int,    # GroupNorm groups of the self-attention's norm.
    ):
        super().__init__()
        self.norm_self = nn.GroupNorm(groups, channels)
        self.self_attn = Attention(channels, channels, num_heads)
        self.norm_cross = nn.LayerNorm(channels)
        self.cross_attn = Attention(channels, context_dim, num_heads)

    def forward(self,
        x:              torch.Tensor,   # [B, C, H, W] features.
        context:        torch.Tensor,   # [B, L, context_dim] caption token features.
        context_mask:   torch.Tensor,   # [B, L] bool, True = real token.
    ) -> torch.Tensor:
        B, C, H, W = x.shape
        tokens = x.flatten(2).transpose(1, 2)                   # (B, HW, C)
        h = self.norm_self(x).flatten(2).transpose(1, 2)        # (B, HW, C)
        tokens = tokens + self.self_attn(h, h)
        # Padding tokens are masked out of the keys. A row with no real token at all would be a
        # softmax over nothing (NaN): it attends to everything instead and its result is dropped.
        has_text = context_mask.any(dim=1)                      # (B,)
        cross = self.cross_attn(self.norm_cross(tokens), context, context_mask | ~has_text[:, None])
        tokens = tokens + cross * has_text[:, None, None].to(cross.dtype)
        return tokens.transpose(1, 2).reshape(B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 conv (Ho et al. 2020 Appendix B)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour repeat, then a 3x3 conv to smooth the blocks."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNetLayer(nn.Module):
    """One ResBlock, followed by an AttentionBlock at the attended resolutions."""

    def __init__(self,
        cfg:            UNetConfig,
        in_channels:    int,    # Input width (skip concatenation included).
        out_channels:   int,    # Output width.
        attention:      bool,   # Follow the ResBlock with self + cross-attention.
    ):
        super().__init__()
        self.res = ResBlock(in_channels, out_channels, 4 * cfg.base_channels, cfg.groups, cfg.dropout)
        self.attn = AttentionBlock(out_channels, cfg.context_dim, cfg.num_heads, cfg.groups) if attention else None

    def forward(self,
        x:              torch.Tensor,   # [B, in_channels, H, W]
        emb:            torch.Tensor,   # [B, 4 * base_channels] timestep embedding.
        context:        torch.Tensor,   # [B, L, context_dim] caption token features.
        context_mask:   torch.Tensor,   # [B, L] bool, True = real token.
    ) -> torch.Tensor:
        x = self.res(x, emb)
        return x if self.attn is None else self.attn(x, context, context_mask)


class UNet(nn.Module):
    """ε_θ(x_t, t, caption): [B, 3, H, W] -> [B, 3, H, W]."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        ch, emb_dim = cfg.base_channels, 4 * cfg.base_channels
        self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)
        self.down, skip_channels, ch, res = self._build_down()
        # Middle (ADM): ResBlock + attention, then ResBlock, at the lowest resolution whatever
        # attention_resolutions says, so the caption always reaches the bottleneck.
        self.mid = nn.ModuleList([UNetLayer(cfg, ch, ch, attention=True), UNetLayer(cfg, ch, ch, attention=False)])
        self.up = self._build_up(skip_channels, ch, res)
        self.norm_out = nn.GroupNorm(cfg.groups, cfg.base_channels)
        self.conv_out = nn.Conv2d(cfg.base_channels, cfg.in_channels, 3, padding=1)
        # Zero-initialised output (ADM): the untrained model predicts ε = 0, and the first updates
        # are not swamped by a random-output layer.
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def _build_down(self) -> tuple[nn.ModuleList, list[int], int, int]:
        """Down path; returns it, the width of every activation it saves for the up path, and
        the final width and resolution."""
        cfg = self.cfg
        layers, ch, res = nn.ModuleList(), cfg.base_channels, cfg.resolution
        skip_channels = [ch]                                    # conv_in's output is saved too.
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers.append(UNetLayer(cfg, ch, cfg.base_channels * mult, res in cfg.attention_resolutions))
                ch = cfg.base_channels * mult
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                layers.append(Downsample(ch))
                res //= 2
                skip_channels.append(ch)
        return layers, skip_channels, ch, res

    def _build_up(self, skip_channels: list[int], ch: int, res: int) -> nn.ModuleList:
        """Up path: num_res_blocks + 1 layers per level, each eating one saved activation."""
        cfg = self.cfg
        skip_channels = list(skip_channels)
        layers = nn.ModuleList()
        for level in reversed(range(len(cfg.channel_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                out = cfg.base_channels * cfg.channel_mult[level]
                layers.append(UNetLayer(cfg, ch + skip_channels.pop(), out, res in cfg.attention_resolutions))
                ch = out
            if level != 0:
                layers.append(Upsample(ch))
                res *= 2
        assert not skip_channels and ch == cfg.base_channels
        return layers

    def forward(self,
        x:              torch.Tensor,   # [B, in_channels, H, W] noisy images x_t, H = W = resolution.
        t:              torch.Tensor,   # [B] int64 timesteps.
        context:        torch.Tensor,   # [B, L, context_dim] caption token features.
        context_mask:   torch.Tensor,   # [B, L] bool, True = real token (bos/pieces/eos).
    ) -> torch.Tensor:
        cfg, B = self.cfg, x.shape[0]
        assert x.shape == (B, cfg.in_channels, cfg.resolution, cfg.resolution), x.shape
        assert t.shape == (B,) and t.dtype == torch.int64, (t.shape, t.dtype)
        assert context.ndim == 3 and context.shape[0] == B and context.shape[2] == cfg.context_dim, context.shape
        assert context_mask.shape == context.shape[:2] and context_mask.dtype == torch.bool, context_mask.shape

        emb = self.time_embed(timestep_embedding(t, cfg.base_channels).to(x.dtype))  # (B, 4C)
        h = self.conv_in(x)
        skips = [h]
        for layer in self.down:
            h = layer(h, emb, context, context_mask) if isinstance(layer, UNetLayer) else layer(h)
            skips.append(h)
        for layer in self.mid:
            h = layer(h, emb, context, context_mask)
        for layer in self.up:
            if isinstance(layer, UNetLayer):
                h = layer(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))
