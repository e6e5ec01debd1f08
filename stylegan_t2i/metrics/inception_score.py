"""Inception Score (Salimans et al. 2016, "Improved Techniques for Training GANs", sec. 4).

    IS = exp(E_x KL(p(y|x) || p(y))),      p(y) = E_x p(y|x)

where p(y|x) is the InceptionV3 classifier's softmax on generated image x (InceptionV3.logits,
from the same user-supplied weights as FID). It is high when each image is classified
confidently and the classes are spread evenly, lies in [1, K] for K classes, and looks at the
generated images alone: unlike FD/KID it never compares them with the real set
(docs/architecture.md, "What is measured").

As in the reference code (openai/improved-gan; torch-fidelity does the same), the N images are
cut into `splits` contiguous parts, each part gets its own p(y) and its own score, and the mean
and the (ddof 0) standard deviation over parts are reported. Computed in float64 from
log-softmax, so a confident classifier, whose p(y|x) underflows to 0, still gives finite terms.
"""
from __future__ import annotations

import numpy as np
import scipy.special
import torch

from .frechet import as_float64_matrix


def log_softmax(
    logits: np.ndarray,     # [N, K] float64.
) -> np.ndarray:
    """log p(y|x) [N, K]: logits minus their row log-sum-exp (no exp of a large logit)."""
    return logits - scipy.special.logsumexp(logits, axis=1, keepdims=True)


def split_score(
    log_p:  np.ndarray,     # log p(y|x) of one part [n, K], n >= 1.
) -> float:
    """exp(mean_x KL(p(y|x) || p(y))) with p(y) the mean of p(y|x) over this part."""
    # log p(y) = logsumexp_x log p(y|x) - log n: stays finite where every p(y|x) underflows.
    log_py = scipy.special.logsumexp(log_p, axis=0) - np.log(log_p.shape[0])      # [K]
    # p * (log p - log p(y)); a p(y|x) that underflowed to 0 contributes 0, as in the limit.
    kl = (np.exp(log_p) * (log_p - log_py)).sum(axis=1)                           # [n]
    # Each KL is >= 0; round-off can leave a near-zero mean slightly below, and IS below 1.
    return float(np.exp(max(kl.mean(), 0.0)))


def inception_score(
    logits: np.ndarray | torch.Tensor,  # Classifier logits [N, K] (log-probabilities work too), N >= splits.
    splits: int = 10,                   # Contiguous parts, each with its own p(y) (reference: 10).
) -> tuple[float, float]:
    """Return (mean, std) of the per-part Inception Score, float64 (see the module docstring).

    Part i holds images [i N // splits, (i + 1) N // splits), as in the reference code, so the
    result depends on the order of the images; the std (ddof 0) is the spread over parts.
    log_softmax leaves log-probabilities unchanged, so log(p(y|x)) can be passed as logits.
    """
    x = as_float64_matrix(logits, "logits")
    n = x.shape[0]
    if splits < 1 or n < splits:
        raise ValueError(f"Inception Score needs at least one image per split: {n} images, "
                         f"splits={splits}")
    log_p = log_softmax(x)
    bounds = [i * n // splits for i in range(splits + 1)]
    scores = np.array([split_score(log_p[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    return float(scores.mean()), float(scores.std())
