"""Sliced Wasserstein distance on Laplacian-pyramid patches (Karras et al. 2018, ProGAN, app. D).

For each pyramid level (finest first, down to `min_res`): draw 7x7 neighbourhoods at random
positions of every image, normalise the descriptors of each set per channel (zero mean, unit
std over all patches and pixels), and compare the two descriptor clouds with the sliced
Wasserstein distance: project on random unit directions, sort, average |a_(i) - b_(i)|.
Each level's distance is multiplied by 1e3, as in the ProGAN tables.

The per-set normalisation follows ProGAN and makes the metric blind to a per-channel affine
colour change applied to a whole set (a global tint or contrast change); it sees changes of
texture, of colour distribution within and across images, and of cross-channel structure.
Needs no network weights.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

# 5x5 binomial filter [1, 4, 6, 4, 1]^T [1, 4, 6, 4, 1] / 256, the kernel of cv2.pyrDown.
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0])
_GAUSS_5X5 = torch.outer(_BINOMIAL, _BINOMIAL) / 256.0


@dataclass(frozen=True)
class SWDResult:
    level_res:      tuple[int, ...]     # Resolution of each pyramid level, finest first.
    level_dists:    tuple[float, ...]   # SWD x 1e3 per level.
    mean:           float               # Mean of level_dists.


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """x: [N, C, H, W] -> 5x5 binomial blur per channel with mirror ('reflect') borders."""
    c = x.shape[1]
    w = (_GAUSS_5X5 * gain).to(x).expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="reflect"), w, groups=c)


def _pyr_down(x: torch.Tensor) -> torch.Tensor:
    return _blur(x)[:, :, ::2, ::2]


def _pyr_up(x: torch.Tensor) -> torch.Tensor:
    """Zero-insertion upsampling x2, then the blur with gain 4 (restores the DC level)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x
    return _blur(up, gain=4.0)


def laplacian_pyramid(
    img:        torch.Tensor,   # [N, C, H, W] float.
    num_levels: int,            # Levels; level i has resolution H / 2^i.
) -> list[torch.Tensor]:
    """Band-pass levels G_i - up(G_{i+1}) for i < num_levels - 1, then the coarsest Gaussian."""
    levels = [img]
    for _ in range(1, num_levels):
        levels.append(_pyr_down(levels[-1]))
        levels[-2] = levels[-2] - _pyr_up(levels[-1])
    return levels


def _patch_descriptors(
    level:      torch.Tensor,       # One pyramid level [N, C, H, W].
    num_patches: int,               # Neighbourhoods per image.
    patch_size: int,                # Neighbourhood side (7 in ProGAN).
    generator:  torch.Generator,    # Draws the patch centres.
) -> torch.Tensor:
    """Random patch_size^2 neighbourhoods fully inside each image -> [N * num_patches, C, p, p]."""
    n, c, h, w = level.shape
    ys = torch.randint(0, h - patch_size + 1, (n, num_patches), generator=generator)
    xs = torch.randint(0, w - patch_size + 1, (n, num_patches), generator=generator)
    offs = torch.arange(patch_size)
    rows = (ys[..., None] + offs)[..., :, None]                         # [N, P, p, 1]
    cols = (xs[..., None] + offs)[..., None, :]                         # [N, P, 1, p]
    img_idx = torch.arange(n)[:, None, None, None]                      # [N, 1, 1, 1]
    patches = level.permute(0, 2, 3, 1)[img_idx, rows, cols]            # [N, P, p, p, C]
    return patches.permute(0, 1, 4, 2, 3).reshape(n * num_patches, c, patch_size, patch_size)


def _set_descriptors(
    img:        torch.Tensor,   # [N, 3, H, W] in [-1, 1].
    num_levels: int,
    num_patches: int,
    patch_size: int,
    seed:       int,            # Same seed for both sets: identical sets give identical patches.
    batch_size: int,
) -> list[torch.Tensor]:
    """Per level, the normalised, flattened descriptors of a whole set -> [N * P, C * p * p]."""
    gen = torch.Generator().manual_seed(seed)
    per_level: list[list[torch.Tensor]] = [[] for _ in range(num_levels)]
    for start in range(0, img.shape[0], batch_size):
        chunk = img[start:start + batch_size].to(torch.float32)
        for lod, level in enumerate(laplacian_pyramid(chunk, num_levels)):
            per_level[lod].append(_patch_descriptors(level.cpu(), num_patches, patch_size, gen))
    out = []
    for chunks in per_level:
        desc = torch.cat(chunks)
        # ProGAN: normalise each colour channel over all patches and pixels of this set.
        desc = desc - desc.mean(dim=(0, 2, 3), keepdim=True)
        desc = desc / desc.std(dim=(0, 2, 3), keepdim=True, unbiased=False).clamp_min(1e-12)
        out.append(desc.reshape(desc.shape[0], -1))
    return out


