"""Losses: hand-computed cases, agreement with torch's own losses, ignore_index, build_loss."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage as ndi  # installed with scikit-image (a test extra): the reference below
import torch
import torch.nn.functional as F

from unetzoo.losses import BCELoss, CombinedLoss, CrossEntropyLoss, DiceLoss, FocalLoss, LovaszLoss, build_loss

LOG3 = math.log(3.0)
# one-output logits on a 2x2 image: sigmoid gives foreground probabilities 0.75 0.25 / 0.5 0.25
FG_LOGITS = torch.tensor([[[[LOG3, -LOG3], [0.0, -LOG3]]]])
FG_TARGET = torch.tensor([[[1, 0], [1, 1]]])


def test_dice_two_by_two_by_hand():
    # foreground: |P.T| = .75 + .5 + .25 = 1.5, |P| = 1.75, |T| = 3  -> Dice 3 / 4.75 = 12/19
    # background: |P.T| = .75, |P| = .25 + .75 + .5 + .75 = 2.25, |T| = 1 -> Dice 1.5 / 3.25 = 6/13
    both = DiceLoss(smooth=0.0)(FG_LOGITS, FG_TARGET)
    fg_only = DiceLoss(smooth=0.0, include_background=False)(FG_LOGITS, FG_TARGET)
    assert both.item() == pytest.approx(1 - (12 / 19 + 6 / 13) / 2, abs=1e-6)
    assert fg_only.item() == pytest.approx(1 - 12 / 19, abs=1e-6)


def test_dice_softmax_two_channels_equals_one_output_form():
    two = torch.cat([torch.zeros_like(FG_LOGITS), FG_LOGITS], dim=1)
    assert DiceLoss(smooth=0.0, mode="softmax")(two, FG_TARGET).item() == pytest.approx(
        DiceLoss(smooth=0.0)(FG_LOGITS, FG_TARGET).item(), abs=1e-7)


def test_dice_sigmoid_multichannel_by_hand():
    # two channels scored independently: channel 0 probs .5 everywhere, channel 1 probs .75/.25
    logits = torch.tensor([[[[0.0, 0.0]], [[LOG3, -LOG3]]]])  # 1 x 2 x 1 x 2
    target = torch.tensor([[[1, 0]]])  # one-hot: ch0 = [0, 1], ch1 = [1, 0]
    # ch0: 2*.5/(1 + 1) = .5 ; ch1: 2*.75/(1 + 1) = .75
    loss = DiceLoss(mode="sigmoid", smooth=0.0)(logits, target)
    assert loss.item() == pytest.approx(1 - (0.5 + 0.75) / 2, abs=1e-6)


def test_perfect_prediction_has_zero_dice_loss():
    target = torch.tensor([[[0, 1], [2, 1]]])
    logits = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 100
    assert DiceLoss(smooth=0.0)(logits, target).item() == pytest.approx(0.0, abs=1e-6)


def test_lovasz_two_by_two_by_hand():
    # foreground: errors |t - p| = .25 .25 .5 .75 with t = 1 1 1 at the three largest, sorted
    #   .75(t=1) .5(t=1) .25(t=1) .25(t=0): Jaccard losses 1/3 2/3 1 1 -> increments 1/3 1/3 1/3 0
    #   -> (.75 + .5 + .25) / 3 = 1/2 (the tie between the two .25 errors does not matter)
    # background: probabilities .25 .75 .5 .75 against t = 0 1 0 0; errors .25 .25 .5 .75, sorted
    #   .75(t=0) .5(t=0) .25(t=0) .25(t=1): Jaccard 1/2 2/3 3/4 1 -> .75/2 + .5/6 + .25/12 + .25/4 = 13/24
    both = LovaszLoss()(FG_LOGITS, FG_TARGET)
    fg_only = LovaszLoss(include_background=False)(FG_LOGITS, FG_TARGET)
    assert both.item() == pytest.approx((1 / 2 + 13 / 24) / 2, abs=1e-6)
    assert fg_only.item() == pytest.approx(1 / 2, abs=1e-6)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_of_hard_predictions_is_one_minus_iou(per_image):
    # at 0/1 probabilities the Lovász extension equals the Jaccard loss itself
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randint(0, 3, (2, 5, 7), generator=g), torch.randint(0, 3, (2, 5, 7), generator=g)
    logits = F.one_hot(pred, 3).permute(0, 3, 1, 2).float() * 200.0

    def jaccard_loss(p, t):
        losses = [1 - ((p == k) & (t == k)).sum().item() / ((p == k) | (t == k)).sum().item()
                  for k in range(3) if (t == k).any()]
        return sum(losses) / len(losses)

    expected = (sum(jaccard_loss(p, t) for p, t in zip(pred, target)) / 2 if per_image
                else jaccard_loss(pred, target))
    assert LovaszLoss(per_image=per_image)(logits, target).item() == pytest.approx(expected, abs=1e-5)


def test_lovasz_gradient_lowers_the_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 8, 8, generator=g, requires_grad=True)
    target = torch.randint(0, 2, (2, 8, 8), generator=g)
    loss_fn = LovaszLoss()
    before = loss_fn(logits, target)
    before.backward()
    after = loss_fn(logits.detach() - 0.5 * logits.grad, target)
    assert after.item() < before.item()


def test_focal_by_hand_and_gamma_zero_is_cross_entropy():
    # pixel probabilities of the true class: .75, .75, .5, .25
    p_t = torch.tensor([0.75, 0.75, 0.5, 0.25])
    want = (-(1 - p_t) ** 2 * p_t.log()).mean()
    assert FocalLoss(gamma=2.0)(FG_LOGITS, FG_TARGET).item() == pytest.approx(want.item(), rel=1e-6)
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 4, 5, 6, generator=g), torch.randint(0, 4, (2, 5, 6), generator=g)
    w = [0.5, 1.0, 2.0, 3.0]
    ce = F.cross_entropy(logits, target, weight=torch.tensor(w))
    assert FocalLoss(gamma=0.0, weight=w)(logits, target).item() == pytest.approx(ce.item(), rel=1e-6)


def test_cross_entropy_matches_torch_with_weights_ignore_and_smoothing():
    g = torch.Generator().manual_seed(1)
    logits, target = torch.randn(2, 3, 6, 5, generator=g), torch.randint(0, 3, (2, 6, 5), generator=g)
    target[:, :2] = 255
    w = torch.tensor([1.0, 2.0, 0.5])
    for smoothing in (0.0, 0.1):
        want = F.cross_entropy(logits, target, weight=w, ignore_index=255, label_smoothing=smoothing)
        got = CrossEntropyLoss(weight=w, label_smoothing=smoothing)(logits, target)
        assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_bce_matches_torch_weighted_mean():
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(3, 1, 4, 4, generator=g), torch.randint(0, 2, (3, 4, 4), generator=g)
    per_pixel = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
    assert BCELoss()(logits, target).item() == pytest.approx(per_pixel.mean().item(), rel=1e-6)
    w = 1 + 2 * target.float()  # pos_weight 3, normalised by the sum of weights like weighted CE
    want = (per_pixel * w).sum() / w.sum()
    assert BCELoss(pos_weight=3.0)(logits, target).item() == pytest.approx(want.item(), rel=1e-6)
    with pytest.raises(ValueError, match="one-channel"):
        BCELoss()(torch.randn(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize("make", [
    lambda: CrossEntropyLoss(weight=[1.0, 2.0, 3.0]), lambda: FocalLoss(gamma=2.0), lambda: DiceLoss(),
    lambda: DiceLoss(mode="sigmoid"), lambda: build_loss("ce+0.5*dice+focal", num_classes=3),
    lambda: LovaszLoss(), lambda: LovaszLoss(per_image=True), lambda: build_loss("ce+lovasz", num_classes=3),
])
def test_ignored_pixels_do_not_change_the_loss(make):
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(2, 3, 4, 6, generator=g), torch.randint(0, 3, (2, 4, 6), generator=g)
    target[:, :, 4:] = 255  # the last two columns are ignored
    loss = make()
    base = loss(logits, target)
    changed = logits.clone()
    changed[:, :, :, 4:] = torch.randn(2, 3, 4, 2, generator=g) * 10
    assert loss(changed, target).item() == pytest.approx(base.item(), rel=1e-6)
    cropped = loss(logits[..., :4].contiguous(), target[..., :4].contiguous())
    assert cropped.item() == pytest.approx(base.item(), rel=1e-6)


def test_all_ignored_batch_gives_zero_with_gradient():
    logits = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), 255)
    for loss in (CrossEntropyLoss(), FocalLoss(), DiceLoss(), CrossEntropyLoss(label_smoothing=0.1), LovaszLoss()):
        value = loss(logits, target)
        assert torch.isfinite(value)
        value.backward()
    one = torch.randn(1, 1, 3, 3, requires_grad=True)
    assert BCELoss()(one, target).item() == 0.0


def test_build_loss_weighted_sum_and_parts():
    g = torch.Generator().manual_seed(4)
    logits, target = torch.randn(2, 2, 5, 5, generator=g), torch.randint(0, 2, (2, 5, 5), generator=g)
    combined = build_loss(" CE + 0.5 * dice ", num_classes=2, class_weights=[1.0, 2.0], dice_smooth=0.0)
    assert isinstance(combined, CombinedLoss) and combined.names == ["ce", "dice"]
    ce = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0]))
    dice = DiceLoss(smooth=0.0)(logits, target)
    assert combined(logits, target).item() == pytest.approx((ce + 0.5 * dice).item(), rel=1e-6)
    parts = combined.parts(logits, target)
    assert parts["ce"].item() == pytest.approx(ce.item(), rel=1e-6)
    focal = build_loss("focal", num_classes=2, gamma=0.0)
    assert focal(logits, target).item() == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-6)


def test_build_loss_one_output_model():
    loss = build_loss("bce+dice", num_classes=1, bce_pos_weight=2.0)
    value = loss(FG_LOGITS.requires_grad_(), FG_TARGET)
    value.backward()
    assert torch.isfinite(value)


@pytest.mark.parametrize("spec, kwargs, error, match", [
    ("ce+iou", {"num_classes": 2}, ValueError, "iou"),
    ("ce", {"num_classes": 1}, ValueError, "bce"),
    ("bce", {"num_classes": 3}, ValueError, "'ce'"),
    ("ce", {"num_classes": 3, "class_weights": [1, 2]}, ValueError, "need 3"),
    ("ce+dice", {"num_classes": 2, "gama": 2}, TypeError, "gama"),
    ("ce+ce", {"num_classes": 2}, ValueError, "twice"),
    ("0*ce", {"num_classes": 2}, ValueError, "weights must be > 0"),
    ("ce+00*lovasz", {"num_classes": 2}, ValueError, "'00\\*lovasz'.*weight 0"),
    # class weights that make the weighted mean meaningless (1e38, NaN, or 0 forever)
    ("ce", {"num_classes": 2, "class_weights": [-1, 1]}, ValueError, r"class weights \[-1.0, 1.0\] must be finite"),
    ("ce", {"num_classes": 2, "class_weights": [0, 0]}, ValueError, "at least one > 0"),
    ("focal", {"num_classes": 2, "class_weights": [math.nan, 1]}, ValueError, "must be finite"),
    ("bce", {"num_classes": 1, "pos_weight": -1}, ValueError, "pos_weight must be a finite number > 0"),
    ("focal", {"num_classes": 2, "gamma": -1}, ValueError, "gamma must be a finite number >= 0"),
    ("dice", {"num_classes": 2, "smooth": -1}, ValueError, "smooth must be a finite number >= 0"),
    ("ce", {"num_classes": 2, "label_smoothing": 1.5}, ValueError, "label_smoothing must be from 0 to 1"),
    # set for every term by build_loss's own arguments, never for one term apart
    ("ce+lovasz", {"num_classes": 2, "lovasz_ignore_index": 0}, TypeError,
     "'lovasz_ignore_index' would set ignore_index.*data.ignore_index"),
    ("ce", {"num_classes": 2, "class_weights": [1, 5], "weight": [1, 1]}, TypeError, "loss.class_weights"),
    ("focal", {"num_classes": 2, "focal_weight": [1, 1]}, TypeError, "'focal_weight' would set weight"),
    ("bce", {"num_classes": 1, "class_weights": [1, 5], "pos_weight": 2}, ValueError,
     "either the pos_weight option or class_weights"),
    ("ce+dice", {"num_classes": 2, "dice_smooth": 0, "smooth": 1}, ValueError, "both set dice's smooth"),
])
def test_build_loss_errors(spec, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_loss(spec, **kwargs)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_out_of_range_target_raises(smoothing):
    with pytest.raises(ValueError, match="outside 0..1"):
        CrossEntropyLoss(label_smoothing=smoothing)(torch.randn(1, 2, 2, 2), torch.tensor([[[0, 1], [2, 0]]]))
    with pytest.raises(ValueError, match="3 class weights for 2 classes"):
        CrossEntropyLoss(weight=[1, 2, 3], label_smoothing=smoothing)(torch.randn(1, 2, 2, 2),
                                                                      torch.tensor([[[0, 1], [1, 0]]]))


def test_dice_without_smoothing_scores_absent_classes_as_matched():
    """smooth=0: a class in neither prediction nor truth is a perfect 1, not 0 (0/0)."""
    target = torch.zeros(1, 2, 2, dtype=torch.long)  # background only
    perfect = torch.tensor([[[[-50.0, -50.0], [-50.0, -50.0]]]])  # one output: foreground p ~ 0
    assert DiceLoss(smooth=0.0)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    assert DiceLoss(smooth=0.0, include_background=False)(perfect, target).item() == pytest.approx(0.0, abs=1e-6)
    ignored = torch.full((1, 2, 2), 255)
    assert DiceLoss(smooth=0.0)(perfect, ignored).item() == pytest.approx(0.0, abs=1e-6)


# --- the original U-Net's border weights -------------------------------------------------------

def _blobs(seed: int, shape=(2, 40, 48), density=0.02, size=5) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(shape, generator=g) < density
    return F.max_pool2d(seeds[:, None].float(), size, 1, size // 2)[:, 0] > 0


def _reference_map(target, *, w0, sigma, radius=math.inf, class_weights=None, ignore_index=255):
    """Eq. 2 of Ronneberger et al. 2015 with scipy: one exact Euclidean distance transform per object."""
    out = []
    for t in target.numpy():
        valid = t != ignore_index
        regions, n = ndi.label(valid & (t != 0), structure=[[1, 1, 1]] * 3)
        dist = [ndi.distance_transform_edt(regions != k) for k in range(1, n + 1)]
        dist += [np.full(t.shape, np.inf)] * 2  # fewer than two objects: "no second object" is infinitely far
        stack = torch.tensor(np.stack(dist).astype("float32")).sort(0).values
        stack[stack > radius] = math.inf
        d1, d2 = stack[0], stack[1]
        base = torch.ones(t.shape) if class_weights is None else torch.tensor(class_weights)[torch.tensor(t).clamp(0, 1)]
        w = torch.where(torch.tensor((t == 0) & valid), base + w0 * torch.exp(-((d1 + d2) ** 2) / (2 * sigma**2)), base)
        out.append(torch.where(torch.tensor(valid), w, 0.0))
    return torch.stack(out)


@pytest.mark.parametrize("seed,density,size", [(0, 0.02, 5), (1, 0.05, 3), (2, 0.01, 9), (3, 0.2, 1)])
def test_label_components_give_scipys_eight_neighbour_regions(seed, density, size):
    from unetzoo.losses import label_components

    mask = _blobs(seed, density=density, size=size)
    labels = label_components(mask)
    for i in range(mask.shape[0]):
        ref, n = ndi.label(mask[i].numpy(), structure=[[1, 1, 1]] * 3)
        ours = labels[i].numpy()
        assert ((ours > 0) == mask[i].numpy()).all()
        pairs = set(zip(ref[ref > 0].tolist(), ours[ours > 0].tolist()))
        assert len(pairs) == n == len(set(ours[ours > 0].tolist())), "a region split or two regions merged"


def test_label_components_follow_a_long_spiral():
    from unetzoo.losses import label_components

    spiral = torch.zeros(1, 31, 31, dtype=torch.bool)
    top, left, bottom, right = 0, 0, 30, 30
    while top <= bottom and left <= right:  # a 1-px wall winding inwards, gaps of 1 px between turns
        spiral[0, top, left:right + 1] = True
        spiral[0, top:bottom + 1, right] = True
        if top + 2 <= bottom:
            spiral[0, bottom, left:right + 1] = True
        if left + 2 <= right:
            spiral[0, top + 2:bottom + 1, left] = True
        top, left, bottom, right = top + 2, left + 2, bottom - 2, right - 2
    ref, n = ndi.label(spiral[0].numpy(), structure=[[1, 1, 1]] * 3)
    labels = label_components(spiral)[0]
    assert len(set(labels[spiral[0]].tolist())) == n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_border_weight_map_equals_the_papers_formula_with_exact_distances(seed):
    from unetzoo.losses import border_weight_map

    target = _blobs(seed).long()
    target[0, :3, :5] = 255  # ignored pixels: weight 0, and not an object
    got = border_weight_map(target, w0=10.0, sigma=5.0, max_distance=80)
    want = _reference_map(target, w0=10.0, sigma=5.0)
    assert torch.allclose(got, want, atol=1e-5)
    assert got.max() > 5, "the test masks should have objects close together"


def test_border_weight_map_searches_only_within_max_distance():
    from unetzoo.losses import border_weight_map

    target = _blobs(4, density=0.01).long()
    got = border_weight_map(target, w0=10.0, sigma=2.0, max_distance=6, class_weights=[0.5, 2.0])
    want = _reference_map(target, w0=10.0, sigma=2.0, radius=6, class_weights=[0.5, 2.0])
    assert torch.allclose(got, want, atol=1e-5)


def test_border_weight_of_a_one_pixel_gap_between_two_squares():
    from unetzoo.losses import border_weight_map

    target = torch.zeros(1, 9, 11, dtype=torch.long)
    target[0, 2:7, 1:5] = 1
    target[0, 2:7, 6:10] = 1  # column 5 is a 1-px gap: d1 = d2 = 1
    w = border_weight_map(target, w0=10.0, sigma=5.0)
    assert w[0, 4, 5].item() == pytest.approx(1 + 10 * math.exp(-4 / 50), rel=1e-6)
    assert w[0, 4, 2].item() == 1.0  # inside an object: w_c only
    assert w[0, 0, 0].item() < w[0, 4, 5].item()


def test_border_ce_is_the_weighted_mean_and_plain_ce_at_w0_zero():
    from unetzoo.losses import BorderWeightedCELoss, border_weight_map

    torch.manual_seed(0)
    target = _blobs(5).long()
    target[1, 10:14, 10:20] = 255
    logits = torch.randn(2, 2, *target.shape[1:], requires_grad=True)
    loss = BorderWeightedCELoss(w0=10.0, sigma=3.0)(logits, target)
    w = border_weight_map(target, w0=10.0, sigma=3.0)
    nll = F.cross_entropy(logits, target.clamp(max=1), reduction="none")
    assert loss.item() == pytest.approx(((w * nll).sum() / w.sum()).item(), rel=1e-5)
    plain = BorderWeightedCELoss(w0=0.0)(logits, target)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target, ignore_index=255).item(), rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_border_ce_from_a_spec_with_options_and_class_weights():
    from unetzoo.losses import BorderWeightedCELoss

    loss = build_loss("border_ce+dice", num_classes=2, class_weights=[1.0, 3.0], w0=5.0, sigma=2.0)
    term = loss.losses[0]
    assert isinstance(term, BorderWeightedCELoss) and (term.w0, term.sigma) == (5.0, 2.0)
    assert term.weight.tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="sigma > 0"):
        build_loss("border_ce", num_classes=2, sigma=0.0)


def test_label_components_of_a_batch_beyond_float32s_exact_integers():
    from unetzoo.losses import label_components

    big = torch.zeros(3, 2400, 2400, dtype=torch.bool)  # 17.3M pixels > 2^24: labelled in two calls
    big[:, :3, :3] = True
    big[1, 100:104, 100:104] = True
    big[2, -2:, -2:] = True
    labels = label_components(big)
    assert ((labels > 0) == big).all()
    assert [len(set(labels[i][big[i]].tolist())) for i in range(3)] == [1, 2, 2]
    assert labels.max() < 2**24



def test_term_weights_may_be_written_in_scientific_notation():
    loss = build_loss("ce+1e-1*dice+2.5E0*lovasz", num_classes=2)  # ('+' separates the terms)
    assert loss.names == ["ce", "dice", "lovasz"] and loss.weights == [1.0, 0.1, 2.5]


def test_pos_weight_still_reaches_bce():
    assert build_loss("bce", num_classes=1, pos_weight=3).losses[0].weight.tolist() == [1.0, 3.0]


def test_label_smoothing_with_only_zero_weight_classes_gives_zero_not_nan():
    """The plain path's promise (0 where nothing counts) holds with label smoothing too."""
    logits, target = torch.randn(1, 3, 4, 4, requires_grad=True), torch.zeros(1, 4, 4, dtype=torch.long)
    for smoothing in (0.0, 0.1):
        value = CrossEntropyLoss(weight=[0, 1, 1], label_smoothing=smoothing)(logits, target)
        value.backward()
        assert value.item() == 0.0 and torch.isfinite(logits.grad).all(), smoothing


def test_label_smoothed_cross_entropy_keeps_float32_weights_under_bfloat16_autocast():
    """torch's reference in float32 on the same bfloat16-rounded logits: weights like 1/3 are not
    rounded to bfloat16 (which moved the loss by 1e-4)."""
    torch.manual_seed(0)
    weight = [1 / 3, 2 / 3, 0.77]
    logits, target = torch.randn(2, 3, 8, 8).bfloat16(), torch.randint(0, 3, (2, 8, 8))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = CrossEntropyLoss(weight=weight, label_smoothing=0.1)(logits, target)
    want = F.cross_entropy(logits.float(), target, weight=torch.tensor(weight), label_smoothing=0.1)
    assert got.dtype == torch.float32 and got.item() == pytest.approx(want.item(), abs=1e-6)
