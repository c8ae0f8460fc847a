"""Datasets, joint transforms, splitting and validation on tiny synthetic folders (+ the shipped set)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from unetzoo.data import (
    DataError,
    DRIVEDataset,
    RandomTranspose,
    SegmentationFolder,
    VOCSegmentation,
    build_transforms,
    nuclei_root,
    pad_collate,
    split_dataset,
    validate_dataset,
)
from unetzoo.metrics import ConfusionMatrix


def _save(path, array, mode=None, palette=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(array, dtype=np.uint8), mode=mode)
    if palette:
        im = im.convert("P") if im.mode != "P" else im
        im.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    im.save(path)


def _folder(root, n=4, size=(8, 10), grey=False):
    rng = np.random.default_rng(0)
    for i in range(n):
        shape = size if grey else (*size, 3)
        _save(root / "images" / f"s{i}.png", rng.integers(0, 256, shape))
        _save(root / "masks" / f"s{i}.png", (rng.random(size) > 0.5) * 255)
    return root


def test_folder_pairs_by_stem_and_maps_0_255(tmp_path):
    _folder(tmp_path, n=3)
    _save(tmp_path / "images" / "extra.jpg", np.zeros((8, 10, 3)))  # no mask
    ds = SegmentationFolder(tmp_path)
    assert len(ds) == 3 and [p[0].stem for p in ds.files] == ["s0", "s1", "s2"]
    assert [p.name for p in ds.missing_masks] == ["extra.jpg"]
    image, mask = ds[1]
    raw = np.asarray(Image.open(tmp_path / "masks" / "s1.png"))
    assert image.shape == (3, 8, 10) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert mask.dtype == torch.long and torch.equal(mask, torch.from_numpy(raw // 255).long())
    assert ds.num_channels == 3


def test_grey_images_give_one_channel_unless_converted(tmp_path):
    _folder(tmp_path, n=1, grey=True)
    assert SegmentationFolder(tmp_path)[0][0].shape == (1, 8, 10)
    rgb = SegmentationFolder(tmp_path, channels=3)
    assert rgb[0][0].shape == (3, 8, 10) and rgb.num_channels == 3
    assert torch.equal(rgb[0][0][0], rgb[0][0][2])


@pytest.mark.parametrize("channels", [None, 1, 3])
def test_16_bit_and_float_grey_images_keep_their_values(tmp_path, channels):
    """Scaled by the type's range (as unetzoo.predict scales them), never saturated by an 8-bit conversion."""
    import unetzoo.io

    ramp = np.arange(8 * 10).reshape(8, 10)
    grey16 = (ramp * 800).astype(np.uint16)  # up to 63200: most of it above 255
    grey32 = (ramp / 79).astype(np.float32)
    dim16 = (ramp * 3).astype(np.uint16)  # a 16-bit file whose values all fit in 8 bits: still / 65535
    for stem, array in (("s16", grey16), ("sf", grey32), ("sd", dim16)):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(array).save(tmp_path / "images" / f"{stem}.{'tif' if stem == 'sf' else 'png'}")
        _save(tmp_path / "masks" / f"{stem}.png", np.zeros((8, 10)))
    ds = SegmentationFolder(tmp_path, channels=channels)
    by_stem = {path.stem: ds[i][0] for i, (path, _) in enumerate(ds.files)}
    n = 3 if channels == 3 else 1
    for stem, want in (("s16", grey16 / 65535.0), ("sf", grey32), ("sd", dim16 / 65535.0)):
        got = by_stem[stem]
        assert got.shape == (n, 8, 10)
        for c in range(n):
            assert np.allclose(got[c].numpy(), want, atol=1e-6), (stem, c)
    # the same values as the inference reader, scaled the same way
    assert np.allclose(by_stem["s16"][0].numpy(), unetzoo.io.read_image(tmp_path / "images" / "s16.png") / 65535.0)


