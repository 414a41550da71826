"""HierarchicalContrastiveLoss: registry, contract, warm-up, banks, real trees."""
import pytest
import torch
from torch.testing import assert_close

from bhcl.models.losses import (ClassifierPrototypeBank, EMAPrototypeBank,
                                HierarchicalContrastiveLoss, LearnablePrototypeBank)
from bhcl.structures import LabelTree
from tests.conftest import tree_config
from .hcl_reference import TREE4, naive_hcl, paper_weights, tree

BATCH4 = [6, 6, 7, 8, 9, 1, 3, 3, 0, 2, 7, 4, 6, 8]


def _build(**kwargs):
    from mmrotate.registry import MODELS
    cfg = dict(type='HierarchicalContrastiveLoss', label_tree=TREE4, in_channels=8,
               hidden_channels=16, out_channels=6)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def _batch(batch=BATCH4, seed=0, dtype=torch.float32, dim=8):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(len(batch), dim, generator=gen, dtype=dtype)
    return x, torch.tensor(batch, dtype=torch.long)


def _reference(module, x, labels, balance=False, prototypes=None, valid=None):
    with torch.no_grad():
        emb = module.embed(x)
    levels = module.levels
    ref = naive_hcl(emb, labels, module.label_tree, levels, paper_weights(levels),
                    module.temperature, balance, prototypes, valid, module.prototype_scope)
    return {f'loss_hcl_lv{l}': torch.tensor(v * module.loss_weight, dtype=emb.dtype)
            for l, v in zip(levels, ref)}


def test_registered_names():
    from mmrotate.registry import MODELS
    for cls in (HierarchicalContrastiveLoss, EMAPrototypeBank, LearnablePrototypeBank,
                ClassifierPrototypeBank):
        assert MODELS.get(cls.__name__) is cls


@pytest.mark.parametrize('bank', [None, 'EMAPrototypeBank'])
@pytest.mark.parametrize('balance', [False, True])
def test_equals_paper_formula(balance, bank):
    torch.manual_seed(0)
    loss = _build(balance=balance, loss_weight=0.6, temperature=0.2,
                  prototype_bank=bank and dict(type=bank)).double()
    x, labels = _batch(dtype=torch.float64)
    protos = valid = None
    if bank:  # fill the bank from another batch, then compare with the paper's formula
        loss(*_batch([6, 7, 8, 1, 3, 2], seed=1, dtype=torch.float64))
        protos = loss.prototype_bank.prototypes.clone()
        valid = loss.prototype_bank.initialized.clone()
        assert valid.tolist() == [True] * 5 + [False] + [True] * 3 + [False]
    out = loss.eval()(x, labels)
    assert_close(out, _reference(loss, x, labels, balance, protos, valid))


def test_keys_weights_and_start_level():
    x, labels = _batch()
    torch.manual_seed(0)
    out = _build(start_level=2, level_weights=[0.25, 0.75])(x, labels)
    assert list(out) == ['loss_hcl_lv2', 'loss_hcl_lv3']
    torch.manual_seed(0)
    even = _build(start_level=2, level_weights=[1.0, 1.0])(x, labels)
    assert_close(torch.stack(list(out.values())),
                 torch.stack(list(even.values())) * torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match='level_weights needs 2'):
        _build(start_level=2, level_weights=[1.0])
    with pytest.raises(ValueError, match='start_level'):
        _build(start_level=4)


def test_label_tree_as_object_or_dict():
    torch.manual_seed(3)
    a = _build()
    torch.manual_seed(3)
    b = _build(label_tree=LabelTree.from_config(TREE4))
    x, labels = _batch()
    assert_close(a(x, labels), b(x, labels))


def test_inputs_unchanged_and_bad_labels_rejected():
    loss = _build(balance=True, prototype_bank=dict(type='EMAPrototypeBank'))
    loss.set_epoch(0)
    x, labels = _batch()
    x0, l0 = x.clone(), labels.clone()
    loss(x, labels)
    assert_close(x, x0)
    assert_close(labels, l0)
    with pytest.raises(ValueError, match=r'\[0, 10\)'):
        loss(x, torch.full_like(labels, 10))
    with pytest.raises(ValueError, match=r'features must be \(P, 8\)'):
        loss(x[:, :4], labels)


