"""``unetzoo eval MODEL_DIR --data ROOT``: metrics of a saved model on a data set."""

from __future__ import annotations

import argparse
import json
import sys

from unetzoo.cli.options import positive_int, precision_name


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "eval",
        help="compute the metrics of a saved model on a data set",
        description="Load MODEL_DIR (a save_pretrained folder, e.g. runs/demo/best, or a Hub id) and compute "
        "confusion-matrix metrics on whole images, with the model's recorded preprocessing. Images with a side "
        "above --tile use tiled inference (unetzoo.predict).",
    )
    p.add_argument("model", metavar="MODEL_DIR", help="folder written by save_pretrained, or a Hub repository id")
    p.add_argument("--data", default=None, help="data set root (or builtin:nuclei)")
    p.add_argument("--config", default=None, metavar="RUN/config.yaml",
                   help="score on a training run's own validation data, read as the run read it (its data "
                        "section: layout, label_map, binary, split); instead of --data and the options below")
    p.add_argument("--kind", choices=("folder", "voc", "drive"), default="folder", help="data layout")
    p.add_argument("--split", default=None,
                   help="voc: train/val (default val), drive: training/test (default test; the training split "
                        "with --holdout)")
    p.add_argument("--image-dir", default="images", help="folder layout: image sub-folder")
    p.add_argument("--mask-dir", default="masks", help="folder layout: mask sub-folder")
    p.add_argument("--ignore-index", type=int, default=255, help="mask label that is not counted")
    p.add_argument("--holdout", type=_holdout, default=None, metavar="FRACTION",
                   help="evaluate only the held-out part of a training split (val_fraction=FRACTION)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split (as in the training config)")
    p.add_argument("--tile", type=positive_int, default=1024,
                   help="images with a side above this are predicted in tiles of this size (default: 1024)")
    p.add_argument("--tta", action="store_true",
                   help="average the class probabilities over flips (4x slower), as predict --tta does")
    p.add_argument("--batch-size", type=positive_int, default=1, help="images per forward pass (default: 1)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--precision", "--dtype", type=precision_name, default="fp32", metavar="{fp32,bf16,fp16}",
                   help="autocast dtype (default: fp32); torch's names (float32, bfloat16, float16) work too")
    p.add_argument("--json", default=None, metavar="PATH", help="also write the metrics to this JSON file")
    p.set_defaults(func=run)


def _holdout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (e.g. 0.2, the fraction training held out), "
                                         f"got {value}")
    return value


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from unetzoo._atomic import atomic_path
    from unetzoo.data import DataError
    from unetzoo.train import ConfigError

    try:
        if (args.data is None) == (args.config is None):
            raise ValueError("give --data ROOT (a data set) or --config RUN/config.yaml (a run's validation data)")
        if args.split is not None and args.kind == "folder":  # it would be ignored
            raise ValueError(f"--split {args.split} applies to --kind voc or drive; for folder data score the "
                             "held-out part of a split with --holdout FRACTION (and --split-seed)")
        if args.json:  # found out now, not after the run
            target = Path(args.json)
            if target.is_dir():
                raise IsADirectoryError(f"--json {args.json} is a folder; give a file name, e.g. {target / 'eval.json'}")
            if not target.resolve().parent.is_dir():
                raise FileNotFoundError(f"--json {args.json}: the folder {target.parent} does not exist")
        _note_unapplied_reading(args)
        metrics, count = evaluate_saved(args)
    except (ConfigError, DataError, OSError, ValueError, TypeError, KeyError, RuntimeError) as err:
        print(f"unetzoo eval: error: {err}", file=sys.stderr)
        return 2
    data = args.data if args.config is None else f"the validation data of {args.config}"
    print(f"{args.model} on {count} image(s) of {data}:")
    width = max(len(k) for k in metrics)
    for key, value in metrics.items():
        shown = ", ".join(f"{v:.4f}" for v in value) if isinstance(value, list) else f"{value:.4f}"
        print(f"  {key:<{width}}  {shown}")
    if args.json:  # after the figures are shown: a failed write loses nothing
        from unetzoo.train.records import json_safe

        record = {"model": args.model, "data": args.data, "config": args.config, "images": count,
                  "metrics": {k: json_safe(v) for k, v in metrics.items()}}
        try:
            with atomic_path(args.json) as tmp:  # JSON has no NaN: a class absent from the data is null
                tmp.write_text(json.dumps(record, indent=2, allow_nan=False), encoding="utf-8")
        except OSError as err:
            print(f"unetzoo eval: error: cannot write {args.json}: {err}", file=sys.stderr)
            return 2
    return 0


def _note_unapplied_reading(args: argparse.Namespace) -> None:
    """Say so when the model's own run read its labels in a way --data does not (a label_map, a
    binary setting): its figures would be of other labels."""
    if args.config is not None:
        return
    from pathlib import Path

    import yaml

    run_config = Path(args.model).expanduser().parent / "config.yaml"
    try:
        data = (yaml.safe_load(run_config.read_text(encoding="utf-8")) or {}).get("data") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return
    unapplied = [f"{k}={data[k]}" for k in ("label_map", "binary") if data.get(k) is not None]
    if unapplied:
        print(f"note: {run_config} reads its labels with {', '.join(unapplied)}, which --data does not apply; "
              f"pass --config {run_config} to score the run's validation data as it read them", file=sys.stderr)


def evaluate_saved(args: argparse.Namespace) -> tuple[dict, int]:
    """Load the model and data named by ``args`` and return ``(metrics, number of images)``."""
    from unetzoo.train.config import DataSection, load_config
    from unetzoo.train.evaluate import evaluate_saved as evaluate_model

    if args.config is not None:
        section = load_config(args.config).data
        return evaluate_model(args.model, section, validation=True, device=args.device, precision=args.precision,
                              tile=args.tile, tta=args.tta, batch_size=args.batch_size)

    section = DataSection(kind=args.kind, root=args.data, image_dir=args.image_dir, mask_dir=args.mask_dir,
                          split=args.split, ignore_index=args.ignore_index, split_seed=args.split_seed)
    return evaluate_model(args.model, section, holdout=args.holdout, device=args.device, precision=args.precision,
                          tile=args.tile, tta=args.tta, batch_size=args.batch_size)
