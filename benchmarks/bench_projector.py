"""GAN projector on held-out demo pictures: how well it reconstructs them, and whether a one-word
edit changes that word's attribute and leaves the other four.

    python benchmarks/bench_projector.py                                   # pretrained/demo-gan.pt
    python benchmarks/bench_projector.py --checkpoint runs/00002-demo-32/network-final.pt --grid proj.png

Targets: `--num` scenes rendered at 32 px (`render_scene`, no jitter) from a seeded choice of the
held-out combinations (`all_combinations(held_out=True)`: (shape, colour) pairs never in
training), captioned with template 0. All targets are projected in one batch (they are
independent). Edits change only the colour word (to the next colour of ATTRIBUTES["colour"])
or only the shape word (to the next shape) and re-render the projected w (`edit_w`) at each
`--strengths`. The demo attribute classifier (`stylegan_t2i/metrics/attribute_classifier.py`,
1.000 on real renders) judges: "follows" = the edited attribute reads as the new word, "others stay" =
the four other attributes read as the target's, "both" = both at once. The "generate" row is
the generator drawing the new caption from scratch (seeds 0..num-1): what it can draw at all.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stylegan_t2i.data.demo_scenes import ATTRIBUTES, all_combinations, caption_for, render_scene
from stylegan_t2i.images import make_grid, save_png, to_uint8
from stylegan_t2i.inference import DEMO_MODEL, load_sampler
from stylegan_t2i.metrics.attribute_classifier import (
    ATTR_NAMES,
    ClassifierConfig,
    ensure_classifier,
    labels_of,
    pil_to_img,
)
from stylegan_t2i.projector import ProjectorConfig, edit_w, encoder_distance, project, psnr, synthesize

EDITS = ("colour", "shape")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, default=DEMO_MODEL, help="GAN checkpoint (default: the demo model)")
    p.add_argument("--num", type=int, default=20, help="held-out target pictures (default: %(default)s)")
    p.add_argument("--steps", type=int, default=ProjectorConfig.num_steps,
                   help="projection steps (default: %(default)s)")
    p.add_argument("--modes", default="w,w+", help="comma-separated: w, w+, w+noise (default: %(default)s)")
    p.add_argument("--strengths", default="0,1,2", help="edit strengths (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which held-out combinations (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads (default: torch's choice; 1 on a busy machine)")
    p.add_argument("--json", type=Path, help="write the figures here")
    p.add_argument("--grid", type=Path, help="PNG: per mode, rows target / reconstruction / colour edit / shape edit")
    return p.parse_args(argv)


def held_out_targets(num: int, seed: int) -> tuple[list[dict], torch.Tensor]:
    combos = all_combinations(held_out=True)
    pick = np.sort(np.random.default_rng(seed).choice(len(combos), size=min(num, len(combos)), replace=False))
    chosen = [combos[i] for i in pick]
    return chosen, pil_to_img([render_scene(c, 32) for c in chosen])


def edited_combo(combo: dict, attr: str) -> dict:
    """`combo` with `attr` moved to the next value of ATTRIBUTES[attr] (cyclically)."""
    values = ATTRIBUTES[attr]
    return {**combo, attr: values[(values.index(combo[attr]) + 1) % len(values)]}


def hits(classifier, img: torch.Tensor, combos: list[dict]) -> torch.Tensor:
    """[N, 5] bool: attribute a of image i reads as combos[i][a]."""
    pred, _ = classifier.predict(img.clamp(-1, 1))
    return pred == labels_of(combos)


def judge(classifier, img: torch.Tensor, combos: list[dict], attr: str) -> dict[str, float]:
    """Fractions: `attr` reads as combos' value ("follows"), the other attributes too ("others stay"), both."""
    hit, col = hits(classifier, img, combos), ATTR_NAMES.index(attr)
    others = hit[:, [i for i in range(len(ATTR_NAMES)) if i != col]].all(dim=1)
    follows = hit[:, col]
    return {"follows": follows.float().mean().item(), "others_stay": others.float().mean().item(),
            "both": (follows & others).float().mean().item()}


def projector_config(mode: str, steps: int) -> ProjectorConfig:
    if mode not in ("w", "w+", "w+noise"):
        raise SystemExit(f"error: unknown mode {mode!r}; use w, w+ or w+noise")
    return ProjectorConfig(num_steps=steps, w_plus=mode != "w", optimize_noise=mode == "w+noise")


