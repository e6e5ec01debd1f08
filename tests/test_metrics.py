"""Metrics on synthetic data with known answers: FD, KID, SWD, precision/recall, alignment,
feature extraction plumbing. InceptionV3 itself is in test_inception.py."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn

from stylegan_t2i.metrics import (
    ModuleExtractor,
    extract_features,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
    make_feature_extractor,
    mean_cosine_alignment,
    precision_recall,
    r_precision,
    sliced_wasserstein_distance,
)
from stylegan_t2i.metrics.alignment import embed_images_and_captions
from stylegan_t2i.metrics.kid import mmd2_unbiased
from stylegan_t2i.metrics.precision_recall import knn_radii
from stylegan_t2i.metrics.swd import laplacian_pyramid

# ---------------------------------------------------------------------------- Fréchet distance

def _fd_reference(mu1, s1, mu2, s2):
    """Independent route: tr((S1 S2)^1/2) = tr((S1^1/2 S2 S1^1/2)^1/2), via symmetric eigh."""
    w, v = np.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(r1 @ s2 @ r1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2)
                 - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_fd_1d_closed_form():
    # N(m1, s1^2) vs N(m2, s2^2): FD = (m1 - m2)^2 + (s1 - s2)^2.
    fd = frechet_distance(np.array([1.5]), np.array([[4.0]]), np.array([-0.5]), np.array([[0.25]]))
    assert fd == pytest.approx(2.0 ** 2 + (2.0 - 0.5) ** 2, rel=1e-10)


def test_fd_diagonal_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    v1, v2 = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + (v1 + v2 - 2 * np.sqrt(v1 * v2)).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_fd_full_covariance_matches_eigh_reference():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(8, 8)), rng.normal(size=(8, 8))
    s1, s2 = a @ a.T + 0.1 * np.eye(8), b @ b.T + 0.1 * np.eye(8)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(_fd_reference(mu1, s1, mu2, s2), rel=1e-8)


def test_fd_of_a_set_with_itself_is_zero_and_tensors_work():
    feats = torch.randn(300, 16, generator=torch.Generator().manual_seed(0))
    assert frechet_distance_from_features(feats, feats.clone()) == pytest.approx(0.0, abs=1e-8)
    assert frechet_distance_from_features(feats, feats + 1.0) == pytest.approx(16.0, rel=1e-8)


def test_fd_guard_on_rank_deficient_covariance():
    # 5 samples in 12-d: covariance of rank 4, product singular -> the eps ridge path.
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) + 0.3
    fd = frechet_distance_from_features(f1, f2)
    assert np.isfinite(fd) and fd > 0
    mu1, s1 = f1.mean(0), np.cov(f1, rowvar=False)
    mu2, s2 = f2.mean(0), np.cov(f2, rowvar=False)
    assert fd == pytest.approx(_fd_reference(mu1, s1, mu2, s2), rel=1e-3)


def test_fd_rejects_non_psd_input_with_large_imaginary_part():
    with pytest.raises(ValueError, match="imaginary component"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


# ---------------------------------------------------------------------------- KID

def _mmd2_loop(x, y):
    """Bińkowski et al. eq. for MMD^2_u written out pairwise (the independent reference)."""
    def k(a, b):
        return (a @ b / x.shape[1] + 1) ** 3
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_pairwise_formula():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(12, 5)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(_mmd2_loop(x, y), rel=1e-10)
    # subset_size >= N: every subset is a permutation of the whole set, so std is 0.
    mean, std = kernel_inception_distance(x, y, num_subsets=3, subset_size=100)
    assert mean == pytest.approx(_mmd2_loop(x, y), rel=1e-10) and std == pytest.approx(0, abs=1e-12)


def test_kid_unbiased_for_equal_distributions_and_positive_for_shift():
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(1000, 8)), rng.normal(size=(1000, 8))
    mean, std = kernel_inception_distance(f1, f2, num_subsets=200, subset_size=100, seed=0)
    # The plug-in (V-statistic) estimate, diagonals included, on 10 disjoint subset pairs
    # of the same size is biased upward; the unbiased mean must not be.
    def k(a, b):
        return (a @ b.T / 8 + 1) ** 3
    biased = np.mean([k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()
                      for x, y in zip(np.split(f1, 10), np.split(f2, 10))])
    assert biased > 3 * std and abs(mean) < 0.2 * std and abs(mean) < 0.05 * biased
    shifted, shifted_std = kernel_inception_distance(f1, f2 + 0.5, num_subsets=50, subset_size=200)
    assert shifted > 5 * shifted_std and shifted > 100 * abs(mean)
    again = kernel_inception_distance(f1, f2, 5, 50, seed=7)
    assert kernel_inception_distance(f1, f2, 5, 50, seed=7) == again


# ---------------------------------------------------------------------------- SWD

def _blob_images(n: int, res: int, seed: int) -> torch.Tensor:
    """Smooth coloured random fields plus fine texture, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.nn.functional.interpolate(torch.randn(n, 3, res // 8, res // 8, generator=g),
                                          size=(res, res), mode="bilinear", align_corners=False)
    return (0.6 * low + 0.2 * torch.randn(n, 3, res, res, generator=g)).clamp(-1, 1)


def _hue_mix(img: torch.Tensor, t: float) -> torch.Tensor:
    """Colour cast: each channel moves a fraction t toward the next one (R<-G, G<-B, B<-R)."""
    return (1 - t) * img + t * img.roll(-1, dims=1)


def test_swd_zero_for_identical_sets_and_grows_with_colour_shift():
    a = _blob_images(24, 32, seed=0)
    kw = dict(min_res=16, patches_per_image=32, dir_repeats=2, dirs_per_repeat=64, seed=0)
    same = sliced_wasserstein_distance(a, a.clone(), **kw)
    assert same.level_res == (32, 16) and same.mean == 0.0 and same.level_dists == (0.0, 0.0)
    dists = [sliced_wasserstein_distance(a, _hue_mix(a, t), **kw).mean for t in (0.1, 0.25, 0.5)]
    assert 0 < dists[0] < dists[1] < dists[2], dists
    # ProGAN normalises descriptors per set and channel: a global tint alone is invisible.
    tint = sliced_wasserstein_distance(a, a + torch.tensor([0.3, -0.2, 0.1])[:, None, None], **kw)
    assert tint.mean < 0.01 * dists[0]
    assert sliced_wasserstein_distance(a, _hue_mix(a, 0.25), **kw) == \
        sliced_wasserstein_distance(a, _hue_mix(a, 0.25), **kw)


def test_laplacian_pyramid_matches_scipy_reference():
    # ProGAN builds the pyramid with scipy.ndimage.convolve(mode='mirror') (= cv2.pyrDown/Up).
    from scipy.ndimage import convolve
    k = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1])[None, None] / 256.0
    x = _blob_images(2, 16, seed=3).double()
    g1 = convolve(x.numpy(), k, mode="mirror")[:, :, ::2, ::2]
    up = np.zeros_like(x.numpy())
    up[:, :, ::2, ::2] = g1
    band0 = x.numpy() - convolve(up, 4 * k, mode="mirror")
    levels = laplacian_pyramid(x, num_levels=2)
    torch.testing.assert_close(levels[0], torch.from_numpy(band0))
    torch.testing.assert_close(levels[1], torch.from_numpy(g1))


