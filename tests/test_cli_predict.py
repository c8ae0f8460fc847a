"""The ``unetzoo predict``, ``unetzoo list`` and ``unetzoo info`` commands, run in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import unetzoo
from unetzoo import io
from unetzoo.cli import main
from unetzoo.cli.predict_cmd import collect_images, load_model

torch.set_num_threads(2)


def _write_rgb(path: Path, h: int, w: int, seed: int) -> np.ndarray:
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([(yy * 255 // h), (xx * 255 // w), rs.randint(0, 256, (h, w))], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return img


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = unetzoo.create("unet-classic", base_c=4, bilinear=True, num_classes=2)
    folder = tmp_path_factory.mktemp("model")
    model.save_pretrained(folder)
    return folder


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    _write_rgb(folder / "a.png", 40, 52, 0)
    _write_rgb(folder / "sub" / "b.jpg", 33, 47, 1)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    (folder / "notes.txt").write_text("ignored: not an image")
    return folder


def test_predict_folder_writes_labels_overlays_probs_and_reports_bad_files(saved_model, images, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["predict", str(saved_model), str(images), "--out", str(out), "--probs", "--tile", "32"])
    err = capsys.readouterr().err
    assert rc == 1  # one unreadable image
    assert "broken.png" in err and "a.png" not in err
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert written == [
        "a_labels.png", "a_overlay.png", "a_prob.png",
        "sub/b_labels.png", "sub/b_overlay.png", "sub/b_prob.png",
    ]  # fmt: skip
    labels = Image.open(out / "a_labels.png")
    assert labels.mode == "P" and labels.size == (52, 40)
    assert labels.getpalette()[3:6] == [128, 0, 0]  # VOC colour of class 1
    prob = np.asarray(Image.open(out / "a_prob.png"))
    assert prob.dtype == np.uint16 and prob.shape == (40, 52)
    # the label map is the thresholded foreground probability
    np.testing.assert_array_equal(np.asarray(labels) == 1, prob > 32767)
    overlay = np.asarray(Image.open(out / "sub" / "b_overlay.png"))
    assert overlay.shape == (33, 47, 3) and overlay.dtype == np.uint8


def test_predict_fast_path_gives_the_same_labels(saved_model, tmp_path, monkeypatch):
    import unetzoo.fast

    optimized = []
    real = unetzoo.fast.optimize_for_inference
    monkeypatch.setattr(unetzoo.fast, "optimize_for_inference",
                        lambda model, **kw: optimized.append(kw) or real(model, **kw))
    _write_rgb(tmp_path / "in" / "c.png", 70, 90, 2)
    outs = {}
    for extra in ([], ["--fast", "--dtype", "float32"], ["--fast"]):
        out = tmp_path / ("out" + "".join(extra))
        assert main(["predict", str(saved_model), str(tmp_path / "in"), "--out", str(out), "--tile", "64", *extra]) == 0
        outs[tuple(extra)] = np.asarray(Image.open(out / "c_labels.png"))
    plain = outs[()]
    assert optimized == [{"dtype": "float32"}, {"dtype": "auto"}]
    assert (outs[("--fast", "--dtype", "float32")] == plain).mean() >= 0.999  # BN folding: rounding only
    assert (outs[("--fast",)] == plain).mean() >= 0.98  # bfloat16 where native, else float32


def test_predict_registry_name_with_foreign_checkpoint_matches_the_original_network(tmp_path, capsys):
    """A WZMIAOMIAO checkpoint (base_c inferred) through the CLI gives the original network's labels."""
    from reference import randomize, wzmiaomiao

    ref = randomize(wzmiaomiao.UNet(in_channels=3, num_classes=3, bilinear=True, base_c=4)).eval()
    ckpt = tmp_path / "wz.pth"
    torch.save({"model": ref.state_dict()}, ckpt)
    img = _write_rgb(tmp_path / "in" / "scan.png", 48, 64, 2)
    rc = main(["predict", "unet-classic", str(tmp_path / "in" / "scan.png"), "--checkpoint", str(ckpt),
               "--out", str(tmp_path / "out"), "--no-overlay"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    x = (torch.from_numpy(img).permute(2, 0, 1) / 255.0 - torch.tensor([0.709, 0.381, 0.224])[:, None, None]) / (
        torch.tensor([0.127, 0.079, 0.043])[:, None, None]
    )  # as WZMIAOMIAO's predict.py normalises: its DRIVE statistics
    with torch.no_grad():
        expected = ref(x[None])["out"][0].argmax(0).numpy()
    got = np.asarray(Image.open(tmp_path / "out" / "scan_labels.png"))
    assert (got == expected).mean() > 0.999  # ties aside, identical
    assert not (tmp_path / "out" / "scan_overlay.png").exists()


def test_nothing_written_is_lost_and_writes_are_atomic(saved_model, images, tmp_path):
    out = tmp_path / "out"
    main(["predict", str(saved_model), str(images / "a.png"), "--out", str(out)])
    before = (out / "a_labels.png").read_bytes()
    bad = [str(images / "broken.png"), str(tmp_path / "missing.png")]
    rc = main(["predict", str(saved_model), *bad, "--out", str(out)])
    assert rc == 1
    assert (out / "a_labels.png").read_bytes() == before
    target = out / "a_overlay.png"
    old = target.read_bytes()
    with pytest.raises(RuntimeError), io.atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == old
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_overlay_tints_foreground_only():
    img = np.full((4, 4), 100, np.uint8)
    labels = np.zeros((4, 4), np.int64)
    labels[1, 2] = 1
    ov = io.overlay(img, labels, alpha=0.5)
    assert ov[0, 0].tolist() == [100, 100, 100]
    assert ov[1, 2].tolist() == [114, 50, 50]  # (100 + 128) / 2, (100 + 0) / 2 with VOC class 1 = (128, 0, 0)


def test_io_round_trips_keep_values(tmp_path):
    labels = np.random.RandomState(0).randint(0, 21, (9, 11))
    io.write_label_png(tmp_path / "l.png", labels)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "l.png")), labels)
    prob = np.linspace(0, 1, 99).reshape(9, 11)
    io.write_probability_png(tmp_path / "p.png", prob)
    np.testing.assert_array_equal(io.read_image(tmp_path / "p.png"), np.round(prob * 65535).astype(np.uint16))
    grey16 = io.read_image(tmp_path / "p.png", channels=3)  # 16-bit grey kept at full range, replicated
    assert grey16.dtype == np.uint16 and grey16.shape == (9, 11, 3) and grey16.max() == 65535
    with pytest.raises(io.ImageReadError, match="missing.png"):
        io.read_image(tmp_path / "missing.png")


