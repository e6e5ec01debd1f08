"""Inference: captions (+ seeds) -> images, the same code for every caller (docs/architecture.md,
"Extension points").

Every sampler follows `Sampler`: it is built from live networks (a trainer's progress grids) or
with `from_checkpoint` (generate.py, evaluation, the Python API), and
`sample(captions, seeds, **options)` gives img [N, 3, R, R] in [-1, 1]. Each sampler checks its
own options (`GanOptions`, `DdpmOptions`), so callers pass them through and never switch on a
checkpoint's kind. `load_sampler(path, device)` picks the class from `SAMPLERS` by the
checkpoint's kind; a new model kind adds one class there.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, Sequence, TypeVar

import torch
from tqdm import tqdm

from stylegan_t2i.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from stylegan_t2i.config import config_from_dict
from stylegan_t2i.diffusion import (
    DDIMScheduler,
    DDPMScheduler,
    SchedulerConfig,
    UNet,
    UNetConfig,
    guided_eps,
    img2img_start,
)
from stylegan_t2i.models.generator import Generator, GeneratorConfig
from stylegan_t2i.text.pretrain import TextEncoderBundle, bundle_from_payload

# The demo model, package data: in the repository a link to pretrained/demo-gan.pt (beside its model
# card), in an installed wheel a copy of that file.
DEMO_MODEL = Path(__file__).resolve().parent / "pretrained" / "demo-gan.pt"

OptionsT = TypeVar("OptionsT")


def seeded_normal(seeds: Sequence[int], dim: int, device: torch.device) -> torch.Tensor:
    """[len(seeds), dim] standard normal rows, row i drawn from its own seed (on the CPU, so a
    seed gives the same latent on every device)."""
    rows = [torch.randn(dim, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device)


class Sampler(Protocol):
    """What every sampler in SAMPLERS offers (docs/architecture.md, "Extension points")."""

    kind:               ClassVar[str]               # Its checkpoint kind: the key in SAMPLERS.
    export_keys:        ClassVar[tuple[str, ...]]   # The checkpoint entries generation needs.
    resolution:         int                         # R of the images `sample` gives.
    train_resolution:   int                         # R training grows towards (a GAN snapshot may be below it).
    kimg:               float                       # Training images shown, in thousands (nan: live networks).
    text:               TextEncoderBundle           # The frozen text encoder.
    batch:              int                         # Images per network pass.
    progress:           bool                        # tqdm bar while sampling.

    @classmethod
    def from_checkpoint(cls, path_or_data: str | Path | dict, device: torch.device | str = "cpu") -> Sampler:
        """The sampler of a checkpoint of this kind: a path, or the dict `load_checkpoint` gave."""

    @classmethod
    def _from_data(cls, data: dict, device: torch.device | str) -> Sampler:
        """The hook `from_checkpoint` and `load_sampler` build through: from a loaded checkpoint
        dict, letting a missing key or a mismatched state dict raise as is."""

    @property
    def network(self) -> torch.nn.Module:
        """The image network (the generator, the UNet)."""

    def options(self, **options: Any) -> Any:
        """The options of `sample` as this sampler's frozen dataclass: one-line ValueError on an
        unknown name or a bad value."""

    def sample(self, captions: Sequence[str], seeds: Sequence[int], **options: Any) -> torch.Tensor:
        """img [N, 3, R, R] in [-1, 1]: image i from captions[i], seeds[i] and the options only."""


def parse_options(cls: type[OptionsT], kind: str, options: dict[str, Any]) -> OptionsT:
    """`options` as the frozen dataclass `cls`, which checks the values; an unknown name is a
    one-line ValueError that names the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(cls)]
    unknown = [name for name in options if name not in allowed]
    if unknown:
        raise ValueError(f"unknown sampling option(s) {', '.join(unknown)} for a {kind} checkpoint; "
                         f"it takes {', '.join(allowed)}")
    return cls(**options)


