"""GAN projector: the w (or per-layer w+) whose image matches a target picture, and that w
re-rendered under other words (docs/architecture.md, "GAN projector").

Projection follows StyleGAN2's (Karras et al. 2020, sec. 5 and appendix D; NVlabs
`projector.py`): start at the caption's mean w, add Gaussian noise to w that shrinks to zero
over the first 75 % of the steps, and run Adam with a learning rate that ramps up over the first
5 % and down (cosine) over the last 25 %. The distance is measured in the project's own frozen
image tower instead of VGG/LPIPS (nothing outside the checkpoint is needed):

    loss = pixel_weight   * mean((G(w) - x)^2)                         pixels in [-1, 1]
         + embed_weight   * (1 - cos(I(G(w)), I(x)))                   the contrastive embedding
         + feature_weight * mean_l mean_hw |f_l(G(w)) - f_l(x)|^2      f_l: the tower's stage l,
                                                                       unit-normalised over channels
                                                                       (LPIPS, Zhang et al. 2018,
                                                                       eq. 1, with unit weights)
         + noise_reg_weight * sum_scales (autocorr_x^2 + autocorr_y^2) only with optimize_noise

The caption part of w (its last `text_w_dim` entries, when the generator has one) is a
function of the caption alone, so it is held at the start caption's value and only the MLP part
`w[..., :w_dim]` is optimised. An edit then changes the words exactly where the generator reads
them (`edit_w`):

    w_edit[..., :w_dim] = w[..., :w_dim] + strength * (mean_w(new)[:w_dim] - mean_w(old)[:w_dim])
    w_edit[..., w_dim:] = caption_part(new)                            (only when text_w_dim > 0)

With text_w_dim = 0 (older checkpoints) the mean-w shift is the only edit, and strength 0
changes nothing. Without a caption the start is the empty caption's mean w (the caption the
DDPM uses for "no caption"): a worse start, and the shift then also adds what the new caption
says about everything.

Noise maps are optimised only with `optimize_noise`: the generator adds them with one learned
strength per layer, and on the demo model those strengths are all below 6e-4 (noise of std 1
moves a feature by less than 0.001), so there they can explain nothing and stay off.

Images are [B, 3, R, R] in [-1, 1] at the sampler's resolution; `w` is [B, L, w_total] with
L = 1 (one w for every layer) or L = num_ws (w+). The sampler is what `load_sampler` gives for a
GAN checkpoint: `.G`, `.text`, `.stage`, `.alpha`, `.embed(captions)`, `.caption_mean_w(text)`.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_t2i.models.generator import Generator
from stylegan_t2i.models.layers import NoiseInjection, assert_shape

# The edit's default strength: on the demo model, 1 made shape edits follow more often than 0
# (the caption part alone) and colour edits as often; 2 began to change other attributes
# (benchmarks/RESULTS.md, "GAN projector (issue 18)").
EDIT_STRENGTH = 1.0


@dataclass(frozen=True)
class ProjectorConfig:
    num_steps:          int = 300       # Adam steps.
    w_plus:             bool = False    # Optimise one w per style layer (w+) instead of one w for all.
    lr:                 float = 0.1     # Peak learning rate (NVlabs: initial_learning_rate).
    lr_rampup:          float = 0.05    # Fraction of the steps the lr ramps up over (linear).
    lr_rampdown:        float = 0.25    # Fraction of the steps it ramps down over at the end (cosine).
    w_noise:            float = 0.05    # Initial noise on w, in spreads of w (NVlabs: initial_noise_factor).
    w_noise_ramp:       float = 0.75    # Fraction of the steps over which that noise falls to 0 (quadratically).
    optimize_noise:     bool = False    # Also optimise the per-layer noise maps (see `noise_layers`).
    noise_reg_weight:   float = 1e5     # NVlabs' regularize_noise_weight.
    pixel_weight:       float = 1.0     # Weight of the pixel MSE.
    embed_weight:       float = 1.0     # Weight of 1 - cos of the image-tower embeddings.
    feature_weight:     float = 1.0     # Weight of the image-tower feature distance.
    num_w_samples:      int = 1000      # z samples that measure the spread of w around the caption's mean.
    frame_every:        int = 25        # Steps between the frames kept for the progress strip.
    seed:               int = 0         # Seeds the noise added to w (and the spread's z).

    def __post_init__(self) -> None:
        for name in ("num_steps", "num_w_samples", "frame_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"ProjectorConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr_rampup", "lr_rampdown", "w_noise_ramp"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"ProjectorConfig.{name} must be in (0, 1], got {getattr(self, name)}")
        for name in ("lr", "w_noise", "noise_reg_weight", "pixel_weight", "embed_weight", "feature_weight"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"ProjectorConfig.{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class Projection:
    """What `project` found, per target image."""

    w:          torch.Tensor                    # [B, L, w_total]; L = 1, or num_ws for w+.
    captions:   list[str]                       # The start captions ("" where none was given).
    noise:      dict[str, torch.Tensor] | None  # {layer name: [B, 1, r, r]} with optimize_noise, else None.
    losses:     list[float] = field(default_factory=list)  # Mean loss over the batch, per step.
    frames:     list[tuple[int, torch.Tensor]] = field(default_factory=list)  # (step, img [B, 3, R, R]).

# ----------------------------------------------------------------------------------------------
# Rendering a w or w+.


def style_layers(G: Generator, stage: int) -> list[nn.Module]:
    """The affine layers (w -> styles) of synthesis blocks 0..stage, in order: conv0, conv1, toRGB
    per block (the 4x4 block has no conv0). Row i of a w+ feeds style layer i."""
    layers = []
    for block in G.synthesis_net.blocks[: stage + 1]:
        layers += [m.affine for m in (block.conv0, block.conv1, block.torgb) if m is not None]
    return layers


def num_ws(G: Generator, stage: int) -> int:
    """L of a w+ at this stage."""
    return len(style_layers(G, stage))


@contextlib.contextmanager
def per_layer_w(G: Generator, stage: int, ws: torch.Tensor) -> Iterator[None]:
    """While active, style layer i of G reads ws[:, i] instead of the w given to synthesis.

    The synthesis network passes one w to every layer; a forward pre-hook on each affine layer
    swaps in its own row, so w+ needs no second copy of the synthesis code.
    """
    layers = style_layers(G, stage)
    assert_shape(ws, [None, len(layers), G.cfg.w_total])
    handles = [layer.register_forward_pre_hook(lambda _m, _args, i=i: (ws[:, i],))
               for i, layer in enumerate(layers)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def noise_layers(G: Generator, stage: int) -> dict[str, NoiseInjection]:
    """{name: NoiseInjection} of the synthesis layers that run at this stage."""
    return {f"blocks.{b}.{name}": m.noise for b, block in enumerate(G.synthesis_net.blocks[: stage + 1])
            for name, m in (("conv0", block.conv0), ("conv1", block.conv1)) if m is not None}


@contextlib.contextmanager
def explicit_noise(G: Generator, stage: int, noise: dict[str, torch.Tensor] | None) -> Iterator[None]:
    """While active, noise_mode='const' adds noise[name] ([B, 1, r, r]) to layer `name` instead of
    its fixed buffer (NVlabs' projector optimises those buffers in a copy of G the same way)."""
    if noise is None:
        yield
        return
    layers = noise_layers(G, stage)
    assert set(noise) == set(layers), (sorted(noise), sorted(layers))
    saved = {name: m.noise_const for name, m in layers.items()}
    try:
        for name, m in layers.items():
            m.noise_const = noise[name]
        yield
    finally:
        for name, m in layers.items():
            m.noise_const = saved[name]


def synthesize(sampler: Any, w: torch.Tensor, noise: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
    """w [B, L, w_total] (L = 1 or num_ws) -> img [B, 3, R, R] at the sampler's stage and fade-in,
    with the fixed noise buffers (as the sampler renders) unless `noise` is given."""
    G, stage = sampler.G, sampler.stage
    assert w.ndim == 3 and w.shape[1] in (1, num_ws(G, stage)), (tuple(w.shape), num_ws(G, stage))
    with explicit_noise(G, stage, noise):
        if w.shape[1] == 1:
            return G.synthesis(w[:, 0], stage, sampler.alpha, noise_mode="const")
        with per_layer_w(G, stage, w):
            return G.synthesis(w[:, 0], stage, sampler.alpha, noise_mode="const")

# ----------------------------------------------------------------------------------------------
# The start, the schedule and the loss.


def caption_part(G: Generator, text: torch.Tensor) -> torch.Tensor:
    """text [B, text_dim] -> the caption part of w, [B, text_w_dim] ([B, 0] without one); it does
    not depend on z, so any z gives it exactly."""
    z = torch.zeros([text.shape[0], G.cfg.z_dim], device=text.device)
    return G.mapping_net(z, text)[:, G.cfg.w_dim:]


@torch.no_grad()
def w_spread(G: Generator, text: torch.Tensor, mean: torch.Tensor, num: int, seed: int) -> torch.Tensor:
    """[B]: sqrt(E|w - mean|^2) over `num` z per caption, the scale of NVlabs' w noise (w_std)."""
    z = torch.randn([text.shape[0] * num, G.cfg.z_dim], generator=torch.Generator().manual_seed(seed))
    w = G.mapping_net(z.to(text.device), text.repeat_interleave(num, dim=0)).view(text.shape[0], num, -1)
    return (w - mean[:, None]).square().sum(dim=2).mean(dim=1).sqrt()


def lr_at(t: float, cfg: ProjectorConfig) -> float:
    """Learning rate at t = step / num_steps (NVlabs projector: linear ramp-up, cosine ramp-down)."""
    ramp = min(1.0, (1 - t) / cfg.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return cfg.lr * ramp * min(1.0, t / cfg.lr_rampup)


def w_noise_at(t: float, cfg: ProjectorConfig) -> float:
    """Std of the noise added to w at t, in units of the spread of w (NVlabs: quadratic decay)."""
    return cfg.w_noise * max(0.0, 1 - t / cfg.w_noise_ramp) ** 2


def noise_regularization(noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B]: sum over layers and scales of the squared one-pixel autocorrelations of each noise map,
    in x and in y, halving the map down to 8x8 (NVlabs projector: keeps the optimised noise from
    hiding image content in spatially correlated patterns)."""
    reg = 0
    for v in noise.values():                                            # v: [B, 1, r, r]
        while True:
            reg = reg + (v * torch.roll(v, 1, dims=3)).mean(dim=(1, 2, 3)).square()
            reg = reg + (v * torch.roll(v, 1, dims=2)).mean(dim=(1, 2, 3)).square()
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return reg


def encoder_features(model: nn.Module, img: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """img [B, 3, H, W] in [-1, 1] -> (the image tower's stage outputs, each unit-normalised over
    channels, [B, C_l, h_l, w_l]; the unit-norm embedding [B, E]) in one pass."""
    enc = model.image_encoder
    # Copied from ImageEncoder.forward (and ContrastiveModel.encode_image's normalisation), kept
    # apart so that the stage outputs come out of the same pass; a test checks it equals them.
    res = enc.cfg.resolution
    x = img
    if x.shape[2:] != (res, res):
        x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
    feats = []
    for stage in enc.stages:
        x = stage(x)
        feats.append(F.normalize(x, dim=1))
    return feats, F.normalize(enc.proj(enc.norm(x.flatten(1))), dim=-1)


class ProjectionLoss:
    """The loss against fixed targets, per image (module docstring)."""

    def __init__(self, model: nn.Module, target: torch.Tensor, cfg: ProjectorConfig):
        self.model, self.target, self.cfg = model, target, cfg
        with torch.no_grad():
            self.target_feats, self.target_embed = encoder_features(model, target)

    def __call__(self, img: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """img [B, 3, R, R] -> (loss [B], {part: [B]})."""
        assert_shape(img, list(self.target.shape))
        feats, embed = encoder_features(self.model, img)
        parts = {
            "pixel": (img - self.target).square().mean(dim=(1, 2, 3)),
            "embed": 1 - (embed * self.target_embed).sum(dim=1),
            "feature": sum((f - t).square().sum(dim=1).mean(dim=(1, 2)) for f, t in zip(feats, self.target_feats))
                       / len(feats),
        }
        c = self.cfg
        loss = c.pixel_weight * parts["pixel"] + c.embed_weight * parts["embed"] + c.feature_weight * parts["feature"]
        return loss, parts

# ----------------------------------------------------------------------------------------------
# Projecting and editing.


def start_w(sampler: Any, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(the captions' mean w [B, w_total] with its caption part exact, their text [B, text_dim])."""
    text = sampler.embed(list(captions))
    with torch.no_grad():
        mean = sampler.caption_mean_w(text).clone()
        mean[:, sampler.G.cfg.w_dim:] = caption_part(sampler.G, text)
    return mean, text


def project(
    sampler:    Any,                            # A GAN sampler (module docstring).
    target:     torch.Tensor,                   # [B, 3, R, R] in [-1, 1], R = sampler.resolution.
    captions:   Sequence[str | None] | None = None,  # What each target shows; None / "": the empty caption.
    cfg:        ProjectorConfig = ProjectorConfig(),
) -> Projection:
    """Optimise w (or w+) so that G(w) matches each target; the B targets are independent (the
    loss is a sum over images and Adam is element-wise), so a batch projects them all at once."""
    G = sampler.G
    device, res = next(G.parameters()).device, 4 * 2 ** sampler.stage
    b = target.shape[0]
    assert_shape(target, [None, 3, res, res])
    captions = [c or "" for c in (captions if captions is not None else [None] * b)]
    assert len(captions) == b, (len(captions), b)
    mean, text = start_w(sampler, captions)
    spread = w_spread(G, text, mean, cfg.num_w_samples, cfg.seed)
    d, layers = G.cfg.w_dim, num_ws(G, sampler.stage) if cfg.w_plus else 1
    w_mlp = mean[:, None, :d].repeat(1, layers, 1).requires_grad_(True)     # [B, L, w_dim]
    fixed = mean[:, None, d:].expand(-1, layers, -1)                          # [B, L, text_w_dim]
    noise = _start_noise(G, sampler.stage, b) if cfg.optimize_noise else None
    opt = torch.optim.Adam([w_mlp] + list((noise or {}).values()), betas=(0.9, 0.999), lr=cfg.lr)
    loss_fn = ProjectionLoss(sampler.text.model, target.to(device, torch.float32), cfg)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    losses, kept = [], [(0, w_mlp.detach().clone(), _clone(noise))]
    for step in range(cfg.num_steps):
        t = step / cfg.num_steps
        for group in opt.param_groups:
            group["lr"] = lr_at(t, cfg)
        jitter = torch.randn(w_mlp.shape, generator=gen).to(device) * (spread * w_noise_at(t, cfg))[:, None, None]
        loss, _ = loss_fn(synthesize(sampler, torch.cat([w_mlp + jitter, fixed], dim=2), noise))
        if noise is not None:
            loss = loss + cfg.noise_reg_weight * noise_regularization(noise)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
        _normalize_noise(noise)
        losses.append(loss.mean().item())
        if (step + 1) % cfg.frame_every == 0 or step + 1 == cfg.num_steps:
            kept.append((step + 1, w_mlp.detach().clone(), _clone(noise)))
    with torch.no_grad():
        frames = [(s, synthesize(sampler, torch.cat([wm, fixed], dim=2), nz)) for s, wm, nz in kept]
    return Projection(w=torch.cat([w_mlp.detach(), fixed], dim=2), captions=captions, noise=_clone(noise),
                      losses=losses, frames=frames)


def _start_noise(G: Generator, stage: int, batch: int) -> dict[str, torch.Tensor]:
    """Each layer's fixed noise buffer (what the sampler renders with), one copy per image, as a leaf."""
    return {name: m.noise_const.detach().expand(batch, 1, -1, -1).clone().requires_grad_(True)
            for name, m in noise_layers(G, stage).items()}


@torch.no_grad()
def _normalize_noise(noise: dict[str, torch.Tensor] | None) -> None:
    """Zero mean, unit variance per map after each step (NVlabs projector)."""
    for v in (noise or {}).values():
        v -= v.mean(dim=(1, 2, 3), keepdim=True)
        v *= v.square().mean(dim=(1, 2, 3), keepdim=True).rsqrt()


def _clone(noise: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | None:
    return None if noise is None else {k: v.detach().clone() for k, v in noise.items()}


@torch.no_grad()
def edit_w(
    sampler:        Any,                # A GAN sampler.
    w:              torch.Tensor,       # [B, L, w_total], e.g. Projection.w.
    old_captions:   Sequence[str],      # What the pictures show (the projection's start captions).
    new_captions:   Sequence[str],      # What they should show.
    strength:       float = EDIT_STRENGTH,  # Of the mean-w shift of the MLP part (module docstring).
) -> torch.Tensor:
    """-> w [B, L, w_total]: the caption part replaced by the new captions' (when the generator
    has one) and the MLP part moved by strength * (mean_w(new) - mean_w(old))."""
    d = sampler.G.cfg.w_dim
    assert w.ndim == 3 and w.shape[0] == len(old_captions) == len(new_captions), (w.shape, len(old_captions))
    old, _ = start_w(sampler, old_captions)
    new, _ = start_w(sampler, new_captions)
    out = w.clone()
    out[..., :d] += strength * (new[:, None, :d] - old[:, None, :d])
    out[..., d:] = new[:, None, d:]
    return out


def project_and_edit(
    sampler:    Any,                    # A GAN sampler.
    target:     torch.Tensor,           # [1, 3, R, R] in [-1, 1].
    caption:    str | None,             # What the target shows (None: the empty caption).
    captions:   Sequence[str],          # N captions to re-render it with.
    strength:   float = EDIT_STRENGTH,
    cfg:        ProjectorConfig = ProjectorConfig(),
) -> torch.Tensor:
    """-> img [N, 3, R, R] in [-1, 1]: the target projected once, then edited to each caption."""
    result = project(sampler, target, [caption], cfg)
    n = len(captions)
    w = edit_w(sampler, result.w.expand(n, -1, -1), result.captions * n, list(captions), strength)
    noise = None if result.noise is None else {k: v.expand(n, -1, -1, -1) for k, v in result.noise.items()}
    with torch.no_grad():
        return synthesize(sampler, w, noise).clamp(-1, 1)


@torch.no_grad()
def psnr(img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] PSNR in dB of images in [-1, 1] (peak-to-peak 2, so it equals the PSNR of the uint8 images)."""
    mse = (img.clamp(-1, 1) - target.clamp(-1, 1)).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(4 / mse.clamp_min(1e-12))


@torch.no_grad()
def encoder_distance(sampler: Any, img: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] 1 - cos of the image-tower embeddings of img and target (0 = the same to the encoder)."""
    return 1 - (sampler.text.embed_images(img) * sampler.text.embed_images(target)).sum(dim=1)
