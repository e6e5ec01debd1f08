"""Evaluate a sampler (GAN or DDPM checkpoint) against a captioned dataset.

    sampler = load_sampler("runs/.../network-final.pt", device)
    result = evaluate_sampler(sampler, dataset, EvalConfig(num=10_000), device)
    result["fd"], result["kid"], result["precision"], result["alignment"], ...

What is compared (docs/architecture.md, "What is measured"):
- generated image i comes from caption `eval_captions(...)[i]` and seed `eval_seeds(...)[i]`,
  both fixed by (dataset, cfg.num, cfg.seed) alone, so two checkpoints evaluated with the same
  config see identical captions and seeds;
- the real set is the first `num` dataset images (cycling when the dataset is smaller) at the
  sampler's resolution, area down-sampled from the dataset's own resolution like the
  training images were;
- FD / KID / precision-recall use InceptionV3 pool3 features when `cfg.inception` names its
  weights file (then FD is FID), else the sampler's own contrastive image encoder (numbers
  then comparable only between checkpoints that share that encoder); `feature_space` in the
  result says which;
- IS (the Inception Score; opt-in, not in DEFAULT_METRICS) needs `cfg.inception`: it scores
  the generated images alone with the InceptionV3 classifier, whose logits are a linear map of
  the same pool3 features FID uses, so the generated images go through InceptionV3 once;
- SWD needs no network (ProGAN's Laplacian-pyramid patches);
- alignment (mean cosine, R-precision) always uses the sampler's own contrastive model: it is
  comparable between two checkpoints only when they share the text encoder.
"""
from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stylegan_t2i.images import from_uint8, to_uint8
from stylegan_t2i.measure import sync
from stylegan_t2i.metrics import (
    embed_images_and_captions,
    extract_features,
    frechet_distance_from_features,
    inception_score,
    kernel_inception_distance,
    make_feature_extractor,
    mean_cosine_alignment,
    precision_recall,
    r_precision,
    sliced_wasserstein_distance,
)

METRICS = ("fd", "kid", "swd", "pr", "align", "is")
DEFAULT_METRICS = METRICS[:5]   # Every metric but IS, which exists only with InceptionV3 weights.
SEED_STRIDE = 1_000_000     # Image i of an evaluation with seed s uses noise seed s * SEED_STRIDE + i.
SWD_PATCH = 7               # ProGAN's SWD neighbourhood side: the smallest resolution it can measure.


def check_metrics(names: Sequence[str]) -> tuple[str, ...]:
    """Validate metric names (order kept, duplicates dropped); ValueError lists the valid ones."""
    bad = [n for n in names if n not in METRICS]
    if bad or not names:
        raise ValueError(f"unknown metric(s) {', '.join(bad) or '(none given)'}; choose from {','.join(METRICS)}")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class EvalConfig:
    num:            int = 10_000            # Generated images, and real images they are compared with.
    metrics:        tuple[str, ...] = DEFAULT_METRICS   # Any of METRICS ('is' needs `inception`).
    batch:          int = 64                # Images per sampler call and per feature pass.
    seed:           int = 0                 # Fixes the caption choice and the noise seeds.
    options:        dict[str, Any] = field(default_factory=dict)   # sampler.sample's keywords; it checks them.
    inception:      str | None = None       # InceptionV3 (pytorch-fid) weights file; None: encoder space.
    kid_subsets:    int = 100               # KID: random subset pairs (Binkowski et al.: 100) ...
    kid_subset_size: int = 1000             # ... of this many images (clipped to num).
    pr_k:           int = 3                 # Precision/recall k-NN radius (Kynkaanniemi et al.: 3).
    is_splits:      int = 10                # IS: contiguous parts scored apart (Salimans et al.: 10).
    r_precision_distractors: int = 99       # R-precision: mismatched captions per image (clipped to num - 1).

    def __post_init__(self) -> None:
        check_metrics(self.metrics)
        if self.num < 2 or self.batch < 1:
            raise ValueError(f"need num >= 2 and batch >= 1 (got {self.num}, {self.batch})")
        if "is" in self.metrics and self.inception is None:
            raise ValueError("metric 'is' (Inception Score) needs the InceptionV3 classifier: give its weights "
                             "(--inception pt_inception-2015-12-05-6726825d.pth) or leave 'is' out of the metrics")
        if "is" in self.metrics and not 1 <= self.is_splits <= self.num:
            raise ValueError(f"metric 'is' with is_splits={self.is_splits} needs 1 <= is_splits <= num, "
                             f"got num={self.num}")
        if "pr" in self.metrics and self.num <= self.pr_k:
            raise ValueError(f"precision/recall with k={self.pr_k} needs num > {self.pr_k}, got {self.num}")


def eval_captions(
    captions:   Sequence[Sequence[str]],    # The dataset's captions: all captions of each image.
    num:        int,                        # Evaluation items.
    seed:       int,                        # Which of an image's captions each item uses.
) -> list[str]:
    """Item i -> one caption of image i mod len(captions), drawn from a generator seeded by
    `seed` (per item, so a cycled image gets a fresh draw). Same arguments, same list."""
    rng = np.random.default_rng(seed)
    picks = rng.random(num)                 # One uniform per item: index = floor(u * count).
    out = []
    for i in range(num):
        options = captions[i % len(captions)]
        out.append(options[min(int(picks[i] * len(options)), len(options) - 1)])
    return out


