"""What a benchmark run measures: the configuration, the list of cases, the comparisons.

:class:`BenchConfig` is what ``unetzoo bench`` parses its command line into. Cases are the
cross product of models x modes x dtypes x variants x batch sizes x image sizes; with
``compare_smp`` every ``unet-<encoder>`` model is also measured with its decoder configured
like smp's ``Unet`` and next to ``smp.Unet`` with the same encoder.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from unetzoo.bench.cases import Case, smp_like_options

__all__ = ["BenchConfig", "DEFAULT_MODELS", "build_cases", "smp_name", "smp_twinless", "compare_rows", "SMP_SUFFIX"]

#: the curated encoder U-Nets, two classic nets, and timm backbones of other families
DEFAULT_MODELS = (
    "unet-vgg16",
    "unet-resnet18",
    "unet-resnet34",
    "unet-resnet50",
    "unet-efficientnet_b0",
    "unet-efficientnet_lite0",
    "unet-mobilenetv3_large_100",
    "unet-regnety_016",
    "unet-convnext_tiny",
    "unet-resnext50_32x4d",
    "unet-densenet121",
    "unet-classic",
    "unet-strided",
)
SMP_SUFFIX = " [smp-dec]"


@dataclass
class BenchConfig:
    """A benchmark run (see ``unetzoo bench --help`` for each field)."""

    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    modes: list[str] = field(default_factory=lambda: ["infer", "train"])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    infer_variants: list[str] = field(default_factory=lambda: ["eager", "fast"])
    train_variants: list[str] = field(default_factory=lambda: ["eager"])
    batch_sizes: list[int] = field(default_factory=lambda: [1])
    sizes: list[int] = field(default_factory=lambda: [512])
    train_batch_sizes: list[int] = field(default_factory=lambda: [8])
    train_sizes: list[int] = field(default_factory=lambda: [256])
    compare_smp: bool = False
    smp_variants: list[str] = field(default_factory=lambda: ["eager", "cl"])
    baselines: list[str] = field(default_factory=list)
    num_classes: int = 2
    warmup: int = 2
    repeats: int = 5
    min_time: float = 0.0
    threads: int | None = None
    isolate: bool = True
    device: str = "cpu"
    peak_max_n: int = 2048
    accuracy: bool = False
    accuracy_data: str = ""
    accuracy_epochs: int = 8
    out_dir: str = "benchmarks/results"
    tag: str = "bench"


def smp_name(model: str) -> str:
    """The ``smp:<encoder>`` twin of a unetzoo model: torchvision encoders by their name, timm
    encoders through smp's timm-universal encoder (``tu-<name>``)."""
    from unetzoo.registry import get_spec

    encoder = get_spec(model).encoder
    if encoder is None:
        raise ValueError(f"{model} has no pretrained-encoder twin in smp")
    return encoder.name if encoder.source == "torchvision" else f"tu-{encoder.name}"


def _grid(cfg: BenchConfig, mode: str) -> list[tuple[str, int, int]]:
    if mode == "infer":
        return list(itertools.product(cfg.dtypes, cfg.batch_sizes, cfg.sizes))
    return list(itertools.product(cfg.dtypes, cfg.train_batch_sizes, cfg.train_sizes))


def _case(cfg: BenchConfig, model: str, variant: str, mode: str, dtype: str, batch: int, size: int,
          options: dict[str, Any] | None = None, label: str = "") -> Case:
    return Case(model=model, variant=variant, mode=mode, dtype=dtype, batch=batch, size=size,
                num_classes=cfg.num_classes, options=options or {}, label=label, warmup=cfg.warmup,
                repeats=cfg.repeats, min_time=cfg.min_time, device=cfg.device)


def build_cases(cfg: BenchConfig) -> list[Case]:
    """Every case of the run, in a stable order (model, mode, dtype, batch, size, variant)."""
    cases: list[Case] = []
    for model in [*cfg.models, *cfg.baselines]:
        is_unetzoo = model.startswith("unet-")
        for mode in cfg.modes:
            variants = cfg.infer_variants if mode == "infer" else cfg.train_variants
            if not is_unetzoo:  # the fast path is unetzoo's; baselines run as users run them
                variants = [v for v in variants if not v.startswith("fast")] or ["eager"]
            for (dtype, batch, size), variant in itertools.product(_grid(cfg, mode), variants):
                cases.append(_case(cfg, model, variant, mode, dtype, batch, size))
        if cfg.compare_smp and is_unetzoo:
            cases.extend(_smp_cases(cfg, model))
    return cases


