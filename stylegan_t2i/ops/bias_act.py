"""Fused bias + activation + gain + clamp (NVlabs `bias_act` semantics).

    y = clamp(act(x + b) * gain, -clamp, clamp)

with b broadcast along axis `dim` of x. Autograd goes through two Functions
shaped like the CUDA kernel's three modes (grad = 0, 1, 2):

    forward  (grad 0): y = clamp(act(x + b) * gain)
    backward (grad 1): dx = dy * gain * act'(x + b) * [|y| < clamp]
    2nd order (grad 2): d(x) = d_dx * gain * act''(x + b) * dy * [|y| < clamp]

act' and act'' are evaluated from the saved output y (yy = y / gain is the
activation value) or, for swish and lrelu with a negative slope, from the
saved input. The products run in the order of the NVlabs reference's autograd
(gain first), so float64 results agree with it to rounding. Since the backward is
itself a Function with its own backward, the double backward of a gradient
penalty is exact and costs a few elementwise ops. Derivatives of third and
higher order are not supported (as in NVlabs).
"""

import dataclasses
import math
from typing import Callable

import torch
import torch.nn.functional as F

from . import cuda_build

_loader = cuda_build.CudaExtensionLoader("stylegan_t2i_bias_act", ["bias_act.cpp", "bias_act.cu"])

_SELU_SCALE = 1.0507009873554804934193349852946   # Klambauer et al. 2017, lambda
_SELU_ALPHA = 1.6732632423543772848170429916717   # Klambauer et al. 2017, alpha

# ----------------------------------------------------------------------------
# Activation table.

@dataclasses.dataclass(frozen=True)
class ActivationSpec:
    func:         Callable  # func(x, alpha=...) -> act(x).
    def_alpha:    float     # Default `alpha` (only lrelu uses it: slope for x < 0).
    def_gain:     float     # Default `gain`: sqrt(2) for relu-like acts (He et al. 2015).
    cuda_idx:     int       # Activation index in the CUDA kernel.
    ref:          str       # Derivative computed from the saved 'y' (output), 'x' (input) or nothing ('').
    has_2nd_grad: bool      # act'' is not identically zero.


activation_funcs = {
    "linear":   ActivationSpec(lambda x, **_: x,                           0,   1,            1, "",  False),
    "relu":     ActivationSpec(lambda x, **_: F.relu(x),                   0,   math.sqrt(2), 2, "y", False),
    "lrelu":    ActivationSpec(lambda x, alpha, **_: F.leaky_relu(x, alpha), 0.2, math.sqrt(2), 3, "y", False),
    "tanh":     ActivationSpec(lambda x, **_: torch.tanh(x),               0,   1,            4, "y", True),
    "sigmoid":  ActivationSpec(lambda x, **_: torch.sigmoid(x),            0,   1,            5, "y", True),
    "elu":      ActivationSpec(lambda x, **_: F.elu(x),                    0,   1,            6, "y", True),
    "selu":     ActivationSpec(lambda x, **_: F.selu(x),                   0,   1,            7, "y", True),
    "softplus": ActivationSpec(lambda x, **_: F.softplus(x),               0,   1,            8, "y", True),
    "swish":    ActivationSpec(lambda x, **_: torch.sigmoid(x) * x,        0,   math.sqrt(2), 9, "x", True),
}

# ----------------------------------------------------------------------------
# Reference kernel: the same three modes as bias_act.cu, in PyTorch.

@dataclasses.dataclass(frozen=True)
class _Params:
    dim:   int
    act:   str
    alpha: float
    gain:  float
    clamp: float    # < 0: no clamping.


def _needs_x(p):
    """lrelu with a negative slope maps both signs of v to yy > 0: act' then needs v itself."""
    return p.act == "lrelu" and p.alpha < 0


