"""CQ-DINO's parts against slow loops written from the formulas, and their contracts.

The asymmetric loss and its gradient are checked against a float64 loop over
entries written from Ridnik et al.'s formula (with CQ-DINO's clamps and
constant focusing weights), the ancestor mask against a loop over the tree's
root-to-node paths; then properties of the selection and the fusion layer.
"""
import math

import pytest
import torch

from bhcl.models.layers import (CategoryImageFusionLayer, CategorySelector, select_categories,
                                select_queries, selection_targets)
from bhcl.models.losses import AsymmetricPresenceLoss
from bhcl.models.losses.presence import asymmetric_loss
from bhcl.structures import LabelTree
from tests.conftest import tree_config

SHIPRS = LabelTree.from_config(tree_config('shiprs'))


def _slow_asl(x, y, mask, gamma_neg, gamma_pos, clip, masked):
    """(loss, d loss / dx) by a loop over entries, for |x| well inside the clamps."""
    loss, grad = 0.0, torch.zeros_like(x)
    for b in range(x.shape[0]):
        for k in range(x.shape[1]):
            xi, yi, keep = float(x[b, k]), float(y[b, k]), bool(mask[b, k])
            if not keep:
                if masked == 'drop':
                    continue
                xi, yi = 0.0, 0.0
            p = 1 / (1 + math.exp(-xi))
            if yi:
                loss -= (1 - p) ** gamma_pos * math.log(p)
                g = -(1 - p) ** gamma_pos * (1 - p)        # d/dx of -w log p, w constant
            else:
                pm = min(1.0, 1 - p + clip)
                loss -= (1 - pm) ** gamma_neg * math.log(pm)
                g = (1 - pm) ** gamma_neg * p * (1 - p) / pm if pm < 1 else 0.0
            grad[b, k] = g if keep else 0.0
    return loss, grad


def _slow_mask(tree, targets):
    mask = torch.ones_like(targets, dtype=torch.bool)
    for b in range(targets.shape[0]):
        for k in targets[b].nonzero().flatten().tolist():
            for a in tree.path_ids(k)[:-1]:
                if targets[b, a] == 0:
                    mask[b, a] = False
    return mask


def _targets(tree, batch, seed, rate=0.08):
    g = torch.Generator().manual_seed(seed)
    t = (torch.rand(batch, tree.num_classes, generator=g) < rate).double()
    t[0] = 0
    t[0, tree.leaf_ids[0]] = 1                               # a leaf alone
    t[1, [tree.leaf_ids[-1], tree.parent[tree.leaf_ids[-1]]]] = 1   # a leaf and its parent
    return t


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_ancestor_mask_equals_a_loop_over_paths(seed):
    targets = _targets(SHIPRS, 6, seed)
    mask = AsymmetricPresenceLoss(SHIPRS).mask(targets)
    torch.testing.assert_close(mask, _slow_mask(SHIPRS, targets))
    assert not mask[0].all() and mask[1, SHIPRS.parent[SHIPRS.leaf_ids[-1]]]


@pytest.mark.parametrize('gammas', [(7, 0, 0.05), (4, 1, 0.05), (2, 2, 0.0), (0, 0, 0.0)])
@pytest.mark.parametrize('masked', ['zero_logit', 'drop'])
def test_asymmetric_loss_equals_the_formula(gammas, masked):
    gamma_neg, gamma_pos, clip = gammas
    g = torch.Generator().manual_seed(3)
    x = (4 * torch.randn(5, SHIPRS.num_classes, generator=g)).double().requires_grad_(True)
    y = _targets(SHIPRS, 5, 4, rate=0.2)
    loss_fn = AsymmetricPresenceLoss(SHIPRS, gamma_neg=gamma_neg, gamma_pos=gamma_pos,
                                     clip=clip, masked=masked)
    loss = loss_fn(x, y)
    loss.backward()
    want, grad = _slow_asl(x.detach(), y, loss_fn.mask(y), gamma_neg, gamma_pos, clip, masked)
    assert loss.item() == pytest.approx(want, rel=1e-12)
    torch.testing.assert_close(x.grad, grad, atol=1e-12, rtol=1e-10)


def test_masked_modes_differ_by_a_constant_only():
    x = torch.randn(4, SHIPRS.num_classes, dtype=torch.float64, requires_grad=True)
    y = _targets(SHIPRS, 4, 5)
    losses, grads = [], []
    for masked in ('zero_logit', 'drop'):
        loss = AsymmetricPresenceLoss(SHIPRS, masked=masked)(x, y)
        grads.append(torch.autograd.grad(loss, x)[0])
        losses.append(loss.item())
    n_masked = int((~AsymmetricPresenceLoss(SHIPRS).mask(y)).sum())
    assert n_masked > 0
    constant = -(1 - 0.55) ** 7 * math.log(0.55)
    assert losses[0] - losses[1] == pytest.approx(n_masked * constant, rel=1e-9)
    torch.testing.assert_close(grads[0], grads[1])


