"""Score a GAN or DDPM checkpoint against its dataset: FD, KID, SWD, precision/recall, alignment, IS.

    python tools/evaluate.py --checkpoint runs/00000-demo-32/network-final.pt          # demo data
    python tools/evaluate.py --checkpoint CK --image_dir imgs --label_dir txt --json eval.json
    python tools/evaluate.py --checkpoint DDPM.pt --steps 50 --guidance 3 --num 2000 --metrics fd,kid,align
    python tools/evaluate.py --checkpoint CK --inception pt_inception-2015-12-05-6726825d.pth  # FID
    python tools/evaluate.py --checkpoint CK --inception pt_inception-2015-12-05-6726825d.pth --metrics fd,is
    stylegan-t2i-evaluate --checkpoint CK                                              # installed console command

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
from pathlib import Path

from stylegan_t2i.cli.common import (
    add_eval_arguments,
    check_data_arguments,
    eval_config,
    open_dataset,
    run_reporting,
    write_json,
)
from stylegan_t2i.config import config_to_dict
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.evaluation import EvalConfig, evaluate_sampler
from stylegan_t2i.inference import DdpmOptions, load_sampler


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", type=Path, required=True, help="gan or ddpm checkpoint to evaluate")
    p.add_argument("--json", type=Path, help="also write every figure and the settings to this JSON file")
    add_eval_arguments(p, num=EvalConfig.num)
    diff = p.add_argument_group("diffusion (DDPM checkpoints only)")
    diff.add_argument("--steps", type=int, help=f"denoising steps (default: {DdpmOptions.steps})")
    diff.add_argument("--sampler", choices=("ddim", "ddpm"),
                      help=f"ddim (deterministic for --eta 0) or ddpm (ancestral) (default: {DdpmOptions.sampler})")
    diff.add_argument("--eta", type=float, help=f"DDIM eta (default: {DdpmOptions.eta:g})")
    args = p.parse_args(argv)
    check_data_arguments(p, args)
    return args


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
    dataset, _, _ = open_dataset(args, sampler.train_resolution, verbose=not args.no_progress)
    try:
        result = evaluate_sampler(sampler, dataset, cfg, device, progress=not args.no_progress)
    except (ValueError, OSError) as e:     # --steps on a GAN, swd on a 4x4 snapshot, an unreadable --inception.
        raise SystemExit(f"error: {e}") from None
    result = {"checkpoint": str(args.checkpoint), **result, "eval_config": config_to_dict(cfg)}
    print(format_table(result))
    if args.json is not None:
        print(f"wrote {write_json(args.json, result)}")
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    return run_reporting(evaluate, args)


if __name__ == "__main__":
    main()
