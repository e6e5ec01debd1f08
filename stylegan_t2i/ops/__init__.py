"""Low-level ops with NVlabs `torch_utils.ops` semantics: `upfirdn2d` and `bias_act`.

Each op has `impl='ref'` (pure PyTorch, the specification) and `impl='cuda'`
(the project's own kernels, built lazily on first CUDA use; see cuda_build).
"""

from . import bias_act, upfirdn2d

__all__ = ["bias_act", "upfirdn2d"]
