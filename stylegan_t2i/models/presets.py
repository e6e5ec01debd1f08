"""Named network presets (GeneratorConfig, CriticConfig pairs)."""
from __future__ import annotations

from stylegan_t2i.models.critic import CriticConfig
from stylegan_t2i.models.generator import GeneratorConfig


def cpu_demo_configs(
    text_dim: int,                      # Size of the sentence embedding of the text encoder.
    max_res: int = 32,                  # Final resolution.
) -> tuple[GeneratorConfig, CriticConfig]:
    """A small G/D pair for training the demo on 2 CPU cores at 32x32.

    channels(res) = min(1024 // res, 64): 64 channels at 4..16 px, 32 at 32 px;
    about 0.37M (G) + 0.29M (D) parameters and 61 MFLOP per image per forward
    of each network at 32x32. A critic step with a gradient penalty costs about
    12 critic forwards, so the conv work is ~0.8 GFLOP per image: channel_base
    2048 / channel_max 128 (~3.1 GFLOP) would cap training near 15-20 img/s on
    2 cores. No conv clamp: everything runs in float32, where the clamp (a
    guard against fp16 overflow in NVlabs) only costs time.

    The caption reaches the styles directly (text_w_dim 64 of w's 192 dimensions) and the mapping
    MLP learns at 0.1x rather than StyleGAN's 0.01x, which suits 10^5..10^6-step runs, not a
    10^4-step hour; G and D are StyleGAN2 skip networks with a small toRGB init, so growing adds
    detail instead of redrawing the image (docs/architecture.md, "Generator" and "Critic"). G
    up-samples by nearest neighbour and D down-samples by 2x2 box, as ProGAN did, so that a small
    square keeps its corners in both.
    """
    g = GeneratorConfig(
        text_dim=text_dim, max_res=max_res, z_dim=64, z_embed_dim=32, text_embed_dim=64, w_dim=128,
        mapping_layers=4, channel_base=1024, channel_max=64, conv_clamp=None,
        mapping_lr_mult=0.1, text_w_dim=64, architecture="skip", torgb_init=0.1, resample_kernel=(0, 1, 1, 0),
    )
    d = CriticConfig(
        text_dim=text_dim, max_res=max_res, channel_base=1024, channel_max=64, cmap_dim=64, conv_clamp=None,
        architecture="skip", resample_kernel=(0, 1, 1, 0),
    )
    return g, d


def nvlabs_size_configs(
    text_dim: int,                      # Size of the sentence embedding of the text encoder.
    max_res: int = 64,                  # Final resolution.
) -> tuple[GeneratorConfig, CriticConfig]:
    """The G/D pair at NVlabs StyleGAN2-ADA's small-config width, for comparing speed with it.

    z, w and the text embedding are 256 wide, the mapping MLP has 2 layers and
    channels(res) = min(8192 // res, 256): 256 channels up to 32 px, 128 at 64 px, 64 at
    128 px, as NVlabs' `channel_base=8192, channel_max=256` gives (their formula is the
    same, `min(channel_base // res, channel_max)`). The projection head is 256 wide, as
    NVlabs' cmap_dim (the 4 px channel count). No conv clamp and no direct caption part
    of w (`text_w_dim=0`): everything runs in float32, and the styles come from the MLP
    alone, as in NVlabs' conditional mapping. G and D are skip networks
    (docs/architecture.md, "Generator" and "Critic"); the mapping keeps StyleGAN's 0.01 lr
    multiplier, sized for the 10^5-10^6 steps a network of this size trains for.
    `benchmarks/bench_generator.py --config nvlabs` measures it against NVlabs' own networks.
    """
    g = GeneratorConfig(
        text_dim=text_dim, max_res=max_res, z_dim=256, z_embed_dim=256, text_embed_dim=256, w_dim=256,
        mapping_layers=2, channel_base=8192, channel_max=256, conv_clamp=None,
        mapping_lr_mult=0.01, text_w_dim=0, architecture="skip", torgb_init=0.1,
    )
    d = CriticConfig(
        text_dim=text_dim, max_res=max_res, channel_base=8192, channel_max=256, cmap_dim=256, conv_clamp=None,
        architecture="skip",
    )
    return g, d
