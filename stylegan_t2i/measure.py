"""Timing and memory measurement shared by the benchmarks and tools/compare.py.

`median_ms` times a callable (median of repeats after untimed warm-up calls, with CUDA
synchronised around each call so the time covers the kernels, not just their launch);
`reset_peak_memory` / `peak_memory_mib` bracket a measurement; `memory_label` and
`machine_description` say, in a table or report, what was measured and on what hardware;
`dense_conv_gflops` / `sgemm_gflops` measure the machine's compute ceiling and `forward_flops`
counts a network's work, so a throughput can be read as a share of that ceiling.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode


def sync(device: torch.device) -> None:
    """Wait for queued CUDA work on `device` (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_ms(
    fn:         Callable[[], object],   # The measured work; its result is discarded.
    device:     torch.device,           # Synchronised before and after each timed call.
    warmup:     int,                    # Untimed calls first (allocator, thread pools, lazy init).
    repeats:    int,                    # Timed calls; >= 1.
) -> float:
    """Median wall time of fn() in ms, after `warmup` untimed calls.

    The median rather than the mean: on a shared machine one preempted repeat would
    otherwise move the figure.
    """
    assert repeats >= 1 and warmup >= 0, (repeats, warmup)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def reset_peak_memory(device: torch.device) -> str:
    """Start a new peak-memory window for `peak_memory_mib`; returns a note saying what that
    peak will count, for a report.

    CUDA: the caching allocator's peak is reset. CPU: writing '5' to /proc/self/clear_refs
    resets the process's high-water mark VmHWM to its current RSS (Linux >= 4.0). Where that
    file cannot be written the peak cannot be reset: `peak_memory_mib` then returns the
    process's lifetime peak (an upper bound), and the note says so.
    """
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return "torch.cuda.max_memory_allocated (tensors only)"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return "peak RSS of the whole process (VmHWM after clear_refs; includes loaded models and data)"
    except OSError:
        return "ru_maxrss: lifetime peak RSS of the process (could not reset it per method)"


def peak_memory_mib(device: torch.device) -> float:
    """Peak memory since `reset_peak_memory`, MiB.

    CUDA: torch.cuda.max_memory_allocated (tensors only, not the allocator's cache or the
    CUDA context). CPU: VmHWM, the peak resident set of the whole process (interpreter,
    libraries and memory kept by the C allocator from earlier work included); without
    /proc (not Linux), getrusage's ru_maxrss, the peak since the process started.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024      # kB -> MiB
    except OSError:
        pass  # No /proc: fall through to getrusage.
    import resource  # Not on Windows; only reached where /proc is missing.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024    # Linux units: KiB -> MiB


def memory_label(device: torch.device) -> str:
    """What `peak_memory_mib` measures on `device`, for a table header."""
    return "peak CUDA alloc MiB" if device.type == "cuda" else "peak RSS MiB"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass  # Not Linux: fall through to what the platform module knows.
    return platform.processor() or "unknown CPU"


def machine_description(device: torch.device) -> str:
    """One line: CPU model, usable cores, GPU (if used), device, torch version, intra-op threads.

    E.g. 'Intel Xeon ..., 2 cores; device: cpu; torch 2.13.0+cpu; threads: 2'.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU: {torch.cuda.get_device_name(device)}" if device.type == "cuda" else ""
    return (f"{_cpu_model()}, {cores} cores{gpu}; device: {device}; "
            f"torch {torch.__version__}; threads: {torch.get_num_threads()}")


def dense_conv_gflops(
    device:     torch.device,
    warmup:     int,
    repeats:    int,
    batch:      int = 32,
    channels:   int = 256,              # In and out channels of the 3x3 conv.
    res:        int = 32,               # Its input and output size in pixels.
) -> float:
    """The dense-convolution rate of `device`, GFLOP/s: a float32 3x3 conv channels -> channels at
    res px, padding 1 (2 FLOP per multiply-add), median of `repeats` calls.

    The synthesis and critic convolutions are of this kind, so it is the ceiling their forward can
    approach; sgemm (`sgemm_gflops`) is the rate the maths library reaches without a conv's
    data layout."""
    x = torch.randn(batch, channels, res, res, device=device)
    w = torch.randn(channels, channels, 3, 3, device=device)
    with torch.no_grad():
        ms = median_ms(lambda: F.conv2d(x, w, padding=1), device, warmup, repeats)
    return 2 * batch * channels * channels * 9 * res * res / ms / 1e6


def sgemm_gflops(device: torch.device, warmup: int, repeats: int, n: int = 2048) -> float:
    """float32 [n, n] @ [n, n] on `device`, GFLOP/s (2 n^3 FLOP), median of `repeats` calls."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return 2 * n ** 3 / median_ms(lambda: a @ b, device, warmup, repeats) / 1e6


def forward_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of fn(), as torch.utils.flop_counter.FlopCounterMode counts them:
    matrix products and convolutions (grouped and transposed ones included; 2 FLOP per
    multiply-add), not element-wise work."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()
