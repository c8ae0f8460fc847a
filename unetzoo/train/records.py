"""The metrics log of a run: ``metrics.jsonl`` (every value) and ``metrics.csv`` (the scalars).

Both files are rewritten from the in-memory history after each epoch (atomically), so after a
resume they hold exactly the epochs the training state knows about.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_record", "write_history"]

JSONL_NAME, CSV_NAME = "metrics.jsonl", "metrics.csv"


def _atomic_text(path: Path, text: str) -> None:
    from unetzoo._atomic import atomic_path

    with atomic_path(path) as tmp:  # a unique temporary name, removed when the write fails
        tmp.write_text(text, encoding="utf-8")


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN; a class absent from the data has no IoU
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def write_history(history: Sequence[Mapping[str, Any]], folder: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``metrics.jsonl`` and ``metrics.csv`` for ``history`` (one record per epoch)."""
    folder = Path(folder)
    jsonl = "".join(json.dumps({k: json_safe(v) for k, v in r.items()}) + "\n" for r in history)
    _atomic_text(folder / JSONL_NAME, jsonl)
    columns: list[str] = []
    for record in history:
        columns += [k for k, v in record.items() if not isinstance(v, (list, tuple, dict)) and k not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in history:
        writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in record.items() if k in columns})
    _atomic_text(folder / CSV_NAME, buf.getvalue())
    return folder / JSONL_NAME, folder / CSV_NAME


def format_record(record: Mapping[str, Any]) -> str:
    """One log line for an epoch: losses, the headline metrics, throughput."""
    parts = [f"epoch {record['epoch']}"]
    for key, label in (("train_loss", "loss"), ("val_loss", "val_loss"), ("miou", "mIoU"), ("fg_iou", "fg_IoU"),
                       ("dice", "Dice"), ("pixel_accuracy", "acc"), ("imgs_per_s", "img/s"), ("lr", "lr")):
        value = record.get(key)
        if value is None:
            continue
        parts.append(f"{label} {value:.2e}" if key == "lr" else f"{label} {value:.4f}" if key != "imgs_per_s"
                     else f"{label} {value:.1f}")
    if record.get("encoder_frozen"):
        parts.append("(encoder frozen)")
    return "  ".join(parts)
