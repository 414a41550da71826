"""tools/model_converters/orientedformer_to_bhcl.py on the oracle's published checkpoints."""
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config
from mmrotate.registry import MODELS

from tests.conftest import REPO_ROOT
from tests.test_models.test_published_oracle import assert_close, load_oracle

TOOL = osp.join(REPO_ROOT, 'tools', 'model_converters', 'orientedformer_to_bhcl.py')


def converter():
    return runpy.run_path(TOOL)['main']


def write_published(tmp_path, dataset, case, with_cfg_in_ckpt):
    oracle = load_oracle(dataset)
    published = oracle['cases'][case]
    cfg_text = Config(dict(model=published['config'])).pretty_text
    ckpt = dict(state_dict=published['state_dict'])
    if with_cfg_in_ckpt:
        ckpt['meta'] = dict(cfg=cfg_text)
    path = tmp_path / f'{case}.pth'
    torch.save(ckpt, path)
    cfg_path = tmp_path / f'{case}_published.py'
    cfg_path.write_text(cfg_text)
    return oracle, published, str(path), str(cfg_path)


@pytest.mark.parametrize('case,from_meta', [('decoupled_bhcl', True), ('baseline', False)])
def test_cli_converts_and_the_converted_model_reproduces_the_oracle(tmp_path, case, from_meta):
    oracle, published, ckpt, cfg_path = write_published(tmp_path, 'shiprs', case, from_meta)
    args = [ckpt, str(tmp_path / 'out')]
    if not from_meta:
        args += ['--config', cfg_path,
                 '--label-tree', osp.join(REPO_ROOT, 'configs', '_base_', 'datasets',
                                          'shiprs_label_tree.py')]
    assert converter()(args) == 0
    cfg = Config.fromfile(str(tmp_path / 'out' / f'{case}_model.py'))
    cfg.model.backbone.init_cfg = None
    import bhcl  # noqa: F401
    model = MODELS.build(cfg.model)
    state = torch.load(tmp_path / 'out' / f'{case}.pth', weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    model.eval()
    with torch.no_grad():
        _, stages = model.forward_stages(oracle['images'])
    for ours, theirs in zip(stages, published['inference']['stages']):
        assert_close(ours.logits, theirs['cls_score'], 'logits')
        assert_close(ours.boxes, theirs['bboxes'], 'boxes')


def test_cli_rejects_another_model_and_a_missing_tree(tmp_path, capsys):
    oracle, published, ckpt, cfg_path = write_published(tmp_path, 'shiprs', 'baseline', True)
    # the baseline config carries no tree: the tool asks for one
    assert converter()([ckpt, str(tmp_path / 'out')]) == 1
    assert "label tree" in capsys.readouterr().err
    other = tmp_path / 'other.pth'
    torch.save(dict(state_dict={'roi_head.mask_head.conv.weight': torch.zeros(1),
                                **published['state_dict']},
                    meta=dict(cfg=Config(dict(model=published['config'])).pretty_text)), other)
    tree = osp.join(REPO_ROOT, 'configs', '_base_', 'datasets', 'shiprs_label_tree.py')
    assert converter()([str(other), str(tmp_path / 'out2'), '--label-tree', tree]) == 1
    err = capsys.readouterr().err
    assert 'roi_head.mask_head.conv.weight' in err
    assert not (tmp_path / 'out2').exists()
