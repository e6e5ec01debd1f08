"""Does the generator draw what the caption says? Attribute accuracy on the demo scenes.

For every seen (shape, colour, size, position, background) combination of the demo dataset
(or a fixed random subset) and every held-out combination (a (shape, colour) pair never in
training), generate images from captions, classify each attribute with a classifier trained
on real demo images (`stylegan_t2i/metrics/attribute_classifier.py`), and report per-attribute
accuracy and all-five-right accuracy, seen and held-out separately, plus the Fréchet distance between
generated and real renders of the same combinations in the classifier's penultimate features
("FD_attr"; not FID: a 64-d feature space trained on this data, comparable only to itself).

    python benchmarks/quality_demo.py --checkpoint runs/00000-demo-64/network-final.pt --json q.json --grid q.png
    python benchmarks/quality_demo.py --real     # the ceiling: real renders as the "generator"
    python benchmarks/quality_demo.py --checkpoint CK --data_root datasets/demo-cyan-pink   # a variant set

The combinations are those of the classifier's scene set: the built-in one, or the variant set
(other shapes or colours, `SceneSet`) of the dataset in --data_root, which its classifier is
trained on. Each split's row also holds the all-five accuracy per shape and per colour
("by_value" in the JSON).
"""
from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from stylegan_t2i.data.demo_scenes import (
    BUILTIN,
    TEMPLATES,
    SceneSet,
    all_combinations,
    caption_for,
    render_scene,
)
from stylegan_t2i.distributed import resolve_device
from stylegan_t2i.images import make_grid, save_png, to_uint8
from stylegan_t2i.metrics.attribute_classifier import (
    ATTR_NAMES,
    AttributeClassifier,
    ClassifierConfig,
    accuracy_by_value,
    area_resize,
    attribute_accuracy,
    ensure_classifier,
    labels_of,
    num_classes,
    pil_to_img,
    render_real,
    with_jitter,
)
from stylegan_t2i.metrics.frechet import frechet_distance_from_features

# generate_fn(captions, seeds) -> img [len(captions), 3, R, R] in [-1, 1], image i from
# captions[i] and seeds[i] (the `sampler.sample` contract of stylegan_t2i.inference).
GenerateFn = Callable[[Sequence[str], Sequence[int]], torch.Tensor]
SPLITS = ("seen", "held_out")
_WORD = re.compile(r"[a-z]+")


def parse_caption(caption: str, scenes: SceneSet = BUILTIN) -> dict[str, str]:
    """The attributes a demo caption of `scenes` names: {attribute: value} for all five attributes.

    Every template names each attribute by its value word (position as "left"/"center"/"right"
    inside "on the left", "left side", ...), and no word is a value of two attributes, so a
    whole-word search is exact. Raises ValueError unless each attribute has exactly one value.
    """
    words = set(_WORD.findall(caption.lower()))
    attrs = {}
    for attr, values in scenes.attributes.items():
        found = [v for v in values if v in words]
        if len(found) != 1:
            raise ValueError(f"caption {caption!r}: expected one {attr} of {values}, found {found}")
        attrs[attr] = found[0]
    return attrs


