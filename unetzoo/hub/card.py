"""The ``README.md`` model card: Hub metadata header (via ``huggingface_hub.ModelCardData``) and usage."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["model_card", "retarget_card"]

_LOCAL = "path/to/this/folder"  # the usage snippet's stand-in for a folder saved without a repo_id


def _base_model(started: Mapping[str, Any] | None) -> str | None:
    """The Hub id of the timm weights the encoder started from, for the card's ``base_model``."""
    if not started or started.get("source") != "timm" or "://" in started.get("location", "://"):
        return None
    location = started["location"]
    return location if "/" in location else f"timm/{location}"


def _names(values, what: str) -> list[str]:
    """A list of names; a single string is one name (not its characters)."""
    if values is None or isinstance(values, str):
        return [values] if values else []
    if isinstance(values, Mapping) or not all(isinstance(v, str) for v in values):
        raise TypeError(f"{what} must be a string or a list of strings, got {values!r}")
    return list(values)


def _header(config: Mapping[str, Any], license, datasets, metrics, tags) -> str:
    from huggingface_hub import ModelCardData

    datasets, tags = _names(datasets, "datasets"), _names(tags, "tags")

    data = ModelCardData(
        library_name="unetzoo",
        pipeline_tag="image-segmentation",
        license=license,
        tags=list(dict.fromkeys(["unetzoo", "image-segmentation", "unet", "pytorch", *(tags or ())])),
        datasets=list(datasets) if datasets else None,
        metrics=list(metrics) if metrics else None,
        base_model=_base_model(config.get("pretrained_from")),
    )
    return f"---\n{data.to_yaml()}\n---\n"


def _results(metrics: Mapping[str, Any]) -> list[str]:
    rows = [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
    return ["", "## Results", "", "| metric | value |", "|---|---|", *rows]


def model_card(
    config: Mapping[str, Any],
    *,
    repo_id: str | None = None,
    license: str | None = None,
    datasets: Sequence[str] | None = None,
    metrics: Mapping[str, Any] | None = None,
    tags: Sequence[str] | None = None,
) -> str:
    """The text of ``README.md`` for a saved model described by ``config`` (the ``config.json`` dict)."""
    name, args, started = config["model_name"], config["model_args"], config.get("pretrained_from")
    pre = config["preprocessing"]
    where = repo_id or _LOCAL
    lines = [
        f"# {repo_id or name}",
        "",
        f"A `{name}` segmentation model ({args['num_classes']} classes, {args['in_chans']} input channels) "
        "saved with unetzoo, the U-Net segmentation model zoo.",
    ]
    if started:
        if started.get("source") == "file":  # a path on the machine that saved it: only its name means anything
            lines.append(f"Its encoder started from the weights file `{Path(started['location']).name}`.")
        else:
            lines.append(f"Its encoder started from the pretrained weights `{started['tag']}` ({started['location']}).")
    dtype = config.get("dtype")  # saved in bfloat16/float16: from_pretrained gives it back in that dtype
    usage = ["import unetzoo"] if not dtype else ["import torch", "import unetzoo"]
    usage += [
        f'model = unetzoo.from_pretrained("{where}")   # never downloads encoder weights',
        "preprocess = unetzoo.transforms_for(model)      # mean/std recorded in config.json",
    ]
    if dtype:
        usage.append(f"x = preprocess(image).unsqueeze(0).to(torch.{dtype})  # the weights are {dtype}")
        usage.append("logits = model(x)                               # image: uint8 or uint16 tensor (C, H, W)")
    else:
        usage.append("logits = model(preprocess(image).unsqueeze(0))  # image: uint8 or uint16 tensor (C, H, W)")
    lines += ["", "## Usage", "", "```python", *usage, "```", "",
              f"Preprocessing: scale to [0, 1], then normalise with mean {pre['mean']} and std {pre['std']}."]
    if dtype:
        lines.append(f"The weights are stored in {dtype}; `model.float()` gives a float32 model.")
    if metrics:
        lines += _results(metrics)
    return _header(config, license, datasets, metrics, tags) + "\n" + "\n".join(lines) + "\n"


def retarget_card(text: str, repo_id: str, model_name: str) -> str:
    """A card pointed at ``repo_id``: its title and usage snippet, written for a local folder
    (title = model name, usage from ``path/to/this/folder``) or for another repository, name
    ``repo_id``; metrics, datasets and everything else stay as they were."""
    found = re.search(r'unetzoo\.from_pretrained\("([^"\n]*)"\)', text)
    if found is None:  # not a card unetzoo wrote (edited by hand): leave it as it is
        return text
    old = found.group(1)
    text = text.replace(f'from_pretrained("{old}")', f'from_pretrained("{repo_id}")')
    return text.replace(f"\n# {model_name if old == _LOCAL else old}\n", f"\n# {repo_id}\n", 1)
