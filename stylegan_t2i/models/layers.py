"""Building blocks shared by the generator and the critic (StyleGAN2 style).

Every weight uses the equalised learning rate of Karras et al. 2018 (ProGAN,
sec. 4.1): parameters are stored as N(0, 1) / lr_multiplier and scaled at run
time by lr_multiplier / sqrt(fan_in), so Adam sees every layer at the same
scale. Resampling is FIR ([1, 3, 3, 1]) through `upfirdn2d`; bias + activation
(+ gain, clamp) is one fused `bias_act` call. Both ops support double backward,
which the gradient penalty needs.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stylegan_t2i.batch_share import BatchShare, whole_batch
from stylegan_t2i.ops import bias_act, upfirdn2d

RESAMPLE_KERNEL = (1, 3, 3, 1)  # binomial FIR of StyleGAN2 (sec. B of the paper)
ARCHITECTURES = ("orig", "skip")  # growth forms of G and D (docs/architecture.md, "Generator", "Critic")

# ---------------------------------------------------------------------------


def assert_shape(
    tensor: torch.Tensor,       # Tensor to check.
    ref_shape: Sequence,        # Expected shape; None matches any size.
) -> None:
    """Raise AssertionError naming both shapes when `tensor` does not match `ref_shape`."""
    ok = tensor.ndim == len(ref_shape) and all(
        r is None or int(s) == int(r) for s, r in zip(tensor.shape, ref_shape)
    )
    assert ok, f"wrong shape: got {list(tensor.shape)}, expected {list(ref_shape)}"


def channels_at(
    res: int,                   # Resolution in pixels (a power of two >= 4).
    channel_base: int,          # Overall width: channels = channel_base / res ...
    channel_max: int,           # ... capped at this many.
) -> int:
    """Feature channels at resolution `res`, shared by G and D: min(channel_base // res, channel_max)."""
    return min(channel_base // res, channel_max)


def num_stages_for(
    max_res: int,               # Final resolution, a power of two >= 4.
) -> int:
    """Growth stages 4x4 ... max_res: log2(max_res) - 1; stage s works at 4 * 2**s pixels."""
    if max_res < 4 or max_res & (max_res - 1):
        raise ValueError(f"max_res must be a power of two >= 4, got {max_res}")
    return int(math.log2(max_res)) - 1


def normalize_2nd_moment(
    x: torch.Tensor,            # Input, e.g. [N, C].
    dim: int = 1,               # Dimension to normalise over.
    eps: float = 1e-8,          # Keeps the rsqrt finite for an all-zero vector.
) -> torch.Tensor:
    """Pixel norm (ProGAN sec. 4.2): x / sqrt(mean(x^2) + eps), so E[x^2] = 1 along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def resample_filter(kernel: Sequence[float] = RESAMPLE_KERNEL) -> torch.Tensor:
    """The normalised 2-D FIR filter of a 4-tap kernel as a [4, 4] float32 tensor.

    (1, 3, 3, 1), the default, is StyleGAN2's binomial low-pass; (0, 1, 1, 0) makes up-sampling
    by 2 nearest-neighbour (each pixel becomes a 2x2 block) and down-sampling 2x2 box averaging.
    """
    return upfirdn2d.setup_filter(list(check_resample_kernel(kernel)))


def check_resample_kernel(kernel: Sequence[float]) -> tuple[float, ...]:
    """`kernel` as a tuple, or ValueError unless it has 4 non-negative taps with a positive sum
    (the 4 taps that conv2d_resample's padding is laid out for)."""
    kernel = tuple(float(k) for k in kernel)
    if len(kernel) != 4 or min(kernel) < 0 or sum(kernel) <= 0:
        raise ValueError(f"resample kernel must have 4 non-negative taps with a positive sum, got {list(kernel)}")
    return kernel


def fade_upsample(
    img: torch.Tensor,          # [N, C, H, W]
    kernel: Sequence[float] = RESAMPLE_KERNEL,  # 4-tap FIR: the generator's `resample_kernel`.
) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, 2H, 2W] by FIR up-sampling with `kernel`.

    ProGAN fade-in: the generator cross-fades its previous-stage toRGB output
    through this, and the training loop does the same to real images, so that
    real and fake go through the same low-pass path while alpha < 1.
    The input is edge-replicated by one pixel first and the extra output
    cropped, so a constant image stays constant up to the border (zero padding
    would blend a dark frame into every faded image).
    """
    assert img.ndim == 4, img.shape
    x = F.pad(img, [1, 1, 1, 1], mode="replicate")
    x = upfirdn2d.upsample2d(x, resample_filter(kernel).to(img.device), up=2)  # [N, C, 2H + 4, 2W + 4]
    return x[:, :, 2:-2, 2:-2]


def area_downsample(
    img: torch.Tensor,          # [N, C, H, W], H and W even.
) -> torch.Tensor:
    """[N, C, H, W] -> [N, C, H/2, W/2] by 2x2 box averaging (ProGAN's downscale of reals)."""
    assert img.ndim == 4 and img.shape[2] % 2 == 0 and img.shape[3] % 2 == 0, img.shape
    return F.avg_pool2d(img, kernel_size=2)


def conv2d_resample(
    x: torch.Tensor,            # [N, groups * I, H, W]
    w: torch.Tensor,            # [groups * O, I, k, k]
    f: torch.Tensor,            # FIR filter [4, 4] from setup_filter(); used only when resampling.
    up: int = 1,                # 1 or 2.
    down: int = 1,              # 1 or 2 (not both with up).
    padding: int = 0,           # Zero padding of the plain convolution (k // 2 keeps the size).
    groups: int = 1,            # Grouped convolution (one group per sample in modulated_conv2d).
) -> torch.Tensor:
    """Convolution fused with FIR up- or down-sampling, as in NVlabs' conv2d_resample.

    up=2:   stride-2 transposed conv, then the FIR low-pass (gain 4 keeps the DC level):
            [N, C, H, W] -> [N, O, 2H, 2W] for padding = k // 2.
    down=2: FIR low-pass with padding, then a stride-2 conv: -> [N, O, H/2, W/2].
    Doing the conv at the low resolution (before up / after down) costs 4x fewer
    FLOPs than filtering first; the result is the same linear map as
    "upsample2d then conv" up to where the FIR is applied.
    """
    assert not (up > 1 and down > 1), "up and down together are not supported"
    k = w.shape[-1]
    f = f.float()  # upfirdn2d takes float32 filters; a module.double() would have converted the buffer.
    fw = f.shape[-1]
    if up > 1:
        # Transposed conv: [N, C, H, W] -> [N, O, 2H + k - 2]; the FIR then trims to 2H + 2*padding - k + 1.
        i_per_group = w.shape[1]
        o_per_group = w.shape[0] // groups
        wt = w.reshape(groups, o_per_group, i_per_group, k, k).transpose(1, 2)
        wt = wt.reshape(groups * i_per_group, o_per_group, k, k)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        p0 = padding + (fw + up - 1) // 2 - (k - 1)
        p1 = padding + (fw - up) // 2 - (k - up)
        return upfirdn2d.upfirdn2d(x, f, padding=[p0, p1, p0, p1], gain=up ** 2)
    if down > 1:
        p0 = padding + (fw - down + 1) // 2
        p1 = padding + (fw - down) // 2
        x = upfirdn2d.upfirdn2d(x, f, padding=[p0, p1, p0, p1])
        return F.conv2d(x, w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)

# ---------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """y = act(x @ (g * W)^T + lr_multiplier * b) with g = lr_multiplier / sqrt(in_features)."""

    def __init__(
        self,
        in_features: int,               # Number of input features.
        out_features: int,              # Number of output features.
        bias: bool = True,              # Apply an additive bias before the activation?
        activation: str = "linear",     # Activation name understood by bias_act.
        lr_multiplier: float = 1.0,     # Learning-rate multiplier (equalised lr).
        bias_init: float = 0.0,         # Initial value of the (effective) bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init) / lr_multiplier)) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert_shape(x, [None, self.in_features])
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, activation={self.activation}"

# ---------------------------------------------------------------------------


class Conv2dLayer(nn.Module):
    """Equalised-lr conv, optional FIR up/down-sampling, fused bias + activation (+ clamp)."""

    def __init__(
        self,
        in_channels: int,               # Number of input channels.
        out_channels: int,              # Number of output channels.
        kernel_size: int,               # Width and height of the kernel.
        bias: bool = True,              # Apply an additive bias before the activation?
        activation: str = "linear",     # Activation name understood by bias_act.
        up: int = 1,                    # Integer up-sampling factor (1 or 2).
        down: int = 1,                  # Integer down-sampling factor (1 or 2).
        conv_clamp: float | None = None,  # Clamp the output to +-conv_clamp (None = off).
        resample_kernel: Sequence[float] = RESAMPLE_KERNEL,  # 4-tap FIR of the up- or down-sampling.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", resample_filter(resample_kernel))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(
        self,
        x: torch.Tensor,                # [N, in_channels, H, W]
        gain: float = 1.0,              # Extra output gain (also scales the clamp).
    ) -> torch.Tensor:
        assert_shape(x, [None, self.in_channels, None, None])
        w = self.weight * self.weight_gain
        x = conv2d_resample(x, w.to(x.dtype), self.resample_filter, up=self.up, down=self.down, padding=self.padding)
        clamp = None if self.conv_clamp is None else self.conv_clamp * gain
        b = None if self.bias is None else self.bias.to(x.dtype)
        return bias_act.bias_act(x, b, act=self.activation, gain=self.act_gain * gain, clamp=clamp)

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"activation={self.activation}, up={self.up}, down={self.down}")

# ---------------------------------------------------------------------------


def modulated_conv2d(
    x: torch.Tensor,                    # Input: [N, I, H, W]
    weight: torch.Tensor,               # Shared weight: [O, I, k, k] (already equalised-lr scaled if wanted).
    styles: torch.Tensor,               # Per-sample input-channel scales: [N, I]
    noise: torch.Tensor | None = None,  # Optional noise added after the conv: [N, 1, H', W'] or broadcastable.
    up: int = 1,                        # Integer up-sampling factor (1 or 2).
    demodulate: bool = True,            # Normalise each output channel's weight (StyleGAN2 eq. 3)?
    padding: int = 1,                   # Zero padding of the conv (k // 2 keeps the size).
    resample_filter: torch.Tensor | None = None,  # [4, 4] FIR for up > 1 (default [1, 3, 3, 1]).
    fused: bool | None = None,          # One grouped conv (True) or scale-conv-scale (False); None: by input.
) -> torch.Tensor:
    """StyleGAN2 (Karras et al. 2020) modulated convolution.

    eq. 1: w'_{n,o,i,k} = s_{n,i} * w_{o,i,k}             (modulate by the style)
    eq. 3: w''_{n,o,i,k} = w'_{n,o,i,k} / sqrt(sum_{i,k} w'^2 + 1e-8)   (demodulate)
    Two forms of the same linear map (docs/architecture.md, "Networks"):
    fused:   each sample gets its own weights w''_n, the batch folded into the channel axis and
             convolved with groups=N: [1, N*I, H, W] * [N*O, I, k, k];
    unfused: x * s_n, one conv with the shared weight, then * d_{n,o}, the demodulation
             coefficients, which depend only on s and w: d_{n,o} = (sum_i s_{n,i}^2 W_{o,i} + 1e-8)^-1/2
             with W_{o,i} = sum_k w_{o,i,k}^2.
    The unfused form runs one dense conv over the batch, which backends run much faster than
    N small grouped ones; the fused form wins only for a single sample (see `prefer_fused`).
    With unit-variance i.i.d. input, demodulation gives unit-variance output (eq. 2).
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    assert_shape(x, [batch_size, in_channels, None, None])
    assert_shape(styles, [batch_size, in_channels])
    if resample_filter is None:
        resample_filter = upfirdn2d.setup_filter(list(RESAMPLE_KERNEL), device=x.device)
    if fused is None:
        fused = prefer_fused(batch_size)
    if fused:
        x = _fused_modconv(x, weight, styles, demodulate, up, padding, resample_filter)
    else:
        x = x * styles.to(x.dtype).reshape(batch_size, in_channels, 1, 1)
        x = conv2d_resample(x, weight.to(x.dtype), resample_filter, up=up, padding=padding)
        if demodulate:
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()   # [N, O]
            x = x * dcoefs.to(x.dtype).reshape(batch_size, out_channels, 1, 1)
    if noise is not None:
        x = x + noise.to(x.dtype)
    return x


def prefer_fused(batch_size: int) -> bool:
    """The grouped form only for one sample: measured on CPU (benchmarks/RESULTS.md, "Modulated
    convolution"), the unfused form is faster from batch 2 on, forward and backward."""
    return batch_size == 1


def _fused_modconv(x, weight, styles, demodulate, up, padding, resample_filter) -> torch.Tensor:
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, in_channels, 1, 1)  # [N, O, I, k, k]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()                   # [N, O]
        w = w * dcoefs.reshape(batch_size, out_channels, 1, 1, 1)
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    w = w.reshape(batch_size * out_channels, in_channels, kh, kw).to(x.dtype)
    x = conv2d_resample(x, w, resample_filter, up=up, padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])

# ---------------------------------------------------------------------------


class NoiseInjection(nn.Module):
    """Per-pixel Gaussian noise scaled by one learned strength (StyleGAN sec. 2, "B" inputs)."""

    MODES = ("random", "const", "none")

    def __init__(
        self,
        resolution: int,                # Spatial size of the feature map that gets the noise.
    ):
        super().__init__()
        self.resolution = resolution
        self.strength = nn.Parameter(torch.zeros([]))  # Starts at 0: noise is learned in, not imposed.
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))

    def forward(
        self,
        batch_size: int,                # N of the feature map.
        noise_mode: str,                # 'random' (fresh per call), 'const' (fixed buffer) or 'none'.
        device: torch.device,           # Where to draw the random noise.
        share: BatchShare | None = None,  # Data-parallel: draw for the global batch, keep these rows.
    ) -> torch.Tensor | None:
        """The noise to add, [N, 1, R, R] or [R, R], already scaled; None for 'none'."""
        assert noise_mode in self.MODES, noise_mode
        if noise_mode == "none":
            return None
        if noise_mode == "const":
            return self.noise_const * self.strength
        share = share or whole_batch(batch_size)
        assert share.size == batch_size, (share, batch_size)
        return share.randn(1, self.resolution, self.resolution, device=device) * self.strength

