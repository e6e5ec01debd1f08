"""Text-conditioned, progressively grown StyleGAN2 generator.

z, sentence embedding -> MappingNetwork -> w -> SynthesisNetwork (stage, alpha) -> img.
Sections build upward: config, mapping, synthesis layers, blocks, network, Generator.
See docs/architecture.md ("Generator") for why the caption reaches w directly and why the
synthesis network is a skip architecture.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from stylegan_t2i.batch_share import BatchShare
from stylegan_t2i.models.layers import (
    ARCHITECTURES,
    RESAMPLE_KERNEL,
    FullyConnectedLayer,
    NoiseInjection,
    assert_shape,
    channels_at,
    check_resample_kernel,
    fade_upsample,
    modulated_conv2d,
    normalize_2nd_moment,
    num_stages_for,
    resample_filter,
)
from stylegan_t2i.ops import bias_act

# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class GeneratorConfig:
    text_dim: int                       # Size of the sentence embedding the text encoder gives.
    max_res: int = 64                   # Final resolution (power of two >= 4).
    z_dim: int = 64                     # Latent noise size.
    z_embed_dim: int = 32               # z after its own one-layer MLP; kept small (see MappingNetwork).
    text_embed_dim: int = 128           # Sentence embedding after its projection.
    w_dim: int = 256                    # Intermediate latent size.
    mapping_layers: int = 4             # FC layers of the joint mapping MLP.
    mapping_lr_mult: float = 0.01       # Equalised-lr multiplier of the mapping MLP (StyleGAN: 0.01).
    text_w_dim: int = 0                 # Width of the caption's direct part of w (0 = none; see MappingNetwork).
    architecture: str = "orig"          # 'orig': ProGAN toRGB fade; 'skip': StyleGAN2 skip (see SynthesisNetwork).
    torgb_init: float = 1.0             # Scale of the toRGB weights at init ('skip' uses a small one).
    resample_kernel: tuple = RESAMPLE_KERNEL  # 4-tap FIR of every up-sampling (see SynthesisNetwork).
    channel_base: int = 8192            # channels(res) = min(channel_base // res, channel_max).
    channel_max: int = 256
    conv_clamp: float | None = 256.0    # Clamp conv outputs to +-conv_clamp (None = off).

    # Keys that older configs hold and `config_from_dict` drops: `w_avg_beta` was the decay of a
    # global mean w that nothing read (see MappingNetwork).
    REMOVED_KEYS: ClassVar[tuple[str, ...]] = ("w_avg_beta",)

    def __post_init__(self) -> None:
        num_stages_for(self.max_res)  # Raises on a bad max_res.
        object.__setattr__(self, "resample_kernel", check_resample_kernel(self.resample_kernel))  # JSON lists too.
        for name in ("text_dim", "z_dim", "z_embed_dim", "text_embed_dim", "w_dim", "mapping_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"GeneratorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.text_w_dim < 0:
            raise ValueError(f"GeneratorConfig.text_w_dim must be >= 0, got {self.text_w_dim}")
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"GeneratorConfig.architecture must be one of {ARCHITECTURES}, got {self.architecture!r}")

    @property
    def num_stages(self) -> int:
        return num_stages_for(self.max_res)

    @property
    def w_total(self) -> int:
        """Width of the w that the synthesis network reads: the MLP part plus the caption part."""
        return self.w_dim + self.text_w_dim


# ---------------------------------------------------------------------------


class MappingNetwork(nn.Module):
    """(z, sentence embedding) -> w.

    z is normalised, embedded by one FC + lrelu to z_embed_dim and normalised
    again; the sentence embedding is projected by one FC to text_embed_dim and
    normalised (as NVlabs' conditional mapping does for its label embedding).
    After normalisation every feature has unit second moment, so the share of
    the first MLP layer's input energy that comes from z is
    z_embed_dim / (z_embed_dim + text_embed_dim). Keeping z_embed_dim well
    below text_embed_dim (StyleGAN-T, Sauer et al. 2023, uses a 64-d z against
    a 768-d text embedding) stops the noise from drowning out the caption,
    while still leaving z enough dimensions for within-caption variety.

    With text_w_dim > 0 the caption also reaches the styles directly, as in StyleGAN-T:
    w = [MLP(z, text), normalize(proj(text))]. Through the MLP alone, at the 0.01 lr
    multiplier StyleGAN uses for 10^5-10^6 steps, a one-hour run barely changes how the
    caption maps to w, and the shape word moved w less than z did. The direct part is a
    full-lr projection, constant for a caption, so every synthesis affine sees the words
    unmixed with noise, and truncation toward the caption's mean w leaves it untouched.

    There is no global mean w (StyleGAN's `w_avg`). Truncation pulls w toward the caption's
    own mean (`Generator.caption_mean_w`); a global mean would pull every caption toward the
    same average image, and with text_w_dim > 0 it would also move the caption's direct part,
    which truncation should leave alone. Older checkpoints hold a `w_avg` buffer (never
    updated, all zeros); `_drop_w_avg` lets them load strictly.
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        lr = cfg.mapping_lr_mult
        self.z_embed = FullyConnectedLayer(cfg.z_dim, cfg.z_embed_dim, activation="lrelu", lr_multiplier=lr)
        self.text_embed = FullyConnectedLayer(cfg.text_dim, cfg.text_embed_dim)
        features = [cfg.z_embed_dim + cfg.text_embed_dim] + [cfg.w_dim] * cfg.mapping_layers
        self.layers = nn.ModuleList(
            FullyConnectedLayer(fin, fout, activation="lrelu", lr_multiplier=lr)
            for fin, fout in zip(features[:-1], features[1:])
        )
        self.text_w = FullyConnectedLayer(cfg.text_dim, cfg.text_w_dim) if cfg.text_w_dim else None
        # The private hook API: the public `register_load_state_dict_pre_hook` needs torch >= 2.5.
        self._register_load_state_dict_pre_hook(_drop_w_avg)

    def forward(
        self,
        z: torch.Tensor,                # [B, z_dim]
        text: torch.Tensor,             # [B, text_dim] sentence embedding.
    ) -> torch.Tensor:
        """-> w: [B, w_total], not truncated."""
        assert_shape(z, [None, self.cfg.z_dim])
        assert_shape(text, [z.shape[0], self.cfg.text_dim])
        text = text.to(torch.float32)
        zf = normalize_2nd_moment(self.z_embed(normalize_2nd_moment(z.to(torch.float32))))
        tf = normalize_2nd_moment(self.text_embed(text))
        x = torch.cat([zf, tf], dim=1)
        for layer in self.layers:
            x = layer(x)
        if self.text_w is not None:
            x = torch.cat([x, normalize_2nd_moment(self.text_w(text))], dim=1)
        return x


def _drop_w_avg(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs) -> None:
    """Load-state-dict pre-hook of MappingNetwork: drop the `w_avg` buffer that checkpoints
    written before its removal hold, so their G and G_ema still load with strict=True."""
    state_dict.pop(prefix + "w_avg", None)

# ---------------------------------------------------------------------------


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally FIR up x2) + per-pixel noise + bias + lrelu (StyleGAN2 fig. 2d)."""

    def __init__(
        self,
        in_channels: int,               # Input feature channels.
        out_channels: int,              # Output feature channels.
        w_dim: int,                     # Intermediate latent size.
        resolution: int,                # Output resolution.
        up: int = 1,                    # 2 to up-sample the input first.
        conv_clamp: float | None = None,  # Clamp of the activations.
        resample_kernel: tuple = RESAMPLE_KERNEL,  # 4-tap FIR of the up-sampling.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.up = up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # Styles start at 1 (identity).
        self.noise = NoiseInjection(resolution)
        self.register_buffer("resample_filter", resample_filter(resample_kernel))
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self,
        x: torch.Tensor,                # [B, in_channels, H, W]
        w: torch.Tensor,                # [B, w_dim]
        noise_mode: str,                # 'random' | 'const' | 'none'
        noise_share: BatchShare | None = None,  # Data-parallel rows of the random noise.
    ) -> torch.Tensor:
        assert_shape(x, [w.shape[0], self.in_channels, None, None])
        styles = self.affine(w)
        noise = self.noise(x.shape[0], noise_mode, x.device, noise_share)
        # No equalised-lr gain on the weight: demodulation removes any global weight scale.
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1,
                             resample_filter=self.resample_filter)
        return bias_act.bias_act(x, self.bias.to(x.dtype), act="lrelu", clamp=self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv to RGB without demodulation, + bias (StyleGAN2 tRGB)."""

    def __init__(
        self,
        in_channels: int,               # Input feature channels.
        w_dim: int,                     # Intermediate latent size.
        conv_clamp: float | None = None,  # Clamp of the output.
        init_scale: float = 1.0,        # Scale of the initial weights (small: the block starts near zero).
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([3, in_channels, 1, 1]) * init_scale)
        self.bias = nn.Parameter(torch.zeros([3]))
        self.weight_gain = 1 / in_channels ** 0.5  # Equalised lr, applied to the styles (same product).

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, padding=0)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)

