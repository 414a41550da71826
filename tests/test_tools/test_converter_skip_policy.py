"""Converters, splitter and exporter: the datasets' skip policy, no partial outputs on a
stop, names ending in a number survive splitting, progress on the merger."""
import os
import pickle

import cv2
import numpy as np
import pytest

import bhcl.datasets.skip_policy as skip_module
from bhcl.datasets import AnnotationError, HierarchicalDOTADataset, ShipRSImageNetDataset
from bhcl.datasets.convert import staged_output
from bhcl.datasets.dota_txt import FileEncodingError
from bhcl.datasets.formats import RawObject, fair1m_xml_string, read_dota_objects
from bhcl.datasets.merge import Detections, merge_patch_detections
from bhcl.datasets.split import MissingLabelError, SplitConfig, split_images
from bhcl.structures import LabelTree
from tests.test_tools.test_dataset_converters import converter, make_voc, write_image


@pytest.fixture
def logged(record_log):
    """Messages the skip policy logs (its default logger)."""
    return record_log(skip_module, '_warn')


def listing(root):
    """Every path under ``root`` (hidden staging folders included)."""
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, dirs, files in os.walk(root) for f in files + dirs)


def fair1m_dir(tmp_path):
    xml_dir = tmp_path / 'labelXml'
    xml_dir.mkdir()
    car = RawObject(poly=[10, 10, 30, 10, 30, 20, 10, 20], name='Small Car')
    bus = RawObject(poly=[40, 40, 60, 40, 60, 50, 40, 50], name='Bus')
    for stem in ('1', '2', '3'):
        (xml_dir / f'{stem}.xml').write_text(fair1m_xml_string(f'{stem}.tif', [car, bus]))
    return xml_dir


