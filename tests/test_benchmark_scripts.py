"""The analysis scripts under benchmarks/ that the README quotes: they run and say what they claim."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

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


def test_the_boundary_oracle_scores_held_out_and_training_images_apart(tmp_path, capsys):
    torch.manual_seed(0)
    unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=[32, 16, 8, 8, 8]).save_pretrained(tmp_path / "m")
    module = _script("nuclei_boundary_oracle")
    counts = {}
    for images in ("held-out", "train"):
        assert module.main([str(tmp_path / "m"), "--images", images, "--max-shift", "1"]) == 0
        out = capsys.readouterr().out
        counts[images] = int(re.search(rf"^{images} images: (\d+)$", out, re.M).group(1))
        predicted = float(re.search(r"IoU as predicted: +([\d.]+)", out).group(1))
        oracle = float(re.search(r"\(\|k\| <= 1 px\): ([\d.]+)", out).group(1))
        assert oracle >= predicted  # a shift of 0 is among the oracle's choices
        assert re.search(r"^false-positive pixels \d+, missed \(false-negative\) pixels \d+$", out, re.M)
    assert counts == {"held-out": 20, "train": 80}
