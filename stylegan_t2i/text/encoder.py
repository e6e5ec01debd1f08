"""Transformer text encoder: caption ids -> token features and one sentence embedding.

Token embedding + learned positional embedding, `depth` pre-LayerNorm blocks (multi-head
self-attention with a key padding mask, GELU MLP), a final LayerNorm (Vaswani et al. 2017;
pre-LN as in GPT-2 / nanoGPT). Padding is invisible to real tokens: keys at padded positions
are masked out of every attention softmax and the sentence embedding averages real tokens
only, so the same caption gives the same outputs whatever the padded length.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TextEncoderConfig:
    vocab_size:     int                 # Tokenizer vocabulary size.
    max_len:        int = 32            # Longest id sequence accepted (size of the positional table).
    dim:            int = 128           # Token feature width D.
    depth:          int = 3             # Number of Transformer blocks.
    heads:          int = 4             # Attention heads; dim must be divisible by heads.
    mlp_ratio:      float = 4.0         # MLP hidden width = mlp_ratio * dim.
    embed_dim:      int = 128           # Sentence embedding width E.


class SelfAttention(nn.Module):
    def __init__(self,
        dim:    int,    # Feature width D.
        heads:  int,    # Number of heads; head width is D / heads.
    ):
        super().__init__()
        assert dim % heads == 0, (dim, heads)
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: [B, L, D], mask: [B, L] bool (True = real token) -> [B, L, D]."""
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, L, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))  # (B, nh, L, hs)
        # softmax(q k^T / sqrt(hs)) over real keys only: padded keys get -inf logits.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])          # (B, nh, L, hs)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class Block(nn.Module):
    """Pre-LN Transformer block: x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self,
        dim:        int,    # Feature width D.
        heads:      int,    # Attention heads.
        mlp_ratio:  float,  # MLP hidden width / D.
    ):
        super().__init__()
        hidden = int(round(dim * mlp_ratio))
        self.ln1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), mask)
        return x + self.mlp(self.ln2(x))


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos_emb = nn.Parameter(torch.zeros(cfg.max_len, cfg.dim))
        self.blocks = nn.ModuleList([Block(cfg.dim, cfg.heads, cfg.mlp_ratio) for _ in range(cfg.depth)])
        self.ln_f = nn.LayerNorm(cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 init: N(0, 0.02) everywhere, residual output projections scaled by
        # 1/sqrt(2 * depth) so the residual stream's variance does not grow with depth.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.pos_emb, std=0.02)
        for block in self.blocks:
            for layer in (block.attn.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, std=0.02 / math.sqrt(2 * self.cfg.depth))

    def forward(self,
        ids:    torch.Tensor,   # [B, L] int64 token ids, L <= cfg.max_len.
        mask:   torch.Tensor,   # [B, L] bool, True on real tokens (at least one per row).
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (tokens [B, L, D] after the final LayerNorm, sentence [B, E], not normalised).

        sentence = proj( sum_l mask_l * tokens_l / sum_l mask_l ): a linear map of the masked
        mean, so padded positions never contribute.
        """
        B, L = ids.shape
        assert ids.dtype == torch.int64, ids.dtype
        assert mask.shape == (B, L) and mask.dtype == torch.bool, (mask.shape, mask.dtype)
        assert L <= self.cfg.max_len, f"sequence length {L} exceeds max_len {self.cfg.max_len}"
        assert bool(mask.any(dim=1).all()), "every caption needs at least one real token"
        x = self.tok_emb(ids) + self.pos_emb[:L]                # (B, L, D)
        for block in self.blocks:
            x = block(x, mask)
        tokens = self.ln_f(x)                                   # (B, L, D)
        m = mask.unsqueeze(-1).to(tokens.dtype)                 # (B, L, 1)
        pooled = (tokens * m).sum(dim=1) / m.sum(dim=1)         # (B, D)
        return tokens, self.proj(pooled)
