"""Weightless diffusion maths: ε-prediction DDPM (Ho et al. 2020) and DDIM (Song et al. 2021).

The API follows diffusers' schedulers: `add_noise` for training, `set_timesteps` + `step` for
sampling, no weights and no hidden state beyond the chosen inference timesteps. The sampling
loop itself is `stylegan_t2i.inference.reverse_diffusion`, the one the DDPM sampler runs.

Conventions. Timesteps are 0-based: t = 0 is the first noising step and t = T-1 the last, so
`alphas_cumprod[t]` is ᾱ after t+1 noising steps; ᾱ_{-1} := 1 stands for the clean image (the
step after the last kept timestep returns x0). The tables are float64 and are cast to the
sample's dtype only when used, so float32 sampling loses nothing to the tables themselves.
Images live in [-1, 1] (hence the optional clipping of the predicted x0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

_COSINE_S = 0.008         # Nichol & Dhariwal 2021 §3.2: offset s so that β_0 is not vanishingly small.
_COSINE_MAX_BETA = 0.999  # ...and β clipped below 1 to avoid the singularity at t = T.


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps:    int = 1000          # T, the length of the forward (noising) process.
    beta_schedule:          str = "linear"      # 'linear' (Ho et al. 2020) or 'cosine' (Nichol & Dhariwal 2021).
    beta_start:             float = 1e-4        # β_0 of the linear schedule.
    beta_end:               float = 0.02        # β_{T-1} of the linear schedule.
    prediction_type:        str = "epsilon"     # What the network predicts; only 'epsilon' is implemented.
    clip_sample:            bool = True         # Clip the predicted x0 to [-1, 1] while sampling.

    def __post_init__(self):
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.beta_schedule not in ("linear", "cosine"):
            raise ValueError(f"beta_schedule must be 'linear' or 'cosine', got {self.beta_schedule!r}")
        if not 0 < self.beta_start <= self.beta_end < 1:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.prediction_type != "epsilon":
            raise ValueError(f"prediction_type must be 'epsilon', got {self.prediction_type!r}")


def make_betas(cfg: SchedulerConfig) -> torch.Tensor:
    """β_t for t = 0..T-1 as float64 [T]."""
    T = cfg.num_train_timesteps
    if cfg.beta_schedule == "linear":
        # Ho et al. 2020 §4: β rises linearly from 1e-4 to 0.02 over T = 1000 steps.
        return torch.linspace(cfg.beta_start, cfg.beta_end, T, dtype=torch.float64)
    # Nichol & Dhariwal 2021 eq. 17: ᾱ(τ) = f(τ)/f(0), f(τ) = cos²((τ/T + s)/(1 + s) · π/2), and
    # β_t = 1 - ᾱ(t+1)/ᾱ(t), so that the cumulative product telescopes back to ᾱ(t+1).
    tau = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((tau + _COSINE_S) / (1 + _COSINE_S) * math.pi / 2) ** 2
    alpha_bar = f / f[0]
    return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=_COSINE_MAX_BETA)


def _per_sample(
    table:  torch.Tensor,   # [T] float64 table indexed by timestep.
    t:      torch.Tensor,   # [B] int64 timesteps.
    x:      torch.Tensor,   # [B, ...] the sample the values will multiply.
) -> torch.Tensor:
    """table[t] shaped [B, 1, ..., 1] in x's dtype and device, so it broadcasts over x."""
    values = table.to(x.device)[t.to(x.device)].to(x.dtype)
    return values.reshape(-1, *([1] * (x.ndim - 1)))


