"""FAIR1MDataset / FAIR1Mv2Dataset on official XML and DOTA txt (spaces or underscores)."""
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from bhcl.datasets import AnnotationError, FAIR1MDataset, FAIR1Mv2Dataset
from tests.conftest import CONFIG_DIR, DATA_DIR

FAIR1M_XML = osp.join(DATA_DIR, 'fair1m_xml')


def make_set(root, ann_dir, files, images):
    (root / ann_dir).mkdir(parents=True, exist_ok=True)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    for src, dst in files:
        shutil.copy(src, root / ann_dir / dst)
    for name in images:
        img = np.full((48, 64, 3), 80, dtype=np.uint8)
        assert cv2.imwrite(str(root / 'images' / name), img)
    return dict(data_root=str(root), ann_file=f'{ann_dir}/', data_prefix=dict(img_path='images/'))


def labels_of(ds, img_id):
    info = next(ds.get_data_info(i) for i in range(len(ds))
                if ds.get_data_info(i)['img_id'] == img_id)
    return [ds.metainfo['classes'][i['bbox_label']] for i in info['instances']], info


@pytest.mark.parametrize('cls', [FAIR1MDataset, FAIR1Mv2Dataset])
def test_official_xml(tmp_path, cls):
    kw = make_set(tmp_path, 'labelXml', [(osp.join(FAIR1M_XML, '1.xml'), '1.xml'),
                                         (osp.join(FAIR1M_XML, '0.xml'), '0.xml')],
                  ['0.tif', '1.tif'])
    ds = cls(**kw)
    assert len(ds.metainfo['classes']) == 39 and len(ds.metainfo['leaf_ids']) == 34
    names, info = labels_of(ds, '1')
    assert names == ['Small Car', 'Airplane']                 # other-airplane -> Airplane
    assert info['file_name'] == '1.tif'
    assert info['instances'][0]['bbox'] == [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]
    assert [i['difficulty'] for i in info['instances']] == [0, 0]
    assert labels_of(ds, '0')[0] == ['Liquid Cargo Ship']
    assert (ds.load_stats['images'], ds.load_stats['objects'],
            ds.load_stats['mapped_by_tree_rules']) == (2, 3, 1)


def test_dota_txt_with_spaces_and_with_underscores(tmp_path):
    kw = make_set(tmp_path, 'labelTxt', [
        (osp.join(DATA_DIR, 'dota_txt', 'bhcl_fair1m_dota_format_spaces.txt'), 'a.txt'),
        (osp.join(DATA_DIR, 'dota_txt', 'jdet_lsknet_fair1m_dota_format_underscores.txt'),
         'b.txt')], ['a.tif', 'b.png'])
    ds = FAIR1MDataset(**kw)
    assert labels_of(ds, 'a')[0] == ['Small Car', 'Airplane', 'Liquid Cargo Ship', 'Vehicle']
    names, info = labels_of(ds, 'b')
    assert names == ['Small Car', 'Airplane', 'Liquid Cargo Ship']
    assert info['instances'][2]['bbox'] == [200.0, 200.0, 260.0, 205.0, 258.0, 225.0,
                                            198.0, 220.0]
    assert ds.load_stats['header_lines'] == 2


def test_unlabelled_test_images(tmp_path):
    kw = make_set(tmp_path, 'labelXml', [], ['5.tif', '6.tif'])
    ds = FAIR1Mv2Dataset(test_mode=True, **dict(kw, ann_file=''))
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['5', '6']
    assert all(not ds.get_data_info(i)['instances'] for i in range(len(ds)))


def test_bad_xml_names_the_file(tmp_path):
    kw = make_set(tmp_path, 'labelXml', [(osp.join(FAIR1M_XML, '1.xml'), '1.xml')], ['1.tif'])
    xml = tmp_path / 'labelXml' / '1.xml'
    xml.write_text(xml.read_text().replace('<name>other-airplane</name>',
                                           '<name>other-boat</name>'))
    with pytest.raises(AnnotationError, match=r"1.xml: object #1 \('other-boat'\): unknown"):
        FAIR1MDataset(**kw)
    ds = FAIR1MDataset(on_invalid='skip', **kw)
    assert ds.load_stats['skipped_invalid'] == 1 and ds.load_stats['objects'] == 1
    (tmp_path / 'images' / '1.tif').unlink()
    with pytest.raises(FileNotFoundError, match=r'1.xml: image 1\..* is missing'):
        FAIR1MDataset(**kw)


@pytest.mark.parametrize('name', ['fair1m_v1', 'fair1m_v2'])
def test_configs_build(tmp_path, name):
    import bhcl.datasets  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import DATASETS
    init_default_scope('mmrotate')
    cfg = Config.fromfile(osp.join(CONFIG_DIR, '_base_', 'datasets', f'{name}.py'))
    split = 'train' if name == 'fair1m_v1' else 'trainval'
    assert cfg.train_dataloader.dataset.ann_file == f'{split}/labelTxt/'
    (tmp_path / split / 'labelTxt').mkdir(parents=True)
    (tmp_path / split / 'images').mkdir(parents=True)
    (tmp_path / 'test' / 'images').mkdir(parents=True)
    shutil.copy(osp.join(DATA_DIR, 'dota_txt', 'bhcl_fair1m_dota_format_spaces.txt'),
                tmp_path / split / 'labelTxt' / 'p__1024__0___0.txt')
    for d in (split, 'test'):
        assert cv2.imwrite(str(tmp_path / d / 'images' / 'p__1024__0___0.tif'),
                           np.zeros((64, 64, 3), np.uint8))
    train = cfg.train_dataloader.dataset
    train.data_root = str(tmp_path)
    ds = DATASETS.build(train)
    assert type(ds).__name__ == ('FAIR1MDataset' if name == 'fair1m_v1' else 'FAIR1Mv2Dataset')
    out = ds[0]                       # the full training pipeline, random shift included
    assert tuple(out['inputs'].shape) == (3, 1024, 1024)
    assert sorted(out['data_samples'].gt_instances.labels.tolist()) == sorted(
        ds.metainfo['classes'].index(n)
        for n in ('Small Car', 'Airplane', 'Liquid Cargo Ship', 'Vehicle'))
    test = cfg.test_dataloader.dataset
    test.data_root = str(tmp_path)
    test_ds = DATASETS.build(test)
    assert len(test_ds) == 1 and test_ds.test_mode
    assert cfg.test_evaluator == []