def test_collect_images_keeps_subfolders_and_separates_clashing_names(tmp_path):
    _write_rgb(tmp_path / "x" / "a.png", 8, 8, 0)
    _write_rgb(tmp_path / "x" / "a.jpg", 8, 8, 0)
    _write_rgb(tmp_path / "x" / "out" / "old_overlay.png", 8, 8, 0)  # inside the output folder: skipped
    found, missing = collect_images([str(tmp_path / "x"), str(tmp_path / "nope")], exclude=tmp_path / "x" / "out")
    assert sorted(stem.as_posix() for _, stem in found) == ["a_jpg", "a_png"]
    assert missing == [str(tmp_path / "nope")]


def test_load_model_dispatch(saved_model, monkeypatch):
    assert load_model(str(saved_model)).config.name == "unet-classic"
    calls = []
    monkeypatch.setattr(unetzoo, "from_pretrained", lambda repo, **kw: calls.append((repo, kw)) or "hub-model")
    assert load_model("org/cells", revision="v1") == "hub-model"
    assert calls == [("org/cells", {"revision": "v1"})]

    def offline(repo, **kw):
        raise FileNotFoundError("not in the cache and HF_HUB_OFFLINE=1")

    monkeypatch.setattr(unetzoo, "from_pretrained", offline)
    with pytest.raises(ValueError, match="cannot load 'org/cells'.*HF_HUB_OFFLINE"):
        load_model("org/cells")
    with pytest.raises(ValueError, match="--checkpoint"):
        load_model(str(saved_model), checkpoint=Path("x.pth"))


