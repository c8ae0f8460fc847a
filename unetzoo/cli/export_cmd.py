"""``unetzoo export MODEL --format onnx|torchscript|exported-program --out PATH``."""

from __future__ import annotations

import argparse
import sys

from unetzoo.cli.options import model_option, positive_int

_SUFFIX = {"onnx": ".onnx", "torchscript": ".ts", "exported-program": ".pt2"}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a model to ONNX, TorchScript or a torch.export program (dynamic batch/height/width)",
        description="MODEL is a registry name (random weights unless --checkpoint is given) or a folder written "
        "by save_pretrained / unetzoo convert. The exported graph pads to the network's stride and crops back, so "
        "it accepts any batch size and image size the eager model accepts.",
    )
    p.add_argument("model", metavar="MODEL", help="registry name or saved-model folder")
    p.add_argument("--format", required=True, choices=sorted(_SUFFIX), help="output format")
    p.add_argument("--out", default=None, help="output file (default: <model><suffix> in the current folder)")
    p.add_argument("--checkpoint", default=None, help="whole-model checkpoint for a registry name")
    p.add_argument("--num-classes", type=int, default=None, help="output classes of a registry name's network")
    p.add_argument("--in-chans", type=int, default=None, help="input channels of a registry name's network")
    p.add_argument("-o", "--option", type=model_option, action="append", default=[], metavar="KEY=VALUE",
                   help="architecture option for a registry name (repeatable), e.g. base_c=8")
    p.add_argument("--static", action="store_true",
                   help="onnx / exported-program: fix batch/height/width to the example input's (--batch, --size)")
    p.add_argument("--batch", type=positive_int, default=None, help="batch of the example input (default: 2)")
    p.add_argument("--size", type=positive_int, nargs="+", default=None, metavar="SIDE",
                   help="height [width] of the example input (default: one the network runs that exercises its "
                        "padding); with --static, the only size the file takes")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--check", action="store_true",
                   help="ONNX: compare onnxruntime with PyTorch on two input shapes and print the max abs difference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import re
    import warnings
    from pathlib import Path

    import torch

    from unetzoo._modes import fixed_input_size
    from unetzoo.export import (
        TORCHSCRIPT_DEPRECATED,
        export_example,
        export_model,
        load_model,
        onnx_max_abs_diff,
    )

    try:
        if args.size is not None and len(args.size) > 2:
            raise ValueError(f"--size takes a side or height and width, got {len(args.size)} values")
        model = load_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                           in_chans=args.in_chans, **dict(args.option))
        out = Path(args.out) if args.out else Path(Path(args.model).name + _SUFFIX[args.format])
        x = export_example(model)
        if args.batch or args.size:
            h, w = (args.size * 2)[:2] if args.size else x.shape[-2:]
            x = torch.randn(args.batch or x.shape[0], x.shape[1], h, w)
        with warnings.catch_warnings():  # said once below as a note, not as a Python warning
            warnings.filterwarnings("ignore", re.escape(TORCHSCRIPT_DEPRECATED), FutureWarning)
            path = export_model(model, out, format=args.format, example=x, dynamic=not args.static,
                                opset=args.opset)
        shapes = f"static input {'x'.join(map(str, x.shape))}" if args.static else "dynamic batch/height/width"
        print(f"wrote {path} ({args.format}" + (")" if args.format == "torchscript" else f", {shapes})"), flush=True)
        if args.format == "torchscript":
            print(f"note: {TORCHSCRIPT_DEPRECATED}", file=sys.stderr)
        if args.check and args.format == "onnx":
            grow = (0, 0) if fixed_input_size(model) else (16, 32)  # a backbone of one input size keeps it
            inputs = [x] if args.static else [
                x[:1], torch.randn(3, x.shape[1], x.shape[2] + grow[0], x.shape[3] + grow[1])]
            print(f"onnxruntime vs PyTorch: max abs diff {onnx_max_abs_diff(path, model, inputs):.2e}")
    except (OSError, ValueError, TypeError, KeyError, ImportError) as err:  # unknown model, bad file, no onnx
        print(f"unetzoo export: error: {err}", file=sys.stderr)
        return 1
    return 0
