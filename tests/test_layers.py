"""Layers vs plain-PyTorch references: equalised lr, resampling convs, modulation, mbstd, pixel norm."""
import math

import pytest
import torch
import torch.nn.functional as F

from stylegan_t2i.models.layers import (
    Conv2dLayer,
    FullyConnectedLayer,
    MinibatchStdLayer,
    NoiseInjection,
    area_downsample,
    conv2d_resample,
    fade_upsample,
    modulated_conv2d,
    normalize_2nd_moment,
    resample_filter,
)
from stylegan_t2i.ops import upfirdn2d

SQRT2 = math.sqrt(2)


def _lrelu(x):
    return F.leaky_relu(x, 0.2) * SQRT2  # bias_act's 'lrelu' with its default gain sqrt(2)


def test_fully_connected_equals_linear_with_scaled_weight():
    torch.manual_seed(0)
    layer = FullyConnectedLayer(5, 7, lr_multiplier=0.1, bias_init=0.5)
    x = torch.randn(3, 5)
    # Stored as N(0,1)/lr, scaled at run time by lr/sqrt(fan_in) -> effective weight ~ N(0, 1/fan_in).
    w_eff = layer.weight * 0.1 / math.sqrt(5)
    b_eff = layer.bias * 0.1
    torch.testing.assert_close(b_eff, torch.full([7], 0.5))
    torch.testing.assert_close(layer(x), F.linear(x, w_eff, b_eff))
    act = FullyConnectedLayer(5, 7, activation="lrelu")
    torch.testing.assert_close(act(x), _lrelu(F.linear(x, act.weight / math.sqrt(5), act.bias)))


def test_conv_equals_conv2d_with_scaled_weight():
    torch.manual_seed(0)
    layer = Conv2dLayer(4, 6, 3, activation="lrelu")
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 8, 8)
    ref = _lrelu(F.conv2d(x, layer.weight / math.sqrt(4 * 9), layer.bias, padding=1))
    torch.testing.assert_close(layer(x), ref)


def test_conv_clamp_limits_output():
    torch.manual_seed(0)
    layer = Conv2dLayer(4, 6, 3, conv_clamp=0.1)
    assert layer(10 * torch.randn(2, 4, 8, 8)).abs().max() <= 0.1 + 1e-6


def test_conv_down_equals_conv_then_fir_downsample():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 5, 3, down=2).double()
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    y = F.conv2d(x, layer.weight / math.sqrt(3 * 9), padding=1)
    ref = upfirdn2d.downsample2d(y, resample_filter(), down=2)
    out = layer(x)
    assert out.shape == (2, 5, 6, 6)
    # Same linear map away from the border; at the border the reference zero-pads the conv
    # output, the layer (like NVlabs' conv2d_resample) zero-pads the input before filtering.
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def test_conv_up_equals_fir_upsample_then_conv():
    torch.manual_seed(0)
    layer = Conv2dLayer(3, 5, 3, up=2).double()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    up = upfirdn2d.upsample2d(x, resample_filter(), up=2)
    # A transposed conv convolves (not correlates), hence the flipped kernel in the reference.
    ref = F.conv2d(up, (layer.weight / math.sqrt(3 * 9)).flip([2, 3]), padding=1)
    out = layer(x)
    assert out.shape == (2, 5, 12, 12)
    # Equal away from the border (the zero padding sits before vs after the FIR, as in the down test).
    torch.testing.assert_close(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1])


def _modconv_loop(x, weight, styles, demodulate, up):
    """Per-sample reference: build each sample's weight and run a plain conv."""
    outs = []
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xn = x[n : n + 1]
        if up == 2:
            xn = upfirdn2d.upsample2d(xn, resample_filter(), up=2)
            w = w.flip([2, 3])
        outs.append(F.conv2d(xn, w, padding=weight.shape[-1] // 2))
    return torch.cat(outs)


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("demodulate,up", [(True, 1), (False, 1), (True, 2)])
def test_modulated_conv_equals_per_sample_loop(demodulate, up, fused):
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64)
    weight = torch.randn(5, 4, 3, 3, dtype=torch.float64)
    styles = torch.randn(3, 4, dtype=torch.float64)
    out = modulated_conv2d(x, weight, styles, up=up, demodulate=demodulate,
                           resample_filter=resample_filter(), fused=fused)
    ref = _modconv_loop(x, weight, styles, demodulate, up)
    border = 1 if up == 2 else 0  # See test_conv_up_equals_fir_upsample_then_conv.
    h = out.shape[-1]
    torch.testing.assert_close(out[..., border:h - border, border:h - border], ref[..., border:h - border, border:h - border])


@pytest.mark.parametrize("up", [1, 2])
def test_fused_and_unfused_modulated_conv_agree_in_value_and_gradients(up):
    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 6, 3, 3, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(4, 6, dtype=torch.float64, requires_grad=True)
    outs, grads = [], []
    for fused in (True, False):
        out = modulated_conv2d(x, weight, styles, up=up, resample_filter=resample_filter(), fused=fused)
        outs.append(out)
        grads.append(torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum(),
                                         [x, weight, styles], create_graph=True))
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)
    # Second order too: a gradient penalty through G (path length, R1 on G) sees the same maths.
    second = [torch.autograd.grad(g[0].square().sum(), weight)[0] for g in grads]
    torch.testing.assert_close(second[0], second[1])


def test_modulated_conv_adds_noise():
    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 3, 5, 5), torch.randn(4, 3, 3, 3), torch.randn(2, 3)
    noise = torch.randn(2, 1, 5, 5)
    torch.testing.assert_close(modulated_conv2d(x, weight, styles, noise=noise),
                               modulated_conv2d(x, weight, styles) + noise)