def test_predict_bad_model_or_no_images_exit_2(images, tmp_path, capsys):
    assert main(["predict", "unet-resnt50", str(images), "--out", str(tmp_path / "o")]) == 2
    assert "unet-resnet50" in capsys.readouterr().err  # the suggestion
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "unet-classic", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.splitlines() == [f"unetzoo predict: error: input {missing} does not exist"]
    assert main(["predict", "unet-classic", str(missing), str(empty), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"unetzoo predict: error: input {missing} does not exist",
        f"unetzoo predict: error: no images found in {empty}",
    ]


# ----------------------------------------------------------------------------- list / info
def test_list_marks_curated_models_and_filters(capsys):
    assert main(["list", "unet-res*"]) == 0
    lines = capsys.readouterr().out.splitlines()
    marked = {line.split()[0] for line in lines if line.endswith("curated")}
    assert {"unet-resnet18", "unet-resnet34", "unet-resnet50"} <= marked
    assert "unet-resnet101" in {line.split()[0] for line in lines} - marked  # any timm backbone, unmarked
    assert main(["list", "vgg16", "--pretrained", "--curated"]) == 0
    assert capsys.readouterr().out.split() == ["unet-vgg16.tv_in1k", "curated"]
    assert main(["list", "no_such_model_zzz"]) == 1


def test_info_prints_encoder_weights_and_options(capsys):
    assert main(["info", "unet-resnet50"]) == 0
    out = capsys.readouterr().out
    assert "torchvision resnet50" in out
    assert "64, 256, 512, 1024, 2048" in out and "2, 4, 8, 16, 32" in out  # torchvision ResNet-50 taps
    assert "tv_in1k (default)" in out and "0.485, 0.456, 0.406" in out and "bsd-3-clause" in out
    assert "decoder_channels = None" in out
    assert main(["info", "unet-original"]) == 0
    out = capsys.readouterr().out
    assert "31,030,658" in out and "dropout = 0.0" in out  # SEED_SYSTEMS §4
    assert main(["info", "unet-resnt50"]) == 2
    assert "unet-resnet50" in capsys.readouterr().err


def test_info_takes_the_weights_tags_create_takes(capsys):
    """timm's tags for a curated model's encoder (what unetzoo.create accepts), selected and described."""
    from unetzoo.registry import get_spec
    from unetzoo.weights.loader import resolve_weights

    assert "tv_in1k" not in get_spec("unet-resnet18").tags  # not registered: from timm
    assert main(["info", "unet-resnet18.tv_in1k"]) == 0
    out = capsys.readouterr().out
    selected = [line for line in out.splitlines() if "(selected)" in line]
    assert len(selected) == 1 and "tv_in1k" in selected[0]
    assert resolve_weights(get_spec("unet-resnet18"), "tv_in1k").location in out


def test_same_file_names_in_two_inputs_get_separate_outputs(saved_model, tmp_path):
    a = _write_rgb(tmp_path / "a" / "x.png", 24, 32, 3)
    b = _write_rgb(tmp_path / "b" / "x.png", 24, 32, 4)
    for inputs in ([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png", tmp_path / "a" / "x.png"],
                   [tmp_path / "a", tmp_path / "b"]):
        out = tmp_path / f"out{len(inputs)}"
        assert main(["predict", str(saved_model), *map(str, inputs), "--out", str(out)]) == 0
        assert sorted(p.name for p in out.glob("*_overlay.png")) == ["x_png_2_overlay.png", "x_png_overlay.png"]
        # each output is its own image's (the overlay keeps the pixels the mask leaves untinted)
        for name, image in (("x_png", a), ("x_png_2", b)):
            overlay = np.asarray(Image.open(out / f"{name}_overlay.png"))
            labels = np.asarray(Image.open(out / f"{name}_labels.png"))
            assert np.array_equal(overlay[labels == 0], image[labels == 0])


def test_clashing_names_do_not_depend_on_the_argument_order(saved_model, tmp_path):
    """a/x.png b/x.png and b/x.png a/x.png swapped x_png and x_png_2: a re-run into the same folder
    silently gave each name the other image's result."""
    _write_rgb(tmp_path / "a" / "x.png", 24, 32, 3)
    _write_rgb(tmp_path / "b" / "x.png", 24, 32, 4)
    outputs = []
    for order in (("a", "b"), ("b", "a")):
        out = tmp_path / f"out_{''.join(order)}"
        assert main(["predict", str(saved_model), *(str(tmp_path / d / "x.png") for d in order), "--out", str(out)]) == 0
        outputs.append({p.name: p.read_bytes() for p in out.iterdir()})
    assert outputs[0] == outputs[1]


def test_one_images_outputs_are_written_together(saved_model, images, tmp_path, monkeypatch):
    """A write that failed part-way left the new labels beside the earlier run's overlay."""
    from unetzoo import io as unetzoo_io

    out = tmp_path / "out"
    assert main(["predict", str(saved_model), str(images / "a.png"), "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def full_disk(path, image):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(unetzoo_io, "write_png", full_disk)  # the overlay, written after the labels
    torch.manual_seed(1)
    other = unetzoo.create("unet-classic", base_c=4, bilinear=True, num_classes=2)
    other.save_pretrained(tmp_path / "other")
    assert main(["predict", str(tmp_path / "other"), str(images / "a.png"), "--out", str(out)]) == 1
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_float_tiffs_are_normalised_like_the_same_image_in_16_bits(saved_model, tmp_path):
    """Training reads float images as [0, 1] intensities and normalises them; so does predict."""
    grey = (np.arange(24 * 32).reshape(24, 32) * 85).astype(np.uint16)
    model = unetzoo.create("unet-classic", base_c=4, in_chans=1)
    model.save_pretrained(tmp_path / "m1")
    (tmp_path / "in").mkdir()
    Image.fromarray(grey).save(tmp_path / "in" / "g.png")
    Image.fromarray((grey / 65535.0).astype(np.float32)).save(tmp_path / "in" / "f.tif")
    assert main(["predict", str(tmp_path / "m1"), str(tmp_path / "in"), "--out", str(tmp_path / "o"), "--probs"]) == 0
    png = np.asarray(Image.open(tmp_path / "o" / "g_prob.png")).astype(int)
    tif = np.asarray(Image.open(tmp_path / "o" / "f_prob.png")).astype(int)
    assert np.abs(png - tif).max() <= 2  # 16-bit probabilities: equal up to rounding


@pytest.mark.parametrize("extra, needle", [(["--device", "gpu", "--out", "o"], "gpu"), (["--out", "FILE"], "FILE")])
def test_predict_set_up_errors_are_one_line(saved_model, images, tmp_path, capsys, extra, needle):
    (tmp_path / "FILE").write_text("a file, not a folder")
    extra = [str(tmp_path / e) if e in ("FILE", "o") else e for e in extra]
    assert main(["predict", str(saved_model), str(images / "a.png"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("unetzoo predict: error:") and needle in err and "Traceback" not in err


@pytest.mark.parametrize("extra, needle", [
    (["--tile", "0"], "argument --tile: must be a positive integer, got 0"),
    (["--batch-size", "0"], "argument --batch-size: must be a positive integer, got 0"),
    (["--overlap", "-1"], "argument --overlap: must be 0 or more, got -1"),
    (["--alpha", "5"], "argument --alpha: must be from 0 to 1, got 5.0"),
])
def test_predict_rejects_bad_flag_values_before_any_work(saved_model, images, tmp_path, capsys, extra, needle):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", str(saved_model), str(images), "--out", str(tmp_path / "o"), *extra])
    assert exit_info.value.code == 2 and needle in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_predict_reports_a_bad_tile_overlap_once_not_per_image(saved_model, images, tmp_path, capsys):
    assert main(["predict", str(saved_model), str(images), "--out", str(tmp_path / "o"),
                 "--tile", "64", "--overlap", "64"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["unetzoo predict: error: overlap must be between 0 and tile - 1 = 63, got 64"]
    assert not (tmp_path / "o").exists()


def test_tiles_smaller_than_the_pooling_grid_are_refused(saved_model, images):
    model = unetzoo.from_pretrained(saved_model)
    with pytest.raises(ValueError, match="smaller than the network's down-sampling factor 16"):
        unetzoo.predict(model, np.zeros((40, 40, 3), np.uint8), tile=8)


# ------------------------------------------------------------------ review fixes (2026-12-06)
def test_predicting_into_the_input_folder_skips_earlier_outputs(saved_model, tmp_path, capsys):
    """--out may be the input folder (or hold it): its images are found, and a second run does
    not take the first run's outputs for inputs."""
    _write_rgb(tmp_path / "same" / "a.png", 40, 52, 0)
    for _ in range(2):
        assert main(["predict", str(saved_model), str(tmp_path / "same"), "-o", str(tmp_path / "same")]) == 0
        assert "segmented 1 image(s)" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "same").iterdir()) == ["a.png", "a_labels.png", "a_overlay.png"]
    _write_rgb(tmp_path / "parent" / "images" / "b.png", 40, 52, 1)
    assert main(["predict", str(saved_model), str(tmp_path / "parent" / "images"), "-o", str(tmp_path / "parent")]) == 0
    assert (tmp_path / "parent" / "b_labels.png").is_file()


def test_an_output_never_replaces_an_input(saved_model, tmp_path, capsys):
    _write_rgb(tmp_path / "ow" / "a.png", 40, 52, 0)
    truth = tmp_path / "ow" / "a_labels.png"
    _write_rgb(truth, 40, 52, 5)  # a ground-truth file that happens to be named like an output
    before = truth.read_bytes()
    rc = main(["predict", str(saved_model), str(tmp_path / "ow" / "a.png"), str(truth), "-o", str(tmp_path / "ow")])
    assert rc == 2 and "would replace an input of this run" in capsys.readouterr().err
    assert truth.read_bytes() == before and not (tmp_path / "ow" / "a_overlay.png").exists()


@pytest.mark.parametrize("fast", [False, True])
def test_a_model_saved_in_bfloat16_predicts(saved_model, tmp_path, fast):
    model = unetzoo.from_pretrained(saved_model).to(torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    _write_rgb(tmp_path / "in" / "a.png", 40, 52, 0)
    argv = ["predict", str(tmp_path / "bf16"), str(tmp_path / "in"), "-o", str(tmp_path / "out"), *(["--fast"] * fast)]
    assert main(argv) == 0
    assert Image.open(tmp_path / "out" / "a_labels.png").size == (52, 40)
    image = io.read_image(tmp_path / "in" / "a.png", channels=3)
    assert unetzoo.predict(unetzoo.from_pretrained(tmp_path / "bf16"), image).shape == (2, 40, 52)


def test_a_failed_write_skips_that_image_only(saved_model, tmp_path, capsys):
    long = "a" * 240  # a legal name; its outputs' temporary names are not
    _write_rgb(tmp_path / "in" / f"{long}.png", 20, 24, 0)
    _write_rgb(tmp_path / "in" / "zz.png", 20, 24, 1)
    assert main(["predict", str(saved_model), str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 1
    captured = capsys.readouterr()
    assert f"could not segment {tmp_path / 'in' / long}.png" in captured.err and "Traceback" not in captured.err
    assert (tmp_path / "out" / "zz_labels.png").is_file() and "segmented 1 image(s)" in captured.out


def test_hidden_and_macos_resource_files_are_not_inputs(tmp_path):
    _write_rgb(tmp_path / "mac" / "x.png", 8, 8, 0)
    (tmp_path / "mac" / "._x.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "mac" / "__MACOSX").mkdir()
    (tmp_path / "mac" / "__MACOSX" / "._x.png").write_bytes(b"\x00\x05\x16\x07")
    pairs, _ = collect_images([str(tmp_path / "mac")])
    assert [rel.as_posix() for _, rel in pairs] == ["x"]


def test_a_renamed_output_never_takes_another_files_name(tmp_path):
    for name in ("x.png", "x.jpg", "x_png.png"):
        _write_rgb(tmp_path / "d" / name, 8, 8, 0)
    names = {p.name: rel.as_posix() for p, rel in collect_images([str(tmp_path / "d")])[0]}
    assert names == {"x_png.png": "x_png", "x.jpg": "x_jpg", "x.png": "x_png_2"}


def test_very_large_images_are_read_and_the_limit_is_named(saved_model, tmp_path, monkeypatch, capsys):
    """Pillow refuses images over MAX_IMAGE_PIXELS as decompression bombs (179 Mpx by default):
    predict lifts the limit for the files it is given; the reader's error names the fix."""
    import PIL.Image

    _write_rgb(tmp_path / "in" / "big.png", 40, 52, 0)
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", 500)  # 2080 px is then more than twice the limit
    with pytest.raises(io.ImageReadError, match="raise PIL.Image.MAX_IMAGE_PIXELS"):
        io.read_image(tmp_path / "in" / "big.png")
    assert main(["predict", str(saved_model), str(tmp_path / "in"), "-o", str(tmp_path / "out")]) == 0


def test_exif_orientation_is_applied(tmp_path):
    """A JPEG stored 64x40 with orientation 6 (rotate 90 degrees) is shown, and read, as 40 wide, 64 tall."""
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:, :8] = 255  # a bright band on the stored image's left edge
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    shown = io.read_image(tmp_path / "phone.jpg", channels=3)
    assert shown.shape == (64, 40, 3)
    assert shown[:8].mean() > 200 and shown[-8:].mean() < 50  # the left edge turned to the top


def test_multi_page_tiffs_are_refused_with_the_fix(tmp_path):
    pages = [Image.fromarray(np.full((16, 16), v, np.uint16)) for v in (1, 2, 3)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    with pytest.raises(io.ImageReadError, match=r"stack of 3 pages.*save each page as its own file"):
        io.read_image(tmp_path / "stack.tif")


def test_an_overlap_the_tiles_cannot_keep_is_refused():
    from unetzoo.inference.tiling import plan_padded_axis

    assert plan_padded_axis(400, 128, 96, 32).window == 128
    with pytest.raises(ValueError, match=r"overlap 120 is more than tile 128 less one down-sampling step \(32\)"):
        plan_padded_axis(400, 128, 120, 32)


def test_overlay_matches_a_float_blend(tmp_path):
    """The banded integer overlay equals a plain float32 blend of the whole image."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, (37, 53)).astype(np.uint8)
    colors = io.palette(256)
    blend = np.round(0.7 * image.astype(np.float32) + 0.3 * colors[labels].astype(np.float32)).astype(np.uint8)
    expected = np.where((labels > 0)[..., None], blend, image)
    assert np.array_equal(io.overlay(image, labels, alpha=0.3), expected)
