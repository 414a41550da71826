"""bhcl.utils.dist: no-ops in one process; gather/broadcast over two gloo ranks."""
import datetime
import os.path as osp

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.testing import assert_close

from bhcl.utils.dist import (all_gather_cat, broadcast_, get_rank, get_world_size,
                             is_distributed, scale_grad)

SIZES = [(3, 5), (0, 4), (2, 0)]  # rows per rank, unequal and empty counts included


def test_single_process_is_a_no_op():
    x = torch.randn(4, 3, requires_grad=True)
    y = torch.arange(4)
    gx, gy = all_gather_cat(x, y)
    assert gx is x and gy is y
    assert all_gather_cat() == ()
    t = torch.ones(2)
    assert broadcast_(t) is t
    assert (get_world_size(), get_rank(), is_distributed()) == (1, 0, False)


def test_scale_grad():
    x = torch.randn(3, requires_grad=True)
    y = scale_grad(x, 0.25)
    assert_close(y, x)
    (y * torch.tensor([1., 2., 3.])).sum().backward()
    assert_close(x.grad, torch.tensor([0.25, 0.5, 0.75]))
    assert scale_grad(x, 1.0) is x


def _global(n0, n1):
    gen = torch.Generator().manual_seed(n0 * 10 + n1)
    return torch.randn(n0 + n1, 3, generator=gen), torch.randn(n0 + n1, 3, generator=gen)


def _worker(rank, world, store):
    dist.init_process_group('gloo', init_method=f'file://{store}', rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    try:
        assert (get_world_size(), get_rank(), is_distributed()) == (2, rank, True)
        for n0, n1 in SIZES:
            full, weight = _global(n0, n1)
            lo, hi = (0, n0) if rank == 0 else (n0, n0 + n1)
            local = full[lo:hi].clone().requires_grad_()
            labels = torch.arange(lo, hi)
            gathered, glabels = all_gather_cat(local, labels)
            assert_close(gathered, full)
            assert_close(glabels, torch.arange(n0 + n1))
            (gathered * weight).sum().backward()
            # gradient reaches the local slice only, unscaled
            assert_close(local.grad, weight[lo:hi])
        t = torch.full((3, ), float(rank + 1))
        broadcast_(t)
        assert_close(t, torch.ones(3))
        with pytest.raises(ValueError, match='leading size'):
            all_gather_cat(torch.zeros(2), torch.zeros(3))
    finally:
        dist.destroy_process_group()


@pytest.mark.dist
def test_all_gather_cat_two_gloo_ranks(tmp_path):
    mp.spawn(_worker, args=(2, osp.join(tmp_path, 'store')), nprocs=2, join=True)