def _png16_rgb(path, array):
    """A 16-bit RGB PNG written by hand (Pillow cannot write one): signature, IHDR, one IDAT, IEND."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w, _ = array.shape
    rows = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(h))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def test_16_bit_colour_images_are_scaled_to_8_bits_not_clipped(tmp_path):
    """As the reader's docstring says: Pillow keeps each channel's high byte, so 65535 reads as 255."""
    from unetzoo.io import read_image

    rng = np.random.default_rng(0)
    array = rng.integers(0, 65536, size=(4, 5, 3)).astype(np.uint16)
    _png16_rgb(tmp_path / "rgb16.png", array)
    got = read_image(tmp_path / "rgb16.png")
    assert got.dtype == np.uint8 and np.array_equal(got, (array >> 8).astype(np.uint8))


def test_truncated_jpeg_is_caught_before_training(tmp_path):
    _folder(tmp_path, n=3)
    rng = np.random.default_rng(1)
    _save(tmp_path / "images" / "s1.jpg", rng.integers(0, 256, (64, 80, 3)))
    (tmp_path / "images" / "s1.png").unlink()
    _save(tmp_path / "masks" / "s1.png", np.zeros((64, 80)))
    data = (tmp_path / "images" / "s1.jpg").read_bytes()
    (tmp_path / "images" / "s1.jpg").write_bytes(data[: len(data) // 2])  # the header (and size) survive
    with pytest.raises(DataError, match=r"s1\.jpg"):
        validate_dataset(SegmentationFolder(tmp_path), num_classes=2)


def test_index_palette_and_label_map(tmp_path):
    labels = np.array([[0, 1, 2, 255], [2, 2, 1, 0]])
    _save(tmp_path / "images" / "a.png", np.zeros((2, 4)))
    _save(tmp_path / "masks" / "a.png", labels, palette=True)
    assert SegmentationFolder(tmp_path)[0][1].tolist() == labels.tolist()  # palette indices kept
    mapped = SegmentationFolder(tmp_path, label_map={1: 5, 2: 1})[0][1]
    assert mapped.tolist() == [[0, 5, 1, 255], [1, 1, 5, 0]]


@pytest.mark.parametrize("kind", ["1-bit", "palette"])
def test_binary_true_reads_1_bit_and_palette_masks(tmp_path, kind):
    """binary=True must not threshold 0/1 or palette indices at 128 (which leaves no foreground)."""
    fg = np.zeros((8, 8), bool)
    fg[2:6, 2:6] = True
    _save(tmp_path / "images" / "a.png", np.zeros((8, 8)))
    (tmp_path / "masks").mkdir()
    if kind == "1-bit":
        Image.fromarray(fg).save(tmp_path / "masks" / "a.png")  # mode "1"
    else:
        _save(tmp_path / "masks" / "a.png", fg * 3, palette=True)  # class index 3 in a palette PNG
    for binary in (True, None):
        mask = SegmentationFolder(tmp_path, binary=binary)[0][1]
        if kind == "palette" and binary is None:
            assert mask.tolist() == (fg * 3).tolist()  # auto mode keeps palette indices
        else:
            assert mask.tolist() == fg.astype(int).tolist(), binary


def test_files_option_selects_and_orders(tmp_path):
    _folder(tmp_path, n=4)
    ds = SegmentationFolder(tmp_path, files=["s3", "s1"])
    assert [p[0].stem for p in ds.files] == ["s3", "s1"]
    with pytest.raises(DataError, match="nope"):
        SegmentationFolder(tmp_path, files=["nope"])


def test_empty_or_missing_folder_names_the_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=str(tmp_path / "images")):
        SegmentationFolder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        SegmentationFolder(tmp_path / "absent")


def test_voc_layout(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    (voc / "JPEGImages").mkdir(parents=True)
    for name in ("2007_000001", "2007_000002", "2007_000003"):
        Image.fromarray(np.full((6, 7, 3), 128, np.uint8)).save(voc / "JPEGImages" / f"{name}.jpg")
    label = np.zeros((6, 7), np.uint8)
    label[1:5, 1:5], label[0, :] = 15, 255  # a person, and the white border
    for name in ("2007_000001", "2007_000002"):
        _save(voc / "SegmentationClass" / f"{name}.png", label, palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000002\n2007_000001\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000003\n")
    train = VOCSegmentation(tmp_path, split="train")
    assert [p[0].stem for p in train.files] == ["2007_000002", "2007_000001"]
    image, mask = train[0]
    assert image.shape == (3, 6, 7) and mask.tolist() == label.tolist()
    assert validate_dataset(train, num_classes=21).num_samples == 2
    grey = VOCSegmentation(tmp_path, split="train", channels=1, label_map={255: 0})
    image, mask = grey[0]
    assert image.shape == (1, 6, 7) and (mask == 255).sum() == 0 and (mask == 15).sum() == 16
    val = VOCSegmentation(voc, split="val")  # image without its label
    with pytest.raises(DataError, match="2007_000003.jpg has no mask"):
        validate_dataset(val, num_classes=21)


def test_evaluation_of_a_voc_root_defaults_to_val_and_config_checks_the_layout(tmp_path):
    from unetzoo.train import ConfigError, load_config
    from unetzoo.train.builders import build_eval_dataset
    from unetzoo.train.config import DataSection

    voc = tmp_path / "VOC2012"
    for name in ("2007_000001", "2007_000002"):
        _save(voc / "JPEGImages" / f"{name}.jpg", np.zeros((6, 7, 3)))
        _save(voc / "SegmentationClass" / f"{name}.png", np.zeros((6, 7)), palette=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("2007_000001\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("2007_000002\n")
    cfg = DataSection(kind="voc", root=str(voc))
    scored = build_eval_dataset(cfg, num_classes=21, in_chans=1, mean=(0.5,), std=(0.25,))
    files = scored.dataset.files if hasattr(scored, "dataset") else scored.files
    assert [p.stem for p, _ in files] == ["2007_000002"]  # val.txt, not the training list
    assert scored[0][0].shape[0] == 1  # the model's in_chans
    with pytest.raises(ConfigError, match="data.binary, data.image_dir and data.mask_dir are for data.kind=folder"):
        load_config(None, ["data.kind=voc", "data.binary=true"])
    with pytest.raises(ConfigError, match="label_map does not apply to data.kind=drive"):
        load_config(None, ["data.kind=drive", "data.label_map={255: 0}"])


def _drive(root, split, numbers, size=(6, 5)):
    rng = np.random.default_rng(1)
    folder = root / split
    manuals = {}
    for n in numbers:
        stem = f"{n:02d}_{split}"
        _save(folder / "images" / f"{stem}.tif", rng.integers(0, 256, (*size, 3)))
        manual = (rng.random(size) > 0.7).astype(np.uint8) * 255
        fov = np.full(size, 255, np.uint8)
        fov[0, :] = 0  # first row outside the field of view
        _save(folder / "1st_manual" / f"{n:02d}_manual1.gif", manual)
        _save(folder / "mask" / f"{stem}_mask.gif", fov)
        manuals[stem] = manual
    return manuals


def test_drive_layout_labels_and_fov(tmp_path):
    manuals = _drive(tmp_path, "training", [21, 22])
    ds = DRIVEDataset(tmp_path, split="training")
    assert len(ds) == 2 and ds.num_channels == 3
    image, mask = ds[0]
    want = manuals["21_training"] // 255
    assert image.shape == (3, 6, 5)
    assert mask[0].tolist() == [255] * 5 and mask[1:].tolist() == want[1:].tolist()
    _drive(tmp_path, "test", [1])
    assert len(DRIVEDataset(tmp_path, split="test")) == 1


def test_a_bad_drive_field_of_view_mask_is_reported_as_itself(tmp_path):
    """Not as the vessel annotation it is read with: the problem names the field-of-view file."""
    _drive(tmp_path, "training", [21, 22, 23])
    mask_dir = tmp_path / "training" / "mask"
    (mask_dir / "21_training_mask.gif").write_bytes(b"not a gif")
    _save(mask_dir / "22_training_mask.gif", np.full((4, 4), 255, np.uint8))  # the annotation is 6x5
    _, problems = validate_dataset(DRIVEDataset(tmp_path, split="training"), num_classes=2, skip_bad=True)
    assert [p.path for p in problems] == [mask_dir / "21_training_mask.gif", mask_dir / "22_training_mask.gif"]
    assert problems[0].message.startswith(f"cannot read {mask_dir / '21_training_mask.gif'}: ")
    assert problems[1].message.startswith(f"{mask_dir / '22_training_mask.gif'} is 4x4 but ")
    for p in problems:
        assert "1st_manual" not in p.message.split(" but ")[0] and p.message.count("replace or remove") <= 1


def test_split_is_deterministic_disjoint_and_complete(tmp_path):
    _folder(tmp_path, n=10)
    ds = SegmentationFolder(tmp_path)
    a_train, a_val = split_dataset(ds, 0.3, seed=5)
    _, b_val = split_dataset(ds, 0.3, seed=5)
    assert a_val.indices == b_val.indices and len(a_val) == 3 and len(a_train) == 7
    assert sorted(a_train.indices + a_val.indices) == list(range(10))
    assert split_dataset(ds, 0.3, seed=6)[1].indices != a_val.indices
    train, val = split_dataset(ds, 0.3, seed=5, train_transform=build_transforms(True, size=4),
                               val_transform=build_transforms(False))
    assert train[0][0].shape == (3, 4, 4) and val[0][0].shape == (3, 8, 10) and ds.transform is None
    with pytest.raises(ValueError):
        split_dataset(ds, 1.0)


def test_validate_finds_each_problem_and_skips(tmp_path):
    _folder(tmp_path, n=5)
    _save(tmp_path / "masks" / "s1.png", np.zeros((4, 4)))  # size mismatch
    (tmp_path / "images" / "s2.png").write_bytes(b"not a png")  # unreadable
    _save(tmp_path / "masks" / "s3.png", np.full((8, 10), 7))  # label 7 with 2 classes
    ds = SegmentationFolder(tmp_path)
    with pytest.raises(DataError) as info:
        validate_dataset(ds, num_classes=2)
    text = str(info.value)
    assert "3 bad sample(s)" in text and "s1.png" in text and "s2.png" in text and "s3.png" in text
    assert "skip_bad=True" in text and "num_classes" in text
    assert "data.skip_bad: true" in text  # the spelling a training config takes
    report = validate_dataset(ds, num_classes=2, skip_bad=True)
    kept, problems = report
    assert {p.kind for p in problems} == {"size_mismatch", "unreadable", "bad_labels"}
    assert len(kept) == 2 and kept.indices == [0, 4]
    masks = [np.asarray(Image.open(tmp_path / "masks" / f"s{i}.png")) // 255 for i in (0, 4)]
    assert report.class_pixels == np.bincount(np.concatenate([m.ravel() for m in masks]), minlength=2).tolist()
    # label 7 is valid now; the masks are index masks (255: ignore), as the mix asks to say
    index_masks = SegmentationFolder(tmp_path, binary=False)
    assert validate_dataset(index_masks, num_classes=8, skip_bad=True).num_samples == 3


def test_bad_label_errors_point_at_the_likely_cause(tmp_path):
    """A value made by the label_map was blamed on the file (with advice to skip it), and grey
    levels of a palette mask saved as grey got 'set num_classes to at least 221'."""
    _folder(tmp_path, n=2)
    _save(tmp_path / "masks" / "s0.png", np.where(np.arange(80).reshape(8, 10) % 2, 3, 0))
    with pytest.raises(DataError, match=r"label values \[7\] \(after label_map\) .*they come from label_map "
                                        r"\{3: 7\}: map to classes 0\.\.3"):
        validate_dataset(SegmentationFolder(tmp_path, binary=False, label_map={3: 7}), num_classes=4)
    grey = np.array([0, 38, 113, 220] * 20).reshape(8, 10)
    _save(tmp_path / "masks" / "s0.png", grey)
    with pytest.raises(DataError, match=r"grey levels of colours .* label_map, e\.g\. \{38: 1, 113: 2, 220: 3\}"):
        validate_dataset(SegmentationFolder(tmp_path, binary=False), num_classes=4)


def test_auto_mode_refuses_masks_it_would_read_two_ways(tmp_path):
    """binary=None decides mask by mask. An index-mask dataset where one mask holds only
    background and ignore (0 and 255) would turn that mask's ignored pixels into class 1:
    validation names both kinds and the fix. All-background and 0/1 masks read the same either
    way, so they mix freely with 0/255 masks."""
    _save(tmp_path / "images" / "a.png", np.zeros((4, 6, 3)))
    _save(tmp_path / "images" / "b.png", np.zeros((4, 6, 3)))
    _save(tmp_path / "masks" / "a.png", [[0, 2, 3, 255, 0, 0]] * 4)  # classes 2, 3 and ignore
    _save(tmp_path / "masks" / "b.png", [[0, 0, 255, 255, 0, 0]] * 4)  # background and ignore only
    ds = SegmentationFolder(tmp_path)
    assert (ds[1][1] == 1).sum() == 8  # what auto mode does to b on its own
    with pytest.raises(DataError, match=r"b\.png.*a\.png.*binary=False") as info:
        validate_dataset(ds, num_classes=4)
    assert str(tmp_path) in str(info.value)
    report = validate_dataset(SegmentationFolder(tmp_path, binary=False), num_classes=4)
    assert report.class_pixels == [28, 0, 4, 4] and report.ignored_pixels == 12
    # a multi-class model on 0/255-only masks: the same question
    _save(tmp_path / "masks" / "a.png", [[0, 255, 0, 255, 0, 0]] * 4)
    with pytest.raises(DataError, match=r"num_classes is 4\. For binary 0/255 masks set num_classes=2 "
                                        r"\(model\.num_classes: 2; or 1 with a bce loss\)"):
        validate_dataset(ds, num_classes=4)
    # two classes: 0/255, all-background and 0/1 masks together are fine
    _save(tmp_path / "images" / "c.png", np.zeros((4, 6, 3)))
    _save(tmp_path / "masks" / "c.png", np.zeros((4, 6)))
    _save(tmp_path / "images" / "d.png", np.zeros((4, 6, 3)))
    _save(tmp_path / "masks" / "d.png", [[0, 1, 1, 0, 0, 0]] * 4)
    report = validate_dataset(SegmentationFolder(tmp_path), num_classes=2)
    assert report.num_samples == 4 and report.class_pixels == [72, 24]


def test_validate_refuses_grey_and_colour_images_that_keep_their_colour_model(tmp_path):
    """With channels=None each image keeps its file's channels; a mix would fail at the first
    batch, so validation names one of each and the fix. Converting them all is fine."""
    _folder(tmp_path, n=3)
    _save(tmp_path / "images" / "s1.png", np.zeros((8, 10)))  # grey among colour
    with pytest.raises(DataError, match=r"1 grey \(e\.g\. .*s1\.png\) and 2 colour.*channels=1 or channels=3"):
        validate_dataset(SegmentationFolder(tmp_path), num_classes=2)
    for channels in (1, 3):
        ds = SegmentationFolder(tmp_path, channels=channels)
        assert validate_dataset(ds, num_classes=2).num_samples == 3
        assert {ds[i][0].shape[0] for i in range(3)} == {channels}


def test_validate_subset_and_generic_dataset(tmp_path):
    _folder(tmp_path, n=4)
    _save(tmp_path / "masks" / "s0.png", np.full((8, 10), 3))
    train, val = split_dataset(SegmentationFolder(tmp_path), 0.5, seed=0)
    bad, good = (train, val) if 0 in train.indices else (val, train)
    assert validate_dataset(good, num_classes=2).num_samples == 2
    with pytest.raises(DataError, match="s0.png"):
        validate_dataset(bad, num_classes=2)
    generic = [(torch.zeros(1, 2, 2), torch.tensor([[0, 1], [1, 9]]))]
    with pytest.raises(DataError, match=r"\[9\]"):
        validate_dataset(generic, num_classes=2)


def _aligned_sample(size=32):
    """An image whose pixel values encode the mask, so alignment survives any geometry."""
    mask = torch.zeros(size, size, dtype=torch.long)
    q = size // 8
    mask[q:5 * q, 2 * q:7 * q] = 1
    mask[5 * q + 2:7 * q + 2, q // 2:5 * q // 2] = 2
    image = (mask.float() / 2).expand(3, -1, -1).clone()
    return tv_tensors.Image(image), tv_tensors.Mask(mask)


def test_transforms_move_image_and_mask_together():
    t = build_transforms(True, size=48, scale=(0.75, 1.5), rotation=30, hflip=0.5, vflip=0.5)
    for seed in range(5):
        torch.manual_seed(seed)
        image, mask = t(*_aligned_sample(64))
        assert image.shape == (3, 48, 48) and mask.shape == (48, 48)
        valid = mask != 255
        recovered = (image[0] * 2).round().long()
        agree = (recovered[valid] == mask[valid]).float().mean().item()
        assert agree > 0.9, f"seed {seed}: image and mask disagree on {1 - agree:.0%} of pixels"
        assert set(mask.unique().tolist()) <= {0, 1, 2, 255}


@pytest.mark.parametrize("scale", [(1.0, 1.0), (2.0, 2.0), (0.5, 0.5)])
def test_random_scale_is_relative_to_the_images_own_size(scale):
    """Crops are taken at the image's own scale times the factor, the scale evaluation runs at
    for 1.0: with the crop size as the reference, a 512 px image with a 256 px crop trained at
    0.4-0.625x and validated at 1x."""
    stripes = (torch.arange(128) // 8 % 2).expand(128, -1)  # 8 px vertical stripes
    image, mask = tv_tensors.Image(stripes.float().expand(3, -1, -1).clone()), tv_tensors.Mask(stripes.clone())
    t = build_transforms(True, size=32, scale=scale, hflip=0.0)
    for seed in range(3):
        torch.manual_seed(seed)
        img, msk = t(image, mask)
        row = msk[16]
        row = row[row != 255]
        edges = torch.nonzero(row[1:] != row[:-1]).flatten()
        assert len(edges) >= 2
        widths = (edges[1:] - edges[:-1]).tolist()
        assert all(w == round(8 * scale[0]) for w in widths), (seed, widths)
        assert ((img[0] > 0.5).long() == msk)[msk != 255].float().mean() > 0.95


def test_a_plain_tensor_pair_moves_together():
    """v2 transforms only the first plain tensor of a call: a custom dataset calling the pipeline
    with two plain tensors got a flipped image beside an unflipped mask."""
    image, mask = _aligned_sample(32)
    t = build_transforms(True, size=24, scale=(0.8, 1.2), hflip=1.0, rotation=10)
    torch.manual_seed(0)
    want = t(image, mask)
    torch.manual_seed(0)
    got = t(image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    with pytest.raises(TypeError, match=r"\(image, mask\) as torch tensors .* got \(Tensor, ndarray\)"):
        t(image.as_subclass(torch.Tensor), mask.numpy())


def test_padding_fills_ignore_and_transforms_are_seeded():
    t = build_transforms(True, size=48, scale=None, hflip=0.0)
    image, mask = t(*_aligned_sample(32))
    assert (mask == 255).sum() == 48 * 48 - 32 * 32 and (image[:, mask == 255] == 0).all()
    t = build_transforms(True, size=20, rotation=20, color_jitter=0.4)
    torch.manual_seed(3)
    first = t(*_aligned_sample())
    torch.manual_seed(3)
    again = t(*_aligned_sample())
    torch.manual_seed(4)
    other = t(*_aligned_sample())
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 symmetries of the square applied to ``a``: 4 rotations, each with and without a mirror."""
    rotations = [np.rot90(a, k) for k in range(4)]
    return rotations + [np.fliplr(r) for r in rotations]


