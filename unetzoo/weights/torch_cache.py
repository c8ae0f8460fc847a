"""Weights published as plain URLs (torchvision, some timm tags): the torch hub cache first.

A file is looked up in ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub/checkpoints``,
where torchvision itself caches it) before any download; a download is one attempt and is
checked against the SHA-256 prefix in the file name, as torch.hub does.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from unetzoo.weights.network import download_url, network_block_reason
from unetzoo.weights.search import Search

__all__ = ["torch_cache_dir", "fetch_url", "fetch_torchvision", "torchvision_url"]

_HASH_IN_NAME = re.compile(r"-([a-f0-9]{8,})\.")


def torch_cache_dir() -> Path:
    """``torch.hub.get_dir()/checkpoints``: where torch and torchvision cache weight files."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def torchvision_url(location: str) -> str:
    """The download URL of a torchvision weights enum such as ``"ResNet50_Weights.IMAGENET1K_V1"``."""
    import torchvision

    try:
        return torchvision.models.get_weight(location).url
    except (ValueError, KeyError, AttributeError) as err:
        raise ValueError(f"unknown torchvision weights {location!r}: {err}") from err


def fetch_url(url: str, filename: str, search: Search) -> Path | None:
    """The cached copy of ``url`` in the torch hub cache, downloading it once if allowed."""
    cache = torch_cache_dir()
    path = cache / filename
    if path.is_file():
        return path
    search.tried(f"torch hub cache {path}", "not there")
    search.hint(f"copy {filename} into {cache} (the torch hub cache; TORCH_HOME moves it)")
    blocked = network_block_reason(url)
    if blocked:
        search.tried(f"download {url}", f"skipped ({blocked})")
        return None
    match = _HASH_IN_NAME.search(filename)
    try:
        return download_url(url, path, sha256_prefix=match.group(1) if match else None)
    except OSError as err:
        search.tried(f"download {url}", f"failed ({err})")
        return None


def fetch_torchvision(search: Search) -> Path | None:
    """Find the torchvision weights of ``search.weights`` (location: a weights enum name)."""
    url = torchvision_url(search.weights.location)
    return fetch_url(url, search.weights.filename or url.rsplit("/", 1)[-1], search)
