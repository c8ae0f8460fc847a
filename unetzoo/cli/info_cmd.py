"""``unetzoo info NAME``: everything the registry knows about one model."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a model's encoder, channels, weights and options",
        description="Show what the registry knows about NAME: encoder source, feature channels and reductions, "
        "parameter count, pretrained weights (source, mean/std, license, metrics) and the architecture options "
        "with their defaults. Nothing is downloaded: the model is built on the meta device.",
    )
    p.add_argument("name", metavar="NAME", help="model name, optionally with a weights tag (unet-resnet50.tv2_in1k)")
    p.set_defaults(func=run)


def _join(values: Any) -> str:
    return ", ".join(str(v) for v in values) if values else "-"


def _weights_lines(w: Any, marker: str) -> list[str]:
    lines = [f"  {w.tag}{marker}: {w.source} {w.location}" + (f" (revision {w.revision})" if w.revision else "")]
    lines.append(f"      mean {_join(w.mean)}  std {_join(w.std)}  input {'x'.join(map(str, w.input_size))}")
    lines.append(f"      license {w.license}")
    if w.metrics:
        lines.append("      " + "  ".join(f"{k} {v}" for k, v in w.metrics.items()))
    if w.description:
        lines.append(f"      {w.description}")
    return lines


def format_info(name: str) -> str:
    """The text ``unetzoo info NAME`` prints."""
    from unetzoo.factory import model_info
    from unetzoo.registry import parse_name
    from unetzoo.weights.loader import resolve_weights

    info = model_info(name)
    spec = info.spec
    _, tag = parse_name(name)
    lines = [info.name + ("  (curated)" if info.curated else "")]
    if spec.description:
        lines.append(f"  {spec.description}")
    if spec.reference:
        lines.append(f"  reference: {spec.reference}")
    encoder = f"{info.encoder_source} {info.encoder_name}" if info.encoder_source else "own (built into the network)"
    lines += [
        f"encoder:     {encoder}",
        f"channels:    {_join(info.channels)}",
        f"reductions:  {_join(info.reductions)}",
        f"parameters:  {info.num_params:,} "
        f"(num_classes={info.options['num_classes']}, in_chans={info.options['in_chans']})",
        "weights:",
    ]
    shown = [w.tag for w in spec.weights]
    for w in spec.weights:
        marker = " (default)" if w.tag == spec.default_tag else ""
        lines += _weights_lines(w, marker + (" (selected)" if w.tag == tag else ""))
    if tag is not None and tag not in shown:
        lines += _weights_lines(resolve_weights(spec, tag), " (selected)")  # timm's tags too, as create takes
    elif not spec.weights:
        hint = f"; list timm's with: unetzoo list {info.name} --pretrained" if info.encoder_source == "timm" else ""
        lines.append(f"  none registered{hint}")
    lines.append("options (defaults):")
    lines += [f"  {k} = {v!r}" for k, v in sorted(info.options.items())]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from unetzoo.registry import UnknownModelError

    try:
        text = format_info(args.name)
    except (UnknownModelError, ValueError) as exc:
        print(f"unetzoo info: error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0