def test_transpose_keeps_a_non_square_crops_shape():
    t = build_transforms(True, size=(12, 20), scale=None, transpose=0.5)
    torch.manual_seed(0)
    shapes = {tuple(t(*_aligned_sample(32))[1].shape) for _ in range(20)}
    assert shapes == {(12, 20)}


def test_color_jitter_refuses_images_it_would_clip():
    t = build_transforms(True, size=None, scale=None, hflip=0.0, vflip=0.0, color_jitter=0.2)
    image, mask = _aligned_sample(8)
    t(image, mask)  # a [0, 1] image is fine
    raw = tv_tensors.Image(torch.rand(3, 8, 8) * 4000.0)  # a float TIFF of raw intensities
    with pytest.raises(ValueError, match=r"color_jitter needs images in \[0, 1\].*data.transforms.color_jitter=0"):
        t(raw, mask)


def test_transpose_with_flips_draws_all_eight_symmetries_evenly():
    values = torch.arange(16).view(4, 4)  # no symmetry of its own: all 8 images differ
    expected = {r.tobytes(): r for r in (np.ascontiguousarray(x) for x in _dihedral(values.numpy()))}
    assert len(expected) == 8
    t = build_transforms(True, scale=None, hflip=0.5, vflip=0.5, transpose=0.5)
    counts: dict[bytes, int] = {}
    torch.manual_seed(0)
    draws = 800
    for _ in range(draws):
        image, mask = t(tv_tensors.Image(values.float().div(255).expand(3, -1, -1).clone()), tv_tensors.Mask(values))
        assert torch.equal((image[0] * 255).round().long(), mask)  # image and mask moved together
        key = np.ascontiguousarray(mask.numpy()).tobytes()
        assert key in expected, f"not a symmetry of the square:\n{mask}"
        counts[key] = counts.get(key, 0) + 1
    assert len(counts) == 8, f"only {len(counts)} of the 8 symmetries drawn"
    assert all(0.08 < c / draws < 0.17 for c in counts.values()), sorted(c / draws for c in counts.values())
    with pytest.raises(TypeError, match="images and masks"):
        RandomTranspose(1.0)(tv_tensors.BoundingBoxes([[0, 0, 2, 3]], format="XYXY", canvas_size=(4, 4)))
    with pytest.raises(ValueError, match="probability"):
        RandomTranspose(1.5)


