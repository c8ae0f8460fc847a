"""What :func:`unetzoo.train.fit` returns: final metrics and where the run's files are."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unetzoo.train.checkpoint import BEST_NAME, STAGED_NAME, STATE_NAME
from unetzoo.train.records import CSV_NAME, JSONL_NAME

__all__ = ["CURVES_NAME", "OVERLAYS_NAME", "RUN_FILES", "FitResult"]

CURVES_NAME, OVERLAYS_NAME = "curves.png", "overlays.png"
# everything a run writes in its folder (what a fresh run sets aside: checkpoint.set_aside_run)
RUN_FILES = (STATE_NAME, "config.yaml", BEST_NAME, "last", STAGED_NAME, JSONL_NAME, CSV_NAME, CURVES_NAME,
             OVERLAYS_NAME)


@dataclass
class FitResult:
    """What a run produced.

    Attributes:
        metrics: validation metrics of the final model (last evaluated epoch).
        best_metrics: validation metrics of the best epoch (by ``config.monitor``).
        best_epoch: 1-based epoch of ``best/``.
        output_dir: the run folder; ``best_dir``, ``last_dir`` (``save_pretrained`` folders),
            ``state_path``, ``metrics_path`` (JSONL), ``csv_path``, ``curves_path`` and
            ``overlays_path`` lie in it.
        history: one record per epoch (also in ``metrics.jsonl``).
        elapsed_s: wall time of this call.
    """

    metrics: dict[str, Any]
    best_metrics: dict[str, Any]
    best_epoch: int
    output_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def best_dir(self) -> Path:
        return self.output_dir / "best"

    @property
    def last_dir(self) -> Path:
        return self.output_dir / "last"

    @property
    def state_path(self) -> Path:
        return self.output_dir / STATE_NAME

    @property
    def metrics_path(self) -> Path:
        return self.output_dir / JSONL_NAME

    @property
    def csv_path(self) -> Path:
        return self.output_dir / CSV_NAME

    @property
    def curves_path(self) -> Path:
        return self.output_dir / CURVES_NAME

    @property
    def overlays_path(self) -> Path:
        return self.output_dir / OVERLAYS_NAME
