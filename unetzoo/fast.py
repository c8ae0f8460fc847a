"""The inference fast path: fold batch norms, channels-last, low precision, optional compile.

:func:`optimize_for_inference` turns a trained model into a faster inference-only one:

1. eval mode, gradients off;
2. every convolution whose output goes *only* into a batch norm gets the norm folded into
   its weights and bias (exact up to float rounding; the norm becomes an identity, or the
   activation of timm's ``BatchNormAct2d``);
3. weights and activations in channels-last memory format (what oneDNN/cuDNN convolutions
   run fastest on);
4. weights in bfloat16 where the hardware computes it natively (``dtype="auto"``; forced
   with ``dtype=torch.bfloat16``); inputs are cast on the way in, outputs back to float32;
5. optionally ``torch.compile`` (in place, so the same object is returned).

Which conv -> norm pairs are exact is not guessed from module names: a probe forward pass on a
tiny input records, for every tensor, which operations read it, and a pair is folded only when
the norm is the one and only reader of the convolution's output. The folded model is then
checked against the original on the probe input.

Tolerances (stated and tested): folding alone in float32 changes outputs by at most
:data:`FOLD_RTOL` of their largest magnitude; bfloat16 by at most :data:`BF16_RTOL`.
"""

from __future__ import annotations

import collections
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from unetzoo._modes import fixed_input_size, param_dtype

__all__ = [
    "optimize_for_inference",
    "fold_batchnorm",
    "native_bf16_supported",
    "preferred_dtype",
    "example_input",
    "relative_error",
    "FOLD_RTOL",
    "BF16_RTOL",
]

