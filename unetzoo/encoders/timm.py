"""Encoders built from any timm backbone that supports ``features_only``.

Channels and reductions come from timm's ``feature_info``; nothing is typed by hand.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence

import timm
import torch
from torch import nn

from unetzoo.encoders.base import Encoder, backbone_keys

__all__ = ["TimmEncoder"]


class TimmEncoder(Encoder):
    """A timm ``features_only`` backbone.

    Args:
        name: timm model name (``"resnet34"``, ``"tf_efficientnet_lite0"``).
        in_chans: input channels; timm builds the first convolution accordingly.
        out_indices: which feature levels to tap (timm's default: all).
        **timm_kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).
    """

    def __init__(
        self,
        name: str,
        *,
        in_chans: int = 3,
        out_indices: Sequence[int] | None = None,
        **timm_kwargs,
    ) -> None:
        super().__init__()
        kwargs = dict(features_only=True, pretrained=False, in_chans=in_chans, **timm_kwargs)
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        try:
            self.model = timm.create_model(name, **kwargs)
        except RuntimeError as err:
            raise ValueError(f"timm backbone {name!r} cannot be used as a U-Net encoder: {err}") from err
        self.name = name
        self.in_chans = in_chans
        self.channels = tuple(self.model.feature_info.channels())
        self.reductions = tuple(self.model.feature_info.reduction())
        cfg = self.model.pretrained_cfg
        self.first_conv = cfg.get("first_conv") or ""
        # token models (ViT, Swin, ...) are built for one input size; say so instead of failing deep inside
        self.fixed_input_size = tuple(cfg["input_size"][-2:]) if cfg.get("fixed_input_size") else None
        self._channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")

    def stages(self) -> list[nn.Module]:
        """Group the backbone's modules into one stage per tapped feature.

        timm's ``FeatureListNet`` (ResNet, ConvNeXt, ...) names its tapped top-level modules in
        ``return_layers``. The other feature nets tap modules named in ``feature_info``: nested
        ones (``blocks.2`` in EfficientNet, MobileNetV3), ones inside the wrapped model of a
        ``FeatureGetterNet`` (ViT, LeViT, EfficientFormer), or points inside a block that a
        ``FeatureHookNet`` (Xception) flattened to ``blocks_2``. Their modules run in the order
        they are registered, so a stage is everything after the previous tap up to the module
        holding its own; parameters held by the model itself (a ViT's position embedding and
        class token) belong to the first stage. Backbones whose features do not form such a
        chain (HRNet, where every feature comes out of the last stage) stay one stage.
        """
        return_layers = getattr(self.model, "return_layers", None)
        if return_layers:
            return _group(self.model.named_children(), set(return_layers))
        taps = [info["module"] for info in self.model.feature_info.get_dicts()]
        root = self.model
        if type(root).__name__ == "FeatureGetterNet":  # the wrapped model's own names
            root = root.model
        stages = _group(_modules_down_to(root, taps), set(taps))
        if len(stages) != len(taps):
            return [self.model]
        loose = list(root.parameters(recurse=False))
        if loose:
            stages[0].insert(0, nn.ParameterList(loose))
        return stages

    def native_keys(self) -> frozenset[str] | None:
        return backbone_keys("timm", self.name)

    def native_to_local(self, state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
        """Map full-model keys (``stem.0.weight``) to timm's flattened feature-net keys.

        timm's ``FeatureListNet`` flattens one level of ``nn.Sequential`` (``stem.0`` becomes
        ``stem_0``) and drops everything after the last tapped module.
        """
        own = self.model.state_dict()
        children = {n for n, _ in self.model.named_children()}
        mapped, unused = {}, []
        for key, value in state_dict.items():
            parts = key.split(".")
            local = key
            if parts[0] not in children and len(parts) > 2 and f"{parts[0]}_{parts[1]}" in children:
                local = ".".join([f"{parts[0]}_{parts[1]}", *parts[2:]])
            for wrapped in (f"model.{key}", f"body.{key}"):  # hook-based wrappers keep the model whole,
                if local not in own and wrapped in own:  # as .model or (legacy_xception, nasnet) as .body
                    local = wrapped
            if local in own:
                mapped[f"model.{local}"] = value
            else:
                unused.append(key)
        return mapped, unused

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.fixed_input_size is not None and tuple(x.shape[-2:]) != self.fixed_input_size:
            h, w = self.fixed_input_size
            raise ValueError(
                f"the timm backbone {self.name!r} only accepts {h}x{w} inputs (timm fixed_input_size), got "
                f"{x.shape[-2]}x{x.shape[-1]}; resize the images, or run unetzoo.predict(model, image), "
                f"which takes any size in {h}x{w} tiles"
            )
        features = self.model(x)
        if self._channels_last_output:  # some timm backbones return NHWC features
            return [f.permute(0, 3, 1, 2) for f in features]
        return list(features)


def _group(named: Iterable[tuple[str, nn.Module]], taps: set[str]) -> list[nn.Module]:
    """Consecutive modules, cut after each one that is or holds a tapped name (modules after
    the last tap are unused). A name may be flattened (``blocks_2`` for ``blocks.2``)."""
    stages, current, pending = [], [], set(taps)
    for name, module in named:
        current.append(module)
        hit = {t for t in pending if _holds(name, t)}
        if hit:
            stages.append(nn.ModuleList(current))
            current = []
            pending -= hit
            if len(hit) > 1:  # two taps in one module: the stages would not match the features
                return []
    return stages


def _holds(name: str, tap: str) -> bool:
    """Whether the module called ``name`` is, or contains, the tapped module ``tap``."""
    flat = tap.replace(".", "_")
    return tap == name or tap.startswith(name + ".") or flat == name or flat.startswith(name + "_")


def _modules_down_to(module: nn.Module, taps: Sequence[str], prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """``module``'s children in order, with dotted names; a child that contains a tap (``blocks``
    for ``blocks.2``) is replaced by its own children, so that every tap is one item."""
    for name, child in module.named_children():
        qualified = prefix + name
        if qualified not in taps and any(t.startswith(qualified + ".") for t in taps):
            yield from _modules_down_to(child, taps, qualified + ".")
        else:
            yield qualified, child
