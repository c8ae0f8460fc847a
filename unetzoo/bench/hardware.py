"""What machine the benchmark ran on, and how fast its matrix units really are.

Every throughput figure of the harness is reported as a fraction of :func:`matmul_peak`,
measured in the same run and dtype, so it says how close it is to the machine's limit.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

__all__ = ["Peak", "matmul_peak", "machine_info", "dtype_name", "cpu_name", "cpu_line"]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class Peak:
    """Best FLOP/s of a large square GEMM in ``dtype``.

    Attributes:
        flops: the peak (FLOP/s) = max of the two kernels below.
        matmul: ``torch.matmul`` FLOP/s.
        conv1x1: the same GEMM as a 1x1 convolution (oneDNN), FLOP/s; on CPUs without native
            bfloat16, ``torch.matmul`` in bfloat16 falls back to a slow kernel while oneDNN
            still converts and uses the fp32 units, so the higher of the two is the honest peak.
        n: matrix side used (grown until one product takes ``target_s``).
    """

    dtype: str
    device: str
    flops: float
    matmul: float
    conv1x1: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _best_rate(fn, flops: float, repeats: int, device: torch.device) -> float:
    from unetzoo.bench.measure import time_callable

    # the best of calls spread over half a second at least: back-to-back calls of a small GEMM took
    # a millisecond in all, and one moment of contention on a shared machine then set the peak
    t = time_callable(fn, warmup=1, repeats=repeats, device=device, min_time=0.5)
    return flops / t.minimum


def _gemm_kernels(n: int, dtype: torch.dtype, device: torch.device) -> dict:
    """``torch.matmul`` and the same GEMM as a 1x1 convolution: (1, K, M, 1) x (N, K, 1, 1)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    x = a.t().reshape(1, n, n, 1).contiguous(memory_format=torch.channels_last)
    w = b.t().reshape(n, n, 1, 1).contiguous(memory_format=torch.channels_last)
    return {"matmul": lambda: a @ b, "conv1x1": lambda: F.conv2d(x, w)}


def _kernel_rate(name: str, dtype: torch.dtype, device: torch.device, max_n: int, target_s: float,
                 repeats: int) -> tuple[float, int]:
    """Best FLOP/s of kernel ``name``, growing n (doubling from 256) while one call is cheap."""
    n = 256
    while True:
        fn = _gemm_kernels(n, dtype, device)[name]
        with torch.no_grad():
            fn()  # first call: allocation, kernel selection
            t0 = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            elapsed = time.perf_counter() - t0
        if n >= max_n or elapsed > target_s / 8:  # the next size would take 8x as long
            break
        n *= 2
    with torch.no_grad():
        return _best_rate(fn, 2.0 * n**3, repeats, device), n


def matmul_peak(
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    *,
    max_n: int = 2048,
    target_s: float = 2.0,
    repeats: int = 5,
) -> Peak:
    """Measure the GEMM peak of ``device`` in ``dtype`` (up to 2048^3 where that is fast enough)."""
    device = torch.device(device)
    mm, n_mm = _kernel_rate("matmul", dtype, device, max_n, target_s, repeats)
    conv, n_conv = _kernel_rate("conv1x1", dtype, device, max_n, target_s, repeats)
    return Peak(dtype_name(dtype), str(device), max(mm, conv), mm, conv, n_mm if mm >= conv else n_conv)


def cpu_name() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (``platform`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_line() -> str:
    """One line for a benchmark's header: CPU model, the SIMD features that matter, threads, torch."""
    get_caps = getattr(torch.cpu, "get_capabilities", None)
    caps = get_caps() if get_caps is not None else {}
    flags = [k for k in ("avx512_f", "avx512_bf16", "amx_bf16") if caps.get(k)] or ["no AVX-512"]
    return f"{cpu_name()} ({', '.join(flags)}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def machine_info(device: torch.device | str = "cpu") -> dict[str, str]:
    """CPU/GPU, core counts, SIMD features that matter, library versions and the date."""
    import timm
    import torchvision

    from unetzoo import __version__
    from unetzoo.fast import native_bf16_supported

    get_caps = getattr(torch.cpu, "get_capabilities", None)
    caps = get_caps() if get_caps is not None else {}
    flags = [k for k in ("avx2", "avx512_f", "avx512_bf16", "amx_bf16", "amx_tile") if caps.get(k)]
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_name(),
        "cpu_cores": str(os.cpu_count()),
        "torch_threads": str(torch.get_num_threads()),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags": " ".join(flags) or "n/a",
        "native_bf16": str(native_bf16_supported(device)),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": timm.__version__,
        "unetzoo": __version__,
        "platform": platform.platform(),
    }
    try:
        import segmentation_models_pytorch as smp

        info["segmentation_models_pytorch"] = smp.__version__
    except ImportError:
        info["segmentation_models_pytorch"] = "not installed"
    device = torch.device(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = str(torch.version.cuda)
    return info
