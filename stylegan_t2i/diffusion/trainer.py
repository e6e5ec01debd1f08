"""ε-prediction DDPM training of the text-conditioned UNet (docs/architecture.md, "Diffusion baseline").

`DdpmTrainer.fit()` reads as the algorithm: draw reals and captions, replace each caption by
the empty one with probability p_uncond, noise the images at uniformly drawn timesteps and
regress the noise (`train_step`), update the EMA UNet (`update_ema`), then log and checkpoint on
their cadences (`maybe_snapshot`).

Layout of a `ddpm` checkpoint (plain data, `weights_only=True` loadable):
    config:        {"unet", "scheduler", "train", "data"} JSON-able dicts
    unet, unet_ema: state dicts;  optimizer: AdamW state dict
    progress:      {"nimg", "step"}
    rng:           {"torch", "cuda", "dataset", "sampler"}
    text_encoder:  the frozen text encoder with its tokenizer (see text.pretrain)
    sample:        {"prompts", "seeds"} used for the progress grids
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from stylegan_t2i.batch_share import BatchShare, whole_batch
from stylegan_t2i.checkpoint import save_checkpoint
from stylegan_t2i.diffusion.scheduler import DDPMScheduler, SchedulerConfig
from stylegan_t2i.diffusion.unet import UNet
from stylegan_t2i.images import from_uint8, make_grid, save_png, to_uint8
from stylegan_t2i.inference import DdpmSampler
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import TextEncoderBundle, text_encoder_payload
from stylegan_t2i.training import run_files
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.training.ema import ema_beta, update_ema
from stylegan_t2i.training.faults import NonFiniteCounter
from stylegan_t2i.training.interrupt import GracefulInterrupt
from stylegan_t2i.training.stats import RunningMeans

NUM_T_BUCKETS = 4  # Loss/t_000_249 ... Loss/t_750_999: where in the schedule the error sits.


@dataclass(frozen=True)
class DdpmTrainConfig:
    batch:              int = 32            # Minibatch.
    lr:                 float = 2e-4        # AdamW learning rate (Ho et al. 2020 App. B: 2e-4).
    lr_warmup_kimg:     float = 1.0         # Linear warm-up of the lr over this many kimg.
    betas:              tuple = (0.9, 0.999)  # AdamW betas.
    weight_decay:       float = 0.0         # AdamW decoupled weight decay.
    grad_clip:          float = 1.0         # Max global gradient norm (Ho et al. 2020 App. B: 1).
    p_uncond:           float = 0.1         # Caption -> "" probability (Ho & Salimans 2022 §3.2).
    ema_kimg:           float = 10.0        # EMA half-life of the UNet in kimg.
    ema_rampup:         float = 0.05        # Half-life is at most this fraction of images shown so far.
    seed:               int = 0             # Seed of weights, noise, timesteps and data order.
    total_kimg:         float = 200.0       # Length of training in thousands of images.
    snapshot_kimg:      float = 20.0        # Checkpoint + sample grid every this many kimg.
    keep_snapshots:     int = 3             # Snapshots kept besides network-final.pt.
    log_kimg:           float = 1.0         # Scalars to TensorBoard / log.jsonl every this many kimg.
    max_nonfinite:      int = 10            # Consecutive non-finite steps before training stops.
    sample_steps:       int = 50            # DDIM steps of the progress grids.
    sample_guidance:    float = 3.0         # Guidance scale of the progress grids.
    amp:                bool = True         # bfloat16 autocast on CUDA (ignored on CPU).

    def __post_init__(self):
        if self.batch < 1 or self.lr <= 0 or self.total_kimg <= 0 or not 0 <= self.p_uncond <= 1:
            raise ValueError("need batch >= 1, lr > 0, total_kimg > 0 and 0 <= p_uncond <= 1")


def bucket_names(num_train_timesteps: int) -> list[str]:
    """TensorBoard tags of the NUM_T_BUCKETS equal timestep ranges, e.g. 'Loss/t_000_249'."""
    T, k = num_train_timesteps, NUM_T_BUCKETS
    return [f"Loss/t_{i * T // k:03d}_{(i + 1) * T // k - 1:03d}" for i in range(k)]


class DdpmTrainer:
    """Owns the UNet, its EMA copy, the optimizer, the data stream and the run directory."""

    def __init__(self,
        unet:           UNet,                   # Freshly initialised (or about to be loaded).
        text_bundle:    TextEncoderBundle,      # Frozen caption encoder; token features condition the UNet.
        dataset,                                # ImageLabelDataset at the UNet's resolution.
        sampler,                                # InfiniteSampler over the dataset.
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
        self.dist, self.share = dist, dist.share(cfg.batch)
        self.unet = unet.to(device)
        self.unet_ema = copy.deepcopy(self.unet).eval().requires_grad_(False)
        self.text = text_bundle
        self.dataset, self.sampler = dataset, sampler
        self._sampler_iter = iter(sampler)
        self.scheduler_cfg, self.cfg = scheduler_cfg, cfg
        self.scheduler = DDPMScheduler(scheduler_cfg)   # Only add_noise (eq. 4) is used in training.
        # Rank 0 alone writes checkpoints, grids and logs.
        self.run_dir = Path(run_dir) if run_dir is not None and dist.is_main else None
        self.device, self.configs, self.progress = device, configs, progress and dist.is_main
        self.sample_prompts, self.sample_seeds = list(sample_prompts), list(range(8))
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.lr, betas=cfg.betas,
                                     weight_decay=cfg.weight_decay)
        self.nimg, self.step = 0, 0
        self.nonfinite = NonFiniteCounter(cfg.max_nonfinite)
        self._bucket_names = bucket_names(scheduler_cfg.num_train_timesteps)
        self.log = RunLog(self.run_dir)
        self.stats = RunningMeans()

    # ------------------------------------------------------------------ state

    def state_payload(self) -> dict:
        return {
            "config": self.configs,
            "unet": self.unet.state_dict(), "unet_ema": self.unet_ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "progress": {"nimg": self.nimg, "step": self.step},
            "rng": run_files.rng_state(self.device, self.dataset, self.sampler),
            "text_encoder": text_encoder_payload(self.text),
            "sample": {"prompts": self.sample_prompts, "seeds": self.sample_seeds},
        }

    def load_payload(self, data: dict) -> None:
        """Restore everything `state_payload` saved; strict, so a config mismatch fails loudly."""
        self.unet.load_state_dict(data["unet"])
        self.unet_ema.load_state_dict(data["unet_ema"])
        self.opt.load_state_dict(data["optimizer"])
        self.nimg, self.step = int(data["progress"]["nimg"]), int(data["progress"]["step"])
        run_files.restore_rng_state(data["rng"], self.device, self.dataset, self.sampler)
        self._sampler_iter = iter(self.sampler)
        self.sample_prompts = list(data["sample"]["prompts"])
        self.sample_seeds = list(data["sample"]["seeds"])

    # ------------------------------------------------------------------ data

    def next_reals(self) -> tuple[torch.Tensor, list[str]]:
        """This rank's share of a global minibatch: img [b, 3, R, R] in [-1, 1] on the device and
        one caption per image. Every rank reads all items of the global batch (cheap reads of the
        uint8 cache) so the dataset's caption/flip generator advances identically on every rank."""
        items = self.share.take([self.dataset[next(self._sampler_iter)] for _ in range(self.cfg.batch)])
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

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

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
        if self._apply(per_image.mean()):
            self.report_loss(per_image.detach(), t)
        return per_image.detach()

    def _apply(self, loss: torch.Tensor) -> bool:
        """Backward, average the gradients over ranks, clip, step; a non-finite loss (on any rank)
        or gradient skips the step on every rank and is counted. Returns whether the step was
        taken. Raises TrainingDiverged after max_nonfinite in a row."""
        self.opt.zero_grad(set_to_none=True)
        loss.backward()     # Even when non-finite: every rank must join the gradient all-reduce.
        finite = self.dist.reduce_gradients_(self.unet.parameters(), loss)
        if finite:
            grad_norm = torch.nn.utils.clip_grad_norm_(self.unet.parameters(), self.cfg.grad_clip)
        if not self.nonfinite.record(finite, self.nimg / 1000):
            self.opt.zero_grad(set_to_none=True)
            self.stats.add({"Faults/nonfinite_steps": 1.0})
            return False
        self.opt.step()
        self.stats.add({"Diffusion/grad_norm": grad_norm})
        return True

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

    def update_ema(self, batch: int) -> None:
        update_ema(self.unet_ema, self.unet, ema_beta(batch, self.nimg, self.cfg.ema_kimg, self.cfg.ema_rampup))

    # ------------------------------------------------------------------ outputs

    def sample_grid(self):
        """Fixed prompts (rows) x fixed seeds (columns) from the EMA UNet with guided DDIM, as
        [H, W, 3] uint8: the images generate.py gives for the same prompts and seeds."""
        sampler = DdpmSampler(self.unet_ema, self.scheduler_cfg, self.text, self.device)
        captions = [p for p in self.sample_prompts for _ in self.sample_seeds]
        img = sampler.sample(captions, self.sample_seeds * len(self.sample_prompts), steps=self.cfg.sample_steps,
                             guidance=self.cfg.sample_guidance, sampler="ddim")
        return make_grid(to_uint8(img), len(self.sample_prompts), len(self.sample_seeds))

    def snapshot(self, final: bool = False) -> Path | None:
        """Sample grid + atomic checkpoint; never writes non-finite weights."""
        if self.run_dir is None:
            return None
        if not (run_files.all_finite(self.unet) and run_files.all_finite(self.unet_ema)):
            tqdm.write("warning: weights are not finite; checkpoint NOT written (previous one kept)")
            return None
        grid = self.sample_grid()
        save_png(self.run_dir / "samples" / f"fakes{self.nimg // 1000:06d}.png", grid)
        self.log.image("Samples/fixed_prompts", grid, self.nimg)
        name = run_files.FINAL_NAME if final else run_files.snapshot_name(self.nimg)
        path = save_checkpoint(self.run_dir / name, "ddpm", self.state_payload())
        run_files.prune_snapshots(self.run_dir, self.cfg.keep_snapshots)
        return path

    def maybe_snapshot(self, batch: int, total_nimg: int) -> bool:
        """Snapshot when this step crossed a multiple of snapshot_kimg (the final one is fit's)."""
        every = max(int(self.cfg.snapshot_kimg * 1000), 1)
        if self.nimg // every != (self.nimg - batch) // every and self.nimg < total_nimg:
            self.snapshot()
            return True
        return False

    # ------------------------------------------------------------------ loop

    def fit(self, total_kimg: float) -> Path | None:
        """Train until `total_kimg`; returns the final checkpoint path (None without a run dir or
        when interrupted: the checkpoint written then is reported on the console)."""
        total_nimg, batch = int(total_kimg * 1000), self.cfg.batch
        log_every = max(int(self.cfg.log_kimg * 1000), 1)
        bar = tqdm(total=total_kimg, initial=self.nimg / 1000, unit="kimg", disable=not self.progress,
                   bar_format="{l_bar}{bar}| {n:.2f}/{total:g} kimg [{elapsed}<{remaining}{postfix}]")
        tick = (time.perf_counter(), self.nimg)
        with GracefulInterrupt() as interrupt:
            while self.nimg < total_nimg:
                self.set_lr()
                self.train_step(*self.next_reals())
                self.nimg += batch
                self.step += 1
                self.update_ema(batch)
                bar.update(batch / 1000)
                if self.nimg // log_every != (self.nimg - batch) // log_every:
                    tick = self.write_log(bar, tick)
                if self.maybe_snapshot(batch, total_nimg):
                    tick = (time.perf_counter(), self.nimg)  # Snapshot time is not training speed.
                if self.dist.any(interrupt.requested, self.device):
                    self.write_log(bar, tick)
                    path = self.snapshot()
                    bar.close()
                    if self.dist.is_main:
                        tqdm.write(f"interrupted by {interrupt.signal_name or 'a signal to another rank'} at kimg "
                                   f"{self.nimg / 1000:.2f}; checkpoint {path}; continue with the same command "
                                   f"plus --resume auto")
                    self.log.close()
                    return None
        bar.close()
        self.write_log(bar, tick)
        path = self.snapshot(final=True)
        self.log.close()
        return path

    def write_log(self, bar, tick: tuple[float, int]) -> tuple[float, int]:
        """Flush the running means with progress, speed and lr to the RunLog and the bar."""
        now = time.perf_counter()
        img_per_s = (self.nimg - tick[1]) / max(now - tick[0], 1e-9)
        values = self.stats.flush()
        values.update({"Progress/kimg": self.nimg / 1000, "Speed/img_per_s": img_per_s,
                       "Speed/sec_per_kimg": 1000 / max(img_per_s, 1e-9), "LR": self.opt.param_groups[0]["lr"]})
        self.log.scalars(self.nimg, values, kimg=self.nimg / 1000)
        bar.set_postfix_str(f"loss={values.get('Loss/diffusion', float('nan')):.4f} {img_per_s:.0f}img/s",
                            refresh=False)
        return now, self.nimg
