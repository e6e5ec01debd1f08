"""Upsample, FIR-filter and downsample 2-D images (NVlabs `upfirdn2d` semantics).

For each image channel of x: [N, C, H, W] (independently, same filter for all
channels), `upfirdn2d` does, per axis:

1. upsample by inserting `up - 1` zeros after every pixel (length H * up_y),
2. pad with zeros (`pad0` before, `pad1` after; negative values crop),
3. convolve ("valid", no extra padding) with the FIR filter f (a true
   convolution, i.e. correlation with the flipped filter; `flip_filter=True`
   correlates with f as given), scaled by `gain`,
4. downsample by keeping every `down`-th pixel, starting with the first.

Output size per axis: out_h = (H * up_y + pad_y0 + pad_y1 - f_h) // down_y + 1
(and likewise for W); it must be >= 1. A 1-D filter is separable: it is applied
along W and then along H (f_w = f_h = len(f)); a 2-D filter f: [f_h, f_w] is
applied as is; `f=None` is the 1x1 identity filter.

Gradients: the op is linear in x, so dL/dx is the same op transposed, which is
again an upfirdn2d with up and down swapped, the filter flipped and the padding
recomputed (`_grad_params`). `_Upfirdn2d.backward` calls `_Upfirdn2d` itself,
so the double backward that a gradient penalty needs is an upfirdn2d too; on
CPU this avoids autograd's slow per-group loop for the double backward of a
grouped convolution. Filters are constants: no gradient flows into f.
"""

import dataclasses

import torch
import torch.nn.functional as F

from . import cuda_build

_loader = cuda_build.CudaExtensionLoader("stylegan_t2i_upfirdn2d", ["upfirdn2d.cpp", "upfirdn2d.cu"])

# ----------------------------------------------------------------------------
# Argument parsing.

def _parse_scaling(scaling):
    """int s -> (s, s); [sx, sy] -> (sx, sy). Factors are ints >= 1."""
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple)) and len(scaling) == 2, f"bad scaling {scaling!r}"
    sx, sy = (int(s) for s in scaling)
    assert sx >= 1 and sy >= 1, f"scaling factors must be >= 1, got {scaling!r}"
    return sx, sy


def _parse_padding(padding):
    """int p -> (p, p, p, p); [px, py] -> (px, px, py, py); [x0, x1, y0, y1] as is."""
    if isinstance(padding, int):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple)) and len(padding) in (2, 4), f"bad padding {padding!r}"
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    return tuple(int(p) for p in padding)


def _get_filter_size(f):
    """(f_w, f_h) of a filter: None -> (1, 1); 1-D [K] -> (K, K); 2-D [f_h, f_w]."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), "filter must be a 1-D or 2-D tensor"
    fw, fh = f.shape[-1], f.shape[0]
    assert fw >= 1 and fh >= 1
    return fw, fh

# ----------------------------------------------------------------------------
# Filter construction.

def setup_filter(
    f,                              # Filter taps: number, 1-D [K] or 2-D [f_h, f_w] array-like; None = [1].
    device      = torch.device("cpu"),  # Device of the returned tensor.
    normalize   = True,             # Divide by the sum of the taps (the filter then preserves a constant signal).
    flip_filter = False,            # Flip the taps (all axes).
    gain        = 1,                # Overall gain: the 2-D response is scaled by `gain`
                                    # (a separable 1-D filter by sqrt(gain), as it is applied twice).
    separable   = None,             # Keep a 1-D filter 1-D? None = only when it has >= 8 taps.
):
    """Convert filter taps to the float32 tensor that `upfirdn2d` expects.

    A 1-D filter that is not kept separable becomes its outer product with
    itself, [K, K]: `setup_filter([1, 3, 3, 1])` is the 4x4 filter
    outer([1,3,3,1], [1,3,3,1]) / 64. Normalisation comes before the gain, so
    the taps sum to `gain` (2-D) or sqrt(gain) (separable 1-D).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2) and f.numel() > 0, "filter must be a scalar, 1-D or 2-D"
    if f.ndim == 0:
        f = f[None]
    if separable is None:
        separable = (f.ndim == 1 and f.numel() >= 8)
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2), "a 2-D filter cannot be made separable"
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)

