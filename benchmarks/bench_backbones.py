"""Compare unetzoo's backbones, check the speed targets against smp, write benchmarks/results/.

Three parts, each written as CSV + markdown (+ JSON with every record, + PNG for the backbones):

* ``backbones`` — every default model: parameters, GFLOPs, inference at 512x512 batch 1
  (eager and the fast path) and a training step at 256x256 batch 8, in float32 and (where the
  CPU runs it natively) bfloat16, peak memory,
  % of the measured peak, and the held-out IoU of a short fine-tune (same recipe for all).
* ``targets`` — unet-resnet50 and unet-vgg16 side by side with segmentation_models_pytorch's
  ``Unet`` (same encoder; unetzoo's decoder configured like smp's), the plain re-implementation
  of the seed network (``seed_resnet50_baseline.py``), bfloat16 cases, and the issue's targets.
* ``accuracy`` — the short fine-tune of the backbones part once per decoder normalisation
  (``--decoder-norms``: none, the default; BatchNorm; GroupNorm) and seed (``--seeds``), side by
  side from one run (not part of ``all``).

    python benchmarks/bench_backbones.py                      # backbones + targets (hours on 2 CPU cores)
    python benchmarks/bench_backbones.py --part targets
    python benchmarks/bench_backbones.py --part backbones --no-accuracy --models unet-resnet18
    python benchmarks/bench_backbones.py --part accuracy --models unet-resnet34 unet-convnext_tiny
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path

from unetzoo.bench.cases import Case, smp_like_options
from unetzoo.bench.run import run_benchmark
from unetzoo.bench.suite import DEFAULT_MODELS, SMP_SUFFIX, BenchConfig, smp_name

HERE = Path(__file__).resolve().parent
SEED = f"{HERE / 'seed_resnet50_baseline.py'}:SeedUnet"
#: (batch, side) of inference and training cases; --quick shrinks them to check the pipeline
SHAPES = {"infer": (1, 512), "train": (8, 256)}
NOTES = [
    "Each case runs in a fresh process (2 warm-up calls, then >= 5 timed calls; on CPUs without native bfloat16 "
    "smp's emulated bf16 reference gets 2 + 1). Times are medians; spread is the IQR / median. torch.compile "
    "cases compile in the first warm-up call; FLOPs are counted on the eager network.",
    "Training steps use AdamW with PyTorch's fused kernel for every network (unetzoo's trainer does too).",
    "Denormal floats are flushed to zero in every case (torch.set_flush_denormal): randomly initialised networks "
    "can produce them, and x86 CPUs take a slow path on each (unet-resnet50 with seed 0: 35% slower), which is "
    "not a property of the architecture.",
    "Freed memory is kept for reuse in every case (unetzoo.cpu_memory: glibc mallopt, as unetzoo's fast path and "
    "trainer do on CPUs), so no network page-faults its large activations in again on every call; "
    "UNETZOO_CPU_ALLOCATOR=default measures glibc's defaults instead (benchmarks/bench_fast_path.py compares both).",
    "The CPU is shared with other jobs; the load average at start and end is recorded above. "
    "Figures taken under load are pessimistic.",
    "GFLOPs are counted by torch.utils.flop_counter.FlopCounterMode (2 per multiply-add; convolutions "
    "and matmuls). Training-step GFLOPs count forward + backward.",
    "Peak memory: the process's resident set high-water mark (ru_maxrss, RSS sampled every 5 ms) from the model "
    "at rest through its first calls (the FLOP count, the saved-activation count and the warm-up calls, each "
    "case in a fresh process); '+MB' is the increase over the model's resting footprint, taken after the C heap "
    "has handed back the memory the build freed (malloc_trim; smp's VGG encoder frees a 411 MB classifier, which "
    "would otherwise serve its activations unseen). The timed calls run without "
    "the sampling thread. RSS also moves with the allocator (fragmentation), so training cases "
    "also report the bytes autograd saves for the backward pass (exact, torch.autograd.graph.saved_tensors_hooks).",
]


def _case(model: str, variant: str, mode: str, dtype: str, *, options=None, label="", repeats=None) -> Case:
    batch, size = SHAPES[mode]
    warmup, repeats = 2, repeats or 5
    return Case(model=model, variant=variant, mode=mode, dtype=dtype, batch=batch, size=size,
                options=options or {}, label=label, warmup=warmup, repeats=repeats, num_classes=2)


def target_cases(models: list[str], bf16_train: list[str], bf16: bool = True) -> list[Case]:
    """The target cases. ``bf16=False`` (a CPU without native bfloat16, where one bf16 forward
    takes minutes) keeps only smp's channels_last + bf16 reference, timed once after a warm-up."""
    cases = []
    for model in models:
        twin, smp_opts = f"smp:{smp_name(model)}", smp_like_options(model)
        label = model + SMP_SUFFIX
        ours = [("eager", "float32"), ("fast", "float32")]
        ours += [("fast", "bfloat16"), ("fast-compile", "bfloat16")] if bf16 else []
        cases += [_case(model, v, "infer", d) for v, d in ours] + [_case(model, "eager", "train", "float32")]
        # the float32 eager pair decides the "within 5% of smp" target: more repeats, timed back to back
        decided = ("eager", "float32")
        smp_dec = [_case(model, v, "infer", d, options=smp_opts, label=label, repeats=15 if (v, d) == decided else None)
                   for v, d in ours]
        smp_ref = [_case(twin, v, "infer", d, repeats=15 if (v, d) == decided else None if bf16 or d == "float32" else 1)
                   for v, d in (decided, ("cl", "float32"), ("cl", "bfloat16"))]
        cases += [smp_dec[0], smp_ref[0], *smp_dec[1:], *smp_ref[1:]]
        cases += [_case(model, "eager", "train", "float32", options=smp_opts, label=label),
                  _case(twin, "eager", "train", "float32")]
        if bf16 and model in bf16_train:
            cases += [_case(model, "cl", "train", "bfloat16"),
                      _case(model, "cl", "train", "bfloat16", options=smp_opts, label=label),
                      _case(twin, "cl", "train", "bfloat16")]
    if "unet-resnet50" in models:
        cases += [_case(SEED, "eager", "infer", "float32", label="seed unet-resnet50 (plain eager)"),
                  _case(SEED, "eager", "train", "float32", label="seed unet-resnet50 (plain eager)")]
    return cases