def test_staged_output_is_all_or_nothing(tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    (out / 'old.txt').write_text('old')
    with pytest.raises(RuntimeError):
        with staged_output(str(out)) as stage:
            (open(os.path.join(stage, 'new.txt'), 'w')).close()
            raise RuntimeError('stopped')
    assert listing(tmp_path) == ['out', 'out/old.txt']
    with staged_output(str(out)) as stage:
        os.makedirs(os.path.join(stage, 'a', 'b'))
        with open(os.path.join(stage, 'a', 'b', 'c.txt'), 'w') as f:
            f.write('new')
        os.symlink(str(out / 'old.txt'), os.path.join(stage, 'link.txt'))
    assert listing(tmp_path) == ['out', 'out/a', 'out/a/b', 'out/a/b/c.txt', 'out/link.txt',
                                 'out/old.txt']
    assert os.path.islink(out / 'link.txt')


def test_fair1m_converter_stops_without_outputs_or_skips_like_the_dataset(
        tmp_path, capsys, logged):
    xml_dir = fair1m_dir(tmp_path)
    text = (xml_dir / '2.xml').read_text()
    points = text.index('<points>', text.index('Bus'))
    (xml_dir / '2.xml').write_text(text[:points] + text[text.index('</points>', points) + 9:])
    (xml_dir / '3.xml').write_bytes(b'<annotation><objects>caf\xe9')
    tool = converter('fair1m_xml_to_dota')
    out = tmp_path / 'out'
    with pytest.raises(AnnotationError, match=r"2.xml: object #1 \('Bus'\): 0 <point>"):
        tool.main([str(xml_dir), '--out-dir', str(out)])
    assert listing(tmp_path).count('out') == 0 and not any('.partial' in p
                                                           for p in listing(tmp_path))
    (xml_dir / '2.xml').write_text(text)
    with pytest.raises(FileEncodingError, match=r'3.xml: not UTF-8'):
        tool.main([str(xml_dir), '--out-dir', str(out)])
    assert not out.exists()
    (xml_dir / '2.xml').write_text(text[:points] + text[text.index('</points>', points) + 9:])
    stats = tool.main([str(xml_dir), '--out-dir', str(out), '--skip-invalid'])
    assert sorted(os.listdir(out)) == ['1.txt', '2.txt']            # 3: skipped image
    assert [o.name for o in read_dota_objects(str(out / '2.txt')).objects] == ['Small Car']
    assert (stats['skipped_invalid'], stats['skipped_not_utf8'], stats['objects']) == (1, 1, 3)
    printed = capsys.readouterr().out
    assert 'skipped 1 image and 1 object (invalid=1, not_utf8=1)' in printed
    assert [m.split(':')[0] for m in logged] == [str(xml_dir / '2.xml'), str(xml_dir / '3.xml')]


def test_shiprs_converter_skips_images_as_the_dataset_does(tmp_path, capsys, logged):
    voc = tmp_path / 'VOC_Format'
    make_voc(voc)                                            # val: 000001, train: 000002
    (voc / 'ImageSets' / 'train.txt').write_text('000001.bmp\n000002.bmp\n000009.bmp\n')
    (voc / 'JPEGImages' / '000002.bmp').unlink()
    tool = converter('shiprs_voc_to_dota')
    with pytest.raises(FileNotFoundError, match="000002.xml: image '000002': found no file"):
        tool.main([str(voc), str(tmp_path / 'out'), '--splits', 'val', 'train'])
    assert not (tmp_path / 'out').exists()                  # val was converted, then removed
    assert not any('.partial' in p for p in listing(tmp_path))
    tool.main([str(voc), str(tmp_path / 'out'), '--splits', 'train', '--skip-invalid'])
    train = tmp_path / 'out' / 'train'
    assert os.listdir(train / 'labelTxt') == ['000001.txt']
    assert os.listdir(train / 'images') == ['000001.bmp']
    assert 'skipped_missing_image=1, skipped_missing_xml=1' in capsys.readouterr().out
    assert [m.split(':')[0].rsplit('/', 1)[-1] for m in logged] == ['000002.xml', '000009.xml']
    ds = ShipRSImageNetDataset(data_root=str(train), ann_file='labelTxt/',
                               data_prefix=dict(img_path='images/'))
    assert len(ds) == 1 and ds.load_stats['objects'] == 1


NUMBERED = ['10 10 40 10 40 30 10 30 Boeing 737',        # no difficulty field
            '60 10 90 10 90 30 60 30 Boeing 737 1',
            '110 10 140 10 140 30 110 30 Type 45',
            '150 40 160 60 160 40 150 60 A 320 0']      # crossed corners


def numbered_scene(tmp_path, extra_images=()):
    img_dir, ann_dir = tmp_path / 'images', tmp_path / 'labelTxt'
    img_dir.mkdir()
    ann_dir.mkdir()
    write_image(img_dir / 'big.png', (300, 100))
    (ann_dir / 'big.txt').write_text('\n'.join(NUMBERED) + '\n')
    for name in extra_images:
        write_image(img_dir / name, (80, 80))
    return img_dir, ann_dir


def test_split_round_trips_names_ending_in_a_number(tmp_path):
    img_dir, ann_dir = numbered_scene(tmp_path)
    out = tmp_path / 'split'
    converter('split_images').main(['--img-dirs', str(img_dir), '--ann-dir', str(ann_dir),
                                    '--out-dir', str(out), '--size', '200', '--gap', '100'])
    names = set()
    for txt in os.listdir(out / 'labelTxt'):
        objs = read_dota_objects(str(out / 'labelTxt' / txt)).objects
        names |= {(o.name, o.difficulty) for o in objs}
    assert names == {('Boeing 737', 0), ('Boeing 737', 1), ('Type 45', 0), ('A 320', 0)}
    tree = LabelTree.from_paths(['Airplane', 'Airplane/Boeing 737', 'Airplane/A 320',
                                 'Ship', 'Ship/Type 45'])
    ds = HierarchicalDOTADataset(label_tree=tree, data_root=str(out), ann_file='labelTxt/',
                                 data_prefix=dict(img_path='images/'))
    assert ds.load_stats['objects'] >= len(NUMBERED)


def test_split_stops_without_outputs_or_skips(tmp_path, logged, capsys):
    img_dir, ann_dir = numbered_scene(tmp_path, extra_images=['nolabel.png'])
    (img_dir / 'broken.png').write_bytes(b'not a png')
    (ann_dir / 'broken.txt').write_text('')
    write_image(img_dir / 'latin.png', (80, 80))
    (ann_dir / 'latin.txt').write_bytes('10 10 40 10 40 30 10 30 Caf\xe9 0\n'.encode('latin-1'))
    (ann_dir / 'big.txt').write_text('\n'.join(NUMBERED + ['1 2 3 Boeing 737']) + '\n')
    tool = converter('split_images')
    args = ['--img-dirs', str(img_dir), '--ann-dir', str(ann_dir), '--out-dir',
            str(tmp_path / 'out'), '--size', '200', '--gap', '100']
    with pytest.raises(AnnotationError, match=r'big.txt:5: expected "x1 y1'):
        tool.main(args)
    assert not (tmp_path / 'out').exists()
    assert not any('.partial' in p for p in listing(tmp_path))
    stats = tool.main(args + ['--skip-invalid'])
    assert {k: v for k, v in stats.items() if k.startswith('skipped')} == {
        'skipped_invalid': 1, 'skipped_missing_label': 1, 'skipped_not_utf8': 1,
        'skipped_unreadable_image': 1}
    assert sorted(os.listdir(tmp_path / 'out' / 'images')) == [
        'big__200__0___0.png', 'big__200__100___0.png']
    assert len(logged) == 4 and any('nolabel.txt: no label file' in m for m in logged)
    assert 'skipped 3 images and 1 object' in capsys.readouterr().out


def test_split_images_library_raises_for_missing_labels(tmp_path):
    img_dir, ann_dir = numbered_scene(tmp_path, extra_images=['nolabel.png'])
    with pytest.raises(MissingLabelError, match='nolabel.txt: no label file'):
        split_images([str(img_dir)], str(ann_dir), str(tmp_path / 'o'),
                     SplitConfig(size=200, gap=100))


def test_merge_reports_progress_per_image():
    one = Detections(np.array([[10, 10, 8, 4, 0.0]]), np.array([0.9]), np.array([1]))
    ticks = []
    merged = merge_patch_detections({'a__64__0___0': one, 'a__64__32___0': one,
                                     'b__64__0___0': one}, progress=lambda: ticks.append(1))
    assert len(ticks) == 2 and sorted(merged) == ['a', 'b']


class RecordingBar:
    """Stands in for mmengine's ProgressBar: records the total and the updates."""
    bars = []

    def __init__(self, task_num, *args, **kwargs):
        self.task_num, self.done = task_num, 0
        RecordingBar.bars.append(self)

    def update(self, num_tasks=1):
        self.done += num_tasks


def with_bar(monkeypatch, name):
    tool = converter(name)
    monkeypatch.setattr(tool, 'ProgressBar', RecordingBar)
    RecordingBar.bars = []
    return tool


def test_converters_splitter_and_merger_show_progress_bars(tmp_path, monkeypatch):
    xml_dir = fair1m_dir(tmp_path)
    with_bar(monkeypatch, 'fair1m_xml_to_dota').main([str(xml_dir), '--out-dir',
                                                      str(tmp_path / 'o')])
    assert [(b.task_num, b.done) for b in RecordingBar.bars] == [(3, 3)]
    voc = tmp_path / 'VOC_Format'
    make_voc(voc)
    with_bar(monkeypatch, 'shiprs_voc_to_dota').main([str(voc), str(tmp_path / 'v')])
    assert [(b.task_num, b.done) for b in RecordingBar.bars] == [(1, 1), (1, 1)]
    img_dir, ann_dir = numbered_scene(tmp_path, extra_images=['nolabel.png'])
    with_bar(monkeypatch, 'split_images').main(
        ['--img-dirs', str(img_dir), '--ann-dir', str(ann_dir), '--out-dir', str(tmp_path / 's'),
         '--size', '200', '--gap', '100', '--skip-invalid'])
    assert [(b.task_num, b.done) for b in RecordingBar.bars] == [(2, 2)]   # skipped ones too
    one = Detections(np.array([[10, 10, 8, 4, 0.0]]), np.array([0.9]), np.array([1]))
    preds = [dict(img_path=f'{pid}.png', pred_instances=dict(
        bboxes=one.rboxes, scores=one.scores, labels=one.labels))
        for pid in ('a__64__0___0', 'a__64__32___0', 'b__64__0___0')]
    with open(tmp_path / 'p.pkl', 'wb') as f:
        pickle.dump(preds, f)
    with_bar(monkeypatch, 'export_predictions').main(
        [str(tmp_path / 'p.pkl'), '--out-dir', str(tmp_path / 'e'), '--merge-patches'])
    assert [(b.task_num, b.done) for b in RecordingBar.bars] == [(2, 2)]
    assert sorted(os.listdir(tmp_path / 'e'))