def run_mode(sampler, classifier, mode, steps, combos, targets, strengths) -> tuple[dict, list[dict], torch.Tensor]:
    """(reconstruction row, edit rows, images for the grid) of one projection mode."""
    captions = [caption_for(c) for c in combos]
    cpu, wall = time.process_time(), time.perf_counter()
    result = project(sampler, targets, captions, projector_config(mode, steps))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    start, recon = result.frames[0][1], result.frames[-1][1]
    row = {"mode": mode, "steps": steps, "psnr_start": psnr(start, targets).mean().item(),
           "psnr": psnr(recon, targets).mean().item(),
           "enc_start": encoder_distance(sampler, start, targets).mean().item(),
           "enc": encoder_distance(sampler, recon, targets).mean().item(),
           "recon_all_five": hits(classifier, recon, combos).all(dim=1).float().mean().item(),
           "cpu_s": cpu, "wall_s": wall}
    edits, shown = [], [targets, recon]
    for attr in EDITS:
        new = [edited_combo(c, attr) for c in combos]
        new_caps = [caption_for(c) for c in new]
        for s in strengths:
            with torch.no_grad():
                img = synthesize(sampler, edit_w(sampler, result.w, captions, new_caps, s), result.noise)
            edits.append({"mode": mode, "edit": attr, "strength": s, **judge(classifier, img, new, attr),
                          "alignment": sampler.text.alignment(img.clamp(-1, 1), new_caps).mean().item()})
            if s == max(strengths):
                shown.append(img)
    return row, edits, torch.cat(shown)


def generate_rows(sampler, classifier, combos) -> list[dict]:
    """The generator drawing each edit's new caption from scratch, as a reference."""
    rows = []
    for attr in EDITS:
        new = [edited_combo(c, attr) for c in combos]
        caps = [caption_for(c) for c in new]
        img = sampler.sample(caps, list(range(len(caps))))
        rows.append({"mode": "generate", "edit": attr, "strength": float("nan"), **judge(classifier, img, new, attr),
                     "alignment": sampler.text.alignment(img, caps).mean().item()})
    return rows


def print_tables(recon_rows: list[dict], edit_rows: list[dict], num: int, checkpoint: Path) -> None:
    print(f"GAN projector, {num} held-out demo pictures at 32 px, {checkpoint}")
    print("\n| mode | steps | PSNR start (dB) | PSNR (dB) | enc. dist. start | enc. dist. | all five read right "
          "| CPU s |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for r in recon_rows:
        print(f"| {r['mode']} | {r['steps']} | {r['psnr_start']:.2f} | {r['psnr']:.2f} | {r['enc_start']:.5f} "
              f"| {r['enc']:.5f} | {r['recon_all_five']:.2f} | {r['cpu_s']:.0f} |")
    print("\n| mode | edit | strength | follows | others stay | both | alignment |")
    print("|---|---|--:|--:|--:|--:|--:|")
    for r in edit_rows:
        s = "" if r["strength"] != r["strength"] else f"{r['strength']:g}"
        print(f"| {r['mode']} | {r['edit']} | {s} | {r['follows']:.2f} | {r['others_stay']:.2f} | {r['both']:.2f} "
              f"| {r['alignment']:.3f} |")


def main(argv=None) -> dict:
    args = parse_args(argv)
    strengths = [float(s) for s in args.strengths.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    sampler = load_sampler(args.checkpoint, "cpu")
    classifier, _ = ensure_classifier(None, ClassifierConfig(resolution=32))
    combos, targets = held_out_targets(args.num, args.seed)
    recon_rows, edit_rows, shown = [], [], []
    for mode in args.modes.split(","):
        row, edits, img = run_mode(sampler, classifier, mode, args.steps, combos, targets, strengths)
        recon_rows.append(row)
        edit_rows += edits
        shown.append(img)
    edit_rows += generate_rows(sampler, classifier, combos)
    print_tables(recon_rows, edit_rows, len(combos), args.checkpoint)
    figures = {"checkpoint": str(args.checkpoint), "num": len(combos), "reconstruction": recon_rows,
               "edits": edit_rows, "captions": [caption_for(c) for c in combos]}
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    if args.grid is not None:
        img = torch.cat(shown)
        save_png(args.grid, make_grid(to_uint8(img), img.shape[0] // len(combos), len(combos)))
    return figures


if __name__ == "__main__":
    main()
