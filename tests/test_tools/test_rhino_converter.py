"""tools/model_converters/rhino_to_bhcl.py on the published RHINO oracle's checkpoint."""
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config
from mmrotate.registry import MODELS

from tests.conftest import REPO_ROOT
from tests.oracle import assert_same_detections_as_oracle
from tests.test_models.test_rhino_oracle import load_oracle, samples

TOOL = osp.join(REPO_ROOT, 'tools', 'model_converters', 'rhino_to_bhcl.py')


def converter():
    return runpy.run_path(TOOL)['main']


def write_published(tmp_path, with_cfg_in_ckpt, extra=None):
    oracle = load_oracle()
    # a module only the published fork has: the tool must not import it
    cfg_text = Config(dict(model=oracle['config'], custom_imports=dict(
        imports=['mmrotate_published_fork_only'], allow_failed_imports=False))).pretty_text
    ckpt = dict(state_dict={**oracle['state_dict'], **(extra or {})})
    if with_cfg_in_ckpt:
        ckpt['meta'] = dict(cfg=cfg_text)
    path = tmp_path / 'rhino.pth'
    torch.save(ckpt, path)
    cfg_path = tmp_path / 'rhino_published.py'
    cfg_path.write_text(cfg_text)
    return oracle, str(path), str(cfg_path)


@pytest.mark.parametrize('from_meta', [True, False])
def test_cli_converts_and_the_converted_model_reproduces_the_oracle(tmp_path, from_meta):
    oracle, ckpt, cfg_path = write_published(tmp_path, from_meta)
    args = [ckpt, str(tmp_path / 'out')] + ([] if from_meta else ['--config', cfg_path])
    assert converter()(args) == 0
    cfg = Config.fromfile(str(tmp_path / 'out' / 'rhino_model.py'))
    import bhcl  # noqa: F401
    model = MODELS.build(cfg.model)
    state = torch.load(tmp_path / 'out' / 'rhino.pth', weights_only=False)['state_dict']
    model.load_state_dict(state, strict=True)
    assert all(torch.equal(state[k], v) for k, v in oracle['state_dict'].items())
    model.eval()
    with torch.no_grad():
        results = model.predict(oracle['images'], samples(oracle), rescale=False)
    for i, (res, theirs) in enumerate(zip(results, oracle['inference']['detections'])):
        assert_same_detections_as_oracle(res.pred_instances, theirs, f'image {i}')


def test_cli_rejects_another_model_listing_the_keys(tmp_path, capsys):
    _, ckpt, _ = write_published(tmp_path, True,
                                 extra={'roi_head.mask_head.conv.weight': torch.zeros(1)})
    assert converter()([ckpt, str(tmp_path / 'out')]) == 1
    assert 'roi_head.mask_head.conv.weight' in capsys.readouterr().err
    assert not (tmp_path / 'out').exists()


DOTA_CLASSES = ['plane', 'baseball-diamond', 'bridge', 'ground-track-field', 'small-vehicle',
                'large-vehicle', 'ship', 'tennis-court', 'basketball-court', 'storage-tank',
                'soccer-ball-field', 'roundabout', 'harbor', 'swimming-pool', 'helicopter']


def test_cli_with_a_label_tree_records_the_class_order(tmp_path):
    from mmengine.runner import load_checkpoint

    from bhcl.utils.class_order import ClassOrderError
    _, ckpt, _ = write_published(tmp_path, True)
    tree_file = tmp_path / 'dota_tree.py'
    tree_file.write_text(f'label_tree = dict(paths={DOTA_CLASSES!r})\n')
    assert converter()([ckpt, str(tmp_path / 'out'), '--label-tree', str(tree_file)]) == 0
    written = torch.load(tmp_path / 'out' / 'rhino.pth', weights_only=False)
    assert written['meta']['class_order'] == DOTA_CLASSES
    cfg = Config.fromfile(str(tmp_path / 'out' / 'rhino_model.py'))
    assert list(cfg.model.label_tree['paths']) == DOTA_CLASSES
    import bhcl  # noqa: F401
    swapped = list(DOTA_CLASSES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    cfg.model.label_tree = dict(paths=swapped)
    cfg.model.backbone.init_cfg = None
    with pytest.raises(ClassOrderError, match='baseball-diamond'):
        load_checkpoint(MODELS.build(cfg.model), str(tmp_path / 'out' / 'rhino.pth'),
                        map_location='cpu')
