"""Messy real-world annotation files: names ending in numbers, skips that say where
and why, non-UTF-8 files, crossed corner orders, one bad FAIR1M object."""
import cv2
import numpy as np
import pytest

import bhcl.datasets.skip_policy as skip_module
from bhcl.datasets import FAIR1MDataset, HierarchicalDOTADataset, ShipRSImageNetDataset
from bhcl.datasets.dota_txt import (AnnotationError, FileEncodingError, parse_dota_txt,
                                    split_name_difficulty)
from bhcl.datasets.formats import (RawObject, fair1m_xml_string, read_dota_objects,
                                   read_fair1m_xml, read_image_set)
from bhcl.datasets.skip_policy import SkipPolicy
from bhcl.structures import LabelTree

BOX = '0 0 10 0 10 5 0 5'
PLANES = LabelTree.from_paths(['Airplane', 'Airplane/Boeing', 'Airplane/Boeing/Boeing 737',
                               'Airplane/Type', 'Airplane/Type/Type 1', 'Airplane/A 320'])


@pytest.fixture
def logged(record_log):
    """Messages the skip policy logs (its default logger)."""
    return record_log(skip_module, '_warn')


def write_image(path, size=(64, 48)):
    assert cv2.imwrite(str(path), np.full((size[1], size[0], 3), 70, dtype=np.uint8))


def dota_set(root, files, tree=PLANES):
    (root / 'labelTxt').mkdir(parents=True, exist_ok=True)
    (root / 'images').mkdir(parents=True, exist_ok=True)
    for stem, content in files.items():
        path = root / 'labelTxt' / f'{stem}.txt'
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding='utf-8')
        write_image(root / 'images' / f'{stem}.png')
    return dict(label_tree=tree, data_root=str(root), ann_file='labelTxt/',
                data_prefix=dict(img_path='images/'))


# ------------------------------------------------------- names ending in a number
@pytest.mark.parametrize('text, tree, expected', [
    ('Boeing 737', None, ('Boeing 737', 0)),      # 737 is no difficulty value
    ('Boeing 737 1', None, ('Boeing 737', 1)),
    ('Boeing 737 5', None, ('Boeing 737 5', 0)),
    ('Type 1', None, ('Type', 1)),                # tree-free: 0, 1, 2 are difficulties
    ('Small Car', None, ('Small Car', 0)),
    ('737', None, ('737', 0)),                    # a lone token is the name
    ('Boeing 737', PLANES, ('Boeing 737', 0)),
    ('Type 1', PLANES, ('Type', 1)),              # both known: the complete DOTA line wins
    ('Type 1 0', PLANES, ('Type 1', 0)),
    ('A 320 2', PLANES, ('A 320', 2)),
    ('Type 1', LabelTree.from_paths(['Type 1']), ('Type 1', 0)),  # only the full name known
])
def test_name_and_difficulty_rule(text, tree, expected):
    assert split_name_difficulty(text.split(), tree) == expected


def test_tree_aware_reader_keeps_names_ending_in_a_number(tmp_path):
    p = tmp_path / 'a.txt'
    p.write_text(f'{BOX} Boeing 737\n{BOX} Boeing 737 1\n{BOX} Boeing 2\n{BOX} A 320\n')
    res = parse_dota_txt(str(p), PLANES)
    assert [(PLANES.classes[o.label], o.difficulty) for o in res.objects] == [
        ('Boeing 737', 0), ('Boeing 737', 1), ('Boeing', 2), ('A 320', 0)]
    only_boeing = LabelTree.from_paths(['Airplane', 'Airplane/Boeing'])
    p.write_text(f'{BOX} Boeing 737\n')
    with pytest.raises(AnnotationError, match=rf"{p}:1: unknown class name 'Boeing 737'.*"
                                              r"Did you mean 'Boeing'"):
        parse_dota_txt(str(p), only_boeing)


def test_tree_free_reader_keeps_the_whole_name(tmp_path):
    p = tmp_path / 'a.txt'
    p.write_text(f'{BOX} Boeing 737\n{BOX} Boeing 737 1\n{BOX} Type 1\n')
    assert [(o.name, o.difficulty) for o in read_dota_objects(str(p)).objects] == [
        ('Boeing 737', 0), ('Boeing 737', 1), ('Type', 1)]
    tree = LabelTree.from_paths(['Type 1'])
    assert read_dota_objects(str(p), tree).objects[2].name == 'Type 1'


# ------------------------------------------------------------- skip logging
def test_skipped_lines_are_logged_with_file_line_and_reason(tmp_path, logged):
    files = {'a': f'{BOX} Boeing 737\n{BOX} Boing 0\n0 0 10 0 plane\n{BOX} A 320 1\n',
             'b': f'{BOX} Type 1 0\n'}
    ds = HierarchicalDOTADataset(on_invalid='skip', **dota_set(tmp_path, files))
    assert ds.load_stats['skipped_invalid'] == 2 and ds.load_stats['objects'] == 3
    a = tmp_path / 'labelTxt' / 'a.txt'
    assert len(logged) == 3                                  # 2 lines + the summary
    assert logged[0].startswith(f'{a}:2: unknown class name') and 'Skipped' in logged[0]
    assert logged[1].startswith(f'{a}:3: expected "x1 y1')
    assert 'skipped 2 objects (invalid=2)' in logged[2]
    assert ds.skip_policy.messages == logged[:2]


