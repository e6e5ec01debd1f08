"""bias_act reference path vs closed forms, gradients, layouts, dtypes, fallback and CUDA glue."""

import math
import warnings

import numpy as np
import pytest
import torch

from stylegan_t2i.ops import bias_act, cuda_build

ACTS = list(bias_act.activation_funcs)


def _closed_form(act, v, alpha):
    """Activations written out in numpy float64 (independent of torch.nn.functional)."""
    sig = 1 / (1 + np.exp(-v))
    selu_l, selu_a = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    return {
        "linear": v,
        "relu": np.maximum(v, 0),
        "lrelu": np.where(v > 0, v, alpha * v),
        "tanh": np.tanh(v),
        "sigmoid": sig,
        "elu": np.where(v > 0, v, np.exp(v) - 1),
        "selu": selu_l * np.where(v > 0, v, selu_a * (np.exp(v) - 1)),
        "softplus": np.log1p(np.exp(v)),
        "swish": v * sig,
    }[act]


def test_defaults_match_nvlabs():
    specs = bias_act.activation_funcs
    assert set(specs) == {"linear", "relu", "lrelu", "tanh", "sigmoid", "elu", "selu", "softplus", "swish"}
    assert specs["lrelu"].def_alpha == 0.2
    for act in ("relu", "lrelu", "swish"):
        assert specs[act].def_gain == pytest.approx(math.sqrt(2))
    for act in ("linear", "tanh", "sigmoid", "elu", "selu", "softplus"):
        assert specs[act].def_gain == 1


@pytest.mark.parametrize("act", ACTS)
def test_forward_matches_closed_form(act):
    x = torch.randn(3, 5, 4, dtype=torch.float64) * 3
    b = torch.randn(5, dtype=torch.float64)
    spec = bias_act.activation_funcs[act]
    v = (x + b[None, :, None]).numpy()
    ref = _closed_form(act, v, spec.def_alpha) * spec.def_gain
    np.testing.assert_allclose(bias_act.bias_act(x, b, act=act, impl="ref").numpy(), ref, rtol=1e-12, atol=1e-12)
    y = bias_act.bias_act(x, b, act=act, alpha=0.1, gain=0.5, clamp=0.3, impl="ref").numpy()
    np.testing.assert_allclose(y, np.clip(_closed_form(act, v, 0.1) * 0.5, -0.3, 0.3), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_bias_along_dim_and_no_bias(dim):
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    b = torch.randn(x.shape[dim], dtype=torch.float64)
    shape = [1, 1, 1]
    shape[dim] = -1
    torch.testing.assert_close(bias_act.bias_act(x, b, dim=dim, impl="ref"), x + b.reshape(shape))
    torch.testing.assert_close(bias_act.bias_act(x, act="lrelu", gain=1, impl="ref"),
                               torch.nn.functional.leaky_relu(x, 0.2))


def test_clamp_is_applied_after_gain():
    x = torch.tensor([-3.0, -1.0, 0.5, 1.0, 3.0], dtype=torch.float64)
    y = bias_act.bias_act(x, act="linear", gain=2, clamp=2.5, impl="ref")
    torch.testing.assert_close(y, torch.tensor([-2.5, -2.0, 1.0, 2.0, 2.5], dtype=torch.float64))
    g, = torch.autograd.grad(bias_act.bias_act(x.requires_grad_(), gain=2, clamp=2.5, impl="ref").sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.0, 2.0, 2.0, 2.0, 0.0], dtype=torch.float64))


@pytest.mark.parametrize("act", ACTS)
def test_gradcheck_and_gradgradcheck(act):
    gen = torch.Generator().manual_seed(ACTS.index(act))
    # Keep inputs away from the kinks at 0 (relu, lrelu, elu, selu) and the clamp edges,
    # where finite differences are meaningless.
    x = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen)
    x = (x + 0.3 * x.sign()).requires_grad_(True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    for kwargs in (dict(), dict(clamp=0.8, gain=1.3, alpha=0.1)):
        fn = lambda x, b: bias_act.bias_act(x, b, act=act, impl="ref", **kwargs)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (x, b))
        assert torch.autograd.gradgradcheck(fn, (x, b))


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish", "softplus"])
def test_gradients_match_plain_autograd(act):
    """First and second order (a gradient penalty) vs autograd through the plain formula."""
    x0 = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    b0 = torch.randn(6, dtype=torch.float64)
    w = torch.randn(4, 6, 3, 3, dtype=torch.float64)
    spec = bias_act.activation_funcs[act]
    plain = lambda x, b: (spec.func(x + b[None, :, None, None], alpha=0.2) * 1.7).clamp(-1, 1)  # noqa: E731
    fused = lambda x, b: bias_act.bias_act(x, b, act=act, gain=1.7, clamp=1, impl="ref")  # noqa: E731
    results = []
    for fn in (fused, plain):
        x, b = x0.clone().requires_grad_(True), b0.clone().requires_grad_(True)
        y = fn(x, b)
        gx, = torch.autograd.grad((y * w).sum(), x, create_graph=True)
        gg = torch.autograd.grad(gx.square().sum(), [x, b], allow_unused=True)
        gg = [torch.zeros_like(t) if g is None else g for g, t in zip(gg, (x, b))]
        results.append([y, gx] + gg)
    for a, c in zip(*results):
        torch.testing.assert_close(a, c)


