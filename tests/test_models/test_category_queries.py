"""Category queries: tree update vs a hand computation, top-K selection, logits, gradients."""
import math

import pytest
import torch

from bhcl.models.layers.category_queries import (CategoryQueries, subtree_sizes,
                                                 tree_update, tree_update_weights)
from bhcl.structures import LabelTree

# 3 levels: A > (B > (b1, b2), a2); C is a lone top-level leaf
TREE = LabelTree.from_paths(['A', 'A/B', 'A/B/b1', 'A/B/b2', 'A/a2', 'C'])


def test_subtree_sizes_and_weights():
    assert subtree_sizes(TREE) == [5, 3, 1, 1, 1, 1]
    w = tree_update_weights(TREE)
    assert w[0] == pytest.approx(0.8)  # the largest subtree
    assert w[1] == pytest.approx(0.4 + 0.4 * math.log(3) / math.log(5))
    assert w[2:].tolist() == [0.0] * 4  # leaves are not updated


def test_tree_update_matches_a_hand_computed_three_level_case():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [4.0, 0.0], [0.0, 6.0], [9.0, 9.0]])
    w = torch.tensor([0.5, 0.25, 0.0, 0.0, 0.0, 0.0])
    out = tree_update(q, TREE, w)
    # B first: 0.75 * (0, 1) + 0.25 * mean((2, 2), (4, 0)) = (0, 0.75) + (0.75, 0.25)
    b = torch.tensor([0.75, 1.0])
    # then A from the updated B: 0.5 * (1, 0) + 0.5 * mean((0.75, 1), (0, 6)) = (0.6875, 1.75)
    a = torch.tensor([0.6875, 1.75])
    torch.testing.assert_close(out[1], b)
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[2:], q[2:])  # leaves and the lone root unchanged


def _module(**kw):
    torch.manual_seed(0)
    return CategoryQueries(TREE.to_config(), embed_dims=16, num_heads=2, **kw)


def test_topk_keeps_every_annotated_node_at_training_time():
    m = _module(topk=2).train()
    feat = torch.randn(2, 16, 4, 4)
    gt = [torch.tensor([2, 3, 5]), torch.tensor([4])]
    emb, presence, keep = m(feat, gt)
    assert emb.shape == (2, 6, 16) and presence.shape == (2, 6)
    assert keep[0, [2, 3, 5]].all() and keep[1, 4]
    assert keep[0].sum() == 3  # more annotated nodes than topk: all of them
    assert keep[1].sum() == 2
    # without keep_gt (or at inference) exactly the top-2 presence scores
    m.eval()
    _, presence, keep = m(feat, gt)
    assert keep.sum(1).tolist() == [2, 2]
    assert (keep == torch.zeros_like(keep).scatter(1, presence.topk(2, 1).indices, True)).all()


def test_logits_shape_and_every_query_kept_when_topk_covers_the_tree():
    m = _module(topk=100)
    emb, _, keep = m(torch.randn(3, 16, 2, 2))
    assert keep.all()
    logits = m.logits(torch.randn(3, 7, 16), emb)
    assert logits.shape == (3, 7, 6)


@pytest.mark.parametrize('relation', ['tree', 'self_attn', None])
def test_gradients_reach_category_queries_and_image_features(relation):
    m = _module(topk=3, relation=relation).train()
    feat = torch.randn(2, 16, 3, 3, requires_grad=True)
    obj = torch.randn(2, 5, 16, requires_grad=True)
    gt = [torch.tensor([2]), torch.tensor([4, 5])]
    emb, presence, keep = m(feat, gt)
    logits = m.logits(obj, emb)
    target = torch.zeros_like(logits)
    target[0, 0, 2] = target[1, 1, 4] = 1.0
    cls = torch.nn.functional.binary_cross_entropy_with_logits(
        logits, target, weight=keep[:, None, :].float())
    loss = cls + m.presence_loss(presence, m.presence_targets(gt, 2, feat.device))
    loss.backward()
    assert m.queries.grad.abs().sum() > 0 and feat.grad.abs().sum() > 0
    assert obj.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None, name
    # the tree update routes a leaf's gradient into its ancestors' queries
    if relation == 'tree':
        assert m.queries.grad[0].abs().sum() > 0


def test_presence_loss_is_the_focal_loss_formula():
    x = torch.tensor([[2.0, -1.0, 0.5]])
    t = torch.tensor([[1.0, 0.0, 1.0]])
    expected = 0.0
    for xi, ti in zip(x.flatten().tolist(), t.flatten().tolist()):
        p = 1 / (1 + math.exp(-xi))
        pt = p if ti else 1 - p
        at = 0.25 if ti else 0.75
        expected += -at * (1 - pt) ** 2 * math.log(pt)
    assert CategoryQueries.presence_loss(x, t).item() == pytest.approx(expected / 2)
