"""RotatedIoULossWithFallback and RotatedIoUCostWithFallback: semantics, fallback, registry."""
import math

import pytest
import torch
from shapely.geometry import Polygon

mmrotate_losses = pytest.importorskip('mmrotate.models.losses.rotated_iou_loss')

from mmengine.structures import InstanceData  # noqa: E402
from mmrotate.registry import MODELS, TASK_UTILS  # noqa: E402
from mmrotate.structures import RotatedBoxes  # noqa: E402

from bhcl.models.losses.rotated_iou_loss import (  # noqa: E402
    RotatedIoULossWithFallback, select_aligned_iou)
from bhcl.models.task_modules.match_costs import (
    RotatedIoUCostWithFallback,  # noqa: E402
    pairwise_rotated_iou)
from bhcl.ops.kernel_dispatch import mmcv_kernel_runs  # noqa: E402
from bhcl.ops.rotated_iou import rotated_box_iou  # noqa: E402


def shapely_iou(box1, box2):

    def polygon(box):
        cx, cy, w, h, t = (float(v) for v in box)
        cos, sin = math.cos(t), math.sin(t)
        return Polygon([(cx + dx * cos - dy * sin, cy + dx * sin + dy * cos)
                        for dx, dy in ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2,
                                                                                           h / 2))])

    p, q = polygon(box1), polygon(box2)
    inter = p.intersection(q).area
    return inter / (p.area + q.area - inter)


