"""Generate images from text with a trained checkpoint.

    python generate.py --text "a small red circle on the left on a black background"
    python generate.py --text "a red square" --text "a blue circle" --seeds 0-7 --out grid.png
    python generate.py --text_file prompts.txt --outdir samples/      # one PNG per image
    python generate.py --interpolate "a red circle" "a blue square" --frames 8 --out strip.png
    python generate.py --checkpoint DDPM.pt --text "a red square" --steps 50 --guidance 3  # diffusion
    python generate.py --checkpoint DDPM.pt --text "a blue square" --init_image in.png --strength 0.6

With no --checkpoint, the newest network-final.pt under runs/ is used (else the newest
checkpoint there), else the demo model shipped in pretrained/.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.data.image_io import DECODE_ERRORS, load_image
from stylegan_t2i.images import from_uint8, make_grid, save_png, to_uint8
from stylegan_t2i.inference import load_sampler, seeded_normal
from stylegan_t2i.run_dir import run_dirs
from stylegan_t2i.distributed import resolve_device

DEMO_MODEL = Path(__file__).resolve().parent / "pretrained" / "demo-gan.pt"


def parse_seeds(text: str) -> list[int]:
    """'0-7' -> [0..7]; '1,4,9' -> [1, 4, 9]; '3' -> [3]."""
    seeds = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            seeds += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad --seeds {text!r}; use e.g. 0-7 or 1,4,9") from None
    return seeds


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = p.add_argument_group("what to generate")
    what.add_argument("--text", action="append", default=[], help="a prompt; repeat for several")
    what.add_argument("--text_file", type=Path, help="a file of prompts, one per line")
    what.add_argument("--interpolate", nargs=2, metavar=("A", "B"),
                      help="morph from prompt A to prompt B (fixed noise, text embedding lerp)")
    what.add_argument("--frames", type=int, default=8, help="frames of --interpolate (default: 8)")
    what.add_argument("--n", type=int, default=8, help="images per prompt (default: 8)")
    what.add_argument("--seed", type=int, default=0, help="first seed; images use seed..seed+n-1 (default: 0)")
    what.add_argument("--seeds", type=parse_seeds, help="explicit seeds, e.g. 0-7 or 1,4,9 (overrides --n/--seed)")
    what.add_argument("--truncation", type=float, default=1.0,
                      help="truncation psi toward the caption's mean w: 1 = off, <1 = more typical (default: 1)")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="one grid PNG: rows = prompts, columns = seeds (default: samples.png)")
    out.add_argument("--outdir", type=Path, help="one PNG per image, named p<prompt>-s<seed>.png")
    out.add_argument("--grid", action="store_true", help="with --outdir, also write grid.png there")
    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, help="checkpoint file (default: newest under --runs, else the demo model)")
    model.add_argument("--runs", type=Path, default=Path("runs"), help="where to look for checkpoints (default: runs)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    model.add_argument("--batch", type=int, default=64, help="images per forward pass (default: 64)")
    diff = p.add_argument_group("diffusion (DDPM checkpoints only; a GAN checkpoint ignores these flags)")
    diff.add_argument("--steps", type=int, default=50, help="denoising steps (default: 50)")
    diff.add_argument("--guidance", type=float, default=3.0,
                      help="classifier-free guidance scale: 1 = off, 0 = unconditional (default: 3)")
    diff.add_argument("--sampler", choices=("ddpm", "ddim"), default="ddim",
                      help="ddim (deterministic for --eta 0) or ddpm (ancestral) (default: ddim)")
    diff.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 = deterministic, 1 = DDPM-like noise (default: 0)")
    diff.add_argument("--init_image", type=Path, help="img2img: start from this image noised to --strength")
    diff.add_argument("--strength", type=float, default=0.6,
                      help="img2img: fraction of the schedule re-run; 0 = the image itself, 1 = pure noise (default: 0.6)")
    args = p.parse_args(argv)
    if args.steps < 1 or args.eta < 0 or not 0 <= args.strength <= 1:
        p.error("need --steps >= 1, --eta >= 0 and --strength in [0, 1]")
    return args


def find_checkpoint(runs: Path) -> Path | None:
    """Newest network-final.pt of any run, else the newest checkpoint of any run, else the demo model."""
    runs_found = run_dirs(runs)
    for pattern in ("network-final.pt", "network-*.pt"):
        found = [p for run in runs_found for p in run.glob(pattern)]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    return DEMO_MODEL if DEMO_MODEL.is_file() else None


def read_prompts(args) -> list[str]:
    prompts = list(args.text)
    if args.text_file is not None:
        try:
            lines = args.text_file.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"error: cannot read --text_file {args.text_file}: {e}")
        prompts += [line.strip() for line in lines if line.strip()]
    if args.interpolate:
        prompts = list(args.interpolate)
    if not prompts:
        raise SystemExit("error: no prompt; give --text \"...\", --text_file FILE or --interpolate A B")
    if any(not p.strip() for p in prompts):
        raise SystemExit("error: empty prompt; every --text must contain some words")
    return prompts


def check_writable(path: Path, is_dir: bool) -> None:
    """Fail before the (possibly long) generation when the output cannot be written."""
    target = path if is_dir else path.parent
    try:
        target.mkdir(parents=True, exist_ok=True)
        probe = target / f".write-test-{id(path)}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise SystemExit(f"error: cannot write to {target}: {e.strerror or e}")


def read_init_image(path: Path, resolution: int) -> torch.Tensor:
    """--init_image as img [1, 3, R, R] in [-1, 1]: centre-cropped and resized like the training data."""
    try:
        img_u8, _ = load_image(path, resolution)
    except DECODE_ERRORS as e:
        raise SystemExit(f"error: cannot read --init_image {path}: {e}")
    return from_uint8(torch.from_numpy(img_u8)[None])


def diffusion_options(args, sampler) -> dict:
    """The diffusion flags as keywords of a DDPM sampler's `sample`; {} for a GAN checkpoint."""
    if sampler.kind != "ddpm":
        return {}
    init = None if args.init_image is None else read_init_image(args.init_image, sampler.resolution)
    return {"steps": args.steps, "guidance": args.guidance, "sampler": args.sampler, "eta": args.eta,
            "init_image": init, "strength": args.strength, "progress": True}


