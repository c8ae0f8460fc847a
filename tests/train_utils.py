"""Tiny synthetic data and configs shared by the training tests (test_train, test_resume, test_ddp)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_blobs(root: Path, n: int = 12, size: int = 32, seed: int = 0) -> Path:
    """``n`` RGB images of noisy dark background with 1-3 bright discs, and their 0/255 masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), bool)
        for _ in range(rng.integers(1, 4)):
            cy, cx = rng.integers(4, size - 4, 2)
            mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(3, 7) ** 2
        image = rng.normal(40, 15, (size, size, 3)) + mask[..., None] * rng.uniform(120, 180, 3)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(root / "images" / f"img{i:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"img{i:03d}.png")
    return root


TINY: dict[str, Any] = {
    "model": {"name": "unet-classic", "num_classes": 2, "in_chans": 3,
              "options": {"base_c": 4, "bilinear": True}},
    "data": {"kind": "folder", "val_fraction": 0.25,
             "transforms": {"size": 32, "scale": None, "hflip": 0.5, "vflip": 0.5}},
    "loss": {"name": "ce+dice"},
    "optimizer": {"name": "adam", "lr": 0.01},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "epochs": 2,
    "batch_size": 3,
    "threads": 1,
    "progress": False,
    "monitor": "fg_iou",
    "overlays": 3,
    "plot_every": 100,  # plots only after the last epoch (matplotlib is the slow part of tiny runs)
}


def tiny_config(data_root: Path, output_dir: Path, **top: Any) -> dict[str, Any]:
    """The tiny recipe on ``data_root``, writing to ``output_dir``; ``top`` overrides top-level keys."""
    cfg = copy.deepcopy(TINY)
    cfg["data"]["root"] = str(data_root)
    cfg["output_dir"] = str(output_dir)
    cfg.update(top)
    return cfg
