"""``unetzoo list [PATTERN]``: the model names of the registry."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list",
        help="list model names (curated models are marked)",
        description="List registered model names: the curated models (tested, documented) first, then every "
        "'unet-<timm backbone>'. PATTERN is an fnmatch pattern; without wildcards it matches as a substring.",
        epilog="examples:\n  unetzoo list 'unet-res*'\n  unetzoo list efficientnet --pretrained\n"
        "  unetzoo list --curated",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("pattern", nargs="?", default="*", metavar="PATTERN", help="fnmatch pattern or substring")
    p.add_argument("--pretrained", action="store_true", help="list NAME.TAG for every known set of pretrained weights")
    p.add_argument("--curated", action="store_true", help="only the curated models")
    p.set_defaults(func=run)


def _pattern(text: str) -> str:
    text = text.lower()
    return text if any(c in text for c in "*?[") else f"*{text}*"


def run(args: argparse.Namespace) -> int:
    from unetzoo.registry import is_curated, list_models

    names = list_models(_pattern(args.pattern), pretrained=True if args.pretrained else None, curated_only=args.curated)
    if not names:
        print(f"no model matches {args.pattern!r}; try 'unetzoo list' for every name", file=sys.stderr)
        return 1
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  curated" if is_curated(name) else name)
    return 0
