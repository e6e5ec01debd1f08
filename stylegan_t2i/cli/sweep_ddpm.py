"""Guidance x steps sweep of a DDPM checkpoint: one labelled grid per prompt, and FD and alignment
for every (guidance, DDIM steps) cell.

    python tools/sweep_ddpm.py --checkpoint runs/00001-demo-ddpm-32/network-final.pt \\
        --guidance 1,3,5,7.5 --ddim_steps 10,20,30,50 --num 200 --out sweep_ddpm

A command of its own rather than more flags of tools/compare.py: compare.py needs a GAN
checkpoint beside the DDPM and times every row, its --guidance is one scale for all DDPM rows,
and its --ddim_steps already names the rows of its GAN-vs-DDPM table; a guidance list there
would change what each of those rows means. A sweep needs neither the GAN nor the timing. It
shares the rest: the evaluation flags (cli/common.py), `evaluate_sampler` for each cell's
figures (one cache, so the real images and their features are computed once) and
`plot.labelled_grid` for the figures.

Each cell samples the checkpoint's DdpmSampler (through the sampler interface) with DDIM,
eta 0, at that guidance scale and step count. Every cell is scored on the same captions and
seeds (stylegan_t2i.evaluation), and every grid uses the same --samples_per_prompt seeds, so
two cells differ only in (guidance, steps).

Writes <out>/grid-NN.png per prompt (its prompt on top, rows = guidance scales, column
blocks = step counts, --samples_per_prompt seeds in each), <out>/table.md and <out>/table.json
(one row per cell). Installed as the console command `stylegan-t2i-sweep-ddpm` (same flags).
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from stylegan_t2i.cli.common import (
    add_eval_arguments,
    check_data_arguments,
    eval_config,
    json_safe,
    open_dataset,
    parse_guidance,
    parse_steps,
    run_reporting,
    write_json,
)
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.evaluation import eval_seeds, evaluate_sampler
from stylegan_t2i.images import caption_band, make_grid, resize_batch, save_png, to_uint8
from stylegan_t2i.inference import load_sampler
from stylegan_t2i.plot import labelled_grid

# Table columns: evaluate_sampler's keys, in this order, where --metrics asked for them.
COLUMNS = ("fd", "alignment", "r_precision", "kid", "swd", "precision", "recall", "is")
MIN_CELL = 64       # Grid images are enlarged (nearest, by an integer factor) to at least this side.
LABEL_WIDTH = 128   # Pixels of the grid's row-label column: "guidance 7.5" and a margin.
WHITE = (255, 255, 255)
SPACES = {"encoder": "the checkpoint's own contrastive image encoder's", "inception": "InceptionV3 pool3"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="ddpm checkpoint (tools/train_ddpm.py)")
    p.add_argument("--out", type=Path, default=Path("sweep_ddpm"), help="output folder (default: sweep_ddpm)")
    add_eval_arguments(p, num=200, metrics=("fd", "align"), sampling=False)
    sw = p.add_argument_group("sweep")
    # dest guidance_list: `given_options` reads args.guidance as one scale for every image.
    sw.add_argument("--guidance", dest="guidance_list", type=parse_guidance, default=[1.0, 3.0, 5.0, 7.5], metavar="G,G,...",
                    help="guidance scales, the grid's rows (default: 1,3,5,7.5; 1 = no guidance)")
    sw.add_argument("--ddim_steps", type=parse_steps, default=[10, 20, 30, 50], metavar="N,N,...",
                    help="DDIM step counts, the grid's columns (default: 10,20,30,50)")
    sw.add_argument("--prompts", nargs="+", help="one grid per prompt (default: 4 from the dataset)")
    sw.add_argument("--samples_per_prompt", type=int, default=2, help="seeds in each grid cell (default: 2)")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    if args.samples_per_prompt < 1:
        p.error(f"--samples_per_prompt must be >= 1, got {args.samples_per_prompt}")
    return args


@dataclass(frozen=True)
class Cell:
    guidance:   float
    steps:      int

    def options(self) -> dict:
        """Keywords of DdpmSampler.sample for this cell."""
        return {"guidance": self.guidance, "steps": self.steps, "sampler": "ddim"}


def cells_of(args) -> list[Cell]:
    """Row-major: guidance scales are the rows, step counts the columns."""
    return [Cell(g, s) for g in args.guidance_list for s in args.ddim_steps]


def load_ddpm(args, device: torch.device):
    """The checkpoint's DdpmSampler; a GAN checkpoint or a step count above its schedule is a
    one-line error before any sampling."""
    sampler = load_sampler(args.checkpoint, device)
    if sampler.kind != "ddpm":
        raise SystemExit(f"error: --checkpoint {args.checkpoint} is a {sampler.kind} checkpoint; the sweep "
                         "needs a ddpm checkpoint (tools/train_ddpm.py)")
    sampler.batch = args.batch
    for cell in cells_of(args):
        try:
            sampler.options(**cell.options())
        except ValueError as e:
            raise SystemExit(f"error: --ddim_steps {cell.steps}: {e}") from None
    return sampler


# ----------------------------------------------------------------------------------------------
# Grids.

def steps_label(steps: int) -> str:
    return f"{steps} step{'s' * (steps != 1)}"


def cell_images(sampler, cell: Cell, prompts: list[str], seeds: list[int]) -> torch.Tensor:
    """img_u8 [P, K, R', R', 3]: prompt p with seed k, enlarged to R' >= MIN_CELL."""
    img = sampler.sample([p for p in prompts for _ in seeds], seeds * len(prompts), **cell.options())
    img_u8 = to_uint8(img)
    img_u8 = resize_batch(img_u8, img_u8.shape[1] * max(1, MIN_CELL // img_u8.shape[1]))
    return img_u8.view(len(prompts), len(seeds), *img_u8.shape[1:])


def prompt_grid(images: dict[Cell, torch.Tensor], p: int, prompt: str, guidance: list[float],
                steps: list[int]) -> np.ndarray:
    """[H, W, 3] uint8: the prompt on top, then one block per step count, one row per guidance
    scale; images[cell][p] is that cell's [K, R', R', 3] for prompt p."""
    blocks = []
    for s in steps:
        column = torch.cat([images[Cell(g, s)][p] for g in guidance])      # [G*K, R', R', 3]
        blocks.append(make_grid(column, len(guidance), column.shape[0] // len(guidance)))
    row_height = (blocks[0].shape[0] - 2) // len(guidance)                 # R' + the grid's pad.
    grid = labelled_grid(blocks, [steps_label(s) for s in steps], [f"guidance {g:g}" for g in guidance],
                         row_height, label_width=LABEL_WIDTH)
    return np.concatenate([caption_band(prompt, grid.shape[1], background=WHITE), grid])


# ----------------------------------------------------------------------------------------------
# Table.

def _fmt(value) -> str:
    return "–" if value is None else format(value, ".4g")


def _matrix(rows: list[dict], key: str, guidance: list[float], steps: list[int]) -> list[str]:
    """`key` as a markdown table: guidance down, steps across."""
    by_cell = {(r["guidance"], r["steps"]): r.get(key) for r in rows}
    lines = [f"| {key} | " + " | ".join(steps_label(s) for s in steps) + " |", "|---|" + "---:|" * len(steps)]
    lines += [f"| guidance {g:g} | " + " | ".join(_fmt(by_cell[g, s]) for s in steps) + " |" for g in guidance]
    return lines + [""]


def markdown_table(report: dict) -> str:
    rows, columns = report["cells"], [c for c in COLUMNS if c in report["cells"][0]]
    first = rows[0]
    lines = ["# DDPM guidance x steps sweep", "",
             f"- Checkpoint: `{report['checkpoint']}` ({first['checkpoint_kimg']:g} kimg, "
             f"{first['resolution']}x{first['resolution']})",
             f"- Sampler: DDIM, eta 0; {first['num']} images per cell, the same captions and seeds in every cell"]
    if first["feature_space"] is not None:
        lines.append(f"- FD/KID/precision/recall in {SPACES[first['feature_space']]} features (FD is biased upward at "
                     "small sample sizes: compare cells with each other, not with runs of another --num)")
    if "alignment" in first:
        lines.append("- Alignment: mean cosine of image and caption in the checkpoint's own contrastive model; "
                     f"R-precision among {first['r_precision_distractors'] + 1} captions")
    lines += ["", "| guidance | steps | " + " | ".join(columns) + " | ms/image |",
             "|---:|---:|" + "---:|" * (len(columns) + 1)]
    for r in rows:
        lines.append(f"| {r['guidance']:g} | {r['steps']} | " + " | ".join(_fmt(r.get(c)) for c in columns) +
                     f" | {1000 * r['sampling_seconds'] / r['num']:.3g} |")
    lines.append("")
    for key in ("fd", "alignment"):
        if key in columns:
            lines += _matrix(rows, key, report["guidance"], report["ddim_steps"])
    lines += ["Grids (rows = guidance, columns = steps, the same seeds everywhere):", ""]
    lines += [f"- `{name}`: {prompt}" for name, prompt in zip(report["grids"], report["prompts"])]
    return "\n".join(lines + ["", "Command:", "", "```", report["command"], "```", ""])


# ----------------------------------------------------------------------------------------------
# The sweep.

def sweep(args, argv: list[str]) -> dict:
    cfg = eval_config(args)
    try:
        args.out.mkdir(parents=True, exist_ok=True)     # Fail before the long part, not after it.
    except OSError as e:
        raise SystemExit(f"error: cannot create --out {args.out}: {e.strerror or e}") from None
    device = resolve_device(args.device)
    sampler = load_ddpm(args, device)
    dataset, _, default_prompts = open_dataset(args, sampler.train_resolution, verbose=not args.no_progress)
    prompts, seeds = args.prompts or default_prompts[:4], eval_seeds(args.samples_per_prompt, args.seed)
    rows, images, cache = [], {}, {}
    bar = tqdm(cells_of(args), desc="sweep", unit="cell", disable=args.no_progress, dynamic_ncols=True)
    for cell in bar:
        bar.set_postfix_str(f"guidance {cell.guidance:g}, {cell.steps} steps")
        cell_cfg = dataclasses.replace(cfg, options=cell.options())
        try:
            result = evaluate_sampler(sampler, dataset, cell_cfg, device, progress=False, cache=cache)
        except (ValueError, OSError) as e:     # swd on tiny images, an unreadable --inception.
            raise SystemExit(f"error: {e}") from None
        rows.append(result)     # Its guidance, steps and sampler are the options the sampler ran with.
        images[cell] = cell_images(sampler, cell, prompts, seeds)
    grids = [f"grid-{p:02d}.png" for p in range(len(prompts))]
    for p, (name, prompt) in enumerate(zip(grids, prompts)):
        save_png(args.out / name, prompt_grid(images, p, prompt, args.guidance_list, args.ddim_steps))
    report = {"checkpoint": str(args.checkpoint), "settings": config_to_dict(cfg), "guidance": args.guidance_list,
              "ddim_steps": args.ddim_steps, "cells": rows, "prompts": prompts, "grids": grids,
              "sample_seeds": seeds, "command": "python tools/sweep_ddpm.py " + shlex.join(argv)}
    (args.out / "table.md").write_text(markdown_table(json_safe(report)))
    write_json(args.out / "table.json", report)
    print(f"wrote {args.out}/table.md, table.json and {len(grids)} grids ({grids[0]}, ...)")
    return report


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    return run_reporting(sweep, args, argv)


if __name__ == "__main__":
    main()
