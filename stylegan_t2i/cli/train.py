"""Train a progressively grown, text-conditioned StyleGAN with WGAN-GP.

    python train_progan.py                                   # built-in demo data, CPU preset
    python train_progan.py --image_dir imgs --label_dir txt  # your captioned images
    python train_progan.py ... --resume auto                 # continue after any crash
    python train_progan.py --finetune CKPT --image_dir new --label_dir new  # adapt a trained model
    torchrun --nproc_per_node 2 train_progan.py ...          # data-parallel (--batch is global)
    stylegan-t2i-train ...                                   # the same, as the installed console command
    tensorboard --logdir runs
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

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
    NO_FLAG,
    flag_setting,
    run_entry_point,
    run_to_end,
    start_run,
    with_given_flags,
)
from stylegan_t2i.config import config_from_dict, config_to_dict
from stylegan_t2i.data import IndexOrder
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.gan.schedule import SCHEDULE_PRESETS, ProgressiveSchedule, ScheduleConfig
from stylegan_t2i.gan.trainer import GanTrainConfig, GanTrainer
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.critic import Critic, CriticConfig
from stylegan_t2i.models.generator import Generator, GeneratorConfig

# What the per-resolution tables of a preset hold, by the flag that replaces them with one value.
PER_RES = {"kimg_per_stage": "phase lengths", "batch": "batch sizes", "lr": "learning rates"}
# The flags that set GanTrainConfig fields of the same name.
TRAIN_FLAGS = ("n_critic", "align_weight", "negatives", "gp_interval", "seed", "snapshot_kimg")
# What a fine-tuned run takes from its checkpoint whatever the flags say.
FINETUNE_KEEPS = {dest: "the run keeps the checkpoint's networks and trains only at its final resolution"
                  for dest in ("preset", "kimg_per_stage")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(p, "GAN", snapshot_kimg=20.0)
    sched = p.add_argument_group("schedule")
    sched.add_argument("--preset", choices=sorted(SCHEDULE_PRESETS), default="cpu_demo",
                       help="schedule and network sizes (default: cpu_demo)")
    sched.add_argument("--max_res", type=int, help="final resolution, power of two (default: 32)")
    sched.add_argument("--total_kimg", type=float,
                       help=f"length of training in thousands of images (default: the preset's; {FINETUNE_KIMG:g} "
                            "with --finetune)")
    sched.add_argument("--kimg_per_stage", type=float,
                       help="thousands of images per fade-in and per stable phase of each resolution")
    sched.add_argument("--batch", type=int, help="minibatch size (global across processes)")
    sched.add_argument("--lr", type=float, help="Adam learning rate of G and D")
    sched.add_argument("--n_critic", type=int, default=1, help="critic steps per generator step (default: 1)")
    loss = p.add_argument_group("losses")
    loss.add_argument("--align_weight", type=float, default=GanTrainConfig.align_weight,
                      help="weight of the generator's image-caption alignment loss in the frozen contrastive "
                           f"encoder's space; 0 turns it off (default: {GanTrainConfig.align_weight:g})")
    loss.add_argument("--gp_interval", type=int, default=GanTrainConfig.gp_interval,
                      help="gradient penalty on every N-th critic step, weighted by N (lazy regularisation; "
                           f"1 = every step) (default: {GanTrainConfig.gp_interval})")
    loss.add_argument("--negatives", type=int, default=GanTrainConfig.negatives,
                      help="hard-negative captions per real image in the critic's matching term: those it "
                           f"scores highest of the {GanTrainConfig.negative_candidates} nearest captions "
                           f"(default: {GanTrainConfig.negatives})")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    if args.align_weight < 0 or args.negatives < 1 or args.gp_interval < 1:
        p.error("--align_weight must be >= 0, --negatives >= 1 and --gp_interval >= 1")
    args.given = given_flags(p, args, argv)
    check_finetune_arguments(args, FINETUNE_KEEPS)
    return args


def schedule_config(args) -> ScheduleConfig:
    return with_schedule_flags(SCHEDULE_PRESETS[args.preset](max_res=args.max_res or 32), args)


def with_schedule_flags(cfg: ScheduleConfig, args) -> ScheduleConfig:
    """`cfg` with what --total_kimg, --kimg_per_stage, --batch and --lr say, where given."""
    overrides = {}
    if args.total_kimg is not None:
        overrides["total_kimg"] = args.total_kimg
    if args.kimg_per_stage is not None:
        overrides.update(stable_kimg=args.kimg_per_stage, fade_kimg=args.kimg_per_stage, kimg_by_res=())
    if args.batch is not None:
        overrides.update(batch=args.batch, batch_by_res=())
    if args.lr is not None:
        overrides.update(lr=args.lr, lr_by_res=())
    return dataclasses.replace(cfg, **overrides)


def gan_trained_with(args, config: dict) -> dict[str, tuple[Any, str]]:
    """Flag dest -> (value, how to say it) that a `gan` checkpoint's configs were trained with."""
    sched = config_from_dict(ScheduleConfig, config["schedule"])
    train_cfg = config_from_dict(GanTrainConfig, config["train"])
    was = {"preset": _trained_preset(args.preset, sched), "max_res": flag_setting("max_res", sched.max_res)}
    for dest, value in _schedule_flags(sched).items():
        was[dest] = (flag_setting(dest, value) if value is not None
                     else (NO_FLAG, f"its preset's per-resolution {PER_RES[dest]}"))
    for dest in TRAIN_FLAGS:
        was[dest] = flag_setting(dest, getattr(train_cfg, dest))
    return was


