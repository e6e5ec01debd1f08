// Python binding and argument checks for the upfirdn2d CUDA kernel (upfirdn2d.cu).
// Semantics: see upfirdn2d.py; the Python side splits separable filters into
// two 2-D passes, so the kernel only sees 2-D filters.

#include <torch/extension.h>

at::Tensor upfirdn2d_cuda(const at::Tensor& x, const at::Tensor& f,
                          int up_x, int up_y, int down_x, int down_y,
                          int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip, double gain);

static at::Tensor upfirdn2d(const at::Tensor& x, const at::Tensor& f,
                            int up_x, int up_y, int down_x, int down_y,
                            int pad_x0, int pad_x1, int pad_y0, int pad_y1, bool flip, double gain)
{
    TORCH_CHECK(x.is_cuda(), "upfirdn2d: x must be a CUDA tensor");
    TORCH_CHECK(f.device() == x.device(), "upfirdn2d: f must be on the device of x");
    TORCH_CHECK(x.dim() == 4, "upfirdn2d: x must be [N, C, H, W]");
    TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat, "upfirdn2d: f must be a 2-D float32 tensor");
    TORCH_CHECK(f.size(0) >= 1 && f.size(1) >= 1, "upfirdn2d: empty filter");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, "upfirdn2d: factors must be >= 1");
    TORCH_CHECK(x.size(2) <= INT_MAX / up_y && x.size(3) <= INT_MAX / up_x, "upfirdn2d: image too large");
    const int64_t num_h = x.size(2) * up_y + pad_y0 + pad_y1 - f.size(0);
    const int64_t num_w = x.size(3) * up_x + pad_x0 + pad_x1 - f.size(1);
    TORCH_CHECK(num_h >= 0 && num_w >= 0, "upfirdn2d: padding/cropping leaves an empty output");
    TORCH_CHECK(num_h < INT_MAX && num_w < INT_MAX, "upfirdn2d: output too large");
    return upfirdn2d_cuda(x, f.contiguous(), up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip, gain);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("upfirdn2d", &upfirdn2d, "Upsample, FIR filter, downsample (CUDA)");
}