def eval_seeds(num: int, seed: int) -> list[int]:
    """Noise seed of item i: seed * SEED_STRIDE + i (disjoint ranges for seeds < SEED_STRIDE items)."""
    return [seed * SEED_STRIDE + i for i in range(num)]


def real_images_u8(
    dataset:    Any,            # ImageLabelDataset (images at dataset.resolution >= res).
    res:        int,            # Resolution of the real set.
    num:        int,            # Images; the dataset is cycled when it is smaller.
) -> torch.Tensor:
    """img_u8 [num, 3, res, res]: dataset image i mod len(dataset), area down-sampled to res."""
    images = dataset.view(res).images
    return images[torch.arange(num) % images.shape[0]]


def generate_u8(
    sampler:    Any,                # An inference.Sampler (or anything with .sample).
    captions:   Sequence[str],      # N captions.
    seeds:      Sequence[int],      # N seeds.
    cfg:        EvalConfig,
    progress:   bool = True,
) -> tuple[torch.Tensor, float]:
    """(img_u8 [N, 3, R, R] on the CPU, seconds spent inside `sampler.sample`).

    Images are kept as uint8, as a saved PNG would be (the metrics quantise to 8 bits anyway),
    which holds 10k images at 256^2 in 2 GB rather than 8."""
    out, seconds = [], 0.0
    with tqdm(total=len(seeds), desc=f"generating ({sampler.kind})", unit="img", disable=not progress) as bar:
        for i in range(0, len(seeds), cfg.batch):
            start = time.perf_counter()
            img = sampler.sample(list(captions[i:i + cfg.batch]), list(seeds[i:i + cfg.batch]), **cfg.options)
            sync(img.device)
            seconds += time.perf_counter() - start
            out.append(to_uint8(img).permute(0, 3, 1, 2))     # [n, H, W, 3] -> [n, 3, H, W]
            bar.update(img.shape[0])
    return torch.cat(out), seconds


def module_fingerprint(module: torch.nn.Module) -> str:
    """Content hash of a module's state (names and bytes): equal for identical weights. Two
    checkpoints share cached real features only when their image encoders' hashes agree."""
    h = hashlib.sha1()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _extractor(cfg: EvalConfig, bundle: Any, device, cache: dict):
    """InceptionV3 (loaded once per cache) when cfg.inception is set, else the bundle's image encoder."""
    if cfg.inception is None:
        return make_feature_extractor(None, bundle, device)
    if ("inception", cfg.inception) not in cache:
        cache["inception", cfg.inception] = make_feature_extractor(cfg.inception, None, device)
    return cache["inception", cfg.inception]


def _real_features(extractor, bundle, real_u8, cfg, device, progress, cache) -> torch.Tensor:
    """Features of the real set, memoised in `cache` by (feature space, resolution, num)."""
    if cfg.inception is not None:
        space = f"inception:{cfg.inception}"
    else:
        space = f"encoder:{module_fingerprint(bundle.model.image_encoder)}"
    key = ("features", space, real_u8.shape[-1], real_u8.shape[0])
    if key not in cache:
        cache[key] = extract_features(extractor, real_u8.split(cfg.batch), cfg.batch, device, progress,
                                      total=real_u8.shape[0])
    return cache[key]


def _distribution_metrics(real_f: torch.Tensor, fake_f: torch.Tensor, cfg: EvalConfig, device) -> dict:
    """FD, KID (mean, std over subsets) and precision/recall, as requested, in one feature space."""
    out: dict[str, Any] = {}
    if "fd" in cfg.metrics:
        out["fd"] = frechet_distance_from_features(real_f, fake_f)
    if "kid" in cfg.metrics:
        out["kid"], out["kid_std"] = kernel_inception_distance(
            real_f, fake_f, num_subsets=cfg.kid_subsets, subset_size=cfg.kid_subset_size, seed=cfg.seed)
    if "pr" in cfg.metrics:
        out["precision"], out["recall"] = precision_recall(real_f, fake_f, k=cfg.pr_k, device=device)
    return out


@torch.no_grad()
def _inception_score(inception: Any, fake_pool3: torch.Tensor, cfg: EvalConfig) -> dict:
    """IS (mean, std over cfg.is_splits parts) from the generated images' pool3 features [N, 2048]."""
    logits = inception.logits(fake_pool3.to(inception.fc.weight.device))      # [N, 1008]
    mean, std = inception_score(logits, splits=cfg.is_splits)
    return {"is": mean, "is_std": std}


def _swd(real_u8: torch.Tensor, fake_u8: torch.Tensor, cfg: EvalConfig, progress: bool) -> dict:
    """ProGAN SWD; the coarsest level is 16 (ProGAN) or the image size when that is smaller."""
    res = real_u8.shape[-1]
    result = sliced_wasserstein_distance(from_uint8(real_u8), from_uint8(fake_u8), min_res=min(16, res),
                                         seed=cfg.seed, batch_size=cfg.batch, progress=progress)
    return {"swd": result.mean, "swd_levels": {str(r): d for r, d in zip(result.level_res, result.level_dists)}}


