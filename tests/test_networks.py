"""Generator and critic: shapes per stage, fade-in continuity, truncation, double backward."""
import json

import pytest
import torch

from stylegan_t2i.config import config_from_dict, config_to_dict
from stylegan_t2i.gan.losses import gradient_penalty
from stylegan_t2i.models import Critic, CriticConfig, Generator, GeneratorConfig, cpu_demo_configs
from stylegan_t2i.models.layers import area_downsample, fade_upsample, resample_filter

TEXT_DIM = 12
SMALL = dict(text_dim=TEXT_DIM, max_res=32, channel_base=256, channel_max=16)


@pytest.fixture(scope="module", params=["orig", "skip"])
def nets(request):
    """ProGAN-style nets, and the skip nets with the caption's direct part of w, nearest-neighbour
    up-sampling in G and box down-sampling in D (the cpu_demo kind)."""
    torch.manual_seed(0)
    skip = request.param == "skip"
    g = Generator(GeneratorConfig(**SMALL, z_dim=8, z_embed_dim=4, text_embed_dim=8, w_dim=16, mapping_layers=2,
                                  text_w_dim=6 if skip else 0, architecture=request.param,
                                  torgb_init=0.1 if skip else 1.0,
                                  resample_kernel=(0, 1, 1, 0) if skip else (1, 3, 3, 1)))
    d = Critic(CriticConfig(**SMALL, cmap_dim=8, architecture=request.param,
                            resample_kernel=(0, 1, 1, 0) if skip else (1, 3, 3, 1)))
    return g, d


def _inputs(batch=4, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 8, generator=gen), torch.randn(batch, TEXT_DIM, generator=gen)


@pytest.mark.parametrize("stage", range(4))
def test_shapes_every_stage_and_alpha(nets, stage):
    g, d = nets
    z, text = _inputs()
    res = 4 * 2 ** stage
    for alpha in (0.0, 0.5, 1.0):
        img = g(z, text, stage, alpha)
        assert img.shape == (4, 3, res, res) and torch.isfinite(img).all()
        score = d(img, text, stage, alpha)
        assert score.shape == (4,) and torch.isfinite(score).all()


def test_wrong_shapes_are_rejected(nets):
    g, d = nets
    z, text = _inputs()
    with pytest.raises(AssertionError, match="wrong shape"):
        d(torch.randn(4, 3, 16, 16), text, stage=1)
    with pytest.raises(AssertionError, match="wrong shape"):
        g(z, text[:, :5], stage=0)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_generator_fade_in_is_continuous(nets, stage):
    g, _ = nets
    z, text = _inputs()
    with torch.no_grad():
        start = g(z, text, stage, alpha=0.0, noise_mode="const")
        prev = g(z, text, stage - 1, alpha=1.0, noise_mode="const")
        end = g(z, text, stage, alpha=1.0, noise_mode="const")
        mid = g(z, text, stage, alpha=0.5, noise_mode="const")
    torch.testing.assert_close(start, fade_upsample(prev, g.cfg.resample_kernel))
    torch.testing.assert_close(mid, 0.5 * (start + end))
    assert not torch.allclose(start, end)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_critic_fade_in_is_continuous(nets, stage):
    _, d = nets
    res = 4 * 2 ** stage
    img, text = torch.randn(4, 3, res, res), _inputs()[1]
    with torch.no_grad():
        torch.testing.assert_close(d(img, text, stage, alpha=0.0), d(area_downsample(img), text, stage - 1, alpha=1.0))


def test_only_blocks_up_to_stage_run(nets):
    g, _ = nets
    z, text = _inputs()
    g.zero_grad(set_to_none=True)
    g(z, text, stage=1, alpha=0.5).square().mean().backward()
    blocks = g.synthesis_net.blocks
    assert all(p.grad is not None for p in blocks[1].parameters())
    assert all(p.grad is None for b in blocks[2:] for p in b.parameters())
    g.zero_grad(set_to_none=True)


def test_gradient_penalty_double_backward_reaches_all_critic_params(nets):
    _, d = nets
    torch.manual_seed(0)
    stage, alpha = 3, 0.5
    real, fake = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    text = _inputs()[1]
    d.zero_grad(set_to_none=True)
    penalty, grad_norm = gradient_penalty(lambda x, c: d(x, c, stage, alpha), real, fake, text, torch.rand(4))
    penalty.backward()
    # On the stage-3 path with fading, every parameter takes part except the output biases, which
    # do not change grad_x D, and (orig only: its low paths end at the fade) fromRGB at 4x4 and 8x8.
    unused = {"epilogue.out.bias", "epilogue.proj.bias"}
    if d.cfg.architecture == "orig":
        unused |= {n for n, _ in d.named_parameters() if n.startswith(("from_rgb.b4.", "from_rgb.b8."))}
    for name, p in d.named_parameters():
        if name in unused:
            assert p.grad is None, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for n, p in d.named_parameters() if n not in unused) > 0
    assert torch.isfinite(penalty) and grad_norm > 0
    d.zero_grad(set_to_none=True)


