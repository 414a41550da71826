"""The fast rotated NMS keeps exactly what mmcv's CPU kernel keeps."""
import math

import pytest
import torch
from mmcv.ops import batched_nms, nms_rotated

from bhcl.ops.nms_rotated import (batched_nms_rotated_exact, nms_rotated_exact,
                                  candidate_pairs)


def clustered_boxes(n, seed, size=256.):
    """Dense candidates around a few objects (as a query head produces), plus strays."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(6, 2, generator=g) * size
    pick = torch.randint(0, 6, (n,), generator=g)
    xy = centres[pick] + torch.randn(n, 2, generator=g) * 6
    wh = torch.stack([20 + torch.rand(n, generator=g) * 30, 6 + torch.rand(n, generator=g) * 10], 1)
    t = (torch.rand(n, 1, generator=g) - 0.5) * 2 * math.pi
    boxes = torch.cat([xy, wh, t], 1)
    boxes[: n // 10, :2] = torch.rand(n // 10, 2, generator=g) * size
    scores = torch.rand(n, generator=g)
    return boxes, scores


@pytest.mark.parametrize('seed', range(6))
@pytest.mark.parametrize('thr', [0.3, 0.7])
def test_same_kept_indices_as_mmcv(seed, thr):
    boxes, scores = clustered_boxes(600, seed)
    _, ref = nms_rotated(boxes, scores, thr)
    assert torch.equal(nms_rotated_exact(boxes, scores, thr), ref)
    ones = torch.ones(len(boxes), dtype=torch.long)
    _, ref = batched_nms(boxes, scores, ones, dict(type='nms_rotated', iou_threshold=thr))
    assert torch.equal(batched_nms_rotated_exact(boxes, scores, ones, thr), ref)


def test_ties_identical_boxes_and_empty_input():
    boxes = torch.tensor([[10., 10., 8., 4., 0.3]] * 4 + [[40., 40., 8., 4., 0.]])
    scores = torch.tensor([0.5, 0.5, 0.9, 0.5, 0.5])
    _, ref = nms_rotated(boxes, scores, 0.7)
    assert torch.equal(nms_rotated_exact(boxes, scores, 0.7), ref)
    assert nms_rotated_exact(torch.zeros(0, 5), torch.zeros(0), 0.7).numel() == 0
    with pytest.raises(ValueError, match='iou_threshold'):
        nms_rotated_exact(boxes, scores, 0.0)


@pytest.mark.parametrize('thr', [0.0, 0.5, 0.7])
def test_candidate_pairs_keep_every_pair_that_can_reach_the_threshold(thr):
    from mmcv.ops import box_iou_rotated
    boxes, _ = clustered_boxes(400, 7)
    iou = box_iou_rotated(boxes, boxes)
    a, b = candidate_pairs(boxes, thr)
    kept = torch.zeros_like(iou, dtype=torch.bool)
    kept[a, b] = True
    upper = torch.triu(torch.ones_like(kept), 1)
    reach = (iou > 0) if thr == 0 else (iou >= thr)
    assert not (reach & upper & ~kept).any()
    assert len(a) < 0.5 * len(boxes)**2 / 2  # and most pairs are skipped
