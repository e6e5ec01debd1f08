"""Text-conditioned, progressively grown critic (WGAN-GP "discriminator").

img, sentence embedding; stage, alpha -> score. Sections build upward: config,
block, epilogue (minibatch std + projection head), Critic. The image-only trunk
(`Critic.features`) is separate from the caption head (`Critic.score`), so one trunk pass
scores a real image against its own caption and against several wrong ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from stylegan_t2i.models.layers import (
    ARCHITECTURES,
    RESAMPLE_KERNEL,
    Conv2dLayer,
    FullyConnectedLayer,
    MinibatchStdLayer,
    area_downsample,
    assert_shape,
    channels_at,
    check_resample_kernel,
    normalize_2nd_moment,
    num_stages_for,
)

# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CriticConfig:
    text_dim: int                       # Size of the sentence embedding.
    max_res: int = 64                   # Final resolution (power of two >= 4).
    channel_base: int = 8192            # channels(res) = min(channel_base // res, channel_max).
    channel_max: int = 256
    mbstd_group_size: int = 4           # Group size of the minibatch std layer (min with the batch).
    mbstd_channels: int = 1             # Extra channels it appends.
    cmap_dim: int = 128                 # Width of the projection head (Miyato & Koyama 2018).
    conv_clamp: float | None = 256.0    # Clamp conv outputs to +-conv_clamp (None = off).
    architecture: str = "orig"          # 'orig': ProGAN fromRGB fade; 'skip': fromRGB at every level.
    resample_kernel: tuple = RESAMPLE_KERNEL  # 4-tap FIR of the blocks' stride-2 convs (see CriticBlock).

    def __post_init__(self) -> None:
        num_stages_for(self.max_res)  # Raises on a bad max_res.
        object.__setattr__(self, "resample_kernel", check_resample_kernel(self.resample_kernel))  # JSON lists too.
        for name in ("text_dim", "mbstd_group_size", "mbstd_channels", "cmap_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"CriticConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"CriticConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")

    @property
    def num_stages(self) -> int:
        return num_stages_for(self.max_res)

# ---------------------------------------------------------------------------


class CriticBlock(nn.Module):
    """res -> res/2: 3x3 conv + lrelu, then 3x3 conv with FIR down x2 + lrelu.

    The default FIR is StyleGAN2's binomial (1, 3, 3, 1). (0, 1, 1, 0) is ProGAN's 2x2 box: the
    binomial blurs a few-pixel shape's corners away at every level, so a small square and a
    small circle reach the head alike, and the critic cannot tell G to keep the corners
    (docs/architecture.md, "Critic", Down-sampling).
    """

    def __init__(
        self,
        in_channels: int,               # channels(res).
        out_channels: int,              # channels(res / 2).
        resolution: int,                # Input resolution.
        conv_clamp: float | None,       # Clamp of the activations.
        resample_kernel: tuple = RESAMPLE_KERNEL,  # 4-tap FIR of the down-sampling.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.conv0 = Conv2dLayer(in_channels, in_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(in_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp,
                                 resample_kernel=resample_kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        return self.conv1(self.conv0(x))

# ---------------------------------------------------------------------------


class CriticEpilogue(nn.Module):
    """4x4 features + text -> score: mbstd, 3x3 conv, FC, then unconditional + projection outputs.

    score = out(h) + <embed(text), proj(h)> / sqrt(cmap_dim)   (Miyato & Koyama 2018, eq. 3)
    The projection term measures how well the image features agree with the
    caption; the 1/sqrt(cmap_dim) keeps its scale independent of the width.
    """

    def __init__(
        self,
        in_channels: int,               # channels(4).
        text_dim: int,                  # Sentence embedding size.
        cmap_dim: int,                  # Projection width.
        mbstd_group_size: int,          # Minibatch std group size.
        mbstd_channels: int,            # Minibatch std extra channels.
        conv_clamp: float | None,       # Clamp of the conv activations.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.text_dim = text_dim
        self.cmap_dim = cmap_dim
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1)
        self.proj = FullyConnectedLayer(in_channels, cmap_dim)
        self.text_embed = FullyConnectedLayer(text_dim, cmap_dim)

    def features(
        self,
        x: torch.Tensor,                # [B, in_channels, 4, 4]
        sets: int = 1,                  # x holds this many equal batches (see MinibatchStdLayer).
    ) -> torch.Tensor:
        """-> h [B, in_channels]: the image's features, before any caption enters."""
        assert_shape(x, [None, self.in_channels, 4, 4])
        return self.fc(self.conv(self.mbstd(x, sets)).flatten(1))

    def score(
        self,
        h: torch.Tensor,                # [B, in_channels] from `features`.
        text: torch.Tensor,             # [B, text_dim], or [B, K, text_dim] for K captions per image.
    ) -> torch.Tensor:
        """-> score [B] (or [B, K]): out(h) + the projection of h on each caption."""
        assert_shape(text, [h.shape[0], *([None] * (text.ndim - 2)), self.text_dim])
        # Normalised so the projection's scale does not follow the text encoder's embedding norm.
        cmap = normalize_2nd_moment(self.text_embed(text.to(h.dtype).reshape(-1, self.text_dim)))
        cmap = cmap.reshape(*text.shape[:-1], self.cmap_dim)                       # [B, (K,) cmap_dim]
        proj = self.proj(h).reshape(h.shape[0], *([1] * (text.ndim - 2)), self.cmap_dim)
        projection = (proj * cmap).sum(dim=-1) / self.cmap_dim ** 0.5
        out = self.out(h).reshape(h.shape[0], *([1] * (text.ndim - 2)))
        return out + projection

    def forward(
        self,
        x: torch.Tensor,                # [B, in_channels, 4, 4]
        text: torch.Tensor,             # [B, text_dim]
    ) -> torch.Tensor:
        """-> score [B]."""
        return self.score(self.features(x), text)