def test_layouts_match_and_input_untouched():
    x = torch.randn(2, 8, 5, 6)
    b = torch.randn(8)
    before = x.clone()
    ref = bias_act.bias_act(x, b, act="lrelu", clamp=0.5, impl="ref")
    for variant in (x.to(memory_format=torch.channels_last), x.transpose(2, 3).contiguous().transpose(2, 3)):
        torch.testing.assert_close(bias_act.bias_act(variant, b, act="lrelu", clamp=0.5, impl="ref"), ref)
    strided = x[:, ::2, 1::2]
    torch.testing.assert_close(bias_act.bias_act(strided, b[::2].contiguous(), act="swish", impl="ref"),
                               bias_act.bias_act(strided.contiguous(), b[::2].contiguous(), act="swish", impl="ref"))
    torch.testing.assert_close(x, before)
    y = bias_act.bias_act(x, impl="ref")  # identity: still a new tensor
    y.add_(1)
    torch.testing.assert_close(x, before)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
def test_low_precision_matches_float64(dtype, tol):
    x = torch.randn(4, 16, 3, 3, dtype=torch.float64)
    b = torch.randn(16, dtype=torch.float64)
    for act in ACTS:
        y = bias_act.bias_act(x.to(dtype), b.to(dtype), act=act, clamp=2, impl="ref")
        assert y.dtype == dtype
        torch.testing.assert_close(y.double(), bias_act.bias_act(x, b, act=act, clamp=2, impl="ref"), atol=tol, rtol=tol)


def test_bad_arguments_raise():
    x = torch.randn(2, 3)
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, torch.randn(4), impl="ref")
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, torch.randn(3, dtype=torch.float64), impl="ref")
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, act="gelu", impl="ref")
    with pytest.raises(AssertionError):
        bias_act.bias_act(x, clamp=-1, impl="ref")

# ----------------------------------------------------------------------------
# impl='cuda' on CPU: fallback, env var, and the Python glue of the kernel call.

def test_cuda_impl_on_cpu_tensor_runs_the_reference_silently(monkeypatch):
    monkeypatch.delenv(cuda_build.REF_ENV_VAR, raising=False)
    monkeypatch.setattr(bias_act, "_loader", cuda_build.CudaExtensionLoader("t", ["missing.cu"]))
    x, b = torch.randn(2, 3, 4), torch.randn(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ys = [bias_act.bias_act(x, b, act="lrelu") for _ in range(3)]
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]   # CPU use is quiet
    for y in ys:
        torch.testing.assert_close(y, bias_act.bias_act(x, b, act="lrelu", impl="ref"))


def test_env_var_forces_ref_silently(monkeypatch):
    monkeypatch.setenv(cuda_build.REF_ENV_VAR, "1")
    monkeypatch.setattr(bias_act, "_loader", cuda_build.CudaExtensionLoader("t", ["missing.cu"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = bias_act.bias_act(torch.tensor([-1.0, 2.0]), act="relu", gain=1)
    torch.testing.assert_close(y, torch.tensor([0.0, 2.0]))


class _FakeExtension:
    """Stands in for the compiled module: checks the C++ preconditions, computes with the ref kernel."""

    def __init__(self):
        self.modes = set()

    def bias_act(self, x, b, xref, yref, dy, grad, dim, cuda_idx, alpha, gain, clamp):  # noqa: PLR0913
        assert x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
        assert b is None or b.is_contiguous()
        for t in (xref, yref, dy):
            assert t is None or (t.shape == x.shape and t.stride() == x.stride())
        act = [k for k, v in bias_act.activation_funcs.items() if v.cuda_idx == cuda_idx][0]
        self.modes.add(grad)
        p = bias_act._Params(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
        return bias_act._ref_kernel(x, b, xref, yref, dy, grad, p)


@pytest.mark.parametrize("act", ["lrelu", "tanh", "swish"])
def test_cuda_glue_runs_all_three_modes(monkeypatch, act):
    fake = _FakeExtension()
    monkeypatch.setattr(bias_act._loader, "module_for", lambda x: fake)
    x = torch.randn(2, 3, 4, 2, dtype=torch.float64).to(memory_format=torch.channels_last)
    x = (x + 0.3 * x.sign()).requires_grad_(True)
    b = torch.randn(6, dtype=torch.float64)[::2].detach().requires_grad_(True)  # strided bias
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=1.5)  # noqa: E731
    torch.testing.assert_close(fn(x, b), bias_act.bias_act(x, b, act=act, clamp=1.5, impl="ref"))
    assert torch.autograd.gradgradcheck(fn, (x, b))
    assert fake.modes == ({0, 1, 2} if bias_act.activation_funcs[act].has_2nd_grad else {0, 1})
