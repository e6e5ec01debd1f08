"""Kernel Inception Distance (Bińkowski et al. 2018, "Demystifying MMD GANs", sec. 3 / app. D).

KID is the squared maximum mean discrepancy between the two feature distributions under the
cubic polynomial kernel k(x, y) = (x.y / d + 1)^3, estimated without bias on random subsets:

    MMD^2_u = 1/(m(m-1)) sum_{i!=j} k(x_i, x_j) + 1/(m(m-1)) sum_{i!=j} k(y_i, y_j)
              - 2/m^2 sum_{i,j} k(x_i, y_j)

Unlike FD its expectation is exactly 0 when both sets come from the same distribution (the
estimate can then be negative), so it is comparable across sample sizes.
"""
from __future__ import annotations

import numpy as np
import torch

from .frechet import as_float64_matrix


def polynomial_kernel(
    x:  np.ndarray,     # [m, d]
    y:  np.ndarray,     # [n, d]
) -> np.ndarray:
    """k(x, y) = (x.y / d + 1)^3 for every pair -> [m, n]."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(
    x:  np.ndarray,     # Subset of set 1 [m, d], m >= 2.
    y:  np.ndarray,     # Subset of set 2 [m, d] (same m).
) -> float:
    """Unbiased MMD^2 estimate with the cubic polynomial kernel (see module docstring)."""
    m = x.shape[0]
    assert y.shape == x.shape and m >= 2, (x.shape, y.shape)
    k_xx, k_yy, k_xy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    # Drop the diagonals k(x_i, x_i): including them is what biases the plug-in estimate upward.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.sum() / (m * m))


def kernel_inception_distance(
    feats1:         np.ndarray | torch.Tensor,  # Features of set 1 [N1, D] (e.g. real).
    feats2:         np.ndarray | torch.Tensor,  # Features of set 2 [N2, D] (e.g. generated).
    num_subsets:    int = 100,                  # Number of random subset pairs averaged.
    subset_size:    int = 1000,                 # m; clipped to min(N1, N2).
    seed:           int = 0,                    # Seed of the subset sampling (deterministic).
) -> tuple[float, float]:
    """Return (mean, std) of MMD^2_u over `num_subsets` random subset pairs, float64.

    Each subset is drawn without replacement from its own set; the std is over subsets
    (the spread of one subset's estimate), as reported by Bińkowski et al.
    """
    f1, f2 = as_float64_matrix(feats1, "feats1"), as_float64_matrix(feats2, "feats2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature widths differ: {f1.shape[1]} vs {f2.shape[1]}")
    m = min(subset_size, f1.shape[0], f2.shape[0])
    if m < 2 or num_subsets < 1:
        raise ValueError(f"KID needs subsets of >= 2 samples and num_subsets >= 1 "
                         f"(sets have {f1.shape[0]} and {f2.shape[0]}, num_subsets={num_subsets})")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = f1[rng.choice(f1.shape[0], m, replace=False)]
        y = f2[rng.choice(f2.shape[0], m, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())
