"""ShipRSImageNetDataset on the DOTA-format conversion and the official VOC release."""
import os.path as osp
import shutil

import cv2
import numpy as np
import pytest

from bhcl.datasets import AnnotationError, ShipRSImageNetDataset
from bhcl.datasets.formats import read_shiprs_xml
from bhcl.structures.geometry import regularize_rboxes
from tests.conftest import CONFIG_DIR, DATA_DIR, tree_config

SHIPRS_DIR = osp.join(DATA_DIR, 'shiprs_voc')


def write_image(path, size=(200, 200)):
    img = np.random.default_rng(0).integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), img)


def make_voc(root, stems=('000001', '000002'), images=None, split='train'):
    """An official-release layout: JPEGImages/*.bmp, Annotations/*.xml, ImageSets/<split>.txt."""
    for d in ('JPEGImages', 'Annotations', 'ImageSets'):
        (root / d).mkdir(parents=True, exist_ok=True)
    for stem in stems:
        shutil.copy(osp.join(SHIPRS_DIR, stem + '.xml'), root / 'Annotations')
    for stem in (stems if images is None else images):
        write_image(root / 'JPEGImages' / f'{stem}.bmp')
    (root / 'ImageSets' / f'{split}.txt').write_text(''.join(f'{s}.bmp\n' for s in stems))
    return dict(data_root=str(root), ann_file=f'ImageSets/{split}.txt',
                data_prefix=dict(img_path='JPEGImages/', xml_path='Annotations/'))


def levels():
    import runpy
    return runpy.run_path(osp.join(CONFIG_DIR, '_base_', 'datasets',
                                   'shiprs_official_levels.py'))['shiprs_level_names']


def infos(ds):
    return {d['img_id']: d for d in (ds.get_data_info(i) for i in range(len(ds)))}


def test_default_tree_is_the_config_tree(tmp_path):
    kw = make_voc(tmp_path)
    ds = ShipRSImageNetDataset(**kw)
    assert len(ds.metainfo['classes']) == 49 and len(ds.metainfo['leaf_ids']) == 41
    assert ds.metainfo['classes'] == ShipRSImageNetDataset(
        label_tree=tree_config('shiprs'), **kw).metainfo['classes']
    path = osp.join(CONFIG_DIR, '_base_', 'datasets', 'shiprs_label_tree.py')
    assert ShipRSImageNetDataset(label_tree=path, **kw).label_tree == ds.label_tree


def test_voc_release_with_image_set(tmp_path):
    ds = ShipRSImageNetDataset(level_names=levels(), diff_thr=0, **make_voc(tmp_path))
    classes = ds.metainfo['classes']
    by_id = infos(ds)
    assert sorted(by_id) == ['000001', '000002']
    assert by_id['000002']['file_name'] == '000002.bmp'
    inst = by_id['000002']['instances']
    assert [classes[i['bbox_label']] for i in inst] == [
        'Ticonderoga', 'Warship', 'Medical Ship', 'Fishing Vessel', 'Ship']
    assert inst[0]['bbox'] == [20.5, 30.0, 80.0, 24.0, 83.0, 44.0, 23.5, 50.0]
    assert [i['ignore_flag'] for i in inst] == [0, 1, 0, 0, 0]
    assert [classes[i['bbox_label']] for i in by_id['000001']['instances']] == [
        'Arleigh Burke DD']
    s = ds.load_stats
    assert (s['images'], s['objects'], s['skipped_ignored:Dock'], s['mapped_by_tree_rules'],
            s['level_mismatch']) == (2, 6, 1, 2, 0)


def test_dock_count_is_logged(tmp_path, record_log):
    import bhcl.datasets.hierarchical_dota as module
    logged = record_log(module, 'print_log')
    ShipRSImageNetDataset(**make_voc(tmp_path))
    assert any('skipped_ignored:Dock=1' in m for m in logged)


def test_voc_annotation_folder_without_list(tmp_path):
    kw = make_voc(tmp_path)
    ds = ShipRSImageNetDataset(**dict(kw, ann_file='Annotations/'))
    assert sorted(infos(ds)) == ['000001', '000002']
    assert ds.load_stats['objects'] == 6


def test_level_mismatch_is_counted_and_name_wins(tmp_path):
    kw = make_voc(tmp_path)
    xml = tmp_path / 'Annotations' / '000002.xml'
    xml.write_text(xml.read_text().replace('<level_3>8</level_3>', '<level_3>9</level_3>'))
    ds = ShipRSImageNetDataset(level_names=levels(), **kw)
    assert ds.load_stats['level_mismatch'] == 1
    first = infos(ds)['000002']['instances'][0]
    assert ds.metainfo['classes'][first['bbox_label']] == 'Ticonderoga'
    assert ShipRSImageNetDataset(**kw).load_stats['level_mismatch'] == 0  # check is opt-in


def test_missing_xml_and_missing_image(tmp_path):
    kw = make_voc(tmp_path)
    (tmp_path / 'ImageSets' / 'train.txt').write_text('000001.bmp\n000002.bmp\n000003.bmp\n')
    with pytest.raises(AnnotationError, match=r"000003.xml: annotation missing for listed "
                                              r"image '000003'.*on_invalid='skip'"):
        ShipRSImageNetDataset(**kw)
    ds = ShipRSImageNetDataset(on_invalid='skip', **kw)
    assert len(ds) == 2 and ds.load_stats['skipped_missing_xml'] == 1

    kw = make_voc(tmp_path / 'b', images=['000001'])
    with pytest.raises(FileNotFoundError, match=r'000002.xml: image 000002\..* is missing'):
        ShipRSImageNetDataset(**kw)
    ds = ShipRSImageNetDataset(on_invalid='skip', **kw)
    assert len(ds) == 1 and ds.load_stats['skipped_missing_image'] == 1


