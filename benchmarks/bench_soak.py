"""Soak test of GAN training: does memory grow, and how long do checkpoint writes take?

Runs the real entry point of train_progan.py, `stylegan_t2i.cli.train.main`, on the cpu_demo
preset for --minutes of training (the text encoder pretraining and the image cache before it
are not counted), with a checkpoint every --snapshot_kimg, then prints one table row:

  minutes, kimg        : training time and images shown until the stop.
  RSS start/warm/end   : resident set of this process (VmRSS, /proc/self/status) at the first
                         training step, at the end of warm-up, and at the last sample. Warm-up
                         ends at the first sample at least --warmup_minutes in that is also fully
                         grown (last stage, alpha = 1); the growth stages change the networks'
                         activations, so memory only settles after them. If no sample is fully
                         grown, the --warmup_minutes sample is used and the row says so.
  growth, MiB/hour     : end - warm, and the slope of a least-squares line through the samples
                         after warm-up (a leak shows as a steady positive slope).
  ckpt writes, ms, MiB : number of checkpoint files written (snapshots and the one at the stop),
                         p50, p99 (linear interpolation between order statistics, so with under
                         100 writes it lies between the two largest) and max wall time of
                         `save_checkpoint` alone (torch.save to a temporary file, fsync, rename;
                         not the sample grid), size of the last.

RSS is sampled every --rss_every training steps. The run stops the way SIGTERM stops it (a last
checkpoint, then return), so the stop path is exercised too. Timings are one run on a shared
machine: compare runs on the same machine only.

    python benchmarks/bench_soak.py [--minutes 10] [--snapshot_kimg 1] [--rss_every 20] \\
        [--warmup_minutes 2] [--max_res 32] [--kimg_per_stage 1] [--batch N] [--out DIR] \\
        [--text_encoder PATH | --text_encoder_steps 20] [--image_dir D --label_dir D] [--device cpu]

(after `pip install -e .` or `pip install .`)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stylegan_t2i.cli import train as train_progan
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.gan.trainer import GanTrainer
from stylegan_t2i.measure import machine_description
from stylegan_t2i.training import loop

COLUMNS = ("minutes", "kimg", "RSS start MiB", "RSS warm MiB", "RSS end MiB", "growth MiB", "MiB/hour",
           "ckpt writes", "write p50 ms", "write p99 ms", "write max ms", "ckpt MiB")


def rss_mib() -> float:
    """This process's resident set now (VmRSS), MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024  # the value is in kB
    raise RuntimeError("/proc/self/status has no VmRSS line (not Linux?)")


@dataclasses.dataclass
class Sample:
    seconds:    float   # since the first training step
    kimg:       float   # images shown
    grown:      bool    # last stage at alpha = 1
    rss:        float   # VmRSS, MiB


@dataclasses.dataclass
class SoakProbe:
    """What the instrumented run records; `stop_after_s` ends it with SIGTERM."""
    stop_after_s:   float
    rss_every:      int
    samples:        list[Sample] = dataclasses.field(default_factory=list)
    writes:         list[tuple[float, float]] = dataclasses.field(default_factory=list)  # (ms, MiB)
    start:          float | None = None
    steps:          int = 0
    stop_sent:      bool = False

    def after_step(self, trainer: GanTrainer) -> None:
        """Called after every EMA update, i.e. once per training step."""
        now = time.perf_counter()
        if self.start is None:
            self.start = now
        self.steps += 1
        stop = now - self.start >= self.stop_after_s and not self.stop_sent
        if self.steps == 1 or self.steps % self.rss_every == 0 or stop:
            phase = trainer.schedule.at(trainer.nimg)
            grown = phase.stage == trainer.schedule.num_stages - 1 and phase.alpha == 1.0
            self.samples.append(Sample(now - self.start, trainer.nimg / 1000, grown, rss_mib()))
        if stop:
            self.stop_sent = True
            # fit() checks for a signal after every step: checkpoint, then return.
            os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def instrumented(probe: SoakProbe):
    """Route every GanTrainer step and every GAN checkpoint write through `probe` while inside."""
    real_update_ema, real_save = GanTrainer.update_ema, loop.save_checkpoint

    def update_ema(self, batch):
        real_update_ema(self, batch)
        probe.after_step(self)

    def save_checkpoint(path, kind, payload):
        start = time.perf_counter()
        written = real_save(path, kind, payload)
        probe.writes.append(((time.perf_counter() - start) * 1e3, written.stat().st_size / 2 ** 20))
        return written

    GanTrainer.update_ema, loop.save_checkpoint = update_ema, save_checkpoint
    try:
        yield probe
    finally:
        GanTrainer.update_ema, loop.save_checkpoint = real_update_ema, real_save


