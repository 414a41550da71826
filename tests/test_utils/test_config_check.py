"""--cfg-options keys are checked against the config before anything is built;
--amp stops on a machine without CUDA."""
import copy
import os.path as osp
import sys

import pytest
from mmengine.config import Config

from tests.conftest import BHCL_SMOKE_CONFIG, CONFIG_DIR, REPO_ROOT, SMOKE_CONFIG, smoke_overrides

sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
import test as test_tool  # noqa: E402
import train as train_tool  # noqa: E402

from bhcl.utils.config_check import (ConfigKeyError, _paths, amp_device_problem,  # noqa: E402
                                     apply_cfg_options, key_problem)

RHINO_SMOKE_CONFIG = osp.join(CONFIG_DIR, 'synthetic',
                              'bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py')


def exit_message(tool, argv) -> str:
    with pytest.raises(SystemExit) as info:
        tool.build_cfg(tool.parse_args(argv))
    return str(info.value.code)


def test_train_typo_in_top_level_key_stops_with_suggestion():
    msg = exit_message(train_tool, [SMOKE_CONFIG, '--cfg-options', 'trian_cfg.max_epochs=1'])
    assert msg == ("error: --cfg-options trian_cfg.max_epochs: the config has no key 'trian_cfg'; "
                   'did you mean train_cfg.max_epochs? (to add a new key on purpose, write '
                   '+trian_cfg.max_epochs=...)')


def test_test_typo_in_model_test_cfg_stops_with_suggestion():
    msg = exit_message(test_tool, [BHCL_SMOKE_CONFIG, 'x.pth', '--cfg-options',
                                   'model.test_cfg.internal_node=all'])
    assert msg.startswith("error: --cfg-options model.test_cfg.internal_node: model.test_cfg has "
                          "no key 'internal_node'; did you mean model.test_cfg.internal_nodes")


def test_every_unknown_key_is_reported_and_nothing_is_merged():
    cfg = Config.fromfile(SMOKE_CONFIG)
    before = copy.deepcopy(cfg.to_dict())
    with pytest.raises(ConfigKeyError) as info:
        apply_cfg_options(cfg, {'train_cfg.max_epochs': 1, 'trian_cfg.val_interval': 1,
                                'model.backbone.deth': 50})
    lines = str(info.value).splitlines()
    assert len(lines) == 2
    assert "no key 'trian_cfg'; did you mean train_cfg.val_interval?" in lines[0]
    assert "model.backbone has no key 'deth'; did you mean model.backbone.depth?" in lines[1]
    assert cfg.to_dict() == before


def test_legitimate_new_keys_are_accepted():
    cfg = Config.fromfile(BHCL_SMOKE_CONFIG)
    assert 'internal_nodes' not in cfg.model.test_cfg
    new = {
        'model.test_cfg.internal_nodes': 'all',          # declared by the detector
        'model.backbone.with_cp': True,                  # a ResNet argument left at its default
        'randomness.diff_rank_seed': True,               # read by the Runner's seeding
        'train_dataloader.pin_memory': True,             # a DataLoader argument
        'default_hooks.checkpoint.priority': 'LOW',      # read by Runner.register_hook
        'optim_wrapper.paramwise_cfg.norm_decay_mult': 0.0,   # read by the constructor
        'env_cfg.resource_limit': 8192,
    }
    for key in new:
        assert key not in set(_paths(cfg.to_dict())), key
    apply_cfg_options(cfg, new)
    assert cfg.model.test_cfg.internal_nodes == 'all'
    assert cfg.model.backbone.with_cp is True
    assert cfg.optim_wrapper.paramwise_cfg.norm_decay_mult == 0.0
    assert cfg.randomness.diff_rank_seed is True


def test_runner_cfg_keys_are_accepted_and_config_variables_are_not():
    cfg = Config.fromfile(SMOKE_CONFIG)
    assert key_problem(cfg, 'sync_bn') is None          # read by the Runner from its cfg
    assert key_problem(cfg, 'find_unused_parameters') is None
    assert key_problem(cfg, 'max_epochs') == (
        '--cfg-options max_epochs: max_epochs is a variable of the config file, already copied '
        'into train_cfg.max_epochs when the file was read, so setting it changes nothing; set '
        'train_cfg.max_epochs instead (or write +max_epochs=... to set the variable anyway)')
    assert key_problem(cfg, 'data_root').startswith(
        '--cfg-options data_root: data_root is a variable of the config file, already copied '
        'into train_dataloader.dataset.data_root, val_dataloader.dataset.data_root, '
        'test_dataloader.dataset.data_root when the file was read')


def test_plus_prefix_adds_a_key_on_purpose():
    args = train_tool.parse_args([SMOKE_CONFIG, '--cfg-options', '+my_note=hello',
                                  '+model.test_cfg.extra_key=1', 'train_cfg.max_epochs=2'])
    cfg = train_tool.build_cfg(args)
    assert cfg.my_note == 'hello' and cfg.model.test_cfg.extra_key == 1
    assert cfg.train_cfg.max_epochs == 2


