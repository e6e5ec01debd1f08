"""Progressive WGAN-GP training of the text-conditioned StyleGAN (docs/architecture.md, "Losses").

`GanTrainer.fit()` reads as the algorithm: each step draws reals and captions for the
current phase, runs `n_critic` critic steps and one generator step, updates the EMA
generator, then logs and snapshots on their cadences.
"""
from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stylegan_t2i.batch_share import BatchShare
from stylegan_t2i.checkpoint import save_checkpoint
from stylegan_t2i.images import from_uint8, make_grid, save_png, to_uint8, zoom_and_shift
from stylegan_t2i.inference import GanSampler
from stylegan_t2i.models.layers import fade_upsample
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import text_encoder_payload
from stylegan_t2i.training import run_files
from stylegan_t2i.training.ema import ema_beta, update_ema
from stylegan_t2i.training.faults import NonFiniteCounter
from stylegan_t2i.training.interrupt import GracefulInterrupt
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.training.losses import alignment_loss, critic_loss, generator_loss, gradient_penalty
from stylegan_t2i.training.negatives import CaptionPool
from stylegan_t2i.training.schedule import Phase, ProgressiveSchedule, remaining_seconds
from stylegan_t2i.training.stats import RunningMeans

# G's alignment loss weight. Its gradient on an image, like the critic's under the gradient
# penalty, is of order one per image; see docs/architecture.md ("Losses") for how it was chosen.
ALIGN_WEIGHT = 1.0


@dataclass(frozen=True)
class StepText:
    """The captions of one step, embedded: this rank's rows."""
    text: torch.Tensor             # [b, text_dim] sentence embeddings (G and D condition on these).
    unit: torch.Tensor             # [b, E] unit contrastive embeddings (G's alignment loss).
    wrong: torch.Tensor            # [b, K, text_dim] hard-negative captions' sentence embeddings.
    wrong_valid: torch.Tensor      # [b, K] bool: False where a caption had no negative to draw.


@dataclass(frozen=True)
class TrainConfig:
    n_critic: int = 1              # Critic steps per generator step.
    gp_weight: float = 10.0        # WGAN-GP lambda (Gulrajani et al. 2017).
    gp_interval: int = 4           # Penalty on every this many critic steps, weighted by it (lazy).
    drift: float = 0.001           # Drift penalty epsilon (Karras et al. 2018).
    align_weight: float = ALIGN_WEIGHT  # Weight of G's image-caption alignment loss (0 = off).
    align_shift: float = 0.05      # Random shift (fraction of the side) of the images that loss sees.
    negatives: int = 4             # Hard-negative captions per real image in the matching term.
    negative_candidates: int = 64  # They are drawn from this many nearest captions ...
    negative_max_similarity: float = 0.95  # ... below this contrastive cosine (paraphrases excluded).
    betas: tuple = (0.0, 0.99)     # Adam betas.
    ema_kimg: float = 10.0         # EMA half-life of G in kimg.
    ema_rampup: float = 0.05       # Half-life is at most this fraction of images shown so far.
    seed: int = 0                  # Seed of weights, noise and data order.
    snapshot_kimg: float = 20.0    # Checkpoint + sample grid every this many kimg.
    keep_snapshots: int = 3        # Snapshots kept besides network-final.pt.
    log_kimg: float = 1.0          # Scalars to TensorBoard / log.jsonl every this many kimg.
    max_nonfinite: int = 10        # Consecutive non-finite steps before training stops.
    amp: bool = True               # bfloat16 autocast on CUDA (ignored on CPU).


