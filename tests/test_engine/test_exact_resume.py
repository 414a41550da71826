"""Exact resume: straight vs interrupted-and-resumed training give bit-identical state.

The BHCL smoke config (two views, EMA prototype banks, random flips) on the
tiny synthetic set, 3 epochs of 2 iterations: once straight, once stopped at
every epoch boundary and resumed with ``--resume``. Weights, prototype banks
(buffers of the state dict), optimizer state and the scheduler must be equal
bit for bit, with ``num_workers`` 0 and 2, and under 2-process gloo training.
The run stopped after epoch 1 is the straight run's own epoch-1 checkpoint (a
job stopped there leaves just that), so each case trains one fresh run less.
"""
import os
import os.path as osp
import shutil

import pytest

from tests.conftest import CONFIG_DIR, smoke_overrides
from tests.training import load_checkpoint, max_difference, train_process

BHCL_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                      'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')
EPOCHS = 3


def _options(data_root, max_epochs, num_workers):
    opts = smoke_overrides(data_root, max_epochs=max_epochs, two_view=True)
    opts.update({
        'train_dataloader.num_workers': num_workers,
        'train_dataloader.batch_size': 4,  # 8 images -> 2 iterations of 8 views
        'train_cfg.val_interval': 100,  # validation does not touch the training streams
        'randomness.deterministic': True,
        'default_hooks.checkpoint.max_keep_ckpts': -1,
    })
    if num_workers:
        opts['train_dataloader.persistent_workers'] = False
    return opts


def _train(config, data_root, work_dir, max_epochs, num_workers, resume, nproc=1):
    """Train in fresh processes (as a user resuming a job would)."""
    options = _options(data_root, max_epochs, num_workers)
    if nproc > 1:
        options['train_dataloader.batch_size'] = 2  # per process: 2 iterations of 2 x 2 views
    train_process(config, work_dir, options, resume=resume, nproc=nproc)


def _load(work_dir, epoch):
    return load_checkpoint(work_dir, f'epoch_{epoch}.pth')


def stopped_after_first_epoch(straight, cut):
    """The work dir of a job stopped after epoch 1: the straight run's checkpoint."""
    os.makedirs(cut)
    shutil.copy(osp.join(straight, 'epoch_1.pth'), cut)
    with open(osp.join(cut, 'last_checkpoint'), 'w') as f:
        f.write(osp.join(cut, 'epoch_1.pth'))


def _straight_and_resumed(data_root, tmp_path, num_workers, config=BHCL_SMOKE):
    straight = str(tmp_path / 'straight')
    _train(config, data_root, straight, EPOCHS, num_workers, resume=False)
    cut = str(tmp_path / 'cut')
    stopped_after_first_epoch(straight, cut)
    for epoch in range(2, EPOCHS + 1):  # stop at every later epoch boundary
        _train(config, data_root, cut, epoch, num_workers, resume=True)
    return [max_difference(_load(straight, e), _load(cut, e)) for e in range(2, EPOCHS + 1)]


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 2])
def test_resume_at_every_epoch_boundary_is_bit_exact(tiny_synthetic, tmp_path, num_workers):
    diffs = _straight_and_resumed(tiny_synthetic, tmp_path, num_workers)
    assert diffs == [0.0] * (EPOCHS - 1), f'largest difference per epoch after the first: {diffs}'
    banks = _load(str(tmp_path / 'cut'), EPOCHS)['state_dict']
    assert 'hierarchy.loss_hcl.0.prototype_bank.prototypes' in banks


@pytest.mark.slow
def test_without_the_seed_hook_resume_diverges(tiny_synthetic, tmp_path):
    """The check above can fail: mmengine alone (its own CheckpointHook, which keeps no
    random state, and no EpochSeedHook) resumes a different experiment."""
    config = tmp_path / 'no_seed_hook.py'
    config.write_text(f'_base_ = [{BHCL_SMOKE!r}]\n'
                      "custom_hooks = [dict(type='mmdet.SetEpochInfoHook')]\n"
                      "default_hooks = dict(checkpoint=dict(type='CheckpointHook'))\n")
    diffs = _straight_and_resumed(tiny_synthetic, tmp_path, 0, config=str(config))
    assert diffs[-1] > 0.0


@pytest.mark.slow
def test_resume_is_bit_exact_under_two_process_gloo(tiny_synthetic, tmp_path):
    straight, cut = str(tmp_path / 'straight'), str(tmp_path / 'cut')
    _train(BHCL_SMOKE, tiny_synthetic, straight, 2, 0, resume=False, nproc=2)
    stopped_after_first_epoch(straight, cut)
    _train(BHCL_SMOKE, tiny_synthetic, cut, 2, 0, resume=True, nproc=2)
    assert max_difference(_load(straight, 2), _load(cut, 2)) == 0.0
