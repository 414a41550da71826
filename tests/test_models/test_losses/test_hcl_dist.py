"""BHCL under DDP on two gloo ranks equals the single-process loss on the
concatenated batch: same loss values, the exact gradient on every rank's own
features, parameter gradients at the documented 1/W scale, identical banks."""
import datetime
import os.path as osp

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel
from torch.testing import assert_close

from .hcl_reference import TREE4

LABELS = [6, 6, 7, 8, 9, 1, 3, 3, 0, 2, 7, 4, 6, 8, 9, 7]
# (epoch, rows on rank 0, rows on rank 1): warm-up, then BHCL with unequal and empty shares
STEPS = [(0, 6, 10), (1, 9, 7), (1, 16, 0)]
BANKS = ['EMAPrototypeBank', 'LearnablePrototypeBank']


def _build(bank):
    from bhcl.models.losses import HierarchicalContrastiveLoss
    torch.manual_seed(0)
    return HierarchicalContrastiveLoss(TREE4, in_channels=8, hidden_channels=16, out_channels=6,
                                       balance=True, prototype_bank=dict(type=bank),
                                       warmup_epochs=1, loss_weight=0.6)


def _batch(step):
    gen = torch.Generator().manual_seed(step)
    return torch.randn(len(LABELS), 8, generator=gen), torch.tensor(LABELS)


def _run(module, set_epoch, step, lo, hi):
    """One training step on rows lo:hi; returns what the test compares."""
    epoch = STEPS[step][0]
    set_epoch(epoch)
    x, labels = _batch(step)
    x = x[lo:hi].clone().requires_grad_()
    out = module(x, labels[lo:hi])
    sum(out.values()).backward()
    return dict(losses=torch.stack(list(out.values())).detach(), x_grad=x.grad.clone())


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters()}


def _worker(rank, world, store, out_dir):
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        results = {}
        for bank in BANKS:
            loss = _build(bank)
            ddp = DistributedDataParallel(loss)
            steps = []
            for step, (_, n0, n1) in enumerate(STEPS):
                lo, hi = (0, n0) if rank == 0 else (n0, n0 + n1)
                ddp.zero_grad()
                res = _run(ddp, loss.set_epoch, step, lo, hi)
                state = {k: v.clone() for k, v in loss.state_dict().items()}
                res.update(grads=_grads(loss), state=state)
                steps.append(res)
            results[bank] = steps
        torch.save(results, osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_two_gloo_ranks_match_one_process(tmp_path):
    mp.spawn(_worker, args=(2, osp.join(tmp_path, 'store'), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(osp.join(tmp_path, f'rank{r}.pt')) for r in range(2)]
    for bank in BANKS:
        single = _build(bank)
        for step, (_, n0, n1) in enumerate(STEPS):
            single.zero_grad()
            ref = _run(single, single.set_epoch, step, 0, n0 + n1)
            r0, r1 = ranks[0][bank][step], ranks[1][bank][step]
            assert_close(r0['losses'], ref['losses'])
            assert_close(r1['losses'], ref['losses'])
            assert (ref['losses'] > 0).all()
            # each rank holds the exact gradient of its own features
            assert_close(torch.cat([r0['x_grad'], r1['x_grad']]), ref['x_grad'])
            # DDP averages: every parameter gets 1/W of the single-process gradient
            for name, grad in _grads(single).items():
                assert_close(r0['grads'][name], grad / 2, msg=f'{bank} step {step} {name}')
                assert_close(r1['grads'][name], grad / 2)
            # prototype state: identical on both ranks and equal to one process
            for key, value in single.state_dict().items():
                assert torch.equal(r0['state'][key], r1['state'][key]), key
                assert_close(r0['state'][key], value, msg=key)
        if bank == 'EMAPrototypeBank':
            assert r0['state']['prototype_bank.initialized'].all()
