"""tools/model_converters/orientedformer_to_bhcl.py on the oracle's published checkpoints."""
import os.path as osp
import runpy

import pytest
import torch
from mmengine.config import Config
from mmrotate.registry import MODELS

from tests.conftest import REPO_ROOT
from tests.oracle import assert_close
from tests.test_models.test_published_oracle import load_oracle

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


# ------------------------------------------------------ as a user runs it
REPO_CONFIG = osp.join(REPO_ROOT, 'configs', 'bhcl',
                       'bhcl-decoupled_orientedformer-r50_4xb2-72e_shiprs.py')
# the published package, which a bhcl user does not have
PUBLISHED_IMPORTS = dict(imports=['projects.BHCL.models', 'projects.BHCL.datasets'],
                         allow_failed_imports=False)
# what the oracle shrinks (its .md); the rest of the repo config stays as it is
SIZE_KEYS = ('backbone', 'neck', 'query_head', 'decoder', 'test_cfg')
HCL_SIZE_KEYS = ('in_channels', 'hidden_channels', 'out_channels')


def detections(model, oracle):
    """Per image (labels, scores, boxes) sorted by score, as the oracle stores them."""
    from tests.test_models.test_published_oracle import samples
    model.eval()
    with torch.no_grad():
        results = model.predict(oracle['images'], samples(oracle), rescale=False)
    out = []
    for res in results:
        pred = res.pred_instances
        order = torch.argsort(pred.scores, descending=True, stable=True)
        boxes = pred.bboxes.tensor if hasattr(pred.bboxes, 'tensor') else pred.bboxes
        out.append((pred.labels[order], pred.scores[order], boxes[order]))
    return out


def compare_with_oracle(ours, theirs_all, what):
    """Assert equal labels and close scores / boxes; return the figures."""
    score = box = 0.0
    agree = total = 0
    for i, ((labels, scores, boxes), theirs) in enumerate(zip(ours, theirs_all)):
        agree += int((labels == theirs['labels']).sum()) if labels.shape == theirs[
            'labels'].shape else 0
        total += len(theirs['labels'])
        assert torch.equal(labels, theirs['labels']), f'{what}: image {i} labels'
        assert_close(scores, theirs['scores'], f'{what}: image {i} scores')
        assert_close(boxes, theirs['bboxes'], f'{what}: image {i} boxes')
        score = max(score, float((scores.double() - theirs['scores'].double()).abs().max()))
        box = max(box, float((boxes.double() - theirs['bboxes'].double()).abs().max()))
    return dict(max_score_diff=score, max_box_diff=box, labels_equal=f'{agree}/{total}')


def repo_config_at_oracle_size(converted_model: dict) -> Config:
    """The repo's paper config with only the oracle's smaller sizes put in."""
    cfg = Config.fromfile(REPO_CONFIG)
    for key in SIZE_KEYS:
        cfg.model[key] = converted_model[key]
    cfg.model.loss_hcl.update({k: converted_model['loss_hcl'][k] for k in HCL_SIZE_KEYS})
    return cfg


def build_model(model_cfg):
    from mmengine.registry import init_default_scope
    init_default_scope('mmrotate')
    model_cfg = Config(dict(model=model_cfg)).model
    model_cfg.backbone.init_cfg = None
    return MODELS.build(model_cfg)


def write_published_style(tmp_path, case='decoupled_bhcl'):
    """A checkpoint as the published code saves it: its weights and its config text,
    whose custom_imports name the published package."""
    oracle = load_oracle('shiprs')
    published = oracle['cases'][case]
    text = Config(dict(custom_imports=PUBLISHED_IMPORTS, model=published['config'])).pretty_text
    path = tmp_path / f'published_{case}.pth'
    torch.save(dict(state_dict=published['state_dict'], meta=dict(cfg=text)), path)
    return oracle, published, str(path)


