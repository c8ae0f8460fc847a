"""Importing other projects' U-Net checkpoints: read safely, detect, map keys, load strictly.

``unetzoo.create(name, checkpoint=path_or_state_dict, **options)`` is the front door; it calls
:func:`prepare_checkpoint` before building the model and :func:`load_converted` after::

    model = unetzoo.create("unet-classic", checkpoint="unet_carvana_scale0.5_epoch2.pth")

Supported formats (one module each; :func:`checkpoint_formats` lists them): bubbliiiing
``Unet`` VGG16 / ResNet50, milesial and WZMIAOMIAO ``UNet``, jvanvugt ``UNet`` (the paper's
network), qiaofengsheng's strided ``UNet`` — and unetzoo's own layout. Key maps live in this
package and only here.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pickle
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from unetzoo.convert.base import CheckpointFormat, ConvertedStateDict

if TYPE_CHECKING:
    from unetzoo.model import UnetZooModel
    from unetzoo.registry import ModelSpec

__all__ = [
    "CheckpointFormat",
    "checkpoint_formats",
    "checkpoint_name",
    "detect_format",
    "load_converted",
    "prepare_checkpoint",
    "read_checkpoint",
]

_FORMAT_MODULES = ("bubbliiiing", "milesial", "jvanvugt", "strided")
#: entries that wrap the weights in training checkpoints, tried in this order
_CONTAINER_KEYS = ("state_dict", "model_state_dict", "model", "net")
#: non-tensor entries some projects store next to the weights (milesial: the mask values)
_KNOWN_EXTRAS = frozenset({"mask_values"})
#: prefixes added by nn.DataParallel / DistributedDataParallel and torch.compile
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: harmless classes found in training checkpoints (WZMIAOMIAO stores its argparse arguments)
_SAFE_GLOBALS = [argparse.Namespace]
_SHOW = 5  # keys listed per kind of problem in error messages

Checkpoint = str | os.PathLike | Mapping[str, Any]


def _native_convert(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    head = state_dict.get("head.weight")
    inferred = {"num_classes": int(head.shape[0])} if head is not None and head.ndim == 4 else {}
    return ConvertedStateDict(state_dict, {k: k for k in state_dict}, "unetzoo"), inferred


_NATIVE = CheckpointFormat(
    name="unetzoo",
    description="unetzoo's own layout",
    signature=("head.weight",),
    model=None,
    convert=_native_convert,
)


def checkpoint_formats() -> list[CheckpointFormat]:
    """Every checkpoint format :func:`detect_format` knows, most specific first."""
    formats = []
    for name in _FORMAT_MODULES:
        formats.extend(importlib.import_module(f"unetzoo.convert.{name}").FORMATS)
    return [*formats, _NATIVE]


def checkpoint_name(checkpoint: Checkpoint) -> str:
    """How messages name a checkpoint: its path, or "the given state dict"."""
    return "the given state dict" if isinstance(checkpoint, Mapping) else str(checkpoint)


def _torch_load(path: Path) -> Any:
    try:
        with torch.serialization.safe_globals(_SAFE_GLOBALS):  # for this load only (torch >= 2.5)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        blocked = re.search(r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", str(err), re.IGNORECASE)
        if blocked is not None:  # os.system, subprocess, builtins.eval: torch refuses these outright
            raise ValueError(
                f"cannot read {path}: it would call {blocked[1]} while loading, code that can do anything on "
                "this machine (a malicious or tampered file). Nothing was run. Do not load it unless you know "
                "exactly where it came from"
            ) from None
        if found is None:
            raise ValueError(f"cannot read {path}: not a PyTorch checkpoint, or a damaged one") from None
        raise ValueError(
            f"cannot read {path} safely: it holds a pickled {found[1]} object, which would run code to load. "
            "unetzoo reads weights only. If you trust the file, re-save just its weights in a separate "
            "trusted session: obj = torch.load(path, weights_only=False), then "
            "torch.save(obj.state_dict(), 'weights.pth') for a whole pickled model, or for a training "
            "dict the entry that holds the weights, e.g. torch.save(obj['model'], 'weights.pth')"
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"cannot read {path} as a PyTorch checkpoint: {err}") from None


def _unwrap(obj: Any, source: str) -> dict[str, torch.Tensor]:
    while isinstance(obj, Mapping) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise ValueError(f"{source} holds a {type(obj).__name__}, not a state dict of tensors")
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor) and k not in _KNOWN_EXTRAS]
    if others:
        raise ValueError(
            f"{source} is not a state dict: it has non-tensor entries {others[:_SHOW]} and none of the "
            f"entries {list(_CONTAINER_KEYS)} that usually hold the weights"
        )
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{source} holds no tensors")
    # wrappers nest in either order (DDP around a compiled model, or compiled DDP)
    while prefix := next((p for p in _WRAPPER_PREFIXES if all(k.startswith(p) for k in state)), None):
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def read_checkpoint(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """Read a checkpoint (``.pth``/``.pt``/``.safetensors`` path, or a dict) as a flat state dict.

    ``.pth`` files are read with ``torch.load(weights_only=True)``: no code from the file runs.
    Training containers (``{"model": ...}``, ``{"state_dict": ...}``) are unwrapped, the
    ``module.`` prefix of DataParallel and ``_orig_mod.`` of torch.compile are removed, and
    known non-tensor extras (milesial's ``mask_values``) are dropped.

    Raises:
        FileNotFoundError: the path does not exist.
        ValueError: the file is not a readable, safe state dict (the message says why).
    """
    source = checkpoint_name(checkpoint)
    if isinstance(checkpoint, Mapping):
        return _unwrap(checkpoint, source)
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist (or is not a file)")
    if path.suffix == ".safetensors":
        from unetzoo.weights.local import read_safetensors

        return _unwrap(read_safetensors(path), source)
    return _unwrap(_torch_load(path), source)


def detect_format(state_dict: Mapping[str, torch.Tensor], *, source: str = "the checkpoint") -> CheckpointFormat:
    """The :class:`CheckpointFormat` whose signature keys ``state_dict`` has.

    Raises:
        ValueError: no known format matches; the message shows the first keys found.
    """
    formats = checkpoint_formats()
    for fmt in formats:
        if fmt.matches(state_dict):
            return fmt
    known = "; ".join(f"{f.description} (keys {', '.join(f.signature)})" for f in formats)
    raise ValueError(
        f"unknown checkpoint format in {source}: its first keys are {list(state_dict)[:_SHOW]}. "
        f"unetzoo imports: {known}"
    )


def prepare_checkpoint(
    spec: ModelSpec, checkpoint: Checkpoint, options: Mapping[str, Any] | None = None
) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Read ``checkpoint``, check that it belongs to ``spec``, map it to unetzoo's layout.

    Args:
        spec: the model the user asked for.
        checkpoint: a path or a state dict (see :func:`read_checkpoint`).
        options: the options the user passed; :func:`unetzoo.create` checks them against the
            inferred ones (a conflict raises there).

    Returns:
        The state dict in unetzoo's layout and the options inferred from its shapes.
    """
    source = checkpoint_name(checkpoint)
    state_dict = read_checkpoint(checkpoint)
    fmt = detect_format(state_dict, source=source)
    if fmt.model is not None and fmt.model != spec.name:
        raise ValueError(
            f"{source} is a {fmt.description} checkpoint, which unetzoo loads into {fmt.model!r}, not "
            f"{spec.name!r}: use unetzoo.create({fmt.model!r}, checkpoint=...) (unetzoo convert: leave out --model "
            f"or pass --model {fmt.model})"
        )
    converted, inferred = fmt.convert(state_dict)
    converted.preprocessing, converted.notes = fmt.preprocessing, fmt.notes
    if fmt.ask and not any(option in (options or {}) for option in fmt.ask):
        from unetzoo.factory import builder_options

        defaults = ", ".join(f"{k}={v!r}" for k, v in builder_options(spec).items() if k in fmt.ask)
        warnings.warn(f"{source} is a {fmt.description} checkpoint, loaded with {defaults} (the default): "
                      f"{fmt.notes}", UserWarning, stacklevel=3)
    return converted, inferred


def _describe(key: str, state_dict: Mapping[str, Any]) -> str:
    origin = getattr(state_dict, "origin", {}).get(key, key)
    return key if origin == key else f"{key} (checkpoint key {origin})"


def _problems(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [_describe(k, state_dict) for k in state_dict if k not in own]
    mismatched = [
        f"{_describe(k, state_dict)}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
        for k, v in state_dict.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    problems = []
    for what, keys in (
        ("missing keys (expected by the model, absent from the checkpoint)", missing),
        ("unexpected keys (in the checkpoint, unknown to the model)", unexpected),
        ("shape mismatches", mismatched),
    ):
        if keys:
            problems.append(f"{len(keys)} {what}, e.g. {keys[:_SHOW]}")
    return problems


def load_converted(
    model: UnetZooModel, state_dict: Mapping[str, torch.Tensor], *, source: Checkpoint | str = "the checkpoint"
) -> UnetZooModel:
    """Load a state dict in unetzoo's layout into ``model``, all or nothing.

    Every key and shape is checked before anything is copied, so a mismatch leaves the model
    untouched. BatchNorm ``num_batches_tracked`` counters may be absent (old checkpoints).

    Raises:
        ValueError: one message that names ``source`` and lists the first few missing,
            unexpected and mismatched keys.
    """
    problems = _problems(model, state_dict)
    if problems:
        config = getattr(model, "config", None)
        target = config.name if config is not None else type(model).__name__
        fmt = getattr(state_dict, "format", None)
        parts = [f"cannot load {checkpoint_name(source)}" + (f" ({fmt} format)" if fmt else "") + f" into {target}"]
        parts += problems
        parts.append("check that the checkpoint belongs to this model and options (unetzoo info NAME lists them)")
        if notes := getattr(state_dict, "notes", ""):
            parts.append(f"of these checkpoints: {notes}")
        raise ValueError("; ".join(parts))
    own = model.state_dict()
    full = {k: own[k] for k in own if k not in state_dict}  # only num_batches_tracked can be absent
    full.update(state_dict)
    model.load_state_dict(full, strict=True)
    return model
