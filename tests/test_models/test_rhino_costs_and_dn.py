"""RHINO pieces: corner Hausdorff and Gaussian KLD match costs, rotated CDN queries."""
import itertools
import math

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.structures import InstanceData
from mmrotate.models.losses import GDLoss
from mmrotate.registry import MODELS, TASK_UTILS
from mmrotate.structures.bbox import RotatedBoxes
from torch.testing import assert_close

from bhcl.models.layers import RotatedCdnQueryGenerator
from bhcl.models.task_modules import (GaussianKLDCost, HausdorffCornerCost,
                                      corner_hausdorff_cost, pairwise_gaussian_kld)

IMG_SHAPE = (200, 100)  # (H, W): non-square on purpose


def random_rboxes(n, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([100., 200.])
    wh = 4 + torch.rand(n, 2, generator=g) * 40
    t = (torch.rand(n, 1, generator=g) - 0.5) * math.pi
    return torch.cat([xy, wh, t], dim=1).to(dtype)


# ---------------------------------------------------------------- Hausdorff
def naive_hausdorff(box1, box2, img_shape, scale_boxes=False):
    """Double loop over corners, from the definition, in Python floats. ``scale_boxes``:
    RHINO's rule, the boxes divided by (W, H, W, H, 1) before taking their corners."""
    def corners(box):
        cx, cy, w, h, t = (float(v) for v in box)
        if scale_boxes:
            cx, w, cy, h = cx / img_shape[1], w / img_shape[1], cy / img_shape[0], h / img_shape[0]
            img = (1., 1.)
        else:
            img = img_shape
        pts = []
        for sx, sy in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
            dx, dy = sx * w / 2, sy * h / 2
            pts.append((cx + dx * math.cos(t) - dy * math.sin(t),
                        cy + dx * math.sin(t) + dy * math.cos(t)))
        return [(x / img[1], y / img[0]) for x, y in pts]

    a, b = corners(box1), corners(box2)
    d_ab = max(min(math.dist(p, q) for q in b) for p in a)
    d_ba = max(min(math.dist(p, q) for p in a) for q in b)
    return max(d_ab, d_ba)


def test_hausdorff_matches_double_loop():
    pred, gt = random_rboxes(7, seed=1), random_rboxes(5, seed=2)
    expected = torch.tensor([[naive_hausdorff(p, q, IMG_SHAPE) for q in gt] for p in pred],
                            dtype=torch.float64)
    assert_close(corner_hausdorff_cost(pred, gt, IMG_SHAPE, scale_boxes=False), expected)
    rhino = torch.tensor([[naive_hausdorff(p, q, IMG_SHAPE, True) for q in gt] for p in pred],
                         dtype=torch.float64)
    assert_close(corner_hausdorff_cost(pred, gt, IMG_SHAPE), rhino)
    assert not torch.allclose(rhino, expected)  # the rules differ on a non-square image
    for scale_boxes, want in ((True, rhino), (False, expected)):
        cost = HausdorffCornerCost(weight=5., scale_boxes=scale_boxes)(
            InstanceData(bboxes=RotatedBoxes(pred.float())), InstanceData(bboxes=gt.float()),
            dict(img_shape=IMG_SHAPE))
        assert_close(cost, 5. * want.float(), rtol=1e-5, atol=1e-5)
    # on a square image they agree
    assert_close(corner_hausdorff_cost(pred, gt, (150, 150)),
                 corner_hausdorff_cost(pred, gt, (150, 150), scale_boxes=False))
    # without an img_meta: pixels
    expected_px = torch.tensor([[naive_hausdorff(p, q, (1., 1.)) for q in gt] for p in pred],
                               dtype=torch.float64)
    assert_close(corner_hausdorff_cost(pred, gt), expected_px)


def test_hausdorff_hand_cases():
    box = torch.tensor([[40., 60., 30., 10., 0.4]], dtype=torch.float64)
    turned = box + torch.tensor([0., 0., 0., 0., math.pi], dtype=torch.float64)
    swapped = torch.tensor([[40., 60., 10., 30., 0.4 + math.pi / 2]], dtype=torch.float64)
    moved = box + torch.tensor([3., 4., 0., 0., 0.], dtype=torch.float64)
    cost = corner_hausdorff_cost(box, torch.cat([box, turned, swapped, moved]), IMG_SHAPE,
                                 scale_boxes=False)
    expected = torch.tensor([[0., 0., 0., math.hypot(3 / 100, 4 / 200)]], dtype=torch.float64)
    assert_close(cost, expected, atol=1e-12, rtol=0)


def test_hausdorff_batched_qbox_and_empty():
    pred, gt = random_rboxes(12, seed=3).view(2, 6, 5), random_rboxes(8, seed=4).view(2, 4, 5)
    batched = corner_hausdorff_cost(pred, gt, IMG_SHAPE, scale_boxes=False)
    assert batched.shape == (2, 6, 4)
    for i in range(2):
        assert_close(batched[i], corner_hausdorff_cost(pred[i], gt[i], IMG_SHAPE,
                                                       scale_boxes=False))
    # batch dimensions broadcast: one set of ground truth against two of predictions
    assert_close(corner_hausdorff_cost(pred, gt[:1], IMG_SHAPE, scale_boxes=False)[1],
                 corner_hausdorff_cost(pred[1], gt[0], IMG_SHAPE, scale_boxes=False))
    # the same boxes as corners
    qbox = RotatedBoxes(pred[0]).convert_to('qbox').tensor
    gt_qbox = RotatedBoxes(gt[0]).convert_to('qbox').tensor
    assert_close(corner_hausdorff_cost(qbox, gt_qbox, IMG_SHAPE, box_format='qbox'), batched[0])
    assert corner_hausdorff_cost(pred[0, :0], gt[0]).shape == (0, 4)
    with pytest.raises(ValueError):
        HausdorffCornerCost(box_format='xyxy')


# ---------------------------------------------------------------- Gaussian KLD
@pytest.mark.parametrize('fun,tau,alpha,sqrt', [('log1p', 1.0, 1.0, True),
                                                ('log1p', 0.0, 1.0, True),
                                                ('sqrt', 2.0, 2.0, True),
                                                ('none', 0.0, 1.0, False)])
def test_kld_cost_matches_gdloss_pairwise(fun, tau, alpha, sqrt):
    pred, gt = random_rboxes(6, seed=5), random_rboxes(4, seed=6)
    loss = GDLoss(loss_type='kld', fun=fun, tau=tau, alpha=alpha, sqrt=sqrt, reduction='none')
    expected = torch.stack([loss(p.expand(len(gt), 5), gt) for p in pred])
    assert_close(pairwise_gaussian_kld(pred, gt, fun=fun, tau=tau, alpha=alpha, sqrt=sqrt),
                 expected)


def test_kld_cost_module():
    pred, gt = random_rboxes(9, seed=7), random_rboxes(3, seed=8)
    loss = GDLoss(loss_type='kld', fun='log1p', tau=1.0, reduction='none')
    expected = torch.stack([loss(p.expand(len(gt), 5), gt) for p in pred])
    cost = GaussianKLDCost(weight=5.)(InstanceData(bboxes=RotatedBoxes(pred.float())),
                                      InstanceData(bboxes=gt.float()), dict(img_shape=IMG_SHAPE))
    assert_close(cost, 5. * expected.float(), rtol=1e-4, atol=1e-5)
    # neither the angle convention nor a common scale matters
    turned = torch.cat([pred[:, :2], pred[:, 3:4], pred[:, 2:3], pred[:, 4:] + math.pi / 2], 1)
    assert_close(pairwise_gaussian_kld(turned, gt), expected)
    scale = torch.tensor([0.01, 0.01, 0.01, 0.01, 1.], dtype=torch.float64)
    assert_close(pairwise_gaussian_kld(pred * scale, gt * scale), expected)
    assert pairwise_gaussian_kld(pred[:0], gt).shape == (0, 3)
    assert pairwise_gaussian_kld(pred, gt[:0]).shape == (9, 0)


def test_costs_build_from_registry():
    assert isinstance(TASK_UTILS.build(dict(type='HausdorffCornerCost', weight=5.)),
                      HausdorffCornerCost)
    assert isinstance(TASK_UTILS.build(dict(type='GaussianKLDCost', weight=5.)), GaussianKLDCost)


# ---------------------------------------------------------------- rotated CDN
def make_samples(boxes_per_image, img_shape=IMG_SHAPE, num_classes=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    samples = []
    for boxes in boxes_per_image:
        boxes = torch.as_tensor(boxes, dtype=torch.float32).view(-1, 5)
        s = DetDataSample(metainfo=dict(img_shape=img_shape))
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(boxes.clone()),
                                      labels=torch.randint(num_classes, (len(boxes),),
                                                           generator=g))
        samples.append(s)
    return samples


def generator(num_dn_queries=100, max_groups=None, num_classes=5, embed_dims=8,
              box_noise_scale=1.0, angle_noise=0.0):
    return RotatedCdnQueryGenerator(num_classes=num_classes, embed_dims=embed_dims,
                                    num_matching_queries=3, box_noise_scale=box_noise_scale,
                                    group_cfg=dict(dynamic=True, num_dn_queries=num_dn_queries),
                                    max_groups=max_groups, angle_noise=angle_noise)


@pytest.mark.parametrize('counts', [(0,), (0, 0), (1,), (3, 2), (0, 4)])
def test_cdn_shapes(counts):
    torch.manual_seed(0)
    samples = make_samples([random_rboxes(n, seed=i).float() for i, n in enumerate(counts)])
    label_q, bbox_q, attn_mask, dn_meta = generator()(samples)
    max_n = max(counts)
    groups = 100 // max_n if max_n else 1
    num_dn = 2 * max_n * groups
    assert dn_meta == dict(num_denoising_queries=num_dn, num_denoising_groups=groups)
    assert label_q.shape == (len(counts), num_dn, 8)
    assert bbox_q.shape == (len(counts), num_dn, 5)
    assert attn_mask.shape == (num_dn + 3, num_dn + 3) and attn_mask.dtype == torch.bool
    assert torch.isfinite(bbox_q).all()


def test_cdn_group_count_and_cap():
    plain, capped = generator(), generator(max_groups=30)
    for max_n, expected, expected_capped in [(0, 1, 1), (1, 100, 30), (3, 33, 30), (4, 25, 25),
                                             (200, 1, 1)]:
        assert plain.get_num_groups(max_n) == expected
        assert capped.get_num_groups(max_n) == expected_capped
    _, _, _, dn_meta = capped(make_samples([random_rboxes(2).float()]))
    assert dn_meta == dict(num_denoising_queries=2 * 2 * 30, num_denoising_groups=30)
    with pytest.raises(ValueError):
        generator(max_groups=0)


def test_cdn_attention_mask_and_layout():
    """Images with 2 and 1 objects, 4 DN queries -> 2 groups of [P P N N], 3 matching queries."""
    torch.manual_seed(0)
    samples = make_samples([random_rboxes(2, seed=1).float(), random_rboxes(1, seed=2).float()])
    label_q, bbox_q, attn_mask, dn_meta = generator(num_dn_queries=4)(samples)
    assert dn_meta == dict(num_denoising_queries=8, num_denoising_groups=2)
    o, x = 0, 1  # o: may attend; x: masked
    expected = torch.tensor([
        # group 1    group 2    matching
        [o, o, o, o, x, x, x, x, o, o, o],
        [o, o, o, o, x, x, x, x, o, o, o],
        [o, o, o, o, x, x, x, x, o, o, o],
        [o, o, o, o, x, x, x, x, o, o, o],
        [x, x, x, x, o, o, o, o, o, o, o],
        [x, x, x, x, o, o, o, o, o, o, o],
        [x, x, x, x, o, o, o, o, o, o, o],
        [x, x, x, x, o, o, o, o, o, o, o],
        [x, x, x, x, x, x, x, x, o, o, o],
        [x, x, x, x, x, x, x, x, o, o, o],
        [x, x, x, x, x, x, x, x, o, o, o],
    ], dtype=torch.bool)
    assert_close(attn_mask, expected)
    # the second image has one object: slot 1 of every [P P N N] block is padding
    padding = torch.tensor([1, 3, 5, 7])
    assert (label_q[1, padding] == 0).all() and (bbox_q[1, padding] == 0).all()
    assert (bbox_q[0] != 0).any(-1).all() and (bbox_q[1, [0, 2, 4, 6]] != 0).any(-1).all()


def decode(bbox_q, img_shape=IMG_SHAPE):
    """Inverse-sigmoid queries -> pixel boxes with t in radians."""
    h, w = img_shape
    return bbox_q.sigmoid() * bbox_q.new_tensor([w, h, w, h, math.pi])


def angle_gap(a, b):
    """Distance of two angles on the pi-periodic circle of rectangle orientations."""
    d = torch.remainder(a - b, math.pi)
    return torch.minimum(d, math.pi - d)


@pytest.mark.parametrize('scale,angle_noise', [(1.0, 0.0), (0.4, 0.0), (1.0, math.pi / 12)])
def test_cdn_box_noise_bounds(scale, angle_noise):
    """RHINO's noise: (cx, cy, w, h) by up to (w, h, w, h) * scale / 2 (negatives 1x to 2x),
    the angle untouched; ``angle_noise`` (a bhcl option) turns it by up to that much."""
    torch.manual_seed(0)
    # small boxes far from the border (no clamping); angles near both ends of
    # [0, pi) and one in le90 (negative), which must come back wrapped
    gt = torch.tensor([[50., 100., 12., 6., 0.02], [30., 60., 8., 4., 3.12],
                       [70., 140., 10., 5., -1.2]])
    samples = make_samples([gt])
    inputs = gt.clone()
    _, bbox_q, _, dn_meta = generator(num_dn_queries=600, box_noise_scale=scale,
                                      angle_noise=angle_noise)(samples)
    assert_close(samples[0].gt_instances.bboxes.tensor, inputs)  # inputs untouched
    groups = dn_meta['num_denoising_groups']
    boxes = decode(bbox_q[0]).view(groups, 2, 3, 5)  # (group, positive / negative, object, 5)
    assert ((boxes[..., 4] >= 0) & (boxes[..., 4] < math.pi)).all()
    ref = gt.expand_as(boxes)
    w, h = ref[..., 2], ref[..., 3]
    spans = [scale * w / 2, scale * h / 2, scale * w / 2, scale * h / 2]
    gaps = [(boxes[..., i] - ref[..., i]).abs() / spans[i] for i in range(4)]
    if angle_noise == 0:  # the angle is the target's, wrapped to [0, pi)
        assert_close(boxes[..., 4], torch.remainder(ref[..., 4], math.pi).expand_as(boxes[..., 4]),
                     rtol=0, atol=1e-5)
    else:  # inverse_sigmoid clamps at 1e-3, which moves an angle near 0 or pi by 1e-3 * pi
        gaps.append((angle_gap(boxes[..., 4], ref[..., 4]) - 1e-3 * math.pi).clamp(min=0)
                    / (scale * angle_noise))
        angle_gap_neg = angle_gap(boxes[:, 1, :, 4], ref[:, 1, :, 4]) / (scale * angle_noise)
        assert (angle_gap_neg > 1 - 0.04).all() and (angle_gap_neg < 2 + 0.04).all()
    for gap in gaps:
        positive = gap[:, 0]
        assert positive.max() < 1 + 1e-4 and positive.max() > 0.9  # bounded, and spread
    # negatives: noise in [1, 2) spans, but a size pushed below 0 is clamped
    # to 0 and decoded as 1e-3 of the image side
    for gap, span, side in zip(gaps[:4], spans, (100, 200, 100, 200)):
        low = 1 - 1e-3 * side / span[:, 1] - 1e-4
        assert (gap[:, 1] > low).all() and (gap[:, 1] < 2 + 1e-4).all()


def test_cdn_writes_the_ground_truth_long_edge_first():
    """(short, long, t) and (long, short, t + pi / 2) give the same queries."""
    short_first = torch.tensor([[50., 100., 6., 12., 0.3], [30., 60., 4., 9., -0.2]])
    long_first = torch.tensor([[50., 100., 12., 6., 0.3 + math.pi / 2],
                               [30., 60., 9., 4., -0.2 + math.pi / 2]])
    out = []
    for boxes in (short_first, long_first):
        torch.manual_seed(0)
        out.append(generator()(make_samples([boxes]))[1])
    assert_close(out[0], out[1], rtol=0, atol=1e-5)
    positives = decode(out[0][0, :2])  # within half a side of the long-edge-first boxes
    assert ((positives[:, 2:4] - long_first[:, 2:4]).abs() <= long_first[:, 2:4] / 2).all()


def test_cdn_label_noise_rate():
    torch.manual_seed(0)
    num_classes = 5
    gen = generator(num_dn_queries=8000, num_classes=num_classes, embed_dims=num_classes)
    with torch.no_grad():
        gen.label_embedding.weight.copy_(torch.eye(num_classes))  # query == one-hot label
    samples = make_samples([random_rboxes(20, seed=3).float()], num_classes=num_classes)
    label_q, _, _, dn_meta = gen(samples)
    labels = label_q[0].argmax(-1).view(dn_meta['num_denoising_groups'] * 2, 20)
    flipped = (labels != samples[0].gt_instances.labels).float().mean()
    # mmdet / DINO: a share label_noise_scale / 2 is redrawn uniformly, a
    # redrawn label changes with probability (C - 1) / C
    assert abs(flipped.item() - 0.5 / 2 * (num_classes - 1) / num_classes) < 0.02


def test_cdn_builds_from_registry():
    gen = MODELS.build(dict(type='RotatedCdnQueryGenerator', num_classes=3, embed_dims=4,
                            num_matching_queries=10,
                            group_cfg=dict(dynamic=True, num_dn_queries=100), max_groups=30))
    assert isinstance(gen, RotatedCdnQueryGenerator) and gen.max_groups == 30
    assert list(itertools.chain.from_iterable(p.shape for p in gen.parameters())) == [3, 4]
