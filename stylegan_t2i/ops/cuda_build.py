"""Lazy, cached build of the ops' CUDA extensions, with a reference-path fallback.

Each op owns one `CudaExtensionLoader`. Nothing is compiled at import: the
extension is built with `torch.utils.cpp_extension.load` (ninja + nvcc) the
first time an op is called with `impl='cuda'` on a CUDA tensor, then cached in
the loader (and on disk by torch, under TORCH_EXTENSIONS_DIR). Whenever the
kernel cannot be used the caller gets `None` and runs the reference path. A CPU
tensor takes that path silently (as NVlabs' ops do: on a CPU the reference is the
implementation, not a fallback); a CUDA tensor whose kernel could not be built
gets one warning.
Setting the environment variable STYLEGAN_T2I_OPS_REF=1 forces the reference
path silently (it is read on every call, so it can be toggled at run time).
"""

import os
import subprocess
import warnings

import torch

REF_ENV_VAR = "STYLEGAN_T2I_OPS_REF"


def ref_forced() -> bool:
    """True when STYLEGAN_T2I_OPS_REF is set to a non-empty value other than '0'."""
    return os.environ.get(REF_ENV_VAR, "0") not in ("", "0")


class CudaExtensionLoader:
    """Builds one extension on first CUDA use, caches it, and warns at most once if that fails.

    `module_for(x)` returns the compiled module when `x` can use it, else None.
    A failed build is remembered, so it is attempted once per process.
    """

    def __init__(self,
        name,       # Extension name; also the build directory under TORCH_EXTENSIONS_DIR.
        sources,    # Source file names, relative to this package directory.
    ):
        here = os.path.dirname(os.path.abspath(__file__))
        self.name = name
        self.sources = [os.path.join(here, s) for s in sources]
        self._module = None
        self._build_error = None
        self._warned = False

    def module_for(self, x: torch.Tensor):
        """The extension module if `x` can run on it, else None (after at most one warning)."""
        if ref_forced():
            return None
        if x.device.type != "cuda":
            return None
        if self._module is None and self._build_error is None:
            self._build()
        if self._module is None:
            self._warn_once(f"building the CUDA extension failed ({self._build_error})")
        return self._module

    def _build(self):
        # Imported here: cpp_extension is only needed once a CUDA tensor shows up.
        from torch.utils import cpp_extension
        try:
            self._module = cpp_extension.load(
                name=self.name,
                sources=self.sources,
                extra_cflags=["-O3"],
                extra_cuda_cflags=["-O3"],
                verbose=False)
        except (RuntimeError, OSError, ImportError, subprocess.CalledProcessError) as err:
            # cpp_extension reports compiler and linker errors as RuntimeError,
            # a missing CUDA toolkit as OSError, a bad .so as ImportError.
            lines = str(err).strip().splitlines() or [""]
            self._build_error = f"{type(err).__name__}: {lines[-1]}"

    def _warn_once(self, reason):
        if self._warned:
            return
        self._warned = True
        warnings.warn(f"{self.name}: {reason}; falling back to the reference PyTorch path "
                      f"(this warning is shown once; set {REF_ENV_VAR}=1 to choose the "
                      f"reference path explicitly).", RuntimeWarning, stacklevel=4)
