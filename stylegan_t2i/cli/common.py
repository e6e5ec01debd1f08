"""What several commands share: data flags and their checks, the built-in demo data, the flags
shared by the two trainers, evaluation flags, and strict JSON output."""
from __future__ import annotations

import argparse
import json
import math
import random
from pathlib import Path

from stylegan_t2i.checkpoint import CheckpointError
from stylegan_t2i.data import DatasetError, ImageLabelDataset
from stylegan_t2i.data.demo_scenes import (
    DEMO_DIR_ENV,
    all_combinations,
    caption_for,
    default_demo_root,
    demo_dataset_ready,
    ensure_demo_dataset,
)
from stylegan_t2i.distributed import Distributed
from stylegan_t2i.evaluation import DEFAULT_METRICS, METRICS, EvalConfig, check_metrics
from stylegan_t2i.inference import DdpmOptions, GanOptions
from stylegan_t2i.text.pretrain import PretrainConfig

DATA_GROUP = "data (give both, or neither for the built-in demo dataset)"
LABEL_HELP = "folder of NAME.txt captions, one caption per line"


# ----------------------------------------------------------------------------------------------
# Data.

def add_data_arguments(p: argparse.ArgumentParser, image_help: str):
    """--image_dir and --label_dir (Paths, both or neither); returns their group."""
    data = p.add_argument_group(DATA_GROUP)
    data.add_argument("--image_dir", type=Path, help=image_help)
    data.add_argument("--label_dir", type=Path, help=LABEL_HELP)
    return data


def check_data_arguments(p: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.image_dir is None) != (args.label_dir is None):
        p.error("give both --image_dir and --label_dir, or neither for the demo dataset")


def demo_data_dirs() -> tuple[Path, Path]:
    """(image_dir, label_dir) of the built-in demo dataset in `default_demo_root()` (datasets/demo
    in a clone, the user's cache folder for an installed package), generated on first use; an
    unwritable folder is a one-line error."""
    root = default_demo_root()
    if not demo_dataset_ready(root):
        print(f"generating the built-in demo dataset in {root} (once; ${DEMO_DIR_ENV} picks another folder)")
    try:
        return ensure_demo_dataset(root)
    except OSError as e:
        raise SystemExit(f"error: cannot write the demo dataset to {root}: {e.strerror or e}; set {DEMO_DIR_ENV} "
                         f"to a writable folder, or pass --image_dir and --label_dir") from None


