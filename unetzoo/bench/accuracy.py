"""The accuracy column: one short fine-tune per backbone, same recipe for all, held-out IoU.

The recipe is unetzoo's own engine (:func:`unetzoo.train.fit`) on a real data set
(default: the 2018 Data Science Bowl nuclei, 100 grey 256x256 images, 20 % held out), random
initialisation for every backbone (pretrained weights are not available offline for most of
them, and the same start for all keeps the comparison about the architecture), 128 px crops,
AdamW with a cosine schedule, CE + Dice. The held-out foreground IoU of the final epoch is
reported, with the elapsed time.

:func:`accuracy_by_decoder_norm` runs the recipe once per decoder normalisation (none, the
default; BatchNorm; GroupNorm) and seed for every model that has the ``decoder_norm`` option, so
the columns come from one run on one machine.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "accuracy_by_decoder_norm",
    "accuracy_recipe",
    "default_data_root",
    "default_decoder_norm",
    "describe_recipe",
    "fine_tune_iou",
    "guarded_fine_tune",
    "takes_decoder_norm",
]


def default_data_root() -> Path | None:
    """``../shared/data/dsb2018-nuclei-256`` next to the checkout (or under ``$UNETZOO_SHARED``)."""
    shared = os.environ.get("UNETZOO_SHARED")
    base = Path(shared) if shared else Path(__file__).resolve().parents[2].parent / "shared"
    root = base / "data" / "dsb2018-nuclei-256"
    return root if root.is_dir() else None


def accuracy_recipe(
    model: str,
    data_root: str | Path,
    *,
    options: dict[str, Any] | None = None,
    epochs: int = 8,
    batch_size: int = 8,
    crop: int = 128,
    threads: int | None = 2,
    output_dir: str | Path = "runs/bench-accuracy",
    seed: int = 0,
) -> dict[str, Any]:
    """The fine-tuning config (a :class:`unetzoo.train.TrainConfig` mapping) for one backbone."""
    return {
        "model": {"name": model, "pretrained": False, "num_classes": 2, "in_chans": 3, "options": options or {}},
        "data": {
            "kind": "folder", "root": str(data_root), "val_fraction": 0.2, "split_seed": 0, "channels": 3,
            "transforms": {"size": crop, "scale": [0.75, 1.33], "hflip": 0.5, "vflip": 0.5},
        },
        "loss": {"name": "ce+dice"},
        "optimizer": {"name": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
        "schedule": {"name": "cosine", "warmup_epochs": 1},
        "epochs": epochs,
        "batch_size": batch_size,
        "precision": "auto",
        "threads": threads,
        "seed": seed,
        "output_dir": str(output_dir),
        "monitor": "fg_iou",
        "overlays": 0,
        "progress": False,
    }


def describe_recipe(config: dict[str, Any]) -> str:
    """One line naming what an :func:`accuracy_recipe` config trains with (for reports)."""
    data, opt, sched = config["data"], config["optimizer"], config["schedule"]
    init = "pretrained" if config["model"]["pretrained"] else "random init"
    epochs = config["epochs"]
    return (f"{init}, {epochs} epoch{'s' if epochs != 1 else ''} on {data['root']}, batch {config['batch_size']}, "
            f"{data['transforms']['size']} px crops (scale {'-'.join(f'{x:g}' for x in data['transforms']['scale'])}, "
            f"flips), {opt['name']} lr {opt['lr']:g} (weight decay "
            f"{opt['weight_decay']:g}), {sched['name']} schedule, loss {config['loss']['name']}, "
            f"{data['val_fraction']:.0%} held out (split seed {data['split_seed']}), precision {config['precision']}")


def fine_tune_iou(model: str, data_root: str | Path, **recipe: Any) -> dict[str, Any]:
    """Fine-tune ``model`` with :func:`accuracy_recipe` and return its held-out metrics."""
    from unetzoo.train import fit

    with tempfile.TemporaryDirectory(prefix="unetzoo-bench-") as tmp:
        recipe.setdefault("output_dir", Path(tmp) / model)
        result = fit(accuracy_recipe(model, data_root, **recipe))
    return {
        "name": model,
        "fg_iou": float(result.metrics["fg_iou"]),
        "miou": float(result.metrics["miou"]),
        "best_fg_iou": float(result.best_metrics.get("fg_iou", float("nan"))),
        "epochs": recipe.get("epochs", 8),
        "train_s": result.elapsed_s,
    }


def guarded_fine_tune(model: str, data_root: str | Path, **recipe: Any) -> dict[str, Any]:
    """:func:`fine_tune_iou`, with a failure recorded as the row's ``error`` instead of raised:
    one backbone that cannot train must not sink a run over many."""
    try:
        return fine_tune_iou(model, data_root, **recipe)
    except Exception as err:
        return {"name": model, "error": f"{type(err).__name__}: {err}"[:300]}


def _decoder_norm_option(model: str) -> tuple[bool, str]:
    from unetzoo.factory import builder_options
    from unetzoo.registry import get_spec

    options = builder_options(get_spec(model))
    return "decoder_norm" in options, options.get("decoder_norm") or "none"


def takes_decoder_norm(model: str) -> bool:
    """Whether ``model``'s builder has the ``decoder_norm`` option (the classic U-Nets do not)."""
    return _decoder_norm_option(model)[0]


def default_decoder_norm(model: str) -> str:
    """The decoder norm ``model`` is built with unless told otherwise (``"none"``: no norm layer)."""
    return _decoder_norm_option(model)[1]


def accuracy_by_decoder_norm(
    models: Iterable[str],
    data_root: str | Path,
    *,
    norms: Sequence[str] = ("none", "bn", "gn"),
    seeds: Sequence[int] = (0,),
    log: Callable[[str], None] | None = None,
    **recipe: Any,
) -> list[dict[str, Any]]:
    """One :func:`fine_tune_iou` row per model, decoder norm and seed, tagged ``decoder_norm``,
    ``seed`` and ``default`` (whether that norm is the one the model is built with).

    ``"none"`` is a decoder without norm layers, the ``unet-*`` models' default (the seed's
    decoder). A model without the option (``unet-classic``, ``unet-strided``) is trained as it is built,
    tagged ``"fixed"``. The seed sets the initial weights and the augmentation stream alike.
    ``recipe`` goes to :func:`accuracy_recipe` (``epochs``, ``threads``, ...); options given
    there are kept, with ``decoder_norm`` set on top.
    """
    base = dict(recipe.pop("options", None) or {})
    rows = []
    for model in models:
        takes, default = _decoder_norm_option(model)
        variants = list(norms) if takes else [None]
        for norm in variants:
            options = base if norm is None else {**base, "decoder_norm": norm}
            for seed in seeds:
                if log:
                    log(f"accuracy: fine-tuning {model} (decoder_norm={norm or 'as built'}, seed {seed}) "
                        f"on {data_root}")
                row = guarded_fine_tune(model, data_root, options=options, seed=seed, **recipe)
                row = {**row, "decoder_norm": norm or "fixed", "seed": seed, "default": norm in (None, default)}
                if log:
                    log(f"  -> {row}")
                rows.append(row)
    return rows