def test_elastic_deformation_keeps_image_and_mask_aligned():
    image, mask = _aligned_sample(64)
    off = build_transforms(True, scale=None, hflip=0.0, elastic=0.0)
    assert torch.equal(off(image, mask)[1], mask)
    t = build_transforms(True, scale=None, hflip=0.0, elastic=1.0, elastic_alpha=50.0, elastic_sigma=5.0)
    for seed in range(3):
        torch.manual_seed(seed)
        warped_image, warped = t(image, mask)
        moved = (warped != mask).float().mean().item()
        assert 0.005 < moved < 0.3, f"seed {seed}: {moved:.1%} of the mask changed"
        valid = warped != 255
        recovered = (warped_image[0] * 2).round().long()
        assert (recovered[valid] == warped[valid]).float().mean() > 0.97
        assert set(warped.unique().tolist()) <= {0, 1, 2, 255}  # nearest-neighbour labels, ignore fill


def test_elastic_deformation_takes_images_smaller_than_its_kernel():
    """torchvision's field smoothing fails on a side of 4 sigma or less; such images get the
    largest sigma they take, and bigger ones draw exactly what torchvision draws."""
    t = build_transforms(True, scale=None, hflip=0.0, elastic=1.0, elastic_alpha=30.0, elastic_sigma=5.0)
    for side in (1, 2, 16, 20, 21):
        image, mask = _aligned_sample(side) if side >= 8 else (
            tv_tensors.Image(torch.zeros(3, side, side)), tv_tensors.Mask(torch.zeros(side, side, dtype=torch.long)))
        out_image, out_mask = t(image, mask)
        assert out_image.shape == image.shape and out_mask.shape == mask.shape
    image, mask = _aligned_sample(64)
    plain = v2.ElasticTransform(alpha=30.0, sigma=5.0, interpolation=v2.InterpolationMode.BILINEAR,
                                fill={tv_tensors.Image: 0.0, tv_tensors.Mask: 255})
    ours = next(s for s in t.transforms if isinstance(s, v2.RandomApply)).transforms[0]
    torch.manual_seed(3)
    warped = ours(image, mask)[1]
    torch.manual_seed(3)
    assert torch.equal(warped, plain(image, mask)[1]) and not torch.equal(warped, mask)


