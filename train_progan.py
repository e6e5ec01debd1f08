"""Train a progressively grown, text-conditioned StyleGAN with WGAN-GP.

    python train_progan.py                                   # built-in demo data, CPU preset
    python train_progan.py --image_dir imgs --label_dir txt  # your captioned images
    python train_progan.py ... --resume auto                 # continue after any crash
    torchrun --nproc_per_node 2 train_progan.py ...          # data-parallel (--batch is global)
    tensorboard --logdir runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import random
from pathlib import Path
from typing import Any, Callable

import torch

from datasets.demo_scenes import caption_for, ensure_demo_dataset, all_combinations
from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, load_newest_readable
from stylegan_t2i.config import config_from_dict, config_to_dict, save_config_json
from stylegan_t2i.data import DatasetError, ImageLabelDataset, InfiniteSampler
from stylegan_t2i.distributed import Distributed, init_distributed, shutdown_distributed
from stylegan_t2i.models import cpu_demo_configs
from stylegan_t2i.models.critic import Critic, CriticConfig
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.run_dir import create_run_dir
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import (PretrainConfig, bundle_from_payload, load_text_encoder,
                                        pretrain_text_encoder, save_text_encoder)
from stylegan_t2i.training.faults import TrainingDiverged
from stylegan_t2i.training.gan_trainer import GanTrainer, TrainConfig
from stylegan_t2i.training.run_files import auto_resume_candidates
from stylegan_t2i.training.schedule import SCHEDULE_PRESETS, ProgressiveSchedule, ScheduleConfig


def add_shared_arguments(p: argparse.ArgumentParser, model: str, snapshot_kimg: float):
    """The data and run flags that train_progan.py and tools/train_ddpm.py share; returns the
    'run' group so a trainer can add its own run flags to it."""
    data = p.add_argument_group("data (give both, or neither for the built-in demo dataset)")
    data.add_argument("--image_dir", type=Path, help="folder of images (sub-folders mirrored in --label_dir)")
    data.add_argument("--label_dir", type=Path, help="folder of NAME.txt captions, one caption per line")
    data.add_argument("--xflip", action="store_true",
                      help="random horizontal flips (off by default: captions may say left/right)")
    run = p.add_argument_group("run")
    run.add_argument("--out", type=Path, default=Path("runs"), help="parent of run directories (default: runs)")
    run.add_argument("--resume", default=None, metavar="auto|PATH",
                     help=f"'auto': continue the newest {model} run under --out from its newest checkpoint "
                          "(or start one if there is none); PATH: continue from that checkpoint")
    run.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    run.add_argument("--seed", type=int, default=0, help="seed of weights, noise and data order (default: 0)")
    run.add_argument("--snapshot_kimg", type=float, default=snapshot_kimg,
                     help=f"checkpoint + sample grid every N thousand images (default: {snapshot_kimg:g})")
    run.add_argument("--text_encoder", type=Path,
                     help="pretrained text encoder checkpoint (tools/train_text_encoder.py); "
                          "default: pretrain one on this data first")
    run.add_argument("--text_encoder_steps", type=int, default=PretrainConfig.steps,
                     help=f"steps of that pretraining when no --text_encoder is given (default: {PretrainConfig.steps})")
    return run


def check_data_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.image_dir is None) != (args.label_dir is None):
        p.error("give both --image_dir and --label_dir, or neither for the demo dataset")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_shared_arguments(p, "GAN", snapshot_kimg=20.0)
    sched = p.add_argument_group("schedule")
    sched.add_argument("--preset", choices=sorted(SCHEDULE_PRESETS), default="cpu_demo",
                       help="schedule and network sizes (default: cpu_demo)")
    sched.add_argument("--max_res", type=int, help="final resolution, power of two (default: 32)")
    sched.add_argument("--total_kimg", type=float, help="length of training in thousands of images")
    sched.add_argument("--kimg_per_stage", type=float,
                       help="thousands of images per fade-in and per stable phase of each resolution")
    sched.add_argument("--batch", type=int, help="minibatch size (global across processes)")
    sched.add_argument("--lr", type=float, help="Adam learning rate of G and D")
    sched.add_argument("--n_critic", type=int, default=1, help="critic steps per generator step (default: 1)")
    loss = p.add_argument_group("losses")
    loss.add_argument("--align_weight", type=float, default=TrainConfig.align_weight,
                      help="weight of the generator's image-caption alignment loss in the frozen contrastive "
                           f"encoder's space; 0 turns it off (default: {TrainConfig.align_weight:g})")
    loss.add_argument("--gp_interval", type=int, default=TrainConfig.gp_interval,
                      help="gradient penalty on every N-th critic step, weighted by N (lazy regularisation; "
                           f"1 = every step) (default: {TrainConfig.gp_interval})")
    loss.add_argument("--negatives", type=int, default=TrainConfig.negatives,
                      help="hard-negative captions scored against each real image in the critic's matching "
                           f"term (default: {TrainConfig.negatives})")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    if args.align_weight < 0 or args.negatives < 1 or args.gp_interval < 1:
        p.error("--align_weight must be >= 0, --negatives >= 1 and --gp_interval >= 1")
    args.given = given_flags(p, args, argv)
    return args


def given_flags(p: argparse.ArgumentParser, args: argparse.Namespace, argv) -> frozenset[str]:
    """The dests of the options on the command line, defaults aside: a resume refuses those that
    contradict its checkpoint. argparse fills in a default only where the namespace lacks the
    attribute, so parsing again into one that holds them all leaves the others unset."""
    unset = object()
    probe = p.parse_args(argv, namespace=argparse.Namespace(**{dest: unset for dest in vars(args)}))
    return frozenset(dest for dest, value in vars(probe).items() if value is not unset)


def schedule_config(args) -> ScheduleConfig:
    max_res = args.max_res or 32
    cfg = SCHEDULE_PRESETS[args.preset](max_res=max_res)
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


def open_dataset(args, max_res: int) -> tuple[ImageLabelDataset, str, list[str]]:
    """The dataset, a short name for the run directory, and the fixed prompts of the grids."""
    if args.image_dir is None:
        image_dir, label_dir = ensure_demo_dataset()
        name = "demo"
    else:
        image_dir, label_dir, name = args.image_dir, args.label_dir, args.image_dir.resolve().name
    dataset = ImageLabelDataset(image_dir, label_dir, max_res, xflip=args.xflip, seed=args.seed)
    if args.image_dir is None:
        # A fixed random spread over every attribute: 6 seen and 2 held-out combinations.
        rng = random.Random(0)
        combos = rng.sample(all_combinations(held_out=False), 6) + rng.sample(all_combinations(held_out=True), 2)
        prompts = [caption_for(c) for c in combos]
    else:
        n = len(dataset)
        prompts = [dataset.captions[i * n // 8][0] for i in range(min(8, n))]
    return dataset, name, prompts


def text_encoder_for(args, dataset, run_dir: Path, device, resumed: dict | None, dist: Distributed):
    if resumed is not None:
        return bundle_from_payload(resumed["text_encoder"]).to(device)
    if args.text_encoder is not None:
        return load_text_encoder(args.text_encoder).to(device)
    if dist.is_main:
        print("no --text_encoder given: pretraining one on this data (CLIP-style) first")
    # The image encoder halves its input three times, so it sees at least 8x8 (up-sampled if needed).
    pre_cfg = PretrainConfig(resolution=max(8, min(dataset.resolution, 32)), seed=args.seed,
                             steps=args.text_encoder_steps, warmup=min(100, args.text_encoder_steps // 4))
    log = RunLog(run_dir / "text_encoder", active=dist.is_main)
    bundle = pretrain_text_encoder(dataset, pre_cfg, device, run_log=log, dist=dist)
    log.close()
    if dist.is_main:
        save_text_encoder(run_dir / "text_encoder.pt", bundle, pre_cfg)
    return bundle.to(device)


def load_resume(args, kind: str, dist: Distributed, device: torch.device) -> tuple[dict | None, Path | None]:
    """The `kind` checkpoint to continue from (and its path), or (None, None) for a fresh run.

    Rank 0 reads it and sends it to the other ranks: every rank resumes from the same state,
    and other nodes need no copy of the file. (A failed read ends rank 0, and torchrun then
    stops the job.)"""
    def read() -> tuple[dict | None, Path | None]:
        if args.resume is None:
            return None, None
        if args.resume != "auto":           # The user named it: a corrupt file is an error.
            print(f"resuming from {args.resume}")
            return load_checkpoint(args.resume, kinds=kind), Path(args.resume)
        # A corrupt newest checkpoint (disk trouble) is renamed *.corrupt and the previous one used.
        found = load_newest_readable(auto_resume_candidates(args.out, kind),
                                     lambda path: load_checkpoint(path, kinds=kind))
        if found is None:
            print(f"--resume auto: no {kind} checkpoint under {args.out}; starting a new run")
            return None, None
        print(f"resuming from {found[1]}")
        return found
    return dist.broadcast_object(read() if dist.is_main else None, device)


# A setting no value of its flag gives (a preset's per-resolution table): every value differs.
NO_FLAG = object()
PER_RES = {"kimg_per_stage": "phase lengths", "batch": "batch sizes", "lr": "learning rates"}


def flag_setting(dest: str, value) -> tuple[Any, str]:
    """(value, how to say it) of a setting that the flag `--dest value` gives."""
    return value, f"--{dest} {_show(value)}"


def _show(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def check_resume_flags(args, resumed: dict | None, trained_with: Callable[[Any, dict], dict]) -> None:
    """A resumed run goes on as it was trained; only --total_kimg may change (docs/architecture.md,
    "Checkpoints"). A flag on the command line that says otherwise ends it with one line instead
    of being ignored. --xflip, which the dataset reads from the command line, is taken from the
    checkpoint when left out. `trained_with(args, config)`: flag dest -> `flag_setting` (or
    (NO_FLAG, what it was)) of what the checkpoint's configs were trained with."""
    if resumed is None:
        return
    config = resumed["config"]
    xflip = bool(config.get("data", {}).get("xflip", False))
    for dest, (value, shown) in {**trained_with(args, config), "xflip": flag_setting("xflip", xflip)}.items():
        given = getattr(args, dest)
        if dest not in args.given or given == value:
            continue
        if isinstance(given, bool):     # A store_true flag: given means on.
            why = f"the checkpoint was trained without --{dest}"
        else:
            said = _show(given) if shown.startswith(f"--{dest} ") else f"--{dest} {_show(given)}"
            why = f"the checkpoint was trained with {shown}, not {said}"
        raise SystemExit(f"error: --resume: {why}; drop the flag or start a new run")
    args.xflip = xflip
    check_resume_text_encoder(args, resumed)


