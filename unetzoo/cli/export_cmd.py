"""``unetzoo export MODEL --format onnx|torchscript|exported-program --out PATH``."""

from __future__ import annotations

import argparse
import sys

from unetzoo.cli.options import model_option

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
    p.add_argument("--static", action="store_true", help="onnx / exported-program: fix batch/height/width to the example input's")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: the exporter's)")
    p.add_argument("--check", action="store_true",
                   help="ONNX: compare onnxruntime with PyTorch on two input shapes and print the max abs difference")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import re
    import warnings
    from pathlib import Path

    import torch

    from unetzoo.export import TORCHSCRIPT_DEPRECATED, export_example, export_model, load_model, onnx_max_abs_diff

    try:
        model = load_model(args.model, checkpoint=args.checkpoint, num_classes=args.num_classes,
                           in_chans=args.in_chans, **dict(args.option))
        out = Path(args.out) if args.out else Path(Path(args.model).name + _SUFFIX[args.format])
        with warnings.catch_warnings():  # said once below as a note, not as a Python warning
            warnings.filterwarnings("ignore", re.escape(TORCHSCRIPT_DEPRECATED), FutureWarning)
            path = export_model(model, out, format=args.format, dynamic=not args.static, opset=args.opset)
        shapes = "static" if args.static else "dynamic batch/height/width"
        print(f"wrote {path} ({args.format}" + (")" if args.format == "torchscript" else f", {shapes})"), flush=True)
        if args.format == "torchscript":
            print(f"note: {TORCHSCRIPT_DEPRECATED}", file=sys.stderr)
        if args.check and args.format == "onnx":
            x = export_example(model)
            inputs = [x] if args.static else [x[:1], torch.randn(3, x.shape[1], x.shape[2] + 16, x.shape[3] + 32)]
            print(f"onnxruntime vs PyTorch: max abs diff {onnx_max_abs_diff(path, model, inputs):.2e}")
    except (OSError, ValueError, TypeError, KeyError, ImportError) as err:  # unknown model, bad file, no onnx
        print(f"unetzoo export: error: {err}", file=sys.stderr)
        return 1
    return 0
