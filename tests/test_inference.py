"""Tiled inference (``unetzoo.predict``): overlap-tile for valid convolutions, blending for padded ones.

Reference results are computed here independently of unetzoo.inference: one forward pass of
the network over the whole image, mirror-padded with ``numpy.pad(mode="reflect")`` for valid
convolutions, and flip averages written out by hand.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import unetzoo
from unetzoo.inference import plan_tiles
from unetzoo.inference.tiling import plan_padded_axis, reflect_indices

torch.set_num_threads(2)
FLIPS = ((), (-1,), (-2,), (-2, -1))


# ----------------------------------------------------------------------------- stand-in networks
def _double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3), nn.ReLU(), nn.Conv2d(cout, cout, 3), nn.ReLU())


class ValidUNet(nn.Module):
    """A small valid-convolution U-Net: the 2015 design with four levels (three 2x2 pools), narrow.

    Its valid input sizes are n = 4 (mod 8) and it outputs n - 88: the output is 4 (mod 8), off
    the 8 px pooling grid, exactly like the real network's 388 (mod 16).
    """

    def __init__(self, width: int = 4, in_chans: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        depth = 4
        widths = [width * 2**i for i in range(depth)]
        self.down = nn.ModuleList(_double_conv(c, w) for c, w in zip([in_chans, *widths[:-1]], widths))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i], widths[i - 1], 2, 2) for i in range(depth - 1, 0, -1))
        self.convs = nn.ModuleList(_double_conv(2 * widths[i - 1], widths[i - 1]) for i in range(depth - 1, 0, -1))
        self.head = nn.Conv2d(widths[0], num_classes, 1)
        self.in_chans, self.num_classes = in_chans, num_classes
        self.output_stride = 2 ** (depth - 1)
        for m in self.modules():  # the paper's He initialisation keeps the deep path's signal alive
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        with torch.no_grad():  # measured, not assumed
            self.border = (100 - self(torch.zeros(1, in_chans, 100, 100)).shape[-1]) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(F.max_pool2d(x, 2) if i else x)
            skips.append(x)
        x = skips.pop()
        for up, conv in zip(self.ups, self.convs):
            x = up(x)
            s = skips.pop()
            top, left = (s.shape[-2] - x.shape[-2]) // 2, (s.shape[-1] - x.shape[-1]) // 2
            x = conv(torch.cat([x, s[..., top : top + x.shape[-2], left : left + x.shape[-1]]], 1))
        return self.head(x)


def _valid_size(n: int, step: int, offset: int) -> int:
    return n + (offset - n) % step


def _whole_valid(model: nn.Module, img: np.ndarray, step: int, offset: int, flips=((),)) -> np.ndarray:
    """One forward pass over the whole mirror-padded image (smallest valid size), cropped to the image."""
    h, w = img.shape
    b = model.border
    hp, wp = _valid_size(h + 2 * b, step, offset), _valid_size(w + 2 * b, step, offset)
    padded = np.pad(img, ((b, hp - h - b), (b, wp - w - b)), mode="reflect")
    x = torch.from_numpy(padded)[None, None]
    with torch.no_grad():
        out = sum(model(x.flip(d) if d else x).flip(d) if d else model(x) for d in flips) / len(flips)
    return out[0, :, :h, :w].numpy()


@pytest.fixture(scope="module")
def valid_net() -> ValidUNet:
    torch.manual_seed(0)
    return ValidUNet().eval()


@pytest.fixture(scope="module")
def padded_net() -> nn.Module:
    torch.manual_seed(0)
    return unetzoo.create("unet-classic", base_c=8, bilinear=True, num_classes=3).eval()


def _smooth_image(h: int, w: int, c: int = 3, seed: int = 0) -> np.ndarray:
    rs = np.random.RandomState(seed)
    yy, xx = np.mgrid[:h, :w]
    base = np.sin(yy / 9.0) * np.cos(xx / 13.0)
    return (base[..., None] + 0.3 * rs.randn(h, w, c)).astype(np.float32)


# ----------------------------------------------------------------------------- geometry
def test_reflect_indices_match_numpy_pad_even_far_outside():
    n = 7
    idx = np.arange(-40, 50)
    expected = np.pad(np.arange(n), (40, 50 - n), mode="reflect")
    np.testing.assert_array_equal(reflect_indices(idx, n), expected)


def test_blend_weights_cover_every_pixel_and_single_tiles_are_untouched():
    plan = plan_padded_axis(300, 64, 16, multiple=16)
    cover = np.zeros(300)
    for i, w in enumerate(plan.weights):
        assert np.all(w > 0)
        cover[plan.out_start(i) : plan.out_start(i) + len(w)] += 1
    assert cover.min() >= 1
    assert all(s % 16 == 0 for s in plan.starts)
    # a pixel covered by one tile gets weight 1 from it (the prediction passes through unchanged)
    total = np.zeros(300)
    for i, w in enumerate(plan.weights):
        total[plan.out_start(i) : plan.out_start(i) + len(w)] += w
    np.testing.assert_allclose(total[cover == 1], 1.0)


def test_unet_original_572_tiles_keep_384_of_their_388_output_pixels():
    model = unetzoo.create("unet-original")  # SEED_SYSTEMS §4: 572 -> 388, four 2x2 pools (grid of 16)
    rows, cols = plan_tiles(model, 1000, 800)
    assert rows.window == 572 and rows.border == 92
    assert [c for _, c in rows.keep] == [384, 384, 232]
    assert [rows.out_start(i) for i in range(len(rows))] == [0, 384, 768]
    assert len(cols) == 3


# ----------------------------------------------------------------------------- valid convolutions
@pytest.mark.parametrize("tile", [100, 116, 164])
def test_overlap_tile_equals_one_pass_over_the_mirror_padded_image(valid_net, tile):
    img = np.random.RandomState(1).rand(37, 29).astype(np.float32)
    tiled = unetzoo.predict(valid_net, img, tile=tile)
    whole = _whole_valid(valid_net, img, step=8, offset=4)
    assert tiled.shape == (2, 37, 29)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())
    labels = unetzoo.predict(valid_net, img, tile=tile, output="labels")  # made band by band
    assert (labels == whole.argmax(0)).mean() > 0.999  # float ties aside


def test_overlap_tile_off_the_pooling_grid_would_not_be_seamless(valid_net):
    img = np.random.RandomState(1).rand(37, 29).astype(np.float32)
    whole = _whole_valid(valid_net, img, step=8, offset=4)
    valid_net.output_stride = 1  # pretend: tiles then advance by the full 12 px output, off the 8 px grid
    try:
        off_grid = unetzoo.predict(valid_net, img, tile=100)
    finally:
        valid_net.output_stride = 8
    assert np.abs(off_grid - whole).max() > 0.01 * np.abs(whole).max()


def test_overlap_tile_with_tta_equals_flip_averaged_whole_image(valid_net):
    img = np.random.RandomState(2).rand(30, 27).astype(np.float32)
    tiled = unetzoo.predict(valid_net, img, tile=100, tta=True)
    whole = _whole_valid(valid_net, img, step=8, offset=4, flips=FLIPS)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_unet_original_tiled_equals_whole_mirror_padded_image():
    torch.manual_seed(0)
    model = unetzoo.create("unet-original").eval()
    img = np.random.RandomState(3).rand(20, 18).astype(np.float32)
    tiled = unetzoo.predict(model, img, tile=204, batch_size=4)  # 20 px out per tile -> 2x2 tiles of 16 px
    whole = _whole_valid(model, img, step=16, offset=124)  # one pass at 204x204
    # equal up to float32 rounding (convolution kernels differ with the input size)
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=1e-5 * np.abs(whole).max())


def test_valid_network_errors_name_the_fix():
    model = unetzoo.create("unet-original")
    img = np.zeros((30, 30), np.float32)
    with pytest.raises(ValueError, match="nearest valid sizes: 556, 572"):
        unetzoo.predict(model, img, tile=560)
    with pytest.raises(ValueError, match="overlap does not apply"):
        unetzoo.predict(model, img, overlap=32)
    # 4 px of output, less than the 16 px grid; 2 * 92 + 16 = 200 is not a valid size, 204 is
    with pytest.raises(ValueError, match="too small.*the smallest tile that works is 204"):
        unetzoo.predict(model, img, tile=188)
    assert unetzoo.predict(model, img, tile=204).shape == (2, 30, 30)


# ----------------------------------------------------------------------------- padded convolutions
def test_blended_tiles_match_whole_image_inference(padded_net):
    """Tolerance: with overlap >= 32 px the blended logits differ from one whole-image pass by at
    most 1% of the logits' standard deviation (measured: 0.2%), and every label agrees; without
    overlap the tile seams are an order of magnitude worse (measured: 13%)."""
    x = torch.from_numpy(_smooth_image(96, 128)).permute(2, 0, 1)  # 2x3 tiles, all on the 16 px grid
    with torch.no_grad():
        whole = padded_net(x[None])[0]
    tiled = unetzoo.predict(padded_net, x, tile=64, overlap=32)
    seams = unetzoo.predict(padded_net, x, tile=64, overlap=0)
    err = (tiled - whole).abs().max().item() / whole.std().item()
    err_no_overlap = (seams - whole).abs().max().item() / whole.std().item()
    assert err < 0.01
    assert err_no_overlap > 10 * err
    labels = unetzoo.predict(padded_net, x, tile=64, overlap=32, output="labels")
    assert torch.equal(labels.long(), whole.argmax(0))


def test_one_tile_is_exactly_the_network(padded_net):
    x = torch.from_numpy(_smooth_image(40, 56)).permute(2, 0, 1)
    with torch.no_grad():
        whole = padded_net(x[None])[0]
    torch.testing.assert_close(unetzoo.predict(padded_net, x, tile=64), whole, rtol=0, atol=1e-6)


def test_images_smaller_than_one_pooling_cell_are_zero_padded(padded_net):
    x = torch.from_numpy(_smooth_image(10, 12)).permute(2, 0, 1)  # unet-classic needs >= 16 px
    with torch.no_grad():
        expected = padded_net(F.pad(x, (0, 4, 0, 6))[None])[0, :, :10, :12]
    torch.testing.assert_close(unetzoo.predict(padded_net, x), expected, rtol=0, atol=1e-6)


def test_tta_is_the_average_over_flips_and_flip_equivariant(padded_net):
    x = torch.from_numpy(_smooth_image(48, 64)).permute(2, 0, 1)
    with torch.no_grad():
        manual = sum(torch.softmax(padded_net(x[None].flip(d)), 1).flip(d) for d in FLIPS)[0] / 4
    tta = unetzoo.predict(padded_net, x, tile=64, output="probs", tta=True)
    torch.testing.assert_close(tta, manual, rtol=0, atol=1e-6)
    flipped = unetzoo.predict(padded_net, x.flip(-1), tile=64, output="probs", tta=True)
    torch.testing.assert_close(flipped, tta.flip(-1), rtol=0, atol=1e-6)
    plain = unetzoo.predict(padded_net, x.flip(-1), tile=64, output="probs")
    assert (plain - unetzoo.predict(padded_net, x, tile=64, output="probs").flip(-1)).abs().max() > 1e-4


# ----------------------------------------------------------------------------- inputs and outputs
def test_uint8_images_are_scaled_and_normalised_like_transforms_for(padded_net):
    rgb = np.random.RandomState(4).randint(0, 256, (40, 50, 3)).astype(np.uint8)
    pre = unetzoo.transforms_for(padded_net)
    manual = (rgb / 255.0 - np.array(pre.mean)) / np.array(pre.std)
    expected = unetzoo.predict(padded_net, manual.astype(np.float32), tile=64)
    np.testing.assert_allclose(unetzoo.predict(padded_net, rgb, tile=64), expected, rtol=0, atol=1e-5)


def test_big_endian_images_predict_as_their_native_order_copy(padded_net):
    """FITS and some TIFF readers give big-endian arrays ('>u2'), which torch.from_numpy refuses."""
    native = np.random.RandomState(5).randint(0, 65536, (40, 50, 3)).astype("<u2")
    big = native.astype(">u2")
    assert not big.dtype.isnative and np.array_equal(big, native)
    np.testing.assert_array_equal(unetzoo.predict(padded_net, big, tile=32), unetzoo.predict(padded_net, native, tile=32))


def test_outputs_shapes_types_and_batches(padded_net):
    x = torch.from_numpy(_smooth_image(40, 50)).permute(2, 0, 1)
    probs = unetzoo.predict(padded_net, x, tile=32, overlap=8, output="probs")
    assert probs.shape == (3, 40, 50)
    torch.testing.assert_close(probs.sum(0), torch.ones(40, 50))
    labels = unetzoo.predict(padded_net, x, tile=32, overlap=8, output="labels")
    assert labels.dtype == torch.uint8 and torch.equal(labels.long(), probs.argmax(0))
    batch = unetzoo.predict(padded_net, torch.stack([x, x.flip(-1)]), tile=32, overlap=8, output="probs")
    assert batch.shape == (2, 3, 40, 50)
    torch.testing.assert_close(batch[0], probs)
    out = unetzoo.predict(padded_net, x.permute(1, 2, 0).numpy(), tile=32, overlap=8, output="labels")
    assert isinstance(out, np.ndarray) and out.shape == (40, 50)


def test_one_class_models_use_sigmoid_and_threshold():
    torch.manual_seed(0)
    model = unetzoo.create("unet-classic", base_c=4, bilinear=True, num_classes=1).eval()
    x = torch.from_numpy(_smooth_image(70, 50)).permute(2, 0, 1)
    logits = unetzoo.predict(model, x, tile=32, overlap=8)
    probs = unetzoo.predict(model, x, tile=32, overlap=8, output="probs")
    torch.testing.assert_close(probs, torch.sigmoid(logits), rtol=0, atol=1e-3)  # blended after vs before
    labels = unetzoo.predict(model, x, tile=32, overlap=8, output="labels")
    assert labels.shape == (70, 50) and torch.equal(labels.bool(), probs[0] > 0.5)


def test_tiles_go_through_in_batches_and_the_mode_is_restored(padded_net):
    calls = []
    handle = padded_net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    padded_net.train()
    try:
        unetzoo.predict(padded_net, np.zeros((70, 90, 3), np.float32), tile=32, overlap=8, batch_size=4)
    finally:
        handle.remove()
    assert padded_net.training
    padded_net.eval()
    rows, cols = plan_tiles(padded_net, 70, 90, tile=32, overlap=8)
    # each submodule's own mode comes back, not the model's: a norm frozen by hand stays in eval
    padded_net.train()
    norm = padded_net.get_submodule("encoder.0.block.conv1.1")
    norm.eval()
    unetzoo.predict(padded_net, np.zeros((20, 20, 3), np.float32))
    assert padded_net.training and not norm.training
    padded_net.eval()
    n = len(rows) * len(cols)
    assert sum(s[0] for s in calls) == n and max(s[0] for s in calls) == 4
    assert all(tuple(s[-2:]) == (32, 32) for s in calls)


def test_bad_inputs_raise_clear_errors(padded_net):
    with pytest.raises(ValueError, match="in_chans=1"):
        unetzoo.predict(padded_net, np.zeros((20, 20), np.uint8))
    strided = nn.Conv2d(3, 2, 1)
    strided.pad_multiple, strided.in_chans = 32, 3  # like unet-resnet50: inputs padded to a multiple of 32
    with pytest.raises(ValueError, match="multiple of the network's down-sampling factor 32; use 480 or 512"):
        unetzoo.predict(strided, np.zeros((20, 20, 3), np.float32), tile=500)
    with pytest.raises(ValueError, match="tile must be a positive size"):
        unetzoo.predict(padded_net, np.zeros((20, 20, 3), np.float32), tile=0)
    with pytest.raises(ValueError, match="output must be"):
        unetzoo.predict(padded_net, np.zeros((20, 20, 3), np.float32), output="mask")
    for tile in (32.0, (32,), "32"):
        with pytest.raises(ValueError, match=r"tile must be a whole number or \(height, width\)"):
            unetzoo.predict(padded_net, np.zeros((20, 20, 3), np.float32), tile=tile)


def test_numpy_integer_tiles_are_sizes(padded_net):
    x = np.random.RandomState(0).rand(40, 50, 3).astype(np.float32)
    ref = unetzoo.predict(padded_net, x, tile=32, overlap=8)
    np.testing.assert_array_equal(unetzoo.predict(padded_net, x, tile=np.int64(32), overlap=8), ref)
    np.testing.assert_array_equal(unetzoo.predict(padded_net, x, tile=(np.int64(32), 32), overlap=8), ref)


@pytest.mark.parametrize("batched", [False, True])
def test_results_are_ordinary_tensors(padded_net, batched):
    """Soft targets for a loss, or edited in place: an inference-mode tensor refuses both."""
    x = torch.from_numpy(_smooth_image(40, 50)).permute(2, 0, 1)
    soft = unetzoo.predict(padded_net, x[None] if batched else x, tile=32, output="probs")
    assert not soft.is_inference()
    soft[soft < 0.01] = 0
    student = nn.Conv2d(3, 3, 1)
    logp = student(x[None]).log_softmax(1)
    (-(logp * (soft if batched else soft[None])).sum(1).mean()).backward()
    assert student.weight.grad is not None


def test_bfloat16_autocast_and_progress_bar(padded_net, capsys):
    x = torch.from_numpy(_smooth_image(32, 48)).permute(2, 0, 1)
    ref = unetzoo.predict(padded_net, x, tile=32, overlap=8, output="probs")
    fast = unetzoo.predict(padded_net, x, tile=32, overlap=8, output="probs", dtype=torch.bfloat16, progress=True)
    assert fast.dtype == torch.float32
    assert (fast - ref).abs().max() < 0.05
    assert "tile" in capsys.readouterr().err


@pytest.mark.parametrize("size", [(10, 10), (16, 40), (100, 16)])
def test_images_below_a_networks_smallest_input_get_a_window_it_runs(size):
    """unet-strided needs sides above 16: a 10x10 image got a 16 px window and an error naming a
    size never passed. The window is zero-padded to the smallest the network runs (32 here) and
    the output is the image's size, as the network gives on the zero-padded image."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-strided", num_classes=1).eval()
    image = torch.rand(3, *size)
    out = unetzoo.predict(model, image, output="logits")
    assert out.shape == (1, *size)
    h, w = (max(32, -(-n // 16) * 16) for n in size)
    with torch.no_grad():
        whole = model(torch.nn.functional.pad(image, (0, w - size[1], 0, h - size[0]))[None])[0]
    torch.testing.assert_close(out, whole[:, : size[0], : size[1]], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match=r"tile 16 is smaller than the smallest input the network runs \(17 px\); "
                                         r"use a tile of at least 32"):
        unetzoo.predict(model, image, tile=16)


def test_unpadded_backbones_name_their_smallest_input_and_predict_pads_to_it():
    """inception_v3's unpadded convolutions cannot run 64 px (padded to its stride, 64): the
    forward failed deep inside torch ('Calculated padded input size ... Kernel size'), and so did
    predict on a smaller image. The model finds its smallest side (65: padded to 96) and says so;
    predict zero-pads to it, as the network gives on the zero-padded image."""
    torch.manual_seed(0)
    model = unetzoo.create("unet-inception_v3", num_classes=2, decoder_channels=(16, 16, 16, 16)).eval()
    runs = [side for side in (32, 64, 65, 96) if _runs(model.encoder, side)]  # what the encoder itself runs
    assert runs == [96]
    assert model.min_input_size == 96 - model.pad_multiple + 1 == 65
    with pytest.raises(ValueError, match=r"input 64x70 is too small for inception_v3: .* at least 65 px"):
        model(torch.randn(1, 3, 64, 70))
    assert model(torch.randn(1, 3, 65, 65)).shape == (1, 2, 65, 65)
    image = torch.randn(3, 40, 50)
    out = unetzoo.predict(model, image)
    with torch.no_grad():
        whole = model(F.pad(image[None], (0, 15, 0, 25)))[0]
    torch.testing.assert_close(out, whole[:, :40, :50])


def _runs(encoder: nn.Module, side: int) -> bool:
    try:
        with torch.no_grad():
            encoder(torch.zeros(1, 3, side, side))
    except RuntimeError:
        return False
    return True


@pytest.mark.parametrize("size", [(72, 100), (64, 96)])
def test_flip_averaged_evaluation_scores_what_predict_writes(size):
    """evaluate's whole-image TTA flipped the unpadded image and let the model pad each flip at its
    bottom right; predict flips the padded window. Off the stride they disagreed on 1146 of 7200
    labels of a trained 2-class model."""
    from unetzoo.train.evaluate import _logits

    torch.manual_seed(0)
    model = unetzoo.create("unet-resnet18", num_classes=2, decoder_channels=(16, 16, 8, 8)).eval()
    image = torch.randn(3, *size)
    with torch.no_grad():
        evaluated = _logits(model, image[None], None, None, tta=True)[0].exp()
    predicted = unetzoo.predict(model, image, tta=True, output="probs")
    torch.testing.assert_close(evaluated, predicted, rtol=1e-4, atol=1e-5)
