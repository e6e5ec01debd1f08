"""Images/s of generation: the GAN vs the diffusion baseline's DDIM and DDPM samplers.

Both checkpoints are loaded with `stylegan_t2i.inference.load_sampler` and sampled exactly as
generate.py does (`sampler.sample(captions, seeds, ...)`, caption encoding included), at the
same resolution, with --num images per call (captions cycle through a fixed demo-style list,
seeds 0..num-1):

  GAN        : the EMA generator, truncation 1.
  DDIM-<n>   : the EMA UNet, --ddim_steps deterministic DDIM steps (eta 0), --guidance.
  DDPM-<n>   : the EMA UNet, --ddpm_steps ancestral DDPM steps, --guidance.

For each: img/s and ms/image from the median of the timed calls, the time per image relative
to the GAN's, and peak memory (CPU: process peak RSS, VmHWM reset per method; CUDA:
torch.cuda.max_memory_allocated). Each method gets one untimed warm-up call with the same
images and options, except that the diffusion warm-ups run only WARMUP_STEPS denoising steps:
the UNet and scheduler are already warm after a few, and a full DDPM-1000 warm-up would double
the slowest measurement. DDPM-1000 is timed --ddpm_repeats times (default 1: minutes on a CPU).

    python benchmarks/bench_sampling.py --ddpm CK [--gan pretrained/demo-gan.pt] [--num 32] \\
        [--ddim_steps 50] [--ddpm_steps 1000] [--guidance 3] [--repeats 3] [--ddpm_repeats 1] \\
        [--device auto] [--threads N]

(after `pip install -e .` or `pip install .`)
"""
from __future__ import annotations

import argparse
import gc
from pathlib import Path
from typing import Callable

import torch

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.inference import DEMO_MODEL, load_sampler
from stylegan_t2i.measure import machine_description, median_ms, memory_label, peak_memory_mib, reset_peak_memory

WARMUP_STEPS = 5
CAPTIONS = (
    "a small red circle on the left on a black background",
    "a large blue square in the center on a white background",
    "a small green triangle on the right on a gray background",
    "a large yellow circle on the right on a black background",
)


def load_pair(gan_path: str | Path, ddpm_path: str | Path, device: torch.device):
    """(GAN sampler, DDPM sampler); one-line SystemExit on a bad file, a wrong kind or
    checkpoints of different resolutions (the comparison would not be like for like)."""
    samplers = []
    for flag, path, kind in (("--gan", gan_path, "gan"), ("--ddpm", ddpm_path, "ddpm")):
        try:
            sampler = load_sampler(path, device)
        except CheckpointError as e:
            raise SystemExit(f"bench_sampling.py: {e}") from None
        if sampler.kind != kind:
            raise SystemExit(f"bench_sampling.py: {flag} {path} is a {sampler.kind!r} checkpoint; "
                             f"pass a {kind!r} one")
        samplers.append(sampler)
    gan, ddpm = samplers
    if gan.resolution != ddpm.resolution:
        raise SystemExit(f"bench_sampling.py: {gan_path} generates {gan.resolution} px but {ddpm_path} "
                         f"{ddpm.resolution} px; pass checkpoints trained at the same resolution")
    return gan, ddpm


def methods(gan, ddpm, args: argparse.Namespace) -> list[tuple[str, int, int, Callable, Callable]]:
    """(name, steps, repeats, timed call, warm-up call) per method; each call samples --num images."""
    captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.num)]
    seeds = list(range(args.num))

    def diffusion(sampler: str, steps: int) -> Callable:
        return lambda: ddpm.sample(captions, seeds, steps=steps, guidance=args.guidance, sampler=sampler)

    return [
        ("GAN", 1, args.repeats, lambda: gan.sample(captions, seeds), lambda: gan.sample(captions, seeds)),
        (f"DDIM-{args.ddim_steps}", args.ddim_steps, args.repeats, diffusion("ddim", args.ddim_steps),
         diffusion("ddim", min(WARMUP_STEPS, args.ddim_steps))),
        (f"DDPM-{args.ddpm_steps}", args.ddpm_steps, args.ddpm_repeats, diffusion("ddpm", args.ddpm_steps),
         diffusion("ddpm", min(WARMUP_STEPS, args.ddpm_steps))),
    ]


def measure(gan, ddpm, args: argparse.Namespace, device: torch.device) -> list[dict]:
    """One row per method: images/s, ms/image, time relative to the GAN, peak memory."""
    rows = []
    for name, steps, repeats, call, warm in methods(gan, ddpm, args):
        gc.collect()
        reset_peak_memory(device)
        warm()
        ms = median_ms(call, device, warmup=0, repeats=repeats)
        rows.append({"method": name, "steps": steps, "repeats": repeats, "img/s": args.num / ms * 1e3,
                     "ms/img": ms / args.num, "peak": peak_memory_mib(device)})
    for row in rows:
        row["vs GAN"] = row["ms/img"] / rows[0]["ms/img"]
    return rows


def format_table(rows: list[dict], args: argparse.Namespace, resolution: int, device: torch.device) -> str:
    """Markdown table; the header line states the repeats (DDPM's may differ) and the options."""
    lines = [f"{resolution} px, {args.num} images per call, guidance {args.guidance:g}; median of "
             f"{args.repeats} timed calls (DDPM: {args.ddpm_repeats}) after one warm-up call "
             f"(diffusion warm-ups run at most {WARMUP_STEPS} steps)",
             f"| method | steps | repeats | img/s | ms/img | time vs GAN | {memory_label(device)} |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['steps']} | {r['repeats']} | {r['img/s']:.2f} | {r['ms/img']:.2f} "
                     f"| {r['vs GAN']:.1f}x | {r['peak']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gan", default=str(DEMO_MODEL),
                        help="GAN checkpoint (default: pretrained/demo-gan.pt, the demo model)")
    parser.add_argument("--ddpm", required=True, help="DDPM checkpoint at the same resolution as --gan")
    parser.add_argument("--num", type=int, default=32, help="images per timed sampling call (default 32)")
    parser.add_argument("--ddim_steps", type=int, default=50, help="DDIM denoising steps (default 50)")
    parser.add_argument("--ddpm_steps", type=int, default=1000, help="ancestral DDPM denoising steps (default 1000)")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="classifier-free guidance scale of both diffusion samplers; 1 = off (default 3)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed calls of the GAN and DDIM; the median is shown (default 3)")
    parser.add_argument("--ddpm_repeats", type=int, default=1,
                        help="timed calls of the DDPM sampler (default 1: it is slow on a CPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch; 0 = torch's choice, as generate.py (default 0)")
    args = parser.parse_args(argv)
    if min(args.num, args.ddim_steps, args.ddpm_steps, args.repeats, args.ddpm_repeats) < 1 or args.threads < 0:
        raise SystemExit("bench_sampling.py: --num, --ddim_steps, --ddpm_steps, --repeats and --ddpm_repeats "
                         "must be >= 1, --threads >= 0")
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gan, ddpm = load_pair(args.gan, args.ddpm, device)
    num_train = ddpm.scheduler_cfg.num_train_timesteps
    if max(args.ddim_steps, args.ddpm_steps) > num_train:
        raise SystemExit(f"bench_sampling.py: {args.ddpm} was trained with {num_train} timesteps; "
                         f"pass --ddim_steps and --ddpm_steps <= {num_train}")
    print(f"machine: {machine_description(device)}")
    rows = measure(gan, ddpm, args, device)
    print(format_table(rows, args, gan.resolution, device))
    return rows


if __name__ == "__main__":
    main()
