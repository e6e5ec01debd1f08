"""CLIP-style contrastive model and loss (Radford et al. 2021, "Learning Transferable Visual
Models From Natural Language Supervision", Fig. 3 pseudo-code)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .encoder import TextEncoder, TextEncoderConfig
from .image_encoder import ImageEncoder, ImageEncoderConfig

LOGIT_SCALE_INIT = math.log(1 / 0.07)   # CLIP: temperature 0.07 at initialisation.
LOGIT_SCALE_MAX = 100.0                 # CLIP: clip exp(t) at 100 to keep training stable.


class ContrastiveModel(nn.Module):
    def __init__(self,
        text_cfg:   TextEncoderConfig,      # Text tower.
        image_cfg:  ImageEncoderConfig,     # Image tower; embed_dim must equal text_cfg.embed_dim.
    ):
        super().__init__()
        if text_cfg.embed_dim != image_cfg.embed_dim:
            raise ValueError(f"text embed_dim {text_cfg.embed_dim} != image embed_dim {image_cfg.embed_dim}")
        self.text_encoder = TextEncoder(text_cfg)
        self.image_encoder = ImageEncoder(image_cfg)
        self.logit_scale = nn.Parameter(torch.tensor(LOGIT_SCALE_INIT))   # t; logits are scaled by exp(t).

    def scale(self) -> torch.Tensor:
        """exp(t) clamped at 100; no gradient pushes t further once the clamp is active."""
        return self.logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask: [B, L] -> unit-norm sentence embeddings [B, E]."""
        return F.normalize(self.text_encoder(ids, mask)[1], dim=-1)

    def encode_image(self, img: torch.Tensor) -> torch.Tensor:
        """img: [B, 3, H, W] in [-1, 1] -> unit-norm image embeddings [B, E]."""
        return F.normalize(self.image_encoder(img), dim=-1)


def clip_loss(
    img_emb:        torch.Tensor,   # [B, E] unit-norm image embeddings; row i pairs with txt_emb row i.
    txt_emb:        torch.Tensor,   # [B, E] unit-norm text embeddings.
    logit_scale:    torch.Tensor,   # Scalar multiplier exp(t) (not its log).
) -> torch.Tensor:
    """Symmetric InfoNCE: mean of the image->text and text->image cross-entropies.

    logits_ij = exp(t) <img_i, txt_j>; the target of row i (and of column i) is i:
        loss = (CE(logits, arange(B)) + CE(logits^T, arange(B))) / 2
    """
    assert img_emb.ndim == 2 and img_emb.shape == txt_emb.shape, (img_emb.shape, txt_emb.shape)
    logits = logit_scale * img_emb @ txt_emb.t()                        # (B, B)
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.t(), labels))