def summarize(
    probe:      SoakProbe,      # A finished soak's samples and writes.
    warmup_s:   float,          # Growth is measured from the first fully grown sample after this.
) -> dict:
    """The table row of a finished soak (see the module docstring for each value)."""
    samples = probe.samples
    assert samples, "no training step was recorded"
    late = [s for s in samples if s.seconds >= warmup_s] or samples[-1:]
    warm = next((s for s in late if s.grown), late[0])
    after = [s for s in samples if s.seconds >= warm.seconds]
    slope = (np.polyfit([s.seconds for s in after], [s.rss for s in after], 1)[0] * 3600
             if len(after) >= 3 else float("nan"))   # MiB/s -> MiB/hour
    write_ms = [ms for ms, _ in probe.writes]
    return {"minutes": samples[-1].seconds / 60, "kimg": samples[-1].kimg, "RSS start MiB": samples[0].rss,
            "RSS warm MiB": warm.rss, "RSS end MiB": samples[-1].rss, "growth MiB": samples[-1].rss - warm.rss,
            "MiB/hour": slope, "ckpt writes": len(write_ms),
            "write p50 ms": float(np.percentile(write_ms, 50)) if write_ms else float("nan"),
            "write p99 ms": float(np.percentile(write_ms, 99)) if write_ms else float("nan"),
            "write max ms": max(write_ms, default=float("nan")),
            "ckpt MiB": probe.writes[-1][1] if probe.writes else float("nan"),
            "warm_grown": warm.grown, "warm_minutes": warm.seconds / 60, "samples_after_warm": len(after)}


def format_table(row: dict) -> str:
    note = (f"warm-up ended at {row['warm_minutes']:.2f} min ({row['samples_after_warm']} RSS samples after it)"
            + ("" if row["warm_grown"] else "; NOT fully grown yet: run longer or lower --kimg_per_stage"))
    cells = [f"{row[c]:.0f}" if c == "ckpt writes" else f"{row[c]:.2f}" if c in ("minutes", "kimg", "ckpt MiB")
             else f"{row[c]:.1f}" for c in COLUMNS]
    return "\n".join([note, "| " + " | ".join(COLUMNS) + " |", "|" + "---:|" * len(COLUMNS),
                      "| " + " | ".join(cells) + " |"])


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="training time before the stop (default 10)")
    p.add_argument("--snapshot_kimg", type=float, default=1.0,
                   help="checkpoint every N thousand images, so the run writes many (default 1)")
    p.add_argument("--rss_every", type=int, default=20, help="sample RSS every N training steps (default 20)")
    p.add_argument("--warmup_minutes", type=float,
                   help="RSS growth is measured from the first fully grown sample after this "
                        "(default: min(2, minutes / 5))")
    p.add_argument("--max_res", type=int, default=32, help="final resolution of the cpu_demo preset (default 32)")
    p.add_argument("--kimg_per_stage", type=float, default=1.0,
                   help="thousands of images per fade-in and per stable phase: small, so the networks are "
                        "fully grown early in the soak (default 1)")
    p.add_argument("--batch", type=int, help="minibatch (default: the cpu_demo preset's)")
    p.add_argument("--out", type=Path,
                   help="parent of the run directory, kept afterwards (default: a temporary folder, deleted)")
    p.add_argument("--text_encoder", type=Path, help="pretrained text encoder checkpoint (skips pretraining)")
    p.add_argument("--text_encoder_steps", type=int, default=20,
                   help="pretraining steps when no --text_encoder is given; quality does not matter here "
                        "(default 20)")
    p.add_argument("--image_dir", type=Path, help="images (default: the built-in demo dataset)")
    p.add_argument("--label_dir", type=Path, help="captions, with --image_dir")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0 = torch's choice (default 0)")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.snapshot_kimg <= 0 or args.rss_every < 1 or args.threads < 0:
        p.error("--minutes and --snapshot_kimg must be > 0, --rss_every >= 1, --threads >= 0")
    if (args.image_dir is None) != (args.label_dir is None):
        p.error("give both --image_dir and --label_dir, or neither for the demo dataset")
    return args


def train_argv(args: argparse.Namespace, out: Path) -> list[str]:
    """train_progan.py's command line for the soak: effectively endless, stopped by the probe."""
    argv = ["--out", str(out), "--max_res", str(args.max_res), "--kimg_per_stage", str(args.kimg_per_stage),
            "--snapshot_kimg", str(args.snapshot_kimg), "--total_kimg", "1000000", "--device", args.device,
            "--text_encoder_steps", str(args.text_encoder_steps)]
    for flag in ("batch", "text_encoder", "image_dir", "label_dir"):
        if getattr(args, flag) is not None:
            argv += [f"--{flag}", str(getattr(args, flag))]
    return argv


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warmup_s = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(2.0, args.minutes / 5))
    print(f"machine: {machine_description(resolve_device(args.device))}")
    probe = SoakProbe(stop_after_s=60 * args.minutes, rss_every=args.rss_every)
    with contextlib.ExitStack() as stack:
        out = args.out or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench_soak-")))
        with instrumented(probe):
            train_progan.main(train_argv(args, out))
    row = summarize(probe, warmup_s)
    print(format_table(row))
    return row


if __name__ == "__main__":
    main()
