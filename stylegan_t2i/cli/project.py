"""Project a picture into a GAN checkpoint's latent space, then re-render it under other words.

    python tools/project.py --target pic.png --caption "a small red circle on the left on a black background" \\
        --edit "a small blue circle on the left on a black background" --outdir projection/
    python tools/project.py --target pic.png --caption "..." --w_plus --steps 500 --outdir out/
    stylegan-t2i-project --target pic.png --caption "..." --outdir out/    # the installed console command

Writes to --outdir: target.png (the picture at the model's resolution), reconstruction.png
(G of the projected w), edited.png (with --edit), progress.png (the reconstruction every
--frame_every steps, then the target), projected_w.pt (plain tensors:
`torch.load(path, weights_only=True)`) and projection.json (PSNR and encoder distance of the
reconstruction, and the edit's alignment with its caption).

--caption says what the picture shows: the projection starts from its mean w and holds the
caption part of w at its value; without it the empty caption is used, a worse start and a
vaguer edit. The edit replaces the caption part of w by --edit's (generators with
text_w_dim > 0) and moves the rest by --strength * (mean w(--edit) - mean w(--caption))
(stylegan_t2i/projector.py).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from stylegan_t2i.checkpoint import CheckpointError, atomic_torch_save
from stylegan_t2i.data.image_io import DECODE_ERRORS, load_image
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.images import from_uint8, make_grid, save_png, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, load_sampler
from stylegan_t2i.projector import (
    EDIT_STRENGTH,
    Projection,
    ProjectorConfig,
    edit_w,
    encoder_distance,
    project,
    psnr,
    synthesize,
)

DEFAULTS = ProjectorConfig()
PROJECTION_FORMAT, PROJECTION_VERSION = "stylegan_t2i_projection", 1


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", type=Path, required=True, help="the picture to project (any size; centre-cropped)")
    p.add_argument("--caption", help="what the picture shows (default: the empty caption)")
    p.add_argument("--edit", help="re-render the projected picture with this caption")
    p.add_argument("--strength", type=float, default=EDIT_STRENGTH,
                   help="edit: how far w moves by mean w(--edit) - mean w(--caption) (default: %(default)g)")
    p.add_argument("--outdir", type=Path, default=Path("projection"), help="output folder (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path, default=DEMO_MODEL, help="GAN checkpoint (default: the demo model)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--steps", type=int, default=DEFAULTS.num_steps, help="Adam steps (default: %(default)s)")
    opt.add_argument("--w_plus", action="store_true", help="one w per style layer (w+) instead of one w")
    opt.add_argument("--noise", action="store_true", help="also optimise the per-layer noise maps")
    opt.add_argument("--lr", type=float, default=DEFAULTS.lr, help="peak learning rate (default: %(default)g)")
    opt.add_argument("--frame_every", type=int, default=DEFAULTS.frame_every,
                     help="steps between progress.png frames (default: %(default)s)")
    opt.add_argument("--seed", type=int, default=DEFAULTS.seed, help="seeds the noise on w (default: %(default)s)")
    return p.parse_args(argv)


def read_target(path: Path, resolution: int) -> torch.Tensor:
    """The picture as img [1, 3, R, R] in [-1, 1], centre-cropped and resized like the training data."""
    try:
        img_u8, _ = load_image(path, resolution)
    except DECODE_ERRORS as e:
        raise SystemExit(f"error: cannot read --target {path}: {e}") from None
    return from_uint8(torch.from_numpy(img_u8)[None])


def open_gan(path: Path, device: torch.device):
    """The GAN sampler of --checkpoint; any other kind is a one-line error."""
    try:
        sampler = load_sampler(path, device)
    except CheckpointError as e:
        raise SystemExit(f"error: {e}") from None
    if sampler.kind != "gan":
        raise SystemExit(f"error: projection needs a GAN checkpoint; {path} is of kind {sampler.kind!r}")
    return sampler


def write_outputs(args, sampler, target: torch.Tensor, result: Projection) -> list[Path]:
    out = args.outdir
    recon = result.frames[-1][1]
    frames = torch.cat([img for _, img in result.frames] + [target])
    written = [save_png(out / "target.png", to_uint8(target)[0].numpy()),
               save_png(out / "reconstruction.png", to_uint8(recon)[0].numpy()),
               save_png(out / "progress.png", make_grid(to_uint8(frames), 1, len(frames)))]
    caption = result.captions[0]
    report = {"checkpoint": str(args.checkpoint), "caption": caption, "steps": args.steps, "w_plus": args.w_plus,
              "noise": args.noise, "psnr": psnr(recon, target).item(),
              "encoder_distance": encoder_distance(sampler, recon, target).item(),
              "loss_first": result.losses[0], "loss_last": result.losses[-1],
              "frame_steps": [s for s, _ in result.frames]}
    saved = {"format": PROJECTION_FORMAT, "version": PROJECTION_VERSION, "w": result.w[0].cpu(),
             "w_plus": args.w_plus, "caption": caption, "stage": sampler.stage, "alpha": sampler.alpha}
    if result.noise is not None:
        saved["noise"] = {k: v[0].cpu() for k, v in result.noise.items()}
    if args.edit is not None:
        w_edit = edit_w(sampler, result.w, [caption], [args.edit], args.strength)
        with torch.no_grad():
            edited = synthesize(sampler, w_edit, result.noise).clamp(-1, 1)
        written.append(save_png(out / "edited.png", to_uint8(edited)[0].numpy()))
        saved["edit"] = {"caption": args.edit, "strength": args.strength, "w": w_edit[0].cpu()}
        report["edit"] = {"caption": args.edit, "strength": args.strength,
                          "alignment": sampler.text.alignment(edited, [args.edit]).item(),
                          "alignment_before": sampler.text.alignment(recon, [args.edit]).item()}
    written.append(atomic_torch_save(out / "projected_w.pt", saved))
    json_path = out / "projection.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    return written + [json_path]


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    for name in ("caption", "edit"):
        if getattr(args, name) is not None and not getattr(args, name).strip():
            raise SystemExit(f"error: --{name} is empty; give some words or leave the flag out")
    try:
        cfg = ProjectorConfig(num_steps=args.steps, w_plus=args.w_plus, optimize_noise=args.noise, lr=args.lr,
                              frame_every=args.frame_every, seed=args.seed)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    sampler = open_gan(args.checkpoint, resolve_device(args.device))
    target = read_target(args.target, 4 * 2 ** sampler.stage).to(next(sampler.G.parameters()).device)
    try:
        args.outdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot write to {args.outdir}: {e.strerror or e}") from None
    result = project(sampler, target, [args.caption], cfg)
    written = write_outputs(args, sampler, target, result)
    print(f"PSNR {psnr(result.frames[-1][1], target).item():.2f} dB after {args.steps} steps")
    for p in written:
        print(f"wrote {p}")
    return written


if __name__ == "__main__":
    main()