def check_resume_text_encoder(args, resumed: dict) -> None:
    """A resumed run keeps the frozen encoder its checkpoint holds: --text_encoder may only name that one."""
    if "text_encoder" not in args.given:
        return
    named, held = load_text_encoder(args.text_encoder).model.state_dict(), resumed["text_encoder"]["model"]
    if named.keys() != held.keys() or not all(torch.equal(named[k], held[k]) for k in held):
        raise SystemExit(f"error: --resume: the checkpoint holds another text encoder than {args.text_encoder}; "
                         "drop the flag or start a new run")


def gan_trained_with(args, config: dict) -> dict[str, tuple[Any, str]]:
    """Flag dest -> (value, how to say it) that a `gan` checkpoint's configs were trained with."""
    sched = config_from_dict(ScheduleConfig, config["schedule"])
    train_cfg = config_from_dict(TrainConfig, config["train"])
    was = {"preset": _trained_preset(args.preset, sched), "max_res": flag_setting("max_res", sched.max_res)}
    for dest, value in _schedule_flags(sched).items():
        was[dest] = (flag_setting(dest, value) if value is not None
                     else (NO_FLAG, f"its preset's per-resolution {PER_RES[dest]}"))
    for dest in ("n_critic", "align_weight", "negatives", "gp_interval", "seed", "snapshot_kimg"):
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
    --kimg_per_stage, --batch and --lr (the run is then the same); else the first preset that does."""
    def gives(preset: str) -> bool:
        flags = argparse.Namespace(preset=preset, max_res=sched.max_res, total_kimg=sched.total_kimg,
                                   **_schedule_flags(sched))
        return config_to_dict(schedule_config(flags)) == config_to_dict(sched)
    fits = [preset for preset in (name, *sorted(SCHEDULE_PRESETS)) if gives(preset)]
    return flag_setting("preset", fits[0]) if fits else (NO_FLAG, "a schedule that no --preset gives now")


def build(args, resumed: dict | None, text_dim: int):
    """Configs (saved with the run) and freshly initialised networks. A resumed run's come from
    its checkpoint (`check_resume_flags` has refused flags that say otherwise)."""
    if resumed is not None:
        c = resumed["config"]
        g_cfg, d_cfg = config_from_dict(GeneratorConfig, c["generator"]), config_from_dict(CriticConfig, c["critic"])
        sched_cfg, train_cfg = config_from_dict(ScheduleConfig, c["schedule"]), config_from_dict(TrainConfig, c["train"])
        if args.total_kimg is not None:  # the one setting a resumed run may change: run longer
            sched_cfg = dataclasses.replace(sched_cfg, total_kimg=args.total_kimg)
    else:
        sched_cfg = schedule_config(args)
        g_cfg, d_cfg = cpu_demo_configs(text_dim, max_res=sched_cfg.max_res)
        train_cfg = TrainConfig(n_critic=args.n_critic, seed=args.seed, snapshot_kimg=args.snapshot_kimg,
                                align_weight=args.align_weight, negatives=args.negatives,
                                gp_interval=args.gp_interval)
    torch.manual_seed(train_cfg.seed)
    configs = {"generator": config_to_dict(g_cfg), "critic": config_to_dict(d_cfg),
               "schedule": config_to_dict(sched_cfg), "train": config_to_dict(train_cfg)}
    return configs, Generator(g_cfg), Critic(d_cfg), sched_cfg, train_cfg


def prepare_run(args, resumed: dict | None, resume_path: Path | None, max_res: int, desc: str,
                dist: Distributed, device: torch.device):
    """Dataset, fixed prompts, run directory and frozen text encoder of a run; shared with
    tools/train_ddpm.py. `--resume auto` continues in the checkpoint's own run directory."""
    with dist.main_first():     # Rank 0 builds the image cache; the others then read it.
        dataset, name, prompts = open_dataset(args, max_res)
    check_resume_data(args, resumed, dataset)
    if resumed is not None and args.resume == "auto":
        run_dir = resume_path.parent
    else:
        run_dir = dist.broadcast_object(create_run_dir(args.out, f"{name}-{desc}{max_res}") if dist.is_main
                                        else None, device)
    if dist.is_main:
        print(f"run directory: {run_dir}" + (f" ({dist.world_size} processes)" if dist.world_size > 1 else ""))
    bundle = text_encoder_for(args, dataset, run_dir, device, resumed, dist)
    return dataset, prompts, run_dir, bundle


