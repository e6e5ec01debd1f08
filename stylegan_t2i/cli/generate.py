"""Generate images from text with a trained checkpoint.

    python generate.py --text "a small red circle on the left on a black background"
    python generate.py --text "a red square" --text "a blue circle" --seeds 0-7 --captions --out grid.png
    python generate.py --text "a red square" --size 0 --out thumbs.png   # the model's own 32 px
    python generate.py --text_file prompts.txt --outdir samples/      # one PNG per image
    python generate.py --interpolate "a red circle" "a blue square" --frames 8 --out strip.png
    python generate.py --checkpoint DDPM.pt --text "a red square" --steps 50 --guidance 3  # diffusion
    python generate.py --checkpoint DDPM.pt --text "a blue square" --init_image in.png --strength 0.6
    python generate.py --text "a large red triangle on the left on a white background" --n 1 \\
        --init_image in.png --init_caption "a large blue triangle on the left on a white background"   # GAN
    stylegan-t2i-generate --text "a red square" --out s.png      # the installed console command, from anywhere

With no --checkpoint, the newest network-final.pt under runs/ is used (else the newest
checkpoint there), else the demo model shipped with the package (pretrained/demo-gan.pt in the
repository). A corrupt one found there is renamed to *.corrupt (with a warning) and the
previous one is used.

Every image is resized to --size x --size pixels for viewing (default 256; --size 0 keeps the
model's resolution), in the grid and in --outdir alike; the grid has a 2 px light gray border.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from stylegan_t2i.checkpoint import CheckpointError, load_newest_readable
from stylegan_t2i.data.image_io import DECODE_ERRORS, load_image
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.images import RESAMPLE, from_uint8, make_grid, resize_batch, save_png, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, DdpmOptions, GanOptions, load_sampler, seeded_normal
from stylegan_t2i.projector import EDIT_STRENGTH, project_and_edit
from stylegan_t2i.run_dir import run_dirs
from stylegan_t2i.training.run_files import FINAL_NAME

# Flags passed through to the sampler, only when given: it fills in the rest and rejects the
# ones its kind does not take (--steps on a GAN checkpoint) with a one-line error.
SAMPLING_FLAGS = ("truncation", "steps", "guidance", "sampler", "eta", "strength")
VIEW_SIZE = 256     # --size default: large enough to see (the demo model's 32 px become 8 x 8 blocks).


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


INT64 = (-2 ** 63, 2 ** 63 - 1)     # Seeds seed a torch.Generator: 64-bit signed.


def check_seeds(seeds: list[int]) -> None:
    bad = [s for s in seeds if not INT64[0] <= s <= INT64[1]]
    if bad:
        raise SystemExit(f"error: seed {bad[0]} is outside [-2**63, 2**63 - 1]")


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
    what.add_argument("--frames", type=positive_int, default=8, help="frames of --interpolate (default: 8)")
    what.add_argument("--n", type=positive_int, default=8, help="images per prompt (default: 8)")
    what.add_argument("--seed", type=int, default=0, help="first seed; images use seed..seed+n-1 (default: 0)")
    what.add_argument("--seeds", type=parse_seeds, help="explicit seeds, e.g. 0-7 or 1,4,9 (overrides --n/--seed)")
    what.add_argument("--truncation", type=float,
                      help="GAN only: truncation psi toward the caption's mean w: 1 = off, <1 = more typical "
                           f"(default: {GanOptions.truncation:g})")
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="one grid PNG: rows = prompts, columns = seeds (default: samples.png)")
    out.add_argument("--outdir", type=Path, help="one PNG per image, named p<prompt>-s<seed>.png")
    out.add_argument("--grid", action="store_true", help="with --outdir, also write grid.png there")
    out.add_argument("--size", type=int, default=VIEW_SIZE, metavar="N",
                     help=f"resize every image to N x N pixels for viewing, grid and --outdir alike; 0 keeps "
                          f"the model's resolution; any N >= 1 is allowed, below the resolution shrinks "
                          f"(default: {VIEW_SIZE})")
    out.add_argument("--resample", choices=tuple(RESAMPLE), default="nearest",
                     help="resize filter of --size: nearest = pixel-exact blocks when N is a multiple of the "
                          "model's resolution (uneven blocks otherwise), lanczos = smooth, better for "
                          "shrinking (default: nearest)")
    out.add_argument("--captions", action="store_true",
                     help="draw each row's prompt above it in the grid (--interpolate: seed and both prompts)")
    model = p.add_argument_group("model")
    model.add_argument("--checkpoint", type=Path, help="checkpoint file (default: newest under --runs, else the demo model)")
    model.add_argument("--runs", type=Path, default=Path("runs"), help="where to look for checkpoints (default: runs)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    model.add_argument("--batch", type=positive_int, default=64, help="images per forward pass (default: 64)")
    diff = p.add_argument_group("diffusion (DDPM checkpoints only; a GAN checkpoint rejects these flags)")
    diff.add_argument("--steps", type=int, help=f"denoising steps (default: {DdpmOptions.steps})")
    diff.add_argument("--guidance", type=float,
                      help="classifier-free guidance scale: 1 = off, 0 = unconditional "
                           f"(default: {DdpmOptions.guidance:g})")
    diff.add_argument("--sampler", choices=("ddpm", "ddim"),
                      help=f"ddim (deterministic for --eta 0) or ddpm (ancestral) (default: {DdpmOptions.sampler})")
    diff.add_argument("--eta", type=float,
                      help=f"DDIM eta: 0 = deterministic, 1 = DDPM-like noise (default: {DdpmOptions.eta:g})")
    diff.add_argument("--init_image", type=Path,
                      help="img2img: start from this image noised to --strength; a GAN checkpoint projects it "
                           "into w instead and renders that w with each prompt (same picture for every seed)")
    diff.add_argument("--init_caption", help="GAN --init_image: what the image shows (default: the empty caption)")
    diff.add_argument("--strength", type=float,
                      help=f"img2img: fraction of the schedule re-run; 0 = the image itself, 1 = pure noise "
                           f"(default: {DdpmOptions.strength:g}); GAN --init_image: how far w moves by "
                           f"mean w(prompt) - mean w(--init_caption) (default: {EDIT_STRENGTH:g})")
    return p.parse_args(argv)


def run_checkpoints(runs: Path) -> list[Path]:
    """Every run's network-final.pt, newest first, then their other checkpoints, newest first."""
    runs_found = run_dirs(runs)
    finals = [p for run in runs_found for p in run.glob(FINAL_NAME)]
    others = [p for run in runs_found for p in run.glob("network-*.pt") if p.name != FINAL_NAME]
    return [p for found in (finals, others) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def open_sampler(args):
    """The sampler of --checkpoint, else of the newest readable checkpoint under --runs (a corrupt
    one is renamed *.corrupt and the previous one used), else of the demo model."""
    device = resolve_device(args.device)
    path = args.checkpoint
    if path is None:
        found = load_newest_readable(run_checkpoints(args.runs), lambda ckpt: load_sampler(ckpt, device))
        if found is not None:
            print(f"using checkpoint: {found[1]}")
            return found[0]
        if not DEMO_MODEL.is_file():
            raise SystemExit(f"error: no checkpoint under {args.runs}/ and no demo model at {DEMO_MODEL}; "
                             f"train one with train_progan.py or pass --checkpoint")
        path = DEMO_MODEL
    print(f"using checkpoint: {path}")
    return load_sampler(path, device)


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
        raise SystemExit('error: no prompt; give --text "...", --text_file FILE or --interpolate A B')
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


def sampling_options(args, sampler) -> dict:
    """The sampling flags that were given, as keywords of `sampler.sample`, checked by the
    sampler: one it does not take or a bad value is a one-line error before any work."""
    options = {name: getattr(args, name) for name in SAMPLING_FLAGS if getattr(args, name) is not None}
    if args.init_image is not None:
        options["init_image"] = read_init_image(args.init_image, sampler.resolution)
    projecting = args.init_image is not None and sampler.kind == "gan"     # `render` projects it instead.
    if args.init_caption is not None and not projecting:
        raise SystemExit("error: --init_caption goes with --init_image on a GAN checkpoint")
    if projecting and "truncation" in options:
        raise SystemExit("error: --truncation does not apply to a GAN's --init_image (there is no z to truncate)")
    try:
        sampler.options(**({} if projecting else options))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return options


def render(args, sampler, captions: list[str], seeds: list[int], options: dict) -> torch.Tensor:
    """sampler.sample, except that a GAN with --init_image projects that image once and renders
    its w edited to each caption (stylegan_t2i/projector.py; the seeds do not matter then)."""
    if "init_image" not in options or sampler.kind != "gan":
        return sampler.sample(captions, seeds, **options)
    target = options["init_image"].to(sampler.device)
    return project_and_edit(sampler, target, args.init_caption, captions, options.get("strength", EDIT_STRENGTH))


def interpolation_strip(sampler, a: str, b: str, frames: int, seeds: list[int], truncation: float, args):
    """Rows = seeds, columns = frames from prompt a to prompt b (same z across a row), each frame
    resized to --size, captioned with --captions."""
    text = sampler.caption_path(a, b, frames)
    rows = [sampler.synthesize(text, seeded_normal([s] * frames, sampler.G.cfg.z_dim, sampler.device),
                               truncation) for s in seeds]
    img_u8 = resize_batch(to_uint8(torch.cat(rows)), args.size, args.resample)
    captions = [f"seed {s}: {a} -> {b}" for s in seeds] if args.captions else None
    return make_grid(img_u8, len(seeds), frames, captions=captions)


def check_size(size: int) -> None:
    if size < 0:
        raise SystemExit(f"error: --size must be 0 (the model's resolution) or a side in pixels >= 1, got {size}")


def generate(args) -> list[Path]:
    prompts = read_prompts(args)
    check_size(args.size)
    seeds = args.seeds or list(range(args.seed, args.seed + args.n))
    check_seeds(seeds)
    out = args.out if args.out is not None or args.outdir is not None else Path("samples.png")
    for target, is_dir in ((out, False), (args.outdir, True)):
        if target is not None:
            check_writable(target, is_dir)
    sampler = open_sampler(args)
    sampler.batch, sampler.progress = args.batch, True
    options = sampling_options(args, sampler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        written = write_outputs(args, sampler, prompts, seeds, out, options)
    for w in {str(w.message) for w in caught}:
        print(f"warning: {w}", file=sys.stderr)
    for p in written:
        print(f"wrote {p}")
    return written


def write_outputs(args, sampler, prompts, seeds, out, options: dict) -> list[Path]:
    if args.interpolate:
        # A GAN-only feature (a lerp of the text embedding that G is conditioned on), not an option.
        if sampler.kind != "gan":
            raise SystemExit(f"error: --interpolate needs a GAN checkpoint; this one is of kind {sampler.kind!r}")
        truncation = sampler.options(**options).truncation
        return [save_png(out, interpolation_strip(sampler, *prompts, args.frames, seeds, truncation, args))]
    captions = [p for p in prompts for _ in seeds]
    img_u8 = to_uint8(render(args, sampler, captions, seeds * len(prompts), options))
    img_u8 = resize_batch(img_u8, args.size, args.resample)
    grid = make_grid(img_u8, len(prompts), len(seeds), captions=prompts if args.captions else None)
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
    except (OSError, ValueError) as e:     # Writing the output: a folder, an unknown extension, a long name.
        raise SystemExit(f"error: cannot write the output: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


if __name__ == "__main__":
    main()
