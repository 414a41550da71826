"""Distinct-query (DDQ-style) head, the one-to-k Hungarian assigner and the L1 cost."""
import math

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from torch.testing import assert_close

import bhcl.models  # noqa: F401
from bhcl.models.dense_heads import DistinctQueryHead
from bhcl.models.task_modules.rotated_bbox_l1_cost import RotatedBBoxL1Cost
from bhcl.models.task_modules.topk_hungarian_rotated_assigner import \
    TopkHungarianRotatedAssigner
from bhcl.structures.box_coding import boxes_to_xyzrt

STRIDES = (4, 8, 16, 32, 64)


def make_head(**kwargs):
    init_default_scope('mmrotate')
    torch.manual_seed(0)
    args = dict(num_classes=6, in_channels=16, feat_channels=16, content_channels=32,
                shuffle_channels=4, num_queries=20, pre_nms=50,
                norm_cfg=dict(type='GN', num_groups=4, requires_grad=True))
    args.update(kwargs)
    head = DistinctQueryHead(**args)
    head.init_weights()
    return head


def pyramid(size=64, batch=2, channels=16):
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in STRIDES]


def test_shuffle_swaps_channels_with_the_neighbour_levels():
    head = make_head()
    feats = [torch.full((1, 16, 64 // s, 64 // s), float(i)) for i, s in enumerate(STRIDES)]
    for i, f in enumerate(feats):
        f[:, 12:] += 100  # the channels a level hands to the level below
    out = head._shuffle(feats)
    for i, o in enumerate(out):
        assert_close(o[:, :8], torch.full_like(o[:, :8], i))                  # kept
        assert_close(o[:, 8:12], torch.full_like(o[:, 8:12], min(i + 1, 4) + 100))  # coarser
        assert_close(o[:, 12:], torch.full_like(o[:, 12:], max(i - 1, 0)))    # finer level


def test_pre_select_keeps_the_best_per_level_and_decodes_boxes():
    head = make_head(pre_nms=3)
    scores = [torch.rand(1, 6, 64 // s, 64 // s) * 0.5 for s in STRIDES]
    scores[0][0, 2, 5, 7] = 0.9   # the best location of level 0
    dists = [torch.ones(1, 5, 64 // s, 64 // s) for s in STRIDES]
    dists[0][0, 4] = 0.3          # angle
    s, b, ids = head.pre_select(scores, dists)[0]
    assert len(ids) == 3 * 4 + 1                         # level 4 (1 x 1) has one location
    assert ids[0] == 5 * 16 + 7 and s[0, 2] == 0.9
    # distances (1, 1, 1, 1) x stride 4 around the cell centre: a 8 x 8 box at the centre
    assert_close(b[0], torch.tensor([7.5 * 4, 5.5 * 4, 8., 8., 0.3]))
    assert torch.all(ids[3:6] >= 256) and torch.all(ids[3:6] < 256 + 64)


def test_distinct_removes_overlapping_candidates_and_sorts_by_score():
    head = make_head()
    boxes = torch.tensor([[20., 20., 10., 4., 0.], [20.5, 20., 10., 4., 0.],
                          [40., 40., 10., 4., 0.]])
    scores = torch.tensor([[0.2, 0.1], [0.6, 0.1], [0.1, 0.4]])
    s, b, ids = head.distinct((scores, boxes, torch.tensor([7, 8, 9])))
    assert ids.tolist() == [8, 9]


def test_targets_quality_is_the_alignment_rescaled_to_the_best_iou():
    head = make_head()
    gt = InstanceData(bboxes=torch.tensor([[30., 30., 20., 8., 0.]]), labels=torch.tensor([3]))
    boxes = torch.tensor([[30., 30., 20., 8., 0.], [31., 30., 20., 8., 0.],
                          [34., 30., 20., 8., 0.], [60., 60., 10., 4., 0.]])
    scores = torch.full((4, 6), 0.2)
    scores[:, 3] = torch.tensor([0.5, 0.9, 0.7, 0.9])
    labels, quality, pos, pos_gt = head.targets('main', scores, boxes, gt,
                                                dict(img_shape=(64, 64)))
    assert pos.tolist() == [0, 1, 2, 3]        # topk 8 > 4 candidates: all of them
    assert labels.tolist() == [3, 3, 3, 3]
    iou = torch.tensor([1.0, 19 / 21, 16 / 24, 0.0])
    metric = scores[:, 3] * iou**6
    assert_close(quality, metric / (metric.max() + 1e-7) * 1.0, atol=1e-5, rtol=1e-4)
    assert_close(pos_gt, gt.bboxes.expand(4, 5))


def test_loss_is_finite_with_an_empty_image_and_reaches_both_branches():
    head = make_head()
    head.train()
    feats = pyramid()
    dense = head(feats)
    xyzrt, content, main, aux = head.select(dense)
    assert xyzrt.shape == (2, 20, 5) and content.shape == (2, 20, 32)
    gts = [InstanceData(bboxes=torch.tensor([[30., 30., 20., 8., 0.3]]),
                        labels=torch.tensor([2])),
           InstanceData(bboxes=torch.zeros(0, 5), labels=torch.zeros(0, dtype=torch.long))]
    metas = [dict(img_shape=(64, 64))] * 2
    losses = head.loss(main, aux, gts, metas)
    assert sorted(losses) == ['dense.loss_cls', 'dense.loss_iou', 'dense_aux.loss_cls',
                              'dense_aux.loss_iou']
    total = sum(losses.values()) + content.sum()  # (all four entries are losses)
    assert torch.isfinite(total)
    total.backward()
    for name in ('main.conv_cls', 'aux.conv_cls', 'main.conv_reg', 'aux.conv_reg',
                 'content_proj', 'cls_convs.3', 'reg_convs.3'):
        module = head.get_submodule(name)
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


def test_a_ranking_replaces_the_scores_in_every_choice_and_leaves_aux_alone():
    head = make_head(num_queries=5, pre_nms=4)
    head.eval()
    with torch.no_grad():
        dense = head(pyramid(batch=2))
        t = sum((64 // s) ** 2 for s in STRIDES)
        g = torch.Generator().manual_seed(3)
        ranking = torch.randn(2, t, generator=g)
        ranking[1, :256] = float('-inf')  # image 1: level 0 excluded
        xyzrt, content, main, aux = head.select(dense, ranking)
        by_score = head.select(dense)
    for img, (scores, boxes, ids) in enumerate(main):
        key = ranking[img, ids]
        # NMS order and the kept queries follow the ranking, not the scores
        assert torch.all(key[:-1] >= key[1:])
        assert ids[0] == ranking[img].argmax()
        # pre-selection: the pre_nms best-ranked locations of each level (before NMS)
        pre = head.pre_select(*dense['main'], ranking=ranking)[img][2]
        start = 0
        for s in STRIDES:
            n = (64 // s) ** 2
            level = ranking[img, start:start + n]
            best = set((level.topk(min(4, n)).indices + start).tolist())
            kept = set(pre[(pre >= start) & (pre < start + n)].tolist())
            assert kept == (set() if img == 1 and start == 0 else best)
            start += n
        expected = boxes_to_xyzrt(boxes[key.sort(descending=True).indices[:5]])
        assert_close(xyzrt[img, :len(expected)], expected)
    assert not torch.equal(main[0][2], by_score[2][0][2])
    assert aux == []  # eval mode; in training the auxiliary branch keeps its own scores


def test_fewer_candidates_than_queries_pads_with_finite_queries():
    head = make_head(num_queries=400)
    head.eval()
    with torch.no_grad():
        xyzrt, content, main, aux = head.select(head(pyramid(batch=1)))
    assert xyzrt.shape == (1, 400, 5) and torch.isfinite(xyzrt).all() and aux == []
    assert torch.all(content[0, len(main[0][0]):] == 0)


def test_rotated_l1_cost_normalises_by_image_size_and_angle_range():
    pred = InstanceData(bboxes=torch.tensor([[10., 20., 4., 2., 0.1]]))
    gt = InstanceData(bboxes=torch.tensor([[20., 20., 4., 2., 0.3], [10., 40., 8., 2., 0.1]]))
    out = RotatedBBoxL1Cost(weight=2.0)(pred, gt, dict(img_shape=(40, 100)))
    assert_close(out, torch.tensor([[2 * (10 / 100 + 0.2), 2 * (20 / 40 + 4 / 100)]]))
    out = RotatedBBoxL1Cost(weight=2.0, angle_version='le90')(pred, gt, dict(img_shape=(40, 100)))
    assert_close(out, torch.tensor([[2 * (10 / 100 + 0.2 / math.pi), 2 * (20 / 40 + 4 / 100)]]))
    with pytest.raises(ValueError, match='angle_version'):
        RotatedBBoxL1Cost(angle_version='le45')


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
    assigner.topk = 1
    assert assigner.assign(pred, gt, dict(img_shape=(64, 64))).gt_inds.tolist() == [
        1, 2, 0, 0, 0, 0]
    empty = InstanceData(bboxes=torch.zeros(0, 5), labels=torch.zeros(0, dtype=torch.long))
    assert assigner.assign(pred, empty).gt_inds.tolist() == [0] * 6
