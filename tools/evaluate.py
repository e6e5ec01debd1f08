"""Score a GAN or DDPM checkpoint against its dataset: FD, KID, SWD, precision/recall, alignment, IS.

    python tools/evaluate.py --checkpoint runs/00000-demo-32/network-final.pt          # demo data
    python tools/evaluate.py --checkpoint CK --image_dir imgs --label_dir txt --json eval.json
    python tools/evaluate.py --checkpoint DDPM.pt --steps 50 --guidance 3 --num 2000 --metrics fd,kid,align
    python tools/evaluate.py --checkpoint CK --inception pt_inception-2015-12-05-6726825d.pth  # FID
    python tools/evaluate.py --checkpoint CK --inception pt_inception-2015-12-05-6726825d.pth --metrics fd,is

Generated image i uses caption i (of dataset image i mod N) and seed `--seed`*1e6 + i, so two
checkpoints evaluated with the same flags see the same captions and noise seeds. FD/KID/PR are
in InceptionV3 space with --inception (FD is then FID), else in the checkpoint's own contrastive
image encoder's space; alignment always uses the checkpoint's own contrastive model. Numbers
in an encoder's space compare only between checkpoints that share that text encoder. IS (the
Inception Score of the generated images, mean +- std over 10 splits) is not in the default
metrics: it needs --inception, and --metrics is without it is an error.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

# Run as `python tools/evaluate.py`: make the repository root importable (package, datasets/, scripts).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stylegan_t2i.checkpoint import CheckpointError  # noqa: E402
from stylegan_t2i.config import config_to_dict  # noqa: E402
from stylegan_t2i.data import DatasetError  # noqa: E402
from stylegan_t2i.distributed import resolve_device  # noqa: E402
from stylegan_t2i.evaluation import (  # noqa: E402
    DEFAULT_METRICS,
    METRICS,
    EvalConfig,
    check_metrics,
    evaluate_sampler,
)
from stylegan_t2i.inference import DdpmOptions, GanOptions, load_sampler  # noqa: E402
from train_progan import check_data_arguments, open_dataset  # noqa: E402

DEFAULTS = EvalConfig()
# Flags passed through to the sampler, only when given: it fills in the rest and rejects
# the ones its kind does not take (--steps on a GAN checkpoint) with a one-line error.
SAMPLING_FLAGS = ("truncation", "guidance", "steps", "sampler", "eta")


def add_eval_arguments(p: argparse.ArgumentParser, num: int) -> None:
    """Data, metric and sampling flags shared with tools/compare.py."""
    data = p.add_argument_group("data (give both, or neither for the built-in demo dataset)")
    data.add_argument("--image_dir", type=Path, help="folder of images the checkpoint was trained on")
    data.add_argument("--label_dir", type=Path, help="folder of NAME.txt captions, one caption per line")
    p.set_defaults(xflip=False)     # open_dataset's flag; evaluation never flips.
    ev = p.add_argument_group("evaluation")
    ev.add_argument("--num", type=int, default=num, help=f"generated images, and real images (default: {num})")
    ev.add_argument("--metrics", default=",".join(DEFAULT_METRICS),
                    help=f"comma-separated subset of {','.join(METRICS)} (default: {','.join(DEFAULT_METRICS)}; "
                         "is, the Inception Score, needs --inception)")
    ev.add_argument("--inception", type=Path,
                    help="pytorch-fid InceptionV3 weights (pt_inception-2015-12-05-6726825d.pth): FD becomes "
                         "FID, and is can be scored; default: the checkpoint's own contrastive image encoder")
    ev.add_argument("--seed", type=int, default=0, help="fixes caption choice and noise seeds (default: 0)")
    ev.add_argument("--batch", type=int, default=DEFAULTS.batch, help=f"images per pass (default: {DEFAULTS.batch})")
    ev.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    ev.add_argument("--truncation", type=float,
                    help=f"GAN only: truncation psi, 1 = off (default: {GanOptions.truncation:g})")
    ev.add_argument("--guidance", type=float,
                    help=f"DDPM only: classifier-free guidance scale, 1 = off (default: {DdpmOptions.guidance:g})")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="gan or ddpm checkpoint to evaluate")
    p.add_argument("--json", type=Path, help="also write every figure and the settings to this JSON file")
    add_eval_arguments(p, num=DEFAULTS.num)
    diff = p.add_argument_group("diffusion (DDPM checkpoints only)")
    diff.add_argument("--steps", type=int, help=f"denoising steps (default: {DdpmOptions.steps})")
    diff.add_argument("--sampler", choices=("ddim", "ddpm"),
                      help=f"ddim (deterministic for --eta 0) or ddpm (ancestral) (default: {DdpmOptions.sampler})")
    diff.add_argument("--eta", type=float, help=f"DDIM eta (default: {DdpmOptions.eta:g})")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    return args


def given_options(args, names: tuple[str, ...] = SAMPLING_FLAGS) -> dict:
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


def format_table(r: dict) -> str:
    """The figures of one evaluation as aligned 'name  value' lines."""
    space = {"encoder": "contrastive-encoder features", "inception": "InceptionV3 features"}.get(r["feature_space"], "")
    rows = [("checkpoint", (f"{r.get('checkpoint', '')} ({r['kind']}, {r['checkpoint_kimg']:g} kimg, "
                            f"{r['resolution']}x{r['resolution']})")),
            ("images", f"{r['num']} (seed {r['seed']}), {r['images_per_second']:.3g} img/s")]
    if "fd" in r:
        rows.append(("fd", f"{r['fd']:.4g}   ({space})"))
    if "kid" in r:
        rows.append(("kid", f"{r['kid']:.4g} +- {r['kid_std']:.2g}"))
    if "is" in r:
        rows.append(("is", f"{r['is']:.4g} +- {r['is_std']:.2g}   (InceptionV3 classifier, std over splits)"))
    if "swd" in r:
        levels = ", ".join(f"{k}: {v:.4g}" for k, v in r["swd_levels"].items())
        rows.append(("swd x1e3", f"{r['swd']:.4g}   (per level {levels})"))
    if "precision" in r:
        rows += [("precision", f"{r['precision']:.4f}"), ("recall", f"{r['recall']:.4f}")]
    if "alignment" in r:
        rows += [("alignment", f"{r['alignment']:.4f}   (mean cosine, own contrastive model)"),
                 ("r_precision", f"{r['r_precision']:.4f}   (1 of {r['r_precision_distractors'] + 1} captions)")]
    return "\n".join(f"{name:<12} {value}" for name, value in rows)


def evaluate(args) -> dict:
    cfg = eval_config(args)
    device = resolve_device(args.device)
    sampler = load_sampler(args.checkpoint, device)
    sampler.batch = args.batch
    dataset, _, _ = open_dataset(args, sampler.train_resolution)
    try:
        result = evaluate_sampler(sampler, dataset, cfg, device)
    except (ValueError, OSError) as e:     # --steps on a GAN, swd on a 4x4 snapshot, an unreadable --inception.
        raise SystemExit(f"error: {e}") from None
    result = {"checkpoint": str(args.checkpoint), **result, "eval_config": config_to_dict(cfg)}
    print(format_table(result))
    if args.json is not None:
        print(f"wrote {write_json(args.json, result)}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    try:
        return evaluate(args)
    except (CheckpointError, DatasetError) as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