def _schedule_flags(sched: ScheduleConfig) -> dict[str, Any]:
    """The --kimg_per_stage, --batch and --lr that give `sched`'s values, None where only a
    preset's per-resolution table does."""
    return {"kimg_per_stage": sched.stable_kimg if sched.stable_kimg == sched.fade_kimg and not sched.kimg_by_res
            else None,
            "batch": None if sched.batch_by_res else sched.batch,
            "lr": None if sched.lr_by_res else sched.lr}


def _trained_preset(name: str, sched: ScheduleConfig) -> tuple[Any, str]:
    """`--preset name` fits a checkpoint whose schedule it gives with some --max_res, --total_kimg,
    --kimg_per_stage, --batch and --lr (the run is then the same; a fine-tuned run's starts at its
    final resolution); else the first preset that does."""
    def gives(preset: str) -> bool:
        flags = argparse.Namespace(preset=preset, max_res=sched.max_res, total_kimg=sched.total_kimg,
                                   **_schedule_flags(sched))
        given = dataclasses.replace(schedule_config(flags), start_res=sched.start_res)
        return config_to_dict(given) == config_to_dict(sched)
    fits = [preset for preset in (name, *sorted(SCHEDULE_PRESETS)) if gives(preset)]
    return flag_setting("preset", fits[0]) if fits else (NO_FLAG, "a schedule that no --preset gives now")


def trained_configs(config: dict) -> tuple[GeneratorConfig, CriticConfig, ScheduleConfig, GanTrainConfig]:
    """The config dataclasses of a `gan` checkpoint's configs."""
    return (config_from_dict(GeneratorConfig, config["generator"]), config_from_dict(CriticConfig, config["critic"]),
            config_from_dict(ScheduleConfig, config["schedule"]), config_from_dict(GanTrainConfig, config["train"]))


def finetune_configs(args, config: dict) -> tuple[GeneratorConfig, CriticConfig, ScheduleConfig, GanTrainConfig]:
    """A fine-tuned run's configs: its checkpoint's networks; its schedule at the final resolution
    only (start_res = max_res: alpha = 1 from the first step, no regrowing) for --total_kimg
    (default FINETUNE_KIMG); its batch, lr and training settings unless their flags are given."""
    g_cfg, d_cfg, sched, train_cfg = trained_configs(config)
    sched_cfg = with_schedule_flags(dataclasses.replace(sched, start_res=sched.max_res, total_kimg=FINETUNE_KIMG), args)
    return g_cfg, d_cfg, sched_cfg, with_given_flags(train_cfg, args, TRAIN_FLAGS)


def build(args, resumed: dict | None, source: dict | None, text_dim: int):
    """Configs (saved with the run) and freshly initialised networks. A resumed run's come from
    its checkpoint (`check_resume_flags` has refused flags that say otherwise), a fine-tuned
    run's from `finetune_configs` (its weights are loaded into the trainer)."""
    if resumed is not None:
        g_cfg, d_cfg, sched_cfg, train_cfg = trained_configs(resumed["config"])
        if args.total_kimg is not None:  # the one setting a resumed run may change: run longer
            sched_cfg = dataclasses.replace(sched_cfg, total_kimg=args.total_kimg)
    elif source is not None:
        g_cfg, d_cfg, sched_cfg, train_cfg = finetune_configs(args, source["config"])
    else:
        sched_cfg = schedule_config(args)
        g_cfg, d_cfg = cpu_demo_configs(text_dim, max_res=sched_cfg.max_res)
        train_cfg = GanTrainConfig(n_critic=args.n_critic, seed=args.seed, snapshot_kimg=args.snapshot_kimg,
                                align_weight=args.align_weight, negatives=args.negatives,
                                gp_interval=args.gp_interval)
    torch.manual_seed(train_cfg.seed)
    configs = {"generator": config_to_dict(g_cfg), "critic": config_to_dict(d_cfg),
               "schedule": config_to_dict(sched_cfg), "train": config_to_dict(train_cfg)}
    return configs, Generator(g_cfg), Critic(d_cfg), sched_cfg, train_cfg


def train(args, dist: Distributed, device: torch.device) -> Path | None:
    resumed, source, dataset, prompts, run_dir, bundle = start_run(
        args, "gan", "", gan_trained_with, lambda c: c["schedule"]["max_res"], args.max_res or 32, dist, device)
    configs, G, D, sched_cfg, train_cfg = build(args, resumed, source, bundle.text_cfg.embed_dim)
    check_batches_split(dist, {sched_cfg.batch, *dict(sched_cfg.batch_by_res).values()})
    order = IndexOrder(len(dataset), seed=train_cfg.seed)
    trainer = GanTrainer(G, D, bundle, dataset, order, ProgressiveSchedule(sched_cfg), train_cfg,
                         run_dir, device, prompts, configs, dist=dist)
    return run_to_end(args, trainer, resumed, source, configs, dataset, run_dir, sched_cfg.total_kimg, prompts)


def main(argv=None) -> Path | None:
    return run_entry_point(train, parse_args(argv))


if __name__ == "__main__":
    main()