def test_blur_smooths_the_image_with_the_drawn_sigma_and_leaves_the_mask():
    image, mask = _aligned_sample(64)
    t = build_transforms(True, scale=None, hflip=0.0, blur=1.0, blur_sigma=(1.5, 1.5))
    blurred, same = t(image, mask)
    assert torch.equal(same, mask)
    # reference: a hand-built separable Gaussian (radius 3 sigma), compared away from the borders
    x = np.arange(-5, 6, dtype=np.float64)
    g = np.exp(-x**2 / (2 * 1.5**2))
    g /= g.sum()
    ref = image[0].double().numpy()
    ref = np.apply_along_axis(lambda r: np.convolve(r, g, mode="same"), 0, ref)
    ref = np.apply_along_axis(lambda r: np.convolve(r, g, mode="same"), 1, ref)
    np.testing.assert_allclose(blurred[0, 6:-6, 6:-6].double().numpy(), ref[6:-6, 6:-6], atol=1e-5)
    assert (blurred[0] - image[0]).abs().max() > 0.1  # the edges did move
    ranged = build_transforms(True, scale=None, hflip=0.0, blur=1.0, blur_sigma=(0.3, 2.0))
    (step,) = [s for s in ranged.transforms if isinstance(s, v2.RandomApply)]
    assert step.transforms[0].kernel_size == (13, 13) and step.transforms[0].sigma == [0.3, 2.0]
    with pytest.raises(ValueError, match=r"blur_sigma must be \(min, max\)"):
        build_transforms(True, blur=0.5, blur_sigma=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"blur_sigma must be \(min, max\).*got \(1.0,\)"):
        build_transforms(True, blur=0.5, blur_sigma=(1.0,))