def test_list_indices_and_non_dict_values():
    cfg = Config.fromfile(SMOKE_CONFIG)
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert key_problem(cfg, 'train_dataloader.dataset.pipeline.0.type') is None
    msg = key_problem(cfg, f'train_dataloader.dataset.pipeline.{len(pipeline)}.type')
    assert msg == (f'--cfg-options train_dataloader.dataset.pipeline.{len(pipeline)}.type: '
                   f'train_dataloader.dataset.pipeline is a list of {len(pipeline)} items; '
                   f"index it with 0..{len(pipeline) - 1}, not '{len(pipeline)}'")
    msg = key_problem(cfg, 'train_cfg.max_epochs.value')
    assert msg.startswith('--cfg-options train_cfg.max_epochs.value: train_cfg.max_epochs is 12 '
                          "in this config, not a dict, so it has no key 'value'")


def test_untyped_dict_with_undeclared_reader_is_strict():
    cfg = Config.fromfile(BHCL_SMOKE_CONFIG)
    msg = key_problem(cfg, 'model.decoder.num_layer')
    assert "model.decoder has no key 'num_layer'; did you mean model.decoder.num_layers?" in msg


def test_rhino_declares_its_test_cfg():
    cfg = Config.fromfile(RHINO_SMOKE_CONFIG)
    assert key_problem(cfg, 'model.test_cfg.max_per_img') is None
    assert key_problem(cfg, 'model.test_cfg.internal_nodes') is None
    assert 'return_node_score' in key_problem(cfg, 'model.test_cfg.return_node_score')


def test_rhino_takes_the_label_tree_keys_at_the_model_as_orientedformer():
    cfg = Config.fromfile(RHINO_SMOKE_CONFIG)
    assert key_problem(cfg, 'model.loss_hcl') is None
    assert key_problem(cfg, 'model.classifier') is None
    assert 'model.bbox_head.loss_hcl' in key_problem(cfg, 'model.bbox_head.loss_hcl')


def test_retired_decoupled_flag_says_what_to_write():
    cfg = Config.fromfile(RHINO_SMOKE_CONFIG)
    msg = key_problem(cfg, 'model.decoder.decoupled')
    assert 'no longer an option' in msg
    assert 'model.decoder.layer_cfg.type=DecoupledRotatedDecoderLayer' in msg
    assert key_problem(cfg, 'model.decoder.layer_cfg.type') is None
    msg = key_problem(cfg, 'model.bbox_head.decoupled')
    assert 'no longer an option' in msg and 'remove bbox_head.decoupled' in msg
    assert 'model.decoder.layer_cfg.type=DecoupledRotatedDecoderLayer' in msg


@pytest.mark.parametrize('config', [
    SMOKE_CONFIG, BHCL_SMOKE_CONFIG, RHINO_SMOKE_CONFIG,
    osp.join(CONFIG_DIR, 'mutdet', 'mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py'),
    osp.join(CONFIG_DIR, 'simclr', 'simclr_resnet18_1xb32-coslr-200e_synthetic.py')])
def test_keys_the_configs_set_in_typed_dicts_are_accepted_as_new(config):
    """Each key a config sets in a dict with a ``type`` is a keyword argument the
    checker finds for that type: removed from the config, setting it is legal."""
    cfg = Config.fromfile(config)
    full = cfg.to_dict()
    rejected = []
    for path in _paths(full):
        *parent_path, last = path.split('.')
        parent = full
        for part in parent_path:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        if not isinstance(parent, dict) or 'type' not in parent or last == 'type':
            continue
        if parent_path and parent_path[0] in ('vis_backends', ):   # a config variable
            continue
        pruned = copy.deepcopy(full)
        holder = pruned
        for part in parent_path:
            holder = holder[int(part)] if isinstance(holder, list) else holder[part]
        del holder[last]
        if key_problem(pruned, path) is not None:
            rejected.append(path)
    assert rejected == []


def test_the_test_suites_overrides_pass_the_check(tmp_path):
    cfg = Config.fromfile(SMOKE_CONFIG)
    apply_cfg_options(cfg, smoke_overrides(str(tmp_path)))
    cfg = Config.fromfile(BHCL_SMOKE_CONFIG)
    apply_cfg_options(cfg, smoke_overrides(str(tmp_path), two_view=True))
    assert cfg.train_dataloader.dataset.dataset.pipeline[3].scale == (128, 128)


def test_amp_stops_before_the_runner_without_cuda(monkeypatch):
    import mmengine.device as device
    for name in ('is_cuda_available', 'is_npu_available', 'is_mlu_available',
                 'is_musa_available'):
        monkeypatch.setattr(device, name, lambda: False)
    msg = exit_message(train_tool, [SMOKE_CONFIG, '--amp'])
    assert msg == ('error: AMP (--amp, or optim_wrapper.type=AmpOptimWrapper) needs a CUDA GPU '
                   '(or an NPU, MLU or MUSA device) and none is available; drop --amp to train in '
                   'float32 on the CPU')
    msg = exit_message(train_tool, [SMOKE_CONFIG, '--cfg-options',
                                    'optim_wrapper.type=AmpOptimWrapper'])
    assert 'needs a CUDA GPU' in msg
    assert amp_device_problem(Config.fromfile(SMOKE_CONFIG)) is None   # no AMP asked


def test_amp_is_set_when_cuda_is_there(monkeypatch):
    import mmengine.device as device
    monkeypatch.setattr(device, 'is_cuda_available', lambda: True)
    cfg = train_tool.build_cfg(train_tool.parse_args([SMOKE_CONFIG, '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
