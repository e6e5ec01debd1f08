"""The progressive-growing schedule (Karras et al. 2018, ProGAN §3).

Training starts at 4x4 (stage 0). Every later stage s (resolution 4 * 2**s) first fades its
new blocks in over `fade_kimg` (alpha rises linearly 0 -> 1), then trains them at alpha = 1
for `stable_kimg`. The last stage stays until `total_kimg`. Everything is a pure function of
the number of real images shown, so a resumed run is at exactly the same stage and alpha.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ScheduleConfig:
    max_res: int = 32              # Final resolution, a power of two >= 4.
    total_kimg: float = 300.0      # Length of the whole run in thousands of real images.
    stable_kimg: float = 30.0      # Images per stage at alpha = 1 (stage 0 has only this phase).
    fade_kimg: float = 30.0        # Images per stage while alpha goes 0 -> 1.
    batch: int = 32                # Default minibatch (global, all ranks together).
    batch_by_res: tuple = ()       # ((res, batch), ...) overrides, e.g. smaller batches at high res.
    lr: float = 2e-3               # Default Adam learning rate for G and D.
    lr_by_res: tuple = ()          # ((res, lr), ...) overrides.

    def __post_init__(self):
        if self.max_res < 4 or self.max_res & (self.max_res - 1):
            raise ValueError(f"max_res must be a power of two >= 4, got {self.max_res}")
        if self.stable_kimg <= 0 or self.fade_kimg < 0 or self.total_kimg <= 0:
            raise ValueError("stable_kimg and total_kimg must be > 0 and fade_kimg >= 0")


@dataclass(frozen=True)
class Phase:
    stage: int      # Growth index: resolution = 4 * 2**stage.
    alpha: float    # Fade-in amount of the newest blocks, in [0, 1].
    res: int        # Current output resolution.
    batch: int      # Minibatch for this phase (global).
    lr: float       # Learning rate for this phase.


class ProgressiveSchedule:
    """Maps images shown (nimg) to the current `Phase`."""

    def __init__(self, cfg: ScheduleConfig):
        self.cfg = cfg
        self.num_stages = int(math.log2(cfg.max_res)) - 1
        self._batch = dict(cfg.batch_by_res)
        self._lr = dict(cfg.lr_by_res)

    def stage_start_kimg(self, stage: int) -> float:
        """kimg at which `stage` begins fading in (stage 0 begins at 0)."""
        if stage == 0:
            return 0.0
        return self.cfg.stable_kimg + (stage - 1) * (self.cfg.fade_kimg + self.cfg.stable_kimg)

    def at(self, nimg: int) -> Phase:
        kimg = nimg / 1000.0
        stage, alpha = 0, 1.0
        for s in range(1, self.num_stages):
            start = self.stage_start_kimg(s)
            if kimg < start:
                break
            stage = s
            alpha = 1.0 if self.cfg.fade_kimg == 0 else min((kimg - start) / self.cfg.fade_kimg, 1.0)
        res = 4 * 2 ** stage
        return Phase(stage=stage, alpha=alpha, res=res,
                     batch=self._batch.get(res, self.cfg.batch), lr=self._lr.get(res, self.cfg.lr))


def cpu_demo_schedule(max_res: int = 32, total_kimg: float = 300.0) -> ScheduleConfig:
    """Sized for about 60 minutes on 2 CPU cores at 32x32 with the cpu_demo networks: measured
    660 / 270 / 120 / 62 img/s at 4 / 8 / 16 / 32 px, so the 4-16 px stages take ~13 minutes
    and the 32 px stage gets the rest. lr 1e-3 and Adam(0, 0.99) as in ProGAN with WGAN-GP."""
    return ScheduleConfig(max_res=max_res, total_kimg=total_kimg, stable_kimg=30.0, fade_kimg=30.0,
                          batch=32, lr=1e-3)


def progan_paper_schedule(max_res: int = 1024) -> ScheduleConfig:
    """ProGAN's CelebA-HQ schedule: 600k images per fade and per stable phase, lr 1e-3,
    minibatch 16 shrinking at high resolution to fit memory (Karras et al. 2018, appendix A.1)."""
    stages = int(math.log2(max_res)) - 1
    total = 600.0 + (stages - 1) * 1200.0 + 600.0
    return ScheduleConfig(max_res=max_res, total_kimg=total, stable_kimg=600.0, fade_kimg=600.0,
                          batch=16, batch_by_res=((256, 14), (512, 6), (1024, 3)),
                          lr=1e-3, lr_by_res=((1024, 1.5e-3),))


SCHEDULE_PRESETS = {"cpu_demo": cpu_demo_schedule, "progan_paper": progan_paper_schedule}
