"""Where pretrained weights come from, and the preprocessing they expect.

One small loader per source, tried in this order for a weights tag:

1. ``UNETZOO_WEIGHTS_DIR``: folder(s) searched first for the record's file name or
   ``<model>.<tag>.safetensors`` (:mod:`unetzoo.weights.local`);
2. the record's own source: the torch hub cache for torchvision files
   (:mod:`~unetzoo.weights.torch_cache`), the Hugging Face cache for timm weights
   (:mod:`~unetzoo.weights.timm_hub`), or an installed package (:mod:`~unetzoo.weights.package`);
   each downloads once where the network allows (:mod:`~unetzoo.weights.network`).

``pretrained=`` may also name a local ``.safetensors`` / ``.pth`` file or a folder.

    >>> model = unetzoo.create("unet-efficientnet_lite0", pretrained=True)   # works offline
    >>> pre = unetzoo.transforms_for(model)                                   # mean = std = 0.5
"""

from unetzoo.weights.loader import find_weights, load_encoder_weights, load_pretrained, resolve_weights
from unetzoo.weights.local import WEIGHTS_DIR_ENV, read_safetensors, read_state_dict
from unetzoo.weights.preprocessing import Preprocessing, transforms_for
from unetzoo.weights.search import WeightsNotFoundError
from unetzoo.weights.timm_hub import timm_weights_spec

__all__ = [
    "WEIGHTS_DIR_ENV",
    "Preprocessing",
    "WeightsNotFoundError",
    "find_weights",
    "load_encoder_weights",
    "load_pretrained",
    "read_safetensors",
    "read_state_dict",
    "resolve_weights",
    "timm_weights_spec",
    "transforms_for",
]
