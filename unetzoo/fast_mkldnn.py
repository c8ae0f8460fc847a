"""The CPU part of the inference fast path: oneDNN convolutions on prepacked weights, ReLU fused.

Eager PyTorch hands oneDNN a plain weight on every call, which oneDNN then reorders into its
blocked layout, and runs each ReLU as a separate pass over memory. :func:`fuse_mkldnn` replaces
every eligible convolution of an inference model by :class:`MkldnnConv2d`, which keeps the
weight reordered once ("prepacked") and applies a directly following ReLU inside the
convolution kernel (a oneDNN post-op) — what ``torch.compile`` with ``freezing`` does, without
compiling. ResNet blocks (torchvision's and timm's) then become :class:`FusedResidualBlock`:
the last convolution of each block also adds the shortcut and applies the final ReLU (oneDNN
binary and eltwise post-ops).

``benchmarks/bench_fast_path.py`` measures it: in bfloat16 on a 2-core AVX-512/AMX CPU,
unet-resnet50 and unet-vgg16 at 512x512 ran 1.43x and 1.14x faster; in float32 0.91x (so
:func:`unetzoo.fast.optimize_for_inference` uses it for bfloat16 only;
``benchmarks/results/fast_path.md`` has the run).

A ReLU is fused only when a probe pass shows it is called once, on the output of a
convolution called once, and nothing else reads that output before it (nor after it, unless the
ReLU works in place, when later readers see the ReLU's result either way). The
fused model is compared on the probe input with a reference (by default the unfused model's
output; :func:`~unetzoo.fast.optimize_for_inference` passes the unfused model's in the same
dtype, so the check measures what the fusion changes, not what bfloat16 does); if they differ,
or the fused model fails to run, the change is undone. The ops used (``torch.ops.mkldnn._convolution_pointwise`` and
``_reorder_convolution_weight``) are the ones inductor emits for CPUs.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["FusedResidualBlock", "MkldnnConv2d", "fuse_mkldnn", "mkldnn_available"]


def mkldnn_available(dtype: torch.dtype) -> bool:
    """Whether this PyTorch build has the oneDNN ops used here, for ``dtype`` on this CPU."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_pointwise")):
        return False
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


class MkldnnConv2d(nn.Module):
    """Inference-only 2-D convolution (+ optional fused ReLU) on a oneDNN-prepacked weight.

    Keeps the original ``weight`` and ``bias`` as parameters (so ``state_dict`` and
    ``parameters()`` still work) plus the prepacked copy. Takes a tensor, or a list of tensors
    to concatenate along channels (what :class:`~unetzoo.decoders.unet.ConcatConv2d` takes).
    Outputs are channels-last.
    """

    def __init__(self, conv: nn.Conv2d, *, relu: bool, input_size: Sequence[int]) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.attr = "relu" if relu else "none"
        with torch.no_grad():
            self.packed = torch.ops.mkldnn._reorder_convolution_weight(
                conv.weight.detach(), self.padding, self.stride, self.dilation, self.groups, list(input_size)
            )

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.cat(list(x), dim=1)
        return torch.ops.mkldnn._convolution_pointwise(
            x, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups, self.attr, [], ""
        )

    def add_relu(self, x: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
        """``relu(conv(x) + other)`` in one oneDNN call (binary-add and ReLU post-ops)."""
        if self.attr != "none":
            raise RuntimeError(f"add_relu needs a convolution without a fused activation, this one has {self.attr!r}")
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, other, self.packed, self.bias, self.padding, self.stride, self.dilation, self.groups,
            "add", None, "relu", [], "",
        )

    def extra_repr(self) -> str:
        w = self.weight.shape
        return f"{w[1] * self.groups}, {w[0]}, kernel_size={tuple(w[2:])}, stride={tuple(self.stride)}, " \
               f"padding={tuple(self.padding)}, groups={self.groups}, fused={self.attr}"


