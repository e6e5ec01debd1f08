"""The run loop that every trainer shares (docs/architecture.md, "Training loop").

`TrainLoop` owns what a training run does whatever it trains: the run directory, its log and
running means, the non-finite step counter, bfloat16 autocast, the optimizer step (`_apply`),
the EMA update, the checkpoint payload's common keys and their restore, snapshots with their
sample grid and retention, and `fit`: progress bar, log and snapshot cadences, SIGINT/SIGTERM
handling and the final checkpoint. A model family subclasses it and supplies only what differs
(as NVlabs' `training_loop` leaves `loss.accumulate_gradients` to the loss):

    KIND                  the checkpoint kind ("gan", "ddpm")
    train_iteration()     one iteration of its steps; advances `nimg`, returns the images shown
    checkpointed()        payload key -> network or optimizer (state_dict / load_state_dict)
    ema_networks()        (EMA copy, trained network)
    grid_sampler()        (sampler, options) of the progress grids
    progress_extra()      more "progress" entries of the payload (default: none)
    log_tick(values, s)   its scalars of a log tick, and the progress bar's postfix

The GAN (`gan.trainer.GanTrainer`) and the DDPM (`diffusion.trainer.DdpmTrainer`) are
the two. The text encoder's pretraining (`text.pretrain`) is lighter (no EMA, no snapshots) and
uses the same pieces below the class: `faults.apply_gradients` and `interrupt.GracefulInterrupt`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from stylegan_t2i.checkpoint import save_checkpoint
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.images import make_grid, save_png, to_uint8
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import text_encoder_payload
from stylegan_t2i.training import run_files
from stylegan_t2i.training.ema import ema_beta, update_ema
from stylegan_t2i.training.faults import NonFiniteCounter, apply_gradients
from stylegan_t2i.training.interrupt import GracefulInterrupt
from stylegan_t2i.training.stats import RunningMeans


@dataclass(frozen=True)
class LoopConfig:
    """The fields every trainer's config has; `GanTrainConfig` (GAN) and `DdpmTrainConfig` inherit
    them, so checkpoints keep one flat "train" dict."""
    ema_kimg: float = 10.0         # EMA half-life of the trained network in kimg.
    ema_rampup: float = 0.05       # Half-life is at most this fraction of images shown so far.
    seed: int = 0                  # Seed of weights, noise, the family's own draws and data order.
    snapshot_kimg: float = 20.0    # Checkpoint + sample grid every this many kimg.
    keep_snapshots: int = 3        # Snapshots kept besides network-final.pt.
    log_kimg: float = 1.0          # Scalars to TensorBoard / log.jsonl every this many kimg.
    max_nonfinite: int = 10        # Consecutive non-finite steps before training stops.
    amp: bool = True               # bfloat16 autocast on CUDA (ignored on CPU).


def crossed(nimg: int, images: int, every_kimg: float) -> bool:
    """Whether the step that brought the count to `nimg` (showing `images`) crossed a multiple
    of `every_kimg`."""
    every = max(int(every_kimg * 1000), 1)
    return nimg // every != (nimg - images) // every


class TrainLoop:
    """A training run of one model family; see the module docstring for what a family supplies."""

    KIND: str = ""
    # tqdm's {remaining} extrapolates the current speed; a family that knows better drops it.
    BAR_FORMAT = "{l_bar}{bar}| {n:.2f}/{total:g} kimg [{elapsed}<{remaining}{postfix}]"

    def __init__(self,
        text_bundle,                            # Frozen caption encoder (TextEncoderBundle).
        dataset,                                # ImageLabelDataset.
        order,                                  # IndexOrder over the dataset: which item comes next.
        cfg:            LoopConfig,             # The family's config (a LoopConfig subclass).
        run_dir:        Path | None,            # None: no files, no logs (tests).
        device:         torch.device,
        sample_prompts: Sequence[str],          # Rows of the progress grids.
        configs:        dict,                   # JSON-able configs stored in every checkpoint.
        progress:       bool,                   # Show the tqdm bar.
        dist:           Distributed,            # Data-parallel place.
    ):
        self.dist, self.cfg = dist, cfg
        self.text = text_bundle
        self.dataset, self.order = dataset, order
        self._indices = iter(order)
        # Rank 0 alone writes checkpoints, grids and logs.
        self.run_dir = Path(run_dir) if run_dir is not None and dist.is_main else None
        self.device, self.configs, self.progress = device, configs, progress and dist.is_main
        self.sample_prompts, self.sample_seeds = list(sample_prompts), list(range(8))
        self.nimg, self.step = 0, 0
        self.total_nimg = 0                     # Where `fit` ends.
        self.nonfinite = NonFiniteCounter(cfg.max_nonfinite)
        self.log = RunLog(self.run_dir)
        self.stats = RunningMeans()
        self._tick = (time.perf_counter(), 0)   # (time, nimg) of the last log record.

    # ------------------------------------------------------------------ what a family supplies

    def train_iteration(self) -> int:
        """One iteration of the family's steps; advances `self.nimg`; returns the images shown."""
        raise NotImplementedError

    def checkpointed(self) -> dict[str, Any]:
        """Payload key -> network or optimizer, in the order they are saved and restored."""
        raise NotImplementedError

    def ema_networks(self) -> tuple[torch.nn.Module, torch.nn.Module]:
        """(EMA copy, trained network)."""
        raise NotImplementedError

    def grid_sampler(self) -> tuple[Any, dict]:
        """(sampler, its options) that draws the progress grids: the one generate.py uses."""
        raise NotImplementedError

    def progress_extra(self) -> dict:
        """Entries of the payload's "progress" besides "nimg" and "step"."""
        return {}

    def log_tick(self, values: dict, img_per_s: float) -> str:
        """Add the family's scalars to a log tick's `values`; return the progress bar's postfix."""
        raise NotImplementedError

    # ------------------------------------------------------------------ state

    def state_payload(self) -> dict:
        """The checkpoint payload (plain data, `weights_only=True` loadable; docs/architecture.md,
        "Checkpoints"): config; the state dicts of `checkpointed()`; progress: {"nimg", ...,
        "step"}; rng: see `run_files.rng_state`; text_encoder: the frozen encoder with its
        tokenizer; sample: the grids' prompts and seeds."""
        return {
            "config": self.configs,
            **{key: obj.state_dict() for key, obj in self.checkpointed().items()},
            "progress": {"nimg": self.nimg, **self.progress_extra(), "step": self.step},
            "rng": run_files.rng_state(self.device, self.dataset, self.order),
            "text_encoder": text_encoder_payload(self.text),
            "sample": {"prompts": self.sample_prompts, "seeds": self.sample_seeds},
        }

    def load_payload(self, data: dict) -> None:
        """Restore everything `state_payload` saved; strict, so a config mismatch fails loudly."""
        for key, obj in self.checkpointed().items():
            obj.load_state_dict(data[key])
        self.nimg, self.step = int(data["progress"]["nimg"]), int(data["progress"]["step"])
        run_files.restore_rng_state(data["rng"], self.device, self.dataset, self.order)
        self._indices = iter(self.order)
        self.sample_prompts = list(data["sample"]["prompts"])
        self.sample_seeds = list(data["sample"]["seeds"])

    # ------------------------------------------------------------------ steps

    def _autocast(self):
        enabled = self.cfg.amp and self.device.type == "cuda"
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def _apply(self, opt: torch.optim.Optimizer, loss: torch.Tensor, grad_clip: float | None = None,
               grad_norm_tag: str = "Grad/norm") -> bool:
        """Backward, average the gradients over ranks, clip them to `grad_clip` (if given; their
        norm before clipping goes to the stats as `grad_norm_tag`), step; unless a loss or a
        gradient is non-finite on any rank: then every rank skips the step and counts it
        (Faults/nonfinite_steps). Returns whether the step was taken; raises TrainingDiverged
        after max_nonfinite in a row."""
        taken, grad_norm = apply_gradients(opt, loss, self.dist, self.nonfinite, self.nimg / 1000,
                                           grad_clip=grad_clip)
        if not taken:
            self.stats.add({"Faults/nonfinite_steps": 1.0})
        elif grad_norm is not None:
            self.stats.add({grad_norm_tag: grad_norm})
        return taken

    def update_ema(self, images: int) -> None:
        """One EMA step; `images` = real images shown since the last one, so the half-life stays
        in images whatever an iteration holds."""
        ema, net = self.ema_networks()
        update_ema(ema, net, ema_beta(images, self.nimg, self.cfg.ema_kimg, self.cfg.ema_rampup))

    # ------------------------------------------------------------------ outputs

    @torch.no_grad()
    def sample_grid(self):
        """Fixed prompts (rows) x fixed seeds (columns, the same in every row) through the
        family's sampler, as [H, W, 3] uint8: the images generate.py gives for them."""
        sampler, options = self.grid_sampler()
        captions = [p for p in self.sample_prompts for _ in self.sample_seeds]
        img = sampler.sample(captions, self.sample_seeds * len(self.sample_prompts), **options)
        return make_grid(to_uint8(img), len(self.sample_prompts), len(self.sample_seeds))

    def snapshot(self, final: bool = False) -> Path | None:
        """Sample grid + atomic checkpoint, then prune old snapshots; never writes non-finite
        weights (the previous checkpoint is kept)."""
        if self.run_dir is None:
            return None
        nets = [obj for obj in self.checkpointed().values() if isinstance(obj, torch.nn.Module)]
        if not all(run_files.all_finite(net) for net in nets):
            tqdm.write("warning: weights are not finite; checkpoint NOT written (previous one kept)")
            return None
        grid = self.sample_grid()
        save_png(self.run_dir / "samples" / f"fakes{self.nimg // 1000:06d}.png", grid)
        self.log.image("Samples/fixed_prompts", grid, self.nimg)
        name = run_files.FINAL_NAME if final else run_files.snapshot_name(self.nimg)
        path = save_checkpoint(self.run_dir / name, self.KIND, self.state_payload())
        run_files.prune_snapshots(self.run_dir, self.cfg.keep_snapshots)
        return path

    # ------------------------------------------------------------------ loop

    def fit(self, total_kimg: float) -> Path | None:
        """Train until `total_kimg`; returns the final checkpoint path (None without a run dir or
        when interrupted: the checkpoint written then is reported on the console)."""
        total_nimg = self.total_nimg = int(total_kimg * 1000)
        bar = tqdm(total=total_kimg, initial=self.nimg / 1000, unit="kimg", disable=not self.progress,
                   bar_format=self.BAR_FORMAT)
        self._tick = (time.perf_counter(), self.nimg)
        with GracefulInterrupt() as interrupt:
            while self.nimg < total_nimg:
                images = self.train_iteration()
                self.update_ema(images)
                self.step += 1
                bar.update(images / 1000)
                if crossed(self.nimg, images, self.cfg.log_kimg):
                    self.write_log(bar)
                if crossed(self.nimg, images, self.cfg.snapshot_kimg) and self.nimg < total_nimg:
                    start = time.perf_counter()
                    self.snapshot()
                    # Snapshot time is not training time: the speed tick starts that much later.
                    self._tick = (self._tick[0] + time.perf_counter() - start, self._tick[1])
                if interrupt.requested_on_any(self.dist, self.device):
                    self.write_log(bar)
                    path = self.snapshot()
                    bar.close()
                    if self.dist.is_main:
                        tqdm.write(f"interrupted by {interrupt.source} at kimg {self.nimg / 1000:.2f}; "
                                   f"checkpoint {path}; continue with the same command plus --resume auto")
                    self.log.close()
                    return None
        bar.close()
        self.write_log(bar)
        path = self.snapshot(final=True)
        self.log.close()
        return path

    def write_log(self, bar) -> None:
        """Flush the running means with progress, speed and the family's scalars to the RunLog
        and the bar; nothing when no image was shown since the last record."""
        tick_time, tick_nimg = self._tick
        if self.nimg <= tick_nimg:
            return
        now = time.perf_counter()
        img_per_s = (self.nimg - tick_nimg) / max(now - tick_time, 1e-9)
        values = self.stats.flush()
        values.update({"Progress/kimg": self.nimg / 1000, "Speed/img_per_s": img_per_s,
                       "Speed/sec_per_kimg": 1000 / max(img_per_s, 1e-9)})
        postfix = self.log_tick(values, img_per_s)
        self.log.scalars(self.nimg, values, kimg=self.nimg / 1000)
        bar.set_postfix_str(postfix, refresh=False)
        self._tick = (now, self.nimg)
