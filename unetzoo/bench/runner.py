"""Run benchmark cases, each in a fresh process by default, and relate them to the peak.

A fresh process per case keeps the cases independent: peak memory is the process's own
high-water mark, and no case inherits another's allocator cache, threads or compiled code.

    python -m unetzoo.bench.runner '{"model": "unet-resnet18", "size": 64}'   # one case -> JSON
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["run_cases", "run_isolated", "add_peak_fraction"]

RESULT_PREFIX = "UNETZOO_BENCH_RESULT "


def _run_here(case_dict: dict[str, Any], threads: int | None) -> dict[str, Any]:
    import torch

    from unetzoo.bench.cases import Case, run_case

    if threads:
        torch.set_num_threads(threads)
    case = Case(**case_dict)
    try:
        return run_case(case)
    except Exception as err:  # a failing case is a row with an error, not a failed run
        return {**case.to_dict(), "name": case.name, "error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}


def run_isolated(case_dict: dict[str, Any], *, threads: int | None = None, timeout: float = 1800) -> dict[str, Any]:
    """Run one case in a fresh Python process and return its result record."""
    cmd = [sys.executable, "-m", "unetzoo.bench.runner", json.dumps(case_dict)]
    if threads:
        cmd.append(str(threads))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return {**case_dict, "name": _label(case_dict), "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
    return {**case_dict, "name": _label(case_dict), "error": f"worker exited with {proc.returncode}: {tail[0][:300]}"}


def _label(case_dict: dict[str, Any]) -> str:
    """The name a row shows: the case's label (``unet-resnet50 [smp-dec]``) or its model."""
    return case_dict.get("label") or case_dict.get("model", "?")


def add_peak_fraction(row: dict[str, Any], peaks: dict[str, float]) -> dict[str, Any]:
    """Add ``peak_tflops`` and ``frac_of_peak`` (achieved / measured peak of the same dtype)."""
    peak = peaks.get(row.get("dtype", ""))
    if peak and "tflops_achieved" in row:
        row["peak_tflops"] = peak / 1e12
        row["frac_of_peak"] = row["tflops_achieved"] * 1e12 / peak
        if "tflops_best" in row:
            row["frac_of_peak_best"] = row["tflops_best"] * 1e12 / peak
        if row["frac_of_peak"] > 1.0:  # a case cannot beat the GEMM peak: the peak was measured under load
            row["peak_unreliable"] = True
            warnings.warn(f"{row.get('name', row.get('model'))}: {row['frac_of_peak']:.0%} of the measured "
                          f"{row.get('dtype')} GEMM peak; the peak was measured while the machine was busy, so the "
                          "'% of peak' figures are not meaningful: rerun on an idle machine", RuntimeWarning,
                          stacklevel=2)
    return row


def run_cases(
    cases: Iterable[Any],
    *,
    isolate: bool = True,
    threads: int | None = None,
    peaks: dict[str, float] | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run ``cases`` (:class:`~unetzoo.bench.cases.Case` objects) and return their records."""
    rows = []
    for case in cases:
        case_dict = case.to_dict()
        row = run_isolated(case_dict, threads=threads) if isolate else _run_here(case_dict, threads)
        row = add_peak_fraction(row, peaks or {})
        rows.append(row)
        if progress is not None:
            progress(row)
    return rows


def _main(argv: list[str]) -> int:
    case_dict = json.loads(argv[0])
    threads = int(argv[1]) if len(argv) > 1 else None
    try:
        row = _run_here(case_dict, threads)
    except Exception:  # pragma: no cover - reported to the parent as an error row
        traceback.print_exc()
        return 1
    print(RESULT_PREFIX + json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