# ---------------------------------------------------------------------------


class Critic(nn.Module):
    """D(img, text; stage, alpha) -> score [B]; higher = more real and better matched to the text."""

    def __init__(self, cfg: CriticConfig):
        super().__init__()
        self.cfg = cfg
        self.from_rgb = nn.ModuleDict()
        self.blocks = nn.ModuleDict()
        for stage in range(cfg.num_stages):
            res = 4 * 2 ** stage
            ch = channels_at(res, cfg.channel_base, cfg.channel_max)
            self.from_rgb[f"b{res}"] = Conv2dLayer(3, ch, 1, activation="lrelu", conv_clamp=cfg.conv_clamp)
            if stage > 0:
                ch_low = channels_at(res // 2, cfg.channel_base, cfg.channel_max)
                self.blocks[f"b{res}"] = CriticBlock(ch, ch_low, res, cfg.conv_clamp, cfg.resample_kernel)
        self.epilogue = CriticEpilogue(channels_at(4, cfg.channel_base, cfg.channel_max), cfg.text_dim,
                                       cfg.cmap_dim, cfg.mbstd_group_size, cfg.mbstd_channels, cfg.conv_clamp)

    @property
    def num_stages(self) -> int:
        return self.cfg.num_stages

    def features(
        self,
        img: torch.Tensor,              # [B, 3, res, res], res = 4 * 2**stage.
        stage: int,                     # Growth stage in [0, num_stages).
        alpha: float = 1.0,             # Fade-in of the newest block in [0, 1]; ignored at stage 0.
        sets: int = 1,                  # img holds this many equal batches (e.g. reals, fakes) that
                                        # the minibatch-std statistic keeps apart.
    ) -> torch.Tensor:
        """-> h [B, channels(4)]: the caption-free trunk, shared by every caption scored.

        orig (ProGAN): x = block_s(fromRGB_s(img)); while fading,
            x = lerp(fromRGB_{s-1}(area_down(img)), x, alpha); then blocks down to 4x4.
        skip (StyleGAN2 fig. 7b): every level r < s adds fromRGB_r(img down-sampled to r),
            x_{r} = fromRGB_r(img_r) + alpha_{r+1} * block_{r+1}(x_{r+1}), alpha = 1 below s.
            The low-resolution colour paths stay after the fade instead of being switched off
            at alpha = 1; alpha = 0 gives the previous stage's features, exactly.
        """
        assert 0 <= stage < self.cfg.num_stages, f"stage {stage} not in [0, {self.cfg.num_stages})"
        assert 0.0 <= alpha <= 1.0, f"alpha {alpha} not in [0, 1]"
        res = 4 * 2 ** stage
        assert_shape(img, [None, 3, res, res])
        x = self.from_rgb[f"b{res}"](img)
        skip = self.cfg.architecture == "skip"
        for s in range(stage, 0, -1):
            r = 4 * 2 ** s
            x = self.blocks[f"b{r}"](x)
            if skip:
                img = area_downsample(img)
                x = self.from_rgb[f"b{r // 2}"](img) + (x * alpha if s == stage and alpha < 1 else x)
            elif s == stage and alpha < 1:
                x_low = self.from_rgb[f"b{r // 2}"](area_downsample(img))
                x = torch.lerp(x_low, x, alpha)  # alpha = 0 gives the stage s-1 path exactly.
        return self.epilogue.features(x, sets)

    def score(
        self,
        h: torch.Tensor,                # [B, C] from `features`.
        text: torch.Tensor,             # [B, text_dim], or [B, K, text_dim]: K captions per image.
    ) -> torch.Tensor:
        """-> score [B] (or [B, K]) of each image under each of its captions."""
        return self.epilogue.score(h, text)

    def forward(
        self,
        img: torch.Tensor,              # [B, 3, res, res], res = 4 * 2**stage.
        text: torch.Tensor,             # [B, text_dim] sentence embedding.
        stage: int,                     # Growth stage in [0, num_stages).
        alpha: float = 1.0,             # Fade-in of the newest block in [0, 1]; ignored at stage 0.
    ) -> torch.Tensor:
        """-> score [B] = score(features(img), text)."""
        assert_shape(text, [img.shape[0], self.cfg.text_dim])
        return self.score(self.features(img, stage, alpha), text)
