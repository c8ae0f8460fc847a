"""Argument types shared by several commands."""

from __future__ import annotations

import argparse
import ast
from typing import Any

__all__ = ["dtype_name", "fraction", "model_option", "non_negative_int", "precision_name", "positive_int"]


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


def positive_int(text: str) -> int:
    """An integer >= 1 (a tile size, a batch size)."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer >= 0 (an overlap in pixels)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def fraction(text: str) -> float:
    """A number from 0 to 1 (an opacity)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be from 0 to 1, got {value}")
    return value


#: both spellings of each autocast dtype: torch's names (predict's --dtype) and the training config's
#: short ones (eval's --precision); every command takes either
_DTYPES = {"float32": "fp32", "fp32": "fp32", "bfloat16": "bf16", "bf16": "bf16", "float16": "fp16", "fp16": "fp16"}


def precision_name(text: str) -> str:
    """An autocast dtype in the training config's spelling (``fp32``, ``bf16``, ``fp16``); torch's names
    (``float32``, ``bfloat16``, ``float16``) are taken too."""
    short = _DTYPES.get(text.strip().lower())
    if short is None:
        raise argparse.ArgumentTypeError(
            f"unknown dtype {text!r}; choose fp32, bf16 or fp16 (or float32, bfloat16, float16)")
    return short


def dtype_name(text: str) -> str:
    """An autocast dtype as torch names it (``float32``, ``bfloat16``, ``float16``); the training config's
    short names (``fp32``, ``bf16``, ``fp16``) are taken too."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}[precision_name(text)]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