class _Scheduler:
    """What DDPM and DDIM share: the β tables, `add_noise`, the inference timesteps, eq. 15."""

    def __init__(self, cfg: SchedulerConfig):
        self.cfg = cfg
        self.num_train_timesteps = cfg.num_train_timesteps
        self.betas = make_betas(cfg)                        # [T] float64
        self.alphas = 1.0 - self.betas                      # α_t = 1 - β_t
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)  # ᾱ_t = Π_{s<=t} α_s
        self.set_timesteps(cfg.num_train_timesteps)

    def alpha_bar(self, t: int) -> float:
        """ᾱ_t, with ᾱ_{-1} = 1 (the clean image)."""
        return 1.0 if t < 0 else float(self.alphas_cumprod[t])

    def add_noise(self,
        x0:     torch.Tensor,   # [B, ...] clean samples.
        noise:  torch.Tensor,   # [B, ...] ε ~ N(0, I), same shape as x0.
        t:      torch.Tensor,   # [B] int64 timesteps in [0, T).
    ) -> torch.Tensor:
        """Sample q(x_t | x0) (Ho et al. 2020 eq. 4): x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) ε."""
        assert noise.shape == x0.shape, (noise.shape, x0.shape)
        assert t.ndim == 1 and t.shape[0] == x0.shape[0] and not t.is_floating_point(), t
        assert int(t.min()) >= 0 and int(t.max()) < self.num_train_timesteps, t
        sqrt_ab = _per_sample(self.alphas_cumprod.sqrt(), t, x0)
        sqrt_1m_ab = _per_sample((1.0 - self.alphas_cumprod).sqrt(), t, x0)
        return sqrt_ab * x0 + sqrt_1m_ab * noise

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose the descending timesteps a sampling loop visits.

        "Trailing" spacing (Lin et al. 2024, "Sample from the last timestep"):
        t_i = round(T (n - i) / n) - 1 for i = 0..n-1, so every schedule starts at T-1 (pure noise,
        matching the sampler's input) and n = T visits every step. Steps in between are skipped
        with the generalised ᾱ.
        """
        T, n = self.num_train_timesteps, int(num_inference_steps)
        if not 1 <= n <= T:
            raise ValueError(f"num_inference_steps must be in [1, {T}], got {num_inference_steps}")
        steps = [(T * (n - i) + n // 2) // n - 1 for i in range(n)]  # Integer round-half-up.
        self.num_inference_steps = n
        self.timesteps = torch.tensor(steps, dtype=torch.int64)
        self._prev = dict(zip(steps, steps[1:] + [-1]))

    def prev_timestep(self, t: int) -> int:
        """The timestep after t in the current schedule (-1 after the last one: x0)."""
        if t not in self._prev:
            raise ValueError(f"timestep {t} is not in the schedule set by set_timesteps({self.num_inference_steps})")
        return self._prev[t]

    def predict_x0(self,
        eps:    torch.Tensor,   # [B, ...] predicted ε.
        t:      int,            # Current timestep.
        x_t:    torch.Tensor,   # [B, ...] current sample.
    ) -> torch.Tensor:
        """x0 from ε by inverting eq. 4 (Ho et al. 2020 eq. 15), clipped to [-1, 1] if configured."""
        ab = self.alpha_bar(t)
        x0 = (x_t - math.sqrt(1.0 - ab) * eps) / math.sqrt(ab)
        return x0.clamp(-1.0, 1.0) if self.cfg.clip_sample else x0


class DDPMScheduler(_Scheduler):
    """Ancestral sampling through the Gaussian posterior q(x_{t'} | x_t, x0) (Ho et al. 2020).

    With skipped steps (n < T) the step goes from t to the previous kept timestep t', using the
    generalised α = ᾱ_t / ᾱ_{t'} and β = 1 - α of that jump (Nichol & Dhariwal 2021 §4).
    """

    def posterior_mean_variance(self,
        x0:     torch.Tensor,   # [B, ...] clean (or predicted clean) sample.
        x_t:    torch.Tensor,   # [B, ...] current sample.
        t:      int,            # Current timestep (in the schedule).
    ) -> tuple[torch.Tensor, float]:
        """Mean [B, ...] and variance (a number) of q(x_{t'} | x_t, x0), Ho et al. 2020 eq. 6-7."""
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(self.prev_timestep(t))
        alpha = ab_t / ab_prev              # Generalised α_t of the jump t -> t'.
        beta = 1.0 - alpha
        # Eq. 7: μ̃ = sqrt(ᾱ_{t'}) β_t / (1 - ᾱ_t) · x0 + sqrt(α_t) (1 - ᾱ_{t'}) / (1 - ᾱ_t) · x_t.
        coef_x0 = math.sqrt(ab_prev) * beta / (1.0 - ab_t)
        coef_xt = math.sqrt(alpha) * (1.0 - ab_prev) / (1.0 - ab_t)
        # Eq. 7: β̃_t = (1 - ᾱ_{t'}) / (1 - ᾱ_t) · β_t  (the "fixed small" variance of §3.2).
        variance = (1.0 - ab_prev) / (1.0 - ab_t) * beta
        return coef_x0 * x0 + coef_xt * x_t, variance

    def step(self,
        eps:        torch.Tensor,                   # [B, ...] predicted ε at (x_t, t).
        t:          int,                            # Current timestep (in the schedule).
        x_t:        torch.Tensor,                   # [B, ...] current sample.
        generator:  torch.Generator | None = None,  # Source of the ancestral noise.
    ) -> torch.Tensor:
        """x_{t'} ~ q(x_{t'} | x_t, x̂0) with x̂0 predicted from ε (eq. 15); x̂0 itself when t' = -1."""
        assert eps.shape == x_t.shape, (eps.shape, x_t.shape)
        t = int(t)
        mean, variance = self.posterior_mean_variance(self.predict_x0(eps, t, x_t), x_t, t)
        if self.prev_timestep(t) < 0:
            return mean  # β̃ = 0 on the last step: the mean is x̂0 exactly.
        z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
        return mean + math.sqrt(variance) * z


class DDIMScheduler(_Scheduler):
    """The non-Markovian DDIM sampler (Song et al. 2021); η = 0 is deterministic, η = 1 is DDPM."""

    def __init__(self,
        cfg:    SchedulerConfig,
        eta:    float = 0.0,        # η of eq. 16: 0 = deterministic DDIM, 1 = DDPM's posterior variance.
    ):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        super().__init__(cfg)
        self.eta = float(eta)

    def sigma(self, t: int) -> float:
        """σ_t(η) = η sqrt((1 - ᾱ_{t'}) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_{t'}) (Song et al. 2021 eq. 16)."""
        ab_t, ab_prev = self.alpha_bar(t), self.alpha_bar(self.prev_timestep(t))
        return self.eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t) * (1.0 - ab_t / ab_prev))

    def step(self,
        eps:        torch.Tensor,                   # [B, ...] predicted ε at (x_t, t).
        t:          int,                            # Current timestep (in the schedule).
        x_t:        torch.Tensor,                   # [B, ...] current sample.
        generator:  torch.Generator | None = None,  # Source of the noise when η > 0.
    ) -> torch.Tensor:
        """Song et al. 2021 eq. 12:
        x_{t'} = sqrt(ᾱ_{t'}) x̂0 + sqrt(1 - ᾱ_{t'} - σ_t²) ε + σ_t z,   z ~ N(0, I).
        """
        assert eps.shape == x_t.shape, (eps.shape, x_t.shape)
        t = int(t)
        ab_prev = self.alpha_bar(self.prev_timestep(t))
        sigma = self.sigma(t)
        x0 = self.predict_x0(eps, t, x_t)
        # max(·, 0) guards against a tiny negative from rounding when η = 1 and t' = -1.
        x_prev = math.sqrt(ab_prev) * x0 + math.sqrt(max(1.0 - ab_prev - sigma ** 2, 0.0)) * eps
        if sigma > 0:
            z = torch.randn(x_t.shape, generator=generator, device=x_t.device, dtype=x_t.dtype)
            x_prev = x_prev + sigma * z
        return x_prev


Scheduler = DDPMScheduler | DDIMScheduler


def guided_eps(
    eps_cond:   torch.Tensor,   # [B, ...] ε predicted with the caption.
    eps_uncond: torch.Tensor,   # [B, ...] ε predicted with the empty caption.
    scale:      float,          # Guidance scale w; 1 = plain conditional, 0 = unconditional.
) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022 eq. 6): ε̃ = ε_u + w (ε_c - ε_u)."""
    assert eps_cond.shape == eps_uncond.shape, (eps_cond.shape, eps_uncond.shape)
    return eps_uncond + scale * (eps_cond - eps_uncond)


def img2img_start(
    scheduler:  Scheduler,                      # With set_timesteps already called.
    x0:         torch.Tensor,                   # [B, C, H, W] init image in [-1, 1].
    strength:   float,                          # In [0, 1]: fraction of the schedule to re-run.
    generator:  torch.Generator | None = None,  # Source of the noise added to x0.
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise an init image part-way (SDEdit, Meng et al. 2022) and return (x_t, timesteps to run).

    The last round(strength · n) of the n scheduled timesteps are kept; x0 is noised with
    eq. 4 to the first of them. Strength 0 returns x0 and no steps; strength 1 starts from
    t = T-1, i.e. (almost) pure noise.
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    n = scheduler.num_inference_steps
    keep = int(round(strength * n))
    timesteps = scheduler.timesteps[n - keep:]
    if keep == 0:
        return x0, timesteps
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    t = torch.full((x0.shape[0],), int(timesteps[0]), dtype=torch.int64, device=x0.device)
    return scheduler.add_noise(x0, noise, t), timesteps
