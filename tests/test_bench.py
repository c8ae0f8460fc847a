"""The benchmark harness: its measuring primitives, the smp twin and seed baseline, a tiny run."""

from __future__ import annotations

import csv
import importlib.util
import platform
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import unetzoo
from unetzoo.bench.cases import Case, build_network, run_case, smp_like_options
from unetzoo.bench.hardware import matmul_peak
from unetzoo.bench.measure import Timing, count_flops, fastest_interleaved, saved_activation_bytes, time_callable
from unetzoo.bench.suite import compare_rows, smp_name

ROOT = Path(__file__).resolve().parents[1]
SEED_BASELINE = ROOT / "benchmarks" / "seed_resnet50_baseline.py"


def _script(name: str):
    """A script under benchmarks/ loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_baseline_is_the_seed_network_and_unetzoo_reproduces_it():
    torch.manual_seed(0)
    seed = _script("seed_resnet50_baseline").SeedUnet(num_classes=21).eval()
    assert sum(p.numel() for p in seed.parameters()) == 43_934_101  # SEED_SYSTEMS.md §1
    # the seed checkpoint layout loads into unetzoo through its converter; outputs agree
    model = unetzoo.create("unet-resnet50", checkpoint=seed.state_dict()).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), seed(x), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["unet-resnet18", "unet-resnet50", "unet-vgg16"])
def test_smp_like_options_give_smps_unet_exactly(name):
    smp = pytest.importorskip("segmentation_models_pytorch")
    ours = unetzoo.create(name, num_classes=3, **smp_like_options(name)).eval()
    theirs = smp.Unet(smp_name(name), encoder_weights=None, classes=3).eval()
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert count_flops(lambda: ours(x)) == count_flops(lambda: theirs(x))
    # a training step's activation memory: the tensors autograd keeps for backward. unetzoo's
    # decoder never materialises cat([up, skip]) (ConcatConv2d), so it keeps strictly less.
    ours.train(), theirs.train()
    assert saved_activation_bytes(ours, lambda: ours(x)) < saved_activation_bytes(theirs, lambda: theirs(x))


def test_saved_activation_bytes_counts_what_backward_keeps():
    lin = nn.Linear(256, 128)
    x = torch.randn(64, 256, requires_grad=True)
    # linear saves its input (64 x 256 floats) and the weight (a parameter: excluded); relu its output
    assert saved_activation_bytes(lin, lambda: torch.relu(lin(x))) == 4 * (64 * 256 + 64 * 128)
    with torch.no_grad():
        assert saved_activation_bytes(lin, lambda: lin(x)) == 0


def test_count_flops_matches_the_convolution_formula():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 10, 12)
    assert count_flops(lambda: conv(x)) == 2 * 2 * 16 * 8 * 9 * 10 * 12  # 2 x MACs


@pytest.mark.parametrize("groups", [1, 4, 16])
@pytest.mark.parametrize("transposed", [False, True])
def test_count_flops_of_a_training_step_matches_the_formula_for_grouped_convolutions(groups, transposed):
    """Forward, input gradient and weight gradient: each 2 x N x H x W x C_out x (C_in / groups) x k x k."""
    conv = (nn.ConvTranspose2d if transposed else nn.Conv2d)(16, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 16, 10, 12, requires_grad=True)
    one_pass = 2 * 2 * 10 * 12 * 16 * (16 // groups) * 9
    assert count_flops(lambda: conv(x)) == one_pass
    assert count_flops(lambda: conv(x).sum().backward()) == 3 * one_pass
    x.requires_grad_(False)  # a first layer: no input gradient
    assert count_flops(lambda: conv(x).sum().backward()) == 2 * one_pass


def test_timing_statistics():
    t = Timing.from_samples([4.0, 1.0, 2.0, 3.0, 5.0])
    assert (t.median, t.minimum, t.maximum, t.p25, t.p75) == (3.0, 1.0, 5.0, 2.0, 4.0)
    assert t.spread == pytest.approx(2.0 / 3.0)
    calls = []
    timing = time_callable(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 5 and timing.repeats == 3


def test_fastest_interleaved_takes_turns_and_keeps_each_functions_fastest_call(monkeypatch):
    import unetzoo.bench.measure as measure

    clock = [0.0]  # a fake perf_counter, advanced by the calls themselves: no real sleeps, no flakiness
    monkeypatch.setattr(measure.time, "perf_counter", lambda: clock[0])
    calls, durations = [], {"slow": iter([0.05, 0.02, 0.03]), "fast": iter([0.0, 0.001, 0.002])}

    def make(name):
        def fn():
            calls.append(name)
            clock[0] += next(durations[name])
        return fn

    best = fastest_interleaved({"slow": make("slow"), "fast": make("fast")}, rounds=2)
    assert calls == ["slow", "fast"] * 3  # one untimed call each, then turns
    assert best == pytest.approx({"slow": 0.02, "fast": 0.001})  # the untimed first calls do not count


_MONITOR_CHECK = """
import time, torch
from unetzoo.bench.measure import MemoryMonitor
with MemoryMonitor(interval=0.001) as mem:
    block = torch.ones(64 * 2**20 // 4)  # 64 MiB, touched
    time.sleep(0.3)  # long enough for the sampler, even on a busy machine
    del block
print(mem.increase)
"""


def test_memory_monitor_sees_a_large_allocation():
    # A fresh process: in this one, earlier tests leave freed but still resident heap memory
    # that the allocator may hand back without the RSS growing.
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _MONITOR_CHECK], capture_output=True, text=True, check=True)
    assert int(out.stdout.split()[-1]) >= 48 * 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").is_file(), reason="reads Linux's /proc/self/statm")
def test_resident_memory_without_psutil_agrees_with_psutil(monkeypatch):
    """psutil is in the bench extra only: a base install measures from /proc instead of failing."""
    import psutil

    from unetzoo.bench import measure

    with_psutil = psutil.Process().memory_info().rss
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now raises ImportError
    without = measure._rss()
    assert without == pytest.approx(with_psutil, rel=0.05)


_WASTEFUL_BUILDER = """
import torch
from torch import nn


class Scratchy(nn.Module):
    def forward(self, x):
        scratch = x.new_ones(64 << 20)  # 256 MiB of working memory per call, touched
        return x * 2 + scratch[0]


def Wasteful(num_classes=2):
    # like smp's VGG encoder, which builds torchvision's 411 MB classifier and drops it
    freed = torch.ones(512 << 20, dtype=torch.uint8)
    del freed
    return Scratchy()
"""


def test_memory_growth_is_not_hidden_by_memory_the_build_freed(tmp_path):
    """With the tuned allocator a network whose build freed 512 MiB would serve its 256 MiB of
    working memory from that kept heap, and its RSS growth would read about 0 MB: the case hands
    the free heap back first. Run in a fresh process, as the benchmarks run each case."""
    from dataclasses import asdict

    from unetzoo.bench.runner import run_isolated

    builder = tmp_path / "wasteful.py"
    builder.write_text(_WASTEFUL_BUILDER)
    row = run_isolated(asdict(Case(f"{builder}:Wasteful", size=32, warmup=1, repeats=1)))
    assert "error" not in row, row.get("error")
    assert row["mem_increase_mb"] >= 200, row["mem_increase_mb"]


def test_fractions_use_the_higher_of_the_peaks_before_and_after_the_cases():
    from unetzoo.bench.run import combine_peaks
    from unetzoo.bench.runner import add_peak_fraction

    start = [{"dtype": "float32", "flops": 2e12, "matmul": 2e12, "conv1x1": 1e12, "n": 2048},
             {"dtype": "bfloat16", "flops": 9e12, "matmul": 9e12, "conv1x1": 8e12, "n": 2048}]
    end = [{"dtype": "float32", "flops": 3e12, "matmul": 3e12, "conv1x1": 1e12, "n": 2048},
           {"dtype": "bfloat16", "flops": 7e12, "matmul": 7e12, "conv1x1": 7e12, "n": 2048}]
    peaks = {p["dtype"]: p for p in combine_peaks(start, end)}
    assert peaks["float32"]["flops"] == 3e12 and peaks["bfloat16"]["flops"] == 9e12
    assert (peaks["float32"]["flops_start"], peaks["float32"]["flops_end"]) == (2e12, 3e12)
    row = add_peak_fraction({"dtype": "float32", "tflops_achieved": 1.5}, {k: p["flops"] for k, p in peaks.items()})
    assert row["frac_of_peak"] == pytest.approx(0.5)


def test_matmul_peak_is_positive_and_consistent():
    peak = matmul_peak(torch.float32, max_n=256, repeats=2)
    assert peak.n == 256 and peak.flops == max(peak.matmul, peak.conv1x1) > 0


def test_run_case_reports_flops_time_and_memory():
    row = run_case(Case("unet-classic", size=32, options={"base_c": 8}, warmup=1, repeats=2))
    x = torch.randn(1, 3, 32, 32)
    model = unetzoo.create("unet-classic", num_classes=2, base_c=8).eval()
    with torch.no_grad():
        assert row["gflops"] == pytest.approx(count_flops(lambda: model(x)) / 1e9)
    assert row["params"] == model.num_parameters()
    assert row["time_s"] > 0 and row["tflops_achieved"] > 0 and row["repeats_done"] == 2
    if platform.machine() in ("x86_64", "AMD64"):  # denormals flushed for every network alike
        assert row["flush_denormal"] is True


@pytest.mark.slow
def test_compiled_case_counts_the_eager_networks_flops():
    """torch.compile runs kernels the FLOP counter cannot see; the case counts the eager network."""
    kw = dict(size=32, options={"base_c": 8}, warmup=1, repeats=1)
    eager, compiled = run_case(Case("unet-classic", **kw)), run_case(Case("unet-classic", variant="fast-compile", **kw))
    assert compiled["gflops"] == pytest.approx(eager["gflops"]) and compiled["time_s"] > 0


def test_train_case_counts_forward_and_backward():
    infer = run_case(Case("unet-classic", size=32, options={"base_c": 8}, warmup=0, repeats=1))
    train = run_case(Case("unet-classic", mode="train", size=32, options={"base_c": 8}, warmup=0, repeats=1))
    assert 2.5 < train["gflops"] / infer["gflops"] < 3.5  # backward ~ 2x forward


def test_cases_reject_training_the_fast_path():
    with pytest.raises(ValueError, match="inference-only"):
        Case("unet-resnet18", mode="train", variant="fast")


def test_build_network_from_a_python_file():
    net = build_network(Case(f"{SEED_BASELINE}:SeedUnet", num_classes=5))
    assert net.final.out_channels == 5


def test_compare_rows_pairs_unetzoo_with_its_smp_twin():
    def row(name, variant, ms, gflops=10.0, mem=100.0):
        return {"name": name, "mode": "infer", "dtype": "float32", "batch": 1, "size": 64, "variant": variant,
                "gflops": gflops, "params": 1, "ms_per_image": ms, "tflops_achieved": gflops / ms,
                "mem_increase_mb": mem}

    rows = [row("unet-resnet18 [smp-dec]", "eager", 10.0), row("smp:tu-resnet18", "eager", 12.0),
            row("unet-resnet18 [smp-dec]", "fast", 5.0, mem=50.0), row("smp:tu-resnet18", "cl", 8.0)]
    out = {r["unetzoo_variant"]: r for r in compare_rows(rows)}
    assert out["eager"]["speedup"] == pytest.approx(1.2) and out["eager"]["flops_equal"]
    assert out["fast"]["smp_variant"] == "cl" and out["fast"]["speedup"] == pytest.approx(1.6)
    assert out["fast"]["mem_per_gflop_ratio"] == pytest.approx(0.5)


def test_cli_bench_smoke(tmp_path):
    """A tiny end-to-end run: CSV and markdown are written and hold the measured rows."""
    from unetzoo.cli import main

    code = main(["bench", "unet-classic", "--size", "32", "--train-size", "32", "--train-batch", "2",
                 "--warmup", "1", "--repeats", "1", "--no-isolate", "--peak-max-n", "256",
                 "--out", str(tmp_path), "--tag", "smoke"])
    assert code == 0
    with (tmp_path / "smoke.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {(r["mode"], r["variant"]) for r in rows} == {("infer", "eager"), ("infer", "fast"), ("train", "eager")}
    assert all(float(r["gflops"]) > 0 and float(r["frac_of_peak"]) > 0 for r in rows)
    md = (tmp_path / "smoke.md").read_text()
    assert "unetzoo bench" in md and "Measured GEMM peak" in md and "| unet-classic | infer |" in md


def test_cli_bench_writes_its_reports_as_one_set(tmp_path, capsys, monkeypatch):
    """The reports were written one by one: a full disk left new CSV/markdown beside a truncated
    JSON, and a run without --compare-smp left an earlier run's smp comparison beside its own."""
    from unetzoo.cli import main

    argv = ["bench", "unet-classic", "--size", "32", "--modes", "infer", "--variants", "eager", "--warmup", "1",
            "--repeats", "1", "--no-isolate", "--peak-max-n", "128", "--out", str(tmp_path), "--tag", "t"]
    (tmp_path / "t_vs_smp.csv").write_text("an earlier run's comparison\n")
    assert main(argv) == 0
    assert not (tmp_path / "t_vs_smp.csv").exists()
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(before) == {"t.csv", "t.md", "t.json"}
    capsys.readouterr()
    real = Path.write_text

    def full_disk_for_json(self, *args, **kwargs):
        if ".t.json." in self.name:  # the JSON report's temporary file
            raise OSError(28, "No space left on device", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full_disk_for_json)
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert "cannot write the reports" in captured.err and "| unet-classic | infer |" in captured.out
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_cli_bench_checks_its_output_and_baselines_before_measuring(tmp_path, capsys):
    from unetzoo.cli import main

    (tmp_path / "afile").write_text("x")
    cases = [
        (["--out", str(tmp_path / "afile")], "is a file; give a folder for the reports"),
        (["--baseline", "nosuch.py"], "--baseline 'nosuch.py': expected FILE.py:Builder"),
        (["--baseline", str(tmp_path / "nosuch.py") + ":Net"], "there is no file"),
        (["--warmup", "0"], None),  # argparse: at least one untimed call
    ]
    for extra, needle in cases:
        try:
            code = main(["bench", "unet-classic", "--out", str(tmp_path / "out"), *extra])
        except SystemExit as exit_info:
            code = exit_info.code
        assert code == 2
        err = capsys.readouterr().err
        assert needle is None or needle in err, err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_a_case_above_the_gemm_peak_is_flagged():
    from unetzoo.bench.runner import add_peak_fraction

    with pytest.warns(RuntimeWarning, match="the peak was measured while the machine was busy"):
        row = add_peak_fraction({"name": "m", "dtype": "float32", "tflops_achieved": 0.5}, {"float32": 0.2e12})
    assert row["frac_of_peak"] == pytest.approx(2.5) and row["peak_unreliable"] is True
    assert "peak_unreliable" not in add_peak_fraction({"dtype": "float32", "tflops_achieved": 0.1},
                                                      {"float32": 0.2e12})


def test_cli_bench_checks_model_names_before_measuring(tmp_path, capsys):
    from unetzoo.cli import main

    assert main(["bench", "unet-classic", "unet-nope", "--out", str(tmp_path), "--tag", "x"]) == 2
    assert capsys.readouterr().err.startswith("unetzoo bench: error: unknown model 'unet-nope'")
    assert not list(tmp_path.iterdir())  # nothing measured, nothing written


def test_smp_vgg_taps_and_center_are_validated():
    model = unetzoo.create("unet-vgg16", num_classes=2, vgg_taps="smp", decoder_center=True,
                           decoder_channels=(16, 16, 8, 8, 8))
    assert model.encoder.channels == (128, 256, 512, 512, 512)
    assert model.encoder.reductions == (2, 4, 8, 16, 32)
    assert model(torch.randn(1, 3, 40, 72)).shape == (1, 2, 40, 72)  # padded to 32 and cropped back
    with pytest.raises(ValueError, match="vgg_taps applies only to torchvision VGG"):
        unetzoo.create("unet-resnet18", vgg_taps="smp")
    with pytest.raises(ValueError, match=r"\(unet-vgg16\), not timm 'vgg11'"):  # a VGG, but timm's
        unetzoo.create("unet-vgg11", vgg_taps="smp")
    with pytest.raises(ValueError, match="choose 'seed' or 'smp'"):
        unetzoo.create("unet-vgg16", vgg_taps="timm")


def test_only_models_with_the_option_take_a_decoder_norm_and_the_default_is_none():
    from unetzoo.bench.accuracy import default_decoder_norm, takes_decoder_norm

    assert takes_decoder_norm("unet-resnet18") and takes_decoder_norm("unet-convnext_tiny")
    assert not takes_decoder_norm("unet-classic") and not takes_decoder_norm("unet-strided")
    # the seed's decoder has no norm layers, and that is what create() builds without options
    assert default_decoder_norm("unet-resnet18") == "none"
    model = unetzoo.create("unet-resnet18", decoder_channels=[8, 8, 8, 8, 8])
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)) for m in model.decoder.modules())


