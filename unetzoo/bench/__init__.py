"""The benchmark harness behind ``unetzoo bench`` and ``benchmarks/bench_backbones.py``.

    >>> from unetzoo.bench import BenchConfig, run_benchmark
    >>> run_benchmark(BenchConfig(models=["unet-resnet18"], sizes=[256]), command="example")

Modules: :mod:`~unetzoo.bench.hardware` (machine facts, measured GEMM peak),
:mod:`~unetzoo.bench.measure` (timing, FLOPs, peak memory), :mod:`~unetzoo.bench.cases`
(one network + variant + mode + dtype + shape), :mod:`~unetzoo.bench.runner` (cases in fresh
processes), :mod:`~unetzoo.bench.suite` (what a run measures, comparisons with smp),
:mod:`~unetzoo.bench.accuracy` (short fine-tune, held-out IoU), :mod:`~unetzoo.bench.report`
(CSV, markdown, plot) and :mod:`~unetzoo.bench.run` (all of it, end to end).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["BenchConfig", "Case", "run_benchmark", "run_case", "matmul_peak"]

_WHERE = {
    "BenchConfig": "unetzoo.bench.suite",
    "Case": "unetzoo.bench.cases",
    "run_case": "unetzoo.bench.cases",
    "run_benchmark": "unetzoo.bench.run",
    "matmul_peak": "unetzoo.bench.hardware",
}


def __getattr__(name: str) -> Any:  # lazy: importing the package does not import torch
    if name not in _WHERE:
        raise AttributeError(f"module 'unetzoo.bench' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_WHERE[name]), name)


if TYPE_CHECKING:  # pragma: no cover
    from unetzoo.bench.cases import Case, run_case
    from unetzoo.bench.hardware import matmul_peak
    from unetzoo.bench.run import run_benchmark
    from unetzoo.bench.suite import BenchConfig