def test_bad_xml_unknown_class_and_degenerate_polygon(tmp_path):
    kw = make_voc(tmp_path)
    xml = tmp_path / 'Annotations' / '000002.xml'
    good = xml.read_text()
    xml.write_text(good.replace('<name>Medical Ship</name>', '<name>Medical Shp</name>'))
    with pytest.raises(AnnotationError, match=r"000002.xml: object #2 \('Medical Shp'\): "
                                              r"unknown class name"):
        ShipRSImageNetDataset(**kw)
    ds = ShipRSImageNetDataset(on_invalid='skip', **kw)
    assert ds.load_stats['skipped_invalid'] == 1 and ds.load_stats['objects'] == 5

    xml.write_text(good.replace('<x2>80.0</x2><y2>24.0</y2>', '<x2>20.5</x2><y2>30.0</y2>')
                   .replace('<x3>83.0</x3><y3>44.0</y3>', '<x3>20.5</x3><y3>30.0</y3>'))
    with pytest.raises(AnnotationError, match=r"object #0 \('Ticonderoga'\): degenerate"):
        ShipRSImageNetDataset(**kw)

    xml.write_text(good[:200])
    with pytest.raises(AnnotationError, match='000002.xml: malformed XML'):
        ShipRSImageNetDataset(**kw)
    ds = ShipRSImageNetDataset(on_invalid='skip', **kw)
    assert len(ds) == 1 and ds.load_stats['skipped_malformed_file'] == 1


def test_wrong_paths_say_what_to_fix(tmp_path):
    kw = make_voc(tmp_path)
    with pytest.raises(ValueError, match='xml_path'):
        ShipRSImageNetDataset(**dict(kw, data_prefix=dict(img_path='JPEGImages/')))
    with pytest.raises(FileNotFoundError, match='XML folder'):
        ShipRSImageNetDataset(**dict(kw, data_prefix=dict(img_path='JPEGImages/',
                                                          xml_path='nope/')))
    with pytest.raises(FileNotFoundError, match='labelTxt folder, an XML folder or an image-set'):
        ShipRSImageNetDataset(**dict(kw, ann_file='nope/'))
    (tmp_path / 'Annotations' / 'x.txt').write_text('')
    with pytest.raises(AnnotationError, match='both .txt and .xml'):
        ShipRSImageNetDataset(**dict(kw, ann_file='Annotations/'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(AnnotationError, match='no .txt or .xml annotation files'):
        ShipRSImageNetDataset(**dict(kw, ann_file='empty/'))


def test_dota_format_conversion_with_spaces(tmp_path):
    (tmp_path / 'val' / 'labelTxt').mkdir(parents=True)
    (tmp_path / 'val' / 'images').mkdir(parents=True)
    shutil.copy(osp.join(DATA_DIR, 'dota_txt', 'bhcl_shiprs_dota_format.txt'),
                tmp_path / 'val' / 'labelTxt' / '100001.txt')
    write_image(tmp_path / 'val' / 'images' / '100001.bmp')
    ds = ShipRSImageNetDataset(data_root=str(tmp_path), ann_file='val/labelTxt/',
                               data_prefix=dict(img_path='val/images/'), test_mode=True)
    classes = ds.metainfo['classes']
    inst = ds.get_data_info(0)['instances']
    assert [classes[i['bbox_label']] for i in inst] == [
        'Arleigh Burke DD', 'Warship', 'Fishing Vessel', 'LSD 41 LL', 'Ship']
    assert inst[3]['bbox'] == [700.0, 200.0, 760.0, 200.0, 760.0, 215.0, 700.0, 215.0]
    assert [i['difficulty'] for i in inst] == [0, 0, 1, 0, 0]


def test_configs_build_and_run_the_pipeline(tmp_path):
    import bhcl.datasets  # noqa: F401
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import DATASETS
    init_default_scope('mmrotate')
    make_voc(tmp_path, split='val')
    cfg = Config.fromfile(osp.join(CONFIG_DIR, '_base_', 'datasets', 'shiprs_voc.py'))
    ds_cfg = cfg.val_dataloader.dataset
    ds_cfg.data_root = str(tmp_path)
    ds = DATASETS.build(ds_cfg)
    assert ds.load_stats['level_mismatch'] == 0 and len(ds.label_tree) == 49
    idx = [ds.get_data_info(i)['img_id'] for i in range(len(ds))].index('000002')
    out = ds[idx]
    gt = out['data_samples'].gt_instances
    assert tuple(out['inputs'].shape) == (3, 1024, 1024)      # 200 px resized to 1024
    assert gt.labels.tolist() == [ds.metainfo['classes'].index(n) for n in (
        'Ticonderoga', 'Warship', 'Medical Ship', 'Fishing Vessel', 'Ship')]
    # val pipeline keeps boxes in the original frame: rbox of the axis-aligned object 1
    rbox = regularize_rboxes(gt.bboxes.tensor[1:2].numpy())
    np.testing.assert_allclose(rbox, [[130, 30, 60, 20, 0]], atol=1e-4)
    raw = read_shiprs_xml(osp.join(SHIPRS_DIR, '000002.xml'))
    assert len(gt) == len(raw.objects) - 1                    # Dock dropped
