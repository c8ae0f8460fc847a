"""Measuring primitives: wall-clock timing with warm-up, FLOP counting, peak memory."""

from __future__ import annotations

import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["Timing", "time_callable", "fastest_interleaved", "count_flops", "MemoryMonitor", "synchronize"]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class Timing:
    """Seconds per call over ``repeats`` timed calls (after warm-up)."""

    median: float
    minimum: float
    maximum: float
    p25: float
    p75: float
    repeats: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.05 = +-2.5 %)."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    @classmethod
    def from_samples(cls, samples: list[float]) -> Timing:
        if not samples:
            raise ValueError("no timing samples")
        q = statistics.quantiles(samples, n=4, method="inclusive") if len(samples) > 1 else [samples[0]] * 3
        return cls(statistics.median(samples), min(samples), max(samples), q[0], q[2], len(samples))


def time_callable(
    fn: Callable[[], object],
    *,
    warmup: int = 2,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    min_time: float = 0.0,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then at least ``repeats`` timed calls (and more
    until ``min_time`` seconds have been spent timing)."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeats or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        samples.append(time.perf_counter() - t0)
    return Timing.from_samples(samples)


def fastest_interleaved(fns: Mapping[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Seconds of the fastest of ``rounds`` calls of each function, after one untimed call each.

    The functions take turns, so a busy spell on a shared machine slows all of them alike, and
    the fastest call is the least disturbed one (CPU timings, no device synchronisation).
    """
    best = {k: float("inf") for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t0)
    return best


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations (a multiply-add counts 2) of one call of ``fn``, by
    :class:`torch.utils.flop_counter.FlopCounterMode` (convolutions, matmuls and their backward),
    with the weight gradient of grouped convolutions counted per group (see
    :func:`_conv_backward_flop`)."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {torch.ops.aten.convolution_backward: _conv_backward_flop}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def _conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, **_) -> int:
    """torch's count of a convolution's backward, but with the weight gradient divided by
    ``groups``: torch 2.14 counts it as if every input channel met every output channel, so a
    depthwise convolution's backward came out ``groups`` times too large (64x for 64 channels)."""
    from torch.utils.flop_counter import conv_flop_count

    def t(shape):  # batch and channel dimensions swapped
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:  # the input gradient: a transposed convolution of the output gradient
        flops += conv_flop_count(grad_out_shape, w_shape, x_shape, not transposed)
    if output_mask[1]:  # the weight gradient: a convolution of the input with the output gradient
        a, b = (t(grad_out_shape), t(x_shape)) if transposed else (t(x_shape), t(grad_out_shape))
        flops += conv_flop_count(a, b, t(w_shape), transposed=False) // groups
    return flops


def saved_activation_bytes(model: torch.nn.Module, fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for the backward pass while ``fn`` runs (distinct
    storages, ``model``'s parameters excluded): a training step's activation memory, exact and
    independent of the allocator, unlike a resident-set or caching-allocator peak."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in params)


def _rss() -> int:
    """This process's resident memory in bytes: psutil where installed, else Linux's /proc."""
    try:
        import psutil
    except ImportError:
        try:
            resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
        except OSError:
            raise ImportError("measuring memory needs psutil on this system: pip install 'unetzoo[bench]'") from None
        return resident_pages * os.sysconf("SC_PAGE_SIZE")
    return psutil.Process().memory_info().rss


def _max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


class MemoryMonitor:
    """Peak memory while the ``with`` block runs.

    CUDA: ``torch.cuda.max_memory_allocated`` (reset on entry). CPU: resident set size,
    sampled every ``interval`` seconds by a thread and completed by the kernel's exact
    high-water mark (``ru_maxrss``) whenever the block set a new one — exact in a fresh
    process, a lower bound otherwise.

    Attributes (after the block): ``peak`` (bytes), ``start`` (bytes in use on entry),
    ``increase`` = ``peak - start``.
    """

    def __init__(self, device: torch.device | str = "cpu", interval: float = 0.001) -> None:
        self.device = torch.device(device)
        self.interval = interval
        self.start = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def increase(self) -> int:
        return max(0, self.peak - self.start)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss())

    def __enter__(self) -> MemoryMonitor:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start = self.peak = torch.cuda.memory_allocated(self.device)
            return self
        self.start = self.peak = _rss()
        self._max_before = _max_rss()
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.peak = max(self.peak, _rss())
        max_after = _max_rss()
        if max_after > self._max_before:  # a new process-wide high-water mark was set in the block
            self.peak = max(self.peak, max_after)