def test_swd_unequal_set_sizes_and_bad_shapes():
    a, b = _blob_images(10, 16, seed=1), _blob_images(6, 16, seed=2)
    res = sliced_wasserstein_distance(a, b, patches_per_image=16, dir_repeats=1, dirs_per_repeat=16)
    assert res.level_res == (16,) and res.mean > 0
    with pytest.raises(ValueError, match="smaller than min_res"):
        sliced_wasserstein_distance(a[:, :, :8, :8], b[:, :, :8, :8])


# ---------------------------------------------------------------------------- precision / recall

def test_knn_radii_batched_matches_brute_force():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(5))
    d = torch.from_numpy(np.linalg.norm(x.numpy()[:, None] - x.numpy()[None], axis=-1))
    expected = d.sort(dim=1).values[:, 3]       # Column 0 is the point itself.
    torch.testing.assert_close(knn_radii(x, k=3, batch_size=7), expected.float(), rtol=1e-4, atol=1e-4)


def test_precision_recall_on_point_clouds():
    g = torch.Generator().manual_seed(6)
    real = torch.rand(1000, 2, generator=g)
    assert precision_recall(real, real.clone(), k=3, batch_size=256) == (1.0, 1.0)
    assert precision_recall(real, real + 10.0, k=3) == (0.0, 0.0)
    # Fakes cover only the corner [0, 0.3]^2 of the real square: good quality, poor coverage.
    corner = 0.3 * torch.rand(1000, 2, generator=g)
    precision, recall = precision_recall(real, corner, k=3, batch_size=300)
    assert precision > 0.95 and recall < 0.2, (precision, recall)


