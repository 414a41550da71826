import os.path as osp

import cv2
import numpy as np
import pytest

from bhcl.datasets import AnnotationError, HierarchicalDOTADataset
from tests.conftest import tree_config

TREE = dict(paths=['Ship', 'Ship/Warship', 'Ship/Warship/Arleigh Burke DD',
                   'Ship/Warship/LSD 41 LL', 'Ship/Merchant', 'Ship/Merchant/Fishing Vessel'],
            ignore=['Dock'])


def write_image(path, size=(64, 48)):
    img = np.random.default_rng(0).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def make_set(root, files, images):
    (root / 'labelTxt').mkdir(parents=True, exist_ok=True)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (root / 'labelTxt' / f'{name}.txt').write_text(text)
    for name in images:
        write_image(root / 'images' / name)
    return dict(data_root=str(root), ann_file='labelTxt/', data_prefix=dict(img_path='images/'))


GOOD = {
    'a': 'imagesource:GoogleEarth\ngsd:0.5\n'
         '1 1 20 1 20 8 1 8 Arleigh Burke DD 0\n2 2 30 2 30 9 2 9 Other Warship 1\n'
         '3 3 9 3 9 6 3 6 Dock 0\n',
    'b': '5 5 25 5 25 10 5 10 Fishing Vessel\n',
    'c': '',
}


def test_reads_spaces_headers_other_and_any_suffix(tmp_path):
    kw = make_set(tmp_path, GOOD, ['a.bmp', 'b.tif', 'c.png'])
    ds = HierarchicalDOTADataset(label_tree=TREE, diff_thr=0, **kw)
    assert ds.metainfo['classes'] == ('Ship', 'Warship', 'Arleigh Burke DD', 'LSD 41 LL',
                                      'Merchant', 'Fishing Vessel')
    assert ds.metainfo['leaf_ids'] == (2, 3, 5)
    assert len(ds.metainfo['palette']) == 6
    infos = {d['img_id']: d for d in (ds.get_data_info(i) for i in range(len(ds)))}
    assert infos['a']['file_name'] == 'a.bmp' and infos['b']['file_name'] == 'b.tif'
    a = infos['a']['instances']
    assert [i['bbox_label'] for i in a] == [2, 1]
    assert [i['ignore_flag'] for i in a] == [0, 1]     # diff_thr=0 ignores difficulty 1
    assert a[0]['bbox'] == [1, 1, 20, 1, 20, 8, 1, 8]
    assert infos['b']['instances'][0]['difficulty'] == 0
    assert infos['c']['instances'] == []
    s = ds.load_stats
    assert (s['images'], s['objects'], s['header_lines'], s['skipped_ignored:Dock'],
            s['empty_files'], s['mapped_by_tree_rules']) == (3, 3, 2, 1, 1, 1)


def test_filter_empty_gt_is_logged(tmp_path, caplog):
    kw = make_set(tmp_path, GOOD, ['a.png', 'b.png', 'c.png'])
    ds = HierarchicalDOTADataset(label_tree=TREE, filter_cfg=dict(filter_empty_gt=True), **kw)
    assert sorted(ds.get_data_info(i)['img_id'] for i in range(len(ds))) == ['a', 'b']
    ds_test = HierarchicalDOTADataset(label_tree=TREE, test_mode=True,
                                      filter_cfg=dict(filter_empty_gt=True), **kw)
    assert len(ds_test) == 3


def test_missing_and_empty_images(tmp_path):
    kw = make_set(tmp_path, GOOD, ['a.png', 'c.png'])
    with pytest.raises(FileNotFoundError, match=r'labelTxt/b.txt: image b\..* is missing'):
        HierarchicalDOTADataset(label_tree=TREE, **kw)
    ds = HierarchicalDOTADataset(label_tree=TREE, on_invalid='skip', **kw)
    assert len(ds) == 2 and ds.load_stats['skipped_missing_image'] == 1
    (tmp_path / 'images' / 'b.png').write_bytes(b'')
    with pytest.raises(FileNotFoundError, match=r'empty \(0 bytes\)'):
        HierarchicalDOTADataset(label_tree=TREE, **kw)


