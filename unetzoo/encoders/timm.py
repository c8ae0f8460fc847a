"""Encoders built from any timm backbone that supports ``features_only``.

Channels and reductions come from timm's ``feature_info``; nothing is typed by hand.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence

import timm
import torch
from torch import nn

from unetzoo._modes import evaluating
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
        except (TypeError, IndexError) as err:
            raise _option_error(name, in_chans, out_indices, timm_kwargs, err) from err
        self.name = name
        self.in_chans = in_chans
        self.channels = tuple(self.model.feature_info.channels())
        self.reductions = tuple(self.model.feature_info.reduction())
        cfg = self.model.pretrained_cfg
        first_conv = cfg.get("first_conv") or ""
        self.first_conv = first_conv if isinstance(first_conv, str) else tuple(first_conv)
        # token models (ViT, Swin, ...) are built for one input size; say so instead of failing deep inside
        self.fixed_input_size = tuple(cfg["input_size"][-2:]) if cfg.get("fixed_input_size") else None
        self._channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).endswith("NHWC")
        # inputs are padded to a multiple of this: the output stride, or more where a layer needs it
        self.pad_multiple = (self.output_stride if self.fixed_input_size
                             else _pad_multiple(self.model, self.output_stride, name, kwargs, cfg))
        self._dataflow: list[list[tuple[str, str | None]]] | None = None  # stages by name (_dataflow_stages)

    def stages(self) -> list[nn.Module]:
        """Group the backbone's modules into one stage per tapped feature: stage ``i`` is what
        feature ``i`` needs and no earlier feature does.

        timm's ``FeatureListNet`` (ResNet, ConvNeXt, ...) runs its top-level modules in order
        and names the tapped ones in ``return_layers``: a stage is everything after the
        previous tap up to its own. For the other feature nets (EfficientNet's and
        MobileNetV3's ``blocks.N`` taps, a ``FeatureGetterNet`` around a ViT, the hook-based
        Xception, NASNet, PNASNet and PiT, HRNet) registration order need not be the order the
        modules run in, so the stages come from the data flow (:func:`_dataflow_stages`, one
        probe pass, computed once per encoder): a block's shortcut and the layers after a tap
        belong to the next stage, and a ViT's class token and position embedding to the first.
        Where the probe cannot run, registration order decides; a backbone whose taps then do
        not cut its modules into a chain stays one stage.
        """
        return_layers = getattr(self.model, "return_layers", None)
        if return_layers:  # FeatureListNet: its children run in order; their names are the taps
            stages = _group(self.model.named_children(), set(return_layers), exact=True)
            return stages if len(stages) == len(self.channels) else [self.model]
        # the other feature nets (timm's own feature classes, FeatureGetterNet, FeatureHookNet):
        # registration order need not be the order the modules run in (CoaT-Lite registers every
        # patch embedding first), nor must a stage's modules be consecutive, so the data flow decides
        if self._dataflow is None:
            try:
                self._dataflow = _dataflow_stages(self, self._probe_size())
            except Exception:  # noqa: BLE001 - a backbone the probe cannot run: by registration order
                self._dataflow = []
        if len(self._dataflow) == len(self.channels):
            return [_stage_modules(self.model, entries) for entries in self._dataflow]
        return self._registered_stages()

    def _registered_stages(self) -> list[nn.Module]:
        """Stages by registration order: everything after the previous tap up to the module holding
        the next one, parameters held by the model itself in the first; one stage if the taps do
        not cut the modules into a chain."""
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

    def _probe_size(self) -> tuple[int, int]:
        """An input size the backbone takes: its fixed size, else a few times its stride (big
        enough for the unpadded stems of NASNet and legacy Xception)."""
        if self.fixed_input_size is not None:
            return self.fixed_input_size
        side = max(4 * self.output_stride, 128)
        side = -(-side // self.pad_multiple) * self.pad_multiple  # halo attention needs more
        return side, side

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


def _pad_multiple(model: nn.Module, stride: int, name: str, kwargs: dict, cfg: Mapping) -> int:
    """The output ``stride``, or its least common multiple with what halo attention needs.

    timm's ``HaloAttn`` (HaloNet, ``*_halonext*``, ``haloregnetz``) splits its input into
    ``block_size`` blocks, so its input's height and width must be multiples of it: at stride
    ``s`` the image must be a multiple of ``s * block_size`` (256 for ``halonet_h1``), more than
    the output stride. The strides are found by one pass of a throwaway copy on the meta device
    (no memory, no arithmetic) at the backbone's default size.
    """
    if not any(type(m).__name__ == "HaloAttn" for m in model.modules()):
        return stride
    with torch.device("meta"):
        meta = timm.create_model(name, **kwargs)
    side = int(cfg.get("input_size", (3, 256, 256))[-1])
    seen: list[tuple[int, int]] = []  # (input width, block size) of each HaloAttn
    for m in meta.modules():
        if type(m).__name__ == "HaloAttn":
            m.register_forward_pre_hook(lambda m, args: seen.append((args[0].shape[-1], m.block_size)))
    meta(torch.empty(1, kwargs.get("in_chans", 3), side, side, device="meta"))
    return math.lcm(stride, *(side // width * block for width, block in seen))


def _option_error(name: str, in_chans: int, out_indices, timm_kwargs: dict, err: Exception) -> ValueError:
    """What a timm backbone refused: feature levels past its last, or an option it does not take."""
    if out_indices is not None:
        try:
            with torch.device("meta"):
                levels = len(timm.create_model(name, features_only=True, pretrained=False, in_chans=in_chans).feature_info)
        except Exception:  # noqa: BLE001 - the original error is the one to report
            levels = None
        else:
            if any(not -levels <= i < levels for i in out_indices):
                return ValueError(
                    f"out_indices={list(out_indices)} is out of range: timm backbone {name!r} has {levels} feature "
                    f"levels, so each index must be within 0..{levels - 1}"
                )
    if timm_kwargs:
        return ValueError(
            f"timm backbone {name!r} does not take the option(s) {sorted(timm_kwargs)} ({err}); drop them"
        )
    return ValueError(f"timm backbone {name!r} cannot be used as a U-Net encoder: {err}")


def _group(named: Iterable[tuple[str, nn.Module]], taps: set[str], exact: bool = False) -> list[nn.Module]:
    """Consecutive modules, cut after each one that is or holds a tapped name (modules after
    the last tap are unused). A name may be flattened (``blocks_2`` for ``blocks.2``), unless
    ``exact`` (FeatureListNet's ``return_layers`` name its children exactly: ``repeat`` does
    not hold ``repeat_1`` there)."""
    stages, current, pending = [], [], set(taps)
    for name, module in named:
        current.append(module)
        hit = {t for t in pending if (t == name if exact else _holds(name, t))}
        if hit:
            stages.append(nn.ModuleList(current))
            current = []
            pending -= hit
            if len(hit) > 1:  # two taps in one module: the stages would not match the features
                return []
    return stages


def _dataflow_stages(encoder: TimmEncoder, size: tuple[int, int]) -> list[list[tuple[str, str | None]]]:
    """Stage ``i``: the modules that feature ``i`` needs and no earlier feature does.

    One forward pass of a zero image (no random numbers drawn; norms in eval mode, so their
    running statistics do not move; on the meta device when the weights are there) records
    the output of each module a stage holds whole (:func:`_units`). Walking the autograd graph
    back from each feature finds the outputs and parameters it depends on. The input and every parameter require grad during
    the pass, so the graph reaches every module, frozen or not. Modules no feature needs are in
    no stage.

    Returns, per stage, ``(name, None)`` for a whole module of ``encoder.model`` and
    ``(name, parameter)`` for a parameter a container holds itself (a position embedding),
    each in the stage of the first feature that needs it.
    Names rather than modules, so that the answer survives ``to_empty`` and
    ``load_state_dict(assign=True)``, which replace parameters.
    """
    named = list(encoder.model.named_modules())
    units = _units(named)
    outputs: dict[str, list] = {}

    def recorder(name):
        def record(_module, _inputs, output):
            tensors = output if isinstance(output, (tuple, list)) else (output,)
            outputs.setdefault(name, []).extend(
                t.grad_fn for t in tensors if isinstance(t, torch.Tensor) and t.grad_fn is not None)
        return record

    device = next(encoder.parameters()).device
    grads = {p: p.requires_grad for p in encoder.parameters()}
    handles = [m.register_forward_hook(recorder(name)) for name, m in named if name in units]
    try:
        encoder.requires_grad_(True)  # frozen weights too: their AccumulateGrad nodes name them
        with evaluating(encoder), torch.inference_mode(False), torch.enable_grad():
            x = torch.zeros(1, encoder.in_chans, *size, device=device, requires_grad=True)
            features = encoder(x)
    finally:
        for h in handles:
            h.remove()
        for p, flag in grads.items():
            p.requires_grad_(flag)
    first: dict[object, int] = {}  # autograd node -> the first feature that needs it
    param_first: dict[int, int] = {}  # id(parameter) -> the first feature that needs it
    for i, feature in enumerate(features):
        stack = [feature.grad_fn]
        while stack:
            node = stack.pop()
            if node is None or node in first:
                continue
            first[node] = i
            variable = getattr(node, "variable", None)  # an AccumulateGrad node: a parameter
            if variable is not None:
                param_first.setdefault(id(variable), i)
            stack.extend(n for n, _ in node.next_functions)
    stages: list[list[tuple[str, str | None]]] = [[] for _ in features]
    for name, m in named:
        if name in units:  # whole, parameter-free ones too (dropout, pooling): by their output
            needed_by = [param_first[id(p)] for p in m.parameters(recurse=False) if id(p) in param_first]
            needed_by += [first[n] for n in outputs.get(name, ()) if n in first]
            if needed_by:
                stages[min(needed_by)].append((name, None))
            continue
        for pname, p in m.named_parameters(recurse=False):  # a container's own: each where first needed
            if id(p) in param_first:  # (CoaT's cls_token1..4 serve four different stages)
                stages[param_first[id(p)]].append((name, pname))
    return [s for s in stages if s]


def _units(named: list[tuple[str, nn.Module]]) -> set[str]:
    """The names of the modules a stage holds whole: leaves, and modules with weights or
    buffers of their own whose children have none (timm's ``BatchNormAct2d`` holds its
    activation and dropout), so that freezing a stage puts such a norm itself in eval mode."""
    def stateless(m: nn.Module) -> bool:
        return next(m.parameters(), None) is None and next(m.buffers(), None) is None

    leaves, wholes = set(), set()
    for name, m in named:
        children = list(m.children())
        own = next(m.parameters(recurse=False), None) is not None or next(m.buffers(recurse=False), None) is not None
        if not children:
            leaves.add(name)
        elif own and name and all(stateless(c) for c in children):
            wholes.add(name)

    def inside_whole(name: str) -> bool:
        parts = name.split(".")
        return any(".".join(parts[:i]) in wholes for i in range(1, len(parts)))

    return wholes | {n for n in leaves if not inside_whole(n)}


def _stage_modules(root: nn.Module, entries: list[tuple[str, str | None]]) -> nn.ModuleList:
    """The modules of one :func:`_dataflow_stages` stage, looked up in ``root`` now: whole leaf
    modules, and the container-held parameters in one ``ParameterList``; what no longer exists
    (a norm folded away) is left out."""
    modules, loose = [], []
    for name, pname in entries:
        try:
            module = root.get_submodule(name)
        except AttributeError:  # replaced since (optimize_for_inference folds norms into convolutions)
            continue
        if pname is None:
            modules.append(module)
        elif isinstance(getattr(module, pname, None), nn.Parameter):
            loose.append(getattr(module, pname))
    if loose:
        modules.insert(0, nn.ParameterList(loose))
    return nn.ModuleList(modules)


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
