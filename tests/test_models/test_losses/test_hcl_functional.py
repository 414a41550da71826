"""The loss maths against the paper's formulas (float64 nested loops)."""
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from bhcl.models.losses.functional import (default_level_weights, ema_prototype_update,
                                           ema_rates, hierarchical_contrastive_loss,
                                           hierarchical_contrastive_terms,
                                           prototype_level_labels, sample_level_labels)
from .hcl_reference import TREE3, TREE4, naive_ema, naive_hcl, paper_weights, tree

# TREE4 nodes: R0 A1 B2 A1_3 A2_4 B1_5 x6 y7 z8 w9. Other-A (1), Other-A1 (3),
# root-only (0) and Other-B (2) samples; w (9) is a singleton.
BATCH4 = [6, 6, 7, 8, 9, 1, 3, 3, 0, 2, 7, 4, 6]
# TREE3 nodes: X0 Y1 x1_2 x2_3 y1_4 a5 b6 c7 d8.
BATCH3 = [5, 5, 6, 7, 8, 2, 4, 0, 1, 3, 6, 5]
CASES = [(TREE4, BATCH4, [1, 2, 3]), (TREE4, BATCH4, [0, 1, 2, 3]),
         (TREE3, BATCH3, [0, 1, 2]), (TREE3, BATCH3, [1, 2])]