def _check_number(name: str, value: Any, low: float = -math.inf, high: float = math.inf) -> None:
    """One-line ValueError unless `value` is a finite real number in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not low <= value <= high:
        bounds = (f" in [{low:g}, {high:g}]" if math.isfinite(low) and math.isfinite(high) else
                  f" >= {low:g}" if math.isfinite(low) else "")
        raise ValueError(f"option {name} must be a finite number{bounds}, got {value!r}")


# ----------------------------------------------------------------------------------------------
# GAN.

@dataclass(frozen=True)
class GanOptions:
    """What `GanSampler.sample` takes besides captions and seeds."""

    truncation: float = 1.0     # psi toward the caption's mean w: 1 = off, 0 = the mean itself.

    def __post_init__(self) -> None:
        # Bounded so that lerp(target, w, psi) stays finite in float32.
        _check_number("truncation", self.truncation, -1e6, 1e6)


class GanSampler:
    """The EMA generator of a `gan` checkpoint (or of a trainer) plus its frozen text encoder."""

    kind = "gan"
    export_keys = ("config", "G_ema", "progress", "text_encoder", "sample")

    def __init__(self,
        G:          Generator,                  # The EMA generator; put in eval mode, no grad.
        text:       TextEncoderBundle,          # Its frozen text encoder.
        stage:      int,                        # Growth stage to sample at: R = 4 * 2**stage.
        alpha:      float,                      # Fade-in of that stage (a snapshot taken mid-growth).
        device:     torch.device | str,
        batch:      int = 64,                   # Images per G pass.
        kimg:       float = math.nan,           # Training images shown, in thousands (metadata).
        progress:   bool = False,               # tqdm bar over the batches.
    ):
        self.device = torch.device(device)
        self.G = G.eval().requires_grad_(False).to(self.device)
        self.text = text.to(self.device)
        self.stage, self.alpha = int(stage), float(alpha)
        self.resolution, self.train_resolution = 4 * 2 ** self.stage, G.cfg.max_res
        self.batch, self.kimg, self.progress = batch, kimg, progress

    @classmethod
    def from_checkpoint(cls, path_or_data: str | Path | dict, device: torch.device | str = "cpu") -> GanSampler:
        """The sampler of a `gan` checkpoint (a path, or the dict `load_checkpoint` gave); a
        snapshot taken mid-growth samples at the stage and fade-in it was training at."""
        data, source = _checkpoint_data(path_or_data, (cls.kind,))
        return _build_sampler(cls, data, device, source)

    @classmethod
    def _from_data(cls, data: dict, device: torch.device | str) -> GanSampler:
        """From a loaded checkpoint dict; a missing key or a mismatched state dict raises as is
        (`_build_sampler` turns that into a CheckpointError)."""
        G = Generator(config_from_dict(GeneratorConfig, data["config"]["generator"]))
        G.load_state_dict(data["G_ema"])
        progress = data["progress"]
        return cls(G, bundle_from_payload(data["text_encoder"]), progress["stage"], progress["alpha"], device,
                   kimg=progress["nimg"] / 1000)

    @property
    def network(self) -> torch.nn.Module:
        return self.G

    def options(self, **options: Any) -> GanOptions:
        return parse_options(GanOptions, self.kind, options)

    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        """[N, text_dim] sentence embeddings."""
        return self.text.encode(list(captions), self.device)[2]

    def caption_path(self, a: str, b: str, frames: int) -> torch.Tensor:
        """[frames, text_dim] sentence embeddings evenly spaced from caption a's to caption b's
        (both ends included): the text side of an interpolation strip."""
        ends = self.embed([a, b])
        t = torch.linspace(0, 1, frames, device=ends.device)[:, None]
        return torch.lerp(ends[0].expand(frames, -1), ends[1].expand(frames, -1), t)

    @torch.no_grad()
    def synthesize(self, text: torch.Tensor, z: torch.Tensor, truncation: float = 1.0) -> torch.Tensor:
        """text: [N, text_dim], z: [N, z_dim] -> img [N, 3, R, R]; batched, noise fixed."""
        out = []
        for i in tqdm(range(0, len(z), self.batch), desc="generating", disable=not self.progress, leave=False):
            t, zz = text[i:i + self.batch], z[i:i + self.batch]
            target = self.caption_mean_w(t) if truncation != 1 else None
            out.append(self.G(zz, t, self.stage, self.alpha, truncation_psi=truncation,
                              truncation_target=target, noise_mode="const").float().clamp(-1, 1))
        return torch.cat(out)

    def caption_mean_w(self, text: torch.Tensor) -> torch.Tensor:
        """[N, w_dim] truncation targets: each caption's mean w over the same fixed set of z, so
        a caption's target does not depend on the rest of the batch."""
        rows = [self.G.caption_mean_w(t[None], generator=torch.Generator(self.device).manual_seed(0))
                for t in text]
        return torch.cat(rows)

    def sample(self, captions: Sequence[str], seeds: Sequence[int], **options: Any) -> torch.Tensor:
        """img [N, 3, R, R] in [-1, 1], image i from captions[i] and seeds[i] (options: GanOptions);
        same caption + seed -> same image."""
        opts = self.options(**options)
        assert len(captions) == len(seeds), (len(captions), len(seeds))
        z = seeded_normal(seeds, self.G.cfg.z_dim, self.device)
        return self.synthesize(self.embed(captions), z, opts.truncation)


