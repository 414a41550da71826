"""SimCLR backbone pre-training (onedl-mmpretrain) -> exported backbone -> detector init."""
import os.path as osp
import sys

import pytest
import torch

from tests.conftest import CONFIG_DIR, REPO_ROOT, SMOKE_CONFIG

SIMCLR = osp.join(CONFIG_DIR, 'simclr', 'simclr_resnet18_1xb32-coslr-200e_synthetic.py')
sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
sys.path.insert(0, osp.join(REPO_ROOT, 'tools', 'model_converters'))


def test_tiles_config_has_the_simclr_defaults():
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(CONFIG_DIR, 'simclr', 'simclr_resnet50_4xb64-coslr-200e_tiles.py'))
    assert cfg.model.type == 'SimCLR' and cfg.model.head.temperature == 0.1
    assert cfg.model.backbone.depth == 50 and cfg.optim_wrapper.optimizer.type == 'LARS'
    views = cfg.train_dataloader.dataset.pipeline[1]
    assert views.type == 'MultiView' and views.num_views == 2
    steps = [t.type for t in views.transforms[0]]
    assert steps == ['RandomResizedCrop', 'RandomFlip', 'RandomApply', 'RandomGrayscale',
                     'GaussianBlur']


def test_export_rejects_a_checkpoint_without_backbone(tmp_path):
    import simclr_to_backbone
    with pytest.raises(ValueError, match='no backbone'):
        simclr_to_backbone.backbone_state_dict({'state_dict': {'neck.fc.weight': 0}}, 'x.pth')


@pytest.mark.slow
def test_simclr_pretraining_exports_a_backbone_the_detector_loads(tiny_synthetic, tmp_path):
    import simclr_to_backbone
    import train as train_tool
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from mmrotate.registry import MODELS

    work = tmp_path / 'simclr'
    args = train_tool.parse_args([
        SIMCLR, '--work-dir', str(work), '--cfg-options',
        f'train_dataloader.dataset.data_root={tiny_synthetic}', 'train_dataloader.batch_size=4',
        'train_cfg.max_epochs=1', 'default_hooks.logger.interval=1', 'randomness.seed=0'])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    before = {k: v.clone() for k, v in runner.model.backbone.state_dict().items()}
    runner.train()
    assert runner.iter == 2  # 8 unlabelled images, 4 per batch, 2 views each
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert loss == loss and loss > 0  # finite NT-Xent loss
    after = runner.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)

    out = tmp_path / 'r18_simclr.pth'
    simclr_to_backbone.main([str(work / 'epoch_1.pth'), str(out)])
    exported = torch.load(out, map_location='cpu', weights_only=False)['state_dict']

    init_default_scope('mmrotate')
    cfg = Config.fromfile(SMOKE_CONFIG).model
    cfg.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(out))
    detector = MODELS.build(cfg)
    detector.init_weights()
    loaded = detector.backbone.state_dict()
    assert set(loaded) == set(exported)  # no missing or unexpected backbone keys
    for k, v in exported.items():
        assert torch.equal(loaded[k], v), k