def test_accuracy_by_decoder_norm_trains_each_norm_and_seed_and_keeps_going_after_a_failure(monkeypatch):
    from unetzoo.bench import accuracy

    calls = []

    def fake(model, root, **recipe):
        calls.append((model, dict(recipe["options"]), recipe["seed"], recipe["epochs"]))
        if model == "unet-vgg16" and recipe["options"].get("decoder_norm") == "gn" and recipe["seed"] == 5:
            raise RuntimeError("out of memory")
        return {"name": model, "fg_iou": 0.5, "train_s": 1.0}

    monkeypatch.setattr(accuracy, "fine_tune_iou", fake)
    logged = []
    rows = accuracy.accuracy_by_decoder_norm(["unet-vgg16", "unet-classic"], "data", norms=("bn", "gn"),
                                             seeds=(0, 5), epochs=3,
                                             options={"decoder_channels": [8, 8, 8, 8, 8]}, log=logged.append)
    bn, gn, plain = ({"decoder_channels": [8, 8, 8, 8, 8], **extra}
                     for extra in ({"decoder_norm": "bn"}, {"decoder_norm": "gn"}, {}))
    assert calls == [("unet-vgg16", bn, 0, 3), ("unet-vgg16", bn, 5, 3), ("unet-vgg16", gn, 0, 3),
                     ("unet-vgg16", gn, 5, 3), ("unet-classic", plain, 0, 3), ("unet-classic", plain, 5, 3)]
    assert [(r["name"], r["decoder_norm"], r["seed"]) for r in rows] == [
        ("unet-vgg16", "bn", 0), ("unet-vgg16", "bn", 5), ("unet-vgg16", "gn", 0), ("unet-vgg16", "gn", 5),
        ("unet-classic", "fixed", 0), ("unet-classic", "fixed", 5)]
    assert rows[3]["error"] == "RuntimeError: out of memory" and "fg_iou" not in rows[3]
    assert [r["default"] for r in rows] == [False] * 4 + [True] * 2
    calls.clear()
    rows = accuracy.accuracy_by_decoder_norm(["unet-resnet18"], "data", epochs=1)
    assert [c[1].get("decoder_norm") for c in calls] == ["none", "bn", "gn"]
    assert [r["default"] for r in rows] == [True, False, False]
    assert any("decoder_norm=gn, seed 5" in line for line in logged)


