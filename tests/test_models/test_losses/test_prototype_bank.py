"""Prototype banks: EMA closed form, state, validity; learnable; classifier."""
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from bhcl.models.losses import (ClassifierPrototypeBank, EMAPrototypeBank,
                                LearnablePrototypeBank)
from .hcl_reference import TREE4, naive_ema, tree


def _feats(n, seed, dim=6):
    return F.normalize(torch.randn(n, dim, generator=torch.Generator().manual_seed(seed)), dim=1)


def test_ema_bank_follows_the_closed_form():
    label_tree = tree(TREE4)
    bank = EMAPrototypeBank(TREE4, feat_channels=6, epsilon=0.1)
    expected = torch.zeros(10, 6, dtype=torch.float64)
    for step, labels in enumerate([[6, 6, 7, 1], [8, 3, 6, 9, 9], [7, 2]]):
        labels = torch.tensor(labels)
        feats = _feats(len(labels), step).requires_grad_()
        before = bank.prototypes.clone()
        bank.update(feats, labels)
        expected = naive_ema(expected, feats.detach(), labels, label_tree, 0.1)
        assert_close(bank.prototypes, expected.float())
        moved = torch.zeros(10, dtype=torch.bool)
        for k in labels.tolist():
            moved[label_tree.path_ids(k)] = True
        assert_close(bank.prototypes[~moved], before[~moved])  # only classes present move
        assert not bank.prototypes.requires_grad
        seen = bank.initialized
        assert_close(bank.prototypes[seen].norm(dim=1), torch.ones(int(seen.sum())))
    assert bank.initialized.tolist() == [True] * 10
    # per-level rates: leaves (depth 3) move by eps, depth 1 by eps^3
    assert_close(bank.rates, torch.tensor([1e-4, 1e-3, 1e-3, 1e-2, 1e-2, 1e-2, .1, .1, .1, .1]))


def test_ema_bank_hides_unseen_rows_and_returns_a_copy():
    bank = EMAPrototypeBank(TREE4, feat_channels=6)
    bank.update(_feats(2, 0), torch.tensor([6, 6]))
    protos, valid = bank(project=None)
    assert valid.tolist() == [True, True, False, True] + [False] * 2 + [True] + [False] * 3
    protos.add_(1)
    valid.fill_(False)
    assert bank.initialized.sum() == 4
    assert_close(bank.prototypes[6], F.normalize(_feats(2, 0).mean(0), dim=0))


def test_ema_bank_published_behaviour_uses_unseen_zero_rows():
    bank = EMAPrototypeBank(TREE4, feat_channels=6, hide_unseen=False)
    bank.update(_feats(2, 0), torch.tensor([6, 6]))
    protos, valid = bank(project=None)
    assert valid.all()                       # every row, seen or not
    assert not protos[8].any()               # an unseen row is the zero vector
    assert_close(protos[6], F.normalize(_feats(2, 0).mean(0), dim=0))


def test_ema_bank_state_dict_round_trip():
    a = EMAPrototypeBank(TREE4, feat_channels=6)
    a.update(_feats(4, 1), torch.tensor([6, 8, 9, 2]))
    b = EMAPrototypeBank(TREE4, feat_channels=6)
    b.load_state_dict(a.state_dict())
    assert sorted(a.state_dict()) == ['initialized', 'prototypes']
    assert_close(b.prototypes, a.prototypes)
    assert_close(b.initialized, a.initialized)
    # the restored bank keeps going exactly like the original
    for bank in (a, b):
        bank.update(_feats(3, 2), torch.tensor([6, 7, 9]))
    assert_close(b.prototypes, a.prototypes)


def test_ema_bank_rejects_bad_epsilon():
    with pytest.raises(ValueError, match='epsilon'):
        EMAPrototypeBank(TREE4, feat_channels=6, epsilon=1.0)


def test_learnable_bank_is_a_unit_norm_parameter():
    torch.manual_seed(0)
    bank = LearnablePrototypeBank(TREE4, feat_channels=6)
    assert [n for n, _ in bank.named_parameters()] == ['weight']
    protos, valid = bank(project=None)
    assert_close(protos.norm(dim=1), torch.ones(10))
    assert valid.all()
    protos.sum().backward()
    assert bank.weight.grad is not None
    before = bank.weight.detach().clone()
    bank.update(_feats(2, 0), torch.tensor([6, 6]))  # trained by the optimizer only
    assert_close(bank.weight.detach(), before)


def test_classifier_bank_projects_the_weight():
    bank = ClassifierPrototypeBank(TREE4, feat_channels=6)
    weight = torch.randn(10, 4)
    proj = torch.nn.Linear(4, 6)

    def project(w):
        return F.normalize(proj(w), dim=1)

    protos, valid = bank(project, weight)
    assert_close(protos, project(weight))
    assert valid.all()
    assert list(bank.state_dict()) == []
