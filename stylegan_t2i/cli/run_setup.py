"""Run preparation and resume, shared by the training commands (train_progan.py and
tools/train_ddpm.py): the checkpoint to continue from, the checks that a resumed run goes on as
it was trained, the dataset, run directory and frozen text encoder, the start of a fine-tuned
run (--finetune; docs/architecture.md, "Fine-tuning"), and the entry point that joins a
torchrun job and turns expected failures into one-line errors."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, load_newest_readable
from stylegan_t2i.cli.common import open_dataset
from stylegan_t2i.config import save_config_json
from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.distributed import Distributed, distributed_session
from stylegan_t2i.run_dir import create_run_dir, latest_run_dir, run_desc
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
from stylegan_t2i.training.run_files import auto_resume_candidates, run_checkpoints


def load_resume(args, kind: str, dist: Distributed, device: torch.device) -> tuple[dict | None, Path | None]:
    """The `kind` checkpoint to continue from (and its path), or (None, None) for a fresh run.

    Rank 0 reads it and sends it to the other ranks: every rank resumes from the same state,
    and other nodes need no copy of the file. (A failed read ends rank 0, and torchrun then
    stops the job.)"""
    def read() -> tuple[dict | None, Path | None]:
        if dist.max_restarts > 0 and args.resume != "auto":
            print("warning: torchrun --max-restarts without --resume auto: a restarted group starts this run "
                  "over; add --resume auto", file=sys.stderr)
        if args.resume is None:
            return None, None
        if args.resume != "auto":           # The user named it: a corrupt file is an error.
            print(f"resuming from {args.resume}")
            return load_checkpoint(args.resume, kinds=kind), Path(args.resume)
        candidates = auto_resume_candidates(args.out, kind)
        if args.finetune is not None:
            candidates = (path for path in candidates if finetuned_from(path.parent) == finetune_source(args))
        # A corrupt newest checkpoint (disk trouble) is renamed *.corrupt and the previous one used.
        found = load_newest_readable(candidates, lambda path: load_checkpoint(path, kinds=kind))
        if found is None:
            what = "fine-tuned from --finetune" if args.finetune is not None else "checkpoint"
            print(f"--resume auto: no {kind} {what} under {args.out}; starting a new run")
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


def prepare_run(args, resumed: dict | None, resume_path: Path | None, source: dict | None, max_res: int,
                desc: str, dist: Distributed, device: torch.device):
    """Dataset, fixed prompts, run directory (`run_directory`; `NNNNN-<data>-ft-<desc><res>` for a
    fine-tuned run) and frozen text encoder of a run (a fine-tuned run's: `finetune_text_encoder`)."""
    with dist.main_first():     # Rank 0 builds the image cache; the others then read it.
        dataset, name, prompts = open_dataset(args, max_res)
    check_resume_data(args, resumed, dataset)
    desc = f"{name}-{'ft-' if source is not None else ''}{desc}{max_res}"
    run_dir = dist.broadcast_object(run_directory(args, resume_path, desc) if dist.is_main else None, device)
    if dist.is_main:
        print(f"run directory: {run_dir}" + (f" ({dist.world_size} processes)" if dist.world_size > 1 else ""))
    if source is not None:
        bundle = finetune_text_encoder(args, source, dataset, run_dir, device, dist)
    else:
        bundle = text_encoder_for(args, dataset, run_dir, device, resumed, dist)
    return dataset, prompts, run_dir, bundle


def start_run(args, kind: str, desc: str, trained_with, max_res_of: Callable[[dict], int], default_res: int,
              dist: Distributed, device: torch.device):
    """What every training command does first: the checkpoint to resume (`load_resume`) or else
    the one to fine-tune from (`load_finetune`), their checks, then `prepare_run`. `max_res_of`
    reads the resolution from a checkpoint's configs. Returns (resumed, source, dataset,
    prompts, run_dir, text bundle); at most one of resumed and source is not None."""
    resumed, resume_path = load_resume(args, kind, dist, device)
    source = load_finetune(args, kind, dist, device) if resumed is None else None
    check_resume_flags(args, resumed, trained_with)
    trained = resumed or source
    max_res = max_res_of(trained["config"]) if trained else default_res
    check_finetune_resolution(args, source, max_res)
    dataset, prompts, run_dir, bundle = prepare_run(args, resumed, resume_path, source, max_res, desc, dist, device)
    return resumed, source, dataset, prompts, run_dir, bundle


def run_directory(args, resume_path: Path | None, desc: str) -> Path:
    """The run directory: with `--resume auto`, the resumed checkpoint's (`resume_path`) own; or,
    with nothing to resume, the newest run directory under --out if it is named `desc` and holds
    no checkpoint (its run died before the first one: a group that torchrun restarted, a crash),
    so one run keeps one directory however often it is restarted. Else a new one."""
    if args.resume == "auto":
        if resume_path is not None:
            return resume_path.parent
        newest = latest_run_dir(args.out)
        if newest is not None and run_desc(newest) == desc and not run_checkpoints(newest):
            print(f"--resume auto: {newest} has no checkpoint yet; starting its run over there")
            return newest
    return create_run_dir(args.out, desc)


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


def run_to_end(args, trainer, resumed: dict | None, source: dict | None, configs: dict, dataset, run_dir: Path,
               total_kimg: float, prompts: list[str]) -> Path | None:
    """Start a fine-tuned trainer's networks from its checkpoint (`load_finetune_weights`), write
    config.json with the fine-tune and data records, restore a resumed trainer (or log the config
    of a new run), train, say where the result is."""
    record_finetune(args, configs, source, resumed, load_finetune_weights(trainer, source, args.finetune))
    record_data_config(args, configs, dataset, run_dir, trainer.dist)
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
    with distributed_session(args.device) as (dist, device):
        try:
            return train_fn(args, dist, device)
        except (DatasetError, CheckpointError, TrainingDiverged) as e:
            raise SystemExit(f"error: {e}") from None
        except TrainingInterrupted as e:     # The text encoder's pretraining, before the run's first step.
            raise SystemExit(str(e)) from None


# ----------------------------------------------------------------------------------------------
# Fine-tuning (--finetune): a new run that starts from a trained checkpoint.

# Length of a fine-tuned run when --total_kimg is not given: about 6 CPU-minutes of the demo
# GAN at 32 px (54 img/s on 2 cores).
FINETUNE_KIMG = 20.0
# The re-tuning's peak learning rate: a tenth of pretraining's, since it starts from trained
# weights that the networks were trained to read.
RETUNE_LR = PretrainConfig.lr / 10


def load_finetune(args, kind: str, dist: Distributed, device: torch.device) -> dict | None:
    """The `kind` checkpoint that --finetune names (None without the flag). Rank 0 reads it and
    sends it to the other ranks, as `load_resume` does. A missing, corrupt or other-kind file is
    a one-line error."""
    if args.finetune is None:
        return None

    def read() -> dict:
        try:
            source = load_checkpoint(args.finetune, kinds=kind)
        except CheckpointError as e:
            raise SystemExit(f"error: --finetune: {e}") from None
        missing = [key for key in ("config", "progress", "text_encoder") if key not in source]
        if missing:
            raise SystemExit(f"error: --finetune: {args.finetune} holds no {', '.join(missing)}; "
                             f"pass a checkpoint written by training or tools/export_generator.py")
        print(f"fine-tuning from {args.finetune} ({kind}, {source['progress']['nimg'] / 1000:g} kimg)")
        return source
    return dist.broadcast_object(read() if dist.is_main else None, device)


def finetune_source(args) -> str:
    """The --finetune checkpoint as a fine-tuned run's config records it (`record_finetune`)."""
    return str(Path(args.finetune).resolve())


def finetuned_from(run_dir: Path) -> str | None:
    """The checkpoint the run in `run_dir` was fine-tuned from, by its config.json (None: not a
    fine-tuned run, or no readable config)."""
    try:
        return json.loads((run_dir / "config.json").read_text()).get("finetune", {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None


def check_finetune_resolution(args, source: dict | None, max_res: int) -> None:
    """A fine-tuned run keeps its checkpoint's resolution: --max_res left out takes it, and a
    given other value is a one-line error (the networks have no blocks for another size)."""
    if source is not None and "max_res" in args.given and args.max_res != max_res:
        raise SystemExit(f"error: --finetune: the checkpoint is {max_res} px and a fine-tuned run keeps its "
                         f"resolution, not --max_res {args.max_res}; drop the flag")


def with_given_flags(cfg, args, dests):
    """The config dataclass `cfg` with the flags among `dests` that were given in place of its
    values: a fine-tuned run trains as its checkpoint was trained unless told otherwise."""
    return dataclasses.replace(cfg, **{dest: getattr(args, dest) for dest in dests if dest in args.given})


def finetune_text_encoder(args, source: dict, dataset, run_dir: Path, device, dist: Distributed):
    """The checkpoint's text encoder with its tokenizer: sentencepiece spells a word it never saw
    with the sub-pieces it has, so new captions encode as they are. With --finetune_text_steps N
    it is first re-tuned contrastively on this data (`pretrain_text_encoder` from it, saved as
    the run's text_encoder.pt); the networks then start from embeddings that have moved."""
    bundle = bundle_from_payload(source["text_encoder"])
    steps = args.finetune_text_steps
    if steps == 0:
        return bundle.to(device)
    if dist.is_main:
        print(f"re-tuning the checkpoint's text encoder on this data for {steps} steps first")
    pre_cfg = PretrainConfig(resolution=bundle.image_cfg.resolution, max_len=bundle.tokenizer.max_len,
                             seed=args.seed, steps=steps, warmup=min(100, steps // 4), lr=RETUNE_LR)
    log = RunLog(run_dir / "text_encoder", active=dist.is_main)
    bundle = pretrain_text_encoder(dataset, pre_cfg, device, run_log=log, dist=dist, start=bundle)
    log.close()
    if dist.is_main:
        save_text_encoder(run_dir / "text_encoder.pt", bundle, pre_cfg)
    return bundle.to(device)


def load_finetune_weights(trainer, source: dict | None, path: Path | None) -> dict[str, str]:
    """Start the trainer's networks from the checkpoint's (strict loads); returns network key ->
    the checkpoint entry it started from, or "fresh".

    A generation-only export (tools/export_generator.py) holds only the EMA network: the trained
    network starts from it too, and a network it holds nothing for (the GAN's critic) starts
    freshly initialised, said on the console.

    The optimizers always start fresh. Adam's moments estimate the gradients of the old data at
    the old schedule's learning rate, and kept they would steer the first steps on the new data;
    a new run restarts Adam's step count, whose bias correction assumes moments that start at
    zero; the GAN's beta1 = 0 keeps no first moment and its beta2 = 0.99 forgets the second in a
    few hundred steps, so little is lost; and an export holds no optimizer at all."""
    if source is None:
        return {}
    ema, net = trainer.ema_networks()
    modules = {key: obj for key, obj in trainer.checkpointed().items() if isinstance(obj, torch.nn.Module)}
    ema_key, net_key = (next(key for key, obj in modules.items() if obj is which) for which in (ema, net))
    other = {net_key: ema_key, ema_key: net_key}
    started = {}
    for key, module in modules.items():
        name = next((k for k in (key, other.get(key)) if k is not None and k in source), None)
        if name is None:
            if trainer.dist.is_main:
                print(f"--finetune: {path} holds no {key} (a generation-only export); it starts freshly initialised")
            started[key] = "fresh"
            continue
        try:
            module.load_state_dict(source[name])
        except RuntimeError as e:
            raise SystemExit(f"error: --finetune: {path}: its {name} does not fit the networks of its own config "
                             f"({str(e).strip().splitlines()[0]})") from None
        started[key] = name
    return started


def record_finetune(args, configs: dict, source: dict | None, resumed: dict | None, started: dict[str, str]) -> None:
    """configs["finetune"] (config.json and every checkpoint's config): where a fine-tuned run
    started; its resumes keep the record."""
    if source is not None:
        record = {"path": finetune_source(args), "kind": source["kind"],
                  "kimg": source["progress"]["nimg"] / 1000, "networks": started,
                  "text_steps": args.finetune_text_steps}
        if "data" in source["config"]:
            record["data"] = {key: source["config"]["data"][key] for key in ("image_dir", "label_dir", "num_images")}
        if "finetune" in source["config"]:     # A fine-tune of a fine-tune: the chain back to the first run.
            record["from"] = source["config"]["finetune"]
        configs["finetune"] = record
    elif resumed is not None and "finetune" in resumed["config"]:
        configs["finetune"] = resumed["config"]["finetune"]
