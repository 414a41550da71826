"""Exact resume: straight vs interrupted-and-resumed training give bit-identical state.

The BHCL smoke config (two views, EMA prototype banks, random flips) on the
tiny synthetic set, 3 epochs of 2 iterations: once straight, once stopped at
every epoch boundary and resumed with ``--resume``. Weights, prototype banks
(buffers of the state dict), optimizer state and the scheduler must be equal
bit for bit, with ``num_workers`` 0 and 2, and under 2-process gloo training.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from tests.conftest import CONFIG_DIR, REPO_ROOT, smoke_overrides

BHCL_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                      'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')
EPOCHS = 3


def _options(data_root, max_epochs, num_workers):
    opts = smoke_overrides(data_root, max_epochs=max_epochs)
    opts['train_dataloader.dataset.dataset.data_root'] = opts.pop(
        'train_dataloader.dataset.data_root')
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


def _train(config, data_root, work_dir, max_epochs, num_workers, resume):
    """Run tools/train.py in a fresh process (as a user resuming a job would)."""
    opts = _options(data_root, max_epochs, num_workers)
    cmd = [sys.executable, osp.join(REPO_ROOT, 'tools', 'train.py'), config,
           '--work-dir', work_dir, '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    if resume:
        cmd.append('--resume')
    env = dict(os.environ, PYTHONPATH=REPO_ROOT, OMP_NUM_THREADS='1')
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _load(work_dir, epoch):
    return torch.load(osp.join(work_dir, f'epoch_{epoch}.pth'), map_location='cpu',
                      weights_only=False)


def _flat(obj, prefix=''):
    """Every tensor and number of a nested checkpoint entry, by path."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flat(v, f'{prefix}.{k}'))
        return out
    if isinstance(obj, (list, tuple)):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flat(v, f'{prefix}.{i}'))
        return out
    if isinstance(obj, (int, float)):
        return {prefix: torch.tensor(obj)}
    return {}


def max_difference(a, b):
    """Largest absolute difference over weights, buffers, optimizer and
    scheduler state of two checkpoints (their keys must match)."""
    fa = _flat({k: a[k] for k in ('state_dict', 'optimizer', 'param_schedulers')})
    fb = _flat({k: b[k] for k in ('state_dict', 'optimizer', 'param_schedulers')})
    assert fa.keys() == fb.keys()
    return max(float((fa[k].double() - fb[k].double()).abs().max()) if fa[k].numel() else 0.0
               for k in fa)


def _straight_and_resumed(data_root, tmp_path, num_workers, config=BHCL_SMOKE):
    straight = str(tmp_path / 'straight')
    _train(config, data_root, straight, EPOCHS, num_workers, resume=False)
    cut = str(tmp_path / 'cut')
    for epoch in range(1, EPOCHS + 1):  # stop at every epoch boundary
        _train(config, data_root, cut, epoch, num_workers, resume=epoch > 1)
    return [max_difference(_load(straight, e), _load(cut, e)) for e in range(1, EPOCHS + 1)]


@pytest.mark.slow
@pytest.mark.parametrize('num_workers', [0, 2])
def test_resume_at_every_epoch_boundary_is_bit_exact(tiny_synthetic, tmp_path, num_workers):
    diffs = _straight_and_resumed(tiny_synthetic, tmp_path, num_workers)
    assert diffs == [0.0] * EPOCHS, f'largest difference per epoch: {diffs}'
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
    assert diffs[0] == 0.0 and diffs[-1] > 0.0


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _dist_train(data_root, work_dir, max_epochs, resume):
    opts = _options(data_root, max_epochs, 0)
    opts['train_dataloader.batch_size'] = 2  # per process: 2 iterations of 2 x 2 views
    cmd = ['bash', osp.join(REPO_ROOT, 'tools', 'dist_train.sh'), BHCL_SMOKE, '2',
           '--work-dir', work_dir, '--cfg-options'] + [f'{k}={v}' for k, v in opts.items()]
    if resume:
        cmd.append('--resume')
    env = dict(os.environ, OMP_NUM_THREADS='1', PORT=str(_free_port()))
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


@pytest.mark.slow
def test_resume_is_bit_exact_under_two_process_gloo(tiny_synthetic, tmp_path):
    straight, cut = str(tmp_path / 'straight'), str(tmp_path / 'cut')
    _dist_train(tiny_synthetic, straight, 2, resume=False)
    _dist_train(tiny_synthetic, cut, 1, resume=False)
    _dist_train(tiny_synthetic, cut, 2, resume=True)
    assert max_difference(_load(straight, 2), _load(cut, 2)) == 0.0