def smp_twinless(cfg: BenchConfig) -> dict[str, str]:
    """The unetzoo models of a ``compare_smp`` run that have no smp twin, each with the reason
    (``unet-classic``, ``unet-original`` and the other encoder-less networks): they are measured alone."""
    if not cfg.compare_smp:
        return {}
    alone = {}
    for model in cfg.models:
        if model.startswith("unet-"):
            try:
                smp_name(model), smp_like_options(model)
            except ValueError as err:
                alone[model] = str(err)
    return alone


def _smp_cases(cfg: BenchConfig, model: str) -> list[Case]:
    try:
        twin, options = smp_name(model), smp_like_options(model)
    except ValueError:
        return []
    cases = []
    for mode in cfg.modes:
        uz_variants = cfg.infer_variants if mode == "infer" else cfg.train_variants
        for dtype, batch, size in _grid(cfg, mode):
            for variant in dict.fromkeys([*uz_variants, *cfg.smp_variants]):
                if mode == "train" and variant.startswith("fast"):
                    continue
                cases.append(_case(cfg, model, variant, mode, dtype, batch, size, options, model + SMP_SUFFIX))
            for variant in cfg.smp_variants:
                cases.append(_case(cfg, f"smp:{twin}", variant, mode, dtype, batch, size))
    return cases


def _key(row: dict[str, Any]) -> tuple:
    return (row["name"], row["mode"], row["dtype"], row["batch"], row["size"], row["variant"])


def compare_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """unetzoo (smp-like decoder) vs smp, variant by variant, plus unetzoo's fast path vs smp's
    channels-last + autocast by hand. Ratios > 1 mean unetzoo is faster / achieves more FLOP/s."""
    by_key = {_key(r): r for r in rows if "error" not in r}
    out = []
    for row in rows:
        if not row.get("name", "").endswith(SMP_SUFFIX) or "error" in row:
            continue
        model = row["name"][: -len(SMP_SUFFIX)]
        twin = f"smp:{smp_name(model)}"
        pairs = [(row["variant"], row["variant"])]
        if row["variant"].startswith("fast"):
            pairs = [(row["variant"], "cl")]
        for uz_variant, smp_variant in pairs:
            ref = by_key.get((twin, row["mode"], row["dtype"], row["batch"], row["size"], smp_variant))
            if ref is None:
                continue
            out.append({
                "model": model, "smp": twin, "mode": row["mode"], "dtype": row["dtype"], "batch": row["batch"],
                "size": row["size"], "unetzoo_variant": uz_variant, "smp_variant": smp_variant,
                "gflops_unetzoo": row["gflops"], "gflops_smp": ref["gflops"],
                "flops_equal": abs(row["gflops"] - ref["gflops"]) <= 1e-6 * max(ref["gflops"], 1e-9),
                "params_unetzoo": row["params"], "params_smp": ref["params"],
                "ms_per_image_unetzoo": row["ms_per_image"], "ms_per_image_smp": ref["ms_per_image"],
                "speedup": ref["ms_per_image"] / row["ms_per_image"],
                "speedup_best": ref.get("ms_per_image_best", ref["ms_per_image"])
                / row.get("ms_per_image_best", row["ms_per_image"]),
                "flops_rate_ratio": row["tflops_achieved"] / ref["tflops_achieved"],
                "mem_increase_mb_unetzoo": row["mem_increase_mb"], "mem_increase_mb_smp": ref["mem_increase_mb"],
                "mem_per_gflop_ratio": (row["mem_increase_mb"] / row["gflops"])
                / max(ref["mem_increase_mb"] / ref["gflops"], 1e-12),
                **({"saved_mb_unetzoo": row["saved_activations_mb"], "saved_mb_smp": ref["saved_activations_mb"],
                    "saved_per_gflop_ratio": (row["saved_activations_mb"] / row["gflops"])
                    / max(ref["saved_activations_mb"] / ref["gflops"], 1e-12)}
                   if "saved_activations_mb" in row and "saved_activations_mb" in ref else {}),
            })
    return out