def _inputs(label_tree, batch, dim=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    feats = F.normalize(torch.randn(len(batch), dim, generator=gen, dtype=torch.float64), dim=1)
    protos = F.normalize(torch.randn(label_tree.num_classes, dim, generator=gen,
                                     dtype=torch.float64), dim=1)
    return feats, torch.tensor(batch), protos


def _loss(label_tree, feats, labels, levels, tau, balance, protos=None, valid=None,
          scope='node', weights=None):
    anc = torch.as_tensor(label_tree.ancestors)
    weights = default_level_weights(len(levels)) if weights is None else weights
    plabels = None if protos is None else prototype_level_labels(anc, levels, scope, valid)
    return hierarchical_contrastive_loss(feats, sample_level_labels(anc, labels, levels), weights,
                                         tau, balance, protos, plabels, label_tree.num_classes)


@pytest.mark.parametrize('balance', [False, True])
@pytest.mark.parametrize('prototypes', [None, 'node', 'subtree'])
@pytest.mark.parametrize('case', range(len(CASES)))
def test_equals_paper_formula(case, prototypes, balance):
    cfg, batch, levels = CASES[case]
    label_tree = tree(cfg)
    feats, labels, protos = _inputs(label_tree, batch, seed=case)
    valid = None
    if prototypes is not None:  # one hidden (never seen) prototype
        valid = torch.ones(label_tree.num_classes, dtype=torch.bool)
        valid[label_tree.num_classes - 2] = False
    scope = prototypes or 'node'
    protos = None if prototypes is None else protos
    out = _loss(label_tree, feats, labels, levels, 0.3, balance, protos, valid, scope)
    ref = naive_hcl(feats, labels, label_tree, levels, paper_weights(levels), 0.3, balance,
                    protos, valid, scope)
    assert_close(out, torch.tensor(ref, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert (out != 0).all()


def test_default_level_weights_deeper_weighs_more():
    assert_close(default_level_weights(3),
                 torch.tensor(paper_weights([1, 2, 3]), dtype=torch.float64))
    expected = torch.tensor([math.exp(1 / 3), math.exp(1 / 2), math.e], dtype=torch.float64)
    assert_close(default_level_weights(3), expected / expected.sum())
    assert_close(default_level_weights(1), torch.ones(1, dtype=torch.float64))


def test_prototype_level_labels_scopes():
    label_tree = tree(TREE3)  # X0 Y1 x1_2 x2_3 y1_4 a5 b6 c7 d8
    anc = torch.as_tensor(label_tree.ancestors)
    valid = torch.ones(9, dtype=torch.bool)
    valid[6] = False
    node = prototype_level_labels(anc, [1, 2], 'node', valid)
    subtree = prototype_level_labels(anc, [1, 2], 'subtree', valid)
    assert_close(node, torch.tensor([[-1, -1], [-1, -1], [2, -1], [3, -1], [4, -1],
                                     [-1, 5], [-1, -1], [-1, 7], [-1, 8]]))
    assert_close(subtree, torch.tensor([[-1, -1], [-1, -1], [2, -1], [3, -1], [4, -1],
                                        [2, 5], [-1, -1], [3, 7], [4, 8]]))


def test_other_samples_only_at_their_own_levels():
    """An "Other A1" sample (node A1, depth 2) is anchor, positive and negative
    at levels 1-2 and absent at level 3: removing it leaves the level-3 terms
    of every other sample unchanged, while it changes their level-1/2 terms."""
    label_tree = tree(TREE4)
    levels = [1, 2, 3]
    anc = torch.as_tensor(label_tree.ancestors)
    feats, labels, _ = _inputs(label_tree, [6, 6, 7, 7, 8, 3], seed=3)
    terms, anchor = hierarchical_contrastive_terms(feats, sample_level_labels(anc, labels, levels),
                                                   0.2, balance=True)
    assert anchor.tolist() == [[True, True, True]] * 4 + [[True, False, False],
                                                          [True, True, False]]
    kept, _ = hierarchical_contrastive_terms(
        feats[:5], sample_level_labels(anc, labels[:5], levels), 0.2, balance=True)
    assert_close(kept[:, 2], terms[:5, 2])
    assert not torch.isclose(kept[:4, :2], terms[:4, :2]).any()


def test_balanced_equals_standard_for_equal_class_counts():
    """Equal counts n_l at every level: the balanced denominator is the plain
    one over n_l, so gradients agree and losses differ by lambda_l log n_l."""
    label_tree = tree(dict(paths=['P', 'Q', 'P/p1', 'P/p2', 'Q/q1', 'Q/q2']))
    anc = torch.as_tensor(label_tree.ancestors)
    levels = [0, 1]
    labels = torch.tensor([2, 2, 3, 3, 4, 4, 5, 5])
    feats = F.normalize(torch.randn(8, 5, generator=torch.Generator().manual_seed(7),
                                    dtype=torch.float64), dim=1).requires_grad_()
    w = default_level_weights(2)
    lab = sample_level_labels(anc, labels, levels)
    std = hierarchical_contrastive_loss(feats, lab, w, 0.1, balance=False)
    bal = hierarchical_contrastive_loss(feats, lab, w, 0.1, balance=True)
    assert_close(bal, std - w * torch.tensor([math.log(4), math.log(2)], dtype=torch.float64))
    g_std, = torch.autograd.grad(std.sum(), feats)
    g_bal, = torch.autograd.grad(bal.sum(), feats)
    assert_close(g_bal, g_std)


def test_duplicating_a_class_keeps_its_share_when_balanced():
    """Copying every sample of class c leaves c's class mean, hence the
    losses of all anchors outside c, unchanged under balancing (not without)."""
    label_tree = tree(TREE3)  # c (7) is the only class under x2 (3): no x2 samples here
    anc = torch.as_tensor(label_tree.ancestors)
    levels = [1, 2]
    feats, labels, _ = _inputs(label_tree, [5, 5, 6, 6, 7, 7, 8, 8, 4], seed=5)
    dup = labels == 7
    feats2, labels2 = torch.cat([feats, feats[dup]]), torch.cat([labels, labels[dup]])
    outside = ~dup
    for balance, same in [(True, True), (False, False)]:
        t1, _ = hierarchical_contrastive_terms(feats, sample_level_labels(anc, labels, levels),
                                               0.2, balance)
        t2, _ = hierarchical_contrastive_terms(feats2, sample_level_labels(anc, labels2, levels),
                                               0.2, balance)
        assert torch.allclose(t2[:len(labels)][outside], t1[outside]) == same


def test_gradcheck_balanced_with_prototypes():
    label_tree = tree(TREE3)
    anc = torch.as_tensor(label_tree.ancestors)
    levels = [0, 1, 2]
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(7, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    m = torch.randn(9, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    lab = sample_level_labels(anc, torch.tensor([5, 5, 6, 7, 2, 8, 0]), levels)
    plab = prototype_level_labels(anc, levels, 'node')
    w = default_level_weights(3)

    def fn(x, m):
        return hierarchical_contrastive_loss(F.normalize(x, dim=1), lab, w, 0.5, True,
                                             F.normalize(m, dim=1), plab, 9)

    assert torch.autograd.gradcheck(fn, (x, m))


@pytest.mark.parametrize('batch', [[6, 9], [6], [0, 1, 2], []])
def test_no_nan_without_positive_pairs(batch):
    """Distinct classes, a single sample, only shallow samples, an empty batch:
    zeros that still reach the features (zero, finite gradients)."""
    label_tree = tree(TREE4)
    feats, labels, _ = _inputs(label_tree, batch, seed=1)
    feats = feats.float().requires_grad_()
    out = _loss(label_tree, feats, labels.long(), [1, 2, 3], 0.1, balance=True)
    assert_close(out, torch.zeros(3))
    out.sum().backward()
    assert_close(feats.grad, torch.zeros_like(feats))


def test_small_temperature_float32_is_stable():
    label_tree = tree(TREE4)
    feats, labels, protos = _inputs(label_tree, BATCH4, seed=2)
    for tau in (0.05, 0.1):
        ref = _loss(label_tree, feats, labels, [1, 2, 3], tau, True, protos)
        out = _loss(label_tree, feats.float(), labels, [1, 2, 3], tau, True, protos.float())
        assert torch.isfinite(out).all()
        assert_close(out, ref.float(), rtol=1e-4, atol=1e-5)


def test_logits_stay_float32_under_autocast():
    label_tree = tree(TREE4)
    feats, labels, protos = _inputs(label_tree, BATCH4, dim=16, seed=4)
    feats, protos = feats.float(), protos.float()
    ref = _loss(label_tree, feats, labels, [1, 2, 3], 0.1, True, protos)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = _loss(label_tree, feats, labels, [1, 2, 3], 0.1, True, protos)
        low = _loss(label_tree, feats.bfloat16(), labels, [1, 2, 3], 0.1, True, protos.bfloat16())
    assert out.dtype == torch.float32 and low.dtype == torch.float32
    assert_close(out, ref)
    assert torch.isfinite(low).all()


def test_ema_update_closed_form_per_level():
    label_tree = tree(TREE4)
    anc = torch.as_tensor(label_tree.ancestors)
    gen = torch.Generator().manual_seed(9)
    bank = F.normalize(torch.randn(10, 5, generator=gen, dtype=torch.float64), dim=1)
    bank[9] = 0  # w never seen
    seen = torch.ones(10, dtype=torch.bool)
    seen[9] = False
    labels = torch.tensor([6, 6, 7, 3, 1, 9])  # nothing under A2 (4): A2 and z (8) stay
    feats = F.normalize(torch.randn(6, 5, generator=gen, dtype=torch.float64), dim=1)
    rates = ema_rates(anc, 0.1)
    assert_close(rates, torch.tensor([1e-4, 1e-3, 1e-3, 1e-2, 1e-2, 1e-2, .1, .1, .1, .1],
                                     dtype=torch.float64))
    new, seen2 = ema_prototype_update(bank, seen, feats, labels, anc, rates)
    assert_close(new, naive_ema(bank, feats, labels, label_tree, 0.1))
    moved = torch.tensor([1, 1, 1, 1, 0, 1, 1, 1, 0, 1], dtype=torch.bool)
    assert_close(new[~moved], bank[~moved])
    assert not torch.isclose(new[moved], bank[moved]).all(1).any()
    assert_close(new.norm(dim=1)[moved], torch.ones(int(moved.sum()), dtype=torch.float64))
    assert_close(new[9], feats[5])  # first sight: the (unit) class mean
    assert seen2.all()


@pytest.mark.parametrize('relpath', ['bhcl/models/losses/functional.py', 'bhcl/utils/dist.py',
                                     'bhcl/models/losses/presence.py'])
def test_framework_free(repo_root, relpath):
    """The maths and the collectives load with every mm* package blocked."""
    code = f'''
import importlib.abc, importlib.util, sys
def is_mm(name):  # mmengine, mmcv, mmdet, mmrotate, ...; not the stdlib's mmap
    top = name.split('.')[0]
    return top.startswith('mm') and top != 'mmap'
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if is_mm(name):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
spec = importlib.util.spec_from_file_location('probe', {osp.join(repo_root, relpath)!r})
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
assert not [m for m in sys.modules if is_mm(m)]
print('loaded', len(vars(mod)))
'''
    res = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith('loaded')
