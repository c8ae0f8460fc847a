"""``save_pretrained``: ``model.safetensors`` + ``config.json`` + ``README.md``."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from unetzoo._atomic import atomic_paths
from unetzoo.hub.card import model_card
from unetzoo.weights.preprocessing import transforms_for

__all__ = ["FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "CARD_NAME", "model_config", "save_pretrained", "unwrap"]

#: bump when config.json changes incompatibly; readers refuse newer versions
FORMAT_VERSION = 1
CONFIG_NAME, WEIGHTS_NAME, CARD_NAME = "config.json", "model.safetensors", "README.md"


def model_config(model: torch.nn.Module) -> dict[str, Any]:
    """The ``config.json`` content for ``model``: enough to rebuild it with :func:`unetzoo.create`."""
    from unetzoo import __version__

    model = unwrap(model)
    if getattr(model, "config", None) is None:
        raise ValueError(f"{type(model).__name__} has no .config; build models with unetzoo.create() to save them")
    if getattr(model, "inference_options", None) is not None:
        raise ValueError(
            f"this {model.config.name} was optimized for inference ({_optimized(model.inference_options)}), so its "
            "tensors no longer fit its config: save the model before calling optimize_for_inference, and optimize "
            "the copy you load"
        )
    weights = getattr(model, "weights_spec", None)
    started = getattr(model, "pretrained_from", None)  # set by from_pretrained
    if weights is not None:
        # a local file's path means nothing elsewhere and may say too much: keep its name only
        location = Path(weights.location).name if weights.source == "file" else weights.location
        started = {"tag": weights.tag, "source": weights.source, "location": location, "license": weights.license}
    config = {
        "library_name": "unetzoo",
        "format_version": FORMAT_VERSION,
        "unetzoo_version": __version__,
        "model_name": model.config.name,
        "model_args": model.config.create_kwargs(),
        "pretrained_from": started,
        "preprocessing": transforms_for(model).to_dict(),
    }
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if len(dtypes) == 1 and (dtype := dtypes.pop()) != torch.float32:  # from_pretrained casts back to it
        config["dtype"] = str(dtype).removeprefix("torch.")
    return config


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module a ``torch.compile`` wrapper holds (its state_dict keys carry ``_orig_mod.``)."""
    return getattr(model, "_orig_mod", model)


def _optimized(options: dict[str, Any]) -> str:
    return (f"{options.get('folded_bn', 0)} batch norms folded into convolutions, "
            f"{options.get('mkldnn_convs', 0)} convolutions fused, {options.get('dtype')}")


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``state_dict`` as contiguous CPU tensors, copying any that share storage (safetensors needs that)."""
    out, seen = {}, set()
    for key, value in unwrap(model).state_dict().items():
        value = value.detach().to("cpu").contiguous()
        where = (value.untyped_storage().data_ptr(), value.storage_offset())
        out[key] = value.clone() if where in seen and value.numel() else value
        seen.add(where)
    return out


def save_pretrained(
    model: torch.nn.Module,
    save_directory: str | os.PathLike,
    *,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and a ``README.md`` model card to ``save_directory``.

    Args:
        model: a model built by :func:`unetzoo.create` or :func:`unetzoo.from_pretrained`.
        save_directory: created if needed; existing files of the same names are replaced.
        repo_id: shown in the card's title and usage snippet.
        license: Hub license id for the card (default: the pretrained weights' license, if known).
        datasets, metrics, tags: card metadata (``metrics`` maps names to values: a results table).

    Returns:
        The directory.

    Example:
        >>> model.save_pretrained("out/", datasets=["drive"], metrics={"dice": 0.81})
    """
    from safetensors.torch import save_file

    folder = Path(save_directory).expanduser()
    config = model_config(model)
    try:
        text = json.dumps(config, indent=2) + "\n"
    except TypeError as err:
        raise TypeError(f"{config['model_name']}: a constructor argument cannot be written to JSON ({err})") from err
    if license is None:  # the pretrained weights' license, also through a reload (config.json keeps it)
        known = (config.get("pretrained_from") or {}).get("license")
        license = known if known not in (None, "", "unknown") else None
    card = model_card(config, repo_id=repo_id, license=license, datasets=datasets, metrics=metrics, tags=tags)
    # the three files are written in full before any is replaced, so a failed save leaves an
    # earlier model in the folder whole; config.json is removed first and replaced last, so a
    # save killed between the renames leaves no config.json (not a model folder), never one
    # model's config beside another's weights. Other files in the folder are left alone.
    paths = [folder / WEIGHTS_NAME, folder / CARD_NAME, folder / CONFIG_NAME]
    with atomic_paths(paths) as (weights_tmp, card_tmp, config_tmp):
        save_file(_tensors(model), weights_tmp, metadata={"format": "pt", "unetzoo_model": config["model_name"]})
        card_tmp.write_text(card, encoding="utf-8")
        config_tmp.write_text(text, encoding="utf-8")
    return folder
