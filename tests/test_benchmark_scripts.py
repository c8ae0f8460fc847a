"""The analysis scripts under benchmarks/ that the README quotes: they run and say what they claim."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from PIL import Image

import unetzoo

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_border_weight_picture_is_drawn_and_timed(tmp_path, capsys):
    module = _script("plot_border_weights")
    out = tmp_path / "w.png"
    assert module.main(["-o", str(out)]) == 0
    assert "border_weight_map, 4 nuclei masks, 128² crops:" in capsys.readouterr().out
    assert Image.open(out).size[0] > 600
    assert module.main(["--image", "no-such-image", "-o", str(out), "--no-timing"]) == 2


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    """A small random-init two-class model in save_pretrained format (the scripts only need one)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("oracle") / "m"
    unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=[32, 16, 8, 8, 8]).save_pretrained(path)
    return str(path)


def test_the_boundary_oracle_scores_held_out_and_training_images_apart(tiny_model, capsys):
    module = _script("nuclei_boundary_oracle")
    counts = {}
    for images in ("held-out", "train"):
        assert module.main([tiny_model, "--images", images, "--max-shift", "1"]) == 0
        out = capsys.readouterr().out
        counts[images] = int(re.search(rf"^{images} images: (\d+)$", out, re.M).group(1))
        predicted = float(re.search(r"IoU as predicted: +([\d.]+)", out).group(1))
        oracle = float(re.search(r"\(\|k\| <= 1 px\): ([\d.]+)", out).group(1))
        assert oracle >= predicted  # a shift of 0 is among the oracle's choices
        fp, fn = map(int, re.search(r"^false-positive pixels (\d+), missed \(false-negative\) pixels (\d+)$", out, re.M).groups())
        fp_objects, fn_objects = map(int, re.search(r"^  of which whole nuclei: (\d+) in invented nuclei, (\d+) in missed", out, re.M).groups())
        assert fp_objects <= fp and fn_objects <= fn
    assert counts == {"held-out": 20, "train": 80}


def test_the_boundary_level_is_the_inner_ring_on_a_background_to_nuclei_scale():
    module = _script("nuclei_boundary_oracle")
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[8:20, 8:20] = True
    grey = torch.full((32, 32), 10.0)  # background 10, nuclei 30, the inner 1-px ring 15
    grey[mask] = 30.0
    ring = mask & ~module._shift(mask, -1)
    assert int(ring.sum()) == 4 * 11
    grey[ring] = 15.0
    # the nuclei's median is over the whole mask: 100 interior pixels at 30 against 44 ring pixels
    assert module._boundary_level(grey, mask, mask) == (15 - 10) / (30 - 10)
    assert module._closest({-1.0: 0.9, 0.0: float("nan"), 1.0: 0.4}, 0.5) == 1.0
    assert module._closest({-1.0: float("nan"), 1.0: float("nan")}, 0.5) == 0.0


def test_whole_object_errors_count_only_nuclei_the_other_mask_never_touches():
    module = _script("nuclei_boundary_oracle")
    truth = torch.zeros(16, 16, dtype=torch.bool)
    pred = torch.zeros(16, 16, dtype=torch.bool)
    truth[1:4, 1:4] = True     # found, with a 1-px overhang in the prediction (not a whole object)
    pred[1:4, 1:5] = True
    truth[8:10, 8:10] = True   # missed: 4 pixels
    pred[12:15, 1:3] = True    # invented: 6 pixels
    truth[12:13, 12:16] = True  # found diagonally: 8-connected pieces count as one nucleus
    truth[13:14, 11:12] = True
    pred[12:13, 15:16] = True
    assert module._whole_object_pixels(pred, truth) == (6, 4)


def test_the_style_probe_reports_both_correlations_and_three_ious(tiny_model, capsys):
    module = _script("nuclei_boundary_oracle")
    assert module.main([tiny_model, "--max-shift", "0", "--style-probe"]) == 0
    out = capsys.readouterr().out
    as_predicted = float(re.search(r"IoU as predicted: +([\d.]+)", out).group(1))
    probe = dict(re.findall(r"threshold set by (.+?): +([\d.]+)$", out, re.M))
    assert set(probe) == {"as predicted", "level from the histogram", "true level (oracle)"}
    assert abs(float(probe["as predicted"]) - as_predicted) < 1e-3  # threshold 0 is the argmax
    assert len(re.findall(r"^  correlation, .+: +(-?[\d.]+|nan)$", out, re.M)) == 2
    shared = float(re.search(r"best single threshold for all images \(oracle, [-+][\d.]+\): ([\d.]+)$", out, re.M).group(1))
    assert shared >= float(probe["as predicted"]) - 1e-4  # threshold 0 is among its choices


