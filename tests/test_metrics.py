"""ConfusionMatrix: hand-computed cases, an independent numpy computation, and DDP reduction."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from unetzoo.metrics import ConfusionMatrix

KEYS = {"pixel_accuracy", "mean_accuracy", "per_class_accuracy", "per_class_iou", "miou",
        "per_class_dice", "dice", "fg_iou"}


def test_two_class_case_by_hand():
    # target 0 1 / 1 1, prediction 0 1 / 0 1 -> M = [[1, 0], [1, 2]]
    target = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [0, 1]]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert cm.matrix.tolist() == [[1, 0], [1, 2]]
    m = cm.compute()
    assert set(m) == KEYS
    assert m["pixel_accuracy"] == pytest.approx(3 / 4)
    assert m["per_class_accuracy"] == pytest.approx([1.0, 2 / 3])
    assert m["mean_accuracy"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["per_class_iou"] == pytest.approx([1 / 2, 2 / 3])  # 1/(1+2-1), 2/(3+2-2)
    assert m["miou"] == pytest.approx(7 / 12)
    assert m["per_class_dice"] == pytest.approx([2 / 3, 4 / 5])  # 2*1/(1+2), 2*2/(3+2)
    assert m["dice"] == pytest.approx(4 / 5)
    assert m["fg_iou"] == pytest.approx(2 / 3)


def test_logits_one_channel_thresholded_at_zero_and_multichannel_argmax():
    target = torch.tensor([[[0, 1], [1, 0]]])
    one = torch.tensor([[[[-0.1, 0.2], [3.0, 0.0]]]])  # > 0 -> 1: [[0, 1], [1, 0]]
    cm = ConfusionMatrix(1)  # one-output model: counted as 2 classes
    cm.update(one, target)
    assert cm.compute()["pixel_accuracy"] == 1.0
    multi = torch.stack([-one[:, 0], one[:, 0]], dim=1)  # argmax picks the same labels
    cm2 = ConfusionMatrix(2)
    cm2.update(multi, target)
    assert torch.equal(cm.matrix, cm2.matrix)


def test_ignored_pixels_are_not_counted():
    target = torch.tensor([[[0, 255], [1, 255]]])
    pred = torch.tensor([[[0, 1], [1, 0]]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    assert int(cm.matrix.sum()) == 2
    assert cm.compute()["miou"] == 1.0


def test_absent_class_is_nan_and_left_out_of_means():
    target = torch.tensor([[[0, 1], [1, 1]]])
    pred = torch.tensor([[[0, 1], [1, 0]]])
    m = ConfusionMatrix(3)
    m.update(pred, target)
    r = m.compute()
    assert math.isnan(r["per_class_iou"][2]) and math.isnan(r["per_class_dice"][2])
    assert math.isnan(r["per_class_accuracy"][2])
    assert r["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert r["fg_iou"] == pytest.approx(2 / 3)


def test_predicted_but_absent_class_counts_as_zero_iou():
    target = torch.tensor([[[0, 0], [0, 0]]])
    pred = torch.tensor([[[0, 0], [0, 1]]])
    cm = ConfusionMatrix(2)
    cm.update(pred, target)
    r = cm.compute()
    assert r["per_class_iou"] == pytest.approx([3 / 4, 0.0])
    assert math.isnan(r["per_class_accuracy"][1])
    assert r["miou"] == pytest.approx(3 / 8)


def _numpy_metrics(preds: np.ndarray, target: np.ndarray, c: int, ignore: int) -> dict:
    """Independent reference: per-class set counting with numpy, no confusion matrix."""
    keep = target != ignore
    p, t = preds[keep], target[keep]
    acc, iou, dice = [], [], []
    for k in range(c):
        inter = np.sum((p == k) & (t == k))
        union = np.sum((p == k) | (t == k))
        acc.append(inter / np.sum(t == k) if np.sum(t == k) else np.nan)
        iou.append(inter / union if union else np.nan)
        dice.append(2 * inter / (np.sum(p == k) + np.sum(t == k)) if union else np.nan)
    return {
        "pixel_accuracy": np.mean(p == t), "per_class_accuracy": acc, "mean_accuracy": np.nanmean(acc),
        "per_class_iou": iou, "miou": np.nanmean(iou), "per_class_dice": dice,
        "dice": np.nanmean(dice[1:]), "fg_iou": np.nanmean(iou[1:]),
    }


def _assert_close(got: dict, want: dict) -> None:
    for key, value in want.items():
        np.testing.assert_allclose(np.asarray(got[key], dtype=float), np.asarray(value, dtype=float),
                                   rtol=1e-12, err_msg=key)


def test_matches_numpy_reference_over_batches():
    g = torch.Generator().manual_seed(0)
    c = 4
    logits = torch.randn(6, c, 9, 7, generator=g)
    target = torch.randint(0, c, (6, 9, 7), generator=g)
    target[torch.rand(6, 9, 7, generator=g) < 0.1] = 255
    cm = ConfusionMatrix(c)
    for i in range(0, 6, 2):  # three batches
        cm.update(logits[i:i + 2], target[i:i + 2])
    _assert_close(cm.compute(), _numpy_metrics(logits.argmax(1).numpy(), target.numpy(), c, 255))
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_bad_inputs_raise():
    cm = ConfusionMatrix(2)
    with pytest.raises(ValueError, match="outside 0..1"):
        cm.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 2]]]))
    with pytest.raises(ValueError, match="shape"):
        cm.update(torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 3, 2, dtype=torch.long))


def test_all_reduce_without_process_group_is_noop():
    cm = ConfusionMatrix(2)
    cm.update(torch.tensor([[[0, 1]]]), torch.tensor([[[0, 0]]]))
    before = cm.matrix.clone()
    assert cm.all_reduce() is cm and torch.equal(cm.matrix, before)


def _data(c: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    target = torch.randint(0, c, (4, 5, 6), generator=g)
    target[0, 0] = 255
    return torch.randn(4, c, 5, 6, generator=g), target


def _worker(rank: int, world: int, init_file: str, out_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        logits, target = _data(3)
        cm = ConfusionMatrix(3)
        shard = slice(rank * 2, rank * 2 + 2)  # rank 0: samples 0-1, rank 1: samples 2-3
        cm.update(logits[shard], target[shard])
        cm.all_reduce()
        torch.save(cm.matrix, f"{out_file}.{rank}")
    finally:
        dist.destroy_process_group()


def test_all_reduce_two_process_gloo_equals_single_process(tmp_path):
    out = str(tmp_path / "matrix")
    # fork: the children reuse the imported torch (spawn re-imports it: seconds per process)
    method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
    mp.start_processes(_worker, args=(2, str(tmp_path / "init"), out), nprocs=2, join=True, start_method=method)
    logits, target = _data(3)
    single = ConfusionMatrix(3)
    single.update(logits, target)
    for rank in range(2):
        reduced = ConfusionMatrix(3)
        reduced.matrix = torch.load(f"{out}.{rank}", weights_only=True)
        assert torch.equal(reduced.matrix, single.matrix)
        _assert_close(reduced.compute(), single.compute())