# ---------------------------------------------------------------------------


class MinibatchStdLayer(nn.Module):
    """Appends the mean per-group feature standard deviation (ProGAN sec. 3) as extra channels."""

    def __init__(
        self,
        group_size: int,                # Samples per group; min(group_size, N) is used.
        num_channels: int = 1,          # Number of features (channel groups) -> extra channels.
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(
        self,
        x: torch.Tensor,                # [N, C, H, W]
        sets: int = 1,                  # x is this many equal batches, concatenated: groups never span two.
    ) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n // sets)
        f = self.num_channels
        if n % g != 0 or c % f != 0:
            raise ValueError(f"MinibatchStdLayer: batch {n} must be divisible by group size {g} "
                             f"and channels {c} by num_channels {f}")
        # Contiguous groups (samples g*k .. g*k+g-1), unlike NVlabs' strided i % (n // g): a
        # data-parallel rank's contiguous slice of the global batch then holds whole groups, so
        # each rank computes exactly what one process computes on the global batch.
        y = x.reshape(n // g, g, f, c // f, h, w)      # [n, G, F, c, H, W]
        y = y - y.mean(dim=1, keepdim=True)             # Deviation from the group mean.
        y = (y.square().mean(dim=1) + 1e-8).sqrt()      # [n, F, c, H, W] std over the group.
        y = y.mean(dim=[2, 3, 4])                       # [n, F] average over channels and pixels.
        y = y.repeat_interleave(g, dim=0).reshape(n, f, 1, 1).expand(n, f, h, w)   # [N, F, H, W]
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f"group_size={self.group_size}, num_channels={self.num_channels}"