# ---------------------------------------------------------------------------- alignment

def _unit(n: int, e: int, seed: int) -> torch.Tensor:
    x = torch.randn(n, e, generator=torch.Generator().manual_seed(seed))
    return torch.nn.functional.normalize(x, dim=1)


def test_mean_cosine_alignment():
    txt = _unit(64, 16, seed=0)
    assert mean_cosine_alignment(txt.clone(), txt) == pytest.approx(1.0)
    assert mean_cosine_alignment(-txt, txt) == pytest.approx(-1.0)
    img = _unit(64, 16, seed=1)
    assert mean_cosine_alignment(3 * img, txt) == pytest.approx(float((img * txt).sum(1).mean()), rel=1e-6)


def test_r_precision_oracle_chance_and_ties():
    txt = _unit(300, 32, seed=2)
    assert r_precision(txt.clone(), txt) == 1.0
    assert r_precision(txt.clone(), txt, distractor_txt_emb=_unit(500, 32, seed=3)) == 1.0
    img, rand_txt = _unit(3000, 32, seed=4), _unit(3000, 32, seed=5)
    chance = r_precision(img, rand_txt, num_distractors=99, seed=0)
    assert abs(chance - 0.01) < 0.006, chance      # 3 std of a Binomial(3000, 0.01) mean.
    assert r_precision(img, rand_txt, seed=1) == r_precision(img, rand_txt, seed=1)
    same = torch.ones(200, 8)
    assert r_precision(same, same) == 0.0           # Ties are not first.
    with pytest.raises(ValueError, match="distractor"):
        r_precision(txt[:50], txt[:50], num_distractors=99)


def test_embed_images_and_captions_routes_through_bundle():
    def encode(captions):
        ids = torch.tensor([[len(c), 0] for c in captions])
        return ids, ids != 0
    model = SimpleNamespace(encode_image=lambda img: img.mean(dim=(2, 3)),
                            encode_text=lambda ids, mask: torch.stack([ids[:, 0].float()] * 3, 1))
    bundle = SimpleNamespace(tokenizer=SimpleNamespace(encode=encode), model=model)
    img_emb, txt_emb = embed_images_and_captions(bundle, torch.zeros(2, 3, 4, 4), ["ab", "abcd"])
    assert img_emb.shape == txt_emb.shape == (2, 3)
    assert txt_emb[:, 0].tolist() == [2.0, 4.0]


# ---------------------------------------------------------------------------- feature extraction

def test_extract_features_rebatches_in_order_and_quantizes():
    calls = []

    def mean_colour(img):
        calls.append(img.shape[0])
        return img.mean(dim=(2, 3))
    extractor = ModuleExtractor("mean", mean_colour)
    g = torch.Generator().manual_seed(7)
    chunks = [torch.rand(n, 3, 4, 4, generator=g) * 2 - 1 for n in (2, 5, 1)]
    feats = extract_features(extractor, iter(chunks), batch=3, device="cpu", progress=False)
    assert calls == [3, 3, 2] and feats.shape == (8, 3)
    quantized = ((torch.cat(chunks) + 1) * 127.5).round() / 127.5 - 1
    torch.testing.assert_close(feats, quantized.mean(dim=(2, 3)))
    img_u8 = torch.randint(0, 256, (4, 3, 4, 4), dtype=torch.uint8, generator=g)
    feats_u8 = extract_features(extractor, [img_u8], batch=8, device="cpu", progress=False)
    torch.testing.assert_close(feats_u8, (img_u8.float() / 127.5 - 1).mean(dim=(2, 3)))


def test_make_feature_extractor_uses_encoder_with_antialiased_resize():
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.Dropout(0.5)).train()
    bundle = SimpleNamespace(model=SimpleNamespace(image_encoder=encoder))
    extractor = make_feature_extractor(bundle=bundle, resolution=8)
    assert extractor.name == "encoder" and not encoder.training
    img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(8)) * 2 - 1
    feats = extractor(img)
    assert feats.shape == (2, 5)
    small = torch.nn.functional.interpolate(img, size=(8, 8), mode="bilinear", antialias=True)
    torch.testing.assert_close(feats, encoder(small))
    with pytest.raises(ValueError, match="weights path or a TextEncoderBundle"):
        make_feature_extractor()
