// bias_act CUDA kernel: y = clamp(act(x + b) * gain) and its first/second derivatives.
//
// Modes (the Python autograd Functions in bias_act.py pick them):
//   grad 0: y  = clamp(act(x + b) * gain, -clamp, clamp)
//   grad 1: dx = x * gain * act'(v)              (x holds the incoming gradient dy)
//   grad 2: d  = x * gain * act''(v) * dy        (x holds d(dx), dy the first gradient)
// where v = xref + b is the forward input. act' and act'' are computed from the saved
// output (yy = yref / gain = act(v)) or, for swish, from v; in modes 1 and 2 the result
// is zero where the forward output was clamped (|yref| >= clamp). Elements are visited
// in memory order; all operands share x's strides, so the bias index is
// (i / stride(dim)) % size(dim). Same formulas as _ref_kernel in bias_act.py.

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace {

struct BiasActParams {
    int act, grad;                      // Activation index (1..9, see activation_funcs), mode (0..2).
    double alpha, gain, clamp;          // clamp < 0: no clamping.
    int64_t size_x, size_b, step_b;     // Elements of x; bias length; stride of x along dim.
};

constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;

template <typename T>
__device__ __forceinline__ T act_forward(int act, T v, T alpha)
{
    const T one = 1;
    switch (act) {
        case 2: return v > 0 ? v : T(0);                                      // relu
        case 3: return v > 0 ? v : v * alpha;                                 // lrelu
        case 4: return tanh(v);                                               // tanh
        case 5: return one / (one + exp(-v));                                 // sigmoid
        case 6: return v > 0 ? v : expm1(v);                                  // elu
        case 7: return T(kSeluScale) * (v > 0 ? v : T(kSeluAlpha) * expm1(v)); // selu
        case 8: return v > T(20) ? v : log1p(exp(v));                         // softplus (torch threshold 20)
        case 9: return v / (one + exp(-v));                                   // swish
        default: return v;                                                    // linear
    }
}

// act'(v) (order 1) or act''(v) (order 2), from yy = act(v) or, for swish, from xb = v.
template <typename T>
__device__ __forceinline__ T act_derivative(int act, int order, T yy, T xb, T alpha)
{
    const T one = 1, two = 2, zero = 0;
    switch (act) {
        case 2: return order == 1 ? (yy > 0 ? one : zero) : zero;
        case 3: return order == 1 ? (yy > 0 ? one : alpha) : zero;
        case 4: { T d1 = one - yy * yy; return order == 1 ? d1 : -two * yy * d1; }
        case 5: { T d1 = yy * (one - yy); return order == 1 ? d1 : d1 * (one - two * yy); }
        case 6: return yy >= 0 ? (order == 1 ? one : zero) : yy + one;
        case 7: return yy >= 0 ? (order == 1 ? T(kSeluScale) : zero) : yy + T(kSeluScale * kSeluAlpha);
        case 8: { T d1 = -expm1(-yy); return order == 1 ? d1 : d1 * exp(-yy); }
        case 9: {
            T s = one / (one + exp(-xb));
            return order == 1 ? s * (one + xb * (one - s)) : s * (one - s) * (two + xb * (one - two * s));
        }
        default: return order == 1 ? one : zero;
    }
}

template <typename scalar_t>
__global__ void bias_act_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                                const scalar_t* __restrict__ b, const scalar_t* __restrict__ xref,
                                const scalar_t* __restrict__ yref, const scalar_t* __restrict__ dy,
                                const BiasActParams p)
{
    using acc_t = at::opmath_type<scalar_t>;
    const acc_t alpha = p.alpha, gain = p.gain, clamp = p.clamp;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < p.size_x; i += stride)
    {
        const acc_t v = static_cast<acc_t>(x[i]);
        const acc_t bias = b ? static_cast<acc_t>(b[(i / p.step_b) % p.size_b]) : acc_t(0);
        acc_t out;
        if (p.grad == 0) {
            out = act_forward<acc_t>(p.act, v + bias, alpha) * gain;
            if (clamp >= 0)
                out = out > clamp ? clamp : (out < -clamp ? -clamp : out);
        } else {
            const acc_t yr = yref ? static_cast<acc_t>(yref[i]) : acc_t(0);
            const acc_t yy = (yref && gain != 0) ? yr / gain : acc_t(0);
            const acc_t xb = xref ? static_cast<acc_t>(xref[i]) + bias : acc_t(0);
            // lrelu: act' depends on sign(v) only; with xref given (alpha < 0) take it from v.
            const acc_t ys = (p.act == 3 && xref) ? xb : yy;
            out = v * gain * act_derivative<acc_t>(p.act, p.grad, ys, xb, alpha);   // NVlabs ref order
            if (p.grad == 2)
                out *= static_cast<acc_t>(dy[i]);
            if (clamp >= 0 && !(yr > -clamp && yr < clamp))
                out = 0;    // clamped outputs are constant
        }
        y[i] = static_cast<scalar_t>(out);
    }
}

const void* ptr_or_null(const c10::optional<at::Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

} // namespace

// Called from bias_act.cpp after argument checks (dense x; optional operands in x's strides).
at::Tensor bias_act_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                         const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                         const c10::optional<at::Tensor>& dy, int grad, int dim, int act,
                         double alpha, double gain, double clamp)
{
    const c10::cuda::CUDAGuard device_guard(x.device());
    at::Tensor y = at::empty_like(x);   // preserve_format: same strides as a dense x
    BiasActParams p;
    p.act = act; p.grad = grad;
    p.alpha = alpha; p.gain = gain; p.clamp = clamp;
    p.size_x = x.numel();
    p.size_b = b.has_value() ? b->numel() : 1;
    p.step_b = b.has_value() ? std::max<int64_t>(x.stride(dim), 1) : 1;
    if (p.size_x == 0)
        return y;

    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((p.size_x + threads - 1) / threads, (int64_t)1 << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "bias_act_cuda", [&] {
        bias_act_kernel<scalar_t><<<(unsigned int)blocks, threads, 0, stream>>>(
            y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(),
            static_cast<const scalar_t*>(ptr_or_null(b)), static_cast<const scalar_t*>(ptr_or_null(xref)),
            static_cast<const scalar_t*>(ptr_or_null(yref)), static_cast<const scalar_t*>(ptr_or_null(dy)), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
