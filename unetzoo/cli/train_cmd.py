"""``unetzoo train --config FILE [key=value ...]``: fine-tune a model (also under torchrun)."""

from __future__ import annotations

import argparse
import json
import os
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="fine-tune a model from a YAML config",
        description="Train as the YAML config says; key=value arguments override config keys "
        "(dotted, values parsed as YAML), e.g. `optimizer.lr=3e-4 epochs=20`. Under "
        "`torchrun --nproc_per_node=N -m unetzoo train ...` it runs DistributedDataParallel.",
    )
    p.add_argument("--config", "-c", default=None, help="YAML file (see configs/); default: built-in defaults")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. optimizer.lr=3e-4")
    p.add_argument("--output-dir", "-o", default=None, help="run folder (same as output_dir=...)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in the output folder after its last epoch; without --config, with the "
                   "config.yaml saved there (key=value still overrides, e.g. epochs=30 to train longer)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.set_defaults(func=run)


def _config_path(args: argparse.Namespace) -> str | None:
    """``--config``, or for ``--resume`` without one the ``config.yaml`` of the run being resumed,
    so that a plain ``-o RUN --resume`` continues the run as it was configured."""
    from unetzoo.train import ConfigError
    from unetzoo.train.config import apply_overrides

    if args.config is not None or not args.resume:
        return args.config
    out = args.output_dir or next((str(apply_overrides({}, [o])["output_dir"]) for o in reversed(args.overrides)
                                   if o.startswith("output_dir=")), None)
    if out is None:
        raise ConfigError("--resume without --config needs the run folder: unetzoo train -o RUN_DIR --resume")
    saved = os.path.join(os.path.expanduser(out), "config.yaml")
    if not os.path.isfile(saved):
        raise ConfigError(f"cannot resume {out}: it has no config.yaml (no run was started there); pass the run's "
                          "folder with -o, or its config with -c")
    return saved


def run(args: argparse.Namespace) -> int:
    import yaml

    from unetzoo.data import DataError
    from unetzoo.train import ConfigError, fit, load_config

    overrides = list(args.overrides)
    if args.output_dir:  # a path, not YAML: "exp #3" or 2024-06-01 stay the folder typed
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    if args.resume:
        overrides.append("resume=true")
    try:
        cfg = load_config(_config_path(args), overrides)
        if args.print_config:
            print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
            return 0
        result = fit(cfg)
    except (ConfigError, DataError, FileNotFoundError) as err:
        print(f"unetzoo train: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a full disk, a read-only output folder: the run's last committed epoch is kept
        print(f"unetzoo train: error: {err}; the last committed epoch is kept (continue with --resume once "
              "the output folder is writable)", file=sys.stderr)
        return 1
    except FloatingPointError as err:  # a diverged run: the message names the epoch and the fixes
        print(f"unetzoo train: error: {err}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun, rank 0 reports
    m = result.metrics
    if m:
        print(f"final: mIoU {m['miou']:.4f}  foreground IoU {m['fg_iou']:.4f}  Dice {m['dice']:.4f}  "
              f"pixel accuracy {m['pixel_accuracy']:.4f}  (best {cfg.monitor} at epoch {result.best_epoch})")
    print(f"outputs in {result.output_dir} ({result.elapsed_s:.0f} s)")
    return 0