def test_asymmetric_loss_gradcheck_and_no_nan_without_positives():
    x = torch.randn(2, 7, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(2, 7, dtype=torch.float64)
    y[0, 2] = 1
    assert torch.autograd.gradcheck(
        lambda v: asymmetric_loss(v, y, 4, 1, 0.05, detach_focusing=False), (x, ))
    empty = asymmetric_loss(torch.tensor([[-200.0, 0.0, 200.0]], requires_grad=True),
                            torch.zeros(1, 3))
    assert torch.isfinite(empty)
    empty.backward()


def test_presence_loss_errors_name_the_fix():
    with pytest.raises(ValueError, match='label_tree'):
        AsymmetricPresenceLoss()
    with pytest.raises(ValueError, match='masked'):
        AsymmetricPresenceLoss(SHIPRS, masked='ignore')
    with pytest.raises(ValueError, match='49 nodes'):
        AsymmetricPresenceLoss(SHIPRS)(torch.zeros(1, 5), torch.zeros(1, 5))


def test_selection_authors_rule_is_the_top_k_and_keep_gt_forces_the_annotated():
    g = torch.Generator().manual_seed(6)
    presence = torch.randn(3, 30, generator=g)
    low = presence.argsort(dim=1)[:, :7]                    # the 7 lowest of each image
    gt = [low[0, :2], low[1, :7], torch.tensor([], dtype=torch.long)]
    selector = CategorySelector(topk=5, keep_gt=True).train()
    sel = selector(presence, gt)
    for b in range(3):
        chosen = set(sel.indices[b][sel.valid[b]].tolist())
        want = set(gt[b].tolist())                          # bhcl's former rule, by a loop
        ranked = [k for k in presence[b].argsort(descending=True).tolist() if k not in want]
        want |= set(ranked[:max(0, 5 - len(want))])
        assert chosen == want
    assert sel.valid.sum(1).tolist() == [5, 7, 5]
    authors = CategorySelector(topk=5).train()(presence, gt)
    torch.testing.assert_close(authors.indices, presence.topk(5, dim=1).indices)
    assert authors.valid.all()
    # at inference keep_gt does not apply
    torch.testing.assert_close(selector.eval()(presence, gt).indices, authors.indices)
    targets = selection_targets(authors, gt)
    assert all(t.sum() == 0 for t in targets)              # every annotated class left out
    assert CategorySelector(topk=100)(presence).indices.shape == (3, 30)
    with pytest.raises(ValueError, match='topk'):
        select_categories(presence, 0)


def test_select_queries_equals_a_loop():
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 12, 4, generator=g)
    valid = torch.tensor([[True, True, False, True], [True, False, False, False]])
    idx = select_queries(logits, valid, 5)
    for b in range(2):
        best = [max(logits[b, n, s].item() for s in range(4) if valid[b, s]) for n in range(12)]
        want = sorted(range(12), key=lambda n: -best[n])[:5]
        assert idx[b].tolist() == want


def _fusion(seed=8):
    torch.manual_seed(seed)
    layer = CategoryImageFusionLayer(image_dims=16, category_dims=12, embed_dims=32,
                                     num_heads=4, init_values=0.5)
    return layer


def test_fusion_layer_contracts():
    layer = _fusion().train()
    image, cats = torch.randn(2, 9, 16), torch.randn(2, 4, 12)
    pad = torch.zeros(2, 9, dtype=torch.bool)
    pad[1, 6:] = True
    valid = torch.ones(2, 4, dtype=torch.bool)
    valid[0, 3] = False
    copies = image.clone(), cats.clone()
    out_image, out_cats = layer(image, cats, pad, valid)
    assert out_image.shape == image.shape and out_cats.shape == cats.shape
    torch.testing.assert_close((image, cats), copies)           # inputs unchanged
    (out_image.sum() + out_cats.sum()).backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    layer.eval()
    # padded image tokens do not reach the categories
    ref = layer(image[1:, :6], cats[1:])[1]
    torch.testing.assert_close(layer(image[1:], cats[1:], pad[1:])[1], ref)
    other = _fusion(9)
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other.eval()(image, cats, pad, valid),
                               layer(image, cats, pad, valid))
    # no valid category: the image tokens are only normalised
    none = torch.zeros(1, 4, dtype=torch.bool)
    torch.testing.assert_close(layer(image[:1], cats[:1], category_valid=none)[0],
                               layer.norm_image(image[:1]))
    with pytest.raises(ValueError, match='divisible'):
        CategoryImageFusionLayer(image_dims=8, category_dims=8, embed_dims=30, num_heads=4)


@pytest.mark.parametrize('cfg', [
    dict(type='AsymmetricPresenceLoss', label_tree=tree_config('shiprs')),
    dict(type='CategorySelector', topk=10, keep_gt=True),
    dict(type='CategoryImageFusionLayer', image_dims=16, category_dims=16, embed_dims=32),
    dict(type='CategoryCrossAttention', embed_dims=16, num_heads=2),
])
def test_parts_build_from_the_registry(cfg):
    from mmrotate.registry import MODELS
    module = MODELS.build(cfg)
    assert type(module).__name__ == cfg['type']
