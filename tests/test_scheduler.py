"""DDPM / DDIM scheduler maths against closed forms computed independently (numpy, float64)."""
import math

import numpy as np
import pytest
import torch

from stylegan_t2i.diffusion.scheduler import DDIMScheduler, DDPMScheduler, SchedulerConfig, guided_eps, img2img_start
from stylegan_t2i.inference import reverse_diffusion

T = 1000


def reference_alpha_bar(schedule: str) -> np.ndarray:
    """ᾱ_t for t = 0..T-1 straight from the papers, without the module's code."""
    if schedule == "linear":
        return np.cumprod(1.0 - np.linspace(1e-4, 0.02, T))
    def f(tau):
        return math.cos((tau / T + 0.008) / 1.008 * math.pi / 2) ** 2  # Nichol & Dhariwal eq. 17
    alpha_bar = np.array([f(t + 1) / f(0) for t in range(T)])
    alpha_bar[-1] = alpha_bar[-2] * (1 - 0.999)     # The last β (= 1 unclipped) is clipped at 0.999.
    return alpha_bar


def clean_image(seed: int, shape=(4, 3, 8, 8)) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float64) * 1.8 - 0.9   # inside [-1, 1]: clipping is a no-op


def oracle(x0: torch.Tensor, scheduler, record: list | None = None):
    """The perfect ε-model for a known x0: ε = (x_t - sqrt(ᾱ_t) x0) / sqrt(1 - ᾱ_t), as the
    (x_t, t) -> ε function of `reverse_diffusion`, the DDPM sampler's loop."""
    alpha_bar = torch.from_numpy(reference_alpha_bar(scheduler.cfg.beta_schedule))

    def model_fn(x_t, t):
        ab = alpha_bar[t].reshape(-1, 1, 1, 1)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        if record is not None:
            record.append(eps)
        return eps
    return model_fn


def test_linear_betas():
    s = DDPMScheduler(SchedulerConfig())
    assert s.betas.shape == (T,) and s.betas.dtype == torch.float64
    assert float(s.betas[0]) == pytest.approx(1e-4, abs=1e-15)
    assert float(s.betas[-1]) == pytest.approx(0.02, abs=1e-15)
    np.testing.assert_allclose(np.diff(s.betas.numpy()), (0.02 - 1e-4) / (T - 1), rtol=1e-9)
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), reference_alpha_bar("linear"), rtol=1e-12)


def test_cosine_alpha_bar_matches_closed_form():
    s = DDPMScheduler(SchedulerConfig(beta_schedule="cosine"))
    ref = reference_alpha_bar("cosine")
    # Only the very last β hits the 0.999 clip; everything before it telescopes to f(t+1)/f(0).
    assert float(s.betas.max()) == pytest.approx(0.999) and int(s.betas.argmax()) == T - 1
    assert float(s.betas[:-1].max()) < 0.999
    np.testing.assert_allclose(s.alphas_cumprod.numpy(), ref, rtol=1e-10)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_add_noise_closed_form(schedule):
    s = DDPMScheduler(SchedulerConfig(beta_schedule=schedule))
    x0, noise = clean_image(0), torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    t = torch.tensor([0, 17, 500, 999])
    out = s.add_noise(x0, noise, t)
    ab = reference_alpha_bar(schedule)
    for i, ti in enumerate(t.tolist()):
        expected = math.sqrt(ab[ti]) * x0[i] + math.sqrt(1 - ab[ti]) * noise[i]
        torch.testing.assert_close(out[i], expected, rtol=1e-12, atol=1e-12)
    assert s.add_noise(x0.float(), noise.float(), t).dtype == torch.float32


def test_set_timesteps_trailing_spacing():
    s = DDPMScheduler(SchedulerConfig())
    assert s.timesteps.tolist() == list(range(T - 1, -1, -1))   # The default: every step.
    s.set_timesteps(50)
    assert s.timesteps.tolist() == list(range(999, 0, -20))
    s.set_timesteps(3)
    assert s.timesteps.tolist() == [999, 666, 332]
    assert s.prev_timestep(666) == 332 and s.prev_timestep(332) == -1
    with pytest.raises(ValueError):
        s.prev_timestep(500)
    with pytest.raises(ValueError):
        s.set_timesteps(0)
    with pytest.raises(ValueError):
        s.set_timesteps(T + 1)


@pytest.mark.parametrize("num_steps,t,t_prev", [(1000, 1, 0), (1000, 500, 499), (1000, 999, 998),
                                                (50, 999, 979), (50, 519, 499), (7, 285, 142)])
def test_ddpm_posterior_matches_bayes(num_steps, t, t_prev):
    s = DDPMScheduler(SchedulerConfig())
    s.set_timesteps(num_steps)
    assert s.prev_timestep(t) == t_prev     # With skipped steps the jump goes to the previous kept t.
    x0, x_t = clean_image(2), clean_image(3) * 3
    # Bayes on Gaussians: prior x' ~ N(sqrt(ᾱ') x0, 1 - ᾱ'), likelihood x_t | x' ~ N(sqrt(a) x', 1 - a)
    # with a = ᾱ_t / ᾱ'. Posterior precision = sum of precisions; mean = precision-weighted.
    ab = reference_alpha_bar("linear")
    ab_t, ab_p = ab[t], ab[t_prev]
    a = ab_t / ab_p
    var = 1.0 / (1.0 / (1 - ab_p) + a / (1 - a))
    mean = var * (math.sqrt(ab_p) * x0 / (1 - ab_p) + math.sqrt(a) * x_t / (1 - a))
    got_mean, got_var = s.posterior_mean_variance(x0, x_t, t)
    torch.testing.assert_close(got_mean, mean, rtol=1e-9, atol=1e-9)
    assert got_var == pytest.approx(var, rel=1e-9)


