"""Every argument form of `bias_act` and `upfirdn2d` (NVlabs semantics) vs float64 closed forms.

Each op is checked forward, in first order (the gradient of <y, w>) and in second order
(the gradient of <dL/dx, u> with respect to x, b and w: what a gradient penalty
differentiates) against formulas written out here, independently of the module, plus
`gradcheck` / `gradgradcheck` on small shapes. The three cases a peer check against
NVlabs found are kept as named regression tests at the end.
"""

import itertools
import math

import pytest
import torch

from stylegan_t2i.ops import bias_act as ba
from stylegan_t2i.ops import upfirdn2d as uf

F64 = torch.float64
SELU_L, SELU_A = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
DEF_ALPHA = 0.2
DEF_GAIN = {"linear": 1, "relu": math.sqrt(2), "lrelu": math.sqrt(2), "tanh": 1, "sigmoid": 1,
            "elu": 1, "selu": 1, "softplus": 1, "swish": math.sqrt(2)}
ACTS = list(DEF_GAIN)

# ============================================================================
# bias_act
# ============================================================================

def _act_closed_form(act, v, alpha):
    """(act(v), act'(v), act''(v)) written out elementwise in float64."""
    pos = v > 0
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    s = 1 / (1 + torch.exp(-v))
    t = torch.tanh(v)
    if act == "linear":
        return v, one, zero
    if act == "relu":
        return torch.where(pos, v, zero), torch.where(pos, one, zero), zero
    if act == "lrelu":
        return torch.where(pos, v, alpha * v), torch.where(pos, one, alpha * one), zero
    if act == "tanh":
        return t, 1 - t * t, -2 * t * (1 - t * t)
    if act == "sigmoid":
        return s, s * (1 - s), s * (1 - s) * (1 - 2 * s)
    if act == "elu":
        e = torch.exp(v)
        return torch.where(pos, v, e - 1), torch.where(pos, one, e), torch.where(pos, zero, e)
    if act == "selu":
        e = torch.exp(v)
        return (SELU_L * torch.where(pos, v, SELU_A * (e - 1)), SELU_L * torch.where(pos, one, SELU_A * e),
                SELU_L * torch.where(pos, zero, SELU_A * e))
    if act == "softplus":
        return torch.log1p(torch.exp(v)), s, s * (1 - s)
    if act == "swish":
        return v * s, s + v * s * (1 - s), s * (1 - s) * (2 + v * (1 - 2 * s))
    raise AssertionError(act)


def _bias_shape(ndim, dim):
    return [-1 if i == dim else 1 for i in range(ndim)]


def _sum_but(t, dim):
    axes = [i for i in range(t.ndim) if i != dim]
    return t.sum(axes) if axes else t


def _bias_act_closed_form(x, b, w, u, ub, dim, act, alpha, gain, clamp):
    """y, dL/dx, dL/db for L = <y, w>; then d/dx, d/db, d/dw of L2 = <dL/dx, u> + <dL/db, ub>."""
    v = x if b is None else x + b.reshape(_bias_shape(x.ndim, dim))
    a0, a1, a2 = _act_closed_form(act, v, alpha)
    pre = a0 * gain
    y = pre if clamp is None else pre.clamp(-clamp, clamp)
    mask = torch.ones_like(v) if clamp is None else (pre.abs() < clamp).to(F64)
    gx = w * gain * a1 * mask
    gb = None if b is None else _sum_but(gx, dim)
    uu = u if b is None else u + ub.reshape(_bias_shape(x.ndim, dim))   # what L2 weights gx with
    ggx = uu * w * gain * a2 * mask
    ggb = None if b is None else _sum_but(ggx, dim)
    ggw = uu * gain * a1 * mask
    return y, gx, gb, ggx, ggb, ggw


# (shape, dim) for 1-D to 4-D inputs along every axis.
BA_FORMS = [(shape, dim) for shape in ([5], [3, 4], [2, 3, 4], [2, 3, 2, 2]) for dim in range(len(shape))]
# (alpha, gain, clamp): None = the activation's default / no clamping.
BA_PARAMS = [(None, None, None), (None, 1, None), (0.3, 1.7, 0.9), (-0.4, -0.6, 1.5), (0.1, 0.0, None),
             (None, 2.5, 0.0)]