def test_normalisation_and_eval_resize():
    image, mask = build_transforms(False, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0), size=(16, 8))(*_aligned_sample())
    assert image.shape == (3, 16, 8) and mask.shape == (16, 8)
    src = _aligned_sample()[0]
    image, _ = build_transforms(False, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 1.0))(src, _aligned_sample()[1])
    assert torch.allclose(image[1], (src[1] - 0.25) / 0.25)
    grey = src[:1]
    out, _ = build_transforms(False, mean=(0.3, 0.4, 0.5), std=(0.2, 0.2, 0.2))(grey, _aligned_sample()[1])
    assert out.shape[0] == 1 and torch.allclose(out, (grey - 0.4) / 0.2)  # averaged RGB statistics
    with pytest.raises(ValueError, match="channel"):
        build_transforms(False, mean=(0.1, 0.2), std=(1, 1))(src, _aligned_sample()[1])


def test_shipped_nuclei_set_is_valid_and_matches_its_metadata():
    root = nuclei_root()
    if not (root / "images").is_dir():
        pytest.skip(f"nuclei assets not found at {root}")
    ds = SegmentationFolder(root)
    meta = json.loads((root / "meta.json").read_text())
    assert len(ds) == len(meta) == 100
    report = validate_dataset(ds, num_classes=2)
    fg = report.class_pixels[1] / sum(report.class_pixels)
    assert fg == pytest.approx(np.mean([m["fg"] for m in meta]), rel=1e-6)  # README: ~8.7%


