"""upfirdn2d reference path vs independent scipy/numpy formulations, gradients, layouts, fallback."""

import warnings

import numpy as np
import pytest
import scipy.signal
import torch

from stylegan_t2i.ops import cuda_build, upfirdn2d

# ----------------------------------------------------------------------------
# Independent formulations (float64 numpy / scipy).

def _literal_1d(x, f, up, down, pad0, pad1, flip):
    """The four steps as written: zero insertion, pad/crop, valid FIR, keep every down-th."""
    u = np.zeros(len(x) * up)
    u[::up] = x
    u = np.concatenate([np.zeros(max(pad0, 0)), u, np.zeros(max(pad1, 0))])
    u = u[max(-pad0, 0): len(u) - max(-pad1, 0)]
    c = np.correlate(u, f, "valid") if flip else np.convolve(u, f, "valid")
    return c[::down]


def _scipy_1d(x, f, up, down, pad0, pad1, flip):
    """scipy.signal.upfirdn: z = full convolution of the zero-inserted x with f.

    With the NVlabs convention the output sample o sits at z[o * down + len(f) - 1 - pad0]
    (zero outside z); the output length is (len(x) * up + pad0 + pad1 - len(f)) // down + 1.
    """
    f = f[::-1] if flip else f
    z = scipy.signal.upfirdn(f, x, up=up, down=1)
    out = (len(x) * up + pad0 + pad1 - len(f)) // down + 1
    idx = np.arange(out) * down + len(f) - 1 - pad0
    valid = (idx >= 0) & (idx < len(z))
    return np.where(valid, z[np.clip(idx, 0, len(z) - 1)], 0.0)


