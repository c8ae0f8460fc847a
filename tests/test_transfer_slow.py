"""Slow real-data runs: transfer learning pays off (horses) and the ISBI 2012 membranes recipe.

Run with ``make test-slow`` (``pytest -m slow``). The data lives in ../shared/data (or
``$UNETZOO_SHARED/data``) and is never shipped; without it these tests skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from train_utils import REPO

from unetzoo.train import fit, load_config

pytestmark = pytest.mark.slow

SHARED = Path(os.environ.get("UNETZOO_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
HORSES = SHARED / "data" / "weizmann-horse-160"
ISBI = SHARED / "data" / "isbi2012-membrane"
PAPER_PIXEL_ERROR = 0.0611  # Ronneberger et al. 2015, ISBI 2012 test set (SEED_SYSTEMS.md §4)


def _needs(folder: Path) -> None:
    if not (folder / "images").is_dir():
        pytest.skip(f"shared data set {folder} is absent (set UNETZOO_SHARED to the folder holding data/)")


def test_pretrained_encoder_beats_random_init_on_horses(tmp_path: Path) -> None:
    """Same recipe, same seed, same held-out 20%: only the encoder's initial weights differ."""
    _needs(HORSES)
    iou = {}
    for pretrained in (True, False):
        cfg = load_config(REPO / "configs" / "weizmann_horses.yaml", [
            f"data.root={HORSES}", f"model.pretrained={str(pretrained).lower()}",
            f"output_dir={tmp_path / f'pretrained_{pretrained}'}", "progress=false", "plot_every=100",
        ])
        iou[pretrained] = fit(cfg).metrics["fg_iou"]
    print(f"held-out horse IoU: ImageNet-pretrained {iou[True]:.4f}, random init {iou[False]:.4f}")
    assert iou[True] >= iou[False] + 0.05, iou


def test_isbi2012_membranes_recipe(tmp_path: Path) -> None:
    """The ISBI recipe trains to a sensible held-out pixel error (the paper: 0.0611 on the test set)."""
    _needs(ISBI)
    cfg = load_config(REPO / "configs" / "isbi2012_membranes.yaml", [
        f"data.root={ISBI}", f"output_dir={tmp_path}", "progress=false", "plot_every=100",
    ])
    result = fit(cfg)
    pixel_error = 1.0 - result.metrics["pixel_accuracy"]
    print(f"ISBI 2012 held-out pixel error {pixel_error:.4f} (paper, test set: {PAPER_PIXEL_ERROR})")
    # 20% of the held-out pixels are membrane: predicting 'interior' everywhere scores 0.20; the
    # recipe measured 0.090 (README), so 0.15 leaves room for run-to-run noise but not for a
    # model that learned nothing
    assert pixel_error < 0.15