def real_generator(render_res: int = 64, scenes: SceneSet = BUILTIN) -> GenerateFn:
    """The perfect generator: renders the scene each caption names at `render_res`, with the
    dataset's position/scale jitter drawn from the image's seed."""
    def generate(captions: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        combos = [with_jitter([parse_caption(c, scenes)], np.random.default_rng(int(s)))[0]
                  for c, s in zip(captions, seeds)]
        return pil_to_img([render_scene(c, render_res) for c in combos])
    return generate


def chance_accuracy(scenes: SceneSet = BUILTIN) -> dict[str, float]:
    """Accuracy of uniform guessing: 1/k per attribute, 1/prod(k) for all five."""
    counts = num_classes(scenes)
    out = {a: 1.0 / k for a, k in zip(ATTR_NAMES, counts)}
    out["all"] = float(1.0 / np.prod(counts))
    return out


def evaluation_combos(max_seen_combos: int, seed: int, scenes: SceneSet = BUILTIN) -> dict[str, list[dict]]:
    """{"seen": all seen combinations, or a fixed random subset of max_seen_combos (> 0) of them,
    "held_out": all held-out combinations}."""
    seen = all_combinations(held_out=False, scenes=scenes)
    if 0 < max_seen_combos < len(seen):
        keep = np.random.default_rng([seed, 2]).choice(len(seen), size=max_seen_combos, replace=False)
        seen = [seen[i] for i in sorted(keep)]
    return {"seen": seen, "held_out": all_combinations(held_out=True, scenes=scenes)}


def generate_and_classify(
    generate_fn:    GenerateFn,
    classifier:     AttributeClassifier,
    captions:       list[str],      # One per image.
    seeds:          list[int],      # One per image.
    batch_size:     int,            # Images per generate_fn call.
) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted labels [N, 5], penultimate features [N, F]) of the generated images, on CPU.

    Each batch is area-resized to the classifier's resolution as soon as it is made, so only
    the small images are kept.
    """
    preds, feats = [], []
    for i in range(0, len(captions), batch_size):
        img = generate_fn(captions[i:i + batch_size], seeds[i:i + batch_size])
        assert img.ndim == 4 and img.shape[:2] == (len(captions[i:i + batch_size]), 3), img.shape
        p, f = classifier.predict(area_resize(img.float(), classifier.cfg.resolution))
        preds.append(p)
        feats.append(f)
    return torch.cat(preds), torch.cat(feats)


def evaluate_generator(
    generate_fn:        GenerateFn,             # captions, seeds -> img [N, 3, R', R'] in [-1, 1].
    classifier:         AttributeClassifier,    # Trained on real demo images at `resolution`.
    resolution:         int,                    # Evaluation side (images are area-resized to it).
    num_per_combo:      int,                    # Generated images per attribute combination.
    seed:               int,                    # Image seeds are seed + image index.
    max_seen_combos:    int = 0,                # > 0: a fixed random subset of the seen combinations.
    render_res:         int = 64,               # Side of the real reference renders before resizing.
    batch_size:         int = 64,
) -> dict:
    """Per-attribute and all-attributes accuracy of generated images, seen vs held-out, and FD,
    over the combinations of the classifier's scene set.

    Image k of combination j is generated from template (j * num_per_combo + k) mod T, cycling
    through all T caption templates. Returns {"seen": row, "held_out": row, "fd_all": float,
    "chance": row, "scenes": {"shapes", "colours"}, ...} where a row is {attribute: accuracy,
    "all": accuracy, "n": images, "by_value": `accuracy_by_value`, "fd": FD_attr of the
    generated images vs as many real jittered renders of the same combinations (fresh draws,
    independent of the generator's seeds)}.
    """
    assert classifier.cfg.resolution == resolution, (classifier.cfg.resolution, resolution)
    scenes = classifier.cfg.scenes()
    result: dict = {"resolution": resolution, "num_per_combo": num_per_combo, "seed": seed,
                    "chance": chance_accuracy(scenes),
                    "scenes": {"shapes": list(scenes.shapes), "colours": list(scenes.colours)}}
    gen_feats, real_feats, offset = [], [], 0
    for split, combos in evaluation_combos(max_seen_combos, seed, scenes).items():
        targets = [c for c in combos for _ in range(num_per_combo)]
        captions = [caption_for(c, (offset + i) % len(TEMPLATES)) for i, c in enumerate(targets)]
        seeds = [seed + offset + i for i in range(len(targets))]
        pred, feats = generate_and_classify(generate_fn, classifier, captions, seeds, batch_size)
        real = render_real(with_jitter(targets, np.random.default_rng([seed, 1, offset])), render_res, resolution)
        _, feats_real = classifier.predict(real)
        labels = labels_of(targets, scenes)
        row = attribute_accuracy(pred, labels)
        row.update(n=len(targets), num_combos=len(combos), by_value=accuracy_by_value(pred, labels, scenes),
                   fd=frechet_distance_from_features(feats, feats_real))
        result[split] = row
        gen_feats.append(feats)
        real_feats.append(feats_real)
        offset += len(targets)
    result["fd_all"] = frechet_distance_from_features(torch.cat(gen_feats), torch.cat(real_feats))
    return result


def sample_grid(
    generate_fn:    GenerateFn,
    num_prompts:    int,        # Prompts per split (rows: seen first, then held-out).
    num_seeds:      int,        # Columns.
    seed:           int,
    scenes:         SceneSet = BUILTIN,
) -> tuple[np.ndarray, list[str]]:
    """A [H, W, 3] uint8 grid (rows = prompts, columns = seeds) and its row captions."""
    rng = np.random.default_rng([seed, 3])
    captions = []
    for split in SPLITS:
        combos = all_combinations(held_out=split == "held_out", scenes=scenes)
        for r, j in enumerate(rng.choice(len(combos), size=num_prompts, replace=False)):
            captions.append(caption_for(combos[j], r % len(TEMPLATES)))
    flat_captions = [c for c in captions for _ in range(num_seeds)]
    img = generate_fn(flat_captions, [seed + k for _ in captions for k in range(num_seeds)])
    return make_grid(to_uint8(img), rows=len(captions), cols=num_seeds), captions


def format_table(result: dict) -> str:
    """The result as a fixed-width table: rows seen / held-out / chance."""
    cols = [*ATTR_NAMES, "all"]
    lines = [f"{'':<10}" + "".join(f"{c:>11}" for c in cols) + f"{'n':>7}{'FD_attr':>10}"]
    for name, key in (("seen", "seen"), ("held-out", "held_out"), ("chance", "chance")):
        row = result[key]
        tail = f"{row['n']:>7}{row['fd']:>10.3f}" if "n" in row else ""
        lines.append(f"{name:<10}" + "".join(f"{row[c]:>11.3f}" for c in cols) + tail)
    lines.append(f"FD_attr (classifier features, seen + held-out vs real renders): {result['fd_all']:.3f}")
    return "\n".join(lines)


def checkpoint_generator(path: str, device: torch.device, options: dict) -> tuple[GenerateFn, int]:
    """(generate_fn, resolution) of a trained checkpoint through stylegan_t2i.inference;
    `options` are keywords of its sampler's `sample`, which checks them (see `sample_options`)."""
    from stylegan_t2i.checkpoint import CheckpointError
    from stylegan_t2i.inference import load_sampler
    try:
        sampler = load_sampler(path, device)
        sampler.options(**options)
    except (CheckpointError, ValueError) as e:
        raise SystemExit(str(e)) from None

    def generate(captions: Sequence[str], seeds: Sequence[int]) -> torch.Tensor:
        return sampler.sample(list(captions), list(seeds), **options).cpu()
    return generate, int(sampler.resolution)


def sample_options(args: argparse.Namespace) -> dict:
    """The sampling flags that were given; the loaded sampler fills in the rest and rejects the
    ones its kind does not take."""
    names = ("truncation", "steps", "sampler", "eta", "guidance")
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="generator checkpoint (gan or ddpm) to evaluate")
    src.add_argument("--real", action="store_true", help="evaluate real renders instead (the ~100%% ceiling)")
    p.add_argument("--device", default="auto",
                   help="'auto' (cuda if available; default), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--num_per_combo", type=int, default=4,
                   help="generated images per attribute combination (default: 4)")
    p.add_argument("--resolution", type=int, default=32,
                   help="evaluation side; images are area-resized to it (default: 32)")
    p.add_argument("--max_seen_combos", type=int, default=0,
                   help="evaluate a fixed random subset of this many seen combinations (default: 0 = all; 216 in "
                        "the built-in set)")
    p.add_argument("--seed", type=int, default=0,
                   help="base seed of images, subset and real references (default: 0)")
    p.add_argument("--truncation", type=float, help="GAN checkpoints: truncation psi (default: 1)")
    p.add_argument("--steps", type=int, help="DDPM checkpoints: denoising steps (default: 50)")
    p.add_argument("--sampler", choices=("ddim", "ddpm"),
                   help="DDPM checkpoints: 'ddim' or ancestral 'ddpm' (default: ddim)")
    p.add_argument("--eta", type=float,
                   help="DDPM checkpoints: DDIM eta, 0 deterministic, 1 = DDPM variance (default: 0)")
    p.add_argument("--guidance", type=float, help="DDPM checkpoints: classifier-free guidance scale (default: 3)")
    p.add_argument("--data_root", default=None,
                   help="demo dataset folder the classifier trains on (default: datasets/demo)")
    p.add_argument("--classifier", default=None,
                   help="classifier cache file (default: DATA_ROOT/attribute_classifier-RES.pt; trained when missing)")
    p.add_argument("--json", default=None, help="write the results to this JSON file")
    p.add_argument("--grid", default=None, help="write a PNG grid of samples for 4 seen and 4 held-out prompts")
    args = p.parse_args(argv)
    if args.num_per_combo < 1 or args.resolution < 8 or args.max_seen_combos < 0:
        raise SystemExit("--num_per_combo must be >= 1, --resolution >= 8 and --max_seen_combos >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    device = resolve_device(args.device)
    start = time.perf_counter()
    try:
        classifier, stats = ensure_classifier(args.data_root, ClassifierConfig(resolution=args.resolution),
                                              path=args.classifier, device=device)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    classifier_s = time.perf_counter() - start
    scenes = classifier.cfg.scenes()
    if args.real:
        generate_fn, gen_res = real_generator(scenes=scenes), 64
    else:
        generate_fn, gen_res = checkpoint_generator(args.checkpoint, device, sample_options(args))
    start = time.perf_counter()
    result = evaluate_generator(generate_fn, classifier, args.resolution, args.num_per_combo, args.seed,
                                max_seen_combos=args.max_seen_combos)
    eval_s = time.perf_counter() - start
    source = "real renders" if args.real else args.checkpoint
    print(f"Attribute accuracy of {source} ({gen_res}px, evaluated at {args.resolution}px, "
          f"{args.num_per_combo} per combination):")
    print(format_table(result))
    num_images = result["seen"]["n"] + result["held_out"]["n"]
    print(f"{num_images} images generated, classified and compared in {eval_s:.1f} s; "
          f"classifier ready in {classifier_s:.1f} s")
    report = {"source": "real" if args.real else "checkpoint", "checkpoint": args.checkpoint,
              "generator_resolution": gen_res, "results": result, "classifier": stats,
              "timing": {"classifier_s": classifier_s, "eval_s": eval_s, "num_images": num_images}}
    if args.grid:
        grid, captions = sample_grid(generate_fn, num_prompts=4, num_seeds=6, seed=args.seed, scenes=scenes)
        save_png(args.grid, grid)
        report["grid"] = {"path": args.grid, "rows": captions}
        print(f"Grid written to {args.grid}; rows 1-4 seen, 5-8 held-out: " + " | ".join(captions))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
