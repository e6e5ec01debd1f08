"""Fréchet distance between two Gaussians fitted to feature sets (FID; Heusel et al. 2017).

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

computed in float64 with scipy's matrix square root. With the InceptionV3 pool features this
is FID; with any other feature space it is "FD in that space" and must be labelled so.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.linalg
import torch

_SQRTM_RTOL = 1e-5      # Accept sqrtm(S1 S2) when ||X X - S1 S2||_F <= rtol * ||S1 S2||_F.


def as_float64_matrix(
    x:      np.ndarray | torch.Tensor,  # Features [N, D], any float dtype, any device.
    name:   str,                        # Argument name for error messages.
) -> np.ndarray:
    """Return `x` as a float64 numpy array [N, D]; ValueError on another rank or non-finite values."""
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected features of shape [N, D], got {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: features contain NaN or Inf")
    return arr


def feature_statistics(
    feats:  np.ndarray | torch.Tensor,  # Features [N, D] with N >= 2.
) -> tuple[np.ndarray, np.ndarray]:
    """Mean [D] and unbiased (N - 1) covariance [D, D] of a feature set, float64."""
    f = as_float64_matrix(feats, "feats")
    if f.shape[0] < 2:
        raise ValueError(f"need at least 2 feature vectors for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _sqrtm_residual(root: np.ndarray, prod: np.ndarray) -> float:
    """Relative Frobenius error of `root` as a square root of `prod` (inf when non-finite)."""
    if not np.isfinite(root).all():
        return float("inf")
    return float(np.linalg.norm(root @ root - prod) / max(np.linalg.norm(prod), 1e-300))


def _trace_sqrt_product(
    sigma1:     np.ndarray,     # [D, D] covariance.
    sigma2:     np.ndarray,     # [D, D] covariance.
    eps:        float,          # Ridge added to both covariances when the plain product fails.
    imag_atol:  float,          # Largest tolerated |imag| on the diagonal of the square root.
) -> float:
    """tr((S1 S2)^(1/2)), retrying with (S1 + eps I)(S2 + eps I) when the plain root is unreliable.

    S1 S2 is similar to the PSD matrix S1^(1/2) S2 S1^(1/2), so its eigenvalues are real and
    >= 0 and its principal square root has a real trace. Numerically, a singular product
    (rank-deficient covariances, e.g. fewer samples than dimensions) gives scipy a root that is
    non-finite or inaccurate; the ridge makes both factors positive definite.
    """
    prod = sigma1 @ sigma2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # sqrtm warns on singular input; the residual decides.
        root = scipy.linalg.sqrtm(prod)
        if _sqrtm_residual(root, prod) > _SQRTM_RTOL:
            offset = eps * np.eye(sigma1.shape[0])
            prod = (sigma1 + offset) @ (sigma2 + offset)
            root = scipy.linalg.sqrtm(prod)
    if not np.isfinite(root).all():
        raise ValueError("Fréchet distance: sqrtm of the covariance product is not finite even "
                         f"with eps={eps} added to both covariances")
    if np.iscomplexobj(root):
        # Round-off gives a tiny imaginary part; a large one means the product was far from
        # having a real root, i.e. the covariances are not valid (PSD) covariances.
        imag = np.abs(np.diagonal(root).imag).max()
        if imag > imag_atol:
            raise ValueError(f"Fréchet distance: imaginary component {imag:.3g} in sqrtm(S1 S2) "
                             f"exceeds {imag_atol} (are both inputs PSD covariance matrices?)")
        root = root.real
    return float(np.trace(root))


def frechet_distance(
    mu1:        np.ndarray,         # Mean of set 1 [D].
    sigma1:     np.ndarray,         # Covariance of set 1 [D, D].
    mu2:        np.ndarray,         # Mean of set 2 [D].
    sigma2:     np.ndarray,         # Covariance of set 2 [D, D].
    eps:        float = 1e-6,       # Ridge for the singular-product fallback (as pytorch-fid).
    imag_atol:  float = 1e-3,       # Tolerated imaginary part on diag(sqrtm) (as pytorch-fid).
) -> float:
    """Fréchet (2-Wasserstein) distance between N(mu1, sigma1) and N(mu2, sigma2), float64.

    FD = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)). Tiny negative results from
    round-off (identical statistics) are clipped to 0.
    """
    mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
    sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {sigma1.shape}, "
                         f"mu2 {mu2.shape}, sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrt_product(sigma1, sigma2, eps, imag_atol)
    fd = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(fd, 0.0)


def frechet_distance_from_features(
    feats1:     np.ndarray | torch.Tensor,  # Features of set 1 [N1, D].
    feats2:     np.ndarray | torch.Tensor,  # Features of set 2 [N2, D].
    eps:        float = 1e-6,               # See `frechet_distance`.
) -> float:
    """Fit a Gaussian (mean, unbiased covariance) to each set and return their Fréchet distance."""
    mu1, sigma1 = feature_statistics(feats1)
    mu2, sigma2 = feature_statistics(feats2)
    return frechet_distance(mu1, sigma1, mu2, sigma2, eps=eps)