def test_ddpm_last_step_returns_predicted_x0():
    s = DDPMScheduler(SchedulerConfig())
    x0, eps = clean_image(4), clean_image(5)
    x_t = s.add_noise(x0, eps, torch.zeros(4, dtype=torch.int64))
    torch.testing.assert_close(s.step(eps, 0, x_t), x0, rtol=0, atol=1e-12)


@pytest.mark.parametrize("num_steps", [1000, 50, 10])
def test_ddim_eta0_is_deterministic_and_inverts_add_noise(num_steps):
    s = DDIMScheduler(SchedulerConfig(), eta=0.0)
    s.set_timesteps(num_steps)
    x0 = clean_image(6)
    eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    for t in s.timesteps.tolist()[:: max(1, num_steps // 5)] + [s.timesteps.tolist()[-1]]:
        x_t = s.add_noise(x0, eps, torch.full((4,), t))
        a = s.step(eps, t, x_t, generator=torch.Generator().manual_seed(0))
        b = s.step(eps, t, x_t, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b)
        t_prev = s.prev_timestep(t)
        expected = x0 if t_prev < 0 else s.add_noise(x0, eps, torch.full((4,), t_prev))
        torch.testing.assert_close(a, expected, rtol=0, atol=1e-10)


def test_ddim_eta1_equals_ddpm():
    # Song et al. 2021 §4.1: with η = 1 the DDIM step is the DDPM posterior step.
    cfg = SchedulerConfig(clip_sample=False)
    ddim, ddpm = DDIMScheduler(cfg, eta=1.0), DDPMScheduler(cfg)
    for n in (1000, 20):
        ddim.set_timesteps(n)
        ddpm.set_timesteps(n)
        eps, x_t = clean_image(8), clean_image(9) * 2
        for t in (int(ddim.timesteps[0]), int(ddim.timesteps[n // 2]), int(ddim.timesteps[-1])):
            a = ddim.step(eps, t, x_t, generator=torch.Generator().manual_seed(3))
            b = ddpm.step(eps, t, x_t, generator=torch.Generator().manual_seed(3))
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


def test_full_ddpm_loop_with_oracle_returns_clean_image():
    s = DDPMScheduler(SchedulerConfig())
    x0 = clean_image(10, shape=(32, 3, 8, 8))
    implied_eps = []
    s.set_timesteps(T)
    x_T = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(12))
    generators = [torch.Generator().manual_seed(11 + i) for i in range(len(x0))]
    out = reverse_diffusion(oracle(x0, s, implied_eps), s, x_T, s.timesteps, generators)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    # The posterior variance keeps every x_t on the marginal q(x_t | x0): the ε implied by each
    # visited x_t is standard normal (6144 values: std error ~0.01).
    assert len(implied_eps) == T
    stds = torch.stack([e.std() for e in implied_eps])
    means = torch.stack([e.mean() for e in implied_eps])
    assert float((stds - 1).abs().max()) < 0.06 and float(means.abs().max()) < 0.06


def test_full_ddim50_loop_with_oracle_returns_clean_image():
    s = DDIMScheduler(SchedulerConfig(), eta=0.0)
    x0 = clean_image(13)
    implied_eps = []
    s.set_timesteps(50)
    x_T = torch.randn(x0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(14))
    out = reverse_diffusion(oracle(x0, s, implied_eps), s, x_T, s.timesteps)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    # η = 0 moves along the deterministic path that keeps the initial ε (Song et al. eq. 12).
    assert len(implied_eps) == 50
    for e in implied_eps[1:]:
        torch.testing.assert_close(e, implied_eps[0], rtol=0, atol=1e-8)


def test_guided_eps_algebra():
    c, u = clean_image(15), clean_image(16)
    torch.testing.assert_close(guided_eps(c, u, 0.0), u)
    torch.testing.assert_close(guided_eps(c, u, 1.0), c)
    torch.testing.assert_close(guided_eps(c, u, 3.0), 3 * c - 2 * u)


def test_img2img_start():
    s = DDIMScheduler(SchedulerConfig())
    s.set_timesteps(50)
    x0 = clean_image(17)
    x, steps = img2img_start(s, x0, 0.0, torch.Generator().manual_seed(0))
    assert x is x0 and steps.numel() == 0
    x, steps = img2img_start(s, x0, 1.0, torch.Generator().manual_seed(0))
    assert steps.tolist() == s.timesteps.tolist() and int(steps[0]) == T - 1
    x, steps = img2img_start(s, x0, 0.5, torch.Generator().manual_seed(0))
    assert steps.tolist() == s.timesteps.tolist()[25:]
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    torch.testing.assert_close(x, s.add_noise(x0, noise, torch.full((4,), int(steps[0]))))
    # Running the remaining steps with the oracle lands back on the init image.
    out = reverse_diffusion(oracle(x0, s), s, x, steps)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-6)
    with pytest.raises(ValueError):
        img2img_start(s, x0, 1.5)


def test_config_validation():
    with pytest.raises(ValueError):
        SchedulerConfig(beta_schedule="quadratic")
    with pytest.raises(ValueError):
        SchedulerConfig(prediction_type="v_prediction")
    with pytest.raises(ValueError):
        DDIMScheduler(SchedulerConfig(), eta=-1.0)
