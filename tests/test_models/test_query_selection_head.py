"""Dense query-selection head and the one-to-k Hungarian assigner."""
import math

import pytest
import torch
from mmengine.structures import InstanceData
from torch.testing import assert_close

from bhcl.models.dense_heads import RotatedQuerySelectionHead
from bhcl.models.task_modules.rotated_bbox_l1_cost import RotatedBBoxL1Cost
from bhcl.models.task_modules.topk_hungarian_rotated_assigner import \
    TopkHungarianRotatedAssigner

STRIDES = (4, 8, 16, 32, 64)


def make_head(**kwargs):
    torch.manual_seed(0)
    args = dict(num_classes=6, in_channels=16, content_channels=32, num_queries=20,
                assigner=dict(type='TopkHungarianRotatedAssigner', topk=3, match_costs=[
                    dict(type='mmdet.FocalLossCost', weight=2.0),
                    dict(type='RotatedBBoxL1Cost', weight=2.0),
                    dict(type='RotatedIoUCostWithFallback', weight=5.0)]))
    args.update(kwargs)
    head = RotatedQuerySelectionHead(**args)
    head.init_weights()
    return head


def pyramid(size=64, batch=2, channels=16):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in STRIDES]


def test_priors_and_zero_deltas_decode_to_prior_boxes():
    head = make_head()
    feats = pyramid()
    priors = head.priors(feats)
    assert priors.shape == (256 + 64 + 16 + 4 + 1, 3)
    assert_close(priors[:3], torch.tensor([[2., 2., 4.], [6., 2., 4.], [10., 2., 4.]]))
    assert_close(priors[-1], torch.tensor([32., 32., 64.]))
    boxes = head.decode(torch.zeros(1, len(priors), 5), priors)
    # square priors: le90 swaps w == h and turns t by pi/2, as mmrotate does (the same box)
    expected = torch.cat([priors[:, :2], priors[:, 2:3].repeat(1, 2) * 4,
                          torch.full((len(priors), 1), -math.pi / 2)], 1)
    assert_close(boxes[0], expected)


def test_forward_and_select_shapes_and_no_box_gradient():
    head = make_head()
    feats = pyramid()
    logits, boxes, memory = head(feats)
    assert logits.shape == (2, 341, 6) and boxes.shape == (2, 341, 5)
    assert memory.shape == (2, 341, 16)
    content, qboxes = head.select(logits, boxes, memory)
    assert content.shape == (2, 20, 32) and qboxes.shape == (2, 20, 5)
    assert not qboxes.requires_grad and content.requires_grad


def test_select_indices_nms_first_then_by_score_and_fewer_candidates_than_queries():
    head = make_head(num_queries=6)
    boxes = torch.tensor([[10., 10., 8., 4., 0.], [10., 10., 8., 4., 0.],
                          [30., 30., 8., 4., 0.5], [50., 10., 6., 6., 0.]])
    scores = torch.tensor([0.9, 0.8, 0.5, 0.7])
    # box 1 duplicates box 0: NMS survivors 0, 3, 2 by score, then 1, then repeat
    assert head.select_indices(scores, boxes).tolist() == [0, 3, 2, 1, 0, 3]
    head = make_head(num_queries=3)
    assert head.select_indices(scores, boxes).tolist() == [0, 3, 2]


def test_loss_is_finite_with_an_empty_image_and_reaches_both_convs():
    head = make_head()
    feats = pyramid()
    logits, boxes, _ = head(feats)
    gts = [InstanceData(bboxes=torch.tensor([[20., 20., 16., 8., 0.3], [44., 40., 24., 10., -1.]]),
                        labels=torch.tensor([1, 4])),
           InstanceData(bboxes=torch.zeros(0, 5), labels=torch.zeros(0, dtype=torch.long))]
    metas = [dict(img_shape=(64, 64))] * 2
    losses = head.loss(logits, boxes, head.priors(feats), gts, metas)
    assert set(losses) == {'dense.loss_cls', 'dense.loss_iou'}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    assert head.cls_conv.weight.grad.abs().sum() > 0
    assert head.reg_conv.weight.grad.abs().sum() > 0


def test_targets_give_each_gt_topk_positives():
    head = make_head()
    feats = pyramid(batch=1)
    logits, boxes, _ = head(feats)
    gt = InstanceData(bboxes=torch.tensor([[20., 20., 16., 8., 0.3], [44., 40., 24., 10., -1.]]),
                      labels=torch.tensor([1, 4]))
    labels, quality, pos, gt_idx = head._targets(logits[0], boxes[0], head.priors(feats), gt,
                                                 dict(img_shape=(64, 64)))
    assert sorted(gt_idx.tolist()) == [0, 0, 0, 1, 1, 1]
    assert_close(labels[pos], gt.labels[gt_idx])
    assert (labels == 6).sum() == len(labels) - 6
    assert ((quality[pos] >= 0) & (quality[pos] <= 1)).all() and quality.sum() > 0


def test_rotated_l1_cost_normalises_by_image_size():
    cost = RotatedBBoxL1Cost(weight=2.0)
    pred = InstanceData(bboxes=torch.tensor([[10., 20., 4., 2., 0.1]]))
    gt = InstanceData(bboxes=torch.tensor([[20., 20., 4., 2., 0.3], [10., 40., 8., 2., 0.1]]))
    out = cost(pred, gt, dict(img_shape=(40, 100)))
    assert_close(out, torch.tensor([[2 * (10 / 100 + 0.2), 2 * (20 / 40 + 4 / 100)]]))


def test_topk_hungarian_assigner():
    assigner = TopkHungarianRotatedAssigner(
        match_costs=dict(type='RotatedBBoxL1Cost', weight=1.0), topk=2)
    gt = InstanceData(bboxes=torch.tensor([[10., 10., 4., 2., 0.], [50., 50., 4., 2., 0.]]),
                      labels=torch.tensor([3, 5]))
    pred = InstanceData(bboxes=torch.tensor([
        [11., 10., 4., 2., 0.], [49., 50., 4., 2., 0.], [30., 30., 4., 2., 0.],
        [10., 12., 4., 2., 0.], [52., 50., 4., 2., 0.], [0., 0., 1., 1., math.pi / 4]]))
    result = assigner.assign(pred, gt, dict(img_shape=(64, 64)))
    assert result.gt_inds.tolist() == [1, 2, 0, 1, 2, 0]
    assert result.labels.tolist() == [3, 5, -1, 3, 5, -1]
    # one-to-one when topk=1, and no ground truth -> all background
    assigner.topk = 1
    assert assigner.assign(pred, gt, dict(img_shape=(64, 64))).gt_inds.tolist() == [
        1, 2, 0, 0, 0, 0]
    empty = InstanceData(bboxes=torch.zeros(0, 5), labels=torch.zeros(0, dtype=torch.long))
    assert assigner.assign(pred, empty).gt_inds.tolist() == [0] * 6


@pytest.mark.parametrize('num_queries', [1, 400])
def test_select_more_queries_than_locations(num_queries):
    head = make_head(num_queries=num_queries)
    logits, boxes, memory = head(pyramid(batch=1))
    content, qboxes = head.select(logits, boxes, memory)
    assert content.shape == (1, num_queries, 32) and torch.isfinite(qboxes).all()