#: max |folded - original| / max |original| in float32
FOLD_RTOL = 1e-4
#: max |bf16 - fp32| / max |fp32| for the bfloat16 fast path
BF16_RTOL = 5e-2


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """``max |out - ref| / max |ref|``: the error measure the tolerances above refer to."""
    ref = ref.detach().double()
    return float((out.detach().double() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


# ---------------------------------------------------------------------------- hardware
def native_bf16_supported(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 convolutions/matmuls natively (fast).

    CPUs need AVX512-BF16 or AMX (oneDNN's bf16 kernels); without them bfloat16 is emulated
    and several times *slower* than float32. CUDA devices need compute capability >= 8.0.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def preferred_dtype(device: torch.device | str = "cpu") -> torch.dtype:
    """bfloat16 where the hardware runs it natively, else float32."""
    return torch.bfloat16 if native_bf16_supported(device) else torch.float32


# ---------------------------------------------------------------------------- probing
def example_input(model: nn.Module, *, batch: int = 1, device: torch.device | str | None = None) -> torch.Tensor:
    """A small random input the model accepts (its own ``check_input`` decides).

    Same-size networks get ``2 * pad_multiple`` pixels (64 for a stride-32 encoder); valid-
    convolution networks (``border > 0``, e.g. unet-original) the smallest accepted size above
    their border.
    """
    in_chans = getattr(model, "in_chans", 3)
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    fixed = fixed_input_size(model)
    if fixed is not None:  # ViT, Swin, ...: timm backbones built for one input size
        return torch.randn(batch, in_chans, *fixed, device=device)
    border = getattr(model, "border", 0) or 0
    start = 2 * border + max(2 * (getattr(model, "pad_multiple", None) or 16), 32)
    check = getattr(model, "check_input", None)
    failure = None
    for side in range(start, start + 129):
        x = torch.randn(batch, in_chans, side, side, device=device)
        if check is None:
            return x
        try:
            check(x)
        except ValueError:
            continue
        # backbones of unpadded convolutions (inception) pass the check at sizes they cannot run
        failure = _fails_on(model, x[:1])
        if failure is None:
            return x
    why = f" (the last size tried failed: {failure})" if failure else ""
    raise ValueError(
        f"could not find a valid input size for {type(model).__name__} between {start} and {start + 128}{why}; "
        "pass example_input=torch.randn(1, C, H, W) explicitly"
    )


def _fails_on(model: nn.Module, x: torch.Tensor) -> str | None:
    """Why ``model`` cannot run ``x`` (the error's first line: torch's RuntimeError, or the
    ValueError a model raises for an input below its ``min_input_size``), or ``None``. Runs
    in eval mode, without gradients: norm statistics and training modes are left as they were."""
    from unetzoo._modes import evaluating

    try:
        with evaluating(model), torch.no_grad():
            model(x)
        return None
    except (RuntimeError, ValueError) as err:
        return str(err).splitlines()[0] if str(err) else type(err).__name__


_example_input = example_input  # optimize_for_inference's argument of that name shadows it


class _ReadCounter(TorchDispatchMode):
    """Counts, for every tensor, how many aten operations read it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads: collections.Counter[int] = collections.Counter()
        self._alive: list[Any] = []  # keep outputs alive so ids stay unique during the probe

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for leaf in tree_leaves((args, kwargs or {})):
            if isinstance(leaf, torch.Tensor):
                self.reads[id(leaf)] += 1
        out = func(*args, **(kwargs or {}))
        self._alive.append(out)
        return out


@dataclass
class _Probe:
    conv_out: dict[str, list[torch.Tensor]] = field(default_factory=lambda: collections.defaultdict(list))
    bn_in: dict[str, list[torch.Tensor]] = field(default_factory=lambda: collections.defaultdict(list))


def _norm_kind(module: nn.Module) -> str | None:
    """``"bn"`` for plain batch norms, ``"bnact"`` for timm's norm+act modules, else None."""
    from timm.layers import BatchNormAct2d, FrozenBatchNormAct2d
    from torchvision.ops.misc import FrozenBatchNorm2d

    if type(module) in (BatchNormAct2d, FrozenBatchNormAct2d):
        return "bnact"
    if type(module) in (nn.BatchNorm2d, nn.SyncBatchNorm, FrozenBatchNorm2d):
        return "bn" if getattr(module, "running_mean", None) is not None else None
    return None


def _linear_conv(module: nn.Module) -> bool:
    """Convolutions whose output is linear in ``weight`` (no weight standardisation etc.)."""
    from timm.layers import Conv2dSame

    from unetzoo.decoders.unet import ConcatConv2d

    return type(module) in (nn.Conv2d, Conv2dSame, ConcatConv2d)


def _probe_run(model: nn.Module, x: torch.Tensor, hooks: list, counter: _ReadCounter) -> None:
    """One no-grad forward pass under ``counter`` with ``hooks`` installed; removes the hooks."""
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        for h in hooks:
            h.remove()


def _find_pairs(model: nn.Module, x: torch.Tensor) -> list[tuple[str, str]]:
    """(conv name, norm name) pairs where the norm is the only reader of the conv's output."""
    probe = _Probe()
    hooks = []
    for name, m in model.named_modules(remove_duplicate=False):
        if _linear_conv(m):
            hooks.append(m.register_forward_hook(lambda _m, _a, out, n=name: probe.conv_out[n].append(out)))
        elif _norm_kind(m):
            hooks.append(m.register_forward_pre_hook(lambda _m, args, n=name: probe.bn_in[n].append(args[0])))
    counter = _ReadCounter()
    _probe_run(model, x, hooks, counter)
    producer = {id(outs[0]): name for name, outs in probe.conv_out.items() if len(outs) == 1}
    pairs = []
    for bn_name, ins in probe.bn_in.items():
        if len(ins) != 1 or id(ins[0]) not in producer:
            continue
        if counter.reads[id(ins[0])] == 1:  # the norm is the only reader
            pairs.append((producer[id(ins[0])], bn_name))
    return pairs


# ---------------------------------------------------------------------------- folding
def _bn_scale_shift(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    mean, var = bn.running_mean.double(), bn.running_var.double()
    weight = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    bias = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    scale = weight / torch.sqrt(var + bn.eps)
    return scale, bias - mean * scale


def _fold_pair(conv: nn.Conv2d, bn: nn.Module) -> None:
    scale, shift = _bn_scale_shift(bn)
    w = conv.weight
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    with torch.no_grad():
        conv.weight.copy_((w.double() * scale.view(-1, 1, 1, 1)).to(w.dtype))
        new_bias = (b * scale + shift).to(w.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=w.requires_grad)
        else:
            conv.bias.copy_(new_bias)


def _replacement(bn: nn.Module) -> nn.Module:
    if _norm_kind(bn) == "bnact":
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def _set_submodule(root: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, module)


def fold_batchnorm(model: nn.Module, example: torch.Tensor | None = None, *, check: bool = True,
                   reference: torch.Tensor | None = None) -> int:
    """Fold every batch norm that directly and exclusively follows a convolution into it.

    The model is put in eval mode and changed in place. With ``check=True`` the folded model
    is compared with the original on ``example`` (``reference``: the original's output there,
    if the caller already has it) and the change is undone (``RuntimeError``) if they differ
    by more than :data:`FOLD_RTOL`.

    Returns:
        The number of folded norms.

    Example:
        >>> model = unetzoo.create("unet-resnet18", decoder_norm="bn")
        >>> fold_batchnorm(model)
        30
    """
    return _fold_batchnorm(model, example, check=check, reference=reference)[0]


def _fold_batchnorm(model: nn.Module, example: torch.Tensor | None, *, check: bool,
                    reference: torch.Tensor | None) -> tuple[int, Any]:
    """:func:`fold_batchnorm`, also returning a function that undoes the folding (the model must be
    back in the dtype it was folded in)."""
    model.eval()
    x = example if example is not None else example_input(model)
    pairs = _find_pairs(model, x)
    if not pairs:
        return 0, lambda: None
    ref = None
    if check:
        with torch.no_grad():
            ref = model(x).float() if reference is None else reference.float()
    saved = []
    for conv_name, bn_name in pairs:
        conv, bn = model.get_submodule(conv_name), model.get_submodule(bn_name)
        bias = None if conv.bias is None else conv.bias.detach().clone()  # _fold_pair writes into conv.bias
        saved.append((conv_name, bn_name, bn, conv.weight.detach().clone(), bias))
        _fold_pair(conv, bn)
        _set_submodule(model, bn_name, _replacement(bn))

    def undo() -> None:
        for conv_name, bn_name, bn, weight, bias in saved:
            conv = model.get_submodule(conv_name)
            with torch.no_grad():
                conv.weight.copy_(weight)
                if bias is None:
                    conv.bias = None  # the fold added one
                else:
                    conv.bias.copy_(bias)
            _set_submodule(model, bn_name, bn)

    if check:
        with torch.no_grad():
            err = relative_error(model(x).float(), ref)
        if err > FOLD_RTOL:
            undo()
            raise RuntimeError(
                f"folding {len(pairs)} batch norms into convolutions changed {type(model).__name__}'s output by "
                f"{err:.2e} (relative, > {FOLD_RTOL:g}); the model was left unfolded. Use fold_bn=False."
            )
    return len(pairs), undo


# ---------------------------------------------------------------------------- the fast path
def _resolve_dtype(dtype: torch.dtype | str | None, device: torch.device) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return preferred_dtype(device)
    if isinstance(dtype, str):
        dtype = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                 "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}.get(dtype, dtype)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be 'auto', torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return dtype


def _input_hook(dtype: torch.dtype, channels_last: bool):
    fmt = torch.channels_last if channels_last else torch.preserve_format

    def hook(module: nn.Module, args: tuple) -> tuple:
        x, *rest = args
        if isinstance(x, torch.Tensor) and x.ndim == 4 and x.is_floating_point():
            x = x.to(dtype=dtype, memory_format=fmt)
        return (x, *rest)

    return hook


def _output_hook(module: nn.Module, args: tuple, out: Any) -> Any:
    """float32 logits in the default layout, as the eager model returns them (``.view`` works)."""
    if isinstance(out, torch.Tensor) and out.is_floating_point():
        return out.float().contiguous()
    return out


def optimize_for_inference(
    model: nn.Module,
    *,
    dtype: torch.dtype | str | None = "auto",
    channels_last: bool = True,
    compile: bool = False,
    fold_bn: bool = True,
    example_input: torch.Tensor | None = None,
    compile_options: dict[str, Any] | None = None,
    mkldnn: bool | None = None,
    tune_allocator: bool | None = None,
) -> nn.Module:
    """Make ``model`` an inference-only fast model, in place, and return it.

    Args:
        model: any unetzoo model (or module taking one NCHW image batch).
        dtype: ``"auto"`` (bfloat16 where the device runs it natively, see
            :func:`native_bf16_supported`, else float32), or ``torch.float32`` /
            ``torch.bfloat16`` / ``torch.float16``. Inputs of any float dtype are cast on the way
            in; low-precision outputs are returned as float32.
        channels_last: convert weights and inputs to channels-last.
        compile: ``torch.compile`` the model in place (``nn.Module.compile``); the first call
            then takes a while. ``compile_options`` are passed on (default on CPU:
            ``{"options": {"freezing": True}}``, weights as constants).
        fold_bn: fold batch norms into the preceding convolutions (exactness checked).
        example_input: a valid input for the probe; default :func:`example_input`.
        mkldnn: CPU only: run convolutions on oneDNN-prepacked weights with directly following
            ReLUs and ResNet shortcuts fused (:func:`unetzoo.fast_mkldnn.fuse_mkldnn`; checked
            against the same model unfused, in the same dtype, within the stated tolerance).
            ``None`` (default): on for channels-last bfloat16 CPU models that are not
            compiled (``torch.compile`` does the same by itself); in float32 it measured slower.
            A fusion that fails its check is then skipped with a warning; with ``True`` it
            raises, and the model is put back as it was (dtype, layout, unfolded norms).
            Those models' bilinear decoder blocks also upsample with
            :func:`unetzoo.decoders.unet.upsample2x_bilinear` (faster than ATen's kernel in bf16).
        tune_allocator: CPU only: keep freed memory for reuse
            (:func:`unetzoo.cpu_memory.tune_cpu_allocator`, process-wide) so each call does not
            page-fault its large activations in again. ``None`` (default): on for CPU models
            unless ``UNETZOO_CPU_ALLOCATOR=default`` is set; ``False`` leaves the allocator alone.

    Returns:
        ``model`` itself (eval mode, ``requires_grad=False``), with ``model.inference_options``
        recording what was applied. Do not train it: the folded norms are gone.

    Example:
        >>> model = unetzoo.create("unet-resnet50", num_classes=2).optimize_for_inference()
        >>> logits = model(torch.randn(1, 3, 512, 512))   # float32 in, float32 out
    """
    if getattr(model, "inference_options", None) is not None:
        raise RuntimeError("this model was already optimized for inference; build or load a fresh one")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    dtype = _resolve_dtype(dtype, device)
    model.eval().requires_grad_(False)
    original_dtype = param_dtype(model)
    if original_dtype != torch.float32:  # a model saved in bf16/fp16: up to float32 (exact) for the folding
        model.float()  # and its checks, which feed float32 probes; the chosen dtype is applied below
    from unetzoo.fast_mkldnn import fuse_mkldnn, mkldnn_available

    # measured: oneDNN fusion and the lerp upsampling are faster in bfloat16 (not in float32) on CPUs,
    # and torch.compile does its own fusion
    cpu_bf16_eager = device.type == "cpu" and dtype == torch.bfloat16 and channels_last and not compile
    explicit_mkldnn = bool(mkldnn)
    if mkldnn is None:
        mkldnn = cpu_bf16_eager and mkldnn_available(dtype)
    elif mkldnn and not (device.type == "cpu" and mkldnn_available(dtype)):
        raise ValueError(f"mkldnn=True needs a CPU model in float32 or bfloat16 with oneDNN support, got {device} {dtype}")
    # before the model changes: a bad UNETZOO_CPU_ALLOCATOR must not leave it half converted
    allocator_tuned = False
    if device.type == "cpu" and tune_allocator is not False:
        from unetzoo import cpu_memory

        allocator_tuned = cpu_memory.tune_cpu_allocator() if tune_allocator else cpu_memory.auto_tune_cpu_allocator()
    probe = example_input if example_input is not None else _example_input(model)
    reference = None
    if fold_bn:  # the original's output, which the folding is checked against
        with torch.no_grad():
            reference = model(probe).float()
    folded, unfold = _fold_batchnorm(model, probe, check=True, reference=reference) if fold_bn else (0, lambda: None)
    fmt = torch.channels_last if channels_last else torch.preserve_format
    # what a failed fusion restores: the cast to dtype rounds every weight
    backup = {k: v.detach().clone() for k, v in model.state_dict().items()} if mkldnn else None
    model.to(dtype=dtype, memory_format=fmt)
    fused = 0
    if mkldnn:
        # the fusion is checked against the same model unfused, in its own dtype: what the fusion
        # changes, not what bfloat16 itself does (a GroupNorm decoder's bf16 error alone can exceed
        # the tolerance on some inputs)
        x = probe.to(device=device, dtype=dtype, memory_format=fmt)
        try:
            with torch.no_grad():
                unfused = model(x).float()
            fused = fuse_mkldnn(model, x, reference=unfused, rtol=BF16_RTOL if dtype != torch.float32 else 10 * FOLD_RTOL)
        except Exception as err:
            if explicit_mkldnn:  # asked for: the model goes back to what it was, and the error says why
                model.to(dtype=original_dtype, memory_format=torch.contiguous_format)
                model.load_state_dict(backup)
                unfold()
                raise
            warnings.warn(f"oneDNN fusion skipped: {err}", RuntimeWarning, stacklevel=2)
        del backup
    lerp_blocks = 0
    if cpu_bf16_eager:
        from unetzoo.decoders.unet import UpBlock

        for m in model.modules():
            if isinstance(m, UpBlock) and m.mode == "bilinear":
                m.lerp_upsample, lerp_blocks = True, lerp_blocks + 1
    model.register_forward_pre_hook(_input_hook(dtype, channels_last))
    model.register_forward_hook(_output_hook)  # float32, default layout, whatever ran inside
    if compile:
        if compile_options is None:  # CPU: let inductor treat the weights as constants (prepacked)
            compile_options = {"options": {"freezing": True}} if device.type == "cpu" else {}
        model.compile(**compile_options)
    model.inference_options = {
        "dtype": str(dtype).removeprefix("torch."),
        "channels_last": channels_last,
        "compile": compile,
        "folded_bn": folded,
        "mkldnn_convs": fused,
        "lerp_upsample_blocks": lerp_blocks,
        "cpu_allocator_tuned": allocator_tuned,
    }
    return model
