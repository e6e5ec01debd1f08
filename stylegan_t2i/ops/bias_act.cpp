// Python binding and argument checks for the bias_act CUDA kernel (bias_act.cu).
// Semantics and modes: see bias_act.py.

#include <torch/extension.h>

at::Tensor bias_act_cuda(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                         const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                         const c10::optional<at::Tensor>& dy, int grad, int dim, int act,
                         double alpha, double gain, double clamp);

static void check_like_x(const c10::optional<at::Tensor>& t, const at::Tensor& x, const char* name)
{
    if (!t.has_value())
        return;
    TORCH_CHECK(t->device() == x.device() && t->scalar_type() == x.scalar_type(), "bias_act: ", name, " must match x's device and dtype");
    TORCH_CHECK(t->sizes() == x.sizes() && t->strides() == x.strides(), "bias_act: ", name, " must have x's shape and strides");
}

static at::Tensor bias_act(const at::Tensor& x, const c10::optional<at::Tensor>& b,
                           const c10::optional<at::Tensor>& xref, const c10::optional<at::Tensor>& yref,
                           const c10::optional<at::Tensor>& dy, int grad, int dim, int act,
                           double alpha, double gain, double clamp)
{
    TORCH_CHECK(x.is_cuda(), "bias_act: x must be a CUDA tensor");
    TORCH_CHECK(x.is_non_overlapping_and_dense(), "bias_act: x must be dense");
    TORCH_CHECK(grad >= 0 && grad <= 2, "bias_act: grad must be 0, 1 or 2");
    TORCH_CHECK(act >= 1 && act <= 9, "bias_act: unknown activation index");
    if (b.has_value()) {
        TORCH_CHECK(dim >= 0 && dim < x.dim(), "bias_act: dim out of range");
        TORCH_CHECK(b->dim() == 1 && b->is_contiguous() && b->numel() == x.size(dim), "bias_act: b must be contiguous [x.shape[dim]]");
        TORCH_CHECK(b->device() == x.device() && b->scalar_type() == x.scalar_type(), "bias_act: b must match x's device and dtype");
    }
    check_like_x(xref, x, "xref");
    check_like_x(yref, x, "yref");
    check_like_x(dy, x, "dy");
    TORCH_CHECK(grad == 0 || clamp < 0 || yref.has_value(), "bias_act: gradients through a clamp need yref");
    TORCH_CHECK(grad == 0 || act != 9 || xref.has_value(), "bias_act: swish gradients need xref");
    TORCH_CHECK(grad == 0 || act == 1 || act == 9 || yref.has_value(), "bias_act: gradients need yref");
    TORCH_CHECK(grad != 2 || dy.has_value(), "bias_act: second-order mode needs dy");
    return bias_act_cuda(x, b, xref, yref, dy, grad, dim, act, alpha, gain, clamp);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("bias_act", &bias_act, "Fused bias + activation + gain + clamp and its derivatives (CUDA)");
}