def write_tiny_shiprs(root, oracle, mean, std):
    """val/images + val/labelTxt with the oracle's first image (de-normalised)."""
    import cv2
    import numpy as np
    (root / 'val' / 'images').mkdir(parents=True)
    (root / 'val' / 'labelTxt').mkdir(parents=True)
    img = oracle['images'][0] * torch.tensor(std)[:, None, None] + \
        torch.tensor(mean)[:, None, None]
    img = img.clamp(0, 255).round().byte().permute(1, 2, 0).numpy()
    cv2.imwrite(str(root / 'val' / 'images' / 'P0001.png'), np.ascontiguousarray(img[..., ::-1]))
    (root / 'val' / 'labelTxt' / 'P0001.txt').write_text(
        '10 10 60 10 60 30 10 30 Destroyer 0\n70 70 120 70 120 90 70 90 Cargo 0\n')


@pytest.mark.slow
def test_published_checkpoint_converts_as_a_user_runs_it(tmp_path):
    import importlib.util
    import os
    import subprocess
    import sys

    from mmengine.runner import load_checkpoint

    from bhcl.utils.class_order import ClassOrderError, recorded_class_order
    assert importlib.util.find_spec('projects') is None  # the published package is absent
    oracle, published, ckpt = write_published_style(tmp_path)
    out = tmp_path / 'converted'
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    run = subprocess.run([sys.executable, TOOL, ckpt, str(out)], env=env, cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    name = 'published_decoupled_bhcl'
    converted_ckpt, model_py = str(out / f'{name}.pth'), str(out / f'{name}_model.py')
    saved = torch.load(converted_ckpt, weights_only=False)
    order = [p[-1] for p in oracle['hierarchical_labels']]
    assert recorded_class_order(saved['state_dict']) == order
    assert saved['meta']['class_order'] == order

    figures = {}
    written = Config.fromfile(model_py)
    model = build_model(written.model)
    assert list(model.label_tree.classes) == order
    load_checkpoint(model, converted_ckpt, map_location='cpu', strict=True)
    theirs = published['inference']['detections']
    figures['written model config'] = compare_with_oracle(
        detections(model, oracle), theirs, 'written model config')

    repo = repo_config_at_oracle_size(written.model.to_dict())
    model = build_model(repo.model)
    load_checkpoint(model, converted_ckpt, map_location='cpu', strict=True)
    figures['repo config'] = compare_with_oracle(detections(model, oracle), theirs, 'repo config')
    print('\nconverted vs published detections:', figures)

    # a config whose tree has another order is refused, naming both orders
    swapped = repo_config_at_oracle_size(written.model.to_dict())
    paths = list(swapped.model.label_tree.paths)
    i, j = (order.index('Destroyer'), order.index('Frigate'))
    paths[i], paths[j] = paths[j], paths[i]
    swapped.model.label_tree.paths = paths
    with pytest.raises(ClassOrderError, match="index 5: checkpoint 'Destroyer'"):
        load_checkpoint(build_model(swapped.model), converted_ckpt, map_location='cpu')

    # tools/test.py on the converted checkpoint, the repo config at the oracle's size
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import test as test_tool
    prep = repo.model.data_preprocessor
    write_tiny_shiprs(tmp_path / 'data', oracle, prep.mean, prep.std)
    data = [f'test_dataloader.dataset.data_root={tmp_path / "data"}/',
            'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
            'test_dataloader.dataset.pipeline.1.scale=(128,128)']
    repo_file = tmp_path / 'repo_at_oracle_size.py'
    repo.dump(str(repo_file))
    preds = tmp_path / 'preds.pkl'
    metrics = test_tool.main([str(repo_file), converted_ckpt, '--work-dir',
                              str(tmp_path / 'work'), '--out', str(preds),
                              '--cfg-options', *data])
    assert metrics and preds.exists()
    swapped_file = tmp_path / 'swapped.py'
    swapped.dump(str(swapped_file))
    with pytest.raises(ClassOrderError, match='Frigate'):
        test_tool.main([str(swapped_file), converted_ckpt, '--work-dir', str(tmp_path / 'w2'),
                        '--cfg-options', *data])
