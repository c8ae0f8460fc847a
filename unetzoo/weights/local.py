"""Weights on the local disk: safe readers and the ``UNETZOO_WEIGHTS_DIR`` search.

``.safetensors`` files are read with safetensors; ``.pth`` / ``.pt`` / ``.bin`` files through
:func:`unetzoo.convert.read_checkpoint`, i.e. only with ``torch.load(weights_only=True)``: a
pickle that would run code is refused, never executed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

__all__ = ["WEIGHTS_DIR_ENV", "read_safetensors", "read_state_dict", "weights_dirs", "find_file", "sha256_of"]

WEIGHTS_DIR_ENV = "UNETZOO_WEIGHTS_DIR"
SAFETENSORS_SUFFIXES = (".safetensors",)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Read a ``.safetensors`` file; a truncated or corrupt file raises ``ValueError`` naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ValueError(
            f"{path} is not a readable safetensors file ({err}); it may be truncated or corrupt: "
            "delete it and download or export it again"
        ) from err


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or (safely) from a PyTorch pickle.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is corrupt, not a state dict, or a pickle that needs code to load.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix in SAFETENSORS_SUFFIXES:
        return read_safetensors(path)
    from unetzoo.convert import read_checkpoint  # weights_only=True; refuses pickles that run code

    return read_checkpoint(path)


def weights_dirs() -> list[Path]:
    """The folders named by ``UNETZOO_WEIGHTS_DIR`` (``os.pathsep``-separated), in order."""
    value = os.environ.get(WEIGHTS_DIR_ENV, "")
    return [Path(p).expanduser() for p in value.split(os.pathsep) if p.strip()]


def find_file(folders: Iterable[Path], names: Iterable[str]) -> Path | None:
    """The first ``folder / name`` that exists, folders in order, then names in order."""
    names = [n for n in dict.fromkeys(names) if n]
    for folder in folders:
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def sha256_of(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