def box_pairs(n, seed, dtype=torch.float64):
    """Predictions scattered around their targets: IoUs spread over (0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.cat([
        torch.rand(n, 2, generator=generator, dtype=torch.float64) * 100,
        torch.rand(n, 2, generator=generator, dtype=torch.float64) * 20 + 5,
        (torch.rand(n, 1, generator=generator, dtype=torch.float64) * 2 - 1) * 1.5
    ],
                       dim=1)
    noise = torch.randn(n, 5, generator=generator, dtype=torch.float64) * torch.tensor(
        [3.0, 3.0, 2.0, 2.0, 0.3], dtype=torch.float64)
    return (target + noise).to(dtype), target.to(dtype)


def naive_loss(pred,
               target,
               mode,
               weight=None,
               reduction='mean',
               avg_factor=None,
               eps=1e-6,
               loss_weight=1.0):
    """mmrotate's formula, one box at a time with shapely's IoU."""
    losses = []
    for i in range(len(pred)):
        iou = max(shapely_iou(pred[i], target[i]), eps)
        value = {'linear': 1 - iou, 'square': 1 - iou**2, 'log': -math.log(iou)}[mode]
        losses.append(value * (1.0 if weight is None else float(weight[i])))
    losses = torch.tensor(losses, dtype=torch.float64)
    if reduction == 'none':
        return loss_weight * losses
    if reduction == 'sum':
        return loss_weight * losses.sum()
    if avg_factor is not None:
        return loss_weight * losses.sum() / (avg_factor + torch.finfo(torch.float32).eps)
    return loss_weight * losses.mean()


@pytest.mark.parametrize('mode', ['linear', 'square', 'log'])
def test_loss_equals_naive_formula(mode):
    pred, target = box_pairs(12, seed=0)
    weight = torch.rand(12, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss_fn = RotatedIoULossWithFallback(mode=mode, loss_weight=2.5)
    cases = [
        dict(),
        dict(weight=weight),
        dict(weight=weight, avg_factor=7.0),
        dict(reduction_override='sum', weight=weight),
        dict(reduction_override='none')
    ]
    for kwargs in cases:
        reduction = kwargs.get('reduction_override', 'mean')
        expected = naive_loss(pred,
                              target,
                              mode,
                              weight=kwargs.get('weight'),
                              reduction=reduction,
                              avg_factor=kwargs.get('avg_factor'),
                              loss_weight=2.5)
        torch.testing.assert_close(loss_fn(pred, target, **kwargs), expected, rtol=1e-9, atol=1e-9)


def test_loss_matches_mmrotate_given_the_same_iou(monkeypatch):
    # mmrotate's own RotatedIoULoss with its CUDA-only IoU swapped for ours must agree
    # on every path: reductions, per-box and per-coordinate weights, all-zero weights.
    monkeypatch.setattr(mmrotate_losses, 'diff_iou_rotated_2d',
                        lambda b1, b2: rotated_box_iou(b1[0], b2[0], aligned=True)[None])
    pred, target = box_pairs(10, seed=2, dtype=torch.float32)
    generator = torch.Generator().manual_seed(3)
    weights = [
        None,
        torch.rand(10, generator=generator),
        torch.rand(10, 5, generator=generator),
        torch.zeros(10),
        torch.zeros(10, 5)
    ]
    for mode in ('linear', 'square', 'log'):
        ours = RotatedIoULossWithFallback(mode=mode, loss_weight=5.0)
        upstream = mmrotate_losses.RotatedIoULoss(mode=mode, loss_weight=5.0)
        for weight in weights:
            for reduction, avg_factor in ((None, None), (None, 3.0), ('sum', None), ('none', None)):
                kwargs = dict(weight=weight, avg_factor=avg_factor, reduction_override=reduction)
                torch.testing.assert_close(ours(pred, target, **kwargs),
                                           upstream(pred, target, **kwargs))


def test_all_ignored_boxes_give_a_connected_zero():
    pred, target = box_pairs(4, seed=4)
    pred.requires_grad_()
    loss = RotatedIoULossWithFallback()(pred, target, weight=torch.zeros(4))
    loss.backward()
    assert loss.item() == 0.0
    torch.testing.assert_close(pred.grad, torch.zeros_like(pred))
    empty = RotatedIoULossWithFallback()(pred[:0], target[:0], avg_factor=1.0)
    empty.backward()
    assert empty.item() == 0.0


@pytest.mark.parametrize('mode', ['linear', 'square', 'log'])
def test_optimising_a_box_toward_its_target_lowers_the_loss(mode):
    torch.manual_seed(0)
    target = torch.tensor([[50.0, 40.0, 30.0, 10.0, 0.4]])
    pred = torch.tensor([[55.0, 36.0, 20.0, 14.0, -0.2]], requires_grad=True)
    loss_fn = RotatedIoULossWithFallback(mode=mode)
    optimizer = torch.optim.Adam([pred], lr=0.2)
    losses = []
    for _ in range(150):
        optimizer.zero_grad()
        loss = loss_fn(pred, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.2 * losses[0]
    assert rotated_box_iou(pred.detach(), target, aligned=True).item() > 0.85


def test_fp16_inputs_computed_in_float32():
    pred, target = box_pairs(6, seed=5)
    loss_fn = RotatedIoULossWithFallback(mode='linear')
    half = loss_fn(pred.half(), target.half())
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(),
                               loss_fn(pred.half().double(),
                                       target.half().double()),
                               rtol=0,
                               atol=1e-5)


def test_backend_choice_on_cpu():
    # The premise of the fallback: mmcv's differentiable IoU has no CPU kernel.
    assert not mmcv_kernel_runs('diff_iou_rotated_2d', 'cpu')
    pred, target = box_pairs(5, seed=6)
    auto = select_aligned_iou(pred)
    torch.testing.assert_close(auto(pred, target), rotated_box_iou(pred, target, aligned=True))
    with pytest.raises(RuntimeError):
        RotatedIoULossWithFallback(backend='mmcv')(pred.float(), target.float())
    with pytest.raises(ValueError):
        RotatedIoULossWithFallback(backend='cuda')


def test_registry_builds_loss_and_cost():
    loss = MODELS.build(dict(type='RotatedIoULossWithFallback', mode='linear', loss_weight=5.0))
    assert isinstance(loss, RotatedIoULossWithFallback)
    assert (loss.mode, loss.loss_weight, loss.reduction, loss.backend) == ('linear', 5.0, 'mean',
                                                                           'auto')
    cost = TASK_UTILS.build(dict(type='RotatedIoUCostWithFallback', weight=5.0))
    assert isinstance(cost, RotatedIoUCostWithFallback)
    assert (cost.weight, cost.iou_mode, cost.backend) == (5.0, 'iou', 'auto')


def test_cost_is_negative_weighted_iou_on_both_backends():
    pred, gt = box_pairs(30, seed=7, dtype=torch.float32)
    pred, gt = pred[:30], gt[:8]
    expected = -5.0 * torch.tensor(
        [[shapely_iou(p, g) for g in gt.double()] for p in pred.double()], dtype=torch.float32)
    for backend in ('auto', 'mmcv', 'torch'):
        cost = RotatedIoUCostWithFallback(weight=5.0, backend=backend)
        for boxes in (lambda b: b, RotatedBoxes):  # plain tensors and box structures
            value = cost(InstanceData(bboxes=boxes(pred)), InstanceData(bboxes=boxes(gt)))
            assert value.shape == (30, 8) and value.dtype == torch.float32
            torch.testing.assert_close(value, expected, rtol=0, atol=1e-5)
    assert (expected < 0).sum() > 20  # most predictions overlap their own target


def test_cost_iof_mode_and_no_gradient():
    pred, gt = box_pairs(6, seed=8, dtype=torch.float32)
    pred.requires_grad_()
    for backend in ('mmcv', 'torch'):
        iof = pairwise_rotated_iou(pred, gt, mode='iof', backend=backend)
        assert not iof.requires_grad
        torch.testing.assert_close(iof,
                                   rotated_box_iou(pred.detach(), gt, mode='iof'),
                                   rtol=0,
                                   atol=1e-5)
    with pytest.raises(ValueError):
        RotatedIoUCostWithFallback(iou_mode='giou')


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_uses_mmcv_kernel_and_agrees_with_fallback():
    pred, target = box_pairs(64, seed=9, dtype=torch.float32)
    pred, target = pred.cuda(), target.cuda()
    assert mmcv_kernel_runs('diff_iou_rotated_2d', 'cuda')
    auto = RotatedIoULossWithFallback(mode='linear')
    torch_only = RotatedIoULossWithFallback(mode='linear', backend='torch')
    torch.testing.assert_close(auto(pred, target), torch_only(pred, target), rtol=0, atol=1e-5)
    cost = RotatedIoUCostWithFallback(weight=2.0)
    cost_torch = RotatedIoUCostWithFallback(weight=2.0, backend='torch')
    instances = InstanceData(bboxes=pred), InstanceData(bboxes=target)
    torch.testing.assert_close(cost(*instances), cost_torch(*instances), rtol=0, atol=1e-5)