@torch.no_grad()
def _alignment(bundle: Any, fake_u8: torch.Tensor, captions: Sequence[str], cfg: EvalConfig,
               progress: bool) -> dict:
    """Mean cosine and R-precision of generated images with their captions (contrastive model)."""
    img_emb, txt_emb = [], []
    with tqdm(total=fake_u8.shape[0], desc="alignment", unit="img", disable=not progress) as bar:
        for i in range(0, fake_u8.shape[0], cfg.batch):
            img = from_uint8(fake_u8[i:i + cfg.batch]).to(bundle.device)
            a, b = embed_images_and_captions(bundle, img, captions[i:i + cfg.batch])
            img_emb.append(a.cpu())
            txt_emb.append(b.cpu())
            bar.update(img.shape[0])
    img_emb, txt_emb = torch.cat(img_emb), torch.cat(txt_emb)
    distractors = min(cfg.r_precision_distractors, fake_u8.shape[0] - 1)
    return {"alignment": mean_cosine_alignment(img_emb, txt_emb),
            "r_precision": r_precision(img_emb, txt_emb, num_distractors=distractors, seed=cfg.seed),
            "r_precision_distractors": distractors}


def evaluate_sampler(
    sampler:    Any,                        # An inference.Sampler (kind, resolution, text, kimg, options, sample).
    dataset:    Any,                        # ImageLabelDataset at resolution >= sampler.resolution.
    cfg:        EvalConfig,
    device:     torch.device | str,         # Where InceptionV3 and the precision/recall distances run.
    progress:   bool = True,                # tqdm bars: generation, features, SWD, alignment.
    cache:      dict | None = None,         # Reused across calls: real images/features computed once.
) -> dict[str, Any]:
    """Generate cfg.num images and score them against cfg.num real ones (see the module docstring).

    Returns metadata (kind, checkpoint_kimg, resolution, num, feature_space, every sampling option,
    sampling_seconds, images_per_second) and, per requested metric: fd; kid, kid_std;
    is, is_std (mean, std over cfg.is_splits parts); swd, swd_levels ({resolution: SWD x 1e3});
    precision, recall; alignment, r_precision, r_precision_distractors. A `cache` dict must not
    be shared between different datasets."""
    cache = {} if cache is None else cache
    options = asdict(sampler.options(**cfg.options))    # A bad option fails here, before any work.
    res = sampler.resolution
    if "swd" in cfg.metrics and res < SWD_PATCH:
        raise ValueError(f"swd needs images of at least {SWD_PATCH}x{SWD_PATCH}; this sampler makes "
                         f"{res}x{res} (leave swd out of the metrics)")
    needs_features = any(m in cfg.metrics for m in ("fd", "kid", "pr"))
    # Built first, so a bad InceptionV3 path fails before a long generation. With "is" in the
    # metrics cfg.inception is set (EvalConfig checks), so this is InceptionV3 and its pool3
    # features of the generated images serve FD/KID/PR and IS alike.
    uses_extractor = needs_features or "is" in cfg.metrics
    extractor = _extractor(cfg, sampler.text, device, cache) if uses_extractor else None
    captions, seeds = eval_captions(dataset.captions, cfg.num, cfg.seed), eval_seeds(cfg.num, cfg.seed)
    fake_u8, seconds = generate_u8(sampler, captions, seeds, cfg, progress)
    assert fake_u8.shape == (cfg.num, 3, res, res), fake_u8.shape
    if ("images", res, cfg.num) not in cache:
        cache["images", res, cfg.num] = real_images_u8(dataset, res, cfg.num)
    real_u8 = cache["images", res, cfg.num]
    result: dict[str, Any] = {
        "kind": sampler.kind, "checkpoint_kimg": float(sampler.kimg), "resolution": res, "num": cfg.num,
        "metrics": list(cfg.metrics), "seed": cfg.seed, **options,
        "feature_space": extractor.name if extractor is not None else None,
        "sampling_seconds": seconds, "images_per_second": cfg.num / seconds if seconds > 0 else math.inf,
    }
    if uses_extractor:
        feat_device = device if cfg.inception is not None else sampler.text.device
        fake_f = extract_features(extractor, fake_u8.split(cfg.batch), cfg.batch, feat_device, progress,
                                  total=fake_u8.shape[0])
    if needs_features:
        real_f = _real_features(extractor, sampler.text, real_u8, cfg, feat_device, progress, cache)
        result.update(_distribution_metrics(real_f, fake_f, cfg, device))
    if "is" in cfg.metrics:
        result.update(_inception_score(extractor.module, fake_f, cfg))
    if "swd" in cfg.metrics:
        result.update(_swd(real_u8, fake_u8, cfg, progress))
    if "align" in cfg.metrics:
        result.update(_alignment(sampler.text, fake_u8, captions, cfg, progress))
    return result

