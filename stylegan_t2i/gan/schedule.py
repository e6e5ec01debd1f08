"""The progressive-growing schedule (Karras et al. 2018, ProGAN §3).

Training starts at 4x4 (stage 0). Every later stage s (resolution 4 * 2**s) first fades its
new blocks in over `fade_kimg` (alpha rises linearly 0 -> 1), then trains them at alpha = 1
for `stable_kimg`; `kimg_by_res` gives a resolution its own lengths. The last stage stays
until `total_kimg`. `start_res` above 4 skips the stages below it and the fade of its own: a
fine-tuned run (`--finetune`) starts at its final resolution with alpha = 1 and never regrows.
Everything is a pure function of the number of real images shown, so a resumed run is at
exactly the same stage and alpha.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

CPU_DEMO_TOTAL_KIMG = 300.0   # See cpu_demo_schedule: what under an hour of 2 CPU cores trains.


@dataclass(frozen=True)
class ScheduleConfig:
    max_res: int = 32              # Final resolution, a power of two >= 4.
    total_kimg: float = 300.0      # Length of the whole run in thousands of real images.
    stable_kimg: float = 30.0      # Images per stage at alpha = 1 (stage 0 has only this phase).
    fade_kimg: float = 30.0        # Images per stage while alpha goes 0 -> 1.
    kimg_by_res: tuple = ()        # ((res, fade_kimg, stable_kimg), ...) overrides per resolution.
    batch: int = 32                # Default minibatch (global, all ranks together).
    batch_by_res: tuple = ()       # ((res, batch), ...) overrides, e.g. smaller batches at high res.
    lr: float = 2e-3               # Default Adam learning rate for G and D.
    lr_by_res: tuple = ()          # ((res, lr), ...) overrides.
    start_res: int = 4             # Training starts here at alpha = 1; lower stages are skipped.

    def __post_init__(self):
        if self.max_res < 4 or self.max_res & (self.max_res - 1):
            raise ValueError(f"max_res must be a power of two >= 4, got {self.max_res}")
        if self.start_res < 4 or self.start_res > self.max_res or self.start_res & (self.start_res - 1):
            raise ValueError(f"start_res must be a power of two in [4, {self.max_res}], got {self.start_res}")
        if self.stable_kimg <= 0 or self.fade_kimg < 0 or self.total_kimg <= 0:
            raise ValueError("stable_kimg and total_kimg must be > 0 and fade_kimg >= 0")
        for entry in self.kimg_by_res:
            res, fade, stable = entry
            if res < 4 or res > self.max_res or res & (res - 1) or fade < 0 or stable <= 0:
                raise ValueError(f"kimg_by_res entry {tuple(entry)}: needs a power-of-two res in "
                                 f"[4, {self.max_res}], fade_kimg >= 0 and stable_kimg > 0")

    def phase_kimg(self, res: int) -> tuple[float, float]:
        """(fade_kimg, stable_kimg) of resolution `res`: the start resolution has no fade, the
        skipped ones below it neither phase."""
        if res < self.start_res:
            return 0.0, 0.0
        lengths = {int(r): (float(f), float(st)) for r, f, st in self.kimg_by_res}
        fade, stable = lengths.get(res, (self.fade_kimg, self.stable_kimg))
        return (0.0 if res == self.start_res else fade), stable


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
        return sum(sum(self.cfg.phase_kimg(4 * 2 ** s)) for s in range(stage))

    def at(self, nimg: int) -> Phase:
        kimg = nimg / 1000.0
        stage, alpha = 0, 1.0
        for s in range(1, self.num_stages):
            start = self.stage_start_kimg(s)
            if kimg < start:
                break
            stage = s
            fade = self.cfg.phase_kimg(4 * 2 ** s)[0]
            alpha = 1.0 if fade == 0 else min((kimg - start) / fade, 1.0)
        res = 4 * 2 ** stage
        return Phase(stage=stage, alpha=alpha, res=res,
                     batch=self._batch.get(res, self.cfg.batch), lr=self._lr.get(res, self.cfg.lr))


# Without a measured speed for a resolution, the ETA assumes each doubling halves the speed:
# measured on the demo, 346 / 185 / 94 / 54 img/s at 4 / 8 / 16 / 32 px (ratios 1.9, 2.0, 1.7).
SPEED_RATIO_PER_STAGE = 2.0


def remaining_seconds(
    schedule:   ProgressiveSchedule,
    nimg:       int,                    # Images shown so far.
    total_nimg: int,                    # Where the run ends.
    speed:      dict[int, float],       # Measured img/s per resolution (at least one entry).
) -> float:
    """Seconds left: the images left at each resolution over that resolution's measured speed,
    or, for one not reached yet, the nearest lower measured speed / 2 per stage above it
    (SPEED_RATIO_PER_STAGE). Fade-ins count at their resolution's speed."""
    assert speed, "remaining_seconds needs at least one measured speed"
    seconds = 0.0
    for stage in range(schedule.num_stages):
        start = int(schedule.stage_start_kimg(stage) * 1000)
        end = total_nimg if stage == schedule.num_stages - 1 else int(schedule.stage_start_kimg(stage + 1) * 1000)
        left = min(end, total_nimg) - max(start, nimg)
        if left > 0:
            seconds += left / _speed_at(4 * 2 ** stage, speed)
    return seconds


