"""ε-prediction DDPM training of the text-conditioned UNet (docs/architecture.md, "Diffusion baseline").

`DdpmTrainer.train_iteration()` reads as the algorithm: draw reals and captions, replace each
caption by the empty one with probability p_uncond, noise the images at uniformly drawn
timesteps and regress the noise (`train_step`); the shared `TrainLoop.fit` (training/loop.py;
docs/architecture.md, "Training loop") then updates the EMA UNet, logs and checkpoints on their
cadences.

Layout of a `ddpm` checkpoint (plain data, `weights_only=True` loadable):
    config:        {"unet", "scheduler", "train", "data"} JSON-able dicts
    unet, unet_ema: state dicts;  optimizer: AdamW state dict  (`checkpointed`)
    progress:      {"nimg", "step"}
    rng:           {"torch", "cuda", "dataset", "sampler" (the data order's position)}
    text_encoder:  the frozen text encoder with its tokenizer (see text.pretrain)
    sample:        {"prompts", "seeds"} used for the progress grids
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from stylegan_t2i.batch_share import BatchShare, whole_batch
from stylegan_t2i.diffusion.scheduler import DDPMScheduler, SchedulerConfig
from stylegan_t2i.diffusion.unet import UNet
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.images import from_uint8
from stylegan_t2i.inference import DdpmSampler
from stylegan_t2i.text.pretrain import TextEncoderBundle
from stylegan_t2i.training.loop import LoopConfig, TrainLoop

NUM_T_BUCKETS = 4  # Loss/t_000_249 ... Loss/t_750_999: where in the schedule the error sits.


@dataclass(frozen=True)
class DdpmTrainConfig(LoopConfig):
    """The DDPM's training config: `LoopConfig`'s shared fields, then these."""
    batch:              int = 32            # Minibatch.
    lr:                 float = 2e-4        # AdamW learning rate (Ho et al. 2020 App. B: 2e-4).
    lr_warmup_kimg:     float = 1.0         # Linear warm-up of the lr over this many kimg.
    betas:              tuple = (0.9, 0.999)  # AdamW betas.
    weight_decay:       float = 0.0         # AdamW decoupled weight decay.
    grad_clip:          float = 1.0         # Max global gradient norm (Ho et al. 2020 App. B: 1).
    p_uncond:           float = 0.1         # Caption -> "" probability (Ho & Salimans 2022 §3.2).
    total_kimg:         float = 200.0       # Length of training in thousands of images.
    sample_steps:       int = 50            # DDIM steps of the progress grids.
    sample_guidance:    float = 3.0         # Guidance scale of the progress grids.

    def __post_init__(self):
        if self.batch < 1 or self.lr <= 0 or self.total_kimg <= 0 or not 0 <= self.p_uncond <= 1:
            raise ValueError("need batch >= 1, lr > 0, total_kimg > 0 and 0 <= p_uncond <= 1")


def bucket_names(num_train_timesteps: int) -> list[str]:
    """TensorBoard tags of the NUM_T_BUCKETS equal timestep ranges, e.g. 'Loss/t_000_249'."""
    T, k = num_train_timesteps, NUM_T_BUCKETS
    return [f"Loss/t_{i * T // k:03d}_{(i + 1) * T // k - 1:03d}" for i in range(k)]


class DdpmTrainer(TrainLoop):
    """Owns the UNet, its EMA copy, the optimizer and the noise schedule; the data stream, run
    directory and loop are `TrainLoop`'s."""

    KIND = "ddpm"

    def __init__(self,
        unet:           UNet,                   # Freshly initialised (or about to be loaded).
        text_bundle:    TextEncoderBundle,      # Frozen caption encoder; token features condition the UNet.
        dataset,                                # ImageLabelDataset at the UNet's resolution.
        order,                                  # IndexOrder over the dataset.
        scheduler_cfg:  SchedulerConfig,        # Noise schedule (β_t, T).
        cfg:            DdpmTrainConfig,
        run_dir:        Path | None,            # None: no files, no logs (tests).
        device:         torch.device,
        sample_prompts: Sequence[str],          # Rows of the progress grids.
        configs:        dict,                   # JSON-able configs stored in every checkpoint.
        progress:       bool = True,            # Show the tqdm bar.
        dist:           Distributed = Distributed(),  # Data-parallel place; cfg.batch is the global batch.
    ):
        assert dataset.resolution == unet.cfg.resolution, (dataset.resolution, unet.cfg.resolution)
        super().__init__(text_bundle, dataset, order, cfg, run_dir, device, sample_prompts, configs,
                         progress, dist)
        self.share = dist.share(cfg.batch)
        self.unet = unet.to(device)
        self.unet_ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.scheduler_cfg = scheduler_cfg
        self.scheduler = DDPMScheduler(scheduler_cfg)   # Only add_noise (eq. 4) is used in training.
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)
        self._bucket_names = bucket_names(scheduler_cfg.num_train_timesteps)

    # ------------------------------------------------------------------ state

    def checkpointed(self) -> dict:
        return {"unet": self.unet, "unet_ema": self.unet_ema, "optimizer": self.opt}

    def ema_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.unet_ema, self.unet

    # ------------------------------------------------------------------ data

    def next_reals(self) -> tuple[torch.Tensor, list[str]]:
        """This rank's share of a global minibatch: img [b, 3, R, R] in [-1, 1] on the device and
        one caption per image. Every rank reads all items of the global batch (cheap reads of the
        uint8 cache) so the dataset's caption/flip generator advances identically on every rank."""
        items = self.share.take([self.dataset[next(self._indices)] for _ in range(self.cfg.batch)])
        return from_uint8(torch.stack([im for im, _ in items])).to(self.device), [c for _, c in items]

    def drop_captions(self, captions: Sequence[str], share: BatchShare | None = None) -> list[str]:
        """Each caption becomes "" with probability p_uncond, so the same UNet also learns the
        unconditional ε that classifier-free guidance needs (Ho & Salimans 2022 §3.2).
        `share`: the rows of the global batch these captions are (None: all of them)."""
        share = share or whole_batch(len(captions))
        drop = share.rand() < self.cfg.p_uncond     # Global CPU RNG: saved in checkpoints.
        return ["" if d else c for c, d in zip(captions, drop.tolist())]

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features [B, L, D] and mask [B, L] of the frozen encoder. Encoded per batch, never
        cached: a cache filled in history-dependent groupings would make resumes inexact."""
        tokens, mask, _ = self.text.encode(list(captions), self.device)
        return tokens, mask

    # ------------------------------------------------------------------ steps

    def diffusion_loss(self,
        img:        torch.Tensor,   # [B, 3, R, R] clean images x0 in [-1, 1].
        context:    torch.Tensor,   # [B, L, D] caption token features.
        mask:       torch.Tensor,   # [B, L] bool, True = real token.
        share:      BatchShare | None = None,  # Rows of the global batch that img is; None: all of them.
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image ||ε - ε_θ(x_t, t, c)||² / (3R²) at t ~ U{0..T-1} -> (loss [B], t [B]).

        Ho et al. 2020 eq. 14 ("L_simple"): x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε (eq. 4), and
        the network regresses ε with an unweighted MSE.
        """
        share = share or whole_batch(img.shape[0])
        assert img.shape[0] == share.size, (img.shape, share)
        t = share.randint(self.scheduler.num_train_timesteps, device=self.device)
        noise = share.randn(*img.shape[1:], device=self.device).to(img.dtype)
        x_t = self.scheduler.add_noise(img, noise, t)
        with self._autocast():
            eps = self.unet(x_t, t, context, mask)
        return (eps.float() - noise).square().mean(dim=(1, 2, 3)), t

    def train_step(self, img: torch.Tensor, captions: Sequence[str]) -> torch.Tensor:
        """One AdamW step on L_simple with caption dropout; returns the per-image loss [B] (detached)."""
        context, mask = self.encode(self.drop_captions(captions, self.share))
        per_image, t = self.diffusion_loss(img, context, mask, self.share)
        if self._apply(self.opt, per_image.mean(), self.cfg.grad_clip, "Diffusion/grad_norm"):
            self.report_loss(per_image.detach(), t)
        return per_image.detach()

    def report_loss(self, per_image: torch.Tensor, t: torch.Tensor) -> None:
        """Loss/diffusion and the mean loss of each timestep bucket present in the batch."""
        bucket = t * NUM_T_BUCKETS // self.scheduler.num_train_timesteps
        sums = torch.zeros(NUM_T_BUCKETS, device=per_image.device).index_add_(0, bucket, per_image.float())
        counts = torch.bincount(bucket, minlength=NUM_T_BUCKETS)
        values = {"Loss/diffusion": per_image.mean()}
        for name, s, n in zip(self._bucket_names, sums.tolist(), counts.tolist()):
            if n:
                values[name] = s / n
        self.stats.add(values)

    def set_lr(self) -> float:
        """Linear warm-up to cfg.lr over lr_warmup_kimg (a function of nimg only: resumes exactly)."""
        warmup = self.cfg.lr_warmup_kimg * 1000
        lr = self.cfg.lr * min(1.0, (self.nimg + self.cfg.batch) / warmup) if warmup > 0 else self.cfg.lr
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def train_iteration(self) -> int:
        self.set_lr()
        self.train_step(*self.next_reals())
        self.nimg += self.cfg.batch
        return self.cfg.batch

    # ------------------------------------------------------------------ outputs

    def grid_sampler(self) -> tuple[DdpmSampler, dict]:
        """The EMA UNet with guided DDIM."""
        sampler = DdpmSampler(self.unet_ema, self.scheduler_cfg, self.text, self.device)
        return sampler, {"steps": self.cfg.sample_steps, "guidance": self.cfg.sample_guidance, "sampler": "ddim"}

    def log_tick(self, values: dict, img_per_s: float) -> str:
        values["LR"] = self.opt.param_groups[0]["lr"]
        return f"loss={values.get('Loss/diffusion', float('nan')):.4f} {img_per_s:.0f}img/s"