# ----------------------------------------------------------------------------------------------
# DDPM.

# Seed offset of an image's per-step sampling noise, so that it never repeats the initial noise
# drawn from the seed itself (a fresh generator with the same seed would give the same numbers).
STEP_NOISE_SEED_OFFSET = 1 << 32


@dataclass(frozen=True)
class DdpmOptions:
    """What `DdpmSampler.sample` takes besides captions and seeds."""

    steps:      int = 50                        # Inference steps, 1..T.
    guidance:   float = 3.0                     # Classifier-free guidance scale w (1 = off, 0 = unconditional).
    sampler:    str = "ddim"                    # 'ddim' or 'ddpm' (ancestral).
    eta:        float = 0.0                     # DDIM η >= 0: 0 deterministic, 1 = DDPM variance.
    init_image: torch.Tensor | None = None      # [1 or N, 3, R, R] in [-1, 1]: img2img start.
    strength:   float = 0.6                     # img2img: fraction of the schedule re-run, in [0, 1].

    def __post_init__(self) -> None:
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise ValueError(f"option steps must be an integer >= 1, got {self.steps!r}")
        _check_number("guidance", self.guidance)
        if self.sampler not in ("ddim", "ddpm"):
            raise ValueError(f"option sampler must be 'ddim' or 'ddpm', got {self.sampler!r}")
        _check_number("eta", self.eta, low=0)
        _check_number("strength", self.strength, low=0, high=1)


def reverse_diffusion(
    eps_fn:     Callable[[torch.Tensor, int], torch.Tensor],    # (x_t [B, C, H, W], t) -> ε̃ [B, C, H, W].
    scheduler:  DDPMScheduler | DDIMScheduler,                  # With set_timesteps already called.
    x:          torch.Tensor,                                   # [B, C, H, W] start: x_T, or img2img's x_t.
    timesteps:  torch.Tensor,                                   # Descending timesteps to run.
    generators: Sequence[torch.Generator] = (),                 # One per image: its step noise (stochastic steps).
    progress:   bool = False,                                   # tqdm bar over the steps.
) -> torch.Tensor:
    """The reverse process from x down to x0 (DDPM: Ho et al. 2020 alg. 2; DDIM: Song et al.
    2021 eq. 12). A stochastic step runs one image at a time, so image i's noise comes from
    generators[i] alone and neither the batch nor the other images change it."""
    stochastic = isinstance(scheduler, DDPMScheduler) or scheduler.eta > 0
    assert not stochastic or len(generators) == x.shape[0], (len(generators), x.shape)
    for t in tqdm(timesteps.tolist(), desc="sampling", disable=not progress, leave=False):
        eps = eps_fn(x, t)
        if stochastic:
            x = torch.cat([scheduler.step(eps[j:j + 1], t, x[j:j + 1], generator=g) for j, g in enumerate(generators)])
        else:
            x = scheduler.step(eps, t, x)
    return x


