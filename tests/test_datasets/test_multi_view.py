import numpy as np
import pytest
import torch

import bhcl  # noqa: F401
from bhcl.datasets import MultiViewDataset, multiview_collate
from tests.conftest import tree_config

PIPELINE = [
    dict(type='mmdet.LoadImageFromFile'),
    dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
    dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
    dict(type='mmdet.RandomFlip', prob=0.75, direction=['horizontal', 'vertical', 'diagonal']),
    dict(type='mmdet.PackDetInputs')
]


def build(root, num_views=2, pipeline=PIPELINE):
    from mmengine.registry import init_default_scope
    init_default_scope('mmrotate')
    inner = dict(type='HierarchicalDOTADataset', label_tree=tree_config('synthetic'),
                 data_root=root, ann_file='train/labelTxt/',
                 data_prefix=dict(img_path='train/images/'), pipeline=pipeline)
    return MultiViewDataset(dataset=inner, num_views=num_views)


def test_views_are_independent_augmentations_of_one_image(tiny_synthetic):
    ds = build(tiny_synthetic)
    assert len(ds) == 8 and ds.metainfo['classes'][0] == 'Vessel'
    torch.manual_seed(0)
    np.random.seed(0)
    differ = 0
    for i in range(len(ds)):
        views = ds[i]
        assert len(views) == 2
        ids = {v['data_samples'].img_id for v in views}
        assert len(ids) == 1
        a, b = (v['inputs'] for v in views)
        differ += int(not torch.equal(a, b))
        # same objects in both views, possibly flipped
        assert torch.equal(views[0]['data_samples'].gt_instances.labels,
                           views[1]['data_samples'].gt_instances.labels)
    assert differ > 0


def test_collate_flattens_views_into_the_batch(tiny_synthetic):
    ds = build(tiny_synthetic, num_views=3)
    batch = multiview_collate([ds[0], ds[1]])
    assert len(batch['inputs']) == 6 and len(batch['data_samples']) == 6
    ids = [s.img_id for s in batch['data_samples']]
    assert ids[:3] == [ids[0]] * 3 and ids[3:] == [ids[3]] * 3 and ids[0] != ids[3]


def test_rejected_views_refetch_another_image(tiny_synthetic):
    ds = build(tiny_synthetic)
    calls = []
    real = ds.dataset.prepare_data

    def flaky(idx):
        calls.append(idx)
        return None if len(calls) == 1 else real(idx)

    ds.dataset.prepare_data = flaky
    views = ds[0]
    assert len(views) == 2 and all(v is not None for v in views)
    ds.dataset.prepare_data = lambda idx: None
    with pytest.raises(RuntimeError, match='rejected'):
        MultiViewDataset(dataset=ds.dataset, max_refetch=2)[0]


def test_invalid_num_views(tiny_synthetic):
    with pytest.raises(ValueError, match='num_views'):
        build(tiny_synthetic, num_views=0)


def test_registered_collate_function():
    from mmengine.registry import FUNCTIONS
    assert FUNCTIONS.get('multiview_collate') is multiview_collate