# ----------------------------------------------------------------------------
# The op as a differentiable Function whose backward is the same Function.

@dataclasses.dataclass(frozen=True)
class _Params:
    up:          tuple      # (up_x, up_y)
    down:        tuple      # (down_x, down_y)
    pad:         tuple      # (pad_x0, pad_x1, pad_y0, pad_y1); negative = crop.
    flip_filter: bool
    gain:        float


def _output_size(in_hw, fw, fh, p):
    """(out_h, out_w) = ((H*up_y + pad_y0 + pad_y1 - f_h) // down_y + 1, same for W)."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = p.up, p.down, p.pad
    out_h = (in_hw[0] * upy + py0 + py1 - fh) // downy + 1
    out_w = (in_hw[1] * upx + px0 + px1 - fw) // downx + 1
    return out_h, out_w


def _grad_params(p, fw, fh, in_hw, out_hw):
    """Parameters of the transposed op, which maps dy: [.., out_h, out_w] to dx: [.., H, W].

    Per axis, y[o] = gain * sum_i x[i] * c[i*up - o*down + pad0] with c the
    correlation taps. Transposing gives a correlation of dy (zero-inserted by
    `down`) with the reversed taps (hence `not flip_filter`), padded by
    pad0' = f - 1 - pad0 in front, and by pad1' = H*up - out*down + pad0 - up + 1
    behind, which makes the output length exactly H; then every `up`-th pixel.
    """
    (upx, upy), (downx, downy), (px0, _, py0, _) = p.up, p.down, p.pad
    (ih, iw), (oh, ow) = in_hw, out_hw
    pad = (fw - 1 - px0, iw * upx - ow * downx + px0 - upx + 1,
           fh - 1 - py0, ih * upy - oh * downy + py0 - upy + 1)
    return _Params(up=p.down, down=p.up, pad=pad, flip_filter=not p.flip_filter, gain=p.gain)


def _pad_or_crop(x, pad):
    """Zero-pad (positive) or crop (negative) the last two axes; pad = [x0, x1, y0, y1].

    Per axis, out[j] = x[j - pad0] (zero outside x) for 0 <= j < len + pad0 + pad1. A crop
    may reach past the far end of x when the other side is padded (e.g. len 3, pad0 = -4,
    pad1 = 4: three zeros), which the gradient of a strided op produces when the padded
    length is not a multiple of `down`; the result is then all zeros.
    """
    x0, x1, y0, y1 = pad
    h, w = x.shape[2], x.shape[3]
    out_h, out_w = h + y0 + y1, w + x0 + x1
    assert out_h >= 0 and out_w >= 0, f"padding {pad} leaves a negative size of {h}x{w}"
    ya, yb, xa, xb = max(-y0, 0), min(h, h + y1), max(-x0, 0), min(w, w + x1)  # rows/cols of x kept
    if ya >= yb or xa >= xb:
        return x.new_zeros([x.shape[0], x.shape[1], out_h, out_w])
    return F.pad(x[:, :, ya:yb, xa:xb], [max(x0, 0), max(x1, 0), max(y0, 0), max(y1, 0)])


def _ref_kernel(x, f, p):
    """Reference upfirdn2d of x: [N, C, H, W] with a 2-D filter f: [f_h, f_w].

    Without upsampling: pad, then a depthwise conv2d with stride `down` (the
    strided conv skips the outputs that downsampling discards). With
    upsampling: conv_transpose2d with stride `up` scatters x[i] * w[k] to
    z[i*up + k], which equals zero insertion followed by a full convolution
    with w, without multiplying the inserted zeros; then
    y[o] = z[o*down + f - 1 - pad0] (pad/crop z, keep every `down`-th pixel).
    """
    (upx, upy), (downx, downy) = p.up, p.down
    # A Python int even under torch.jit.trace (ONNX export): Conv's `group` and kernel shape must be static.
    num_channels = int(x.shape[1])
    fh, fw = f.shape
    w = f.to(x.dtype) * p.gain
    out_h, out_w = _output_size(x.shape[2:], fw, fh, p)
    if upx == 1 and upy == 1:
        c = w if p.flip_filter else w.flip([0, 1])  # correlation taps; unflipped = true convolution
        x = _pad_or_crop(x, p.pad)
        return F.conv2d(x, c[None, None].repeat(num_channels, 1, 1, 1), stride=(downy, downx), groups=num_channels)
    k = w.flip([0, 1]) if p.flip_filter else w       # transposed conv applies w as a true convolution
    z = F.conv_transpose2d(x, k[None, None].repeat(num_channels, 1, 1, 1), stride=(upy, upx), groups=num_channels)
    sx, sy = fw - 1 - p.pad[0], fh - 1 - p.pad[2]    # index in z of output pixel 0
    ex, ey = sx + (out_w - 1) * downx + 1, sy + (out_h - 1) * downy + 1
    z = _pad_or_crop(z, [-sx, ex - z.shape[3], -sy, ey - z.shape[2]])
    return z[:, :, ::downy, ::downx]


def _kernel_2d(x, f, p, module):
    """One pass with a 2-D filter, on the CUDA kernel when `module` is given."""
    if module is None:
        return _ref_kernel(x, f, p)
    return module.upfirdn2d(x, f, *p.up, *p.down, *p.pad, p.flip_filter, float(p.gain))


def _run(x, f, p, module):
    """Forward of upfirdn2d; a 1-D filter runs as a W pass followed by an H pass."""
    if f.ndim == 2:
        return _kernel_2d(x, f, p, module)
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = p.up, p.down, p.pad
    # The whole gain goes into the first pass (sqrt(gain) per pass fails for gain < 0).
    px = _Params(up=(upx, 1), down=(downx, 1), pad=(px0, px1, 0, 0), flip_filter=p.flip_filter, gain=p.gain)
    py = _Params(up=(1, upy), down=(1, downy), pad=(0, 0, py0, py1), flip_filter=p.flip_filter, gain=1.0)
    x = _kernel_2d(x, f[None, :], px, module)
    return _kernel_2d(x, f[:, None], py, module)


class _Upfirdn2d(torch.autograd.Function):
    """y = upfirdn2d(x); dx = upfirdn2d^T(dy), itself this Function (so differentiable again)."""

    @staticmethod
    def forward(ctx, x, f, p, module):  # pylint: disable=arguments-differ
        ctx.save_for_backward(f)
        ctx.p, ctx.module, ctx.in_hw = p, module, tuple(x.shape[2:])
        return _run(x, f, p, module)

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        f, = ctx.saved_tensors
        dx = None
        if ctx.needs_input_grad[0]:
            fw, fh = _get_filter_size(f)
            gp = _grad_params(ctx.p, fw, fh, ctx.in_hw, tuple(dy.shape[2:]))
            dx = _Upfirdn2d.apply(dy, f, gp, ctx.module)
        return dx, None, None, None

# ----------------------------------------------------------------------------
# Public API.

def upfirdn2d(
    x,                  # Input: [N, C, H, W], float16/bfloat16/float32/float64, any strides.
    f,                  # Filter: float32 [f_h, f_w] or separable [K]; None = identity.
    up          = 1,    # Upsampling factor: int or [x, y].
    down        = 1,    # Downsampling factor: int or [x, y].
    padding     = 0,    # Padding after upsampling: int, [x, y] or [x0, x1, y0, y1]; negative crops.
    flip_filter = False,  # False = convolution (filter flipped), True = correlation.
    gain        = 1,    # Overall scaling of the output (applied to the filter).
    impl        = "cuda",  # 'cuda' (own kernel, falls back to 'ref' when unusable) or 'ref'.
):
    """Upsample (zero insertion), pad, FIR-filter and downsample a batch of images.

    Returns y: [N, C, out_h, out_w] of x's dtype with, per axis,
    out = (in * up + pad0 + pad1 - f_size) // down + 1 (see the module
    docstring for the exact definition). x is never modified. Exact first and
    second derivatives with respect to x on both implementations.
    """
    assert isinstance(x, torch.Tensor) and x.ndim == 4, "x must be [N, C, H, W]"
    assert x.dtype.is_floating_point, "x must be a floating-point tensor"
    assert impl in ("ref", "cuda"), f"impl must be 'ref' or 'cuda', got {impl!r}"
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2), "f must be a 1-D or 2-D tensor"
    assert f.dtype == torch.float32 and not f.requires_grad, "f must be a constant float32 tensor (setup_filter)"
    assert f.device == x.device, f"filter on {f.device} but x on {x.device}"
    p = _Params(up=_parse_scaling(up), down=_parse_scaling(down), pad=_parse_padding(padding),
                flip_filter=bool(flip_filter), gain=float(gain))
    fw, fh = _get_filter_size(f)
    out_h, out_w = _output_size(x.shape[2:], fw, fh, p)
    assert out_h >= 1 and out_w >= 1, f"upfirdn2d output would be {out_h}x{out_w}; reduce the cropping"
    module = _loader.module_for(x) if impl == "cuda" else None
    if not (torch.is_grad_enabled() and x.requires_grad):
        # Nothing to differentiate: the plain forward, the same ops without the Function around
        # them (which also keeps a torch.jit.trace, e.g. an ONNX export, to plain ops).
        return _run(x, f, p, module)
    return _Upfirdn2d.apply(x, f, p, module)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Filter x: [N, C, H, W] with f, keeping the size (same-size "same" convolution).

    Equals upfirdn2d(x, f, padding=[x0 + f_w // 2, x1 + (f_w - 1) // 2,
    y0 + f_h // 2, y1 + (f_h - 1) // 2]); output [N, C, H + y0 + y1, W + x0 + x1]
    for extra padding [x0, x1, y0, y1]; the output is scaled by `gain`.
    """
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + fw // 2, padx1 + (fw - 1) // 2, pady0 + fh // 2, pady1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Upsample x: [N, C, H, W] by `up` (zero insertion + FIR filter f).

    Equals upfirdn2d(x, f, up=up, padding=[x0 + (f_w + up_x - 1) // 2,
    x1 + (f_w - up_x) // 2, y0 + (f_h + up_y - 1) // 2, y1 + (f_h - up_y) // 2],
    gain=gain * up_x * up_y): output [N, C, H * up_y + y0 + y1, W * up_x + x0 + x1].
    The up_x * up_y factor compensates the zeros, so a normalised filter maps
    a constant image to the same constant (times `gain`).
    """
    upx, upy = _parse_scaling(up)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw + upx - 1) // 2, padx1 + (fw - upx) // 2,
         pady0 + (fh + upy - 1) // 2, pady1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl="cuda"):
    """Downsample x: [N, C, H, W] by `down` (FIR filter f, then keep every down-th pixel).

    Equals upfirdn2d(x, f, down=down, padding=[x0 + (f_w - down_x + 1) // 2,
    x1 + (f_w - down_x) // 2, y0 + (f_h - down_y + 1) // 2, y1 + (f_h - down_y) // 2],
    gain=gain): output [N, C, (H + y0 + y1) // down_y, (W + x0 + x1) // down_x].
    """
    downx, downy = _parse_scaling(down)
    padx0, padx1, pady0, pady1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [padx0 + (fw - downx + 1) // 2, padx1 + (fw - downx) // 2,
         pady0 + (fh - downy + 1) // 2, pady1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)
