"""Image-text alignment scores in the contrastive encoder's joint embedding space.

- mean cosine alignment: the average cosine similarity of each image with its own caption
  (a CLIP-score without the 100x scale or the clipping at 0);
- R-precision (Xu et al. 2018, AttnGAN, sec. 5): the fraction of images whose own caption
  ranks first among itself and `num_distractors` randomly drawn other captions.

The functions take embeddings as tensors; `embed_images_and_captions` produces them with a
`TextEncoderBundle` (the colleague's contrastive encoder: `bundle.tokenizer.encode(captions)`
-> (ids, mask), `bundle.model.encode_image(img)` and `bundle.model.encode_text(ids, mask)`
-> L2-normalised [B, E]).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F


def _check_pair(img_emb: torch.Tensor, txt_emb: torch.Tensor) -> None:
    if img_emb.ndim != 2 or img_emb.shape != txt_emb.shape or img_emb.shape[0] < 1:
        raise ValueError(f"expected matching [B, E] embeddings, got {tuple(img_emb.shape)} "
                         f"and {tuple(txt_emb.shape)}")


def mean_cosine_alignment(
    img_emb:    torch.Tensor,   # Image embeddings [B, E].
    txt_emb:    torch.Tensor,   # Embeddings of each image's own caption [B, E].
) -> float:
    """mean_i cos(img_i, txt_i), in [-1, 1]; inputs are re-normalised (idempotent if unit)."""
    _check_pair(img_emb, txt_emb)
    cos = (F.normalize(img_emb.double(), dim=1) * F.normalize(txt_emb.double(), dim=1)).sum(dim=1)
    return float(cos.mean())


def _draw_distractors(
    rows:           torch.Tensor,       # Indices of the images to draw for [R].
    pool_size:      int,                # M: captions to draw from.
    num_distractors: int,               # Draws per row, without replacement.
    exclude_own:    bool,               # Row i may not draw pool index i.
    generator:      torch.Generator,
) -> torch.Tensor:
    """Indices [R, num_distractors]: per row, a uniform draw without replacement.

    The num_distractors smallest of M i.i.d. uniform keys index a uniform random subset.
    """
    keys = torch.rand(len(rows), pool_size, generator=generator)
    if exclude_own:
        keys[torch.arange(len(rows)), rows] = 2.0       # Above every uniform key: never drawn.
    return keys.topk(num_distractors, dim=1, largest=False).indices


def r_precision(
    img_emb:            torch.Tensor,           # Image embeddings [B, E].
    true_txt_emb:       torch.Tensor,           # Each image's own caption [B, E].
    distractor_txt_emb: torch.Tensor | None = None,  # Pool [M, E]; None: the other rows' captions.
    num_distractors:    int = 99,               # Other captions each true caption competes with.
    seed:               int = 0,                # Distractor draws (deterministic).
    chunk:              int = 256,              # Images scored at once.
) -> float:
    """Fraction of images whose true caption scores strictly highest (cosine) among
    itself and `num_distractors` captions drawn without replacement from the pool.

    Ties count as not first, so a degenerate encoder (all embeddings equal) scores 0, not 1.
    With `distractor_txt_emb=None` the pool is `true_txt_emb` without the image's own row
    (the AttnGAN protocol: mismatched captions from the same evaluation set). Chance level
    is 1 / (num_distractors + 1).
    """
    _check_pair(img_emb, true_txt_emb)
    exclude_own = distractor_txt_emb is None
    pool = true_txt_emb if exclude_own else distractor_txt_emb
    if pool.ndim != 2 or pool.shape[1] != img_emb.shape[1]:
        raise ValueError(f"distractor_txt_emb: expected [M, {img_emb.shape[1]}], got {tuple(pool.shape)}")
    available = pool.shape[0] - int(exclude_own)
    if num_distractors < 1 or available < num_distractors:
        raise ValueError(f"need {num_distractors} distractor captions, only {available} available")
    img = F.normalize(img_emb.double(), dim=1)
    true = F.normalize(true_txt_emb.double(), dim=1)
    pool = F.normalize(pool.double(), dim=1)
    gen = torch.Generator().manual_seed(seed)
    first = []
    for rows in torch.arange(img.shape[0]).split(chunk):               # Bounds memory to [chunk, M].
        idx = _draw_distractors(rows, pool.shape[0], num_distractors, exclude_own, gen)
        scores = img[rows] @ pool.T                                     # [R, M]
        true_score = (img[rows] * true[rows]).sum(dim=1)                # [R]
        best_other = scores.gather(1, idx.to(scores.device)).max(dim=1).values
        first.append(true_score > best_other)
    return float(torch.cat(first).double().mean())


@torch.no_grad()
def embed_images_and_captions(
    bundle:     Any,                # TextEncoderBundle (tokenizer + contrastive model).
    img:        torch.Tensor,       # Images [B, 3, H, W], float in [-1, 1].
    captions:   Sequence[str],      # One caption per image.
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (img_emb, txt_emb), each L2-normalised [B, E], on the images' device."""
    if img.ndim != 4 or img.shape[0] != len(captions):
        raise ValueError(f"expected [B, 3, H, W] images and B captions, got {tuple(img.shape)} "
                         f"and {len(captions)} captions")
    ids, mask = bundle.tokenizer.encode(list(captions))
    img_emb = bundle.model.encode_image(img)
    txt_emb = bundle.model.encode_text(ids.to(img.device), mask.to(img.device))
    return img_emb, txt_emb
