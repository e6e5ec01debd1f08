"""Hard negative captions for the critic's matching-aware term.

A real image paired with a wrong caption must score below the same image with its own caption.
With a caption borrowed from another sample of the batch (a roll by one), almost every wrong
caption differs in several attributes, and on the demo only about 0.7 % of the pairs differed
in shape alone: once the critic told backgrounds and colours apart, the term stopped teaching
shape. A hard negative is a caption close to the right one in the frozen encoder's
contrastive space but not saying the same thing. On the demo every paraphrase of a caption
has cosine >= 0.99 with it, and every caption that differs in one attribute <= 0.89, so the
nearest captions below a cosine of 0.95 are those that change one word.

`CaptionPool` holds the distinct captions of the dataset (a seeded subset of at most
`max_pool`), embedded once in a fixed order, so a resumed run draws from the same pool.
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
        per_image: int = 4,                 # Wrong captions scored against each real image.
        candidates: int = 64,               # Drawn uniformly from this many nearest captions ...
        max_similarity: float = 0.95,       # ... whose cosine with the right caption is below this.
        max_pool: int = 20000,              # Distinct captions kept (a seeded subset if more).
        seed: int = 0,                      # Chooses that subset.
    ):
        if per_image < 1 or candidates < 1:
            raise ValueError(f"CaptionPool: per_image and candidates must be >= 1, got {per_image}, {candidates}")
        distinct = sorted({c for caps in captions for c in caps})
        if len(distinct) > max_pool:
            distinct = sorted(random.Random(seed).sample(distinct, max_pool))
        self.per_image, self.candidates, self.max_similarity = per_image, candidates, max_similarity
        self.captions = distinct
        self.index = {c: i for i, c in enumerate(distinct)}
        chunks = [distinct[i:i + 256] for i in range(0, len(distinct), 256)]
        self.sentence = torch.cat([text_bundle.encode(c, device)[2] for c in chunks])   # [P, text_dim]
        # The contrastive embedding is the normalised sentence embedding (ContrastiveModel.encode_text).
        self.unit = F.normalize(self.sentence, dim=1)                                   # [P, E]

    def __len__(self) -> int:
        return len(self.captions)

    def draw(
        self,
        captions: Sequence[str],            # B captions of the global batch.
        unit: torch.Tensor,                 # [B, E] their unit contrastive embeddings.
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (pool indices [B, K], valid [B, K] bool) of K = per_image hard negatives each.

        Candidates are the `candidates` pool captions nearest to each caption, excluding the
        caption itself and every caption within `max_similarity` (a paraphrase says the same
        thing and would be a wrong negative). The draw uses the global torch RNG for the
        whole batch, so data-parallel ranks agree and a resume repeats it. A caption with
        fewer candidates than K repeats some; one with none gets valid = False.
        """
        sim = unit.to(self.unit.device, self.unit.dtype) @ self.unit.t()          # [B, P]
        same = sim >= self.max_similarity
        for row, caption in enumerate(captions):
            if caption in self.index:
                same[row, self.index[caption]] = True
        sim = sim.masked_fill(same, float("-inf"))
        k = min(self.candidates, len(self))
        top_sim, top_idx = sim.topk(k, dim=1)                                   # [B, k]
        available = torch.isfinite(top_sim).sum(dim=1)                         # [B]
        pick = (torch.rand([len(captions), self.per_image]) * available.cpu().clamp(min=1)[:, None]).long()
        pick = pick.to(top_idx.device)
        idx = top_idx.gather(1, pick)
        valid = (available > 0)[:, None].expand_as(idx)
        return idx, valid
