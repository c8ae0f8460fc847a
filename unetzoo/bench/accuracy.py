"""The accuracy column: one short fine-tune per backbone, same recipe for all, held-out IoU.

The recipe is unetzoo's own engine (:func:`unetzoo.train.fit`) on a real data set
(default: the 2018 Data Science Bowl nuclei, 100 grey 256x256 images, 20 % held out), random
initialisation for every backbone (pretrained weights are not available offline for most of
them, and the same start for all keeps the comparison about the architecture), 128 px crops,
AdamW with a cosine schedule, CE + Dice. The held-out foreground IoU of the final epoch is
reported, with the elapsed time.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["accuracy_recipe", "fine_tune_iou", "default_data_root"]


def default_data_root() -> Path | None:
    """``../shared/data/dsb2018-nuclei-256`` next to the checkout (or under ``$UNETZOO_SHARED``)."""
    shared = os.environ.get("UNETZOO_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    root = base / "data" / "dsb2018-nuclei-256"
    return root if root.is_dir() else None


def accuracy_recipe(
    model: str,
    data_root: str | Path,
    *,
    options: dict[str, Any] | None = None,
    epochs: int = 8,
    batch_size: int = 8,
    crop: int = 128,
    threads: int | None = 2,
    output_dir: str | Path = "runs/bench-accuracy",
    seed: int = 0,
) -> dict[str, Any]:
    """The fine-tuning config (a :class:`unetzoo.train.TrainConfig` mapping) for one backbone."""
    return {
        "model": {"name": model, "pretrained": False, "num_classes": 2, "in_chans": 3, "options": options or {}},
        "data": {
            "kind": "folder", "root": str(data_root), "val_fraction": 0.2, "split_seed": 0, "channels": 3,
            "transforms": {"size": crop, "scale": [0.75, 1.33], "hflip": 0.5, "vflip": 0.5},
        },
        "loss": {"name": "ce+dice"},
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "epochs": epochs,
        "batch_size": batch_size,
        "precision": "auto",
        "threads": threads,
        "seed": seed,
        "output_dir": str(output_dir),
        "monitor": "fg_iou",
        "overlays": 0,
        "progress": False,
    }


def fine_tune_iou(model: str, data_root: str | Path, **recipe: Any) -> dict[str, Any]:
    """Fine-tune ``model`` with :func:`accuracy_recipe` and return its held-out metrics."""
    from unetzoo.train import fit

    with tempfile.TemporaryDirectory(prefix="unetzoo-bench-") as tmp:
        recipe.setdefault("output_dir", Path(tmp) / model)
        result = fit(accuracy_recipe(model, data_root, **recipe))
    return {
        "name": model,
        "fg_iou": float(result.metrics["fg_iou"]),
        "miou": float(result.metrics["miou"]),
        "best_fg_iou": float(result.best_metrics.get("fg_iou", float("nan"))),
        "epochs": recipe.get("epochs", 8),
        "train_s": result.elapsed_s,
    }
