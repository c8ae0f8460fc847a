"""What every encoder provides to the decoders and to transfer learning."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["Encoder", "adapt_input_conv", "backbone_keys", "load_native_state_dict"]


class Encoder(nn.Module):
    """A backbone that returns a pyramid of features, shallowest first.

    Subclasses set:
        channels: channels of each feature.
        reductions: stride of each feature relative to the input (1, 2, 4, ...).
        first_conv: name, in the backbone's *native* key layout, of the first convolution
            (``"conv1"``, ``"features.0"``): the weight that ``in_chans`` adaptation rewrites;
            a tuple of names for stems with parallel input convolutions (RepVGG, MobileOne).
    """

    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    first_conv: str | tuple[str, ...]
    in_chans: int

    def stages(self) -> list[nn.Module]:
        """The modules that compute each feature, in order (stage ``i`` ends at feature ``i``).

        ``freeze_encoder(stages=k)`` freezes ``stages()[:k]``.
        """
        raise NotImplementedError

    def native_to_local(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Map a state dict in the backbone's native key layout to this module's keys.

        Returns the mapped dict and the native keys that have no place here (classifier,
        unused later stages), which callers report rather than silently drop.
        """
        own = self.state_dict()
        mapped, unused = {}, []
        for key, value in state_dict.items():
            if key in own:
                mapped[key] = value
            else:
                unused.append(key)
        return mapped, unused

    def native_keys(self) -> frozenset[str] | None:
        """Every key of the whole native backbone (classifier and unused stages included), or
        ``None`` if unknown. Weights with keys outside it belong to another backbone."""
        return None

    @property
    def output_stride(self) -> int:
        return max(self.reductions)


@functools.lru_cache(maxsize=32)
def backbone_keys(library: str, name: str) -> frozenset[str] | None:
    """The state-dict keys of the whole ``library`` (``"timm"`` / ``"torchvision"``) model
    ``name``, built on the meta device (no memory, no initialisation); ``None`` if it cannot be."""
    try:
        with torch.device("meta"):
            if library == "timm":
                import timm

                model = timm.create_model(name, pretrained=False)
            else:
                import torchvision

                model = torchvision.models.get_model(name, weights=None)
            return frozenset(model.state_dict())
    except Exception:  # noqa: BLE001 - an exotic constructor: the check is skipped, loading still works
        return None


def adapt_input_conv(weight: torch.Tensor, in_chans: int) -> torch.Tensor:
    """Adapt a pretrained first-conv kernel (out, 3, k, k) to ``in_chans`` input channels.

    One channel gets the sum of the RGB kernels (a grey image then gives the same response
    as the colour image it came from); ``N`` channels repeat the RGB kernels cyclically and
    scale them by ``3 / N`` so the activation magnitude stays the same.
    """
    if weight.ndim != 4:
        raise ValueError(f"expected a 4-d conv weight, got shape {tuple(weight.shape)}")
    src = weight.shape[1]
    if src == in_chans:
        return weight
    dtype = weight.dtype
    weight = weight.float()
    if in_chans == 1:
        out = weight.sum(dim=1, keepdim=True)
    else:
        reps = -(-in_chans // src)
        out = weight.repeat(1, reps, 1, 1)[:, :in_chans] * (src / in_chans)
    return out.to(dtype)


def load_native_state_dict(
    encoder: Encoder,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str = "state dict",
    ignore_unused: Sequence[str] = (),
) -> list[str]:
    """Load backbone weights given in the backbone's native key layout, strictly.

    The first convolution is adapted to ``encoder.in_chans``. Keys the encoder does not use
    (a classifier, stages past the last tapped feature) are returned; keys the encoder needs
    but the state dict lacks, or shapes that differ, raise one ``ValueError`` naming
    ``source`` and the first few offending keys.
    """
    state_dict = dict(state_dict)
    first = encoder.first_conv
    for name in (first,) if isinstance(first, str) else first:  # parallel stem convolutions: each one
        conv_key = f"{name}.weight"
        if name and conv_key in state_dict:
            state_dict[conv_key] = adapt_input_conv(state_dict[conv_key], encoder.in_chans)
    mapped, unused = encoder.native_to_local(state_dict)
    native = encoder.native_keys()
    foreign = sorted((k for k in unused if native is not None and k not in native),
                     key=lambda k: k.endswith("num_batches_tracked"))  # weights first in the message
    if foreign:  # e.g. resnet34 weights into resnet18: its extra blocks are no classifier to drop
        raise ValueError(
            f"cannot load encoder weights from {source} into {type(encoder).__name__}: {len(foreign)} keys that "
            f"this backbone does not have, e.g. {foreign[:5]}; the weights belong to another (e.g. deeper) "
            "backbone: pick the model that matches them"
        )
    own = encoder.state_dict()
    missing = [k for k in own if k not in mapped and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k}: expected {tuple(own[k].shape)}, found {tuple(v.shape)}"
        for k, v in mapped.items()
        if tuple(v.shape) != tuple(own[k].shape)
    ]
    if missing or mismatched:
        parts = [f"cannot load encoder weights from {source} into {type(encoder).__name__}"]
        if missing:
            parts.append(f"{len(missing)} missing keys, e.g. {missing[:5]}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatches, e.g. {mismatched[:5]}")
        if unused:
            parts.append(f"{len(unused)} keys not used by the encoder, e.g. {unused[:5]}")
        parts.append("check that the weights belong to this backbone")
        raise ValueError("; ".join(parts))
    encoder.load_state_dict(mapped, strict=False)
    return [k for k in unused if not any(k.startswith(p) for p in ignore_unused)]
