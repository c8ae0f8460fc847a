"""Network policy for every weights source: offline switches, one quick probe, one attempt.

Nothing here retries. Before any download the target host gets one TCP connection attempt
with a short timeout; when that fails (or an offline switch is set) the sources look only at
local caches, so a machine without network fails fast with one clear error instead of
hanging in retry loops.

Environment variables (read at call time, not at import):
    ``HF_HUB_OFFLINE`` / ``UNETZOO_OFFLINE``: never touch the network.
    ``HF_ENDPOINT``: the Hugging Face Hub (or mirror) to use.
    ``HF_HUB_CACHE`` / ``HF_HOME``: the Hugging Face cache.
    ``UNETZOO_NETWORK_TIMEOUT``: seconds for the probe and each download read (default 10).
"""

from __future__ import annotations

import hashlib
import os
import socket
import sys
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from unetzoo._atomic import atomic_path

__all__ = [
    "offline_reason",
    "hf_endpoint",
    "hf_cache_dir",
    "unreachable_reason",
    "network_block_reason",
    "download_url",
]

_OFFLINE_VARS = ("UNETZOO_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
_DEFAULT_ENDPOINT = "https://huggingface.co"


def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def timeout() -> float:
    return float(os.environ.get("UNETZOO_NETWORK_TIMEOUT", "10"))


def offline_reason() -> str | None:
    """Why the network must not be used (``"HF_HUB_OFFLINE=1"``), or ``None``."""
    for var in _OFFLINE_VARS:
        if _is_true(os.environ.get(var)):
            return f"{var}={os.environ[var]}"
    hf_constants = sys.modules.get("huggingface_hub.constants")
    if hf_constants is not None and getattr(hf_constants, "HF_HUB_OFFLINE", False):
        return "HF_HUB_OFFLINE was set when huggingface_hub was imported"
    return None


def hf_endpoint() -> str:
    """The Hub endpoint: ``HF_ENDPOINT`` as set now, else huggingface_hub's default."""
    env = os.environ.get("HF_ENDPOINT", "").strip()
    if env:
        return env.rstrip("/")
    hf_constants = sys.modules.get("huggingface_hub.constants")
    return getattr(hf_constants, "ENDPOINT", _DEFAULT_ENDPOINT).rstrip("/")


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache folder as the environment names it now, in huggingface_hub's
    order: ``HF_HUB_CACHE``, the older ``HUGGINGFACE_HUB_CACHE``, then ``HF_HOME/hub``."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.path.expandvars(os.environ[var])).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.environ["HF_HOME"])).expanduser() / "hub"
    import huggingface_hub.constants as hf_constants

    return Path(hf_constants.HF_HUB_CACHE)


def unreachable_reason(url: str) -> str | None:
    """One TCP connection attempt to the host of ``url`` (or to the proxy that the environment's
    ``HTTP(S)_PROXY`` names for it, as downloads would go); the failure as text, or ``None``."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return f"invalid URL {url!r}"
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        via = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if via.hostname:
            parts, host = via, via.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout()).close()
    except OSError as err:
        return f"cannot connect to {host}:{port} ({err.strerror or err})"
    return None


def network_block_reason(url: str) -> str | None:
    """Why ``url`` cannot be used now (offline switch or no connection), or ``None``."""
    return offline_reason() or unreachable_reason(url)


def download_url(url: str, dest: Path, *, sha256_prefix: str | None = None) -> Path:
    """Download ``url`` to ``dest`` in one attempt (temporary file, then an atomic rename).

    Raises:
        OSError: the download failed, or the file's SHA-256 does not start with ``sha256_prefix``.
    """
    digest = hashlib.sha256()
    with atomic_path(dest) as tmp:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout()) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
            found = digest.hexdigest()[:16]
            raise OSError(f"downloaded {url} but its SHA-256 {found}... does not match {sha256_prefix}")
    return dest