def _find(rows, name, mode, dtype, variant):
    for r in rows:
        if (r.get("name"), r.get("mode"), r.get("dtype"), r.get("variant")) == (name, mode, dtype, variant):
            return None if "error" in r else r
    return None


def _target(text, measured, goal, met):
    """A row of the targets table; ``met=None`` marks a reference figure with no goal."""
    return {"target": text, "measured": measured, "goal": goal, "met": None if met is None else bool(met)}


def targets(rows, comparisons, peaks):
    """The issue's targets, each with the figure that decides it."""
    out = []
    for model in ("unet-resnet50", "unet-vgg16"):
        for dtype, variant in (("bfloat16", "fast"), ("bfloat16", "fast-compile"), ("float32", "fast")):
            r = _find(rows, model, "infer", dtype, variant)
            if r and "frac_of_peak" in r:
                path = "fast path" + (" + torch.compile" if variant == "fast-compile" else " (eager)")
                out.append(_target(f"{model} inference 512x512 b1, {path} {dtype}: % of {dtype} GEMM peak",
                                   f"{r['frac_of_peak']:.0%} ({r['tflops_achieved']:.3f} of "
                                   f"{r['peak_tflops']:.3f} TFLOP/s; best repeat {r['frac_of_peak_best']:.0%})",
                                   ">= 60%", r["frac_of_peak"] >= 0.6))
        label, twin = model + SMP_SUFFIX, f"smp:{smp_name(model)}"
        for c in comparisons:
            if c["model"] != model:
                continue
            what = f"{c['mode']} {c['dtype']} unetzoo {c['unetzoo_variant']} vs smp {c['smp_variant']}"
            flops_note = "" if c["flops_equal"] else " (FLOPs differ: compare FLOP/s)"
            if c["mode"] == "infer" and c["unetzoo_variant"] == "eager":
                ratio = 1 / c["speedup"]
                out.append(_target(f"{model}: {what}: time uz/smp{flops_note}",
                                   f"{ratio:.3f} (best repeats {1 / c['speedup_best']:.3f}; FLOP/s ratio "
                                   f"{c['flops_rate_ratio']:.2f})", "<= 1.05",
                                   ratio <= 1.05 if c["flops_equal"] else 1 / c["flops_rate_ratio"] <= 1.05))
            if c["mode"] == "infer" and c["unetzoo_variant"].startswith("fast"):
                # the target is against smp with channels_last + bf16 autocast; float32 is for reference
                ok = c["speedup"] >= 1.2 if c["flops_equal"] else c["flops_rate_ratio"] >= 1.2
                reference = c["dtype"] != "bfloat16"
                out.append(_target(f"{model}: {what}{flops_note}: speed-up",
                                   f"{c['speedup']:.2f}x (best repeats {c['speedup_best']:.2f}x; FLOP/s ratio "
                                   f"{c['flops_rate_ratio']:.2f})", "(reference)" if reference else ">= 1.2x",
                                   None if reference else ok))
            if c["mode"] == "train":
                saved = c.get("saved_per_gflop_ratio")
                out.append(_target(
                    f"{model}: {what}: training-step memory per FLOP uz/smp (saved activations, exact; RSS increase)",
                    (f"{saved:.2f} ({c['saved_mb_unetzoo']:.0f} vs {c['saved_mb_smp']:.0f} MB); " if saved else "")
                    + f"RSS {c['mem_per_gflop_ratio']:.2f} ({c['mem_increase_mb_unetzoo']:.0f} vs "
                    f"{c['mem_increase_mb_smp']:.0f} MB)", "<= 1.00",
                    saved <= 1.0 if saved is not None else c["mem_per_gflop_ratio"] <= 1.0))
        # on a CPU without native bf16, dtype='auto' is float32: compare that with smp's bf16 by hand
        # (with native bf16 the comparisons above already pair the bf16 fast path with it)
        auto, ref = _find(rows, label, "infer", "float32", "fast"), _find(rows, twin, "infer", "bfloat16", "cl")
        if auto and ref and not any(r.get("dtype") == "bfloat16" and r.get("variant") == "fast" for r in rows):
            speedup = ref["ms_per_image"] / auto["ms_per_image"]
            out.append(_target(f"{model}: fast path with dtype='auto' (float32 on this CPU) vs smp channels_last + "
                               "bf16 autocast by hand", f"{speedup:.2f}x", ">= 1.2x", speedup >= 1.2))
        smp_train = _find(rows, twin, "train", "bfloat16", "cl")
        for name in (model, label):
            train = _find(rows, name, "train", "bfloat16", "cl")
            if train and "frac_of_peak" in train:
                # the target is the model's own network; the smp-like configuration is there to compare
                # with smp at equal FLOPs, so its row is a reference next to smp's own figure
                reference = name == label
                goal = ">= 35%" if not reference else (
                    f"(reference: smp's Unet {smp_train['frac_of_peak']:.0%})" if smp_train else "(reference)")
                out.append(_target(f"{name}: bf16 training step 256x256 b8 (channels_last + autocast): % of bf16 peak",
                                   f"{train['frac_of_peak']:.0%} ({train['tflops_achieved']:.3f} TFLOP/s; best "
                                   f"repeat {train['frac_of_peak_best']:.0%})", goal,
                                   None if reference else train["frac_of_peak"] >= 0.35))
        train32 = _find(rows, label, "train", "float32", "eager")
        if train32 and "frac_of_peak" in train32:
            out.append(_target(f"{model}: fp32 training step 256x256 b8 (for reference): % of fp32 peak",
                               f"{train32['frac_of_peak']:.0%}", "(reference)", None))
    # a case that failed decides no target above, so it must not read as "every target met"
    for r in rows:
        if "error" in r:
            case = " ".join(str(r.get(k, "?")) for k in ("name", "mode", "dtype", "variant"))
            out.append(_target(f"case failed: {case}", str(r["error"]).splitlines()[0][:160], "runs", False))
    return out


