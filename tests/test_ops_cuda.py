"""CUDA kernels vs the reference path: forward, first and second order gradients (GPU only)."""

import warnings

import pytest
import torch

from stylegan_t2i.ops import bias_act, cuda_build, upfirdn2d

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

UPFIRDN_CASES = [
    dict(),
    dict(up=2, padding=[2, 1, 2, 1]),
    dict(down=2, padding=1),
    dict(up=[2, 1], down=[1, 3], padding=[-1, 2, 1, 2]),
    dict(up=3, down=2, padding=[3, -1, 1, 0], flip_filter=True, gain=-1.5),
    dict(up=4, padding=[5, 4, 0, 3], gain=16),
]


@pytest.fixture(autouse=True)
def _cuda_kernels_enabled(monkeypatch):
    monkeypatch.delenv(cuda_build.REF_ENV_VAR, raising=False)


def _upfirdn_both(x, f, case):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback warning here would mean the kernel did not run
        y_cuda = upfirdn2d.upfirdn2d(x, f, impl="cuda", **case)
    return y_cuda, upfirdn2d.upfirdn2d(x, f, impl="ref", **case)


@pytest.mark.parametrize("case", UPFIRDN_CASES)
@pytest.mark.parametrize("filt", ["none", "2d", "separable", "nonseparable"])
def test_upfirdn2d_forward_matches_ref(case, filt):
    f = {"none": None,
         "2d": upfirdn2d.setup_filter([1, 3, 3, 1], device="cuda"),
         "separable": upfirdn2d.setup_filter([1, 2, 4, 2, 1], separable=True, device="cuda"),
         "nonseparable": torch.randn(3, 5, device="cuda")}[filt]
    x = torch.randn(3, 5, 9, 11, dtype=torch.float64, device="cuda")
    y_cuda, y_ref = _upfirdn_both(x, f, case)
    torch.testing.assert_close(y_cuda, y_ref)


@pytest.mark.parametrize("case", UPFIRDN_CASES[1:4])
def test_upfirdn2d_gradients_match_ref(case):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device="cuda")
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, device="cuda", requires_grad=True)
    fn = lambda t: upfirdn2d.upfirdn2d(t, f, impl="cuda", **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    grads = []
    for impl in ("cuda", "ref"):
        y = upfirdn2d.upfirdn2d(x, f, impl=impl, **case)
        g, = torch.autograd.grad(y.tanh().sum(), x, create_graph=True)
        gg, = torch.autograd.grad(g.square().sum(), x)
        grads.append((g, gg))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 4e-2)])
def test_upfirdn2d_dtypes_and_layouts(dtype, tol):
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device="cuda")
    x = torch.randn(4, 8, 16, 16, device="cuda", dtype=dtype)
    for variant in (x, x.to(memory_format=torch.channels_last), x[:, ::2, 1::2, ::3]):
        for fn in (upfirdn2d.upsample2d, upfirdn2d.downsample2d, upfirdn2d.filter2d):
            y = fn(variant, f, impl="cuda")
            assert y.dtype == dtype
            torch.testing.assert_close(y.double(), fn(variant.double(), f, impl="ref"), atol=tol, rtol=tol)


@pytest.mark.parametrize("act", list(bias_act.activation_funcs))
@pytest.mark.parametrize("clamp", [None, 0.7])
def test_bias_act_matches_ref_to_second_order(act, clamp):
    x0 = torch.randn(3, 6, 4, 5, dtype=torch.float64, device="cuda")
    x0 = x0 + 0.3 * x0.sign()  # away from kinks
    b0 = torch.randn(6, dtype=torch.float64, device="cuda")
    results = []
    for impl in ("cuda", "ref"):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = bias_act.bias_act(x, b, act=act, clamp=clamp, impl=impl)
        gx, = torch.autograd.grad((y * y.detach()).sum(), x, create_graph=True)
        gg = torch.autograd.grad(gx.square().sum(), [x, b], allow_unused=True)
        results.append([y, gx] + [torch.zeros_like(t) if g is None else g for g, t in zip(gg, (x, b))])
    for a, c in zip(*results):
        torch.testing.assert_close(a, c)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl="cuda")  # noqa: E731
    args = (x0[:1, :, :2, :2].clone().requires_grad_(True), b0.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(fn, args)
    assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 1e-2), (torch.bfloat16, 4e-2)])
def test_bias_act_dtypes_dims_and_layouts(dtype, tol):
    x = torch.randn(4, 8, 6, 6, device="cuda", dtype=dtype)
    for variant, dim in ((x, 1), (x.to(memory_format=torch.channels_last), 1), (x[:, ::2], 1), (x, 3), (x[:, :, 0, 0], 1)):
        b = torch.randn(variant.shape[dim], device="cuda", dtype=dtype)
        for act in bias_act.activation_funcs:
            y = bias_act.bias_act(variant, b, dim=dim, act=act, clamp=2, impl="cuda")
            ref = bias_act.bias_act(variant.double(), b.double(), dim=dim, act=act, clamp=2, impl="ref")
            assert y.dtype == dtype and y.shape == variant.shape
            torch.testing.assert_close(y.double(), ref, atol=tol, rtol=tol)