def test_the_accuracy_table_gives_the_mean_and_each_seed():
    module = _script("bench_backbones")
    rows = [{"name": "unet-resnet18", "decoder_norm": n, "seed": s, "fg_iou": iou, "train_s": t, "default": n == "bn"}
            for n, s, iou, t in (("bn", 0, 0.6, 10), ("bn", 1, 0.7, 20), ("gn", 0, 0.5, 30), ("gn", 1, 0.8, 30))]
    rows.append({"name": "unet-vgg16", "decoder_norm": "bn", "seed": 0, "error": "RuntimeError: boom"})
    md = module.accuracy_markdown(rows, ["bn", "gn"], command="cmd", machine={"cpu": "x"}, recipe="r")
    assert "| unet-resnet18 | 0.650 * (0.600 / 0.700; 15 s each) | 0.650 (0.500 / 0.800; 30 s each) |" in md
    assert "| unet-vgg16 | error: RuntimeError: boom | - |" in md
    assert "several seeds (0, 1: initial weights and augmentations)" in md


def test_quick_pipeline_checks_never_write_the_published_results(monkeypatch, capsys):
    module = _script("bench_backbones")
    seen = []
    monkeypatch.setattr(module, "accuracy_part", lambda args, command: seen.append(args.out))
    assert module.main(["--part", "accuracy", "--quick"]) == 0
    assert Path(seen[0]).resolve() != (ROOT / "benchmarks" / "results").resolve()
    assert f"reports go to {seen[0]}" in capsys.readouterr().out
    assert module.main(["--part", "accuracy"]) == 0  # without --quick: the published folder
    assert Path(seen[1]).resolve() == (ROOT / "benchmarks" / "results").resolve()