def accuracy_markdown(rows: list[dict], norms: list[str], *, command: str, machine: dict, recipe: str) -> str:
    """The accuracy part's report: one line per model, a held-out IoU (and time) per decoder norm."""
    models = list(dict.fromkeys(r["name"] for r in rows))
    seeds = list(dict.fromkeys(r["seed"] for r in rows))
    cols = [*norms, "fixed"] if any(r["decoder_norm"] == "fixed" for r in rows) else list(norms)

    def cell(runs):
        """One seed: IoU (time); several: mean, then each seed's IoU (mean time)."""
        if not runs:
            return "-"
        failed = [r for r in runs if "error" in r]
        if failed:
            return f"error: {failed[0]['error'][:80]}"
        ious = [r["fg_iou"] for r in runs]
        seconds = sum(r["train_s"] for r in runs) / len(runs)
        mark = " *" if runs[0].get("default") and runs[0]["decoder_norm"] != "fixed" else ""
        if len(runs) == 1:
            return f"{ious[0]:.3f}{mark} ({seconds:.0f} s)"
        return f"{sum(ious) / len(ious):.3f}{mark} ({' / '.join(f'{x:.3f}' for x in ious)}; {seconds:.0f} s each)"

    parts = ["# unetzoo backbones: held-out IoU by decoder normalisation", "", "Command:", "", f"    {command}", "",
             "Machine and versions:", ""] + [f"- {k}: {v}" for k, v in machine.items()]
    parts += ["", f"Recipe: {recipe}", "",
              "Held-out foreground IoU after the last epoch (training time)"
              + (f"; with several seeds ({', '.join(str(s) for s in seeds)}: initial weights and augmentations), "
                 "their mean and then each seed's figure" if len(seeds) > 1 else f", seed {seeds[0]}")
              + ". `*`: the model's default (`none`: no norm layers in the decoder, the seed's design); "
              "`fixed`: a model without the `decoder_norm` option, trained as it is built.", "",
              "| model | " + " | ".join(f"decoder_norm={c}" if c != "fixed" else c for c in cols) + " |",
              "|---|" + "---|" * len(cols)]
    for model in models:
        runs = [r for r in rows if r["name"] == model]
        parts.append(f"| {model} | " + " | ".join(cell([r for r in runs if r["decoder_norm"] == c]) for c in cols)
                     + " |")
    return "\n".join(parts) + "\n"