def test_pad_collate_pads_with_ignore_and_keeps_metrics():
    g = torch.Generator().manual_seed(0)
    sizes = ((5, 7), (9, 4))
    samples = [(torch.rand(3, h, w, generator=g), torch.randint(0, 2, (h, w), generator=g)) for h, w in sizes]
    images, masks = pad_collate(samples, multiple=4)
    assert images.shape == (2, 3, 12, 8) and masks.shape == (2, 12, 8)
    assert (masks[0, 5:] == 255).all() and (masks[1, :, 4:] == 255).all() and (images[0, :, 5:] == 0).all()
    separate, padded = ConfusionMatrix(2), ConfusionMatrix(2)
    for image, mask in samples:
        separate.update((image[None, 0] > 0.5).long(), mask[None])
    padded.update((images[:, 0] > 0.5).long(), masks)
    assert torch.equal(separate.matrix, padded.matrix)


def test_no_normalisation_keeps_unit_range():
    image, _ = build_transforms(False)(*_aligned_sample())
    assert torch.equal(image, _aligned_sample()[0].as_subclass(torch.Tensor))
    with pytest.raises(ValueError, match="both"):
        build_transforms(False, mean=(0.5,))


def test_exif_orientation_is_applied_to_training_images(tmp_path):
    """A phone JPEG stored 64x40 with orientation 6 is shown 40 wide and 64 tall, and annotation
    tools draw its mask that way: validation and the reader see the same size as the mask."""
    stored = np.zeros((40, 64, 3), np.uint8)
    stored[:, :8] = 255  # the stored image's left edge: the top once turned
    im = Image.fromarray(stored)
    exif = im.getexif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    im.save(tmp_path / "images" / "phone.jpg", exif=exif, quality=95)
    mask = np.zeros((64, 40), np.uint8)
    mask[:8] = 255
    Image.fromarray(mask).save(tmp_path / "masks" / "phone.png")
    ds = SegmentationFolder(tmp_path, channels=3)
    assert validate_dataset(ds, num_classes=2).num_samples == 1
    image, target = ds[0]
    assert tuple(image.shape) == (3, 64, 40) and tuple(target.shape) == (64, 40)
    assert image[:, :8].mean() > 0.8 and image[:, -8:].mean() < 0.2