def _ba_inputs(shape, dim, with_bias, seed, scale=1.5):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=F64, generator=g) * scale
    b = torch.randn(shape[dim], dtype=F64, generator=g) if with_bias else None
    return x, b, g


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape,dim", BA_FORMS, ids=[f"{len(s)}d-dim{d}" for s, d in BA_FORMS])
def test_bias_act_all_forms_match_closed_form_to_second_order(act, shape, dim):
    for k, (with_bias, (alpha, gain, clamp)) in enumerate(itertools.product([True, False], BA_PARAMS)):
        x0, b0, g = _ba_inputs(shape, dim, with_bias, seed=1000 * ACTS.index(act) + 10 * dim + k)
        w0, u = torch.randn(shape, dtype=F64, generator=g), torch.randn(shape, dtype=F64, generator=g)
        ub = torch.randn(shape[dim], dtype=F64, generator=g)
        a = DEF_ALPHA if alpha is None else alpha
        gn = DEF_GAIN[act] if gain is None else gain
        ref = _bias_act_closed_form(x0, b0, w0, u, ub, dim, act, a, gn, clamp)

        x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
        b = None if b0 is None else b0.clone().requires_grad_(True)
        y = ba.bias_act(x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")
        ins = [x] if b is None else [x, b]
        grads = torch.autograd.grad((y * w).sum(), ins, create_graph=True)
        assert [t.shape for t in grads] == [t.shape for t in ins]
        l2 = (grads[0] * u).sum() + (0 if b is None else (grads[1] * ub).sum())
        if l2.requires_grad:
            gg = torch.autograd.grad(l2, ins + [w], allow_unused=True)
            gg = [torch.zeros_like(t) if q is None else q for q, t in zip(gg, ins + [w])]
        else:   # linear, gain 1, no clamp: dL/dx = w, constant in x and b, linear in w
            gg = [torch.zeros_like(t) for t in ins] + [None]
        got = [y, grads[0], grads[1] if b is not None else None, gg[0], gg[1] if b is not None else None, gg[-1]]
        what = ["y", "dx", "db", "d2x", "d2b", "d2w"]
        for name, mine, exp in zip(what, got, ref):
            if exp is None or mine is None:
                assert exp is None or name == "d2w", name
                continue
            msg = f"{name}: act={act} shape={shape} dim={dim} bias={with_bias} alpha={alpha} gain={gain} clamp={clamp}"
            torch.testing.assert_close(mine, exp, rtol=1e-12, atol=1e-12, msg=msg)


def _away_from_kinks(x, b, dim, act, alpha, gain, clamp, margin=1e-3):
    """Finite differences are meaningless near kinks (v = 0) and clamp edges: nudge v off them."""
    v = x if b is None else x + b.reshape(_bias_shape(x.ndim, dim))
    x = x + (margin * 50) * torch.where(v >= 0, 1.0, -1.0).to(F64) * (v.abs() < margin * 50)
    if clamp is not None:
        v = x if b is None else x + b.reshape(_bias_shape(x.ndim, dim))
        pre = _act_closed_form(act, v, alpha)[0] * gain
        assert ((pre.abs() - clamp).abs() > margin).all(), "pick another seed"
    return x


# One (dim, bias, alpha, gain, clamp) form per (act, ndim), cycling through them.
_GC_PARAMS = [(True, 0.3, 1.7, 0.9), (False, None, None, None), (True, -0.4, -0.6, None), (True, None, 1, 1.2)]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_bias_act_gradcheck_gradgradcheck_all_ranks(act, ndim):
    shape = [3, 2, 2, 2][:ndim]
    dim = (ACTS.index(act) + ndim) % ndim
    with_bias, alpha, gain, clamp = _GC_PARAMS[(ACTS.index(act) + ndim) % len(_GC_PARAMS)]
    x, b, _ = _ba_inputs(shape, dim, with_bias, seed=7 * ndim + ACTS.index(act), scale=1.0)
    a = DEF_ALPHA if alpha is None else alpha
    gn = DEF_GAIN[act] if gain is None else gain
    x = _away_from_kinks(x, b, dim, act, a, gn, clamp).requires_grad_(True)
    ins = (x,) if b is None else (x, b.requires_grad_(True))
    fn = lambda *t: ba.bias_act(*t, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, ins)
    assert torch.autograd.gradgradcheck(fn, ins)


def test_bias_act_zero_dim_input_without_bias():
    x = torch.tensor(-0.7, dtype=F64, requires_grad=True)
    y = ba.bias_act(x, act="lrelu", impl="ref")
    g, = torch.autograd.grad(y, x)
    assert y.shape == g.shape == ()
    torch.testing.assert_close(g, torch.tensor(0.2 * math.sqrt(2), dtype=F64), rtol=1e-15, atol=0)

# ============================================================================
# upfirdn2d
# ============================================================================

def _upfirdn2d_closed_form(x, f, up, down, pad, flip, gain):
    """Literal float64 upfirdn2d of x: [N, C, H, W] (autograd-able plain ops).

    Zero insertion, pad / crop by the index map out[j] = in[j - pad0], direct 2-D
    correlation with c (f flipped unless flip; a 1-D f is the separable outer(f, f)),
    times gain, then every down-th pixel from the first.
    """
    (upx, upy), (downx, downy), (px0, px1, py0, py1) = up, down, pad
    f = torch.ones([1, 1], dtype=F64) if f is None else f.to(F64)
    f = torch.outer(f, f) if f.ndim == 1 else f
    n, ch, h, w = x.shape
    z = torch.zeros([n, ch, h * upy, w * upx], dtype=F64)
    z[:, :, ::upy, ::upx] = x
    hp, wp = h * upy + py0 + py1, w * upx + px0 + px1
    zp = torch.zeros([n, ch, hp, wp], dtype=F64)
    rows = [(j, j - py0) for j in range(hp) if 0 <= j - py0 < z.shape[2]]
    cols = [(j, j - px0) for j in range(wp) if 0 <= j - px0 < z.shape[3]]
    if rows and cols:
        (r0, s0), (c0, t0) = rows[0], cols[0]
        zp[:, :, r0:r0 + len(rows), c0:c0 + len(cols)] = z[:, :, s0:s0 + len(rows), t0:t0 + len(cols)]
    c = f if flip else f.flip([0, 1])
    fh, fw = c.shape
    oh, ow = hp - fh + 1, wp - fw + 1
    y = torch.zeros([n, ch, oh, ow], dtype=F64)
    for ky in range(fh):
        for kx in range(fw):
            y = y + c[ky, kx] * zp[:, :, ky:ky + oh, kx:kx + ow]
    return (y * gain)[:, :, ::downy, ::downx]


def _xy(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _pad4(padding):
    if isinstance(padding, int):
        return (padding,) * 4
    if len(padding) == 2:
        return (padding[0], padding[0], padding[1], padding[1])
    return tuple(padding)


def _check_upfirdn2d_case(x0, f, up, down, padding, flip, gain, seed):
    """Forward, <y, w> gradient and second order (d/dw of <dL/dx, u>) vs the closed form."""
    g = torch.Generator().manual_seed(seed)
    args = (_xy(up), _xy(down), _pad4(padding), flip, gain)
    msg = f"x={list(x0.shape)} f={None if f is None else list(f.shape)} up={up} down={down} pad={padding} flip={flip} gain={gain}"
    xr = x0.clone().requires_grad_(True)
    yr = _upfirdn2d_closed_form(xr, f, *args)
    w0 = torch.randn(yr.shape, dtype=F64, generator=g)
    u = torch.randn(x0.shape, dtype=F64, generator=g)
    # A^T w (all zero when padding crops every input pixel away, and y does not depend on x)
    gx_ref = torch.autograd.grad((yr * w0).sum(), xr)[0] if yr.requires_grad else torch.zeros_like(x0)
    ggw_ref = _upfirdn2d_closed_form(u, f, *args)           # d/dw <A^T w, u> = A u

    x, w = x0.clone().requires_grad_(True), w0.clone().requires_grad_(True)
    y = uf.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip, gain=gain, impl="ref")
    assert y.shape == yr.shape, msg
    torch.testing.assert_close(y, yr.detach(), rtol=1e-12, atol=1e-12, msg=msg)
    gx, = torch.autograd.grad((y * w).sum(), x, create_graph=True)
    assert gx.shape == x.shape, msg
    torch.testing.assert_close(gx, gx_ref, rtol=1e-12, atol=1e-12, msg=msg)
    ggx, ggw = torch.autograd.grad((gx * u).sum(), [x, w], allow_unused=True)
    assert ggx is None or ggx.abs().max() == 0, msg    # linear in x
    torch.testing.assert_close(ggw, ggw_ref, rtol=1e-12, atol=1e-12, msg=msg)


def _random_filter(g, kind):
    if kind == "none":
        return None
    if kind == "sep":
        return torch.randn(int(torch.randint(1, 6, [1], generator=g)), generator=g)
    fh, fw = (int(v) for v in torch.randint(1, 6, [2], generator=g))
    return torch.randn([fh, fw], generator=g)


def _random_padding(g, form):
    lo, hi = -4, 6
    vals = [int(v) for v in torch.randint(lo, hi, [4], generator=g)]
    return {"int": vals[0], "xy": vals[:2], "x0x1y0y1": vals}[form]


def _fits(xshape, f, up, down, padding):
    (upx, upy), (px0, px1, py0, py1) = _xy(up), _pad4(padding)
    fw, fh = (1, 1) if f is None else (f.shape[-1], f.shape[0])
    return xshape[2] * upy + py0 + py1 - fh >= 0 and xshape[3] * upx + px0 + px1 - fw >= 0


FACTORS = [1, 2, 3, 4]


@pytest.mark.parametrize("up", FACTORS)
@pytest.mark.parametrize("down", FACTORS)
def test_upfirdn2d_all_forms_match_closed_form_to_second_order(up, down):
    """Per (up, down): every filter kind x padding form, random values incl. negative pads."""
    g = torch.Generator().manual_seed(100 * up + down)
    remainders = set()
    for i, (fkind, pform) in enumerate(itertools.product(["none", "sep", "2d"], ["int", "xy", "x0x1y0y1"] * 2)):
        # As given (int factors) or per axis with the other axis' factor drawn from 1..4.
        upf = up if i % 2 == 0 else [up, int(torch.randint(1, 5, [1], generator=g))][::(-1) ** (i // 2)]
        downf = down if i % 3 == 0 else [down, int(torch.randint(1, 5, [1], generator=g))][::(-1) ** (i // 3)]
        f = _random_filter(g, fkind)
        for _ in range(50):
            padding = _random_padding(g, pform)
            xshape = [int(torch.randint(1, 3, [1], generator=g)), 2] + [int(v) for v in torch.randint(1, 5, [2], generator=g)]
            if _fits(xshape, f, upf, downf, padding):
                break
        else:
            raise AssertionError("no fitting padding drawn")
        pad = _pad4(padding)
        fh = 1 if f is None else f.shape[0]
        remainders.add((xshape[2] * _xy(upf)[1] + pad[2] + pad[3] - fh) % _xy(downf)[1])
        x = torch.randn(xshape, dtype=F64, generator=g)
        flip = bool(i % 2)
        gain = [1.0, 2.5, -0.75, 4.0][i % 4]
        _check_upfirdn2d_case(x, f, upf, downf, padding, flip, gain, seed=i)
    if down > 1:
        assert len(remainders) > 1      # padded lengths both multiples of down and not


@pytest.mark.parametrize("down", [2, 3, 4])
@pytest.mark.parametrize("fkind", ["sep", "2d"])
def test_upfirdn2d_every_remainder_and_crop_past_the_end(down, fkind):
    """Padded length L with (L - f) % down = every remainder, on both axes, incl. crops beyond the input."""
    g = torch.Generator().manual_seed(down)
    f = torch.randn(3, generator=g) if fkind == "sep" else torch.randn([3, 2], generator=g)
    fw, fh = f.shape[-1], f.shape[0]
    for r, up in itertools.product(range(down), [1, 2]):
        for pad0 in (-4, -1, 0, 2):
            h, w = 3, 2
            # Choose pad1 so that (H*up + pad0 + pad1 - f) % down == r with an output of 1 to 2 pixels.
            py1 = fh + r - h * up - pad0 + down * int(torch.randint(0, 2, [1], generator=g))
            px1 = fw + r - w * up - pad0 + down * int(torch.randint(0, 2, [1], generator=g))
            padding = [pad0, px1, pad0, py1]
            x = torch.randn([2, 2, h, w], dtype=F64, generator=g)
            _check_upfirdn2d_case(x, f, up, down, padding, bool(r % 2), 1.5, seed=r)


GC_CASES = [
    dict(up=1, down=1, padding=[1, 0, -1, 2]),
    dict(up=2, down=3, padding=[2, -1, 3, 1], flip_filter=True),
    dict(up=4, down=2, padding=[5, 4, -2, 3], gain=16),
    dict(up=3, down=4, padding=[0, 3, -2, 5], gain=-0.5),
    dict(up=[1, 4], down=[4, 1], padding=[4, -1, 2, 1], flip_filter=True),
    dict(up=[3, 2], down=[2, 3], padding=2, gain=2),
    dict(up=1, down=4, padding=[0, 4, 4, -1], flip_filter=True, gain=4),
]


@pytest.mark.parametrize("case", GC_CASES, ids=[str(i) for i in range(len(GC_CASES))])
@pytest.mark.parametrize("fkind", ["none", "sep", "2d"])
def test_upfirdn2d_gradcheck_gradgradcheck(case, fkind):
    g = torch.Generator().manual_seed(len(fkind))
    f = {"none": None, "sep": torch.randn(3, generator=g), "2d": torch.randn([3, 2], generator=g)}[fkind]
    x = torch.randn([1, 2, 3, 3], dtype=F64, generator=g, requires_grad=True)
    fn = lambda t: uf.upfirdn2d(t, f, impl="ref", **case)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_pad_or_crop_is_the_index_map():
    x = torch.arange(12, dtype=F64).reshape(1, 1, 3, 4)
    for pad in itertools.product([-5, -3, -1, 0, 2], [-4, 0, 3, 6], [-4, -1, 0, 4], [-3, 0, 1, 5]):
        x0, x1, y0, y1 = pad
        if 3 + y0 + y1 < 0 or 4 + x0 + x1 < 0:
            continue
        ref = torch.zeros(1, 1, 3 + y0 + y1, 4 + x0 + x1, dtype=F64)
        for i, j in itertools.product(range(ref.shape[2]), range(ref.shape[3])):
            if 0 <= i - y0 < 3 and 0 <= j - x0 < 4:
                ref[0, 0, i, j] = x[0, 0, i - y0, j - x0]
        torch.testing.assert_close(uf._pad_or_crop(x, pad), ref, rtol=0, atol=0, msg=str(pad))

# ============================================================================
# Regressions: the mismatches a peer check against NVlabs found (issue 15, item 6).
# ============================================================================

def test_regression_bias_act_1d_input_with_bias_gradient_shape():
    """x: [C], dim=0: the bias gradient was summed to a 0-d tensor (sum over no axes = all)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, dtype=F64, generator=g, requires_grad=True)
    b = torch.randn(5, dtype=F64, generator=g, requires_grad=True)
    for act in ACTS:
        y = ba.bias_act(x, b, dim=0, act=act, impl="ref")
        gx, gb = torch.autograd.grad(y.sum(), [x, b], create_graph=True)
        assert gx.shape == gb.shape == (5,)
        torch.testing.assert_close(gb, gx, rtol=0, atol=0)
        if gb.requires_grad:
            ggx, ggb = torch.autograd.grad(gb.square().sum(), [x, b], allow_unused=True)
            assert ggx is None or ggx.shape == (5,)
            assert ggb is None or ggb.shape == (5,)
    fn = lambda x, b: ba.bias_act(x, b, dim=0, act="tanh", gain=1.3, impl="ref")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))


def test_regression_upfirdn2d_down4_padding_remainder_backward():
    """x [2,2,3,2], f [3,6], down=4, padding=[0,4,4,-1]: the backward's crop went past the input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn([2, 2, 3, 2], dtype=F64, generator=g, requires_grad=True)
    f = torch.randn([3, 6], generator=g)
    case = dict(down=4, padding=[0, 4, 4, -1], flip_filter=True, gain=4)
    fn = lambda t: uf.upfirdn2d(t, f, impl="ref", **case)  # noqa: E731
    gx, = torch.autograd.grad(fn(x).sum(), x)
    assert gx.shape == x.shape
    _check_upfirdn2d_case(x.detach(), f, 1, 4, [0, 4, 4, -1], True, 4.0, seed=0)
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


@pytest.mark.parametrize("clamp", [None, 1.0])
def test_regression_lrelu_float64_gain_matches_closed_form_exactly(clamp):
    """lrelu in float64 with gain != 1: the slope went through float32 (1.5e-8 off for 0.2)."""
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 6, 3, dtype=F64, generator=g)
    b0 = torch.randn(6, dtype=F64, generator=g)
    w0, u = torch.randn(4, 6, 3, dtype=F64, generator=g), torch.randn(4, 6, 3, dtype=F64, generator=g)
    for alpha, gain in [(0.2, math.sqrt(2)), (0.3, 1.7), (0.1, -2.3)]:
        x, b, w = (t.clone().requires_grad_(True) for t in (x0, b0, w0))
        y = ba.bias_act(x, b, act="lrelu", alpha=alpha, gain=gain, clamp=clamp, impl="ref")
        gx, gb = torch.autograd.grad((y * w).sum(), [x, b], create_graph=True)
        ggw, = torch.autograd.grad((gx * u).sum(), [w])
        v = x0 + b0[None, :, None]
        pre = torch.where(v > 0, v, alpha * v) * gain
        mask = torch.ones_like(v) if clamp is None else (pre.abs() < clamp).to(F64)
        slope = torch.where(v > 0, torch.ones_like(v), alpha)
        ref_y = pre if clamp is None else pre.clamp(-clamp, clamp)
        ref_gx = w0 * gain * slope * mask
        ref_ggw = u * gain * slope * mask
        for mine, ref in ((y, ref_y), (gx, ref_gx), (gb, ref_gx.sum([0, 2])), (ggw, ref_ggw)):
            torch.testing.assert_close(mine, ref, rtol=1e-15, atol=0)