def test_bench_accuracy_part_writes_both_columns_from_real_fine_tunes(tmp_path):
    """One real 1-epoch fine-tune per column on 10 of the shipped nuclei images."""
    import json
    import shutil

    assets = Path(unetzoo.__file__).parent / "assets" / "nuclei"
    for sub in ("images", "masks"):
        (tmp_path / "data" / sub).mkdir(parents=True)
        for f in sorted((assets / sub).iterdir())[:10]:
            shutil.copy(f, tmp_path / "data" / sub / f.name)
    module = _script("bench_backbones")
    out = tmp_path / "results"
    assert module.main(["--part", "accuracy", "--quick", "--models", "unet-resnet18", "unet-classic",
                        "--decoder-norms", "bn", "gn", "--accuracy-data", str(tmp_path / "data"),
                        "--out", str(out), "--tag", "acc"]) == 0
    rows = json.loads((out / "acc.json").read_text())["rows"]
    assert [(r["name"], r["decoder_norm"], r["seed"]) for r in rows] == [
        ("unet-resnet18", "bn", 0), ("unet-resnet18", "gn", 0), ("unet-classic", "fixed", 0)]
    assert all(0.0 <= r["fg_iou"] <= 1.0 and r["epochs"] == 1 for r in rows)
    md = (out / "acc.md").read_text()
    assert f"random init, 1 epoch on {tmp_path / 'data'}, batch 8, 128 px crops" in md
    assert "| model | decoder_norm=bn | decoder_norm=gn | fixed |" in md
    line = next(x for x in md.splitlines() if x.startswith("| unet-resnet18 |"))
    assert f"| {rows[0]['fg_iou']:.3f} (" in line and f"| {rows[1]['fg_iou']:.3f} (" in line
    assert next(x for x in md.splitlines() if x.startswith("| unet-classic |")).endswith(
        f"| - | - | {rows[2]['fg_iou']:.3f} ({rows[2]['train_s']:.0f} s) |")
    with open(out / "acc.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) == 3


def test_bench_accuracy_part_without_data_says_how_to_give_it(tmp_path, monkeypatch):
    monkeypatch.setenv("UNETZOO_SHARED", str(tmp_path / "nowhere"))
    module = _script("bench_backbones")
    with pytest.raises(SystemExit, match="pass --accuracy-data DIR or --accuracy-data builtin:nuclei"):
        module.main(["--part", "accuracy", "--models", "unet-resnet18", "--out", str(tmp_path)])
    assert not (tmp_path / "accuracy.md").exists()


def test_a_failed_case_shows_as_an_unmet_target_and_fails_the_script(monkeypatch, capsys):
    """A case that errors decides no target; the table must not then read as every target met."""
    module = _script("bench_backbones")
    rows = [{"name": "unet-resnet50", "mode": "infer", "dtype": "bfloat16", "variant": "fast",
             "error": "RuntimeError: oneDNN said no\ntraceback..."}]
    table = module.targets(rows, [], {})
    assert table[-1] == {"target": "case failed: unet-resnet50 infer bfloat16 fast",
                         "measured": "RuntimeError: oneDNN said no", "goal": "runs", "met": False}
    monkeypatch.setattr(module, "run_benchmark", lambda cfg, **kw: {"rows": [*rows, {"name": "ok"}]})
    assert module.main(["--part", "backbones", "--quick", "--models", "unet-resnet50"]) == 1
    assert "1 case(s) failed" in capsys.readouterr().err


def test_the_variants_preparation_is_outside_the_memory_monitor(monkeypatch):
    """'+MB in step' is the calls' growth: the one-off preparation (channels-last copies, folded
    and prepacked weights) happens before the monitor starts, and the FLOP count too."""
    import unetzoo.bench.cases as cases

    events = []
    real_prepare, real_count = cases._prepare, cases.count_flops

    class Monitor(cases.MemoryMonitor):
        def __enter__(self):
            events.append("monitor")
            return super().__enter__()

    monkeypatch.setattr(cases, "MemoryMonitor", Monitor)
    monkeypatch.setattr(cases, "_prepare", lambda *a: (events.append("prepare"), real_prepare(*a))[1])
    monkeypatch.setattr(cases, "count_flops", lambda fn: (events.append("flops"), real_count(fn))[1])
    row = run_case(Case("unet-classic", variant="fast", size=32, options={"base_c": 4}, warmup=1, repeats=1))
    assert "error" not in row and events == ["flops", "prepare", "monitor"]


def test_memory_columns_are_titled_by_what_was_measured():
    from unetzoo.bench.report import results_table

    row = {"name": "unet-x", "mode": "infer", "mem_peak_mb": 10.0}
    assert "peak RSS MB" in results_table([{**row, "device": "cpu"}])
    cuda = results_table([{**row, "device": "cuda:0"}])
    assert "peak CUDA MB" in cuda and "RSS" not in cuda
    assert "peak memory MB" in results_table([{**row, "device": "cpu"}, {**row, "device": "cuda"}])


def test_compare_smp_names_the_models_it_measures_without_a_twin(tmp_path, capsys):
    from unetzoo.bench.suite import BenchConfig, smp_twinless

    cfg = BenchConfig(models=["unet-classic", "unet-resnet18"], compare_smp=True)
    alone = smp_twinless(cfg)
    assert list(alone) == ["unet-classic"] and "no pretrained-encoder twin in smp" in alone["unet-classic"]
    assert smp_twinless(BenchConfig(models=["unet-classic"], compare_smp=False)) == {}
    from unetzoo.cli import main

    assert main(["bench", "unet-classic", "--compare-smp", "--modes", "infer", "--size", "32", "--repeats", "1",
                 "--warmup", "1", "--variants", "eager", "--no-isolate", "--peak-max-n", "128",
                 "--out", str(tmp_path), "--tag", "t"]) == 0
    assert "--compare-smp: unet-classic has no pretrained-encoder twin in smp" in capsys.readouterr().err
    assert "unet-classic has no smp twin" in (tmp_path / "t.md").read_text(encoding="utf-8")