def data_dirs(args) -> tuple[str, str]:
    """(image_dir, label_dir) as the run's config records them ("demo" for the built-in data)."""
    return str(args.image_dir or "demo"), str(args.label_dir or "demo")


def check_resume_data(args, resumed: dict | None, dataset: ImageLabelDataset) -> None:
    """A resumed run must see the data it was trained on: its checkpoint's fingerprint
    (`ImageLabelDataset.fingerprint`) against this data's. Checkpoints written before the
    fingerprint was saved resume unchecked."""
    saved = resumed["config"].get("data", {}) if resumed is not None else {}
    if "fingerprint" not in saved or saved["fingerprint"] == dataset.fingerprint():
        return
    def named(image_dir: str, label_dir: str, num: int, other: str = "") -> str:
        where = "the demo data" if image_dir == "demo" else f"image_dir {image_dir} and label_dir {label_dir}"
        return f"{where} ({num} images{other})"
    num = saved["fingerprint"]["num_images"]
    other = ", other file names" if num == len(dataset) else ""
    raise SystemExit(f"error: --resume: the checkpoint was trained on "
                     f"{named(saved['image_dir'], saved['label_dir'], num)}, not "
                     f"{named(*data_dirs(args), len(dataset), other)}; pass the same data or start a new run")


def record_data_config(args, configs: dict, dataset, run_dir: Path, dist: Distributed) -> None:
    image_dir, label_dir = data_dirs(args)
    configs["data"] = {"image_dir": image_dir, "label_dir": label_dir, "xflip": args.xflip,
                       "num_images": len(dataset), "fingerprint": dataset.fingerprint()}
    if dist.is_main:
        save_config_json(run_dir / "config.json", configs)