class DdpmSampler:
    """The EMA UNet of a `ddpm` checkpoint (or of a trainer), its noise schedule and its frozen
    text encoder."""

    kind = "ddpm"
    export_keys = ("config", "unet_ema", "progress", "text_encoder", "sample")

    def __init__(self,
        unet:           UNet,                   # The ε-predictor (the EMA copy); put in eval mode, no grad.
        scheduler_cfg:  SchedulerConfig,        # The noise schedule it was trained with.
        text:           TextEncoderBundle,      # Its frozen text encoder.
        device:         torch.device | str,
        batch:          int = 64,               # Images per UNet pass (twice that with guidance).
        kimg:           float = math.nan,       # Training images shown, in thousands (metadata).
        progress:       bool = False,           # tqdm bar over the denoising steps.
    ):
        self.device = torch.device(device)
        self.unet = unet.eval().requires_grad_(False).to(self.device)
        self.scheduler_cfg = scheduler_cfg
        self.text = text.to(self.device)
        self.resolution = self.train_resolution = unet.cfg.resolution
        self.batch, self.kimg, self.progress = batch, kimg, progress

    @classmethod
    def from_checkpoint(cls, path_or_data: str | Path | dict, device: torch.device | str = "cpu") -> DdpmSampler:
        """The sampler of a `ddpm` checkpoint: a path, or the dict `load_checkpoint` gave."""
        data, source = _checkpoint_data(path_or_data, (cls.kind,))
        return _build_sampler(cls, data, device, source)

    @classmethod
    def _from_data(cls, data: dict, device: torch.device | str) -> DdpmSampler:
        """From a loaded checkpoint dict; a missing key or a mismatched state dict raises as is
        (`_build_sampler` turns that into a CheckpointError)."""
        c = data["config"]
        unet = UNet(config_from_dict(UNetConfig, c["unet"]))
        unet.load_state_dict(data["unet_ema"])
        return cls(unet, config_from_dict(SchedulerConfig, c["scheduler"]), bundle_from_payload(data["text_encoder"]),
                   device, kimg=data["progress"]["nimg"] / 1000)

    @property
    def network(self) -> torch.nn.Module:
        return self.unet

    def options(self, **options: Any) -> DdpmOptions:
        """DdpmOptions, also checked against this model: steps <= T and the init image's size."""
        opts = parse_options(DdpmOptions, self.kind, options)
        num_train, res = self.scheduler_cfg.num_train_timesteps, self.resolution
        if opts.steps > num_train:
            raise ValueError(f"option steps must be at most the {num_train} training timesteps, got {opts.steps}")
        init = opts.init_image
        if init is not None and not (isinstance(init, torch.Tensor) and init.shape[1:] == (3, res, res)):
            got = tuple(init.shape) if isinstance(init, torch.Tensor) else type(init).__name__
            raise ValueError(f"option init_image must be a tensor [1 or N, 3, {res}, {res}] in [-1, 1], got {got}")
        return opts

    @torch.no_grad()
    def sample(self, captions: Sequence[str], seeds: Sequence[int], **options: Any) -> torch.Tensor:
        """img [N, 3, R, R] in [-1, 1] (options: DdpmOptions). Image i depends only on captions[i],
        seeds[i] and the options: its initial noise is `seeded_normal([seeds[i]])` and its
        per-step noise comes from its own generator, so neither the batch nor the other images
        change it."""
        opts = self.options(**options)
        assert len(captions) == len(seeds), (len(captions), len(seeds))
        scheduler = (DDIMScheduler(self.scheduler_cfg, eta=opts.eta) if opts.sampler == "ddim"
                     else DDPMScheduler(self.scheduler_cfg))
        scheduler.set_timesteps(opts.steps)
        out = []
        for i in range(0, len(seeds), self.batch):
            out.append(self._sample_batch(list(captions[i:i + self.batch]), list(seeds[i:i + self.batch]),
                                          scheduler, opts))
        return torch.cat(out)

    def _sample_batch(self, captions, seeds, scheduler, opts: DdpmOptions) -> torch.Tensor:
        n, res = len(seeds), self.resolution
        if opts.init_image is None:
            x, timesteps = seeded_normal(seeds, 3 * res * res, self.device).view(n, 3, res, res), scheduler.timesteps
        else:
            x, timesteps = self._img2img_start(scheduler, opts.init_image, seeds, opts.strength)
        context, mask = self._context(captions, with_uncond=opts.guidance != 1)
        gens = [torch.Generator(self.device).manual_seed(int(s) + STEP_NOISE_SEED_OFFSET) for s in seeds]
        x = reverse_diffusion(lambda x_t, t: self._eps(x_t, t, context, mask, opts.guidance), scheduler, x,
                              timesteps, gens, self.progress)
        return x.float().clamp(-1, 1)

    def _img2img_start(self, scheduler, init_image, seeds, strength) -> tuple[torch.Tensor, torch.Tensor]:
        """SDEdit start per image; the noise added to it is image i's seeded initial noise."""
        x0 = init_image.detach().float().cpu().expand(len(seeds), -1, -1, -1)
        # A fresh CPU generator seeded with s draws the same numbers as seeded_normal([s]).
        starts = [img2img_start(scheduler, x0[j:j + 1], strength, torch.Generator().manual_seed(int(s)))
                  for j, s in enumerate(seeds)]
        return torch.cat([x for x, _ in starts]).to(self.device), starts[0][1]

    def _context(self, captions: list[str], with_uncond: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features [B or 2B, L, D] and mask: the captions, then (for guidance) the empty
        caption once per image, so both halves go through the UNet in one batch."""
        tokens, mask, _ = self.text.encode(captions + [""] if with_uncond else captions, self.device)
        if not with_uncond:
            return tokens, mask
        n = len(captions)
        return (torch.cat([tokens[:n], tokens[n:].expand(n, -1, -1)]),
                torch.cat([mask[:n], mask[n:].expand(n, -1)]))

    def _eps(self, x, t: int, context, mask, guidance: float) -> torch.Tensor:
        """ε̃(x_t, t) with classifier-free guidance (Ho & Salimans 2022) when guidance != 1."""
        n = x.shape[0]
        if context.shape[0] == n:
            return self.unet(x, torch.full((n,), t, dtype=torch.int64, device=self.device), context, mask).float()
        t_batch = torch.full((2 * n,), t, dtype=torch.int64, device=self.device)
        eps = self.unet(torch.cat([x, x]), t_batch, context, mask).float()
        return guided_eps(eps[:n], eps[n:], guidance)


# ----------------------------------------------------------------------------------------------
# Checkpoints.

SAMPLERS: dict[str, type[GanSampler] | type[DdpmSampler]] = {"gan": GanSampler, "ddpm": DdpmSampler}


def _checkpoint_data(path_or_data: str | Path | dict, kinds: Sequence[str]) -> tuple[dict, str]:
    """(data, source): the checkpoint loaded (or given) with its kind checked, and how error
    messages name it."""
    if not isinstance(path_or_data, dict):
        return load_checkpoint(path_or_data, kinds=tuple(kinds)), str(path_or_data)
    kind = path_or_data.get("kind")
    if kind not in kinds:
        raise CheckpointError(f"checkpoint of kind {kind!r}, expected {' or '.join(map(repr, kinds))}")
    return path_or_data, "checkpoint"


def _build_sampler(cls: type, data: dict, device: torch.device | str, source: str) -> Sampler:
    """cls._from_data(data, device); a checkpoint that lacks an entry or does not fit the
    networks is a one-line CheckpointError naming `source`."""
    try:
        return cls._from_data(data, device)
    except (KeyError, RuntimeError, ValueError, TypeError) as e:
        raise CheckpointError(f"{source}: checkpoint is incomplete or does not match this code "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def load_sampler(path_or_data: str | Path | dict, device: torch.device | str = "cpu") -> Sampler:
    """The sampler of a checkpoint of any kind in SAMPLERS: a path, or the dict `load_checkpoint` gave."""
    data, source = _checkpoint_data(path_or_data, tuple(SAMPLERS))
    return _build_sampler(SAMPLERS[data["kind"]], data, device, source)


def generation_payload(data: dict) -> dict:
    """The entries of a loaded checkpoint that generation needs (its sampler's export_keys):
    no critic, optimizer or RNG state."""
    return {k: data[k] for k in SAMPLERS[data["kind"]].export_keys}


def export_for_generation(src: str | Path, dst: str | Path) -> Path:
    """Copy only what generation needs (EMA network, text encoder, tokenizer, configs) to `dst`."""
    data = load_checkpoint(src, kinds=tuple(SAMPLERS))
    return save_checkpoint(dst, data["kind"], generation_payload(data))
