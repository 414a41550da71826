"""Runner level: train a few iterations, validate, save, resume, test."""
import json
import os
import os.path as osp
import pickle
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from tests.conftest import REPO_ROOT, SMOKE_CONFIG, smoke_overrides
from tests.detections import assert_same_detections
from tests.training import free_port, train_process

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402


def cfg_options(data_root, **extra):
    opts = smoke_overrides(data_root)
    opts.update(extra)
    return [f'{k}={v}' for k, v in opts.items()]


def test_local_rank_spellings():
    for flag in ('--local-rank', '--local_rank'):
        args = train_tool.parse_args([SMOKE_CONFIG, flag, '0'])
        assert args.local_rank == 0
        args = test_tool.parse_args([SMOKE_CONFIG, 'x.pth', flag, '0'])
        assert args.local_rank == 0


def test_cli_overrides_and_resume_flags(tmp_path):
    args = train_tool.parse_args([SMOKE_CONFIG, '--work-dir', str(tmp_path), '--resume',
                                  '--cfg-options', 'train_cfg.max_epochs=3'])
    cfg = train_tool.build_cfg(args)
    assert cfg.work_dir == str(tmp_path) and cfg.resume is True and cfg.load_from is None
    assert cfg.train_cfg.max_epochs == 3
    cfg = train_tool.build_cfg(train_tool.parse_args([SMOKE_CONFIG, '--resume', 'a.pth']))
    assert cfg.load_from == 'a.pth' and cfg.work_dir.endswith(
        'orientedformer_r18_1xb4-12e_synthetic')
    cfg = train_tool.build_cfg(train_tool.parse_args([SMOKE_CONFIG, '--launcher', 'pytorch']))
    if not torch.cuda.is_available():
        assert cfg.env_cfg.dist_cfg.backend == 'gloo'


@pytest.mark.slow
def test_train_validate_save_resume_and_test(tiny_synthetic, tmp_path):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    work = str(tmp_path / 'work')
    args = train_tool.parse_args([SMOKE_CONFIG, '--work-dir', work, '--cfg-options',
                                  *cfg_options(tiny_synthetic)])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    runner.train()
    assert runner.iter == 4 and runner.epoch == 1   # 8 images, batch 2
    ckpt = osp.join(work, 'epoch_1.pth')
    assert osp.exists(ckpt)
    state = torch.load(ckpt, map_location='cpu', weights_only=False)
    assert {'message_hub', 'optimizer', 'meta', 'state_dict'} <= set(state)

    class RecordStart(Hook):
        def before_train(self, runner):
            self.start = (runner.iter, runner.epoch)

    args = train_tool.parse_args([SMOKE_CONFIG, '--work-dir', work, '--resume', '--cfg-options',
                                  *cfg_options(tiny_synthetic, **{'train_cfg.max_epochs': 2})])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = RecordStart()
    runner.register_hook(rec)
    runner.train()
    assert rec.start == (4, 1)
    assert runner.iter == 8 and runner.epoch == 2
    with open(osp.join(work, 'last_checkpoint')) as f:
        last = f.read().strip()
    assert last.endswith('epoch_2.pth')

    out = str(tmp_path / 'preds.pkl')
    metrics = test_tool.main([SMOKE_CONFIG, last, '--work-dir', str(tmp_path / 'test'),
                              '--out', out, '--cfg-options', *cfg_options(tiny_synthetic)])
    assert {'dota/leaf_mAP', 'dota/mAP', 'dota/lv1_mAP'} <= set(metrics)
    with open(osp.join(tmp_path / 'test', 'metrics.json')) as f:
        assert json.load(f)['dota/mAP'] == pytest.approx(metrics['dota/mAP'])
    with open(out, 'rb') as f:
        preds = pickle.load(f)
    assert len(preds) == 4 and 'pred_instances' in preds[0]


RHINO_BHCL_SMOKE = osp.join(REPO_ROOT, 'configs', 'synthetic',
                            'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py')


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize('config', [SMOKE_CONFIG, RHINO_BHCL_SMOKE],
                         ids=['orientedformer', 'rhino-bhcl'])
def test_dist_train_two_cpu_processes(tiny_synthetic, tmp_path, config):
    work = str(tmp_path / 'dist')
    # two views for RHINO-BHCL: the training set sits in the wrapper
    options = smoke_overrides(tiny_synthetic, two_view=config == RHINO_BHCL_SMOKE)
    log = train_process(config, work, {**options, 'train_cfg.val_interval': 100}, nproc=2)
    assert 'Distributed launcher: pytorch' in log or 'launcher: pytorch' in log
    assert "'backend': 'gloo'" in log or 'gloo' in log
    assert osp.exists(osp.join(work, 'epoch_1.pth'))
    # 8 images, 2 processes x batch 2 -> 2 iterations per epoch
    assert 'Epoch(train) [1][2/2]' in log

    # tools/dist_test.sh: 2 processes predict what one process predicts, image by image
    ckpt = osp.join(work, 'epoch_1.pth')
    dist_out = str(tmp_path / 'dist_preds.pkl')
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1')
    opts = [f'{k}={v}' for k, v in options.items()]
    cmd = ['bash', osp.join(REPO_ROOT, 'tools', 'dist_test.sh'), config, ckpt, '2',
           '--work-dir', str(tmp_path / 'dist_test'), '--out', dist_out, '--cfg-options', *opts]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert osp.exists(osp.join(tmp_path, 'dist_test', 'metrics.json'))
    one_out = str(tmp_path / 'one_preds.pkl')
    test_tool.main([config, ckpt, '--work-dir', str(tmp_path / 'one_test'), '--out', one_out,
                    '--cfg-options', *opts])
    preds = []
    for path in (dist_out, one_out):
        with open(path, 'rb') as f:
            preds.append({p['img_path']: p['pred_instances'] for p in pickle.load(f)})
    assert len(preds[0]) == 4 and all(len(p['scores']) > 0 for p in preds[0].values())
    # the same detections up to floating-point noise: 1 and 2 processes run convolutions with
    # other thread counts, so scores differ at 1e-6 and near-ties may swap at the top-k cut
    max_per_img = Config.fromfile(config).model.test_cfg.max_per_img
    assert_same_detections(preds[0], preds[1], max_per_img=max_per_img)
