"""``from_pretrained``: rebuild a saved model from its config and load its tensors strictly."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from unetzoo.hub.save import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME
from unetzoo.weights.network import hf_cache_dir, hf_endpoint, network_block_reason
from unetzoo.weights.preprocessing import Preprocessing

__all__ = ["read_config", "model_files", "from_pretrained"]


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and check a saved model's ``config.json``; errors name the file and the problem."""
    from unetzoo.registry import UnknownModelError, get_spec

    path = Path(path)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(config, dict) or "model_name" not in config or "model_args" not in config:
        raise ValueError(
            f"{path} is not a unetzoo config (no 'model_name'/'model_args'); save models with save_pretrained"
        )
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(
            f"{path} has no valid format_version (found {version!r}; unetzoo writes an integer, now "
            f"{FORMAT_VERSION}): it was edited or written by another tool. Re-save the model with "
            "save_pretrained, or restore config.json from where the model came from"
        )
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}, but this unetzoo reads format_version <= {FORMAT_VERSION}; "
            f"it was written by unetzoo {config.get('unetzoo_version', '?')}: upgrade with pip install -U unetzoo"
        )
    try:
        get_spec(config["model_name"])
    except UnknownModelError as err:
        raise UnknownModelError(
            f"{path} names the model {config['model_name']!r}, which this unetzoo does not know ({err}). "
            "It may need a newer unetzoo, or the package that registers that model"
        ) from None
    return config


def _hub_file(repo_id: str, filename: str, *, revision, token, cache_dir, local_files_only) -> Path:
    """One file of a Hub repository through the Hugging Face cache; errors say what to do."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    endpoint = hf_endpoint()
    cache = Path(cache_dir).expanduser() if cache_dir is not None else hf_cache_dir()
    blocked = "local_files_only=True" if local_files_only else network_block_reason(endpoint)
    kwargs = dict(revision=revision, token=token, cache_dir=cache, endpoint=endpoint)
    try:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=blocked is not None, **kwargs))
        except (EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError):
            raise  # answers about the repository itself (a gated one is a RepositoryNotFoundError)
        except Exception as err:  # noqa: BLE001 - a reset, a proxy's 502: the cache may still hold the file
            if blocked is not None:
                raise
            blocked = f"the download failed: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            return Path(hf_hub_download(repo_id, filename, local_files_only=True, **kwargs))
    except LocalEntryNotFoundError:
        raise FileNotFoundError(
            f"{repo_id}/{filename} (revision {revision or 'main'}) is not in the Hugging Face cache {cache}, and "
            f"{endpoint} cannot be used ({blocked or 'the download failed'}). Download it once with network, or "
            f"run `unetzoo pull {repo_id} DIR` where there is network and load DIR"
        ) from None
    except RevisionNotFoundError:
        raise FileNotFoundError(f"{repo_id} on {endpoint} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise FileNotFoundError(f"no repository {repo_id} on {endpoint} (a private one needs token=...)") from None
    except EntryNotFoundError:
        raise FileNotFoundError(f"{repo_id} on {endpoint} has no {filename}: not a unetzoo model repository") from None


def model_files(ref: str | os.PathLike, **hub_kwargs: Any) -> tuple[Path, Path]:
    """``(config.json, model.safetensors)`` of a local folder, or of a Hub repository (downloaded)."""
    path = Path(ref).expanduser()
    if path.is_file() and path.name in (CONFIG_NAME, WEIGHTS_NAME):
        path = path.parent
    elif path.is_file():
        raise FileNotFoundError(
            f"{path} is a file; from_pretrained takes a folder written by save_pretrained (config.json + "
            f"model.safetensors) or a Hub repository id. For a weights file, build the network and load it: "
            f"unetzoo.create(NAME, checkpoint='{path}'), or import it once with `unetzoo convert`"
        )
    if path.is_dir():
        files = path / CONFIG_NAME, path / WEIGHTS_NAME
        for f in files:
            if not f.is_file():
                raise FileNotFoundError(f"{f} is missing: {path} is not a folder written by save_pretrained")
        return files
    if not hub_kwargs:
        raise FileNotFoundError(f"{path} is not a folder written by save_pretrained")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(str(ref))
    except ValueError:
        raise FileNotFoundError(
            f"{str(ref)!r} is neither a local folder nor a Hub repository id ('org/name')"
        ) from None
    try:
        config = _hub_file(str(ref), CONFIG_NAME, **hub_kwargs)
        # the weights from the same commit as the config (a push between the two downloads would
        # otherwise pair one commit's config with another's weights): the snapshot folder is named
        # by the commit hash the revision resolved to
        return config, _hub_file(str(ref), WEIGHTS_NAME, **{**hub_kwargs, "revision": config.parent.name})
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{err} (there is no local folder {path} either)") from None


def _from_json(value: Any) -> Any:
    """JSON arrays back to the tuples the constructor arguments were (``decoder_channels``, ...)."""
    return tuple(_from_json(v) for v in value) if isinstance(value, list) else value


def _fit_output_layer(model, state: dict[str, torch.Tensor], saved: int, path: Path) -> dict[str, torch.Tensor]:
    """Swap tensors sized for ``saved`` classes (the output layer) for the model's fresh ones; warn which."""
    own = model.state_dict()
    reinit = [
        k
        for k, v in state.items()
        if k in own
        and v.ndim >= 1
        and v.shape[0] == saved
        and own[k].shape[0] == model.num_classes
        and v.shape[1:] == own[k].shape[1:]
    ]
    if reinit:
        warnings.warn(
            f"{path}: saved with num_classes={saved}, loaded with num_classes={model.num_classes}; "
            f"re-initialised {reinit}, every other tensor loaded",
            stacklevel=3,
        )
    return {**state, **{k: own[k] for k in reinit}}