# ---------------------------------------------------------------------------


class SynthesisBlock(nn.Module):
    """One resolution: 4x4 = learned constant + one conv; above = conv (up x2) + conv. Plus its toRGB."""

    def __init__(
        self,
        in_channels: int,               # Channels of the previous block (ignored at 4x4).
        out_channels: int,              # Channels of this block.
        w_dim: int,                     # Intermediate latent size.
        resolution: int,                # Resolution of this block.
        conv_clamp: float | None,       # Clamp of the activations.
        torgb_init: float = 1.0,        # Initial scale of the toRGB weights.
        resample_kernel: tuple = RESAMPLE_KERNEL,  # 4-tap FIR of the up-sampling.
    ):
        super().__init__()
        self.resolution = resolution
        self.in_channels = in_channels
        if resolution == 4:
            self.const = nn.Parameter(torch.randn([out_channels, 4, 4]))
            self.conv0 = None
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=2, conv_clamp=conv_clamp,
                                        resample_kernel=resample_kernel)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, w_dim, conv_clamp=conv_clamp, init_scale=torgb_init)

    def forward(
        self,
        x: torch.Tensor | None,         # [B, in_channels, res/2, res/2], or None at 4x4.
        w: torch.Tensor,                # [B, w_total]
        noise_mode: str,                # 'random' | 'const' | 'none'
        noise_share: BatchShare | None = None,  # Data-parallel rows of the random noise.
    ) -> torch.Tensor:
        """-> features [B, out_channels, res, res]."""
        if self.conv0 is None:
            x = self.const.unsqueeze(0).expand(w.shape[0], -1, -1, -1)
        else:
            assert_shape(x, [w.shape[0], self.in_channels, self.resolution // 2, self.resolution // 2])
            x = self.conv0(x, w, noise_mode, noise_share)
        return self.conv1(x, w, noise_mode, noise_share)

# ---------------------------------------------------------------------------


class SynthesisNetwork(nn.Module):
    """w -> image at stage s (4 * 2**s pixels), grown progressively.

    'orig' (ProGAN): only the newest block's toRGB makes the image; while it fades in, it is
    cross-faded with the up-sampled previous toRGB. When alpha reaches 1 the new toRGB must
    draw the whole picture at once, and on the demo the images collapsed to gray/magenta
    there (about 40 kimg of the hour went to the recovery).
    'skip' (StyleGAN2 fig. 7b): every block adds its toRGB to the up-sampled image of the
    blocks below, scaled by alpha while it fades in. The colours and layout that the low
    resolutions learned stay in the picture for good; a new block only adds detail, and its
    small initial toRGB keeps that detail near zero when it arrives.
    Every up-sampling, of features and of the skip image, uses the 4-tap `resample_kernel`.
    StyleGAN2's binomial (1, 3, 3, 1) low-passes each level, so a round blob is what the network
    draws most easily and corners must be rebuilt at every level; nearest neighbour (0, 1, 1, 0)
    carries a block's edges and corners up unchanged (docs/architecture.md, "Generator").
    """

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.blocks = nn.ModuleList()
        prev = 0
        for stage in range(cfg.num_stages):
            res = 4 * 2 ** stage
            ch = channels_at(res, cfg.channel_base, cfg.channel_max)
            self.blocks.append(SynthesisBlock(prev, ch, cfg.w_total, res, cfg.conv_clamp, cfg.torgb_init,
                                              cfg.resample_kernel))
            prev = ch

    def forward(
        self,
        w: torch.Tensor,                # [B, w_total]
        stage: int,                     # Growth stage in [0, num_stages).
        alpha: float = 1.0,             # Fade-in of the newest block in [0, 1]; ignored at stage 0.
        noise_mode: str = "random",     # 'random' | 'const' | 'none'
        noise_share: BatchShare | None = None,  # Data-parallel rows of the random noise.
    ) -> torch.Tensor:
        """-> img [B, 3, res, res] with res = 4 * 2**stage; only blocks 0..stage run.

        orig: img = lerp(fade_upsample(toRGB_{s-1}(x_{s-1})), toRGB_s(x_s), alpha)
        skip: img_s = fade_upsample(img_{s-1}) + alpha_s * toRGB_s(x_s), alpha_s = 1 below s
        In both, alpha = 0 gives the previous stage's image up-sampled, exactly.
        """
        assert_shape(w, [None, self.cfg.w_total])
        assert 0 <= stage < self.cfg.num_stages, f"stage {stage} not in [0, {self.cfg.num_stages})"
        assert 0.0 <= alpha <= 1.0, f"alpha {alpha} not in [0, 1]"
        if self.cfg.architecture == "skip":
            return self._skip(w, stage, alpha, noise_mode, noise_share)
        x_prev, x = None, None
        for block in self.blocks[: stage + 1]:
            x_prev, x = x, block(x, w, noise_mode, noise_share)
        img = self.blocks[stage].torgb(x, w)
        if stage > 0 and alpha < 1:
            img_prev = fade_upsample(self.blocks[stage - 1].torgb(x_prev, w), self.cfg.resample_kernel)
            img = torch.lerp(img_prev, img, alpha)  # alpha = 0 gives img_prev exactly.
        return img

    def _skip(self, w, stage, alpha, noise_mode, noise_share) -> torch.Tensor:
        x, img = None, None
        for s, block in enumerate(self.blocks[: stage + 1]):
            x = block(x, w, noise_mode, noise_share)
            rgb = block.torgb(x, w)
            if img is None:
                img = rgb
            else:
                img = fade_upsample(img, self.cfg.resample_kernel) + (rgb * alpha if s == stage and alpha < 1 else rgb)
        return img

# ---------------------------------------------------------------------------


class Generator(nn.Module):
    """G(z, text; stage, alpha) with truncation toward the caption's own mean w."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.cfg = cfg
        self.mapping_net = MappingNetwork(cfg)
        self.synthesis_net = SynthesisNetwork(cfg)

    @property
    def num_stages(self) -> int:
        return self.cfg.num_stages

    def mapping(
        self,
        z: torch.Tensor,                # [B, z_dim]
        text: torch.Tensor,             # [B, text_dim]
        truncation_psi: float = 1.0,    # 1 = no truncation, 0 = exactly the target.
        truncation_target: torch.Tensor | None = None,  # [B, w_total]; None = caption_mean_w(text).
    ) -> torch.Tensor:
        """-> w [B, w_total] = lerp(target, mapping(z, text), psi) (StyleGAN truncation trick).

        The target defaults to the caption's own mean w: the global mean would pull
        every caption toward the same average image. Passing the target (e.g. from
        `caption_mean_w` once per caption) saves its 256 extra mapping passes.
        """
        w = self.mapping_net(z, text)
        if truncation_psi != 1:
            if truncation_target is None:
                truncation_target = self.caption_mean_w(text)
            assert_shape(truncation_target, [w.shape[0], self.cfg.w_total])
            w = torch.lerp(truncation_target.to(w.dtype), w, truncation_psi)
        return w

    @torch.no_grad()
    def caption_mean_w(
        self,
        text: torch.Tensor,             # [B, text_dim]
        num_z: int = 256,               # Samples of z averaged per caption.
        generator: torch.Generator | None = None,  # RNG for z (on text's device).
    ) -> torch.Tensor:
        """-> [B, w_total]: mean over z_i ~ N(0, I) of mapping(z_i, text), per caption."""
        assert_shape(text, [None, self.cfg.text_dim])
        b = text.shape[0]
        z = torch.randn([b * num_z, self.cfg.z_dim], generator=generator, device=text.device)
        w = self.mapping_net(z, text.repeat_interleave(num_z, dim=0))
        return w.reshape(b, num_z, self.cfg.w_total).mean(dim=1)

    def synthesis(
        self,
        w: torch.Tensor,                # [B, w_total]
        stage: int,                     # Growth stage in [0, num_stages).
        alpha: float = 1.0,             # Fade-in amount in [0, 1].
        noise_mode: str = "random",     # 'random' | 'const' | 'none'
        noise_share: BatchShare | None = None,  # Data-parallel rows of the random noise.
    ) -> torch.Tensor:
        """-> img [B, 3, res, res]."""
        return self.synthesis_net(w, stage, alpha, noise_mode, noise_share)

    def forward(
        self,
        z: torch.Tensor,                # [B, z_dim]
        text: torch.Tensor,             # [B, text_dim] sentence embedding.
        stage: int,                     # Growth stage in [0, num_stages).
        alpha: float = 1.0,             # Fade-in amount in [0, 1].
        truncation_psi: float = 1.0,    # See `mapping`.
        truncation_target: torch.Tensor | None = None,  # [B, w_total] or None.
        noise_mode: str = "random",     # 'random' | 'const' | 'none'
        noise_share: BatchShare | None = None,  # Data-parallel: these rows of a global batch's noise.
    ) -> torch.Tensor:
        """-> img [B, 3, res, res], float, nominally in [-1, 1]."""
        w = self.mapping(z, text, truncation_psi, truncation_target)
        return self.synthesis(w, stage, alpha, noise_mode, noise_share)