def test_warmup_reads_the_epoch():
    torch.manual_seed(1)
    bhcl = _build(balance=True, prototype_bank=dict(type='EMAPrototypeBank'), warmup_epochs=2)
    x, labels = _batch()
    with pytest.raises(RuntimeError, match='SetEpochInfoHook'):
        bhcl(x, labels)
    hcl = _build()
    hcl.load_state_dict(bhcl.state_dict(), strict=False)
    bank = bhcl.prototype_bank
    for epoch in (0, 1):  # warm-up: plain HCL, while the bank fills
        bhcl.set_epoch(epoch)
        assert bhcl.in_warmup
        assert_close(bhcl(x, labels), hcl(x, labels))
    assert bank.initialized.all()
    bhcl.set_epoch(2)
    assert not bhcl.in_warmup
    protos, valid = bank.prototypes.clone(), bank.initialized.clone()
    out = bhcl(x, labels)
    assert_close(out, _reference(bhcl, x, labels, True, protos, valid), rtol=1e-5, atol=1e-6)
    # warm-up does not matter (and needs no epoch) without balance or bank
    _build(warmup_epochs=3)(x, labels)


def test_eval_mode_leaves_the_bank_alone():
    loss = _build(balance=True, prototype_bank=dict(type='EMAPrototypeBank'))
    x, labels = _batch()
    loss.eval()(x, labels)
    assert not loss.prototype_bank.initialized.any()
    loss.train()(x, labels)
    assert loss.prototype_bank.initialized.all()


def test_state_dict_round_trip():
    torch.manual_seed(2)
    a = _build(balance=True, prototype_bank=dict(type='EMAPrototypeBank'))
    x, labels = _batch()
    a(x, labels)
    a(*_batch(seed=4))
    b = _build(balance=True, prototype_bank=dict(type='EMAPrototypeBank'))
    b.load_state_dict(a.state_dict())
    state = a.state_dict()
    assert {'prototype_bank.prototypes', 'prototype_bank.initialized'} <= set(state)
    assert 'ancestors' not in state and 'prototype_bank.ancestors' not in state
    assert_close(b.prototype_bank.prototypes, a.prototype_bank.prototypes)
    assert_close(b.prototype_bank.initialized, a.prototype_bank.initialized)
    assert_close(b.eval()(x, labels), a.eval()(x, labels))


@pytest.mark.parametrize('bank', [None, 'EMAPrototypeBank', 'LearnablePrototypeBank',
                                  'ClassifierPrototypeBank'])
@pytest.mark.parametrize('batch', [BATCH4, []])
def test_every_parameter_gets_a_gradient(bank, batch):
    """Also for an empty batch (a graph-connected zero) and in warm-up."""
    loss = _build(balance=True, prototype_bank=bank and dict(type=bank), warmup_epochs=1)
    cls_weight = torch.randn(10, 8, requires_grad=True)
    x, labels = _batch(batch)
    x.requires_grad_()
    for epoch in (0, 1):
        loss.set_epoch(epoch)
        loss.zero_grad()
        cls_weight.grad = None
        out = loss(x, labels, classifier_weight=cls_weight)
        total = sum(out.values())
        assert torch.isfinite(total)
        assert (total == 0) == (not batch)
        total.backward()
        params = list(loss.parameters())
        if bank == 'ClassifierPrototypeBank':
            params.append(cls_weight)
        for p in params:
            assert p.grad is not None and torch.isfinite(p.grad).all()
        if bank == 'ClassifierPrototypeBank' and batch and epoch == 1:
            assert cls_weight.grad.abs().sum() > 0