def test_skip_policy_raises_or_counts():
    seen = []
    policy = SkipPolicy('skip', log=seen.append)
    policy.skip(AnnotationError('f.txt:3: bad'))
    policy.skip(FileEncodingError('g.txt: not UTF-8'), unit='image')
    assert policy.counts == {'invalid': 1, 'not_utf8': 1}
    assert seen == ['f.txt:3: bad Skipped this object.', 'g.txt: not UTF-8 Skipped this image.']
    assert policy.summary('x') == ('x: skipped 1 image and 1 object (invalid=1, not_utf8=1); '
                                   'each is logged above with its file and reason')
    with pytest.raises(AnnotationError, match='f.txt:3'):
        SkipPolicy('raise').skip(AnnotationError('f.txt:3: bad'))
    with pytest.raises(ValueError, match="'raise' or 'skip'"):
        SkipPolicy('ignore')


# ------------------------------------------------------------------ encodings
def test_non_utf8_label_file(tmp_path, logged):
    latin1 = f'{BOX} Boeing 737 0\n{BOX} Type 1 0 \u00e9\n'.encode('latin-1')
    kw = dota_set(tmp_path, {'a': f'{BOX} Boeing 737\n', 'b': latin1})
    bad = tmp_path / 'labelTxt' / 'b.txt'
    with pytest.raises(FileEncodingError, match=rf'{bad}: not UTF-8 text \(byte 0xe9 at '
                                                r'offset \d+\).*iconv'):
        HierarchicalDOTADataset(**kw)
    ds = HierarchicalDOTADataset(on_invalid='skip', **kw)
    assert [ds.get_data_info(i)['img_id'] for i in range(len(ds))] == ['a']
    assert ds.load_stats['skipped_not_utf8'] == 1
    assert logged[0].startswith(f'{bad}: not UTF-8') and 'Skipped this image' in logged[0]
    (tmp_path / 'list.txt').write_bytes('caf\xe9.bmp\n'.encode('latin-1'))
    with pytest.raises(FileEncodingError, match='list.txt: not UTF-8'):
        read_image_set(str(tmp_path / 'list.txt'))


def test_non_utf8_xml(tmp_path):
    obj = RawObject(poly=[10, 10, 30, 10, 30, 20, 10, 20], name='Small Car')
    text = fair1m_xml_string('1.tif', [obj]).replace('<origin>GF2/GF3', '<origin>Caf\u00e9')
    undeclared = text.replace('<?xml version="1.0" encoding="utf-8"?>\n', '')
    (tmp_path / 'a.xml').write_bytes(undeclared.encode('latin-1'))
    with pytest.raises(FileEncodingError, match=r'a.xml: not UTF-8 text.*iconv'):
        read_fair1m_xml(str(tmp_path / 'a.xml'))
    (tmp_path / 'c.xml').write_bytes(text.encode('latin-1'))       # claims UTF-8, is not
    with pytest.raises(FileEncodingError, match=r'c.xml: not UTF-8 text'):
        read_fair1m_xml(str(tmp_path / 'c.xml'))
    declared = text.replace('encoding="utf-8"', 'encoding="ISO-8859-1"')
    (tmp_path / 'b.xml').write_bytes(declared.encode('latin-1'))
    assert read_fair1m_xml(str(tmp_path / 'b.xml')).objects[0].name == 'Small Car'


# ------------------------------------------------------------- crossed corners
def test_crossed_dota_quad_is_untangled_like_fair1m(tmp_path):
    crossed = [10, 10, 30, 20, 30, 10, 10, 20]
    p = tmp_path / 'a.txt'
    p.write_text(' '.join(map(str, crossed)) + ' Boeing 737 0\n')
    dota = parse_dota_txt(str(p), PLANES).objects[0].poly
    (tmp_path / 'a.xml').write_text(fair1m_xml_string('a.tif', [RawObject(crossed, 'x')]))
    fair1m = read_fair1m_xml(str(tmp_path / 'a.xml')).objects[0].poly
    assert dota == fair1m == [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]
    assert read_dota_objects(str(p)).objects[0].poly == dota


# --------------------------------------------------------- one bad FAIR1M object
def test_fair1m_bad_object_skips_the_object_not_the_image(tmp_path, logged):
    (tmp_path / 'labelXml').mkdir()
    (tmp_path / 'images').mkdir()
    good = RawObject(poly=[10, 10, 30, 10, 30, 20, 10, 20], name='Small Car')
    text = fair1m_xml_string('1.tif', [good, RawObject([40, 40, 60, 40, 60, 50, 40, 50],
                                                       'Bus'), good])
    points = text.index('<points>', text.index('Bus'))
    end = text.index('</points>', points) + len('</points>')
    (tmp_path / 'labelXml' / '1.xml').write_text(text[:points] + text[end:])
    write_image(tmp_path / 'images' / '1.tif')
    kw = dict(data_root=str(tmp_path), ann_file='labelXml/', data_prefix=dict(img_path='images/'))
    with pytest.raises(AnnotationError, match=r"1.xml: object #1 \('Bus'\): 0 <point>"):
        FAIR1MDataset(**kw)
    ds = FAIR1MDataset(on_invalid='skip', **kw)
    assert len(ds) == 1 and ds.load_stats['objects'] == 2
    assert ds.load_stats['skipped_invalid'] == 1
    assert logged[0].startswith(f"{tmp_path / 'labelXml' / '1.xml'}: object #1 ('Bus')")


def test_shiprs_bad_object_skips_the_object(tmp_path):
    from tests.test_datasets.test_shiprs import make_voc
    kw = make_voc(tmp_path)
    xml = tmp_path / 'Annotations' / '000002.xml'
    xml.write_text(xml.read_text().replace('<x1>20.5</x1>', '', 1))
    with pytest.raises(AnnotationError, match=r"object #0 \('Ticonderoga'\): <polygon> lacks x1"):
        ShipRSImageNetDataset(**kw)
    ds = ShipRSImageNetDataset(on_invalid='skip', **kw)
    assert len(ds) == 2 and ds.load_stats['skipped_invalid'] == 1
    assert ds.load_stats['objects'] == 5