def open_dataset(args, max_res: int, verbose: bool = True) -> tuple[ImageLabelDataset, str, list[str]]:
    """The dataset, a short name for the run directory, and the fixed prompts of the grids;
    `verbose`: the dataset's skip summary and image-cache progress bar."""
    if args.image_dir is None:
        image_dir, label_dir = demo_data_dirs()
        name = "demo"
    else:
        image_dir, label_dir, name = args.image_dir, args.label_dir, args.image_dir.resolve().name
    dataset = ImageLabelDataset(image_dir, label_dir, max_res, xflip=args.xflip, seed=args.seed, verbose=verbose)
    if args.image_dir is None:
        # A fixed random spread over every attribute: 6 seen and 2 held-out combinations.
        rng = random.Random(0)
        combos = rng.sample(all_combinations(held_out=False), 6) + rng.sample(all_combinations(held_out=True), 2)
        prompts = [caption_for(c) for c in combos]
    else:
        n = len(dataset)
        prompts = [dataset.captions[i * n // 8][0] for i in range(min(8, n))]
    return dataset, name, prompts


def check_batches_split(dist: Distributed, batches) -> None:
    """Every global batch must split evenly over the processes: say so now, not at the stage that uses it."""
    for batch in batches:
        try:
            dist.local_batch(batch)
        except ValueError as e:
            raise SystemExit(f"error: {e}") from None


# ----------------------------------------------------------------------------------------------
# The two trainers' flags.

def add_shared_arguments(p: argparse.ArgumentParser, model: str, snapshot_kimg: float):
    """The data and run flags that train_progan.py and tools/train_ddpm.py share; returns the
    'run' group so a trainer can add its own run flags to it."""
    data = add_data_arguments(p, "folder of images (sub-folders mirrored in --label_dir)")
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
    tune = p.add_argument_group("fine-tuning (a new run that starts from a trained checkpoint)")
    tune.add_argument("--finetune", type=Path, metavar="CKPT",
                      help=f"a new run that starts from this {model} checkpoint's networks and text encoder at "
                           "its final resolution (no regrowing), on this data; training settings not given (batch, "
                           "lr, losses, seed) are the checkpoint's; --max_res, if given, must be its resolution")
    tune.add_argument("--finetune_text_steps", type=int, default=0, metavar="N",
                      help="first re-tune the checkpoint's text encoder contrastively on this data's captions for "
                           "N steps (default: 0, keep it as trained)")
    return run


# Why --text_encoder and --text_encoder_steps do not go with --finetune.
FINETUNE_KEEPS_ENCODER = "the run keeps the checkpoint's text encoder (re-tune it with --finetune_text_steps N)"


def check_finetune_arguments(args: argparse.Namespace, refused: dict[str, str]) -> None:
    """--finetune starts a new run; --resume continues one. With --finetune, the flags in
    `refused` (dest -> why), --text_encoder and --text_encoder_steps are one-line errors, since
    the checkpoint decides those."""
    if args.finetune is None:
        if "finetune_text_steps" in args.given:
            raise SystemExit("error: --finetune_text_steps re-tunes the text encoder of a --finetune checkpoint; "
                             "give --finetune too")
        return
    if args.resume not in (None, "auto"):
        raise SystemExit("error: --finetune starts a new run and --resume PATH continues one; give one of them "
                         "(--finetune with --resume auto continues the newest run fine-tuned from that checkpoint, "
                         "or starts one)")
    if args.finetune_text_steps < 0:
        raise SystemExit(f"error: --finetune_text_steps must be >= 0, got {args.finetune_text_steps}")
    why = {"text_encoder": FINETUNE_KEEPS_ENCODER, "text_encoder_steps": FINETUNE_KEEPS_ENCODER, **refused}
    for dest, reason in why.items():
        if dest in args.given:
            raise SystemExit(f"error: --finetune: drop --{dest}; {reason}")


def given_flags(p: argparse.ArgumentParser, args: argparse.Namespace, argv) -> frozenset[str]:
    """The dests of the options on the command line, defaults aside: a resume refuses those that
    contradict its checkpoint. argparse fills in a default only where the namespace lacks the
    attribute, so parsing again into one that holds them all leaves the others unset."""
    unset = object()
    probe = p.parse_args(argv, namespace=argparse.Namespace(**{dest: unset for dest in vars(args)}))
    return frozenset(dest for dest, value in vars(probe).items() if value is not unset)


# ----------------------------------------------------------------------------------------------
# Evaluation flags (tools/evaluate.py, tools/compare.py, tools/sweep_ddpm.py).

# Flags passed through to the sampler, only when given: it fills in the rest and rejects
# the ones its kind does not take (--steps on a GAN checkpoint) with a one-line error.
EVAL_SAMPLING_FLAGS = ("truncation", "guidance", "steps", "sampler", "eta")


def add_eval_arguments(p: argparse.ArgumentParser, num: int, metrics: tuple[str, ...] = DEFAULT_METRICS,
                       sampling: bool = True) -> None:
    """Data, metric and sampling flags shared by tools/evaluate.py, tools/compare.py and
    tools/sweep_ddpm.py; `sampling=False` leaves out --truncation and --guidance, for a command
    that sets the sampling options itself."""
    add_data_arguments(p, "folder of images the checkpoint was trained on")
    p.set_defaults(xflip=False)     # open_dataset's flag; evaluation never flips.
    defaults = EvalConfig()
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--num", type=int, default=num, help=f"generated images, and real images (default: {num})")
    ev.add_argument("--metrics", default=",".join(metrics),
                    help=f"comma-separated subset of {','.join(METRICS)} (default: {','.join(metrics)}; "
                         "is, the Inception Score, needs --inception)")
    ev.add_argument("--inception", type=Path,
                    help="pytorch-fid InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth): FD becomes "
                         "FID, and is can be scored; default: the checkpoint's own contrastive image encoder")
    ev.add_argument("--seed", type=int, default=0, help="fixes caption choice and noise seeds (default: 0)")
    ev.add_argument("--batch", type=int, default=defaults.batch, help=f"images per pass (default: {defaults.batch})")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ev.add_argument("--no_progress", action="store_true",
                    help="hide the progress bars (image cache, sampling, scoring) and the dataset summary")
    if not sampling:
        return
    ev.add_argument("--truncation", type=float,
                    help=f"GAN only: truncation psi, 1 = off (default: {GanOptions.truncation:g})")
    ev.add_argument("--guidance", type=float,
                    help=f"DDPM only: classifier-free guidance scale, 1 = off (default: {DdpmOptions.guidance:g})")


def _number_list(text: str, convert, valid, what: str, example: str) -> list:
    """Comma-separated numbers, each valid and given once; else an argparse error naming the fix."""
    try:
        values = [convert(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or not all(valid(v) for v in values) or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"bad {what} list {text!r}: give {example}, each once")
    return values


def parse_steps(text: str) -> list[int]:
    """--ddim_steps: comma-separated step counts, each an integer >= 1."""
    return _number_list(text, int, lambda k: k >= 1, "step", "integers >= 1, e.g. 10,25,50")


def parse_guidance(text: str) -> list[float]:
    """A --guidance list: comma-separated finite scales >= 0 (0 = unconditional, 1 = no guidance)."""
    return _number_list(text, float, lambda g: math.isfinite(g) and g >= 0, "guidance",
                        "numbers >= 0, e.g. 1,3,5,7.5")


def given_options(args, names: tuple[str, ...] = EVAL_SAMPLING_FLAGS) -> dict:
    """The sampling flags among `names` that were given, as keywords of `sampler.sample`."""
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


def eval_config(args, **overrides) -> EvalConfig:
    """EvalConfig from the flags; a bad value (unknown metric, num too small) is a one-line error."""
    fields = {"num": args.num, "batch": args.batch, "seed": args.seed, "options": given_options(args),
              "inception": None if args.inception is None else str(args.inception)}
    try:
        metrics = check_metrics([m.strip() for m in args.metrics.split(",") if m.strip()])
        return EvalConfig(metrics=metrics, **{**fields, **overrides})
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


# ----------------------------------------------------------------------------------------------
# Output.

def json_safe(obj):
    """NaN/inf -> None (strict JSON), recursively."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def write_json(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(json_safe(data), indent=2, sort_keys=True) + "\n")
    return path


def run_reporting(command, *args):
    """`command(*args)` of an evaluation command (evaluate, compare, sweep), a checkpoint or
    dataset problem turned into a one-line error."""
    try:
        return command(*args)
    except (CheckpointError, DatasetError) as e:
        raise SystemExit(f"error: {e}") from None
