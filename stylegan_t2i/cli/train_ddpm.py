"""Train the text-conditioned DDPM baseline (ε-prediction UNet, classifier-free guidance).

    python tools/train_ddpm.py                                   # built-in demo data, CPU-sized UNet
    python tools/train_ddpm.py --image_dir imgs --label_dir txt  # your captioned images
    python tools/train_ddpm.py ... --resume auto                 # continue after any crash
    python tools/train_ddpm.py --finetune CKPT --image_dir new --label_dir new  # adapt a trained UNet
    torchrun --nproc_per_node 2 tools/train_ddpm.py ...          # data-parallel (--batch is global)
    stylegan-t2i-ddpm ...                                        # the same, as the installed console command
    python generate.py --checkpoint runs/NNNNN-demo-ddpm-32/network-final.pt --text "..."

Same data, frozen text encoder, run directory, checkpoints and TensorBoard logs as
train_progan.py; a `--resume auto` passes over GAN runs that share --out.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from stylegan_t2i.cli.common import (
    add_shared_arguments,
    check_batches_split,
    check_data_arguments,
    check_finetune_arguments,
    given_flags,
)
from stylegan_t2i.cli.run_setup import (
    FINETUNE_KIMG,
    flag_setting,
    run_entry_point,
    run_to_end,
    start_run,
    with_given_flags,
)
from stylegan_t2i.config import config_from_dict, config_to_dict
from stylegan_t2i.data import IndexOrder
from stylegan_t2i.diffusion import SchedulerConfig, UNet, UNetConfig, cpu_demo_unet
from stylegan_t2i.diffusion.trainer import DdpmTrainConfig, DdpmTrainer
from stylegan_t2i.distributed import Distributed

DEFAULTS = DdpmTrainConfig()
# The flags that set DdpmTrainConfig fields of the same name.
TRAIN_FLAGS = ("batch", "lr", "p_uncond", "seed", "snapshot_kimg", "sample_steps")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    run = add_shared_arguments(p, "DDPM", snapshot_kimg=DEFAULTS.snapshot_kimg)
    run.add_argument("--sample_steps", type=int, default=DEFAULTS.sample_steps,
                     help=f"guided DDIM steps of those sample grids (default: {DEFAULTS.sample_steps})")
    train = p.add_argument_group("training (a resume refuses a change to these, except --total_kimg)")
    train.add_argument("--max_res", type=int, default=32,
                       help="image resolution, a power of two (default: 32; with --finetune, the checkpoint's)")
    train.add_argument("--total_kimg", type=float,
                       help=f"length of training in thousands of images (default: {DEFAULTS.total_kimg:g}; "
                            f"{FINETUNE_KIMG:g} with --finetune)")
    train.add_argument("--batch", type=int, default=DEFAULTS.batch, help=f"minibatch size, global across processes (default: {DEFAULTS.batch})")
    train.add_argument("--lr", type=float, default=DEFAULTS.lr, help=f"AdamW learning rate (default: {DEFAULTS.lr:g})")
    train.add_argument("--p_uncond", type=float, default=DEFAULTS.p_uncond,
                       help=f"probability of training on the empty caption, for guidance (default: {DEFAULTS.p_uncond:g})")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    if args.max_res < 4 or args.max_res & (args.max_res - 1):
        p.error(f"--max_res must be a power of two >= 4, got {args.max_res}")
    if args.batch < 1 or args.lr <= 0 or not 0 <= args.p_uncond <= 1 or args.sample_steps < 1:
        p.error("need --batch >= 1, --lr > 0, --p_uncond in [0, 1] and --sample_steps >= 1")
    args.given = given_flags(p, args, argv)
    check_finetune_arguments(args, {})
    return args


def trained_with(args, config: dict) -> dict:
    """Flag dest -> (value, how to say it) that a `ddpm` checkpoint's configs were trained with."""
    train_cfg = config_from_dict(DdpmTrainConfig, config["train"])
    was = {"max_res": flag_setting("max_res", config["unet"]["resolution"])}
    for dest in TRAIN_FLAGS:
        was[dest] = flag_setting(dest, getattr(train_cfg, dest))
    return was


def build(args, resumed: dict | None, source: dict | None,
          context_dim: int) -> tuple[dict, UNet, SchedulerConfig, DdpmTrainConfig]:
    """Configs (saved with the run) and a freshly initialised UNet. A resumed run's come from its
    checkpoint (`check_resume_flags` has refused flags that say otherwise); a fine-tuned run's
    too, for --total_kimg (default FINETUNE_KIMG) and with the training flags that are given
    (its weights are loaded into the trainer)."""
    if resumed is not None or source is not None:
        c = (resumed or source)["config"]
        unet_cfg, sched_cfg = config_from_dict(UNetConfig, c["unet"]), config_from_dict(SchedulerConfig, c["scheduler"])
        train_cfg = config_from_dict(DdpmTrainConfig, c["train"])
        if source is not None:
            train_cfg = with_given_flags(dataclasses.replace(train_cfg, total_kimg=FINETUNE_KIMG), args,
                                         ("total_kimg", *TRAIN_FLAGS))
        elif args.total_kimg is not None:  # The one setting a resumed run may change: run longer.
            train_cfg = dataclasses.replace(train_cfg, total_kimg=args.total_kimg)
    else:
        unet_cfg, sched_cfg = cpu_demo_unet(context_dim=context_dim, resolution=args.max_res), SchedulerConfig()
        train_cfg = DdpmTrainConfig(batch=args.batch, lr=args.lr, p_uncond=args.p_uncond, seed=args.seed,
                                    total_kimg=args.total_kimg or DEFAULTS.total_kimg,
                                    snapshot_kimg=args.snapshot_kimg, sample_steps=args.sample_steps)
    torch.manual_seed(train_cfg.seed)
    configs = {"unet": config_to_dict(unet_cfg), "scheduler": config_to_dict(sched_cfg),
               "train": config_to_dict(train_cfg)}
    return configs, UNet(unet_cfg), sched_cfg, train_cfg


def train(args, dist: Distributed, device: torch.device) -> Path | None:
    resumed, source, dataset, prompts, run_dir, bundle = start_run(
        args, "ddpm", "ddpm-", trained_with, lambda c: c["unet"]["resolution"], args.max_res, dist, device)
    # The UNet cross-attends to the encoder's token features [B, L, text_cfg.dim].
    configs, unet, sched_cfg, train_cfg = build(args, resumed, source, bundle.text_cfg.dim)
    check_batches_split(dist, [train_cfg.batch])
    order = IndexOrder(len(dataset), seed=train_cfg.seed)
    trainer = DdpmTrainer(unet, bundle, dataset, order, sched_cfg, train_cfg, run_dir, device, prompts, configs,
                          dist=dist)
    return run_to_end(args, trainer, resumed, source, configs, dataset, run_dir, train_cfg.total_kimg, prompts)


def main(argv=None) -> Path | None:
    return run_entry_point(train, parse_args(argv))


if __name__ == "__main__":
    main()
