"""Argument types shared by several commands."""

from __future__ import annotations

import argparse
import ast
from typing import Any

__all__ = ["model_option"]


def model_option(text: str) -> tuple[str, Any]:
    """Parse ``KEY=VALUE``; the value is a Python literal (``None``, ``True``, ``32``, ``(0.3, 0.4)``)
    or, failing that, a string (``upsample=nearest``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE (e.g. base_c=8 or decoder_act=None), got {text!r}; here -o is --option, a model"
            " option, not the output (that is --out for export, the OUT_DIR argument for convert)"
        )
    try:
        return key, ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return key, raw
