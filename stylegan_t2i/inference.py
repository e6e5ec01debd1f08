"""Inference from checkpoints: captions (+ seeds) -> images.

`load_sampler(path, device)` picks the sampler by the checkpoint's kind; each kind's sampler
has `.resolution` and `.sample(captions, seeds, ...) -> img [N, 3, R, R]` in [-1, 1].
A new model kind adds one class to `SAMPLERS`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.config import config_from_dict
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.text.pretrain import bundle_from_payload

EXPORT_KEYS = ("config", "G_ema", "progress", "text_encoder", "sample")


def seeded_normal(seeds: Sequence[int], dim: int, device: torch.device) -> torch.Tensor:
    """[len(seeds), dim] standard normal rows, row i drawn from its own seed (on the CPU, so a
    seed gives the same latent on every device)."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device)


class GanSampler:
    """The EMA generator of a `gan` checkpoint plus its frozen text encoder."""

    kind = "gan"

    def __init__(self, data: dict, device: torch.device, batch: int = 64):
        cfg = config_from_dict(GeneratorConfig, data["config"]["generator"])
        self.G = Generator(cfg).eval().requires_grad_(False)
        self.G.load_state_dict(data["G_ema"])
        self.G.to(device)
        self.text = bundle_from_payload(data["text_encoder"]).to(device)
        progress = data["progress"]
        # A snapshot taken mid-growth generates at the resolution it was training at.
        self.stage, self.alpha = int(progress["stage"]), float(progress["alpha"])
        self.resolution = 4 * 2 ** self.stage
        self.kimg = progress["nimg"] / 1000
        self.device, self.batch = device, batch
        self.max_len = self.text.tokenizer.max_len

    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        """[N, text_dim] sentence embeddings."""
        return self.text.encode(list(captions), self.device)[2]

    @torch.no_grad()
    def synthesize(self, text: torch.Tensor, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """text: [N, text_dim], z: [N, z_dim] -> img [N, 3, R, R]; batched, noise fixed."""
        out = []
        for i in range(0, len(z), self.batch):
            t, zz = text[i:i + self.batch], z[i:i + self.batch]
            target = self.caption_mean_w(t) if truncation != 1 else None
            out.append(self.G(zz, t, self.stage, self.alpha, truncation_psi=truncation,
                              truncation_target=target, noise_mode="const").float().clamp(-1, 1))
        return torch.cat(out)

    def caption_mean_w(self, text: torch.Tensor) -> torch.Tensor:
        """[N, w_dim] truncation targets: each caption's mean w over the same fixed set of z, so
        a caption's target does not depend on the rest of the batch."""
        rows = [self.G.caption_mean_w(t[None], generator=torch.Generator(self.device).manual_seed(0))
                for t in text]
        return torch.cat(rows)

    def sample(self, captions: Sequence[str], seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
        """Image i from captions[i] and seeds[i]; same caption + seed -> same image."""
        assert len(captions) == len(seeds), (len(captions), len(seeds))
        z = seeded_normal(seeds, self.G.cfg.z_dim, self.device)
        return self.synthesize(self.embed(captions), z, truncation)


SAMPLERS = {"gan": GanSampler}


def load_sampler(path: str | Path, device: torch.device | str = "cpu"):
    """The sampler for the checkpoint at `path` (any kind in SAMPLERS)."""
    data = load_checkpoint(path, kinds=tuple(SAMPLERS))
    try:
        return SAMPLERS[data["kind"]](data, torch.device(device))
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{path}: checkpoint is incomplete or does not match this code "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def export_for_generation(src: str | Path, dst: str | Path) -> Path:
    """Copy only what generation needs (EMA G, text encoder, tokenizer, configs) to `dst`."""
    data = load_checkpoint(src, kinds="gan")
    return save_checkpoint(dst, "gan", {k: data[k] for k in EXPORT_KEYS})
