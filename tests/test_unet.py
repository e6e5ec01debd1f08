"""Text-conditioned UNet: shapes, zero-initialised output, gradient flow, padding-mask invariance."""
import math

import pytest
import torch

from stylegan_t2i.diffusion.unet import UNet, UNetConfig, cpu_demo_unet, timestep_embedding

CTX_DIM, L = 24, 6


def tiny_config(resolution: int, **overrides) -> UNetConfig:
    kwargs = dict(resolution=resolution, base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                  attention_resolutions=(resolution // 2,), context_dim=CTX_DIM, num_heads=4, groups=8)
    return UNetConfig(**{**kwargs, **overrides})


def inputs(cfg: UNetConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, cfg.resolution, cfg.resolution, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    context = torch.randn(batch, L, CTX_DIM, generator=g)
    mask = torch.zeros(batch, L, dtype=torch.bool)
    for i in range(batch):
        mask[i, : 2 + i] = True         # bos + i pieces + eos, then padding.
    return x, t, context, mask


def trained_like(cfg: UNetConfig, seed: int = 0) -> UNet:
    """A UNet whose zero-initialised output conv is made random, so the output depends on everything."""
    torch.manual_seed(seed)
    net = UNet(cfg)
    torch.nn.init.normal_(net.conv_out.weight, std=0.1)
    torch.nn.init.normal_(net.conv_out.bias, std=0.1)
    return net


@pytest.mark.parametrize("resolution,mult,attn", [(16, (1, 2), (8,)), (32, (1, 2, 2), (16, 8))])
def test_output_shape_and_zero_init(resolution, mult, attn):
    cfg = tiny_config(resolution, channel_mult=mult, attention_resolutions=attn, num_res_blocks=2)
    torch.manual_seed(0)
    net = UNet(cfg)
    x, t, context, mask = inputs(cfg)
    out = net(x, t, context, mask)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out, torch.zeros_like(out))     # Zero-initialised output conv: ε̂ = 0 at init.
    assert sum(m.attn is not None for m in net.modules() if hasattr(m, "attn")) > 2


def test_gradients_reach_every_parameter():
    cfg = tiny_config(16)
    net = trained_like(cfg)
    x, t, context, mask = inputs(cfg)
    net(x, t, context, mask).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().max()) > 0, name


def test_padding_tokens_do_not_change_output():
    cfg = tiny_config(16)
    net = trained_like(cfg).eval()
    x, t, context, mask = inputs(cfg)
    with torch.no_grad():
        ref = net(x, t, context, mask)
        garbage = torch.where(mask[..., None], context, 100 * torch.randn_like(context))
        torch.testing.assert_close(net(x, t, garbage, mask), ref, rtol=1e-5, atol=1e-5)
        # ...while changing a real token does change it: the caption is really attended to.
        changed = context.clone()
        changed[:, 0] += 1.0
        assert float((net(x, t, changed, mask) - ref).abs().max()) > 1e-3


def test_fully_masked_caption_is_finite_and_ignores_context():
    cfg = tiny_config(16)
    net = trained_like(cfg).eval()
    x, t, context, mask = inputs(cfg)
    mask[1] = False
    with torch.no_grad():
        ref = net(x, t, context, mask)
        assert torch.isfinite(ref).all()
        other = context.clone()
        other[1] = torch.randn(L, CTX_DIM)
        torch.testing.assert_close(net(x, t, other, mask), ref, rtol=1e-5, atol=1e-5)


def test_timestep_changes_output_and_embedding_formula():
    emb = timestep_embedding(torch.tensor([0, 7]), 8)
    freqs = [10000 ** (-i / 4) for i in range(4)]
    expected = [[math.cos(7 * f) for f in freqs] + [math.sin(7 * f) for f in freqs]]
    torch.testing.assert_close(emb[1:], torch.tensor(expected))
    cfg = tiny_config(16)
    net = trained_like(cfg).eval()
    x, t, context, mask = inputs(cfg)
    with torch.no_grad():
        assert float((net(x, t, context, mask) - net(x, t + 1, context, mask)).abs().max()) > 1e-4


def test_bad_inputs_and_configs_raise():
    cfg = tiny_config(16)
    net = UNet(cfg)
    x, t, context, mask = inputs(cfg)
    with pytest.raises(AssertionError):
        net(torch.randn(3, 3, 32, 32), t, context, mask)               # Wrong resolution.
    with pytest.raises(AssertionError):
        net(x, t.float(), context, mask)                                 # Float timesteps.
    with pytest.raises(AssertionError):
        net(x, t, context, mask.long())                                  # Mask not bool.
    with pytest.raises(ValueError):
        tiny_config(18, channel_mult=(1, 2, 2))                          # 18 not divisible by 4.
    with pytest.raises(ValueError):
        tiny_config(16, base_channels=12)                                # 12 not divisible by 8 groups.


def test_cpu_preset_builds():
    cfg = cpu_demo_unet(context_dim=CTX_DIM)
    assert cfg.resolution == 32 and 1e6 < sum(p.numel() for p in UNet(cfg).parameters()) < 2e6