def run_to_end(trainer, resumed: dict | None, configs: dict, total_kimg: float, prompts: list[str]) -> Path | None:
    """Restore a resumed trainer (or log the config of a new run), train, say where the result is."""
    if resumed is not None:
        trainer.load_payload(resumed)
    else:
        trainer.log.text("Config", json.dumps(configs, indent=2))
    final = trainer.fit(total_kimg)
    if final is not None:
        print(f"done: {final}\nsample with: python generate.py --checkpoint {final} --text \"{prompts[0]}\"")
    return final


def train(args, dist: Distributed, device: torch.device) -> Path | None:
    resumed, resume_path = load_resume(args, "gan", dist, device)
    check_resume_flags(args, resumed, gan_trained_with)
    max_res = resumed["config"]["schedule"]["max_res"] if resumed else (args.max_res or 32)
    dataset, prompts, run_dir, bundle = prepare_run(args, resumed, resume_path, max_res, "", dist, device)
    configs, G, D, sched_cfg, train_cfg = build(args, resumed, bundle.text_cfg.embed_dim)
    check_batches_split(dist, {sched_cfg.batch, *dict(sched_cfg.batch_by_res).values()})
    record_data_config(args, configs, dataset, run_dir, dist)
    sampler = InfiniteSampler(len(dataset), seed=train_cfg.seed)
    trainer = GanTrainer(G, D, bundle, dataset, sampler, ProgressiveSchedule(sched_cfg), train_cfg,
                         run_dir, device, prompts, configs, dist=dist)
    return run_to_end(trainer, resumed, configs, sched_cfg.total_kimg, prompts)


def check_batches_split(dist: Distributed, batches) -> None:
    """Every global batch must split evenly over the processes: say so now, not at the stage that uses it."""
    for batch in batches:
        try:
            dist.local_batch(batch)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None


def run_entry_point(train_fn, args) -> Path | None:
    """Join the torchrun job (if any), train, turn expected failures into one-line errors."""
    dist, device = init_distributed(args.device)
    try:
        return train_fn(args, dist, device)
    except (DatasetError, CheckpointError, TrainingDiverged) as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        shutdown_distributed()


def main(argv=None) -> Path | None:
    return run_entry_point(train, parse_args(argv))


if __name__ == "__main__":
    main()