class FusedResidualBlock(nn.Module):
    """A ResNet ``BasicBlock`` / ``Bottleneck`` (torchvision's or timm's) after
    :func:`fuse_mkldnn`: each inner convolution applies its ReLU as a post-op, and the last one
    adds the shortcut and applies the block's final ReLU inside the same oneDNN call, so the
    residual sum never makes its own pass over memory. (torchvision's blocks share one ReLU module
    between three uses and timm's apply theirs after an in-place add; the generic ReLU fusion
    leaves both alone.) Submodule names stay the block's, so ``state_dict`` keys do not change."""

    def __init__(self, block: nn.Module, depth: int) -> None:
        super().__init__()
        self.depth = depth
        for i in range(1, depth + 1):
            conv = getattr(block, f"conv{i}")
            conv.attr = "relu" if i < depth else "none"
            setattr(self, f"conv{i}", conv)
        self.downsample = block.downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        for i in range(1, self.depth):
            x = getattr(self, f"conv{i}")(x)
        return getattr(self, f"conv{self.depth}").add_relu(x, shortcut)


def _residual_depth(block: nn.Module) -> int | None:
    """The number of convolutions of a ResNet block that :class:`FusedResidualBlock` can replace
    exactly, else ``None``: every norm folded (an identity), every convolution an
    :class:`MkldnnConv2d`, nothing between them but ReLUs, a plain shortcut, a final ReLU."""
    import timm.models.resnet as timm_resnet
    import torchvision.models.resnet as tv_resnet

    kind = type(block)
    if kind not in (tv_resnet.BasicBlock, tv_resnet.Bottleneck, timm_resnet.BasicBlock, timm_resnet.Bottleneck):
        return None
    depth = 3 if kind in (tv_resnet.Bottleneck, timm_resnet.Bottleneck) else 2
    convs = [getattr(block, f"conv{i}") for i in range(1, depth + 1)]
    norms = [getattr(block, f"bn{i}") for i in range(1, depth + 1)]
    shortcut = [] if block.downsample is None else list(block.downsample)
    if not (all(type(c) is MkldnnConv2d for c in convs) and convs[-1].attr == "none"
            and all(type(n) is nn.Identity for n in norms)
            and all(type(m) in (MkldnnConv2d, nn.Identity) and getattr(m, "attr", "none") == "none" for m in shortcut)):
        return None
    if kind in (tv_resnet.BasicBlock, tv_resnet.Bottleneck):  # one ReLU module, used after every conv
        ok = type(block.relu) is nn.ReLU and all(c.attr == "none" for c in convs[:-1])
    else:  # inner ReLUs already fused into their convs (their modules now identities)
        extras = [block.drop_block, block.aa] + ([] if block.drop_path is None else [block.drop_path])
        inner_acts = [getattr(block, f"act{i}") for i in range(1, depth)]
        ok = (block.se is None and all(type(m) is nn.Identity for m in extras + inner_acts)
              and all(c.attr == "relu" for c in convs[:-1]) and type(getattr(block, f"act{depth}")) is nn.ReLU)
    return depth if ok else None


def _eligible(module: nn.Module) -> bool:
    from unetzoo.decoders.unet import ConcatConv2d

    return (type(module) in (nn.Conv2d, ConcatConv2d) and module.padding_mode == "zeros"
            and not isinstance(module.padding, str) and module.weight.device.type == "cpu")