def test_the_ensemble_of_one_model_twice_scores_like_the_model_and_like_the_oracle_script(tiny_model, capsys):
    ensemble = _script("nuclei_ensemble")
    assert ensemble.main([tiny_model, tiny_model]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^held-out images: 20, test-time augmentation: none$", out, re.M)
    scores = [float(v) for v in re.findall(r"^pooled foreground IoU ([\d.]+)  ", out, re.M)]
    assert len(scores) == 3 and "ensemble of 2" in out
    assert scores[0] == scores[1] == scores[2]  # averaging identical probabilities changes nothing
    assert _script("nuclei_boundary_oracle").main([tiny_model, "--max-shift", "0"]) == 0
    oracle = float(re.search(r"IoU as predicted: +([\d.]+)", capsys.readouterr().out).group(1))
    assert abs(oracle - scores[0]) < 1e-3  # softmax > 0.5 is the argmax the oracle script uses


@pytest.mark.parametrize("tta", ["flips", "d8"])
def test_the_ensembles_test_time_augmentation_averages_the_symmetries(tiny_model, tta, capsys):
    """Checked against an independent average: rotations of the image and of its mirror image."""
    module = _script("nuclei_ensemble")
    model = unetzoo.from_pretrained(tiny_model).eval()
    x = torch.randn(1, 3, 32, 32)
    # the four flips are the rotations by 0 and 180 degrees of the image and of its mirror
    # image; d8 adds the rotations by 90 and 270 degrees
    turns = (0, 2) if tta == "flips" else (0, 1, 2, 3)
    with torch.no_grad():
        views = [
            torch.rot90(model(torch.rot90(v, k, (-2, -1))).float().softmax(1)[:, 1], -k, (-2, -1))
            for v in (x, x.flip(-1)) for k in turns
        ]
        expected = torch.stack([*views[: len(turns)], *(v.flip(-1) for v in views[len(turns):])]).mean(0)
        plain = model(x).float().softmax(1)[:, 1]
        torch.testing.assert_close(module.foreground(model, x, tta), expected, rtol=0, atol=1e-5)
        torch.testing.assert_close(module.foreground(model, x), plain, rtol=0, atol=0)
    assert (expected - plain).abs().max() > 1e-3  # the model is not symmetric: the test can tell

    assert module.main([tiny_model, "--tta", tta]) == 0
    assert re.search(rf"^held-out images: 20, test-time augmentation: {tta}$", capsys.readouterr().out, re.M)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a CUDA GPU")
@pytest.mark.parametrize("name", ["gpu_train_step", "gpu_pair_timing"])
def test_the_gpu_scripts_refuse_clearly_without_a_gpu(name, monkeypatch):
    monkeypatch.setattr("sys.argv", [name, *(["unet-resnet18"] if name == "gpu_pair_timing" else [])])
    with pytest.raises(SystemExit, match=f"{name}.py needs a CUDA GPU"):
        _script(name).main()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on machines without a CUDA GPU")
def test_the_gpu_check_script_refuses_clearly_without_a_gpu(tmp_path):
    import subprocess
    import sys

    run = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh"), str(tmp_path / "out")], capture_output=True,
                         text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable})
    assert run.returncode == 2 and "no CUDA GPU visible" in run.stderr
    assert not (tmp_path / "out").exists()


def test_the_cpu_bf16_training_benchmark_times_each_route_side_by_side(capsys):
    module = _script("bench_cpu_bf16_training")
    assert module.main(["--batch", "2", "--size", "32", "--rounds", "1", "--step-rounds", "1"]) == 0
    out = capsys.readouterr().out
    norms = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$", out, re.M)
    assert [(int(c), int(s)) for c, s, *_ in norms] == module.DEMO_SHAPES
    convs = re.findall(r"^\| (\d+) \| (\d+) \| (\d) \| (\d) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \|$", out, re.M)
    assert [tuple(map(int, row[:4])) for row in convs] == module.DEPTHWISE_SHAPES
    steps = re.findall(r"^\| ([^|\d][^|]*) \| ([\d.]+) \| ([\d.]+)x \| ([\d.]+) \|$", out, re.M)
    assert [label for label, *_ in steps] == list(module.VARIANTS)
    assert all(float(ms) > 0 for _, ms, _, _ in steps) and steps[0][2] == "1.00"
    saved = [float(mib) for *_, mib in steps]
    assert saved[0] == saved[1] < saved[2]  # the same tensors kept, then float32 depthwise inputs


def test_the_cpu_bf16_training_benchmark_swaps_in_torchs_group_norm_with_the_same_weights():
    module = _script("bench_cpu_bf16_training")
    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_norm="gn", decoder_channels=(32, 16, 16, 8, 8))
    x = torch.randn(1, 3, 32, 32)
    expected = model.eval()(x)
    swapped = module._with_torch_group_norm(model)
    norms = [m for m in swapped.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert norms and not any(isinstance(m, module.GroupNorm) for m in norms)
    torch.testing.assert_close(swapped(x), expected)


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_every_benchmark_script_answers_help_without_running(path, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr("sys.argv", [str(path), "--help"])
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # as `python benchmarks/NAME.py` has it
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage:"), out[:300]
    assert "|---" not in out  # no measurement table: --help must not start the benchmark


@pytest.mark.parametrize("size,nearest", [(512, 508), (2048, 2044)])
def test_the_model_table_measures_unet_original_at_the_nearest_valid_size(size, nearest):
    """508 is nearer 512 than 524 is; 2048 (beyond valid_input_sizes' default upper bound) works."""
    from torch.utils.flop_counter import FlopCounterMode

    module = _script("model_table")
    _, gflops, _ = module.measure("unet-original", size)
    with torch.device("meta"):
        model = unetzoo.create("unet-original").eval()
        with FlopCounterMode(display=False) as counter:
            model(torch.empty(1, model.in_chans, nearest, nearest))
    assert gflops == counter.get_total_flops() / 1e9


def test_the_timm_backbone_check_builds_a_family_and_reports_failures(monkeypatch, capsys):
    import timm

    module = _script("check_timm_backbones")
    n = len(timm.list_models("convmixer_*"))
    assert module.main(["convmixer_*"]) == 0  # stride-7 features: built since the decoder rounds up
    assert f": {n} of {n} architectures build as U-Nets" in capsys.readouterr().out
    real = module.unetzoo.create
    def create(name, **kw):
        if "768_32" in name:
            raise ValueError("no")
        return real(name, **kw)

    monkeypatch.setattr(module.unetzoo, "create", create)
    assert module.main(["convmixer_*"]) == 1
    assert "convmixer_768_32: ValueError: no" in capsys.readouterr().out
