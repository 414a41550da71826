"""Image splitting, merging patch predictions (rotated NMS) and the result exporters."""
import os
import os.path as osp
import pickle
import zipfile

import cv2
import numpy as np
import pytest
import torch
from shapely.geometry import Polygon

from bhcl.datasets import FAIR1MDataset
from bhcl.datasets.dota_txt import AnnotationError
from bhcl.datasets.export import (fair1m_submission_names, load_prediction_pickle,
                                  read_dota_task1, write_dota_task1, write_fair1m_submission)
from bhcl.datasets.formats import RawObject, read_dota_objects, read_fair1m_xml
from bhcl.datasets.merge import Detections, merge_patch_detections, rotated_nms
from bhcl.datasets.split import (SplitConfig, objects_in_window, parse_patch_name, patch_name,
                                 sliding_windows, split_image, split_images, window_starts)
from bhcl.structures import LabelTree
from bhcl.structures.geometry import poly_area, poly_to_rbox, rbox_to_poly
from tests.conftest import DATA_DIR, load_script, tree_config

CFG = SplitConfig(size=256, gap=56, iof_thr=0.7)   # windows x: 0, 200, 344; y: 0, 194


def coded_image(width, height):
    """Pixel (x, y) holds (x % 256, y % 256, 10 * (x // 256) + y // 256)."""
    x, y = np.meshgrid(np.arange(width), np.arange(height))
    return np.stack([x % 256, y % 256, 10 * (x // 256) + y // 256], -1).astype(np.uint8)


LABELS = [  # full-image frame, 600 x 450 image
    '10 10 40 10 40 30 10 30 Small Car 0',            # window (0, 0) only
    '210 20 240 20 240 40 210 40 Cargo Truck 1',      # overlap of windows x=0 and x=200
    '230 100 290 100 290 120 230 120 Truck Tractor 0',  # IoF 26/60 in x=0: only in x=200
    '240 300 262 300 262 320 240 320 Dump Truck 0',   # IoF 16/22 in x=0: truncated there
    '420 330 470 350 462 370 412 350 Liquid Cargo Ship 0',  # rotated, x in 412..470
]


@pytest.fixture
def scene(tmp_path):
    img_dir, ann_dir = tmp_path / 'in images', tmp_path / 'labelTxt'
    img_dir.mkdir()
    ann_dir.mkdir()
    assert cv2.imwrite(str(img_dir / 'scene A.tif'), coded_image(600, 450))
    (ann_dir / 'scene A.txt').write_text('\n'.join(LABELS) + '\n')
    return img_dir, ann_dir


def test_windows():
    assert window_starts(2000, 1024, 200) == [0, 824, 976]
    assert window_starts(1848, 1024, 200) == [0, 824]
    assert window_starts(1024, 1024, 200) == [0] and window_starts(700, 1024, 200) == [0]
    assert sliding_windows(600, 450, 256, 56) == [(0, 0), (200, 0), (344, 0),
                                                  (0, 194), (200, 194), (344, 194)]
    for length in (257, 1000, 5000, 10000):   # every pixel covered, windows inside the image
        starts = window_starts(length, 1024, 200)
        assert starts[-1] + min(1024, length) == length
        assert all(b - a <= 824 for a, b in zip(starts, starts[1:]))
    with pytest.raises(ValueError, match='gap < size'):
        SplitConfig(size=100, gap=100)


def test_patch_names_keep_spaces_and_underscores():
    name = patch_name('scene A__x', 1024, 824, 0)
    assert name == 'scene A__x__1024__824___0'
    assert parse_patch_name(name + '.tif') == ('scene A__x', 824, 0)
    assert parse_patch_name('P0004__1__0___1024') == ('P0004', 0, 1024)
    with pytest.raises(ValueError, match='not a patch name'):
        parse_patch_name('P0004.png')


def patch_objects(out_dir, x, y):
    return read_dota_objects(str(out_dir / 'labelTxt' / f'scene A__256__{x}___{y}.txt')).objects


def test_split_image_objects_offsets_and_truncation(scene, tmp_path):
    img_dir, ann_dir = scene
    out = tmp_path / 'out'
    stats = split_images([str(img_dir)], str(ann_dir), str(out), CFG)
    assert (stats['images'], stats['patches'], stats['objects'], stats['lost']) == (1, 6, 5, 0)
    names = sorted(os.listdir(out / 'images'))
    assert names[0] == 'scene A__256__0___0.tif' and len(names) == 6
    for name in names:                        # the pixels are those of the window
        stem, x, y = parse_patch_name(name)
        patch = cv2.imread(str(out / 'images' / name), cv2.IMREAD_UNCHANGED)
        assert stem == 'scene A' and patch.shape == (256, 256, 3)
        np.testing.assert_array_equal(patch, coded_image(600, 450)[y:y + 256, x:x + 256])

    p00 = patch_objects(out, 0, 0)
    assert [(o.name, o.difficulty) for o in p00] == [('Small Car', 0), ('Cargo Truck', 1)]
    assert p00[0].poly == [10, 10, 40, 10, 40, 30, 10, 30]
    p200 = patch_objects(out, 200, 0)
    assert [o.name for o in p200] == ['Cargo Truck', 'Truck Tractor']
    assert p200[0].poly == [10, 20, 40, 20, 40, 40, 10, 40]
    # Dump Truck: cut by window (0, 194) -> visible part, difficulty 2; whole in (200, 194)
    cut = [o for o in patch_objects(out, 0, 194) if o.name == 'Dump Truck']
    assert len(cut) == 1 and cut[0].difficulty == 2
    xs, ys = cut[0].poly[0::2], cut[0].poly[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == pytest.approx((240, 256, 106, 126), abs=1e-3)
    whole = [o for o in patch_objects(out, 200, 194) if o.name == 'Dump Truck']
    assert whole[0].poly == [40, 106, 62, 106, 62, 126, 40, 126] and whole[0].difficulty == 0
    ship = [o for o in patch_objects(out, 344, 194) if o.name == 'Liquid Cargo Ship']
    assert ship[0].poly == [76, 136, 126, 156, 118, 176, 68, 156]
    windows = sliding_windows(600, 450, 256, 56)
    assert stats['truncated'] == sum(o.difficulty == 2 for x, y in windows
                                     for o in patch_objects(out, x, y)) > 0

    # the patches read back as a FAIR1M dataset (class names with spaces)
    ds = FAIR1MDataset(data_root=str(out), ann_file='labelTxt/',
                       data_prefix=dict(img_path='images/'))
    assert len(ds) == 6 and ds.load_stats['objects'] == stats['patch_objects']


def test_truncated_rotated_object_is_the_visible_rectangle():
    obj = RawObject(poly=[420, 330, 470, 350, 462, 370, 412, 350], name='ship')
    inside = objects_in_window([obj], 200, 194, 256, 256, iof_thr=0.5)
    assert len(inside) == 1 and inside[0].difficulty == 2 and inside[0].truncated == 1
    full_area = poly_area(np.array(obj.poly))[0]
    part_area = poly_area(np.array(inside[0].poly))[0]
    assert 0.5 * full_area < part_area < full_area
    # the object's angle is kept; the rectangle lies inside the object
    np.testing.assert_allclose(poly_to_rbox(np.array(inside[0].poly))[0, 4],
                               poly_to_rbox(np.array(obj.poly))[0, 4], atol=1e-6)
    shifted = np.array(inside[0].poly).reshape(4, 2) + (200, 194)
    assert Polygon(np.array(obj.poly).reshape(4, 2)).buffer(1e-3).contains(
        Polygon(shifted))
    assert shifted[:, 0].max() > 456          # the diagonal cut leaves a corner outside
    assert objects_in_window([obj], 200, 194, 256, 256, iof_thr=0.95) == []


def test_padding_and_unlabelled_images(tmp_path):
    src = tmp_path / 'src'
    src.mkdir()
    assert cv2.imwrite(str(src / 'small.png'), coded_image(100, 80))
    stats = split_image(str(src / 'small.png'), None, str(tmp_path / 'a'),
                        SplitConfig(size=256, gap=56))
    assert stats['patches'] == 1 and not osp.exists(tmp_path / 'a' / 'labelTxt')
    split_images([str(src)], None, str(tmp_path / 'a'), SplitConfig(size=256, gap=56))
    patch = cv2.imread(str(tmp_path / 'a' / 'images' / 'small__256__0___0.png'))
    assert patch.shape == (256, 256, 3)
    np.testing.assert_array_equal(patch[:80, :100], coded_image(100, 80))
    assert (patch[100:, 150:] == (104, 116, 124)).all()
    split_images([str(src)], None, str(tmp_path / 'b'),
                 SplitConfig(size=256, gap=56, pad=False, out_ext='.bmp'))
    patch = cv2.imread(str(tmp_path / 'b' / 'images' / 'small__256__0___0.bmp'))
    assert patch.shape == (80, 100, 3)


def test_split_bad_input(scene, tmp_path):
    img_dir, ann_dir = scene
    (ann_dir / 'scene A.txt').rename(ann_dir / 'other.txt')
    with pytest.raises(FileNotFoundError, match=r'scene A.txt: no label file for image'):
        split_images([str(img_dir)], str(ann_dir), str(tmp_path / 'o'), CFG)
    second = tmp_path / 'second'
    second.mkdir()
    assert cv2.imwrite(str(second / 'scene A.png'), coded_image(10, 10))
    with pytest.raises(ValueError, match="image 'scene A' is in both"):
        split_images([str(img_dir), str(second)], None, str(tmp_path / 'o'), CFG)
    (img_dir / 'broken.tif').write_bytes(b'not an image')
    with pytest.raises(OSError) as info:
        split_images([str(img_dir)], None, str(tmp_path / 'o2'), CFG)
    assert str(info.value) == (
        f'{img_dir}/broken.tif: cannot read the image: the file is not an image OpenCV can '
        'decode (12 bytes: truncated, corrupt or another format under an image suffix); '
        're-download it, move it out of the input folders, or skip such images (--skip-invalid).')


def test_split_cli_with_worker_processes(scene, tmp_path, capsys):
    img_dir, ann_dir = scene
    load_script('tools/dataset_converters/split_images.py').main([
        '--img-dirs', str(img_dir), '--ann-dir', str(ann_dir), '--out-dir', str(tmp_path / 'o'),
        '--size', '256', '--gap', '56', '--nproc', '2'])
    assert 'images=1, lost=0, objects=5, patch_objects=' in capsys.readouterr().out
    reference = tmp_path / 'ref'
    split_images([str(img_dir)], str(ann_dir), str(reference), CFG)
    for name in os.listdir(reference / 'labelTxt'):
        assert ((tmp_path / 'o' / 'labelTxt' / name).read_text()
                == (reference / 'labelTxt' / name).read_text())


# ------------------------------------------------------------------ merging
def fair1m_tree():
    return LabelTree.from_config(tree_config('fair1m'))


def patch_predictions(out_dir, tree):
    """Ground truth of every patch as predictions (truncated objects left out)."""
    dets = {}
    for name in sorted(os.listdir(out_dir / 'labelTxt')):
        objs = [o for o in read_dota_objects(str(out_dir / 'labelTxt' / name)).objects
                if o.difficulty != 2]
        _, x, y = parse_patch_name(name)
        dets[name[:-4]] = Detections(
            poly_to_rbox(np.array([o.poly for o in objs]).reshape(-1, 8)),
            [0.9 - 0.001 * (x + y) / 100 for _ in objs], [tree.resolve(o.name) for o in objs])
    return dets


def test_split_then_merge_recovers_full_image_boxes(scene, tmp_path):
    img_dir, ann_dir = scene
    split_images([str(img_dir)], str(ann_dir), str(tmp_path / 'o'), CFG)
    tree = fair1m_tree()
    dets = patch_predictions(tmp_path / 'o', tree)
    assert sum(len(d) for d in dets.values()) > len(LABELS)    # duplicates in the overlaps
    merged = merge_patch_detections(dets, iou_thr=0.1)
    assert list(merged) == ['scene A']
    got = merged['scene A']
    truth = read_dota_objects(str(ann_dir / 'scene A.txt')).objects
    order = np.argsort(got.labels)
    want = sorted(((tree.resolve(o.name), o.poly) for o in truth), key=lambda t: t[0])
    assert got.labels[order].tolist() == [w[0] for w in want]
    np.testing.assert_allclose(got.rboxes[order], poly_to_rbox(np.array([w[1] for w in want])),
                               atol=1e-3)


def test_nms_is_per_class_unless_agnostic():
    a = Detections([[100, 100, 40, 20, 0.3], [101, 100, 40, 20, 0.3], [100, 100, 40, 20, 0.3],
                    [300, 300, 10, 10, 0]], [0.9, 0.8, 0.7, 0.6], [1, 1, 2, 1])
    kept = rotated_nms(a, iou_thr=0.1)
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert rotated_nms(a, 0.1, class_agnostic=True).scores.tolist() == pytest.approx([0.9, 0.6])
    merged = merge_patch_detections({'a__1024__0___0': a}, image_ids=['a', 'b'])
    assert len(merged['a']) == 3 and len(merged['b']) == 0
    with pytest.raises(ValueError, match='not a patch name'):
        merge_patch_detections({'a': a})
    with pytest.raises(ValueError, match='must match'):
        Detections(np.zeros((2, 5)), [0.1], [0, 1])


# ---------------------------------------------------------------- exporters
def sample_dets():
    return {
        'img 1': Detections([[50, 60, 40, 10, 0.2], [200, 210, 30, 20, 0]], [0.5, 0.95], [13, 2]),
        'P0706': Detections([[120, 110, 40, 20, 0]], [0.3], [13]),
    }


def test_task1_round_trip_and_fixture(tmp_path):
    tree = fair1m_tree()
    files = write_dota_task1(sample_dets(), tree.classes, str(tmp_path / 't1'))
    assert len(files) == 39 and osp.basename(files[13]) == 'Task1_Small Car.txt'
    lines = (tmp_path / 't1' / 'Task1_Small Car.txt').read_text().splitlines()
    assert lines[0].startswith('P0706 0.3000 100.00 100.00 140.00 100.00')
    assert lines[1].startswith('img 1 0.5000 ')
    back = read_dota_task1(str(tmp_path / 't1'), tree.classes)
    for img, d in sample_dets().items():
        order = np.argsort(-d.scores)
        np.testing.assert_allclose(back[img].scores, d.scores[order])
        np.testing.assert_array_equal(back[img].labels, d.labels[order])
        np.testing.assert_allclose(back[img].rboxes, d.rboxes[order], atol=0.01)
    fixture = read_dota_task1(osp.join(DATA_DIR, 'dota_task1'), ['plane', 'ship'])
    assert sorted(fixture) == ['P0004', 'P0706'] and fixture['P0004'].scores.tolist() == [
        0.98, 0.75]
    np.testing.assert_allclose(rbox_to_poly(fixture['P0706'].rboxes)[0].reshape(4, 2).min(0),
                               [100, 100], atol=1e-3)


def test_task1_bad_input(tmp_path):
    (tmp_path / 'Task1_plane.txt').write_text('P1 0.9 1 2 3 4 5 6 7\n')
    with pytest.raises(AnnotationError, match=r'Task1_plane.txt:1: expected'):
        read_dota_task1(str(tmp_path), ['plane'])
    with pytest.raises(AnnotationError, match="class 'plane' is not one of"):
        read_dota_task1(str(tmp_path), ['ship'])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(FileNotFoundError, match='no Task1_'):
        read_dota_task1(str(tmp_path / 'empty'), ['plane'])
    with pytest.raises(ValueError, match='leading/trailing spaces'):
        write_dota_task1({' a': Detections.empty()}, ['plane'], str(tmp_path / 'o'))


def test_fair1m_submission_layout_and_round_trip(tmp_path):
    tree = fair1m_tree()
    names = fair1m_submission_names(tree)
    assert names[:3] == ['other-ship', 'other-vehicle', 'other-airplane']
    assert names[13] == 'Small Car'
    assert [tree.resolve(n) for n in names] == list(range(39))       # the tree reads them back
    dets = sample_dets()
    zip_path = str(tmp_path / 'submission.zip')
    paths = write_fair1m_submission(dets, names, str(tmp_path / 'sub'),
                                    image_ids=['img 1', 'P0706', '9'], zip_path=zip_path)
    assert len(paths) == 3
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ['test/9.xml', 'test/P0706.xml', 'test/img 1.xml']
        zf.extractall(tmp_path / 'unzipped')
    ann = read_fair1m_xml(str(tmp_path / 'unzipped' / 'test' / 'img 1.xml'))
    assert ann.filename == 'img 1.tif'
    assert [o.name for o in ann.objects] == ['other-airplane', 'Small Car']   # best first
    assert [o.score for o in ann.objects] == [0.95, 0.5]
    np.testing.assert_allclose(ann.objects[1].poly, rbox_to_poly(dets['img 1'].rboxes)[0],
                               atol=0.005)
    text = (tmp_path / 'unzipped' / 'test' / 'img 1.xml').read_text()
    assert text.count('<point>') == 10 and '<probability>' in text
    assert read_fair1m_xml(str(tmp_path / 'unzipped' / 'test' / '9.xml')).objects == []


def write_pickle(path, items):
    with open(path, 'wb') as f:
        pickle.dump(items, f)


def test_load_prediction_pickle(tmp_path):
    from mmrotate.structures import RotatedBoxes
    items = [dict(img_path='/data/test/images/a b__1024__0___0.tif', img_id='x',
                  pred_instances=dict(bboxes=RotatedBoxes(torch.tensor([[10., 20, 30, 8, 0.1]])),
                                      scores=torch.tensor([0.7]), labels=torch.tensor([5]))),
             dict(img_path='b.png', pred_instances=dict(
                 bboxes=torch.tensor([[0., 0, 10, 0, 10, 10, 0, 10]]),
                 scores=torch.tensor([0.2]), labels=torch.tensor([1])))]
    write_pickle(tmp_path / 'p.pkl', items)
    dets = load_prediction_pickle(str(tmp_path / 'p.pkl'))
    assert list(dets) == ['a b__1024__0___0', 'b']
    np.testing.assert_allclose(dets['a b__1024__0___0'].rboxes, [[10, 20, 30, 8, 0.1]], atol=1e-6)
    np.testing.assert_allclose(dets['b'].rboxes, [[5, 5, 10, 10, 0]], atol=1e-6)
    write_pickle(tmp_path / 'bad.pkl', [dict(img_path='c.png')])
    with pytest.raises(ValueError, match='item 0 has no pred_instances'):
        load_prediction_pickle(str(tmp_path / 'bad.pkl'))


def test_export_cli_merges_patches_into_a_fair1m_zip(scene, tmp_path, capsys):
    img_dir, ann_dir = scene
    split_images([str(img_dir)], str(ann_dir), str(tmp_path / 'o'), CFG)
    tree = fair1m_tree()
    dets = patch_predictions(tmp_path / 'o', tree)
    items = [dict(img_path=f'x/{pid}.tif',
                  pred_instances=dict(bboxes=torch.from_numpy(d.rboxes).float(),
                                      scores=torch.from_numpy(d.scores).float(),
                                      labels=torch.from_numpy(d.labels)))
             for pid, d in dets.items()]
    write_pickle(tmp_path / 'preds.pkl', items)
    assert cv2.imwrite(str(tmp_path / 'o' / 'images' / 'empty__256__0___0.tif'),
                       coded_image(8, 8))
    tool = load_script('tools/dataset_converters/export_predictions.py')
    tool.main([str(tmp_path / 'preds.pkl'), '--out-dir', str(tmp_path / 'sub'), '--format',
               'fair1m', '--merge-patches', '--image-dir', str(tmp_path / 'o' / 'images'),
               '--zip'])
    printed = capsys.readouterr().out
    assert f'merged into 2 images, {len(LABELS)} detections' in printed
    with zipfile.ZipFile(tmp_path / 'sub' / 'submission.zip') as zf:
        assert sorted(zf.namelist()) == ['test/empty.xml', 'test/scene A.xml']
    ann = read_fair1m_xml(str(tmp_path / 'sub' / 'test' / 'scene A.xml'))
    assert sorted(o.name for o in ann.objects) == sorted(line.split(' ', 8)[8][:-2]
                                                          for line in LABELS)
    # Task1 in, Task1 out: patch-level Task1 files merged into image-level ones
    write_dota_task1(dets, tree.classes, str(tmp_path / 'patch_t1'))
    tool.main([str(tmp_path / 'patch_t1'), '--out-dir', str(tmp_path / 't1'),
               '--merge-patches', '--zip'])
    merged = read_dota_task1(str(tmp_path / 't1'), tree.classes)
    assert list(merged) == ['scene A'] and len(merged['scene A']) == len(LABELS)
    with zipfile.ZipFile(tmp_path / 't1' / 'submission.zip') as zf:
        assert 'Task1_Small Car.txt' in zf.namelist() and len(zf.namelist()) == 39
