"""One benchmark run end to end: peaks, cases, comparisons, accuracy, and the written report."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from unetzoo.bench.suite import BenchConfig, build_cases, compare_rows, smp_twinless

__all__ = ["run_benchmark", "BenchOutput"]

BenchOutput = dict[str, Any]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _progress(row: dict[str, Any]) -> None:
    if "error" in row:
        _log(f"  {row.get('name')} {row.get('mode')} {row.get('dtype')} {row.get('variant')}: FAILED {row['error']}")
        return
    frac = row.get("frac_of_peak")
    _log(f"  {row['name']:<36} {row['mode']:<5} {row['dtype']:<8} {row['variant']:<12} b{row['batch']} "
         f"{row['size']}px  {row['ms_per_image']:9.1f} ms/img  {row['tflops_achieved']:.3f} TFLOP/s"
         + (f" ({frac:.0%} of peak)" if frac is not None else "") + f"  +{row['mem_increase_mb']:.0f} MB")


def measure_peaks(dtypes: Sequence[str], device: str, threads: int | None, max_n: int = 2048) -> list[dict[str, Any]]:
    import torch

    from unetzoo import cpu_memory
    from unetzoo.bench.hardware import matmul_peak

    if threads:
        torch.set_num_threads(threads)
    if torch.device(device).type == "cpu":
        cpu_memory.auto_tune_cpu_allocator()  # as in every case
    return [matmul_peak(getattr(torch, d), device, max_n=max_n).to_dict() for d in dtypes]


def combine_peaks(start: Sequence[dict[str, Any]], end: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dtype, the higher of the peaks measured before and after the cases (a shared machine's
    speed drifts; the higher figure is the harder one to claim a fraction of), with both kept as
    ``flops_start`` / ``flops_end``."""
    later = {p["dtype"]: p for p in end}
    out = []
    for first in start:
        second = later.get(first["dtype"], first)
        best = first if first["flops"] >= second["flops"] else second
        out.append({**best, "flops_start": first["flops"], "flops_end": second["flops"]})
    return out


def _accuracy(cfg: BenchConfig) -> list[dict[str, Any]]:
    from unetzoo.bench.accuracy import default_data_root, guarded_fine_tune

    root = cfg.accuracy_data or default_data_root()
    if not root:
        _log("accuracy: no data set found (pass --accuracy-data DIR); skipping the accuracy column")
        return []
    rows = []
    for model in cfg.models:
        _log(f"accuracy: fine-tuning {model} for {cfg.accuracy_epochs} epochs on {root}")
        rows.append(guarded_fine_tune(model, root, epochs=cfg.accuracy_epochs, threads=cfg.threads))
        _log(f"  -> {rows[-1]}")
    return rows


