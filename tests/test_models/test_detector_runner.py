"""The BHCL smoke config through the mmengine Runner: train, validate, save, resume."""
import os.path as osp
import sys

import pytest
import torch

from tests.conftest import CONFIG_DIR, REPO_ROOT, smoke_overrides

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import train as train_tool  # noqa: E402

BHCL_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                      'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')


def cfg_options(data_root, **extra):
    opts = smoke_overrides(data_root, two_view=True)
    opts.update(extra)
    return [f'{k}={v}' for k, v in opts.items()]


@pytest.mark.slow
def test_bhcl_smoke_trains_validates_saves_and_resumes(tiny_synthetic, tmp_path):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Record(Hook):
        def before_train(self, runner):
            self.start = (runner.iter, runner.epoch)
            model = runner.model
            self.bank = [m.prototype_bank.prototypes.clone() for m in model.hierarchy.loss_hcl]

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.outputs = outputs
            self.views = len(data_batch['inputs'])
            self.epochs = [m.epoch for m in runner.model.hierarchy.loss_hcl]

    work = str(tmp_path / 'work')
    args = train_tool.parse_args([BHCL_SMOKE, '--work-dir', work, '--cfg-options',
                                  *cfg_options(tiny_synthetic)])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert runner.iter == 4 and runner.epoch == 1  # 8 images, 2 per batch (4 views)
    assert rec.epochs == [0, 0] and rec.views == 4
    assert {'s0.loss_hcl_lv1', 's1.loss_hcl_lv2', 'loss'} <= set(rec.outputs)
    assert all(torch.isfinite(v) for v in rec.outputs.values())
    assert any(k.endswith('dota/mAP') for k in runner.message_hub.log_scalars)
    saved = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    bank_key = 'hierarchy.loss_hcl.0.prototype_bank.prototypes'
    assert bank_key in saved['state_dict']

    args = train_tool.parse_args([BHCL_SMOKE, '--work-dir', work, '--resume', '--cfg-options',
                                  *cfg_options(tiny_synthetic, **{'train_cfg.max_epochs': 2})])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert rec.start == (4, 1)
    torch.testing.assert_close(rec.bank[0], saved['state_dict'][bank_key])
    assert rec.epochs == [1, 1]  # past the warm-up after resume
    assert runner.iter == 8 and runner.epoch == 2


CQ_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                    'cq-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py')


@pytest.mark.slow
def test_category_query_smoke_trains_validates_and_resumes(tiny_synthetic, tmp_path):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Record(Hook):
        def before_train(self, runner):
            self.start = runner.iter
            self.queries = runner.model.hierarchy.category_queries.queries.detach().clone()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.outputs = outputs

    work = str(tmp_path / 'work')
    args = train_tool.parse_args([CQ_SMOKE, '--work-dir', work, '--cfg-options',
                                  *cfg_options(tiny_synthetic)])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert {'loss_presence', 's1.loss_cls', 's1.loss_hcl_lv2'} <= set(rec.outputs)
    assert all(torch.isfinite(v) for v in rec.outputs.values())
    assert any(k.endswith('dota/leaf_mAP') for k in runner.message_hub.log_scalars)
    saved = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=False)

    args = train_tool.parse_args([CQ_SMOKE, '--work-dir', work, '--resume', '--cfg-options',
                                  *cfg_options(tiny_synthetic, **{'train_cfg.max_epochs': 2})])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert rec.start == 4 and runner.epoch == 2
    torch.testing.assert_close(rec.queries, saved['state_dict']['hierarchy.category_queries.queries'])


RHINO_BHCL_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                            'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py')
RHINO_CQ_SMOKE = osp.join(CONFIG_DIR, 'synthetic',
                          'cq-bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py')


@pytest.mark.slow
@pytest.mark.parametrize('config', [RHINO_BHCL_SMOKE, RHINO_CQ_SMOKE], ids=['bhcl', 'cq-bhcl'])
def test_rhino_bhcl_smoke_trains_validates_saves_and_resumes(tiny_synthetic, tmp_path, config):
    from mmengine.hooks import Hook
    from mmengine.runner import Runner

    class Record(Hook):
        def before_train(self, runner):
            self.start = runner.iter
            self.bank = runner.model.hierarchy.loss_hcl[-1].prototype_bank.prototypes.clone()

        def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
            self.outputs = outputs
            self.views = len(data_batch['inputs'])

    work = str(tmp_path / 'work')
    args = train_tool.parse_args([config, '--work-dir', work, '--cfg-options',
                                  *cfg_options(tiny_synthetic)])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert rec.views == 4
    assert {'s1.loss_cls', 's1.loss_iou', 'enc_loss_bbox', 's1.dn_loss_iou', 's1.loss_hcl_lv1',
            's0.loss_hcl_lv2'} <= set(rec.outputs)
    assert ('loss_presence' in rec.outputs) == (config == RHINO_CQ_SMOKE)
    assert all(torch.isfinite(v) for v in rec.outputs.values())
    assert any(k.endswith('dota/leaf_mAP') for k in runner.message_hub.log_scalars)
    saved = torch.load(osp.join(work, 'epoch_1.pth'), map_location='cpu', weights_only=False)
    bank_key = 'hierarchy.loss_hcl.1.prototype_bank.prototypes'
    assert bank_key in saved['state_dict']

    args = train_tool.parse_args([config, '--work-dir', work, '--resume',
                                  '--cfg-options',
                                  *cfg_options(tiny_synthetic, **{'train_cfg.max_epochs': 2})])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    rec = Record()
    runner.register_hook(rec)
    runner.train()
    assert rec.start == 4 and runner.epoch == 2
    torch.testing.assert_close(rec.bank, saved['state_dict'][bank_key])