def test_caption_mean_w_and_truncation(nets):
    g, _ = nets
    z, text = _inputs()
    gen = torch.Generator().manual_seed(5)
    target = g.caption_mean_w(text, num_z=64, generator=gen)
    assert target.shape == (4, g.cfg.w_total)
    assert not torch.allclose(target[0], target[1])  # Depends on the caption ...
    same = g.caption_mean_w(text[:1].expand(4, -1), num_z=64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(same[0], target[0])  # ... and for one caption is the mean over the same z.
    torch.testing.assert_close(g.mapping(z, text, truncation_psi=0.0, truncation_target=target), target, rtol=0, atol=0)
    w = g.mapping(z, text)
    torch.testing.assert_close(g.mapping(z, text, 0.5, target), 0.5 * (w + target))
    # psi = 0: every z gives the same image for a caption (with fixed noise).
    img = g(torch.randn(4, 8), text[:1].expand(4, -1), 2, truncation_psi=0.0,
            truncation_target=target[:1].expand(4, -1), noise_mode="none")
    torch.testing.assert_close(img, img[:1].expand(4, -1, -1, -1))
    assert g.mapping(z, text, truncation_psi=0.7).shape == (4, g.cfg.w_total)  # Default target: computed here.


def test_mapping_uses_text(nets):
    g, _ = nets
    z, text = _inputs()
    w1 = g.mapping(z, text)
    w2 = g.mapping(z, text.roll(1, dims=0))
    assert not torch.allclose(w1, w2)


def test_removed_w_avg_of_older_checkpoints_is_dropped_on_load(nets):
    """Older generators had a global mean-w buffer (never updated) and its EMA decay in the
    config: their state dicts still load strictly and their configs still rebuild."""
    g, _ = nets
    state = g.state_dict()
    assert not any("w_avg" in k for k in state)
    g.load_state_dict({**state, "mapping_net.w_avg": torch.zeros(g.cfg.w_total)}, strict=True)
    assert config_from_dict(GeneratorConfig, {**config_to_dict(g.cfg), "w_avg_beta": 0.995}) == g.cfg
    with pytest.raises(RuntimeError, match="Unexpected key"):     # Only that key is dropped.
        g.load_state_dict({**state, "mapping_net.w_other": torch.zeros(1)})


def test_caption_part_of_w_is_the_same_for_every_z_and_survives_truncation(nets):
    g, _ = nets
    if not g.cfg.text_w_dim:
        pytest.skip("no direct caption part in this architecture")
    z, text = _inputs()
    one_caption = text[:1].expand(4, -1)
    w = g.mapping(z, one_caption)
    part = w[:, g.cfg.w_dim:]
    torch.testing.assert_close(part, part[:1].expand(4, -1))                  # z does not touch it
    assert not torch.allclose(g.mapping(z, text)[:, g.cfg.w_dim:], part)     # the caption does
    truncated = g.mapping(z, one_caption, truncation_psi=0.0)
    torch.testing.assert_close(truncated[:, g.cfg.w_dim:], part)             # truncation keeps it


def test_critic_trunk_scores_several_captions_at_once(nets):
    _, d = nets
    img = torch.randn(4, 3, 16, 16)
    text = torch.randn(4, 3, TEXT_DIM)                                         # 3 captions per image
    h = d.features(img, stage=2, alpha=0.3)
    many = d.score(h, text)
    assert many.shape == (4, 3)
    for k in range(3):
        torch.testing.assert_close(many[:, k], d(img, text[:, k], stage=2, alpha=0.3))


def test_critic_trunk_on_two_concatenated_batches_equals_two_passes(nets):
    _, d = nets
    reals, fakes = torch.randn(2, 3, 16, 16), torch.randn(2, 3, 16, 16)
    both = d.features(torch.cat([reals, fakes]), stage=2, alpha=0.5, sets=2)
    torch.testing.assert_close(both, torch.cat([d.features(reals, 2, 0.5), d.features(fakes, 2, 0.5)]))


def test_skip_generator_keeps_the_low_resolution_image_after_the_fade():
    """A new skip block only adds to the up-sampled previous image (the orig toRGB redraws it
    from scratch): at alpha = 1 the picture moves less than half as far from it as orig's."""
    torch.manual_seed(0)
    z, text = _inputs()
    kw = dict(**SMALL, z_dim=8, z_embed_dim=4, text_embed_dim=8, w_dim=16, mapping_layers=2)
    rel = {}
    for arch, init in (("orig", 1.0), ("skip", 0.1)):
        g = Generator(GeneratorConfig(**kw, architecture=arch, torgb_init=init))
        with torch.no_grad():
            prev = fade_upsample(g(z, text, 1, 1.0, noise_mode="const"))
            new = g(z, text, 2, 1.0, noise_mode="const")
        rel[arch] = ((new - prev).norm() / prev.norm()).item()
    assert rel["skip"] < 0.5 * rel["orig"], rel


def test_nearest_up_sampling_keeps_a_blocky_low_resolution_image_blocky():
    """With the nearest kernel, the generator's up-sampled 4 px image at the start of the 8 px fade
    is made of exact 2x2 blocks (the binomial kernel blurs it), and the kernel reaches every
    up-sampling conv; it survives the JSON round trip."""
    torch.manual_seed(0)
    z, text = _inputs()
    kw = dict(**SMALL, z_dim=8, z_embed_dim=4, text_embed_dim=8, w_dim=16, mapping_layers=2, architecture="skip")
    for kernel, blocky in (((0, 1, 1, 0), True), ((1, 3, 3, 1), False)):
        g = Generator(GeneratorConfig(**kw, resample_kernel=kernel))
        with torch.no_grad():
            img = g(z, text, stage=1, alpha=0.0, noise_mode="const")
        blocks = img[:, :, ::2, ::2].repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
        assert torch.allclose(img, blocks) == blocky
        filters = [b.conv0.resample_filter for b in g.synthesis_net.blocks[1:]]
        assert all(torch.equal(f, resample_filter(kernel)) for f in filters)
        cfg = config_from_dict(GeneratorConfig, json.loads(json.dumps(config_to_dict(g.cfg))))
        assert cfg == g.cfg and cfg.resample_kernel == tuple(float(k) for k in kernel)
    with pytest.raises(ValueError, match="4 non-negative taps"):
        GeneratorConfig(text_dim=4, resample_kernel=(1, 1))


def test_critic_kernel_reaches_every_down_sampling_conv_and_old_configs_keep_the_binomial():
    """The critic's `resample_kernel` is the FIR of every block's stride-2 conv; it survives the JSON
    round trip, and a config saved before the field existed loads with StyleGAN2's binomial."""
    for kernel in ((0, 1, 1, 0), (1, 3, 3, 1)):
        d = Critic(CriticConfig(**SMALL, cmap_dim=8, architecture="skip", resample_kernel=kernel))
        assert all(torch.equal(b.conv1.resample_filter, resample_filter(kernel)) for b in d.blocks.values())
        cfg = config_from_dict(CriticConfig, json.loads(json.dumps(config_to_dict(d.cfg))))
        assert cfg == d.cfg and cfg.resample_kernel == tuple(float(k) for k in kernel)
    old = {k: v for k, v in config_to_dict(CriticConfig(**SMALL)).items() if k != "resample_kernel"}
    assert config_from_dict(CriticConfig, old).resample_kernel == (1.0, 3.0, 3.0, 1.0)
    assert cpu_demo_configs(text_dim=8)[1].resample_kernel == (0.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="4 non-negative taps"):
        CriticConfig(text_dim=4, resample_kernel=(1, 2, 1))


def test_configs_round_trip_and_validate():
    g_cfg, d_cfg = cpu_demo_configs(text_dim=32)
    assert config_from_dict(GeneratorConfig, config_to_dict(g_cfg)) == g_cfg
    assert config_from_dict(CriticConfig, config_to_dict(d_cfg)) == d_cfg
    assert g_cfg.num_stages == d_cfg.num_stages == 4
    with pytest.raises(ValueError, match="power of two"):
        GeneratorConfig(text_dim=4, max_res=48)
    g, d = Generator(g_cfg), Critic(d_cfg)
    img = g(torch.randn(2, g_cfg.z_dim), torch.randn(2, 32), stage=3)
    assert d(img, torch.randn(2, 32), stage=3).shape == (2,)
    with pytest.raises(ValueError, match="architecture"):
        GeneratorConfig(text_dim=4, architecture="resnet")
    with pytest.raises(ValueError, match="architecture"):
        CriticConfig(text_dim=4, architecture="resnet")
    with pytest.raises(ValueError, match="text_w_dim"):
        GeneratorConfig(text_dim=4, text_w_dim=-1)
