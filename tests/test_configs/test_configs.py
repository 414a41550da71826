"""Every config loads; every model config builds; dataset configs match their tree."""
import glob
import os.path as osp

import pytest

import bhcl  # noqa: F401
from tests.conftest import CONFIG_DIR

ALL = sorted(glob.glob(osp.join(CONFIG_DIR, '**', '*.py'), recursive=True))
MODEL_CONFIGS = [c for c in ALL if '_base_' not in c]


def rel(path):
    return osp.relpath(path, CONFIG_DIR)


@pytest.mark.parametrize('path', ALL, ids=rel)
def test_config_loads(path):
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    assert 'work_dir' not in cfg, 'configs must not set work_dir'
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(key) is not None:  # None: no such loop (e.g. pre-training)
            root = cfg[key].dataset.get('data_root', '') or ''
            assert not osp.isabs(root), f'{key}: absolute data_root {root!r}'


def strip_init_cfg(cfg):
    if isinstance(cfg, dict):
        cfg.pop('init_cfg', None)
        for v in cfg.values():
            strip_init_cfg(v)
    elif isinstance(cfg, list):
        for v in cfg:
            strip_init_cfg(v)


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=rel)
def test_model_builds(path):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    cfg = Config.fromfile(path)
    init_default_scope(cfg.get('default_scope', 'mmrotate'))
    model_cfg = cfg.model.to_dict() if hasattr(cfg.model, 'to_dict') else dict(cfg.model)
    strip_init_cfg(model_cfg)
    model = MODELS.build(model_cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    tree_classes = cfg.train_dataloader.dataset.get('label_tree')
    if tree_classes is not None and hasattr(model, 'bbox_head'):
        from bhcl.structures import LabelTree
        assert model.bbox_head.num_classes == LabelTree.from_config(tree_classes).num_classes


@pytest.mark.parametrize('path', MODEL_CONFIGS, ids=rel)
def test_training_configs_resume_exactly(path):
    """Every training config re-seeds per epoch and seeds its workers from it
    (EpochSeedHook, epoch_worker_init, no persistent training workers), and
    checkpoints with the data position and random state (PreemptibleCheckpointHook)."""
    from mmengine.config import Config
    cfg = Config.fromfile(path)
    if 'train_dataloader' not in cfg:
        return
    assert 'EpochSeedHook' in [h['type'] for h in cfg.get('custom_hooks', [])]
    assert cfg.default_hooks.checkpoint.type == 'PreemptibleCheckpointHook'
    loader = cfg.train_dataloader
    assert loader.get('worker_init_fn', {}).get('type') == 'epoch_worker_init'
    assert not (loader.get('num_workers', 0) and loader.get('persistent_workers', False))
