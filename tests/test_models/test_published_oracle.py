"""bhcl's OrientedFormer / BHCL against the published model's own numbers.

The oracles (``../shared/reference/official_orientedformer_oracle*.pt``, see
their ``.md``) hold the published model's config, weights, input batch, every
intermediate output and every loss term, for the baseline and the decoupled +
BHCL model, on ShipRSImageNet's and FAIR1M's trees. A published config and
checkpoint go through :mod:`bhcl.models.published`; the converted bhcl model
must give the same numbers.
"""
import functools
import os
import os.path as osp

import pytest
import torch
from mmrotate.registry import MODELS

from bhcl.models.published import (PublishedModelError, convert_published_config,
                                   convert_published_state_dict, load_state_dict_strict)
from tests.conftest import REPO_ROOT
from tests.oracle import assert_close, assert_same_detections_as_oracle, image_samples

REFERENCE = os.environ.get('BHCL_REFERENCE_DIR',
                           osp.join(REPO_ROOT, '..', 'shared', 'reference'))
FILES = {'shiprs': 'official_orientedformer_oracle.pt',
         'fair1m': 'official_orientedformer_oracle_fair1m.pt'}
CASES = [(d, c) for d in FILES for c in ('baseline', 'decoupled_bhcl')]
RTOL_LOSS = 1e-4


@functools.lru_cache(maxsize=None)
def load_oracle(dataset: str) -> dict:
    path = osp.join(REFERENCE, FILES[dataset])
    if not osp.exists(path):
        if os.environ.get('CI'):
            pytest.fail(f'oracle {path} missing: CI must have the shared reference files')
        pytest.skip(f'oracle {path} not found (set BHCL_REFERENCE_DIR)')
    return torch.load(path, weights_only=False)


def build_converted(dataset: str, case: str):
    """The bhcl model converted from the oracle's published config and weights."""
    import bhcl  # noqa: F401  (registers the modules)
    oracle = load_oracle(dataset)
    published = oracle['cases'][case]
    cfg = convert_published_config(published['config'],
                                   label_tree=dict(paths=oracle['hierarchical_labels']))
    cfg['backbone']['init_cfg'] = None
    model = MODELS.build(cfg)
    load_state_dict_strict(model, convert_published_state_dict(published['state_dict']))
    return model, oracle, published


def samples(oracle: dict, published: dict = None):
    return image_samples(oracle['images'], published['gt'] if published is not None else None)


@pytest.mark.parametrize('dataset,case', CASES)
def test_inference_matches_published(dataset, case):
    model, oracle, published = build_converted(dataset, case)
    ref = published['inference']
    images = oracle['images']
    model.eval()
    with torch.no_grad():
        for i, (ours, theirs) in enumerate(zip(model.extract_feat(images), ref['neck'])):
            assert_close(ours, theirs, f'neck level {i}', rtol=0)
        head, stages = model.forward_stages(images)
        xyzrt, content = head['queries']
        assert_close(xyzrt, ref['rpn']['query_xyzrt'], 'selected query boxes (xyzrt)', rtol=0)
        assert_close(content, ref['rpn']['query_content'], 'selected query content', rtol=0)
        assert len(stages) == len(ref['stages'])
        for i, (ours, theirs) in enumerate(zip(stages, ref['stages'])):
            assert_close(ours.logits, theirs['cls_score'], f'stage {i} logits')
            assert_close(ours.xyzrt, theirs['query_xyzrt'], f'stage {i} xyzrt')
            assert_close(ours.boxes, theirs['bboxes'], f'stage {i} boxes')
        results = model.predict(images, samples(oracle), rescale=False)
    for i, (res, theirs) in enumerate(zip(results, ref['detections'])):
        assert_same_detections_as_oracle(res.pred_instances, theirs, f'image {i}')


def published_loss_name(name: str) -> str:
    """bhcl loss key -> the published key."""
    if name.startswith('dense'):
        prefix = 'rpn_aux_' if name.startswith('dense_aux') else 'rpn_'
        return prefix + name.split('.', 1)[1].replace('loss_iou', 'loss_bbox')
    stage, key = name.split('.', 1)
    if key.startswith('loss_hcl_'):
        return f'{stage}.{key[len("loss_hcl_"):]}_loss'
    return name


@pytest.mark.parametrize('dataset,case', CASES)
def test_losses_match_published(dataset, case):
    model, oracle, published = build_converted(dataset, case)
    model.train()
    if model.hierarchy.loss_hcl is not None:
        for loss, bank in zip(model.hierarchy.loss_hcl, published['prototypes_before']):
            loss.prototype_bank.prototypes.copy_(bank)
            loss.set_epoch(5)  # 0-based: the published run was told epoch 6 (1-based)
    losses = model.loss(oracle['images'], samples(oracle, published))
    expected = {k: sum(v) if isinstance(v, list) else v for k, v in published['losses'].items()}
    ours = {published_loss_name(k): float(v) for k, v in losses.items()}
    assert sorted(ours) == sorted(expected)
    for key, value in expected.items():
        rel = abs(ours[key] - value) / max(abs(value), 1e-12)
        assert rel <= RTOL_LOSS, f'{key}: bhcl {ours[key]:.8g} vs published {value:.8g}'


def test_losses_backpropagate_to_every_parameter():
    model, oracle, published = build_converted('shiprs', 'decoupled_bhcl')
    model.train()
    for loss in model.hierarchy.loss_hcl:
        loss.set_epoch(5)
    losses = model.loss(oracle['images'], samples(oracle, published))
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing
    assert all(n.startswith('backbone.') for n in frozen)  # frozen_stages=1


def test_converter_rejects_other_checkpoints():
    oracle = load_oracle('shiprs')
    state = dict(oracle['cases']['baseline']['state_dict'])
    state['roi_head.mask_head.conv.weight'] = torch.zeros(1)
    with pytest.raises(PublishedModelError, match='roi_head.mask_head.conv.weight'):
        convert_published_state_dict(state)
    with pytest.raises(PublishedModelError, match='no decoder stage'):
        convert_published_state_dict({'backbone.conv1.weight': torch.zeros(1)})
    with pytest.raises(PublishedModelError, match="OrientedDDQRCNN"):
        convert_published_config(dict(type='RotatedRetinaNet'))


def test_shape_mismatch_names_the_key_and_both_shapes():
    model, oracle, published = build_converted('shiprs', 'baseline')
    state = convert_published_state_dict(published['state_dict'])
    state['query_head.content_proj.weight'] = torch.zeros(3, 4)
    with pytest.raises(PublishedModelError,
                       match=r'query_head.content_proj.weight: \(3, 4\) in the checkpoint, '
                             r'\(64, 128\) in the model'):
        load_state_dict_strict(model, state)