def test_demodulated_output_has_unit_std():
    # StyleGAN2 eq. 2-3: for i.i.d. unit-variance input, each output channel has unit variance.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 64, 12, 12, generator=g)
    weight = torch.randn(32, 64, 3, 3, generator=g)
    styles = 3 * torch.randn(8, 64, generator=g)
    out = modulated_conv2d(x, weight, styles)[:, :, 1:-1, 1:-1]  # Interior: no zero padding inside.
    assert abs(out.std().item() - 1) < 0.05
    assert abs(modulated_conv2d(x, weight, styles, demodulate=False).std().item() - 1) > 0.5


def test_minibatch_std_on_hand_made_batch():
    # N=4, G=2: contiguous groups {0, 1} and {2, 3}.
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [1.0, 1.0], [1.0, 1.0]]).reshape(4, 2, 1, 1)
    out = MinibatchStdLayer(group_size=2, num_channels=1)(x)
    assert out.shape == (4, 3, 1, 1)
    torch.testing.assert_close(out[:, :2], x)
    # Group {0, 1}: population stds per channel = [1, 2] -> mean 1.5; group {2, 3}: sqrt(1e-8).
    torch.testing.assert_close(out[:, 2].flatten(), torch.tensor([1.5, 1.5, 1e-4, 1e-4]))


def test_minibatch_std_of_a_slice_equals_the_whole_batch():
    # A data-parallel rank holding samples 4..7 of 8 must see the statistics one process sees.
    x = torch.randn(8, 6, 3, 3)
    layer = MinibatchStdLayer(group_size=4, num_channels=2)
    torch.testing.assert_close(layer(x[4:]), layer(x)[4:])


def test_minibatch_std_keeps_concatenated_sets_apart():
    # Reals and fakes in one critic pass: a group never mixes the two, even below the group size.
    a, b = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    layer = MinibatchStdLayer(group_size=4, num_channels=2)
    torch.testing.assert_close(layer(torch.cat([a, b]), sets=2), torch.cat([layer(a), layer(b)]))


def test_minibatch_std_group_is_capped_by_batch_and_checks_divisibility():
    x = torch.randn(2, 4, 3, 3)
    out = MinibatchStdLayer(group_size=4, num_channels=2)(x)  # G = min(4, 2) = 2
    ref = x.reshape(2, 1, 2, 2, 3, 3).std(dim=0, unbiased=False).mean(dim=[2, 3, 4])  # [1, F]
    torch.testing.assert_close(out[:, 4:, 0, 0], ref.expand(2, 2), atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="divisible"):
        MinibatchStdLayer(group_size=2)(torch.randn(3, 4, 2, 2))


def test_pixel_norm_gives_unit_second_moment():
    x = 5 * torch.randn(8, 16) + 2
    torch.testing.assert_close(normalize_2nd_moment(x).square().mean(dim=1), torch.ones(8))


def test_noise_modes():
    torch.manual_seed(0)
    layer = NoiseInjection(4)
    with torch.no_grad():
        layer.strength.fill_(0.5)
    assert layer(2, "none", torch.device("cpu")) is None
    torch.testing.assert_close(layer(2, "const", torch.device("cpu")), 0.5 * layer.noise_const)
    a, b = layer(2, "random", torch.device("cpu")), layer(2, "random", torch.device("cpu"))
    assert a.shape == (2, 1, 4, 4) and not torch.equal(a, b)


def test_fade_upsample_and_area_downsample():
    torch.manual_seed(0)
    const = torch.full([1, 3, 4, 4], 0.7)
    torch.testing.assert_close(fade_upsample(const), torch.full([1, 3, 8, 8], 0.7))  # Borders included.
    x = torch.randn(2, 3, 4, 4)
    up = fade_upsample(x)
    assert up.shape == (2, 3, 8, 8)
    # Interior: same as the plain FIR up-sampling (edge replication only changes the border).
    torch.testing.assert_close(up[..., 1:-1, 1:-1],
                               upfirdn2d.upsample2d(x, resample_filter(), up=2)[..., 1:-1, 1:-1])
    torch.testing.assert_close(area_downsample(x), x.reshape(2, 3, 2, 2, 2, 2).mean(dim=[3, 5]))


def test_box_kernel_makes_a_stride_2_conv_exact_2x2_averaging():
    """(0, 1, 1, 0) down-sampling, as the cpu_demo critic's blocks use: a 3x3 conv whose only tap is
    the centre returns the 2x2 box average (ProGAN's down-sampling); the binomial blurs further."""
    x = torch.randn(2, 3, 8, 8)
    centre = torch.zeros(3, 1, 3, 3)
    centre[:, :, 1, 1] = 1
    box = conv2d_resample(x, centre, resample_filter((0, 1, 1, 0)), down=2, padding=1, groups=3)
    torch.testing.assert_close(box, area_downsample(x))
    binomial = conv2d_resample(x, centre, resample_filter(), down=2, padding=1, groups=3)
    assert not torch.allclose(binomial, area_downsample(x), atol=1e-2)


def test_nearest_kernel_up_samples_into_exact_blocks():
    """(0, 1, 1, 0): every pixel becomes a 2x2 block, borders included; a bad kernel is refused."""
    x = torch.randn(2, 3, 4, 4)
    blocks = x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    torch.testing.assert_close(fade_upsample(x, (0, 1, 1, 0)), blocks)
    for bad in ((1, 2, 1), (0, 0, 0, 0), (1, -1, 3, 1)):
        with pytest.raises(ValueError, match="4 non-negative taps"):
            resample_filter(bad)