def _probe(model: nn.Module, x: torch.Tensor):
    """Per eligible conv: its input size (convs called once only); ReLUs that may be fused."""
    from unetzoo.fast import _probe_run, _ReadCounter

    counter = _ReadCounter()
    calls: dict[str, list[tuple[list[int], torch.Tensor]]] = collections.defaultdict(list)
    # per ReLU call: its input, how often that tensor had been read before, whether in place
    relu_in: dict[str, list[tuple[torch.Tensor, int, bool]]] = collections.defaultdict(list)
    hooks = []
    for name, m in model.named_modules(remove_duplicate=False):
        if _eligible(m):
            def conv_hook(_m, args, out, n=name):
                inp = args[0]
                channels = sum(t.shape[1] for t in inp) if not isinstance(inp, torch.Tensor) else inp.shape[1]
                ref = inp if isinstance(inp, torch.Tensor) else inp[0]
                calls[n].append(([ref.shape[0], channels, *ref.shape[2:]], out))
            hooks.append(m.register_forward_hook(conv_hook))
        elif type(m) is nn.ReLU:
            hooks.append(m.register_forward_pre_hook(
                lambda m_, args, n=name: relu_in[n].append((args[0], counter.reads[id(args[0])], m_.inplace))))
    _probe_run(model, x, hooks, counter)
    sizes = {name: c[0][0] for name, c in calls.items() if len(c) == 1}
    producer = {id(c[0][1]): name for name, c in calls.items() if len(c) == 1}
    fused = {}
    for relu_name, ins in relu_in.items():
        if len(ins) != 1 or id(ins[0][0]) not in producer:
            continue
        tensor, reads_before, inplace = ins[0]
        # nothing read the conv's output before the ReLU; after an in-place ReLU every later read
        # sees the ReLU's result (the same tensor), which is what the fused convolution returns
        if reads_before == 0 and (inplace or counter.reads[id(tensor)] == 1):
            fused[producer[id(tensor)]] = relu_name
    return sizes, fused


def fuse_mkldnn(model: nn.Module, example: torch.Tensor, *, check: bool = True, rtol: float = 1e-2,
                reference: torch.Tensor | None = None) -> int:
    """Replace eligible convolutions of an eval-mode CPU model by :class:`MkldnnConv2d`, in place.

    Args:
        model: the model, already in its inference dtype (float32 or bfloat16).
        example: a valid input for the probe pass (any size works afterwards).
        check: compare the fused model's output on ``example`` with ``reference``; undo and
            raise ``RuntimeError`` when the relative difference
            (:func:`unetzoo.fast.relative_error`) exceeds ``rtol``; an error raised by the
            fused model's check pass also undoes the fusion before it propagates.
        reference: the expected output on ``example``; default: the unfused model's
            (:func:`unetzoo.fast.optimize_for_inference` passes that, computed in the model's
            own dtype).

    Returns:
        The number of replaced convolutions.
    """
    from unetzoo.fast import _set_submodule, relative_error

    sizes, fused = _probe(model, example)
    if not sizes:
        return 0
    ref = None
    if check:
        with torch.no_grad():
            ref = model(example).float() if reference is None else reference.float()
    undo, undo_attrs = [], []

    def put_back() -> None:
        for conv, attr in undo_attrs:
            conv.attr = attr
        for name, module in reversed(undo):
            _set_submodule(model, name, module)

    try:
        _swap_in(model, sizes, fused, undo, undo_attrs)
        if check:
            with torch.no_grad():
                err = relative_error(model(example).float(), ref)
    except BaseException:  # a oneDNN primitive that fails in the check pass: nothing fused stays behind
        put_back()
        raise
    if check and err > rtol:
        put_back()
        raise RuntimeError(f"oneDNN fusion changed the output by {err:.2e} (relative, > {rtol:g}); undone. "
                           "Use mkldnn=False.")
    return len(sizes)


def _swap_in(model: nn.Module, sizes: dict, fused: dict, undo: list, undo_attrs: list) -> None:
    """Replace the convolutions, their ReLUs and the residual blocks, recording each original in
    ``undo`` (and each convolution's fused attribute in ``undo_attrs``) as it goes."""
    from unetzoo.fast import _set_submodule

    for conv_name, size in sizes.items():
        conv = model.get_submodule(conv_name)
        relu_name = fused.get(conv_name)
        _set_submodule(model, conv_name, MkldnnConv2d(conv, relu=relu_name is not None, input_size=size))
        undo.append((conv_name, conv))
        if relu_name is not None:
            undo.append((relu_name, model.get_submodule(relu_name)))
            _set_submodule(model, relu_name, nn.Identity())
    blocks = [(name, m, _residual_depth(m)) for name, m in model.named_modules()]
    for name, block, depth in blocks:  # after the convolutions, so the blocks hold MkldnnConv2d
        if depth is not None:
            attrs = [(c, c.attr) for c in block.modules() if isinstance(c, MkldnnConv2d)]
            undo_attrs.extend(attrs)
            _set_submodule(model, name, FusedResidualBlock(block, depth))
            undo.append((name, block))