class GanTrainer:
    """Owns G, D, G_ema, their optimizers, the data stream and the run directory."""

    def __init__(self, G, D, text_bundle, dataset, sampler, schedule: ProgressiveSchedule,
                 cfg: TrainConfig, run_dir: Path | None, device: torch.device,
                 sample_prompts: Sequence[str], configs: dict, progress: bool = True,
                 dist: Distributed = Distributed()):
        self.dist = dist
        self.G, self.D = G.to(device), D.to(device)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.text = text_bundle
        self.dataset, self.sampler = dataset, sampler
        self._sampler_iter = iter(sampler)
        self.schedule, self.cfg = schedule, cfg
        # Rank 0 alone writes checkpoints, grids and logs.
        self.run_dir = Path(run_dir) if run_dir is not None and dist.is_main else None
        self.device = device
        self.configs = configs
        self.progress = progress and dist.is_main
        self.sample_prompts = list(sample_prompts)
        self.sample_seeds = list(range(8))
        lr = schedule.at(0).lr
        self.opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=cfg.betas)
        self.nimg, self.step = 0, 0
        self.nonfinite = NonFiniteCounter(cfg.max_nonfinite)
        self.log = RunLog(self.run_dir)
        self.stats = RunningMeans()
        self._negatives: CaptionPool | None = None
        self.speed: dict[int, float] = {}   # Latest measured img/s per resolution (for the ETA).
        self.total_nimg = 0                 # Where `fit` ends.

    @property
    def negatives(self) -> CaptionPool:
        """The hard-negative caption pool, embedded on first use (a fixed order: resumes agree)."""
        if self._negatives is None:
            self._negatives = CaptionPool(self.dataset.captions, self.text, self.device, per_image=self.cfg.negatives,
                                          candidates=self.cfg.negative_candidates,
                                          max_similarity=self.cfg.negative_max_similarity, seed=self.cfg.seed)
        return self._negatives

    # ------------------------------------------------------------------ state

    def state_payload(self) -> dict:
        """A `gan` checkpoint (plain data, `weights_only=True` loadable):

        config: {"generator", "critic", "train", "schedule", "data"}; G, D, G_ema, opt_G, opt_D:
        state dicts; progress: {"nimg", "stage", "alpha", "step"}; rng: see `run_files.rng_state`;
        text_encoder: the frozen encoder with its tokenizer; sample: the grids' prompts and seeds.
        """
        phase = self.schedule.at(self.nimg)
        return {
            "config": self.configs,
            "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
            "progress": {"nimg": self.nimg, "stage": phase.stage, "alpha": phase.alpha,
                         "step": self.step},
            "rng": run_files.rng_state(self.device, self.dataset, self.sampler),
            "text_encoder": text_encoder_payload(self.text),
            "sample": {"prompts": self.sample_prompts, "seeds": self.sample_seeds},
        }

    def load_payload(self, data: dict) -> None:
        """Restore everything `state_payload` saved; strict, so a config mismatch fails loudly."""
        self.G.load_state_dict(data["G"])
        self.D.load_state_dict(data["D"])
        self.G_ema.load_state_dict(data["G_ema"])
        self.opt_G.load_state_dict(data["opt_G"])
        self.opt_D.load_state_dict(data["opt_D"])
        self.nimg, self.step = int(data["progress"]["nimg"]), int(data["progress"]["step"])
        run_files.restore_rng_state(data["rng"], self.device, self.dataset, self.sampler)
        self._sampler_iter = iter(self.sampler)
        self.sample_prompts = list(data["sample"]["prompts"])
        self.sample_seeds = list(data["sample"]["seeds"])

    # ------------------------------------------------------------------ data

    def embed_captions(self, captions: Sequence[str]) -> torch.Tensor:
        """Sentence embeddings [B, text_dim] of the frozen encoder. Encoded per batch, never
        cached: a cache filled in history-dependent groupings would make resumes inexact."""
        return self.text.encode(list(captions), self.device)[2]

    def next_reals(self, phase: Phase, share: BatchShare) -> tuple[torch.Tensor, list[str]]:
        """This rank's reals at the phase's resolution, cross-faded like G's output, and the
        captions of the whole global batch.

        Every rank reads all items of the global batch (cheap reads of the uint8 cache) so the
        dataset's caption/flip generator advances identically on every rank."""
        view = self.dataset.view(phase.res)
        items = [view[next(self._sampler_iter)] for _ in range(phase.batch)]
        img = from_uint8(torch.stack([im for im, _ in share.take(items)])).to(self.device)
        if phase.alpha < 1.0:
            # ProGAN: while the new block fades in, reals are blended with their
            # lower-resolution version exactly as G blends its two toRGB outputs.
            low = fade_upsample(F.avg_pool2d(img, 2))
            img = torch.lerp(low, img, phase.alpha)
        return img, [c for _, c in items]

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def step_text(self, captions: Sequence[str], share: BatchShare) -> StepText:
        """Embeddings of this rank's captions and hard negatives drawn for the whole global batch.

        Every rank encodes the whole global batch (one text-encoder pass; the unit contrastive
        embedding is the normalised sentence embedding), so every rank sees exactly the numbers
        one process sees and draws the same negatives (see `CaptionPool.draw`)."""
        sentence = self.embed_captions(captions)
        unit = F.normalize(sentence, dim=1)
        idx, valid = self.negatives.draw(captions, unit)
        rows = slice(share.start, share.stop)
        return StepText(text=sentence[rows], unit=unit[rows],
                        wrong=self.negatives.sentence[idx[rows]], wrong_valid=valid[rows])

    def critic_step(self, phase: Phase, share: BatchShare, reals: torch.Tensor, step_text: StepText,
                    regularize: bool = True) -> None:
        """One critic update on this rank's share of the global batch (gradients averaged over ranks).

        Reals and fakes go through the trunk in one batched pass (the minibatch-std groups never
        mix them), and the reals' features score both their own captions and the hard negatives
        (only the caption head differs), so the matching term costs no extra pass.
        `regularize`: add the gradient penalty, times gp_interval (StyleGAN2's lazy
        regularisation, Karras et al. 2020 sec. 4.1: the same expected penalty for a quarter of
        its double-backward cost at interval 4; docs/architecture.md, "Losses")."""
        text = step_text.text
        z = share.randn(self.G.cfg.z_dim, device=self.device)
        with torch.no_grad(), self._autocast():
            fakes = self.G(z, text, phase.stage, phase.alpha, noise_share=share).float()
        with self._autocast():
            both = self.D.features(torch.cat([reals, fakes]), phase.stage, phase.alpha, sets=2)
            h_real, h_fake = both.chunk(2)
            real_scores = self.D.score(h_real, text).float()
            wrong_scores = self.D.score(h_real, step_text.wrong).float()
            losses = critic_loss(real_scores, self.D.score(h_fake, text).float(), wrong_scores,
                                 drift=self.cfg.drift, mismatch_valid=step_text.wrong_valid)
        total = losses["loss"]
        if regularize:
            def critic_fn(img, txt):
                return self.D(img, txt, phase.stage, phase.alpha).float()
            gp, grad_norm = gradient_penalty(critic_fn, reals, fakes, text, share.rand(device=self.device),
                                             weight=self.cfg.gp_weight * self.cfg.gp_interval)
            total = total + gp
            self.stats.add({"Loss/D/gp": gp / self.cfg.gp_interval, "Critic/grad_norm": grad_norm})
        self._apply(self.opt_D, total)
        self.stats.add({"Loss/D": total, "Loss/D/mismatch": losses["mismatch"],
                        "Loss/D/drift": losses["drift"], "Critic/wdist": losses["wdist"]})

    def regularize_now(self, critic_index: int) -> bool:
        """Whether critic step `critic_index` (0 .. n_critic - 1) of this iteration carries the
        gradient penalty: every gp_interval-th critic step, counted from the run's start."""
        return (self.step * self.cfg.n_critic + critic_index) % self.cfg.gp_interval == 0

    def generator_step(self, phase: Phase, share: BatchShare, step_text: StepText) -> None:
        z = share.randn(self.G.cfg.z_dim, device=self.device)
        self.D.requires_grad_(False)  # G's step needs gradients through D, not of D's weights
        with self._autocast():
            fakes = self.G(z, step_text.text, phase.stage, phase.alpha, noise_share=share)
            adversarial = generator_loss(self.D(fakes, step_text.text, phase.stage, phase.alpha).float())
            loss = adversarial
            if self.cfg.align_weight:
                # The frozen encoder's weights take no gradient; the image does.
                # Randomly shifted copies: a pattern that fools the small encoder at one exact
                # placement does not survive a shift, a drawn shape does.
                shift = (share.rand(2, device=self.device) * 2 - 1) * self.cfg.align_shift
                seen = zoom_and_shift(fakes.float(), shift)
                align = alignment_loss(self.text.model.encode_image(seen).float(), step_text.unit)
                loss = adversarial + self.cfg.align_weight * align
                self.stats.add({"Loss/G/align": align})
        self._apply(self.opt_G, loss)
        self.D.requires_grad_(True)
        self.stats.add({"Loss/G": loss, "Loss/G/adversarial": adversarial})

    def _apply(self, opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        """Backward, average the gradients over ranks, step; unless a loss or a gradient is
        non-finite on any rank: then every rank skips the step and counts it."""
        opt.zero_grad(set_to_none=True)
        # A non-finite loss still runs backward, so every rank joins the gradient all-reduce.
        loss.backward()
        finite = self.dist.reduce_gradients_([p for group in opt.param_groups for p in group["params"]], loss)
        if not self.nonfinite.record(finite, self.nimg / 1000):
            opt.zero_grad(set_to_none=True)
            self.stats.add({"Faults/nonfinite_steps": 1.0})
            return
        opt.step()

    def update_ema(self, images: int) -> None:
        """One EMA step after G's step; `images` = real images shown since the last one
        (n_critic batches), so the half-life stays in images whatever n_critic is."""
        update_ema(self.G_ema, self.G, ema_beta(images, self.nimg, self.cfg.ema_kimg, self.cfg.ema_rampup))

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def sample_grid(self, phase: Phase):
        """Fixed prompts (rows) x fixed seeds (columns) from G_ema through the GAN sampler that
        generate.py uses, as [H, W, 3] uint8."""
        sampler = GanSampler(self.G_ema, self.text, phase.stage, phase.alpha, self.device)
        captions = [p for p in self.sample_prompts for _ in self.sample_seeds]
        img = sampler.sample(captions, self.sample_seeds * len(self.sample_prompts))  # same z in every row
        return make_grid(to_uint8(img), len(self.sample_prompts), len(self.sample_seeds))

    def snapshot(self, final: bool = False) -> Path | None:
        if self.run_dir is None:
            return None
        if not (run_files.all_finite(self.G) and run_files.all_finite(self.G_ema) and run_files.all_finite(self.D)):
            tqdm.write("warning: weights are not finite; checkpoint NOT written (previous one kept)")
            return None
        phase = self.schedule.at(self.nimg)
        grid = self.sample_grid(phase)
        kimg = self.nimg // 1000
        save_png(self.run_dir / "samples" / f"fakes{kimg:06d}.png", grid)
        self.log.image("Samples/fixed_prompts", grid, self.nimg)
        name = run_files.FINAL_NAME if final else run_files.snapshot_name(self.nimg)
        path = save_checkpoint(self.run_dir / name, "gan", self.state_payload())
        run_files.prune_snapshots(self.run_dir, self.cfg.keep_snapshots)
        return path

    # ------------------------------------------------------------------ loop

    def fit(self, total_kimg: float) -> Path | None:
        """Train until `total_kimg`; returns the final checkpoint path (None without a run dir)."""
        total_nimg = self.total_nimg = int(total_kimg * 1000)
        log_every = max(int(self.cfg.log_kimg * 1000), 1)
        snap_every = max(int(self.cfg.snapshot_kimg * 1000), 1)
        bar = tqdm(total=total_kimg, initial=self.nimg / 1000, unit="kimg", disable=not self.progress,
                   # tqdm's own ETA would extrapolate the current stage's speed; the schedule's is in the postfix.
                   bar_format="{l_bar}{bar}| {n:.1f}/{total:g} kimg [{elapsed}{postfix}]")
        tick_time, tick_nimg = time.perf_counter(), self.nimg
        with GracefulInterrupt() as interrupt:
            while self.nimg < total_nimg:
                phase = self.schedule.at(self.nimg)
                self.set_lr(phase.lr)
                share = self.dist.share(phase.batch)
                for i in range(self.cfg.n_critic):
                    reals, captions = self.next_reals(phase, share)
                    step_text = self.step_text(captions, share)
                    self.critic_step(phase, share, reals, step_text, self.regularize_now(i))
                    self.nimg += phase.batch
                self.generator_step(phase, share, step_text)
                self.update_ema(phase.batch * self.cfg.n_critic)
                self.step += 1
                bar.update(phase.batch * self.cfg.n_critic / 1000)
                if self.nimg // log_every != (self.nimg - phase.batch * self.cfg.n_critic) // log_every:
                    tick_time, tick_nimg = self.write_log(phase, bar, tick_time, tick_nimg)
                crossed_snapshot = (self.nimg // snap_every
                                    != (self.nimg - phase.batch * self.cfg.n_critic) // snap_every)
                if crossed_snapshot and self.nimg < total_nimg:
                    self.snapshot()
                    tick_time = time.perf_counter()  # snapshot time is not training speed
                if self.dist.any(interrupt.requested, self.device):
                    self.write_log(phase, bar, tick_time, tick_nimg)
                    path = self.snapshot()
                    bar.close()
                    if self.dist.is_main:
                        tqdm.write(f"interrupted by {interrupt.signal_name or 'a signal to another rank'} at kimg "
                                   f"{self.nimg / 1000:.1f}; checkpoint {path}; continue with the same command "
                                   f"plus --resume auto")
                    self.log.close()
                    return None
        bar.close()
        if self.nimg > tick_nimg:  # images shown since the last log tick
            self.write_log(self.schedule.at(self.nimg), bar, tick_time, tick_nimg)
        path = self.snapshot(final=True)
        self.log.close()
        return path

    def write_log(self, phase: Phase, bar, tick_time: float, tick_nimg: int):
        now = time.perf_counter()
        img_per_s = (self.nimg - tick_nimg) / max(now - tick_time, 1e-9)
        values = self.stats.flush()
        values.update({"Progress/resolution": phase.res, "Progress/alpha": phase.alpha,
                       "Progress/kimg": self.nimg / 1000, "Progress/stage": phase.stage,
                       "Speed/img_per_s": img_per_s, "Speed/sec_per_kimg": 1000 / max(img_per_s, 1e-9),
                       "LR/G": self.opt_G.param_groups[0]["lr"], "LR/D": self.opt_D.param_groups[0]["lr"]})
        self.log.scalars(self.nimg, values, kimg=self.nimg / 1000)
        if self.nimg > tick_nimg:
            self.speed[phase.res] = img_per_s
        eta = tqdm.format_interval(remaining_seconds(self.schedule, self.nimg, self.total_nimg, self.speed)
                                   if self.speed else 0)
        bar.set_postfix_str(f"res={phase.res} alpha={phase.alpha:.2f} D={values.get('Loss/D', 0):.3f} "
                            f"G={values.get('Loss/G', 0):.3f} {img_per_s:.0f}img/s, eta {eta}", refresh=False)
        return now, self.nimg
