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
    """
    g = GeneratorConfig(
        text_dim=text_dim, max_res=max_res, z_dim=64, z_embed_dim=32, text_embed_dim=64, w_dim=128,
        mapping_layers=4, channel_base=1024, channel_max=64, conv_clamp=None,
    )
    d = CriticConfig(
        text_dim=text_dim, max_res=max_res, channel_base=1024, channel_max=64, cmap_dim=64, conv_clamp=None,
    )
    return g, d
