"""Progressive WGAN-GP training of the text-conditioned StyleGAN (docs/architecture.md, "Losses").

`GanTrainer.train_iteration()` reads as the algorithm: each iteration draws reals and captions
for the current phase and runs `n_critic` critic steps and one generator step; the shared
`TrainLoop.fit` (training/loop.py; docs/architecture.md, "Training loop") then updates the EMA
generator, logs and snapshots on their cadences.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm import tqdm

from stylegan_t2i.batch_share import BatchShare
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.gan.losses import alignment_loss, critic_loss, generator_loss, gradient_penalty
from stylegan_t2i.gan.negatives import CaptionPool, hardest
from stylegan_t2i.gan.schedule import Phase, ProgressiveSchedule, remaining_seconds
from stylegan_t2i.images import from_uint8, zoom_and_shift
from stylegan_t2i.inference import GanSampler
from stylegan_t2i.models.layers import fade_upsample
from stylegan_t2i.training.loop import LoopConfig, TrainLoop

# G's alignment loss weight. Its gradient on an image, like the critic's under the gradient
# penalty, is of order one per image; see docs/architecture.md ("Losses") for how it was chosen.
ALIGN_WEIGHT = 1.0


@dataclass(frozen=True)
class StepText:
    """The captions of one step, embedded: this rank's rows."""
    text: torch.Tensor             # [b, text_dim] sentence embeddings (G and D condition on these).
    unit: torch.Tensor             # [b, E] unit contrastive embeddings (G's alignment loss).
    wrong: torch.Tensor            # [b, k, text_dim] candidate negative captions' sentence embeddings.
    wrong_valid: torch.Tensor      # [b, k] bool: False where a caption had fewer than k candidates.


@dataclass(frozen=True)
class GanTrainConfig(LoopConfig):
    """The GAN's training config: `LoopConfig`'s shared fields, then these."""
    n_critic: int = 1              # Critic steps per generator step.
    gp_weight: float = 10.0        # WGAN-GP lambda (Gulrajani et al. 2017).
    gp_interval: int = 4           # Penalty on every this many critic steps, weighted by it (lazy).
    drift: float = 0.001           # Drift penalty epsilon (Karras et al. 2018).
    align_weight: float = ALIGN_WEIGHT  # Weight of G's image-caption alignment loss (0 = off).
    align_shift: float = 0.05      # Random shift (fraction of the side) of the images that loss sees.
    negatives: int = 4             # Hard-negative captions per real image in the matching term:
    negative_candidates: int = 64  # those the critic scores highest of this many nearest captions ...
    negative_max_similarity: float = 0.95  # ... below this contrastive cosine (paraphrases excluded).
    betas: tuple = (0.0, 0.99)     # Adam betas.