def run_benchmark(
    cfg: BenchConfig,
    *,
    command: str,
    cases: Sequence[Any] | None = None,
    targets: Callable[[list[dict], list[dict], dict[str, float]], list[dict]] | None = None,
    notes: Sequence[str] = (),
    title: str = "unetzoo benchmark",
) -> BenchOutput:
    """Measure everything ``cfg`` asks for and write ``<tag>.csv``, ``<tag>.md``, ``<tag>.png``
    (and ``<tag>.json`` with every record) under ``cfg.out_dir``. Returns the records and paths.

    ``cases`` replaces the cross product of ``cfg`` by an explicit list (benchmark scripts);
    ``targets(rows, comparisons, peaks)`` returns target rows for the report.
    """
    from unetzoo.bench.hardware import machine_info
    from unetzoo.bench.report import csv_text, markdown_report, plot_accuracy_latency, plot_row, write_reports
    from unetzoo.bench.runner import add_peak_fraction, run_cases

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    machine = machine_info(cfg.device)
    _log(f"machine: {machine['cpu']} ({machine['cpu_cores']} cores, {machine['cpu_capability']}), "
         f"load {machine['load_average']}")
    peaks = measure_peaks(cfg.dtypes, cfg.device, cfg.threads, cfg.peak_max_n)
    peak_by_dtype = {p["dtype"]: p["flops"] for p in peaks}
    for p in peaks:
        _log(f"peak {p['dtype']}: {p['flops'] / 1e12:.3f} TFLOP/s (matmul {p['matmul'] / 1e12:.3f}, "
             f"1x1 conv {p['conv1x1'] / 1e12:.3f}, n={p['n']})")
    if cases is None:
        cases = build_cases(cfg)
        alone = smp_twinless(cfg)
        for model, reason in alone.items():
            _log(f"--compare-smp: {reason}; it is measured without an smp comparison")
        notes = [*notes, *(f"{model} has no smp twin ({reason}): measured without a comparison"
                           for model, reason in alone.items())]
    cases = list(cases)
    _log(f"{len(cases)} cases ({'one process each' if cfg.isolate else 'in this process'})")
    rows = run_cases(cases, isolate=cfg.isolate, threads=cfg.threads, peaks=peak_by_dtype, progress=_progress)
    peaks = combine_peaks(peaks, measure_peaks(cfg.dtypes, cfg.device, cfg.threads, cfg.peak_max_n))
    peak_by_dtype = {p["dtype"]: p["flops"] for p in peaks}
    for p in peaks:
        _log(f"peak {p['dtype']} again after the cases: {p['flops_end'] / 1e12:.3f} TFLOP/s; "
             f"fractions use the higher, {p['flops'] / 1e12:.3f}")
    rows = [add_peak_fraction(row, peak_by_dtype) for row in rows]
    accuracy = _accuracy(cfg) if cfg.accuracy else []
    iou = {a["name"]: a.get("fg_iou") for a in accuracy}
    for row in rows:
        if row.get("name") in iou and row.get("mode") == "infer":
            row["fg_iou"] = iou[row["name"]]
    comparisons = compare_rows(rows)
    target_rows = targets(rows, comparisons, peak_by_dtype) if targets else []
    machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["elapsed"] = f"{time.time() - start:.0f} s"
    plot_name = None
    points = []
    for model in cfg.models:
        row = plot_row(rows, model)
        if row is not None and iou.get(model) is not None and not math.isnan(iou[model]):
            points.append({**row, "fg_iou": iou[model]})
    if points:
        plot_name = f"{cfg.tag}.png"
        plot_accuracy_latency(out / plot_name, points)
    md = markdown_report(title=title, command=command, machine=machine, peaks=peaks, rows=rows,
                         comparisons=comparisons, targets=target_rows, notes=notes, plot=plot_name)
    record = {"command": command, "machine": machine, "config": asdict(cfg), "peaks": peaks, "rows": rows,
              "comparisons": comparisons, "accuracy": accuracy, "targets": target_rows}
    paths = {"csv": out / f"{cfg.tag}.csv", "json": out / f"{cfg.tag}.json"}
    texts = [csv_text(rows), json.dumps(record, indent=1, default=str)]
    if comparisons:
        paths["comparisons_csv"] = out / f"{cfg.tag}_vs_smp.csv"
        texts.append(csv_text(comparisons))
    paths["markdown"] = out / f"{cfg.tag}.md"  # last: the report that names the others
    texts.append(md)
    try:
        write_reports(dict(zip(paths.values(), texts)))
    except OSError:
        print(md)  # the measurements are not lost with the files
        raise
    for stale, present in ((f"{cfg.tag}_vs_smp.csv", bool(comparisons)), (f"{cfg.tag}.png", bool(plot_name))):
        if not present:  # an earlier run's under this tag, which this run's set does not have
            (out / stale).unlink(missing_ok=True)
    if plot_name:
        paths["plot"] = out / plot_name
    _log("wrote " + ", ".join(str(p) for p in paths.values()))
    return {**record, "paths": paths}
