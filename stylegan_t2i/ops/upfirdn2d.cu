// upfirdn2d CUDA kernel: upsample (zero insertion), pad, FIR filter, downsample.
//
// One thread computes one output pixel. Per axis, with c the correlation taps
// (c[t] = f[F-1-t] for a true convolution, c[t] = f[t] when flip is set),
//
//     y[o] = gain * sum_i x[i] * c[i*up - o*down + pad0],   0 <= i*up - o*down + pad0 < F,
//
// so only the input pixels i in [ceil(b/up), floor((b+F-1)/up)], b = o*down - pad0,
// are visited: the zeros that upsampling inserts are never multiplied.
// This is the same sum as the reference path (zero insertion + pad + conv).

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>

namespace {

struct Upfirdn2dParams {
    int64_t channels, total;            // Output elements.
    int in_h, in_w, out_h, out_w;
    int f_h, f_w;
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;
    bool flip;
    bool channels_last;                 // Output element order: NHWC (else NCHW).
    double gain;
    int64_t xs_n, xs_c, xs_h, xs_w;     // Input strides, in elements (any layout).
    int64_t ys_n, ys_c, ys_h, ys_w;     // Output strides, in elements.
};

// Floor and ceiling division for a positive divisor (C++ '/' truncates toward zero).
__device__ __forceinline__ int floor_div(int a, int b) { return (a >= 0) ? a / b : -((-a + b - 1) / b); }
__device__ __forceinline__ int ceil_div(int a, int b)  { return -floor_div(-a, b); }

template <typename scalar_t>
__global__ void upfirdn2d_kernel(scalar_t* __restrict__ y, const scalar_t* __restrict__ x,
                                 const float* __restrict__ f, const Upfirdn2dParams p)
{
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t stride = (int64_t)blockDim.x * gridDim.x;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < p.total; idx += stride)
    {
        // Decompose the linear index in the output's memory order, so writes coalesce.
        int64_t r = idx, n, c;
        int ox, oy;
        if (p.channels_last) {
            c = r % p.channels; r /= p.channels;
            ox = (int)(r % p.out_w); r /= p.out_w;
            oy = (int)(r % p.out_h); n = r / p.out_h;
        } else {
            ox = (int)(r % p.out_w); r /= p.out_w;
            oy = (int)(r % p.out_h); r /= p.out_h;
            c = r % p.channels; n = r / p.channels;
        }

        // Input pixel i meets correlation tap t = i*up - b, b = o*down - pad0.
        const int by = oy * p.down_y - p.pad_y0;
        const int bx = ox * p.down_x - p.pad_x0;
        const int iy0 = max(ceil_div(by, p.up_y), 0);
        const int iy1 = min(floor_div(by + p.f_h - 1, p.up_y), p.in_h - 1);
        const int ix0 = max(ceil_div(bx, p.up_x), 0);
        const int ix1 = min(floor_div(bx + p.f_w - 1, p.up_x), p.in_w - 1);

        const scalar_t* xp = x + n * p.xs_n + c * p.xs_c;
        acc_t acc = 0;
        for (int iy = iy0; iy <= iy1; iy++) {
            const int ty = iy * p.up_y - by;
            const int fy = p.flip ? ty : p.f_h - 1 - ty;
            for (int ix = ix0; ix <= ix1; ix++) {
                const int tx = ix * p.up_x - bx;
                const int fx = p.flip ? tx : p.f_w - 1 - tx;
                acc += static_cast<acc_t>(xp[iy * p.xs_h + ix * p.xs_w]) * static_cast<acc_t>(__ldg(&f[fy * p.f_w + fx]));
            }
        }
        y[n * p.ys_n + c * p.ys_c + oy * p.ys_h + ox * p.ys_w] = static_cast<scalar_t>(acc * static_cast<acc_t>(p.gain));
    }
}

} // namespace

// Called from upfirdn2d.cpp after argument checks. x: [N, C, H, W] CUDA, any strides;
// f: [f_h, f_w] float32 contiguous on the same device. Returns y in x's memory format.
at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f,
                          int up_x, int up_y, int down_x, int down_y,
                          int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip, double gain)
{
    const c10::cuda::CUDAGuard device_guard(x.device());
    Upfirdn2dParams p;
    p.channels = x.size(1);
    p.in_h = (int)x.size(2);        p.in_w = (int)x.size(3);
    p.f_h = (int)f.size(0);         p.f_w = (int)f.size(1);
    p.up_x = up_x;                  p.up_y = up_y;
    p.down_x = down_x;              p.down_y = down_y;
    p.pad_x0 = pad_x0;              p.pad_y0 = pad_y0;
    p.out_h = (p.in_h * up_y + pad_y0 + pad_y1 - p.f_h) / down_y + 1;   // numerator >= 0 (checked by caller)
    p.out_w = (p.in_w * up_x + pad_x0 + pad_x1 - p.f_w) / down_x + 1;
    p.flip = flip;
    p.gain = gain;

    const auto fmt = x.suggest_memory_format();
    at::Tensor y = at::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options(), fmt);
    p.channels_last = (fmt == at::MemoryFormat::ChannelsLast);
    p.total = y.numel();
    p.xs_n = x.stride(0); p.xs_c = x.stride(1); p.xs_h = x.stride(2); p.xs_w = x.stride(3);
    p.ys_n = y.stride(0); p.ys_c = y.stride(1); p.ys_h = y.stride(2); p.ys_w = y.stride(3);
    if (p.total == 0)
        return y;

    const int threads = 256;
    const int64_t blocks = std::min<int64_t>((p.total + threads - 1) / threads, (int64_t)1 << 20);
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::ScalarType::Half, at::ScalarType::BFloat16, x.scalar_type(), "upfirdn2d_cuda", [&] {
        upfirdn2d_kernel<scalar_t><<<(unsigned int)blocks, threads, 0, stream>>>(
            y.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), f.data_ptr<float>(), p);
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    return y;
}