def interpolation_strip(sampler, a: str, b: str, frames: int, seeds: list[int], truncation: float):
    """Rows = seeds, columns = frames from prompt a to prompt b (same z across a row)."""
    ends = sampler.embed([a, b])
    steps = torch.linspace(0, 1, frames, device=ends.device)[:, None]
    text = torch.lerp(ends[0].expand(frames, -1), ends[1].expand(frames, -1), steps)
    rows = [sampler.synthesize(text, seeded_normal([s] * frames, sampler.G.cfg.z_dim, sampler.device),
                               truncation) for s in seeds]
    return make_grid(to_uint8(torch.cat(rows)), len(seeds), frames)


def generate(args) -> list[Path]:
    prompts = read_prompts(args)
    seeds = args.seeds or list(range(args.seed, args.seed + args.n))
    out = args.out if args.out is not None or args.outdir is not None else Path("samples.png")
    for target, is_dir in ((out, False), (args.outdir, True)):
        if target is not None:
            check_writable(target, is_dir)
    path = args.checkpoint or find_checkpoint(args.runs)
    if path is None:
        raise SystemExit(f"error: no checkpoint under {args.runs}/ and no demo model at {DEMO_MODEL}; "
                         f"train one with train_progan.py or pass --checkpoint")
    print(f"using checkpoint: {path}")
    sampler = load_sampler(path, resolve_device(args.device))
    sampler.batch = args.batch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_outputs(args, sampler, prompts, seeds, out)
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}", file=sys.stderr)
    for p in written:
        print(f"wrote {p}")
    return written


def write_outputs(args, sampler, prompts, seeds, out) -> list[Path]:
    if args.interpolate:
        if sampler.kind != "gan":
            raise SystemExit(f"error: --interpolate needs a GAN checkpoint; this one is of kind {sampler.kind!r}")
        return [save_png(out, interpolation_strip(sampler, *prompts, args.frames, seeds, args.truncation))]
    captions = [p for p in prompts for _ in seeds]
    img_u8 = to_uint8(sampler.sample(captions, seeds * len(prompts), args.truncation,
                                     **diffusion_options(args, sampler)))
    grid = make_grid(img_u8, len(prompts), len(seeds))
    written = []
    if out is not None:
        written.append(save_png(out, grid))
    if args.outdir is not None:
        for i, img in enumerate(img_u8):
            p_idx, s = divmod(i, len(seeds))
            written.append(save_png(args.outdir / f"p{p_idx:03d}-s{seeds[s]:04d}.png", img.numpy()))
        if args.grid:
            written.append(save_png(args.outdir / "grid.png", grid))
    return written


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    try:
        return generate(args)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
