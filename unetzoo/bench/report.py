"""Write benchmark results: CSV, a markdown report, and an accuracy-vs-latency plot."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["csv_text", "write_reports", "markdown_report", "plot_accuracy_latency", "results_table", "plot_row"]

_RESULT_COLUMNS = [
    ("name", "model", "{}"), ("mode", "mode", "{}"), ("dtype", "dtype", "{}"), ("variant", "variant", "{}"),
    ("batch", "batch", "{}"), ("size", "size", "{}"), ("params", "params (M)", "{:.2f}"),
    ("gflops", "GFLOPs", "{:.1f}"), ("ms_per_image", "ms/image", "{:.1f}"), ("spread", "spread", "{:.0%}"),
    ("ms_per_image_best", "best ms/image", "{:.1f}"),
    ("images_per_s", "images/s", "{:.2f}"), ("tflops_achieved", "TFLOP/s", "{:.3f}"),
    ("frac_of_peak", "% of peak", "{:.0%}"), ("frac_of_peak_best", "% of peak (best)", "{:.0%}"),
    ("mem_peak_mb", "peak RSS MB", "{:.0f}"),
    ("mem_increase_mb", "+MB in step", "{:.0f}"), ("saved_activations_mb", "saved activations MB", "{:.0f}"),
    ("fg_iou", "IoU", "{:.3f}"),
]


def write_reports(texts: dict[Path, str]) -> dict[Path, str]:
    """Write a run's report files as one set: all are written before any is replaced, and the
    last one (the markdown report that names the others) is replaced last, so a failed write
    leaves an earlier run's set whole. Returns ``texts``."""
    from unetzoo._atomic import atomic_paths

    with atomic_paths(list(texts)) as tmps:
        for (path, text), tmp in zip(texts.items(), tmps):
            tmp.write_text(text, encoding="utf-8", newline="" if path.suffix == ".csv" else None)
    return texts


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """All rows, all keys (union, first-seen order), as CSV."""
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(keys))
    writer.writeheader()
    for row in rows:
        writer.writerow({k: row.get(k, "") for k in keys})
    return buffer.getvalue()


def _fmt(value: Any, spec: str) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return ""
    if spec == "{:.2f}" and isinstance(value, int) and value > 1000:
        value = value / 1e6  # parameters in millions
    try:
        return spec.format(value)
    except (ValueError, TypeError):
        return str(value)