class GanTrainer(TrainLoop):
    """Owns G, D, G_ema, their optimizers and the schedule; the data stream, run directory and
    loop are `TrainLoop`'s."""

    KIND = "gan"
    # tqdm's own ETA would extrapolate the current stage's speed; the schedule's is in the postfix.
    BAR_FORMAT = TrainLoop.BAR_FORMAT.replace("<{remaining}", "")

    def __init__(self, G, D, text_bundle, dataset, order, schedule: ProgressiveSchedule,
                 cfg: GanTrainConfig, run_dir: Path | None, device: torch.device,
                 sample_prompts: Sequence[str], configs: dict, progress: bool = True,
                 dist: Distributed = Distributed()):
        super().__init__(text_bundle, dataset, order, cfg, run_dir, device, sample_prompts, configs,
                         progress, dist)
        self.G, self.D = G.to(device), D.to(device)
        self.G_ema = copy.deepcopy(G).eval().requires_grad_(False)
        self.schedule = schedule
        lr = schedule.at(0).lr
        self.opt_G = torch.optim.Adam(G.parameters(), lr=lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(D.parameters(), lr=lr, betas=cfg.betas)
        self._negatives: CaptionPool | None = None
        self._phase = schedule.at(0)        # The phase of the latest iteration (for the log).
        self.speed: dict[int, float] = {}   # Latest measured img/s per resolution (for the ETA).

    @property
    def negatives(self) -> CaptionPool:
        """The hard-negative caption pool, embedded on first use (a fixed order: resumes agree)."""
        if self._negatives is None:
            self._negatives = CaptionPool(self.dataset.captions, self.text, self.device,
                                          candidates=self.cfg.negative_candidates,
                                          max_similarity=self.cfg.negative_max_similarity, seed=self.cfg.seed)
        return self._negatives

    # ------------------------------------------------------------------ state

    def checkpointed(self) -> dict:
        """A `gan` checkpoint (`TrainLoop.state_payload`) holds config {"generator", "critic",
        "train", "schedule", "data"}, these state dicts, and progress {"nimg", "stage", "alpha",
        "step"}."""
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema, "opt_G": self.opt_G, "opt_D": self.opt_D}

    def progress_extra(self) -> dict:
        phase = self.schedule.at(self.nimg)
        return {"stage": phase.stage, "alpha": phase.alpha}

    def ema_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        return self.G_ema, self.G

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
        items = [view[next(self._indices)] for _ in range(phase.batch)]
        img = from_uint8(torch.stack([im for im, _ in share.take(items)])).to(self.device)
        if phase.alpha < 1.0:
            # ProGAN: while the new block fades in, reals are blended with their
            # lower-resolution version exactly as G blends its two toRGB outputs.
            low = fade_upsample(F.avg_pool2d(img, 2), self.G.cfg.resample_kernel)
            img = torch.lerp(low, img, phase.alpha)
        return img, [c for _, c in items]

    # ------------------------------------------------------------------ steps

    def step_text(self, captions: Sequence[str], share: BatchShare) -> StepText:
        """Embeddings of this rank's captions and of their candidate negatives.

        Every rank encodes the whole global batch (one text-encoder pass; the unit contrastive
        embedding is the normalised sentence embedding), so every rank sees exactly the numbers
        one process sees (see `CaptionPool.nearest`)."""
        sentence = self.embed_captions(captions)
        unit = F.normalize(sentence, dim=1)
        idx, valid = self.negatives.nearest(captions, unit)
        rows = slice(share.start, share.stop)
        return StepText(text=sentence[rows], unit=unit[rows],
                        wrong=self.negatives.sentence[idx[rows]], wrong_valid=valid[rows])

    def critic_step(self, phase: Phase, share: BatchShare, reals: torch.Tensor, step_text: StepText,
                    regularize: bool = True) -> None:
        """One critic update on this rank's share of the global batch (gradients averaged over ranks).

        Reals and fakes go through the trunk in one batched pass (the minibatch-std groups never
        mix them), and the reals' features score both their own captions and every candidate
        negative (only the caption head differs), so the matching term costs no extra pass; it
        keeps the `negatives` candidates the critic scores highest (`gan/negatives.py`).
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
            wrong_scores, wrong_valid = hardest(self.D.score(h_real, step_text.wrong).float(),
                                                step_text.wrong_valid, self.cfg.negatives)
            losses = critic_loss(real_scores, self.D.score(h_fake, text).float(), wrong_scores,
                                 drift=self.cfg.drift, mismatch_valid=wrong_valid)
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

    def set_lr(self, lr: float) -> None:
        for opt in (self.opt_G, self.opt_D):
            for group in opt.param_groups:
                group["lr"] = lr

    def train_iteration(self) -> int:
        """`n_critic` critic steps on fresh reals, then one generator step: the images shown
        (n_critic batches; the EMA step that follows counts them all)."""
        phase = self._phase = self.schedule.at(self.nimg)
        self.set_lr(phase.lr)
        share = self.dist.share(phase.batch)
        for i in range(self.cfg.n_critic):
            reals, captions = self.next_reals(phase, share)
            step_text = self.step_text(captions, share)
            self.critic_step(phase, share, reals, step_text, self.regularize_now(i))
            self.nimg += phase.batch
        self.generator_step(phase, share, step_text)
        return phase.batch * self.cfg.n_critic

    # ------------------------------------------------------------------ outputs

    def grid_sampler(self) -> tuple[GanSampler, dict]:
        """G_ema at the current phase through the GAN sampler that generate.py uses."""
        phase = self.schedule.at(self.nimg)
        return GanSampler(self.G_ema, self.text, phase.stage, phase.alpha, self.device), {}

    def log_tick(self, values: dict, img_per_s: float) -> str:
        phase = self._phase
        values.update({"Progress/resolution": phase.res, "Progress/alpha": phase.alpha,
                       "Progress/stage": phase.stage,
                       "LR/G": self.opt_G.param_groups[0]["lr"], "LR/D": self.opt_D.param_groups[0]["lr"]})
        self.speed[phase.res] = img_per_s
        eta = tqdm.format_interval(remaining_seconds(self.schedule, self.nimg, self.total_nimg, self.speed))
        return (f"res={phase.res} alpha={phase.alpha:.2f} D={values.get('Loss/D', 0):.3f} "
                f"G={values.get('Loss/G', 0):.3f} {img_per_s:.0f}img/s, eta {eta}")
