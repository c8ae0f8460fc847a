"""milesial/Pytorch-UNet and WZMIAOMIAO pytorch_segmentation/unet -> ``unet-classic``.

Both projects build the same network (SEED_SYSTEMS.md §2, §3) under different keys:

=========================  ===================================  ==========================
unetzoo                    milesial                             WZMIAOMIAO
=========================  ===================================  ==========================
``encoder.0.block``        ``inc.double_conv``                  ``in_conv``
``encoder.i.block``        ``down{i}.maxpool_conv.1.double_conv``  ``down{i}.1``
``decoder.{i-1}.up``       ``up{i}.up`` (transposed only)       ``up{i}.up``
``decoder.{i-1}.block``    ``up{i}.conv.double_conv``           ``up{i}.conv``
``head``                   ``outc.conv``                        ``out_conv.0``
=========================  ===================================  ==========================

Inside a DoubleConv the sequential indices 0, 1, 3, 4 (conv, BN, -, conv, BN) become
``conv1.0``, ``conv1.1``, ``conv2.0``, ``conv2.1``. Every option is inferred from the shapes:
``num_classes``, ``in_chans``, ``base_c``, ``bilinear`` (no ``up.weight``) and ``bias`` (conv biases,
milesial v2.0). The ``mask_values`` entry of milesial's checkpoints is dropped when reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from unetzoo.convert.base import (
    SCALED_ONLY,
    CheckpointFormat,
    ConvertedStateDict,
    out_in_channels,
    rename_keys,
    rule,
)
from unetzoo.weights.preprocessing import Preprocessing

__all__ = ["FORMATS", "convert_milesial", "convert_wzmiaomiao", "infer_classic_options"]

#: WZMIAOMIAO's DRIVE statistics (its compute_mean_std.py over the DRIVE training images)
DRIVE_STATS = Preprocessing((0.709, 0.381, 0.224), (0.127, 0.079, 0.043))

_DOUBLE_CONV = {"0": "conv1.0", "1": "conv1.1", "3": "conv2.0", "4": "conv2.1"}
_PARAM = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _block(prefix: str, index: str, param: str) -> str | None:
    sub = _DOUBLE_CONV.get(index)
    return None if sub is None else f"{prefix}.block.{sub}.{param}"


def _up(i: str) -> str:
    return f"decoder.{int(i) - 1}"


_MILESIAL_RULES = (
    rule(rf"inc\.double_conv\.(\d)\.{_PARAM}", lambda m: _block("encoder.0", m[1], m[2])),
    rule(rf"down([1-4])\.maxpool_conv\.1\.double_conv\.(\d)\.{_PARAM}", lambda m: _block(f"encoder.{m[1]}", m[2], m[3])),
    rule(r"up([1-4])\.up\.(weight|bias)", lambda m: f"{_up(m[1])}.up.{m[2]}"),
    rule(rf"up([1-4])\.conv\.double_conv\.(\d)\.{_PARAM}", lambda m: _block(_up(m[1]), m[2], m[3])),
    rule(r"outc\.conv\.(weight|bias)", "head.{}"),
)
_WZMIAOMIAO_RULES = (
    rule(rf"in_conv\.(\d)\.{_PARAM}", lambda m: _block("encoder.0", m[1], m[2])),
    rule(rf"down([1-4])\.1\.(\d)\.{_PARAM}", lambda m: _block(f"encoder.{m[1]}", m[2], m[3])),
    rule(r"up([1-4])\.up\.(weight|bias)", lambda m: f"{_up(m[1])}.up.{m[2]}"),
    rule(rf"up([1-4])\.conv\.(\d)\.{_PARAM}", lambda m: _block(_up(m[1]), m[2], m[3])),
    rule(r"out_conv\.0\.(weight|bias)", "head.{}"),
)


def infer_classic_options(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """``unet-classic`` options read from a state dict in unetzoo's layout."""
    inferred: dict[str, Any] = {}
    stem = out_in_channels(state_dict, "encoder.0.block.conv1.0.weight")
    if stem is not None:
        inferred["base_c"], inferred["in_chans"] = stem
        inferred["bias"] = "encoder.0.block.conv1.0.bias" in state_dict
    head = out_in_channels(state_dict, "head.weight")
    if head is not None:
        inferred["num_classes"] = head[0]
    inferred["bilinear"] = "decoder.0.up.weight" not in state_dict
    return inferred


def convert_milesial(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a milesial/Pytorch-UNet ``UNet`` state dict onto ``unet-classic``."""
    converted = rename_keys(state_dict, _MILESIAL_RULES, "milesial")
    return converted, infer_classic_options(converted)


def convert_wzmiaomiao(state_dict: Mapping[str, torch.Tensor]) -> tuple[ConvertedStateDict, dict[str, Any]]:
    """Map a WZMIAOMIAO pytorch_segmentation ``UNet`` state dict onto ``unet-classic``."""
    converted = rename_keys(state_dict, _WZMIAOMIAO_RULES, "wzmiaomiao")
    return converted, infer_classic_options(converted)


FORMATS = (
    CheckpointFormat(
        name="milesial",
        description="milesial/Pytorch-UNet UNet",
        signature=("inc.double_conv.0.weight", "outc.conv.weight"),
        model="unet-classic",
        convert=convert_milesial,
        preprocessing=SCALED_ONLY,  # BasicDataset.preprocess: image / 255
    ),
    CheckpointFormat(
        name="wzmiaomiao",
        description="WZMIAOMIAO deep-learning-for-image-processing pytorch_segmentation UNet",
        signature=("in_conv.0.weight", "out_conv.0.weight"),
        model="unet-classic",
        convert=convert_wzmiaomiao,
        preprocessing=DRIVE_STATS,  # its train.py / predict.py (from its compute_mean_std.py)
    ),
)
