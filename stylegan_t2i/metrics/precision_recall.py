"""Improved precision and recall (Kynkäänniemi et al. 2019, sec. 3).

Each set's manifold is approximated by the union of hyperspheres centred on its samples,
with radius the distance to the sample's k-th nearest neighbour within the same set:

    precision = fraction of fake samples inside the real manifold   (quality)
    recall    = fraction of real samples inside the fake manifold   (coverage)

Distances are computed in row batches so that memory stays O(batch_size * N).
"""
from __future__ import annotations

import numpy as np
import torch


def _as_tensor(x: np.ndarray | torch.Tensor, name: str, device: torch.device | str) -> torch.Tensor:
    t = torch.as_tensor(x).to(device=device, dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected features of shape [N, D], got {tuple(t.shape)}")
    return t


def knn_radii(
    feats:      torch.Tensor,   # Manifold samples [N, D].
    k:          int,            # Neighbourhood size.
    batch_size: int,            # Rows of the distance matrix computed at once.
) -> torch.Tensor:
    """Distance of each sample to its k-th nearest other sample -> [N].

    The sample itself is at distance 0 and is the smallest entry of its row, so the k-th
    neighbour is the (k + 1)-th smallest distance.
    """
    if feats.shape[0] <= k:
        raise ValueError(f"k={k} needs more than {k} samples per set, got {feats.shape[0]}")
    radii = [torch.cdist(rows, feats).kthvalue(k + 1, dim=1).values
             for rows in feats.split(batch_size)]
    return torch.cat(radii)


def manifold_coverage(
    manifold:   torch.Tensor,   # Sphere centres [N, D].
    radii:      torch.Tensor,   # Sphere radii [N].
    queries:    torch.Tensor,   # Points to test [M, D].
    batch_size: int,
) -> float:
    """Fraction of `queries` within distance radii[i] of some manifold[i] (boundary included)."""
    inside = [(torch.cdist(rows, manifold) <= radii[None, :]).any(dim=1)
              for rows in queries.split(batch_size)]
    return float(torch.cat(inside).double().mean())


def precision_recall(
    real_feats: np.ndarray | torch.Tensor,  # Real features [N, D].
    fake_feats: np.ndarray | torch.Tensor,  # Generated features [M, D].
    k:          int = 3,                    # k-NN radius (the paper's default).
    batch_size: int = 1024,                 # Distance-matrix rows per step.
    device:     torch.device | str = "cpu",
) -> tuple[float, float]:
    """Return (precision, recall), each in [0, 1]."""
    real = _as_tensor(real_feats, "real_feats", device)
    fake = _as_tensor(fake_feats, "fake_feats", device)
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"feature widths differ: {real.shape[1]} vs {fake.shape[1]}")
    real_radii = knn_radii(real, k, batch_size)
    fake_radii = knn_radii(fake, k, batch_size)
    precision = manifold_coverage(real, real_radii, fake, batch_size)
    recall = manifold_coverage(fake, fake_radii, real, batch_size)
    return precision, recall