def sliced_wasserstein(
    a:                  torch.Tensor,       # Descriptors of set A [M, D].
    b:                  torch.Tensor,       # Descriptors of set B [M, D] (same M).
    dir_repeats:        int,                # Rounds of random directions.
    dirs_per_repeat:    int,                # Directions per round.
    generator:          torch.Generator,
) -> float:
    """Mean over random unit directions of the 1-D W1 distance between the projected sets.

    In 1-D with equal sample counts, W1 = mean_i |a_(i) - b_(i)| over the sorted samples.
    """
    assert a.ndim == 2 and a.shape == b.shape, (a.shape, b.shape)
    dists = []
    for _ in range(dir_repeats):
        dirs = torch.randn(a.shape[1], dirs_per_repeat, generator=generator).to(a.dtype)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        proj_a = torch.sort(a @ dirs, dim=0).values                     # [M, dirs]
        proj_b = torch.sort(b @ dirs, dim=0).values
        dists.append((proj_a - proj_b).abs().mean())
    return float(torch.stack(dists).mean())


def sliced_wasserstein_distance(
    imgs_a:             torch.Tensor,   # Set A [N, 3, H, W], float in [-1, 1].
    imgs_b:             torch.Tensor,   # Set B [N', 3, H, W], same H, W.
    min_res:            int = 16,       # Coarsest pyramid level (ProGAN: 16).
    patch_size:         int = 7,        # Neighbourhood side (ProGAN: 7).
    patches_per_image:  int = 128,      # ProGAN: 128.
    dir_repeats:        int = 4,        # ProGAN: 4 rounds ...
    dirs_per_repeat:    int = 128,      # ... of 128 random directions.
    seed:               int = 0,        # Patch positions and directions; fixed -> deterministic.
    batch_size:         int = 256,      # Images per pyramid computation (bounds memory).
    progress:           bool = False,   # tqdm bar: each set's descriptors, then each level's distance.
) -> SWDResult:
    """ProGAN's SWD between two image sets; per-level distances x 1e3 and their mean.

    Levels run from H down to the smallest power-of-two division >= min_res. If the sets
    differ in size, each level's descriptors are subsampled at random to the smaller count
    (the sorted comparison needs equal counts).
    """
    for name, x in (("imgs_a", imgs_a), ("imgs_b", imgs_b)):
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[0] < 1:
            raise ValueError(f"{name}: expected [N, 3, H, W], got {tuple(x.shape)}")
    if imgs_a.shape[2:] != imgs_b.shape[2:]:
        raise ValueError(f"image sizes differ: {tuple(imgs_a.shape[2:])} vs {tuple(imgs_b.shape[2:])}")
    level_res, res = [], min(imgs_a.shape[2:])
    while res >= max(min_res, patch_size):
        level_res.append(res)
        res //= 2
    if not level_res:
        raise ValueError(f"images of {tuple(imgs_a.shape[2:])} are smaller than min_res={min_res}")
    if any(s % 2 ** (len(level_res) - 1) for s in imgs_a.shape[2:]):
        raise ValueError(f"image size {tuple(imgs_a.shape[2:])} must be divisible by "
                         f"2^{len(level_res) - 1} for a {len(level_res)}-level pyramid")
    args = (len(level_res), patches_per_image, patch_size, seed, batch_size)
    # The sorts of the projected descriptors dominate: minutes for 10k images on a CPU.
    with tqdm(total=2 + len(level_res), desc="swd", unit="part", disable=not progress) as bar:
        desc_a = _set_descriptors(imgs_a, *args)
        bar.update()
        desc_b = _set_descriptors(imgs_b, *args)
        bar.update()
        gen = torch.Generator().manual_seed(seed + 1)
        dists = []
        for da, db in zip(desc_a, desc_b):
            m = min(da.shape[0], db.shape[0])
            if da.shape[0] > m:
                da = da[torch.randperm(da.shape[0], generator=gen)[:m]]
            if db.shape[0] > m:
                db = db[torch.randperm(db.shape[0], generator=gen)[:m]]
            dists.append(1e3 * sliced_wasserstein(da, db, dir_repeats, dirs_per_repeat, gen))
            bar.update()
    return SWDResult(tuple(level_res), tuple(dists), float(sum(dists) / len(dists)))
