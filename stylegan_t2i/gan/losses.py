"""WGAN-GP losses with the drift term and a matching-aware (mismatched caption) term.

Pure functions of scores; the trainer runs the networks. Sign convention: the
critic *minimises* `critic_loss` (so it pushes real-and-matching scores up and
fake / mismatched scores down) and the generator minimises `generator_loss`.
"""
from __future__ import annotations

from typing import Callable

import torch

# Matching-aware term (Reed et al. 2016): a real image with a wrong caption must
# score below the same image with its own caption (the trainer draws hard negatives, see
# gan/negatives.py). Written as a margin ranking hinge rather than as a third, linear
# "fake" expectation: the gradient penalty only constrains D along the image, so a linear
# term lets D push D(x, c') down
# without bound through the caption projection. Measured on the demo preset:
# the linear 50/50 form drove E[D(x, c')] to -500 and the penalty to 66 within
# 40 kimg, with fakes outscoring reals. The hinge stops once the gap reaches
# MISMATCH_MARGIN (about the score change of a unit image step under the GP). It stops
# only per pair: a hard negative that changes the shape word alone keeps teaching until
# the critic tells shapes apart, whatever the colours and backgrounds already do.
MISMATCH_WEIGHT = 1.0
MISMATCH_MARGIN = 1.0


def gradient_penalty(
    critic_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],  # (img, text) -> [B]; closes over stage/alpha.
    real: torch.Tensor,                 # [B, C, H, W] real images.
    fake: torch.Tensor,                 # [B, C, H, W] generated images (detached here).
    text: torch.Tensor,                 # [B, text_dim] their (matching) captions.
    eps: torch.Tensor,                  # [B] interpolation factors ~ U[0, 1] (drawn by the caller).
    weight: float = 10.0,               # lambda of the paper.
) -> tuple[torch.Tensor, torch.Tensor]:
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): weight * E[(||grad_x D(x_hat, c)||_2 - 1)^2].

    x_hat = eps * real + (1 - eps) * fake with eps ~ U[0, 1] per sample. The
    gradient is taken with create_graph=True so the penalty can be
    back-propagated into the critic's parameters (double backward).
    Returns (penalty, mean gradient norm (detached, for logging)).
    """
    assert real.shape == fake.shape and eps.shape == real.shape[:1], (real.shape, fake.shape, eps.shape)
    batch_size = real.shape[0]
    eps = eps.reshape([batch_size] + [1] * (real.ndim - 1)).to(real.dtype)
    x_hat = torch.lerp(fake.detach(), real.detach(), eps).requires_grad_(True)
    scores = critic_fn(x_hat, text)
    assert scores.shape == (batch_size,), scores.shape
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    grad_norm = torch.linalg.vector_norm(grad.flatten(1), dim=1)   # [B]; sum over samples is separable.
    penalty = weight * (grad_norm - 1).square().mean()
    return penalty, grad_norm.detach().mean()


def critic_loss(
    real_scores: torch.Tensor,          # [B] D(x, c): real images, their captions.
    fake_scores: torch.Tensor,          # [B] D(G(z, c), c): generated images, the captions they were made from.
    mismatch_scores: torch.Tensor | None,  # [B] or [B, K] D(x, c'): real images, wrong captions; None = off.
    drift: float = 0.001,               # epsilon of the drift term (Karras et al. 2018, sec. A.1).
    mismatch_valid: torch.Tensor | None = None,  # Like mismatch_scores, bool: pairs that count (None = all).
) -> dict[str, torch.Tensor]:
    """Critic loss to minimise (without the gradient penalty, which the trainer adds).

    loss     = -E[D(x,c)] + E[D(G(z,c),c)] + drift * E[D(x,c)^2] + mismatch
    mismatch = MISMATCH_WEIGHT * E[max(0, MISMATCH_MARGIN - (D(x,c) - D(x,c')))]   (0 when None),
               the mean over all (image, wrong caption) pairs, an invalid pair counting 0
               (a fixed denominator keeps data-parallel ranks' means exact)
    wdist    = E[D(x,c)] - E[D(G(z,c),c)]   (the critic's Wasserstein estimate, for logging)
    drift    = drift * E[D(x,c)^2]          (keeps scores from drifting away from 0)
    """
    real_mean = real_scores.mean()
    fake_mean = fake_scores.mean()
    drift_term = drift * real_scores.square().mean()
    if mismatch_scores is None:
        mismatch_term = torch.zeros_like(fake_mean)
    else:
        gap = real_scores.reshape(-1, *([1] * (mismatch_scores.ndim - 1))) - mismatch_scores
        hinge = torch.relu(MISMATCH_MARGIN - gap)
        if mismatch_valid is not None:
            hinge = hinge * mismatch_valid.to(hinge.dtype)
        mismatch_term = MISMATCH_WEIGHT * hinge.mean()
    return {
        "loss": fake_mean - real_mean + drift_term + mismatch_term,
        "wdist": (real_mean - fake_mean).detach(),
        "drift": drift_term.detach(),
        "mismatch": mismatch_term.detach(),
    }


def generator_loss(
    fake_scores: torch.Tensor,          # [B] D(G(z, c), c).
) -> torch.Tensor:
    """-E[D(G(z,c), c)]: the generator raises the critic's score of its images under their captions."""
    return -fake_scores.mean()


def alignment_loss(
    image_unit: torch.Tensor,           # [B, E] unit embeddings of G(z, c) by the frozen image encoder.
    text_unit: torch.Tensor,            # [B, E] unit embeddings of c by the frozen text encoder.
) -> torch.Tensor:
    """E[1 - cos(image, caption)] in the frozen contrastive space (StyleGAN-T's CLIP loss,
    GigaGAN's matching loss). The critic alone learns the caption from scratch; this
    term hands G the encoder's knowledge of every word, the shape words included."""
    assert image_unit.shape == text_unit.shape, (image_unit.shape, text_unit.shape)
    return (1 - (image_unit * text_unit).sum(dim=1)).mean()