def _derivatives(act, yy, xb, alpha):
    """(act'(v), act''(v)) at v = x + b, from yy = act(v) or (swish; lrelu with alpha < 0) from xb = v."""
    if act == "linear":
        return torch.ones_like(yy), None
    if act == "relu":
        return (yy > 0).to(yy.dtype), None
    if act == "lrelu":      # the slope in x's dtype (a where() of two Python scalars would be float32)
        pos = yy > 0 if xb is None else xb > 0  # alpha < 0: sign(v) is not the sign of yy, so v is kept
        return torch.where(pos, torch.ones_like(yy), alpha), None
    if act == "tanh":       # tanh' = 1 - tanh^2, tanh'' = -2 tanh tanh'
        d1 = 1 - yy * yy
        return d1, -2 * yy * d1
    if act == "sigmoid":    # s' = s(1 - s), s'' = s'(1 - 2s)
        d1 = yy * (1 - yy)
        return d1, d1 * (1 - 2 * yy)
    if act == "elu":        # v < 0: elu = e^v - 1, so elu' = elu'' = yy + 1
        neg = yy + 1
        return torch.where(yy >= 0, 1.0, neg), torch.where(yy >= 0, 0.0, neg)
    if act == "selu":       # v < 0: selu = l*a*(e^v - 1), so selu' = selu'' = yy + l*a
        neg = yy + _SELU_SCALE * _SELU_ALPHA
        return torch.where(yy >= 0, _SELU_SCALE, neg), torch.where(yy >= 0, 0.0, neg)
    if act == "softplus":   # softplus' = sigmoid(v) = 1 - e^-yy, softplus'' = sigmoid' = (1 - e^-yy) e^-yy
        d1 = -torch.expm1(-yy)
        return d1, d1 * torch.exp(-yy)
    if act == "swish":      # (v s)' = s (1 + v (1 - s)), (v s)'' = s (1 - s) (2 + v (1 - 2s))
        s = torch.sigmoid(xb)
        return s * (1 + xb * (1 - s)), s * (1 - s) * (2 + xb * (1 - 2 * s))
    raise ValueError(f"unknown activation {act!r}")


def _ref_kernel(x, b, xref, yref, dy, grad, p):
    """grad 0: act(x + b) * gain; grad 1: x * gain * act'; grad 2: x * gain * act'' * dy; then clamp."""
    bias = None if b is None else b.reshape([-1 if i == p.dim else 1 for i in range(x.ndim)])
    if grad == 0:
        y = activation_funcs[p.act].func(x if bias is None else x + bias, alpha=p.alpha)
        y = y * p.gain if p.gain != 1 else y
        y = y.clamp(-p.clamp, p.clamp) if p.clamp >= 0 else y
        return x.clone() if y is x else y  # never return an alias of the input
    # In the gradient modes x is the incoming gradient; the point v = x + b is known through
    # yref (the saved output, so yy = act(v) unless gain == 0, when every term is 0 anyway) or xref.
    yy = yref / p.gain if yref is not None and p.gain != 0 else torch.zeros_like(x)
    xb = xref if xref is None or bias is None else xref + bias
    d1, d2 = _derivatives(p.act, yy, xb, p.alpha)
    # Same order as the NVlabs reference's autograd: the incoming gradient times gain, then act'.
    y = x * p.gain * d1 if grad == 1 else x * p.gain * d2 * dy
    if p.clamp >= 0:
        # Clamped outputs (|y| = clamp) are constant, so their derivatives vanish.
        y = torch.where(yref.abs() < p.clamp, y, 0.0)
    return y


def _cuda_kernel(module, x, b, xref, yref, dy, grad, p):
    """The CUDA kernel walks memory linearly: x dense (NCHW or NHWC), the others in x's strides."""
    dense_fmt = torch.channels_last if x.ndim == 4 and x.stride(1) == 1 and x.shape[1] > 1 else torch.contiguous_format
    x = x.contiguous(memory_format=dense_fmt)

    def like_x(t):
        return t if t is None or t.stride() == x.stride() else torch.empty_like(x).copy_(t)
    b = None if b is None else b.contiguous()
    return module.bias_act(x, b, like_x(xref), like_x(yref), like_x(dy), grad, p.dim,
                           activation_funcs[p.act].cuda_idx, p.alpha, p.gain, p.clamp)


def _kernel(module, x, b, xref, yref, dy, grad, p):
    if module is None:
        return _ref_kernel(x, b, xref, yref, dy, grad, p)
    return _cuda_kernel(module, x, b, xref, yref, dy, grad, p)

# ----------------------------------------------------------------------------
# Autograd: forward (mode 0) and gradient (mode 1, differentiable through mode 2).

def _sum_to_bias(t, dim):
    """Sum over every axis but `dim`; for a 1-D t there is none (t.sum([]) would sum all of it)."""
    axes = [i for i in range(t.ndim) if i != dim]
    return t.sum(axes) if axes else t.clone()


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, p, module):  # pylint: disable=arguments-differ
        spec = activation_funcs[p.act]
        y = _kernel(module, x, b, None, None, None, 0, p)
        # x is kept when act' needs it, or act'' exists (the 2nd-order grad flows into x).
        keep_x = "x" in spec.ref or spec.has_2nd_grad or _needs_x(p)
        keep_y = "y" in spec.ref or p.clamp >= 0
        ctx.save_for_backward(x if keep_x else None, b if keep_x else None, y if keep_y else None)
        ctx.p, ctx.module = p, module
        return y

    @staticmethod
    def backward(ctx, dy):  # pylint: disable=arguments-differ
        x, b, y = ctx.saved_tensors
        p = ctx.p
        dx = dy
        if p.act != "linear" or p.gain != 1 or p.clamp >= 0:
            dx = _BiasActGrad.apply(dy, x, b, y, p, ctx.module)
        db = _sum_to_bias(dx, p.dim) if ctx.needs_input_grad[1] else None
        return (dx if ctx.needs_input_grad[0] else None), db, None, None