#: create()'s and huggingface_hub's keywords, which are no model options
_NOT_MODEL_OPTIONS = frozenset({"pretrained", "checkpoint", "subfolder", "force_download", "resume_download",
                                "proxies", "local_dir", "repo_type", "endpoint"})


def from_pretrained(
    dir_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool = False,
    num_classes: int | None = None,
    **overrides: Any,
) -> torch.nn.Module:
    """Load a model saved with :func:`save_pretrained`, from a folder or a Hub repository.

    The architecture is rebuilt from ``config.json`` with ``pretrained=False`` (encoder weights
    are never downloaded) and every tensor is loaded strictly from ``model.safetensors``. A
    model saved in bfloat16 or float16 comes back in that dtype. It is returned in eval mode;
    :func:`unetzoo.transforms_for` gives its recorded preprocessing.

    Args:
        dir_or_repo_id: a local folder, or ``"org/name"`` on the Hub (``HF_ENDPOINT`` is honoured).
        revision, token, cache_dir, local_files_only: passed to ``huggingface_hub``.
        num_classes: a different number of classes: everything but the output layer is loaded,
            and a warning names the re-initialised tensors.
        **overrides: options that do not change parameter shapes (e.g. ``drop_path_rate``).

    Raises:
        FileNotFoundError: the folder/repository/file does not exist, or is not cached offline.
        ValueError: corrupt weights, a config from a newer unetzoo, or tensors that do not fit.
        UnknownModelError: the config names a model this unetzoo does not know.

    Example:
        >>> model = unetzoo.from_pretrained("org/unet-drive", num_classes=3)
    """
    import unetzoo
    from unetzoo.convert import load_converted
    from unetzoo.weights.local import read_safetensors

    not_options = sorted(set(overrides) & _NOT_MODEL_OPTIONS)
    if not_options:  # before any download
        raise TypeError(
            f"from_pretrained does not take {not_options}: it loads the saved weights (pretrained= and checkpoint= "
            "are create()'s), and of the Hub download settings it takes revision, token, cache_dir and "
            "local_files_only; for a repository subfolder, pull the repository and pass the folder's path"
        )
    hub_kwargs = dict(revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only)
    config_path, weights_path = model_files(dir_or_repo_id, **hub_kwargs)
    config = read_config(config_path)
    args = {**{k: _from_json(v) for k, v in config["model_args"].items()}, **overrides}
    saved = int(args["num_classes"])
    if num_classes is not None:
        args["num_classes"] = num_classes
    try:
        model = unetzoo.create(config["model_name"], pretrained=False, **args)
    except (TypeError, ValueError) as err:  # (an unknown model name is UnknownModelError, a KeyError)
        if overrides:
            raise type(err)(f"{err} (from_pretrained's override(s) {sorted(overrides)})") from None
        version = config.get("unetzoo_version")
        raise type(err)(
            f"{config_path} describes a model this unetzoo ({unetzoo.__version__}) cannot build: {err}"
            + (f". It was saved by unetzoo {version}; upgrade unetzoo to load it" if version else "")
        ) from None
    state = read_safetensors(weights_path)
    if num_classes is not None and num_classes != saved:
        state = _fit_output_layer(model, state, saved, weights_path)
    try:
        load_converted(model, state, source=str(weights_path))
    except ValueError as err:
        if overrides:
            raise ValueError(
                f"the override(s) {overrides} change the architecture, so {weights_path} no longer fits it: {err}. "
                "from_pretrained takes only options that keep the parameters' shapes (e.g. drop_path_rate); "
                "num_classes= replaces the output layer"
            ) from None
        raise ValueError(f"{weights_path} does not fit the model described by {config_path}: {err}") from None
    if isinstance(config.get("dtype"), str):  # saved in bfloat16/float16: back to it, bit for bit
        dtype = getattr(torch, config["dtype"], None)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"{config_path}: 'dtype' is {config['dtype']!r}, not a torch floating-point dtype")
        model.to(dtype)
    pre = config.get("preprocessing")
    model.preprocessing = Preprocessing.from_dict(pre) if pre else None
    model.pretrained_from = config.get("pretrained_from")
    return model.eval()
