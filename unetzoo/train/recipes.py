"""Built-in training recipes (plain config mappings; ``configs/`` holds the same as YAML).

:data:`NUCLEI_DEMO` is what ``unetzoo demo`` (``make demo``) runs: unet-efficientnet_lite0 with
its offline ImageNet weights, fine-tuned on the 100 nuclei images shipped with the package,
20% held out. ``configs/nuclei_demo.yaml`` is the same recipe (a test keeps them equal), so
``unetzoo train --config configs/nuclei_demo.yaml`` reproduces the demo.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NUCLEI_DEMO"]

NUCLEI_DEMO: dict[str, Any] = {
    "model": {
        "name": "unet-efficientnet_lite0",
        "pretrained": True,
        "num_classes": 2,
        "in_chans": 3,
        "options": {"decoder_channels": [128, 64, 32, 16], "decoder_norm": "gn", "align_corners": False},
    },
    "data": {
        "kind": "folder",
        "root": "builtin:nuclei",
        "val_fraction": 0.2,
        "split_seed": 0,
        "transforms": {"size": 128, "scale": None, "hflip": 0.5, "vflip": 0.5},
    },
    # Dice and Lovász on the foreground only: better than ce+dice on all 5 splits tried, +0.005 IoU (README)
    "loss": {"name": "ce+0.5*dice+0.5*lovasz", "options": {"include_background": False}},
    "optimizer": {"name": "adamw", "lr": 0.004, "encoder_lr": 0.001, "weight_decay": 0.0001},
    "schedule": {"name": "cosine", "warmup_epochs": 1},
    "epochs": 16,
    "freeze_epochs": 2,
    "batch_size": 4,
    "precision": "auto",
    "channels_last": True,
    "output_dir": "runs/demo",
    "monitor": "fg_iou",
    "eval_every": 2,
    "overlays": 6,
    "plot_every": 8,  # curves and overlays after epochs 8 and 16 (each redraw takes about 2 s)
}