def test_classifier_prototypes_are_projected_weights():
    torch.manual_seed(5)
    loss = _build(balance=True, prototype_bank=dict(type='ClassifierPrototypeBank')).double()
    x, labels = _batch(dtype=torch.float64)
    weight = torch.randn(10, 8, dtype=torch.float64)
    with torch.no_grad():
        protos = loss.embed(weight)
    assert_close(loss(x, labels, classifier_weight=weight),
                 _reference(loss, x, labels, True, protos))
    with pytest.raises(ValueError, match='classifier_weight='):
        loss(x, labels)
    with pytest.raises(ValueError, match=r'\(10, C_in\)'):
        loss(x, labels, classifier_weight=weight[:9])


def test_autocast_keeps_the_loss_float32():
    torch.manual_seed(6)
    loss = _build(balance=True, prototype_bank=dict(type='LearnablePrototypeBank'))
    x, labels = _batch()
    ref = loss(x, labels)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = loss(x, labels)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert_close(out, ref, rtol=0.05, atol=0.02)  # only the projection runs in bf16


@pytest.mark.parametrize('name, keys', [
    ('shiprs', ['loss_hcl_lv1', 'loss_hcl_lv2', 'loss_hcl_lv3']),
    ('fair1m', ['loss_hcl_lv1']),
])
def test_real_trees(name, keys):
    cfg = tree_config(name)
    label_tree = LabelTree.from_config(cfg)
    loss = HierarchicalContrastiveLoss(cfg, balance=True, warmup_epochs=5, loss_weight=0.6,
                                       prototype_bank=dict(type='EMAPrototypeBank'))
    loss.set_epoch(5)
    gen = torch.Generator().manual_seed(0)
    # every node, internal ones ("Other X") included, twice
    labels = torch.arange(label_tree.num_classes).repeat(2)
    x = torch.randn(len(labels), 256, generator=gen)
    out = loss(x, labels)
    assert list(out) == keys
    assert all(torch.isfinite(v) and v > 0 for v in out.values())
    out = loss(x, labels)  # now with the bank filled
    assert all(torch.isfinite(v) for v in out.values())
    assert loss.prototype_bank.initialized.all()


@pytest.mark.parametrize('warm', [False, True])
def test_published_singletons_leave_the_plain_form(warm):
    """``singleton_negatives=False``: a sample alone in its class at a level is in no
    denominator there (the published code's plain form; BHCL's balanced form keeps it)."""
    kwargs = dict(loss_weight=0.6, singleton_negatives=False)
    if warm:  # BHCL during its warm-up runs the plain form
        kwargs.update(balance=True, warmup_epochs=2)
    module = _build(**kwargs)
    module.set_epoch(0)
    x, labels = _batch()  # leaf w (9) and others appear once
    losses = module(x, labels)
    with torch.no_grad():
        emb = module.embed(x)
    ref = naive_hcl(emb, labels, module.label_tree, module.levels, paper_weights(module.levels),
                    module.temperature, drop_singletons=True)
    for level, value in zip(module.levels, ref):
        assert_close(losses[f'loss_hcl_lv{level}'], torch.tensor(value * 0.6), rtol=1e-5,
                     atol=1e-7)
    default = _build(loss_weight=0.6)(x, labels)
    assert any((default[k] - losses[k]).abs() > 1e-4 for k in losses)  # the switch matters


def test_build_contrastive_losses_leaves_the_global_stream_alone():
    """Building the per-stage losses draws nothing from the global generator, so a
    model with and without them is initialised alike (common random numbers);
    the stages still get projections of their own."""
    from bhcl.models.losses import build_contrastive_losses
    tree = dict(paths=['A', 'A/a', 'A/b', 'B', 'B/c', 'B/d'])
    torch.manual_seed(5)
    before = torch.rand(3)
    torch.manual_seed(5)
    losses = build_contrastive_losses(
        dict(type='HierarchicalContrastiveLoss', hidden_channels=8, out_channels=4,
             prototype_bank=dict(type='LearnablePrototypeBank')), 3, tree, 6)
    torch.testing.assert_close(torch.rand(3), before)
    assert len(losses) == 3 and losses[0].in_channels == 6
    w = [loss.projector[0].weight for loss in losses]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