class _BiasActGrad(torch.autograd.Function):
    """dx = dy * act'(x + b) * gain * mask; linear in dy, so d(dy) is this Function again."""

    @staticmethod
    def forward(ctx, dy, x, b, y, p, module):  # pylint: disable=arguments-differ
        dx = _kernel(module, dy, b, x, y, None, 1, p)
        has_2nd = activation_funcs[p.act].has_2nd_grad
        ctx.save_for_backward(dy if has_2nd else None, x, b, y)
        ctx.p, ctx.module = p, module
        return dx

    @staticmethod
    def backward(ctx, d_dx):  # pylint: disable=arguments-differ
        dy, x, b, y = ctx.saved_tensors
        p = ctx.p
        d_dy = d_x = d_b = None
        if ctx.needs_input_grad[0]:
            d_dy = _BiasActGrad.apply(d_dx, x, b, y, p, ctx.module)
        if activation_funcs[p.act].has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
            d_x = _kernel(ctx.module, d_dx, b, x, y, dy, 2, p)
            d_b = _sum_to_bias(d_x, p.dim) if ctx.needs_input_grad[2] else None
            d_x = d_x if ctx.needs_input_grad[1] else None
        return d_dy, d_x, d_b, None, None, None

# ----------------------------------------------------------------------------
# Public API.

def bias_act(
    x,                  # Input: any shape, float16/bfloat16/float32/float64, any strides.
    b           = None, # Bias: [x.shape[dim]] of x's dtype and device, or None.
    dim         = 1,    # Axis of x that b runs along (0 <= dim < x.ndim).
    act         = "linear",  # Activation name, a key of `activation_funcs`.
    alpha       = None, # Activation parameter (lrelu slope); None = the activation's default.
    gain        = None, # Output scale, applied after the activation; None = the activation's default.
    clamp       = None, # Clamp the output to [-clamp, clamp] after the gain; None = no clamping.
    impl        = "cuda",  # 'cuda' (own kernel, falls back to 'ref' when unusable) or 'ref'.
):
    """y = clamp(act(x + b) * gain, -clamp, clamp), same shape and dtype as x.

    Defaults follow `activation_funcs`: e.g. act='lrelu' is
    leaky_relu(x + b, 0.2) * sqrt(2). The gradient through the clamp is zero
    where the output is clamped (|y| = clamp). x is never modified. Exact first
    and second derivatives with respect to x and b on both implementations.
    """
    assert isinstance(x, torch.Tensor) and x.dtype.is_floating_point, "x must be a floating-point tensor"
    assert impl in ("ref", "cuda"), f"impl must be 'ref' or 'cuda', got {impl!r}"
    assert act in activation_funcs, f"unknown activation {act!r}; one of {sorted(activation_funcs)}"
    assert clamp is None or clamp >= 0, "clamp must be None or >= 0"
    spec = activation_funcs[act]
    p = _Params(dim=dim, act=act,
                alpha=float(alpha if alpha is not None else spec.def_alpha),
                gain=float(gain if gain is not None else spec.def_gain),
                clamp=float(clamp if clamp is not None else -1))
    if b is not None:
        assert isinstance(b, torch.Tensor) and b.ndim == 1, "b must be a 1-D tensor"
        assert 0 <= dim < x.ndim, f"dim must be in [0, {x.ndim}), got {dim}"
        assert b.shape[0] == x.shape[dim], f"b has {b.shape[0]} entries but x.shape[{dim}] = {x.shape[dim]}"
        assert b.dtype == x.dtype and b.device == x.device, "b must have the dtype and device of x"
    module = _loader.module_for(x) if impl == "cuda" else None
    if not (torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))):
        # Nothing to differentiate: the plain forward, the same ops without the Function around
        # them (which also keeps a torch.jit.trace, e.g. an ONNX export, to plain ops).
        return _kernel(module, x, b, None, None, None, 0, p)
    return _BiasAct.apply(x, b, p, module)
