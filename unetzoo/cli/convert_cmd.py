"""``unetzoo convert IN.pth OUT_DIR``: import another project's checkpoint, save it as a unetzoo model."""

from __future__ import annotations

import argparse
import sys

from unetzoo.cli.options import model_option


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert",
        help="import a checkpoint of another U-Net project and save it in unetzoo's format",
        description="Read IN (a .pth/.pt/.safetensors file of bubbliiiing/unet-pytorch, milesial/Pytorch-UNet, "
        "WZMIAOMIAO, jvanvugt/pytorch-unet or qiaofengsheng/pytorch-UNet) safely, detect its format, map its keys "
        "and write OUT_DIR (model.safetensors + config.json + README.md) for unetzoo.from_pretrained(OUT_DIR). "
        "Options the shapes reveal (num_classes, in_chans, base_c, bilinear) are inferred.",
    )
    p.add_argument("checkpoint", metavar="IN", help="the checkpoint file")
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to write (created if needed)")
    p.add_argument("--model", default=None, help="registry name (default: the model the detected format belongs to)")
    p.add_argument("--num-classes", type=int, default=None, help="check the number of classes")
    p.add_argument("--in-chans", type=int, default=None, help="check the number of input channels")
    p.add_argument(
        "-o",
        "--option",
        type=model_option,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="architecture option the checkpoint cannot reveal, e.g. decoder_act=None (bubbliiiing checkpoints "
        "from before Aug 2021) or sigmoid=False (qiaofengsheng's CrossEntropy version); repeatable",
    )
    p.set_defaults(func=run)


def _model_name(args: argparse.Namespace) -> str:
    if args.model:
        return args.model
    from unetzoo.convert import detect_format, read_checkpoint

    fmt = detect_format(read_checkpoint(args.checkpoint), source=args.checkpoint)
    if fmt.model is None:
        raise ValueError(f"{args.checkpoint} is in unetzoo's own layout, which fits many models: pass --model NAME")
    return fmt.model


def run(args: argparse.Namespace) -> int:
    import unetzoo

    options = dict(args.option)
    try:
        name = _model_name(args)
        model = unetzoo.create(
            name, checkpoint=args.checkpoint, num_classes=args.num_classes, in_chans=args.in_chans, **options
        )
        folder = model.save_pretrained(args.out_dir)
    except (OSError, ValueError, TypeError, KeyError) as err:
        print(f"unetzoo convert: error: {err}", file=sys.stderr)
        return 1
    config = model.config
    settings = ", ".join(f"{k}={v!r}" for k, v in config.create_kwargs().items())
    print(f"imported {args.checkpoint} as {config.name} ({model.num_parameters():,} parameters; {settings})")
    print(f"wrote {folder}; load it with unetzoo.from_pretrained({str(folder)!r})")
    return 0
