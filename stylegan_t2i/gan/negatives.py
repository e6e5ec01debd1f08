"""Hard negative captions for the critic's matching-aware term.

A real image paired with a wrong caption must score below the same image with its own caption.
With a caption borrowed from another sample of the batch (a roll by one), almost every wrong
caption differs in several attributes, and on the demo only about 0.7 % of the pairs differed
in shape alone: once the critic told backgrounds and colours apart, the term stopped teaching
shape. A hard negative is a caption close to the right one in the frozen encoder's contrastive
space but not saying the same thing. On the demo every paraphrase of a caption has cosine >= 0.99
with it, and every caption that differs in one attribute <= 0.89, so the nearest captions below
a cosine of 0.95 are those that change one word.

Of those candidates, the matching term scores the ones the critic currently confuses most with
the right caption (`hardest`: the highest scores, as in the hard-negative mining of contrastive
learning). Drawn uniformly, most candidates were already told apart and on the demo only about
one in ten changed the shape word alone; the critic trained that way scored a real small circle
under the other shape words only 0.14 below its own caption (the margin is 1) and passed G's
small dome as a square (docs/architecture.md, "Losses").

`CaptionPool` holds the distinct captions of the dataset (a seeded subset of at most
`max_pool`), embedded once in a fixed order, so a resumed run finds the same candidates.
"""
from __future__ import annotations

import random
from typing import Sequence

import torch
import torch.nn.functional as F


class CaptionPool:
    """Distinct captions with their sentence embeddings (for the critic) and unit contrastive
    embeddings (to measure how close two captions are)."""

    def __init__(
        self,
        captions: Sequence[Sequence[str]],  # Per image, its captions (the dataset's `captions`).
        text_bundle,                        # Frozen `TextEncoderBundle`.
        device: torch.device,
        candidates: int = 64,               # Nearest captions offered for each caption ...
        max_similarity: float = 0.95,       # ... whose cosine with the right caption is below this.
        max_pool: int = 20000,              # Distinct captions kept (a seeded subset if more).
        seed: int = 0,                      # Chooses that subset.
    ):
        if candidates < 1:
            raise ValueError(f"CaptionPool: candidates must be >= 1, got {candidates}")
        distinct = sorted({c for caps in captions for c in caps})
        if len(distinct) > max_pool:
            distinct = sorted(random.Random(seed).sample(distinct, max_pool))
        self.candidates, self.max_similarity = candidates, max_similarity
        self.captions = distinct
        self.index = {c: i for i, c in enumerate(distinct)}
        chunks = [distinct[i:i + 256] for i in range(0, len(distinct), 256)]
        self.sentence = torch.cat([text_bundle.encode(c, device)[2] for c in chunks])   # [P, text_dim]
        # The contrastive embedding is the normalised sentence embedding (ContrastiveModel.encode_text).
        self.unit = F.normalize(self.sentence, dim=1)                                   # [P, E]

    def __len__(self) -> int:
        return len(self.captions)

    def nearest(
        self,
        captions: Sequence[str],            # B captions.
        unit: torch.Tensor,                 # [B, E] their unit contrastive embeddings.
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pool indices [B, k], valid [B, k] bool): the k = min(candidates, pool size) pool
        captions nearest to each caption, excluding the caption itself and every caption within
        `max_similarity` (a paraphrase says the same thing and would be a wrong negative).
        Deterministic, so data-parallel ranks and a resume agree. Where fewer than k remain,
        the rest are valid = False."""
        sim = unit.to(self.unit.device, self.unit.dtype) @ self.unit.t()          # [B, P]
        same = sim >= self.max_similarity
        for row, caption in enumerate(captions):
            if caption in self.index:
                same[row, self.index[caption]] = True
        sim = sim.masked_fill(same, float("-inf"))
        top_sim, top_idx = sim.topk(min(self.candidates, len(self)), dim=1)     # [B, k]
        return top_idx, torch.isfinite(top_sim)


def hardest(
    scores: torch.Tensor,               # [B, k] D(x, c') of each real image under its k candidates.
    valid: torch.Tensor,                # [B, k] bool: candidates that count.
    per_image: int,                     # K: negatives kept per image.
) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (scores [B, K], valid [B, K]): each image's K valid candidates that the critic scores
    highest, i.e. the wrong captions it confuses most with the right one. The choice is made
    on detached scores; the gradient flows through the kept ones. An image with fewer than K
    valid candidates gets valid = False for the rest."""
    if per_image < 1:
        raise ValueError(f"hardest: per_image must be >= 1, got {per_image}")
    masked = scores.detach().masked_fill(~valid, float("-inf"))
    pick = masked.topk(min(per_image, scores.shape[1]), dim=1).indices          # [B, K]
    return scores.gather(1, pick), valid.gather(1, pick)