def _scipy_separable(x, fx, fy, up, down, pad, flip, gain):
    """Apply _scipy_1d along W (filter fx), then along H (filter fy). x: [N, C, H, W] numpy."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    y = np.apply_along_axis(_scipy_1d, 3, x, fx, upx, downx, px0, px1, flip)
    y = np.apply_along_axis(_scipy_1d, 2, y, fy, upy, downy, py0, py1, flip)
    return y * gain


def _scipy_2d(x, f, up, down, pad, flip, gain):
    """Zero insertion, pad/crop, scipy.signal.convolve2d (or correlate2d), subsample."""
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    n, c, h, w = x.shape
    u = np.zeros([n, c, h * upy, w * upx])
    u[:, :, ::upy, ::upx] = x
    u = np.pad(u, [(0, 0), (0, 0), (max(py0, 0), max(py1, 0)), (max(px0, 0), max(px1, 0))])
    u = u[:, :, max(-py0, 0): u.shape[2] - max(-py1, 0), max(-px0, 0): u.shape[3] - max(-px1, 0)]
    op = scipy.signal.correlate2d if flip else scipy.signal.convolve2d
    y = np.stack([np.stack([op(img, f, mode="valid") for img in imgs]) for imgs in u])
    return y[:, :, ::downy, ::downx] * gain


def _random_case(rng):
    """Random argument forms: int / list up & down, int / 2 / 4 padding incl. crops."""
    upx, upy = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    downx, downy = int(rng.integers(1, 4)), int(rng.integers(1, 4))
    up = upx if rng.random() < 0.3 else [upx, upy]
    down = downx if rng.random() < 0.3 else [downx, downy]
    up_xy = (upx, upx) if isinstance(up, int) else (upx, upy)
    down_xy = (downx, downx) if isinstance(down, int) else (downx, downy)
    kind = rng.integers(3)
    if kind == 0:
        padding = int(rng.integers(-2, 5))
    elif kind == 1:
        padding = [int(v) for v in rng.integers(-2, 5, size=2)]
    else:
        padding = [int(v) for v in rng.integers(-3, 6, size=4)]
    return up, down, up_xy, down_xy, padding


def _fits(shape, fsize, up_xy, down_xy, pad):
    h, w = shape[2:]
    return (h * up_xy[1] + pad[2] + pad[3] - fsize[1] >= 0) and (w * up_xy[0] + pad[0] + pad[1] - fsize[0] >= 0)

# ----------------------------------------------------------------------------
# Forward vs scipy.

@pytest.mark.parametrize("up,down,pad0,pad1,flip", [
    (1, 1, 0, 0, False), (2, 1, 2, 1, False), (1, 2, 1, 1, True), (3, 2, -2, 4, False), (2, 3, 5, -3, True)])
def test_scipy_helper_matches_literal_definition(up, down, pad0, pad1, flip):
    rng = np.random.default_rng(0)
    x, f = rng.standard_normal(9), rng.standard_normal(4)
    np.testing.assert_allclose(_scipy_1d(x, f, up, down, pad0, pad1, flip),
                               _literal_1d(x, f, up, down, pad0, pad1, flip), atol=1e-12)


def test_separable_forward_matches_scipy_random():
    rng = np.random.default_rng(1)
    checked = 0
    while checked < 60:
        up, down, up_xy, down_xy, padding = _random_case(rng)
        shape = [int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(1, 9)), int(rng.integers(1, 9))]
        fsize = int(rng.integers(1, 6))
        # Taps k/16 with |k| < 64: their outer product is exact in float32, so both forms are comparable.
        f1 = torch.tensor(rng.integers(-63, 64, size=fsize) / 16, dtype=torch.float32)
        pad = upfirdn2d._parse_padding(padding)
        if not _fits(shape, (fsize, fsize), up_xy, down_xy, pad):
            continue
        x = torch.randn(shape, dtype=torch.float64)
        flip, gain = bool(rng.random() < 0.5), float(rng.uniform(-2, 3))
        separable = bool(rng.random() < 0.5)  # 1-D filter, or the same filter as an explicit 2-D outer product
        f = f1 if separable else torch.outer(f1, f1)
        y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="ref")
        fn = f1.double().numpy()
        ref = _scipy_separable(x.numpy(), fn, fn, up_xy, down_xy, pad, flip, gain)
        assert y.shape == ref.shape, (up, down, padding, shape, fsize)
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-10, rtol=1e-10)
        checked += 1


def test_nonseparable_forward_matches_convolve2d_random():
    rng = np.random.default_rng(2)
    checked = 0
    while checked < 30:
        up, down, up_xy, down_xy, padding = _random_case(rng)
        shape = [2, 2, int(rng.integers(2, 8)), int(rng.integers(2, 8))]
        fh, fw = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        pad = upfirdn2d._parse_padding(padding)
        if not _fits(shape, (fw, fh), up_xy, down_xy, pad):
            continue
        f = torch.randn([fh, fw], generator=torch.Generator().manual_seed(checked))
        x = torch.randn(shape, dtype=torch.float64)
        flip, gain = bool(rng.random() < 0.5), float(rng.uniform(0.5, 2))
        y = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="ref")
        ref = _scipy_2d(x.numpy(), f.double().numpy(), up_xy, down_xy, pad, flip, gain)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y.numpy(), ref, atol=1e-10, rtol=1e-10)
        checked += 1


def test_none_filter_is_identity_with_zero_insertion():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    y = upfirdn2d.upfirdn2d(x, None, up=2, down=1, padding=[1, 0, 0, 2], gain=3, impl="ref")
    ref = _scipy_separable(x.numpy(), np.ones(1), np.ones(1), (2, 2), (1, 1), (1, 0, 0, 2), False, 3)
    np.testing.assert_allclose(y.numpy(), ref, atol=1e-12)


def test_crop_everything_gives_zeros():
    x = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    y = upfirdn2d.upfirdn2d(x, torch.ones(2), padding=[-4, 6, 0, 0], impl="ref")
    assert y.shape == (1, 1, 3, 5) and y.abs().max() == 0

# ----------------------------------------------------------------------------
# Wrappers, setup_filter.

def test_setup_filter_semantics():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    k = torch.tensor([1., 3, 3, 1])
    torch.testing.assert_close(f, torch.outer(k, k) / 64)
    assert f.dtype == torch.float32 and f.device.type == "cpu"
    g = upfirdn2d.setup_filter([1, 2, 3], gain=4, flip_filter=True)
    assert abs(float(g.sum()) - 4) < 1e-6 and float(g[0, 0]) == pytest.approx(4 * 9 / 36)
    s = upfirdn2d.setup_filter([1, 2, 3], separable=True, gain=4, normalize=False)
    torch.testing.assert_close(s, torch.tensor([1., 2, 3]) * 2)
    assert upfirdn2d.setup_filter(list(range(1, 9))).ndim == 1  # >= 8 taps: separable by default
    torch.testing.assert_close(upfirdn2d.setup_filter(None), torch.ones(1, 1))


@pytest.mark.parametrize("fsize,factor", [(4, 2), (3, 2), (2, 2), (4, [2, 1]), (6, 3), (1, 2)])
def test_wrappers_are_upfirdn2d_with_documented_padding(fsize, factor):
    f = upfirdn2d.setup_filter(list(range(1, fsize + 1)))
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    fx, fy = (factor, factor) if isinstance(factor, int) else factor
    up = upfirdn2d.upsample2d(x, f, up=factor, padding=[1, 0, 2, -1], gain=1.5, impl="ref")
    pad = [1 + (fsize + fx - 1) // 2, (fsize - fx) // 2, 2 + (fsize + fy - 1) // 2, -1 + (fsize - fy) // 2]
    torch.testing.assert_close(up, upfirdn2d.upfirdn2d(x, f, up=factor, padding=pad, gain=1.5 * fx * fy, impl="ref"))
    assert up.shape == (2, 3, 6 * fy + 1, 9 * fx + 1)
    down = upfirdn2d.downsample2d(x, f, down=factor, impl="ref")
    assert down.shape == (2, 3, 6 // fy, 9 // fx)
    flt = upfirdn2d.filter2d(x, f, padding=1, impl="ref")
    pad = [1 + fsize // 2, 1 + (fsize - 1) // 2] * 2
    torch.testing.assert_close(flt, upfirdn2d.upfirdn2d(x, f, padding=pad, impl="ref"))
    assert flt.shape == (2, 3, 8, 11)


def test_normalised_filter_preserves_constants():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.full([1, 2, 8, 8], 0.7, dtype=torch.float64)
    torch.testing.assert_close(upfirdn2d.upsample2d(x, f, impl="ref")[:, :, 2:-2, 2:-2], torch.full([1, 2, 12, 12], 0.7, dtype=torch.float64))
    torch.testing.assert_close(upfirdn2d.downsample2d(x, f, impl="ref")[:, :, 1:-1, 1:-1], torch.full([1, 2, 2, 2], 0.7, dtype=torch.float64))


def test_bad_arguments_raise():
    x = torch.randn(1, 1, 4, 4)
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(3, dtype=torch.float64), impl="ref")
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(3), padding=-3, impl="ref")
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(3), up=0, impl="ref")
    with pytest.raises(AssertionError):
        upfirdn2d.upfirdn2d(x, torch.ones(3), impl="triton")

# ----------------------------------------------------------------------------
# Gradients.

GRAD_CASES = [
    dict(up=2, padding=[2, 1, 2, 1]),                       # upsample2d with [1,3,3,1]
    dict(down=2, padding=1),                                # downsample2d
    dict(up=[2, 1], down=[1, 3], padding=[-1, 2, 1, 2]),    # mixed factors, a crop
    dict(up=3, down=2, padding=[3, -1, 1, 0], flip_filter=True, gain=-1.5),
]


@pytest.mark.parametrize("case", GRAD_CASES)
@pytest.mark.parametrize("separable", [False, True])
def test_gradcheck_and_gradgradcheck(case, separable):
    f = upfirdn2d.setup_filter([1, 2, 4, 1], separable=separable)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    fn = lambda t: upfirdn2d.upfirdn2d(t, f, impl="ref", **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def _naive_ref(x, f, up, pad):
    """NVlabs-style formulation left to autograd: zero insertion, pad, grouped conv2d."""
    n, c, h, w = x.shape
    z = torch.nn.functional.pad(x.reshape(n, c, h, 1, w, 1), [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    z = torch.nn.functional.pad(z, pad)
    return torch.nn.functional.conv2d(z, f.flip([0, 1]).double()[None, None].repeat(c, 1, 1, 1), groups=c)


def test_gradient_penalty_double_backward_matches_autograd_and_stays_upfirdn2d():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    w = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    grads = []
    for fn in (lambda t: upfirdn2d.upsample2d(t, f, impl="ref") * 4 / 4, lambda t: _naive_ref(t, f * 4, 2, [2, 1, 2, 1])):
        t = x.clone().requires_grad_(True)
        y = fn(t)
        g, = torch.autograd.grad((y.tanh() * w).sum(), t, create_graph=True)
        penalty = g.square().sum()       # WGAN-GP-like: differentiate the gradient norm
        gg, = torch.autograd.grad(penalty, t)
        grads.append((y, g, gg))
        if len(grads) == 1:
            assert "Upfirdn2d" in type(g.grad_fn).__name__  # the backward is the op itself
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)

# ----------------------------------------------------------------------------
# Layouts, dtypes, no in-place changes.

def test_channels_last_and_strided_inputs_match_contiguous():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    base = torch.randn(2, 6, 10, 12)
    x = base.clone()
    for variant in (x.to(memory_format=torch.channels_last), base[:, ::2, 1::2, ::3], x.transpose(2, 3).contiguous().transpose(2, 3)):
        for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
            torch.testing.assert_close(fn(variant, f, impl="ref"), fn(variant.contiguous(), f, impl="ref"))
    torch.testing.assert_close(x, base)  # input untouched


def test_input_not_modified_with_grad():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    before = x.detach().clone()
    upfirdn2d.upsample2d(x, f, impl="ref").square().sum().backward()
    torch.testing.assert_close(x.detach(), before)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-2), (torch.bfloat16, 5e-2)])
def test_low_precision_matches_float64(dtype, tol):
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d):
        y = fn(x.to(dtype), f, impl="ref")
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), fn(x, f, impl="ref"), atol=tol, rtol=tol)

# ----------------------------------------------------------------------------
# impl='cuda' glue on CPU: fallback, env var, argument passing to the extension.

def test_cuda_impl_on_cpu_tensor_runs_the_reference_silently(monkeypatch):
    monkeypatch.delenv(cuda_build.REF_ENV_VAR, raising=False)
    monkeypatch.setattr(upfirdn2d, "_loader", cuda_build.CudaExtensionLoader("t", ["missing.cu"]))
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x = torch.randn(1, 2, 5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = [upfirdn2d.upsample2d(x, f) for _ in range(3)]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]   # CPU use is quiet
    for y in ys:
        torch.testing.assert_close(y, upfirdn2d.upsample2d(x, f, impl="ref"))


def test_env_var_forces_ref_silently(monkeypatch):
    monkeypatch.setenv(cuda_build.REF_ENV_VAR, "1")
    monkeypatch.setattr(upfirdn2d, "_loader", cuda_build.CudaExtensionLoader("t", ["missing.cu"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = upfirdn2d.downsample2d(torch.ones(1, 1, 4, 4), upfirdn2d.setup_filter([1, 1]))
    torch.testing.assert_close(y, torch.ones(1, 1, 2, 2))


def test_failed_build_is_tried_once_and_warns_once(monkeypatch):
    monkeypatch.delenv(cuda_build.REF_ENV_VAR, raising=False)
    loader = cuda_build.CudaExtensionLoader("stylegan_t2i_missing", ["does_not_exist.cu"])
    builds = []
    monkeypatch.setattr(loader, "_build", lambda: (builds.append(1), setattr(loader, "_build_error", "OSError: x")))
    fake_cuda = torch.empty(0, device="meta")
    monkeypatch.setattr(type(fake_cuda), "device", property(lambda self: torch.device("cuda")), raising=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert loader.module_for(fake_cuda) is None and loader.module_for(fake_cuda) is None
    assert len(builds) == 1 and len(caught) == 1 and "building the CUDA extension failed" in str(caught[0].message)


class _FakeExtension:
    """Stands in for the compiled module: checks the C++ side's preconditions, computes with the ref kernel."""

    def __init__(self):
        self.calls = 0

    def upfirdn2d(self, x, f, upx, upy, downx, downy, padx0, padx1, pady0, pady1, flip, gain):  # noqa: PLR0913
        assert f.ndim == 2 and f.dtype == torch.float32 and isinstance(flip, bool) and isinstance(gain, float)
        self.calls += 1
        p = upfirdn2d._Params(up=(upx, upy), down=(downx, downy), pad=(padx0, padx1, pady0, pady1),
                              flip_filter=flip, gain=gain)
        return upfirdn2d._ref_kernel(x, f, p)


@pytest.mark.parametrize("separable", [False, True])
def test_cuda_glue_passes_arguments_in_kernel_order(monkeypatch, separable):
    fake = _FakeExtension()
    monkeypatch.setattr(upfirdn2d._loader, "module_for", lambda x: fake)
    f = upfirdn2d.setup_filter([1, 2, 5], separable=separable)
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    case = dict(up=[2, 1], down=[1, 3], padding=[-1, 2, 0, 3], flip_filter=True, gain=2.0)
    torch.testing.assert_close(upfirdn2d.upfirdn2d(x, f, **case), upfirdn2d.upfirdn2d(x, f, impl="ref", **case))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d.upfirdn2d(t, f, **case), (x,))
    assert fake.calls > 0