def test_a_0_255_mask_saved_with_a_grey_palette_reads_as_0_255(tmp_path):
    """Image.convert("P") and MATLAB's imwrite(m, gray(256)) write palette PNGs whose index i is
    grey i: the 255s are foreground, not the ignore index (validation passed and training saw no
    foreground). A palette of other colours keeps its indices."""
    fg = np.zeros((8, 8), np.uint8)
    fg[2:6, 1:7] = 255
    _save(tmp_path / "images" / "a.png", np.zeros((8, 8)))
    (tmp_path / "masks").mkdir()
    Image.fromarray(fg).convert("P").save(tmp_path / "masks" / "a.png")
    assert Image.open(tmp_path / "masks" / "a.png").mode == "P"
    ds = SegmentationFolder(tmp_path)
    assert ds[0][1].tolist() == (fg // 255).tolist()
    report = validate_dataset(ds, num_classes=2)
    assert not report.problems
    _save(tmp_path / "masks" / "a.png", fg, palette=True)  # index 255 coloured (and 0 black): VOC-like
    assert SegmentationFolder(tmp_path)[0][1].tolist() == fg.tolist()  # kept: 255 is ignore


def test_binary_true_keeps_a_palette_masks_ignore_border(tmp_path):
    """VOC draws its 'ignore' border as palette index 255: binary=True makes the classes foreground
    and leaves that border ignored."""
    raw = np.zeros((6, 6), np.uint8)
    raw[1:5, 1:5] = 255
    raw[2:4, 2:4] = 15
    _save(tmp_path / "images" / "a.png", np.zeros((6, 6)))
    _save(tmp_path / "masks" / "a.png", raw, palette=True)
    mask = SegmentationFolder(tmp_path, binary=True)[0][1].numpy()
    assert mask.tolist() == np.where(raw == 255, 255, raw > 0).tolist()
    assert SegmentationFolder(tmp_path, binary=True, ignore_index=254)[0][1].numpy().tolist() == (raw > 0).tolist()


def test_two_files_of_one_name_are_refused_not_guessed(tmp_path):
    _folder(tmp_path, n=2)
    _save(tmp_path / "masks" / "s1.tif", np.full((8, 10), 255))  # beside masks/s1.png
    with pytest.raises(DataError, match=r"masks holds 1 file name\(s\) with two or more extensions: s1.png and "
                                        r"s1.tif; .*keep one file of each name"):
        SegmentationFolder(tmp_path)
    (tmp_path / "masks" / "s1.tif").unlink()
    _save(tmp_path / "images" / "s0.jpg", np.zeros((8, 10, 3)))
    with pytest.raises(DataError, match=r"images holds .*s0.jpg and s0.png"):
        SegmentationFolder(tmp_path)


def test_a_split_of_no_pairs_names_the_images_without_masks(tmp_path):
    _folder(tmp_path, n=3)
    for mask in (tmp_path / "masks").iterdir():
        mask.rename(mask.with_name(mask.stem + "_mask.png"))
    with pytest.raises(DataError, match=r"cannot split a dataset of 0 sample\(s\) .*3 image\(s\) have no mask, e.g. "
                                        r".*s0.png: .*the image s0.png needs a mask named s0\.\*"):
        split_dataset(SegmentationFolder(tmp_path), 0.25)


def test_drive_names_the_label_file_that_is_missing(tmp_path):
    _drive(tmp_path, "training", [21, 22])
    fov = tmp_path / "training" / "mask" / "22_training_mask.gif"
    fov.unlink()
    _, problems = validate_dataset(DRIVEDataset(tmp_path, split="training"), num_classes=2, skip_bad=True)
    assert [p.message for p in problems] == [
        f"image {tmp_path / 'training' / 'images' / '22_training.tif'} lacks {fov}; add it or remove the image"]


@pytest.mark.parametrize("which", ["images", "masks"])
def test_multi_page_tiffs_are_refused_not_read_as_their_first_page(tmp_path, which):
    _folder(tmp_path, n=2, grey=True)
    pages = [Image.fromarray(np.zeros((8, 10), np.uint8)), Image.fromarray(np.full((8, 10), 255, np.uint8))]
    (tmp_path / which / "s1.png").unlink()
    pages[0].save(tmp_path / which / "s1.tif", save_all=True, append_images=pages[1:])
    _, problems = validate_dataset(SegmentationFolder(tmp_path), num_classes=2, skip_bad=True)
    assert [p.path.name for p in problems] == ["s1.tif"]
    assert "is a stack of 2 pages (a multi-page TIFF)" in problems[0].message


@pytest.mark.parametrize("train", [False, True])
def test_resized_masks_stay_centred_on_the_resized_image(train):
    """Masks are resampled by pixel centres like the image's bilinear resize: torchvision's legacy
    nearest resize put them about half a pixel up and to the left. Reference: the image itself
    (a copy of the mask) resized bilinearly and thresholded."""
    m = torch.zeros(64, 80, dtype=torch.long)
    m[11:31, 21:51] = 1
    image, mask = tv_tensors.Image(torch.stack([m.float()] * 3)), tv_tensors.Mask(m)

    def centre(x):
        y, xx = torch.nonzero(x, as_tuple=True)
        return torch.stack([y.float().mean(), xx.float().mean()])

    shifts = []
    for seed in range(12):
        torch.manual_seed(seed)
        if train:
            t = build_transforms(True, size=(48, 64), scale=(0.5, 2.0), hflip=0, vflip=0)
        else:
            t = build_transforms(False, size=(37 + 7 * seed, 29 + 11 * seed))
        img, msk = t(image, mask)
        if (msk == 1).any() and (img[0] > 0.5).any():
            shifts.append(centre(msk == 1) - centre(img[0] > 0.5))
    assert len(shifts) >= 8
    mean = torch.stack(shifts).mean(0).abs()
    assert mean.max() < 0.15, mean  # legacy nearest: 0.4-0.5 px