def _table(rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    columns = [c for c in columns if any(r.get(c[0]) not in (None, "") for r in rows)]
    lines = ["| " + " | ".join(title for _, title, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row.get('name', row.get('model'))} | " + f"failed: {row['error']} |")
            continue
        lines.append("| " + " | ".join(_fmt(row.get(key), spec) for key, _, spec in columns) + " |")
    return "\n".join(lines)


def _memory_word(rows: Sequence[dict[str, Any]]) -> str:
    """What the memory columns measured: the process's resident set on CPU, the CUDA allocator's
    peak on a GPU (``MemoryMonitor``), "memory" where a table holds both."""
    kinds = {str(r.get("device") or "cpu").split(":")[0] for r in rows if "error" not in r}
    return {frozenset({"cpu"}): "RSS", frozenset({"cuda"}): "CUDA"}.get(frozenset(kinds), "memory")


def _retitled(columns: Sequence[tuple[str, str, str]], rows: Sequence[dict[str, Any]]):
    word = _memory_word(rows)
    return [(key, title.replace("RSS", word), spec) for key, title, spec in columns]


def results_table(rows: Sequence[dict[str, Any]]) -> str:
    """The main markdown table (one line per case)."""
    return _table(rows, _retitled(_RESULT_COLUMNS, rows))


_COMPARE_COLUMNS = [
    ("model", "unetzoo model", "{}"), ("smp", "smp twin", "{}"), ("mode", "mode", "{}"), ("dtype", "dtype", "{}"),
    ("unetzoo_variant", "unetzoo", "{}"), ("smp_variant", "smp", "{}"), ("batch", "batch", "{}"),
    ("size", "size", "{}"), ("gflops_unetzoo", "GFLOPs uz", "{:.2f}"), ("gflops_smp", "GFLOPs smp", "{:.2f}"),
    ("flops_equal", "FLOPs equal", "{}"), ("ms_per_image_unetzoo", "ms/img uz", "{:.1f}"),
    ("ms_per_image_smp", "ms/img smp", "{:.1f}"), ("speedup", "speed-up (smp/uz time)", "{:.2f}x"),
    ("speedup_best", "speed-up, best repeats", "{:.2f}x"),
    ("flops_rate_ratio", "FLOP/s uz/smp", "{:.2f}"), ("mem_per_gflop_ratio", "RSS per FLOP uz/smp", "{:.2f}"),
    ("saved_per_gflop_ratio", "saved activations per FLOP uz/smp", "{:.2f}"),
]


def markdown_report(
    *,
    title: str,
    command: str,
    machine: dict[str, str],
    peaks: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    comparisons: Sequence[dict[str, Any]] = (),
    targets: Sequence[dict[str, Any]] = (),
    notes: Sequence[str] = (),
    plot: str | None = None,
) -> str:
    """The full markdown report: command, machine, peaks, results, comparisons, targets."""
    parts = [f"# {title}", "", "Command:", "", f"    {command}", "", "Machine and versions:", ""]
    parts += [f"- {k}: {v}" for k, v in machine.items()]
    parts += ["", "## Measured GEMM peak (same run)", "",
              "Measured before and after the cases; fractions of peak use the higher of the two.", "",
              "| dtype | peak TFLOP/s | before the cases | after the cases | torch.matmul | 1x1 conv (oneDNN) | n |",
              "|---|---|---|---|---|---|---|"]
    for p in peaks:
        start, end = (f"{p[k] / 1e12:.3f}" if k in p else "" for k in ("flops_start", "flops_end"))
        parts.append(f"| {p['dtype']} | {p['flops'] / 1e12:.3f} | {start} | {end} | {p['matmul'] / 1e12:.3f} | "
                     f"{p['conv1x1'] / 1e12:.3f} | {p['n']} |")
    parts += ["", "## Results", "", "ms/image: median of the timed repeats after warm-up; spread = interquartile "
              "range / median; best = fastest repeat (the least disturbed on a shared machine); % of peak = achieved "
              "FLOP/s / measured GEMM peak of the same dtype.", "", results_table(rows)]
    if comparisons:
        parts += ["", "## unetzoo vs segmentation_models_pytorch (same encoder, smp-like decoder)", "",
                  _table(comparisons, _retitled(_COMPARE_COLUMNS, rows))]
    if targets:
        parts += ["", "## Targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
        verdict = {True: "yes", False: "NO", None: "-"}
        parts += [f"| {t['target']} | {t['measured']} | {t['goal']} | {verdict[t['met']]} |" for t in targets]
    if notes:
        parts += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if plot:
        parts += ["", f"![accuracy vs latency]({plot})"]
    return "\n".join(parts) + "\n"


def plot_row(rows: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The row a model is plotted with: its fastest inference case (any dtype and variant)."""
    cands = [r for r in rows if r.get("name") == name and r.get("mode") == "infer" and "error" not in r]
    return min(cands, key=lambda r: r["ms_per_image"]) if cands else None


def plot_accuracy_latency(path: str | Path, points: Sequence[dict[str, Any]], *, title: str = "") -> Path:
    """Scatter of held-out IoU vs ms/image, bubble area proportional to parameters.

    Each point needs ``name``, ``ms_per_image``, ``params`` and ``fg_iou``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    biggest = max((p["params"] for p in points), default=1)
    for p in points:
        size = 40 + 1400 * p["params"] / biggest
        ax.scatter(p["ms_per_image"], p["fg_iou"], s=size, alpha=0.45)
        ax.annotate(p["name"].removeprefix("unet-"), (p["ms_per_image"], p["fg_iou"]), fontsize=8,
                    ha="center", va="center")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))  # labels within one decade too
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    shape = {(p.get("batch"), p.get("size"), p.get("dtype")) for p in points}
    what = ", ".join(f"batch {b}, {s}x{s}, {d}" for b, s, d in sorted(shape, key=str))
    ax.set_xlabel(f"inference latency, ms per image (log scale; fastest variant; {what})")
    ax.set_ylabel("held-out foreground IoU")
    ax.set_title(title or "accuracy vs latency (bubble area = parameters)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    from unetzoo._atomic import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
