"""Pretrain the text encoder contrastively (CLIP-style) on captioned images.

    python tools/train_text_encoder.py                                   # the built-in demo scenes
    python tools/train_text_encoder.py --image_dir imgs --label_dir txt --steps 3000
    torchrun --nproc_per_node 2 tools/train_text_encoder.py ...          # data-parallel (--batch is global)
    stylegan-t2i-train-text-encoder ...                                  # installed console command

Writes runs/NNNNN-textenc-<dataset>-<res>/ with config.json, TensorBoard events, log.jsonl and
text_encoder.pt. On the demo dataset it then measures generalisation to the held-out
(shape, colour) pairs, which never occur in training:

  * retrieval accuracy: each caption of a held-out combination retrieves the nearest of the
    rendered images of all 270 combinations (seen + held-out); a hit needs all attributes equal;
  * ROC AUC of the alignment score for matching vs mismatched (caption, image) pairs.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np
import torch

from stylegan_t2i.cli.common import check_batches_split, demo_data_dirs
from stylegan_t2i.config import save_config_json
from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.data.demo_scenes import ATTRIBUTES, all_combinations, captions_for, render_scene
from stylegan_t2i.distributed import Distributed, distributed_session
from stylegan_t2i.images import from_uint8
from stylegan_t2i.run_dir import create_run_dir
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import (
    PretrainConfig,
    TextEncoderBundle,
    pretrain_text_encoder,
    retrieval_accuracy,
    roc_auc,
    save_text_encoder,
)
from stylegan_t2i.training.faults import TrainingDiverged
from stylegan_t2i.training.interrupt import TrainingInterrupted


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults = PretrainConfig()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--image_dir", default=None,
                   help="folder of images; with --label_dir. Omit both to use the built-in demo dataset "
                        "(generated on first use) and run the held-out evaluation")
    p.add_argument("--label_dir", default=None, help="folder of NAME.txt captions (one per line) matching --image_dir")
    p.add_argument("--out", default="runs", help="parent folder of run directories")
    p.add_argument("--resolution", type=int, default=defaults.resolution,
                   help="image size (power of 2) the image encoder sees; images are resized to it once")
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    p.add_argument("--batch", type=int, default=defaults.batch, help="(image, caption) pairs per step, global across processes")
    p.add_argument("--lr", type=float, default=defaults.lr, help="AdamW peak learning rate (warm-up, then cosine)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of the weights and of batch sampling")
    p.add_argument("--zoom_jitter", type=float, default=defaults.zoom_jitter,
                   help="the image tower sees each image zoomed about its centre by 1 +- U(this); 0 = off")
    p.add_argument("--device", default="auto", help="'auto' (cuda if available, else cpu), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--no_progress", action="store_true", help="hide the progress bar")
    args = p.parse_args(argv)
    if (args.image_dir is None) != (args.label_dir is None):
        raise SystemExit("give both --image_dir and --label_dir, or neither (for the demo dataset)")
    res = args.resolution
    if res < 8 or res & (res - 1):
        raise SystemExit(f"--resolution must be a power of 2 >= 8 (the image encoder halves it 3 times), got {res}")
    if not 0 <= args.zoom_jitter < 1:
        raise SystemExit(f"--zoom_jitter must be in [0, 1), got {args.zoom_jitter}")
    if args.steps < 1 or args.batch < 2:
        raise SystemExit(f"--steps must be >= 1 and --batch >= 2 (got {args.steps}, {args.batch})")
    return args


def evaluate_demo(bundle: TextEncoderBundle, resolution: int) -> dict[str, float]:
    """Held-out and seen-combination retrieval accuracy and alignment ROC AUC on rendered scenes."""
    held, seen = all_combinations(held_out=True), all_combinations(held_out=False)
    gallery = seen + held                                               # every combination, one image each
    img_u8 = torch.from_numpy(np.stack([np.asarray(render_scene(a, resolution)) for a in gallery]))
    img_emb = bundle.embed_images(from_uint8(img_u8.permute(0, 3, 1, 2)))
    results = {}
    for split, offset, combos in (("heldout", len(seen), held), ("seen", 0, seen)):
        captions = [c for a in combos for c in captions_for(a)]
        labels = torch.tensor([offset + i for i, a in enumerate(combos) for _ in captions_for(a)])
        txt_emb = bundle.embed_text(captions)
        results[f"Eval/{split}_retrieval"] = retrieval_accuracy(txt_emb, img_emb, labels, torch.arange(len(gallery)))
        sims = (txt_emb @ img_emb.t()).cpu()                            # (Q, G) cosine similarities
        match = torch.zeros_like(sims, dtype=torch.bool)
        match[torch.arange(len(labels)), labels] = True
        results[f"Eval/{split}_auc"] = roc_auc(sims[match], sims[~match])
        if split == "heldout":
            # Which attributes the retrieved image gets right: says what fails to generalise.
            nearest = sims.argmax(dim=1).tolist()
            for key in ATTRIBUTES:
                hits = [gallery[j][key] == gallery[i][key] for i, j in zip(labels.tolist(), nearest)]
                results[f"Eval/heldout_{key}"] = float(np.mean(hits))
    return results


def load_dataset(args: argparse.Namespace) -> tuple[ImageLabelDataset, str, bool]:
    """-> (dataset at --resolution, dataset name for the run directory, whether it is the demo)."""
    is_demo = args.image_dir is None
    if is_demo:
        image_dir, label_dir = demo_data_dirs()
    else:
        image_dir, label_dir = Path(args.image_dir), Path(args.label_dir)
    try:
        dataset = ImageLabelDataset(image_dir, label_dir, args.resolution, verbose=not args.no_progress)
    except (DatasetError, ValueError) as e:
        raise SystemExit(str(e)) from None
    return dataset, "demo" if is_demo else Path(image_dir).resolve().name, is_demo


def main(argv: list[str] | None = None) -> Path:
    """Train, save text_encoder.pt, evaluate on the demo data; returns the run directory."""
    args = parse_args(argv)
    with distributed_session(args.device) as (dist, device):
        try:
            return train(args, dist, device)
        except TrainingDiverged as e:
            raise SystemExit(f"error: {e}") from None
        except TrainingInterrupted as e:
            raise SystemExit(str(e)) from None


def train(args: argparse.Namespace, dist: Distributed, device: torch.device) -> Path:
    start = time.perf_counter()
    with dist.main_first():     # Rank 0 builds the image cache; the others then read it.
        dataset, name, is_demo = load_dataset(args)
    cfg = dataclasses.replace(PretrainConfig(), resolution=args.resolution, steps=args.steps, batch=args.batch,
                              lr=args.lr, seed=args.seed, zoom_jitter=args.zoom_jitter)
    check_batches_split(dist, [min(cfg.batch, len(dataset))])
    run_dir = dist.broadcast_object(create_run_dir(args.out, f"textenc-{name}-{args.resolution}")
                                    if dist.is_main else None, device)
    if dist.is_main:
        save_config_json(run_dir / "config.json", {"pretrain": cfg, "args": vars(args)})
    run_log = RunLog(run_dir, active=dist.is_main)
    try:
        bundle = pretrain_text_encoder(dataset, cfg, device, run_log, progress=not args.no_progress, dist=dist)
        if not dist.is_main:
            return run_dir
        path = save_text_encoder(run_dir / "text_encoder.pt", bundle, cfg)
        train_s = time.perf_counter() - start
        print(f"Saved {path} ({len(dataset)} images, vocab {bundle.tokenizer.vocab_size}, {train_s:.0f} s)")
        if is_demo:
            results = evaluate_demo(bundle, args.resolution)
            results["Time/total_s"] = time.perf_counter() - start
            run_log.scalars(cfg.steps * min(cfg.batch, len(dataset)), results, iteration=cfg.steps)
            print("\n".join(f"  {k:<26} {v:.4f}" for k, v in results.items()))
    finally:
        run_log.close()
    return run_dir


if __name__ == "__main__":
    main()
