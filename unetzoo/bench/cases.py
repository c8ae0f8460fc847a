"""One benchmark case: build a network, prepare it as the variant says, time it, count it.

A case's network (``Case.model``) is one of:

* ``unet-resnet50`` — a unetzoo registry name (``Case.options`` go to :func:`unetzoo.create`;
  the positional names of ``unetzoo bench``);
* ``smp:resnet50`` — ``segmentation_models_pytorch.Unet(encoder_name="resnet50")`` (the
  twins ``--compare-smp`` adds);
* ``path/to/file.py:Builder`` — ``Builder(num_classes=...)`` from a Python file (``--baseline``;
  the plain re-implementation of the seed's network in ``benchmarks/seed_resnet50_baseline.py``).

Variants:

* ``eager`` — the model as built; bfloat16 via ``torch.autocast``;
* ``cl`` — channels-last weights and inputs (+ bfloat16 autocast), applied by hand;
* ``fast`` — :func:`unetzoo.fast.optimize_for_inference` (inference only; unetzoo models,
  or any model for the generic parts);
* ``fast-compile`` — the same plus ``torch.compile``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from unetzoo.bench.measure import MemoryMonitor, count_flops, saved_activation_bytes, synchronize, time_callable

__all__ = ["Case", "build_network", "run_case", "VARIANTS", "MODES", "smp_like_options"]

VARIANTS = ("eager", "cl", "fast", "fast-compile")
MODES = ("infer", "train")
SMP_DECODER = (256, 128, 64, 32, 16)


@dataclass(frozen=True)
class Case:
    """What to measure. ``label`` names the row in the report (default: ``model``)."""

    model: str
    variant: str = "eager"
    mode: str = "infer"
    dtype: str = "float32"
    batch: int = 1
    size: int = 512
    num_classes: int = 2
    options: dict[str, Any] = field(default_factory=dict)
    label: str = ""
    warmup: int = 2
    repeats: int = 5
    min_time: float = 0.0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"variant {self.variant!r} unknown; choose one of {VARIANTS}")
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r} unknown; choose one of {MODES}")
        if self.mode == "train" and self.variant.startswith("fast"):
            raise ValueError("the fast path is inference-only; train with variant 'eager' or 'cl'")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype {self.dtype!r} unknown; choose float32 or bfloat16")

    @property
    def name(self) -> str:
        return self.label or self.model

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def smp_like_options(name: str) -> dict[str, Any]:
    """unetzoo options that make ``name``'s decoder smp's ``Unet`` decoder: widths
    256-128-64-32-16 (as many as the encoder has blocks), BN, nearest, ``cat([up, skip])``, 3x3 head."""
    from unetzoo.factory import model_info

    info = model_info(name)
    if info.channels is None or info.reductions is None:
        raise ValueError(f"{name} has no encoder/decoder split; smp-like options apply to unet-<encoder> models")
    blocks = len(info.channels) - 1 + int(round(math.log2(info.reductions[0])))
    extra: dict[str, Any] = {}
    encoder = info.spec.encoder
    if encoder is not None and encoder.source == "torchvision" and encoder.name.startswith("vgg"):
        # smp's VGG Unet: taps at strides 2..32 (pool5 last) and a center block
        extra, blocks = {"vgg_taps": "smp", "decoder_center": True}, blocks + 1
    return {
        "decoder_channels": SMP_DECODER[: min(blocks, len(SMP_DECODER))],
        "decoder_norm": "bn",
        "upsample": "nearest",
        "skip_first": False,
        "head_kernel": 3,
        **extra,
    }


def _from_file(spec: str, num_classes: int) -> nn.Module:
    path, _, attr = spec.rpartition(":")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"cannot import {path!r} (expected FILE.py:Builder)")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return getattr(module, attr)(num_classes=num_classes)


def build_network(case: Case) -> nn.Module:
    """Build the (randomly initialised) network a case names."""
    if case.model.startswith("smp:"):
        import segmentation_models_pytorch as smp

        return smp.Unet(case.model[4:], encoder_weights=None, classes=case.num_classes, **case.options)
    if case.model.endswith(".py") or ".py:" in case.model:
        return _from_file(case.model, case.num_classes)
    import unetzoo

    return unetzoo.create(case.model, num_classes=case.num_classes, **case.options)


def _prepare(model: nn.Module, case: Case, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor, Any]:
    """Apply the variant; returns the model, the input, and a context-manager factory."""
    bf16 = case.dtype == "bfloat16"
    autocast = (lambda: torch.autocast(x.device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    if case.mode == "train" and bf16 and x.device.type == "cpu":
        from unetzoo.train.depthwise import float32_depthwise

        float32_depthwise(model)  # as unetzoo's trainer runs CPU bf16 training, for every network alike
    if case.variant == "cl":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    elif case.variant.startswith("fast"):
        from unetzoo.fast import optimize_for_inference

        model = optimize_for_inference(
            model, dtype=torch.bfloat16 if bf16 else torch.float32, compile=case.variant == "fast-compile"
        )
        autocast = contextlib.nullcontext  # weights are already in the target dtype
    return model, x, autocast


def _infer_fn(model: nn.Module, x: torch.Tensor, autocast):
    model.eval()

    def step():
        with torch.inference_mode(), autocast():
            return model(x)

    return step


def _train_fn(model: nn.Module, x: torch.Tensor, autocast, num_classes: int):
    model.train()
    target = torch.randint(0, num_classes, (x.shape[0], *x.shape[-2:]), device=x.device)
    # the fused kernel (as unetzoo's trainer uses), for every network alike
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)

    def step():
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return loss

    def fwd_bwd():  # what FLOPs are counted for (the optimizer's element-wise work is not)
        with autocast():
            loss = F.cross_entropy(model(x), target)
        loss.backward()
        optimizer.zero_grad(set_to_none=True)

    return step, fwd_bwd


def run_case(case: Case) -> dict[str, Any]:
    """Build, prepare, count and time one case; returns a flat result record.

    Peak memory covers the first calls (saved activations, warm-up: activations, gradients and
    optimizer state on top of what the prepared model held before the first call); the
    variant's preparation (channels-last copies, folded weights) comes before it.

    Denormal floats are flushed to zero for every network alike: randomly initialised deep
    networks can produce them (unet-resnet50 with seed 0 does), and on x86 CPUs every operation
    that touches one takes a slow path (35 % slower there), which says nothing about the
    architecture. Trained networks rarely produce them.

    On CPUs, freed memory is kept for reuse (:mod:`unetzoo.cpu_memory`) for every network
    alike, unless ``UNETZOO_CPU_ALLOCATOR=default`` is set; rows record which setting ran.
    """
    from unetzoo import cpu_memory

    flushed = torch.set_flush_denormal(True)
    torch.manual_seed(0)
    device = torch.device(case.device)
    allocator_tuned = cpu_memory.auto_tune_cpu_allocator() if device.type == "cpu" else False
    model = build_network(case).to(device)
    params = sum(p.numel() for p in model.parameters())
    in_chans = getattr(model, "in_chans", 3)
    x = torch.randn(case.batch, in_chans, case.size, case.size, device=device)
    if case.mode == "infer":  # on the network as built: the counter sees neither compiled nor
        with torch.inference_mode():  # oneDNN-fused kernels, and every variant has the same convolutions
            flops = count_flops(lambda: model.eval()(x))
    # the variant's one-off preparation (channels-last copies, folded and prepacked weights) is
    # done before the monitor starts: the growth it reports is the calls', not the conversion's
    model, x, autocast = _prepare(model, case, x)
    # Peak memory from the prepared model at rest through its first calls: the saved activations
    # run the network once, then the warm-up calls (the first training step also creates the
    # optimizer state); a step's allocations are the same every call. The timed calls then run
    # without the sampling thread, which would otherwise compete with the compute threads.
    if case.mode == "infer" and (getattr(model, "inference_options", None) or {}).get("compile"):
        with torch.inference_mode():  # torch.compile compiles at the first call: its memory is not the model's
            _infer_fn(model, x, autocast)()
        synchronize(device)
    if device.type == "cpu":  # RSS growth from live memory only: free heap kept from the build goes back
        cpu_memory.release_free_memory()
    with MemoryMonitor(device, interval=0.005) as mem:
        saved = None
        if case.mode == "infer":
            step = _infer_fn(model, x, autocast)
        else:
            step, fwd_bwd = _train_fn(model, x, autocast, case.num_classes)
            flops = count_flops(fwd_bwd)
            saved = saved_activation_bytes(model, fwd_bwd)
        for _ in range(max(1, case.warmup)):
            step()
            synchronize(device)
    timing = time_callable(step, warmup=0, repeats=case.repeats, device=device, min_time=case.min_time)
    return {
        **case.to_dict(),
        "name": case.name,
        "params": params,
        "gflops": flops / 1e9,
        "time_s": timing.median,
        "time_min_s": timing.minimum,
        "time_max_s": timing.maximum,
        "spread": timing.spread,
        "repeats_done": timing.repeats,
        "ms_per_image": 1e3 * timing.median / case.batch,
        "ms_per_image_best": 1e3 * timing.minimum / case.batch,
        "images_per_s": case.batch / timing.median,
        "tflops_achieved": flops / timing.median / 1e12,
        "tflops_best": flops / timing.minimum / 1e12,
        "mem_peak_mb": mem.peak / 2**20,
        "mem_increase_mb": mem.increase / 2**20,
        **({} if saved is None else {"saved_activations_mb": saved / 2**20}),
        "flush_denormal": flushed,
        "cpu_allocator_tuned": allocator_tuned,
    }