def test_bad_annotation_names_file_and_line(tmp_path):
    files = dict(GOOD, b='5 5 25 5 25 10 5 10 Fishing Vesel 0\n')
    kw = make_set(tmp_path, files, ['a.png', 'b.png', 'c.png'])
    with pytest.raises(AnnotationError, match=r"b.txt:1: unknown class name 'Fishing Vesel'"):
        HierarchicalDOTADataset(label_tree=TREE, **kw)
    ds = HierarchicalDOTADataset(label_tree=TREE, on_invalid='skip', **kw)
    assert ds.load_stats['skipped_invalid'] == 1 and ds.load_stats['objects'] == 2


def test_empty_annotation_folder_and_wrong_paths(tmp_path):
    kw = make_set(tmp_path, {}, ['a.png'])
    with pytest.raises(AnnotationError, match='no .txt annotation files'):
        HierarchicalDOTADataset(label_tree=TREE, **kw)
    with pytest.raises(FileNotFoundError, match='annotation folder'):
        HierarchicalDOTADataset(label_tree=TREE, **dict(kw, ann_file='nope/'))
    with pytest.raises(FileNotFoundError, match='image folder'):
        HierarchicalDOTADataset(label_tree=TREE, **dict(kw, data_prefix=dict(img_path='x/')))


def test_metainfo_classes_must_agree_with_tree(tmp_path):
    kw = make_set(tmp_path, GOOD, ['a.png', 'b.png', 'c.png'])
    with pytest.raises(ValueError, match='define classes through label_tree'):
        HierarchicalDOTADataset(label_tree=TREE, metainfo=dict(classes=('a', 'b')), **kw)


def test_unlabelled_test_images(tmp_path):
    kw = make_set(tmp_path, {}, ['x.png', 'y.jpg'])
    (tmp_path / 'images' / 'notes.txt').write_text('not an image')
    ds = HierarchicalDOTADataset(label_tree=TREE, test_mode=True,
                                 **dict(kw, ann_file=''))
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['x', 'y']


def test_pipeline_gives_rotated_boxes(tmp_path):
    import bhcl  # noqa: F401
    from mmengine.registry import init_default_scope
    init_default_scope('mmrotate')
    kw = make_set(tmp_path, GOOD, ['a.png', 'b.png', 'c.png'])
    pipeline = [
        dict(type='mmdet.LoadImageFromFile'),
        dict(type='mmdet.LoadAnnotations', with_bbox=True, box_type='qbox'),
        dict(type='ConvertBoxType', box_type_mapping=dict(gt_bboxes='rbox')),
        dict(type='mmdet.PackDetInputs')]
    ds = HierarchicalDOTADataset(label_tree=TREE, pipeline=pipeline, **kw)
    idx = [ds.get_data_info(i)['img_id'] for i in range(len(ds))].index('a')
    out = ds[idx]
    gt = out['data_samples'].gt_instances
    from bhcl.structures.geometry import regularize_rboxes
    np.testing.assert_allclose(regularize_rboxes(gt.bboxes.tensor.numpy()),
                               [[10.5, 4.5, 19, 7, 0], [16, 5.5, 28, 7, 0]], atol=1e-4)
    assert gt.labels.tolist() == [2, 1]
    assert tuple(out['inputs'].shape) == (3, 48, 64)


def test_real_tree_configs_build_a_dataset(tmp_path):
    kw = make_set(tmp_path, {'s': '1 1 20 1 20 8 1 8 Other Aircraft Carrier 0\n'
                                  '1 1 20 1 20 8 1 8 Dock 0\n'}, ['s.bmp'])
    ds = HierarchicalDOTADataset(label_tree=tree_config('shiprs'), **kw)
    assert ds.get_data_info(0)['instances'][0]['bbox_label'] == 4
    assert ds.load_stats['skipped_ignored:Dock'] == 1
    assert len(ds.metainfo['classes']) == 49