def _speed_at(res: int, speed: dict[int, float]) -> float:
    if res in speed:
        return speed[res]
    known = max((r for r in speed if r < res), default=min(speed))
    return speed[known] / SPEED_RATIO_PER_STAGE ** math.log2(res / known)


def cpu_demo_schedule(max_res: int = 32, total_kimg: float = CPU_DEMO_TOTAL_KIMG) -> ScheduleConfig:
    """Sized for one hour on 2 CPU cores at 32x32 with the cpu_demo networks, text-encoder
    pretraining included. Colour, position and background are right by 8 px; shape is decided
    at 16-32 px, so 4 and 8 px get 10 kimg per phase and the hour goes to 16 px (20 kimg fade,
    30 stable) and 32 px (20 kimg fade, then the rest). Measured on the idle machine with the
    alignment loss, hard negatives and the lazy gradient penalty: about 350 / 185 / 94 / 54
    img/s at 4 / 8 / 16 / 32 px in the loop on the first development machine, where 220 kimg
    ended after 57 minutes; on the 2-core AMD EPYC of the later sessions 240 kimg ends after 38-41
    (32 px at 85-97 img/s), so the hour holds 300. The small square is the last shape learnt and
    it is still improving at 240 kimg: continuing the 240 kimg critic-mined run raised shape
    right from 0.918 / 0.829 (seen / held-out) to 0.983 / 0.903 at 300 (benchmarks/RESULTS.md,
    "300 kimg"). lr 1e-3 and Adam(0, 0.99) as in ProGAN with WGAN-GP. Higher resolutions keep
    30 kimg phases."""
    lengths = ((4, 0.0, 10.0), (8, 10.0, 10.0), (16, 20.0, 30.0), (32, 20.0, 30.0))
    return ScheduleConfig(max_res=max_res, total_kimg=total_kimg, stable_kimg=30.0, fade_kimg=30.0,
                          kimg_by_res=tuple(e for e in lengths if e[0] <= max_res), batch=32, lr=1e-3)


def progan_paper_schedule(max_res: int = 1024) -> ScheduleConfig:
    """ProGAN's CelebA-HQ schedule: 600k images per fade and per stable phase, lr 1e-3,
    minibatch 16 shrinking at high resolution to fit memory (Karras et al. 2018, appendix A.1)."""
    stages = int(math.log2(max_res)) - 1
    total = 600.0 + (stages - 1) * 1200.0 + 600.0
    return ScheduleConfig(max_res=max_res, total_kimg=total, stable_kimg=600.0, fade_kimg=600.0,
                          batch=16, batch_by_res=((256, 14), (512, 6), (1024, 3)),
                          lr=1e-3, lr_by_res=((1024, 1.5e-3),))


SCHEDULE_PRESETS = {"cpu_demo": cpu_demo_schedule, "progan_paper": progan_paper_schedule}
