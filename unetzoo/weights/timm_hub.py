"""timm weights: records built from timm's pretrained configs, files from the Hugging Face Hub.

A timm weights location is ``"<arch>.<tag>"`` (the repository ``timm/<arch>.<tag>``, as timm
publishes them), a full repository id ``"org/name"``, or a URL for the few timm tags that
are not on the Hub. Files go through ``huggingface_hub.hf_hub_download`` and its cache; the
endpoint and cache are read from the environment at call time, and when the network is off or
unreachable only the cache is consulted.
"""

from __future__ import annotations

from pathlib import Path

from unetzoo.registry import WeightsSpec
from unetzoo.weights.network import hf_cache_dir, hf_endpoint, network_block_reason
from unetzoo.weights.search import Search

__all__ = ["timm_weights_spec", "fetch_timm", "timm_repo_id"]

_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # timm's own order of preference


def _pretrained_cfg(timm_name: str, tag: str | None):
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(timm_name):
        raise ValueError(f"timm has no model named {timm_name!r}")
    name = timm_name if tag is None else f"{timm_name}.{tag}"
    try:
        cfg = get_pretrained_cfg(name)
    except RuntimeError:
        cfg = None
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        known = ", ".join(n.split(".", 1)[1] for n in timm.list_pretrained(f"{timm_name}.*")) or "none"
        raise ValueError(f"timm has no pretrained weights {name!r}; tags timm knows for {timm_name}: {known}")
    return cfg


def timm_weights_spec(timm_name: str, tag: str | None = None) -> WeightsSpec:
    """A :class:`WeightsSpec` for timm's weights ``<timm_name>.<tag>`` (``None``: timm's default tag).

    Mean, std, input size and license come from timm's pretrained config.

    Raises:
        ValueError: timm knows no such model or tag (the message lists the known tags).

    Example:
        >>> timm_weights_spec("resnet18", "tv_in1k").license
        'bsd-3-clause'
    """
    cfg = _pretrained_cfg(timm_name, tag)
    if cfg.hf_hub_id:
        location = cfg.hf_hub_id.removeprefix("timm/")
    else:
        location = cfg.url
    return WeightsSpec(
        tag=cfg.tag or tag or "",
        source="timm",
        location=location,
        filename=cfg.hf_hub_filename or None,
        mean=tuple(cfg.mean),
        std=tuple(cfg.std),
        input_size=tuple(cfg.input_size),
        license=cfg.license or "unknown",
        description=f"timm weights {timm_name}.{cfg.tag}" + (f": {cfg.description}" if cfg.description else ""),
    )


def timm_repo_id(location: str) -> str:
    """``"resnet50.a1_in1k"`` -> ``"timm/resnet50.a1_in1k"``; full ids are returned as they are."""
    return location if "/" in location else f"timm/{location}"


def fetch_timm(search: Search) -> Path | None:
    """Find the timm weights of ``search.weights``: the Hugging Face cache first (a cached file
    needs no network, and a failing one must not hide it), then one download."""
    from huggingface_hub import hf_hub_download, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    weights = search.weights
    if weights.location.startswith(("http://", "https://")):
        from unetzoo.weights.torch_cache import fetch_url

        return fetch_url(weights.location, weights.filename or weights.location.rsplit("/", 1)[-1], search)
    repo, endpoint, cache = timm_repo_id(weights.location), hf_endpoint(), hf_cache_dir()
    search.hint(f"download once with network (cached in {cache}; HF_HOME moves it), or set HF_ENDPOINT to a mirror")
    filenames = [weights.filename] if weights.filename else list(_HUB_FILES)

    def download(filename: str, offline: bool) -> Path:
        return Path(hf_hub_download(repo, filename, revision=weights.revision, cache_dir=cache, endpoint=endpoint,
                                    local_files_only=offline))

    for filename in filenames:  # the disk only: no connection (a network probe can wait seconds)
        cached = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=weights.revision)
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached)
    search.tried(f"Hugging Face cache {cache}", f"no {repo} file ({' or '.join(filenames)})")
    blocked = network_block_reason(endpoint)
    if blocked:
        search.tried(f"download from {endpoint}/{repo}", f"skipped ({blocked})")
        return None
    for filename in filenames:
        try:
            return download(filename, offline=False)
        except LocalEntryNotFoundError as err:  # the client could not reach the server
            search.tried(f"{endpoint}/{repo}", f"failed ({str(err).splitlines()[0]})")
            break
        except EntryNotFoundError:
            search.tried(f"{endpoint}/{repo}", f"has no {filename}")
        except Exception as err:  # noqa: BLE001 - HTTP errors, resets, proxies: reported with the other places
            search.tried(f"{endpoint}/{repo}", f"failed ({type(err).__name__}: {str(err).splitlines()[0]})")
            break
    return None
