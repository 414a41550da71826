"""Contrastive alignment loss vs a slow loop written from the symmetric InfoNCE formula."""
import math

import pytest
import torch

from bhcl.models.losses import ContrastiveAlignmentLoss
from bhcl.models.losses.contrastive_alignment import symmetric_info_nce


def reference_loss(pred, target, temperature, weight):
    """w * mean_i -log(e^{s_ii} / sum_j e^{s_ij}) + w * mean_i -log(e^{s_ii} / sum_j e^{s_ji}),
    s_ij = <p_i/|p_i|, t_j/|t_j|> / tau, in Python floats."""
    p = [[float(x) for x in row] for row in pred]
    t = [[float(x) for x in row] for row in target]
    n = len(p)
    if n == 0:
        return 0.0

    def unit(v):
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v]

    p, t = [unit(v) for v in p], [unit(v) for v in t]
    s = [[sum(a * b for a, b in zip(p[i], t[j])) / temperature for j in range(n)]
         for i in range(n)]
    pred_to_obj = obj_to_pred = 0.0
    for i in range(n):
        pred_to_obj -= math.log(math.exp(s[i][i]) / sum(math.exp(s[i][j]) for j in range(n)))
        obj_to_pred -= math.log(math.exp(s[i][i]) / sum(math.exp(s[j][i]) for j in range(n)))
    return weight * pred_to_obj / n + weight * obj_to_pred / n


def _pair(n, d=8, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=dtype) * 3,
            torch.randn(n, d, generator=g, dtype=dtype) * 0.5)


@pytest.mark.parametrize('n', [3, 5, 9])
@pytest.mark.parametrize('temperature,weight', [(0.2, 0.4), (0.07, 1.0)])
def test_matches_the_slow_reference(n, temperature, weight):
    pred, target = _pair(n, seed=n)
    # make one pair and one negative close, so the softmax is far from uniform
    target[0] = pred[0] + 0.1
    target[1] = pred[2]
    loss = ContrastiveAlignmentLoss(temperature=temperature, loss_weight=weight)(pred, target)
    expected = reference_loss(pred, target, temperature, weight)
    assert loss.shape == ()
    torch.testing.assert_close(loss, torch.tensor(expected, dtype=torch.float64))


def test_hand_computed_orthogonal_pairs():
    # p_i = t_i = e_i: s_ii = 1/tau, s_ij = 0, so each direction is log(1 + (n-1) e^{-1/tau});
    # the defaults are MutDet's: tau 0.2, each direction weighted 2 tau = 0.4
    eye = torch.eye(3)
    loss = ContrastiveAlignmentLoss()(eye, eye)
    expected = 2 * 0.4 * math.log(1 + 2 * math.exp(-5.0))
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_directions_differ_and_sum():
    pred, target = _pair(4)
    both = symmetric_info_nce(pred, target, 0.2)
    swapped = symmetric_info_nce(target, pred, 0.2)
    torch.testing.assert_close(both, swapped.flip(0))
    assert not torch.allclose(both[0], both[1])


def test_normalises_its_inputs():
    pred, target = _pair(5)
    scale = torch.rand(5, 1, dtype=torch.float64) * 10 + 0.1
    loss = ContrastiveAlignmentLoss()
    torch.testing.assert_close(loss(pred * scale, target / scale), loss(pred, target))


def test_no_pairs_is_a_connected_zero():
    pred = torch.randn(0, 8, requires_grad=True)
    target = torch.randn(0, 8, requires_grad=True)
    loss = ContrastiveAlignmentLoss()(pred, target)
    assert loss.shape == () and loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert pred.grad.shape == (0, 8) and target.grad.shape == (0, 8)


def test_no_pairs_keeps_parameters_in_the_graph():
    head = torch.nn.Linear(8, 8)
    loss = ContrastiveAlignmentLoss()(head(torch.randn(0, 8)), torch.randn(0, 8))
    loss.backward()
    assert head.weight.grad is not None and torch.equal(head.weight.grad, torch.zeros(8, 8))


def test_one_pair_is_zero_with_finite_grad():
    pred, target = _pair(1)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    loss = ContrastiveAlignmentLoss()(pred, target)
    torch.testing.assert_close(loss, torch.zeros((), dtype=torch.float64))
    loss.backward()
    assert torch.isfinite(pred.grad).all() and torch.isfinite(target.grad).all()


def test_gradients_reach_both_inputs_and_gradcheck():
    pred, target = _pair(4, d=5)
    pred.requires_grad_(True)
    target.requires_grad_(True)
    loss_fn = ContrastiveAlignmentLoss()
    loss_fn(pred, target).backward()
    for g in (pred.grad, target.grad):
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    assert torch.autograd.gradcheck(loss_fn, (pred.detach().requires_grad_(),
                                              target.detach().requires_grad_()))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    pred, target = _pair(6, dtype=torch.float32)
    loss_fn = ContrastiveAlignmentLoss(temperature=0.05)
    low = loss_fn(pred.to(dtype), target.to(dtype))
    assert low.dtype == torch.float32 and torch.isfinite(low)
    torch.testing.assert_close(low, loss_fn(pred.to(dtype).float(), target.to(dtype).float()))


def test_rejects_unpaired_inputs():
    with pytest.raises(ValueError):
        ContrastiveAlignmentLoss()(torch.randn(3, 8), torch.randn(4, 8))
    with pytest.raises(ValueError):
        ContrastiveAlignmentLoss(temperature=0.0)


def test_registered():
    from mmrotate.registry import MODELS
    loss = MODELS.build(dict(type='ContrastiveAlignmentLoss'))
    assert isinstance(loss, ContrastiveAlignmentLoss)
    assert (loss.temperature, loss.loss_weight) == (0.2, 0.4)  # MutDet's: 2 tau per direction


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_matches_cpu():
    pred, target = _pair(7, dtype=torch.float32)
    loss_fn = ContrastiveAlignmentLoss()
    torch.testing.assert_close(loss_fn(pred.cuda(), target.cuda()).cpu(), loss_fn(pred, target))