def accuracy_part(args: argparse.Namespace, command: str) -> dict:
    """Fine-tune every model once per decoder norm; write ``<tag>.{md,csv,json}`` under ``--out``."""
    import json
    import os
    import time

    from unetzoo.bench.accuracy import accuracy_by_decoder_norm, accuracy_recipe, default_data_root, describe_recipe
    from unetzoo.bench.hardware import machine_info
    from unetzoo.bench.report import csv_text, write_reports

    root = args.accuracy_data or default_data_root()
    if not root:
        raise SystemExit("--part accuracy: no data set found next to the checkout (../shared/data/"
                         "dsb2018-nuclei-256); pass --accuracy-data DIR or --accuracy-data builtin:nuclei")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine, start = machine_info("cpu"), time.time()
    rows = accuracy_by_decoder_norm(args.models, root, norms=args.decoder_norms, seeds=args.seeds,
                                    epochs=args.accuracy_epochs, threads=args.threads,
                                    log=lambda m: print(m, file=sys.stderr, flush=True))
    machine["load_average_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    machine["elapsed"] = f"{time.time() - start:.0f} s"
    recipe = describe_recipe(accuracy_recipe("MODEL", root, epochs=args.accuracy_epochs))
    record = {"command": command, "machine": machine, "recipe": recipe, "rows": rows}
    paths = {"csv": out / f"{args.tag}.csv", "json": out / f"{args.tag}.json", "markdown": out / f"{args.tag}.md"}
    write_reports({
        paths["csv"]: csv_text(rows),
        paths["json"]: json.dumps(record, indent=1, default=str),
        paths["markdown"]: accuracy_markdown(rows, args.decoder_norms, command=command, machine=machine,
                                             recipe=recipe),
    })
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return {**record, "paths": paths}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["backbones", "targets", "accuracy", "all"], default="all",
                   help="all = backbones + targets")
    p.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS), help="models of the backbones part")
    p.add_argument("--target-models", nargs="+", default=["unet-resnet50", "unet-vgg16"])
    p.add_argument("--bf16-train", nargs="*", default=["unet-resnet50", "unet-vgg16"],
                   help="target models that also get a (slow on CPU) bfloat16 training step")
    p.add_argument("--bf16", choices=["auto", "always", "never"], default="auto",
                   help="bfloat16 cases of unetzoo (fast path, training): auto = only where the hardware runs "
                        "bfloat16 natively (AVX512-BF16/AMX, CUDA sm80+); smp's bf16 reference is always timed")
    p.add_argument("--no-accuracy", action="store_true")
    p.add_argument("--accuracy-epochs", type=int, default=8)
    p.add_argument("--accuracy-data", default="",
                   help="data of the accuracy fine-tunes (a folder of images/ + masks/, or builtin:nuclei); "
                        "default ../shared/data/dsb2018-nuclei-256")
    p.add_argument("--decoder-norms", nargs="+", default=["none", "bn", "gn"], choices=["none", "bn", "gn"],
                   help="--part accuracy: the decoder normalisations compared")
    p.add_argument("--seeds", nargs="+", type=int, default=[0],
                   help="--part accuracy: one fine-tune per seed (initial weights and augmentations)")
    p.add_argument("--tag", default="accuracy", help="--part accuracy: the file name of its report")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None,
                   help="folder of the reports (default benchmarks/results; with --quick a temporary folder)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, 1 epoch: check the pipeline, not the figures")
    args = p.parse_args(argv)
    if args.quick:
        SHAPES.update(infer=(1, 64), train=(2, 64))
        args.accuracy_epochs = 1
    if args.out is None:  # a pipeline check never replaces the published figures
        args.out = tempfile.mkdtemp(prefix="unetzoo-bench-quick-") if args.quick else str(HERE / "results")
        if args.quick:
            print(f"--quick: reports go to {args.out}")
    command = "python benchmarks/bench_backbones.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    failed = 0
    if args.part in ("backbones", "all"):
        from unetzoo.fast import native_bf16_supported

        (ib, isz), (tb, tsz) = SHAPES["infer"], SHAPES["train"]
        native = args.bf16 == "always" or (args.bf16 == "auto" and native_bf16_supported("cpu"))
        dtypes = ["float32", "bfloat16"] if native else ["float32"]
        cfg = BenchConfig(models=args.models, dtypes=dtypes, threads=args.threads, out_dir=args.out,
                          batch_sizes=[ib], sizes=[isz], train_batch_sizes=[tb], train_sizes=[tsz],
                          train_variants=["cl"],  # channels-last autocast, as the trainer runs on CPU
                          accuracy=not args.no_accuracy, accuracy_epochs=args.accuracy_epochs,
                          accuracy_data=args.accuracy_data, tag="backbones")
        failed += _failed(run_benchmark(cfg, command=command, notes=NOTES, title="unetzoo backbones"))
    if args.part in ("targets", "all"):
        from unetzoo.fast import native_bf16_supported

        bf16 = args.bf16 == "always" or (args.bf16 == "auto" and native_bf16_supported("cpu"))
        notes = NOTES + ([] if bf16 else [
            "This CPU has no native bfloat16 (no AVX512-BF16/AMX): the bf16 GEMM peak above is emulated and far "
            "below float32's, so unetzoo's fast path uses float32 here (dtype='auto') and its bf16 cases are not "
            "run (--bf16 always runs them); smp with channels_last + bf16 autocast by hand is timed once."])
        cfg = BenchConfig(models=args.target_models, dtypes=["float32", "bfloat16"], threads=args.threads,
                          out_dir=args.out, tag="targets")
        failed += _failed(run_benchmark(cfg, command=command,
                                        cases=target_cases(args.target_models, args.bf16_train, bf16),
                                        targets=targets, notes=notes, title="unetzoo speed targets vs smp"))
    if args.part == "accuracy":
        accuracy_part(args, command)
    if failed:
        print(f"bench_backbones: {failed} case(s) failed; their rows in {args.out} say why", file=sys.stderr)
    return 1 if failed else 0


def _failed(out: dict) -> int:
    return sum("error" in r for r in out["rows"])


if __name__ == "__main__":
    sys.exit(main())
