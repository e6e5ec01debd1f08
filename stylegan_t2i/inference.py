"""Inference from checkpoints: captions (+ seeds) -> images.

`load_sampler(path, device)` picks the sampler by the checkpoint's kind; each kind's sampler
has `.resolution` and `.sample(captions, seeds, ...) -> img [N, 3, R, R]` in [-1, 1].
A new model kind adds one class to `SAMPLERS`.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.config import config_from_dict
from stylegan_t2i.diffusion import (DDIMScheduler, DDPMScheduler, SchedulerConfig, UNet, UNetConfig,
                                    guided_eps, img2img_start)
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.text.pretrain import TextEncoderBundle, bundle_from_payload

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


# Seed offset of an image's per-step sampling noise, so that it never repeats the initial noise
# drawn from the seed itself (a fresh generator with the same seed would give the same numbers).
STEP_NOISE_SEED_OFFSET = 1 << 32


class DdpmSampler:
    """The EMA UNet of a `ddpm` checkpoint, its noise schedule and its frozen text encoder."""

    kind = "ddpm"

    def __init__(self, data: dict, device: torch.device, batch: int = 64):
        c = data["config"]
        unet = UNet(config_from_dict(UNetConfig, c["unet"]))
        unet.load_state_dict(data["unet_ema"])
        self._attach(unet, config_from_dict(SchedulerConfig, c["scheduler"]),
                     bundle_from_payload(data["text_encoder"]), device, batch)
        self.kimg = data["progress"]["nimg"] / 1000

    @classmethod
    def from_networks(cls,
        unet:           UNet,                   # The ε-predictor (the trainer's EMA copy).
        scheduler_cfg:  SchedulerConfig,        # The noise schedule it was trained with.
        text:           TextEncoderBundle,      # Its frozen text encoder.
        device:         torch.device,
        batch:          int = 64,               # Images per UNet pass (twice that with guidance).
    ) -> "DdpmSampler":
        """A sampler around live networks, e.g. the trainer's progress grids: same code as generate.py."""
        sampler = cls.__new__(cls)
        sampler._attach(unet, scheduler_cfg, text, device, batch)
        sampler.kimg = float("nan")
        return sampler

    def _attach(self, unet, scheduler_cfg, text, device, batch) -> None:
        self.unet = unet.eval().requires_grad_(False).to(device)
        self.scheduler_cfg = scheduler_cfg
        self.text = text.to(device)
        self.resolution = unet.cfg.resolution
        self.device, self.batch = device, batch
        self.max_len = self.text.tokenizer.max_len

    def make_scheduler(self, sampler: str, eta: float) -> DDPMScheduler | DDIMScheduler:
        if sampler == "ddim":
            return DDIMScheduler(self.scheduler_cfg, eta=eta)
        if sampler == "ddpm":
            return DDPMScheduler(self.scheduler_cfg)
        raise ValueError(f"sampler must be 'ddpm' or 'ddim', got {sampler!r}")

    @torch.no_grad()
    def sample(self,
        captions:   Sequence[str],              # N captions.
        seeds:      Sequence[int],              # N seeds; image i uses seeds[i].
        truncation: float = 1.0,                # GAN only; ignored here (with a warning unless 1).
        steps:      int = 50,                   # Inference steps.
        guidance:   float = 3.0,                # Classifier-free guidance scale w (1 = off).
        sampler:    str = "ddim",               # 'ddim' or 'ddpm' (ancestral).
        eta:        float = 0.0,                # DDIM η: 0 deterministic, 1 = DDPM variance.
        init_image: torch.Tensor | None = None, # [1 or N, 3, R, R] in [-1, 1]: img2img start.
        strength:   float = 0.6,                # img2img: fraction of the schedule re-run.
        progress:   bool = False,               # tqdm bar over the denoising steps.
    ) -> torch.Tensor:
        """img [N, 3, R, R] in [-1, 1]. Image i depends only on captions[i], seeds[i] and the
        options: its initial noise is `seeded_normal([seeds[i]])` and its per-step noise comes
        from its own generator, so neither the batch nor the other images change it."""
        assert len(captions) == len(seeds), (len(captions), len(seeds))
        if truncation != 1:
            warnings.warn("truncation applies to GAN checkpoints only; this DDPM checkpoint ignores it")
        scheduler = self.make_scheduler(sampler, eta)
        scheduler.set_timesteps(steps)
        out = []
        for i in range(0, len(seeds), self.batch):
            out.append(self._sample_batch(list(captions[i:i + self.batch]), list(seeds[i:i + self.batch]),
                                          scheduler, guidance, init_image, strength, progress))
        return torch.cat(out)

    def _sample_batch(self, captions, seeds, scheduler, guidance, init_image, strength, progress) -> torch.Tensor:
        n, res = len(seeds), self.resolution
        if init_image is None:
            x, timesteps = seeded_normal(seeds, 3 * res * res, self.device).view(n, 3, res, res), scheduler.timesteps
        else:
            x, timesteps = self._img2img_start(scheduler, init_image, seeds, strength)
        context, mask = self._context(captions, with_uncond=guidance != 1)
        gens = [torch.Generator(self.device).manual_seed(int(s) + STEP_NOISE_SEED_OFFSET) for s in seeds]
        stochastic = isinstance(scheduler, DDPMScheduler) or scheduler.eta > 0
        for t in tqdm(timesteps.tolist(), desc="sampling", disable=not progress, leave=False):
            eps = self._eps(x, t, context, mask, guidance)
            if stochastic:  # One step per image so each draws its step noise from its own generator.
                x = torch.cat([scheduler.step(eps[j:j + 1], t, x[j:j + 1], generator=g) for j, g in enumerate(gens)])
            else:
                x = scheduler.step(eps, t, x)
        return x.float().clamp(-1, 1)

    def _img2img_start(self, scheduler, init_image, seeds, strength) -> tuple[torch.Tensor, torch.Tensor]:
        """SDEdit start per image; the noise added to it is image i's seeded initial noise."""
        res = self.resolution
        assert init_image.ndim == 4 and init_image.shape[1:] == (3, res, res), init_image.shape
        x0 = init_image.detach().float().cpu().expand(len(seeds), -1, -1, -1)
        # A fresh CPU generator seeded with s draws the same numbers as seeded_normal([s]).
        starts = [img2img_start(scheduler, x0[j:j + 1], strength, torch.Generator().manual_seed(int(s)))
                  for j, s in enumerate(seeds)]
        return torch.cat([x for x, _ in starts]).to(self.device), starts[0][1]

    def _context(self, captions: list[str], with_uncond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features [B or 2B, L, D] and mask: the captions, then (for guidance) the empty
        caption once per image, so both halves go through the UNet in one batch."""
        tokens, mask, _ = self.text.encode(captions + [""] if with_uncond else captions, self.device)
        if not with_uncond:
            return tokens, mask
        n = len(captions)
        return (torch.cat([tokens[:n], tokens[n:].expand(n, -1, -1)]),
                torch.cat([mask[:n], mask[n:].expand(n, -1)]))

    def _eps(self, x, t: int, context, mask, guidance: float) -> torch.Tensor:
        """ε̃(x_t, t) with classifier-free guidance (Ho & Salimans 2022) when guidance != 1."""
        n = x.shape[0]
        if context.shape[0] == n:
            return self.unet(x, torch.full((n,), t, dtype=torch.int64, device=self.device), context, mask).float()
        t_batch = torch.full((2 * n,), t, dtype=torch.int64, device=self.device)
        eps = self.unet(torch.cat([x, x]), t_batch, context, mask).float()
        return guided_eps(eps[:n], eps[n:], guidance)


SAMPLERS = {"gan": GanSampler, "ddpm": DdpmSampler}


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
