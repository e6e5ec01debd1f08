"""Run preparation and resume, shared by the training commands (train_progan.py and
tools/train_ddpm.py): the checkpoint to continue from, the checks that a resumed run goes on as
it was trained, the dataset, run directory and frozen text encoder, and the entry point that
joins a torchrun job and turns expected failures into one-line errors."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, load_newest_readable
from stylegan_t2i.cli.common import open_dataset
from stylegan_t2i.config import save_config_json
from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.distributed import Distributed, init_distributed, shutdown_distributed
from stylegan_t2i.run_dir import create_run_dir
from stylegan_t2i.run_log import RunLog
from stylegan_t2i.text.pretrain import (
    PretrainConfig,
    bundle_from_payload,
    load_text_encoder,
    pretrain_text_encoder,
    save_text_encoder,
)
from stylegan_t2i.training.faults import TrainingDiverged
from stylegan_t2i.training.interrupt import TrainingInterrupted
from stylegan_t2i.training.run_files import auto_resume_candidates


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


def prepare_run(args, resumed: dict | None, resume_path: Path | None, max_res: int, desc: str,
                dist: Distributed, device: torch.device):
    """Dataset, fixed prompts, run directory and frozen text encoder of a run. `--resume auto`
    continues in the checkpoint's own run directory."""
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
        print(f'done: {final}\nsample with: python generate.py --checkpoint {final} --text "{prompts[0]}"')
    return final


def run_entry_point(train_fn, args) -> Path | None:
    """Join the torchrun job (if any), train, turn expected failures into one-line errors."""
    dist, device = init_distributed(args.device)
    try:
        return train_fn(args, dist, device)
    except (DatasetError, CheckpointError, TrainingDiverged) as e:
        raise SystemExit(f"error: {e}") from None
    except TrainingInterrupted as e:     # The text encoder's pretraining, before the run's first step.
        raise SystemExit(str(e)) from None
    finally:
        shutdown_distributed()
