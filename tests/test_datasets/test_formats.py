"""XML / tree-free DOTA readers and the FAIR1M XML writer (bhcl.datasets.formats)."""
import os.path as osp
import runpy

import pytest

from bhcl.datasets.dota_txt import AnnotationError
from bhcl.datasets.formats import (RawObject, check_shiprs_levels, fair1m_xml_string,
                                   read_dota_objects, read_fair1m_xml, read_image_set,
                                   read_shiprs_xml, resolve_objects, untangle_quad)
from bhcl.structures import LabelTree
from tests.conftest import CONFIG_DIR, DATA_DIR, tree_config

SHIPRS_XML = osp.join(DATA_DIR, 'shiprs_voc', '000002.xml')
LEVELS = runpy.run_path(osp.join(CONFIG_DIR, '_base_', 'datasets',
                                 'shiprs_official_levels.py'))['shiprs_level_names']


@pytest.fixture(scope='module')
def shiprs_tree():
    return LabelTree.from_config(tree_config('shiprs'))


@pytest.fixture(scope='module')
def fair1m_tree():
    return LabelTree.from_config(tree_config('fair1m'))


def test_read_shiprs_xml_reconstructed_example():
    ann = read_shiprs_xml(osp.join(DATA_DIR, 'shiprs_voc', '000001.xml'))
    assert (ann.filename, ann.width, ann.height) == ('000001.bmp', 930, 930)
    assert len(ann.objects) == 1
    obj = ann.objects[0]
    assert obj.name == 'Arleigh Burke DD'
    assert obj.poly == [420.0, 300.0, 520.0, 310.0, 517.0, 340.0, 417.0, 330.0]
    assert (obj.difficulty, obj.truncated, obj.levels) == (0, 0, (1, 2, 6, 11))


def test_read_shiprs_xml_all_fields():
    ann = read_shiprs_xml(SHIPRS_XML)
    assert [o.name for o in ann.objects] == ['Ticonderoga', 'Other Warship', 'Medical Ship',
                                             'Dock', 'Fishing Vessel', 'Other Ship']
    assert [o.difficulty for o in ann.objects] == [0, 1, 0, 0, 0, 0]
    assert [o.truncated for o in ann.objects] == [0, 0, 1, 0, 0, 0]
    assert ann.objects[0].poly == [20.5, 30.0, 80.0, 24.0, 83.0, 44.0, 23.5, 50.0]
    assert ann.objects[3].levels == (2, 4, 25, 50)
    assert [o.index for o in ann.objects] == list(range(6))


def test_shiprs_levels_are_one_based_indices_into_the_official_lists(shiprs_tree):
    for path in ('000001.xml', '000002.xml'):
        ann = read_shiprs_xml(osp.join(DATA_DIR, 'shiprs_voc', path))
        resolved = resolve_objects(ann, shiprs_tree)
        assert resolved.objects
        for obj, label in resolved.objects:
            assert check_shiprs_levels(obj, label, shiprs_tree, LEVELS) is None, obj
    obj = RawObject(poly=[0] * 8, name='Arleigh Burke DD', levels=(1, 2, 6, 10))
    label = shiprs_tree.index('Arleigh Burke DD')
    assert "means 'Atago DD'" in check_shiprs_levels(obj, label, shiprs_tree, LEVELS)
    obj.levels = (1, 3, 6, 11)                      # level_1 'Merchant' is no ancestor
    assert "'Merchant'" in check_shiprs_levels(obj, label, shiprs_tree, LEVELS)
    obj.levels = (1, 2, 6, 51)
    assert 'outside 1..50' in check_shiprs_levels(obj, label, shiprs_tree, LEVELS)
    obj.levels = (None, None, None, None)
    assert check_shiprs_levels(obj, label, shiprs_tree, LEVELS) is None


def test_resolve_drops_dock_and_reallocates_other(shiprs_tree):
    resolved = resolve_objects(read_shiprs_xml(SHIPRS_XML), shiprs_tree)
    names = [shiprs_tree.classes[label] for _, label in resolved.objects]
    assert names == ['Ticonderoga', 'Warship', 'Medical Ship', 'Fishing Vessel', 'Ship']
    assert resolved.skipped == {'ignored:Dock': 1}


def test_read_fair1m_xml(fair1m_tree):
    ann = read_fair1m_xml(osp.join(DATA_DIR, 'fair1m_xml', '1.xml'))
    assert (ann.filename, ann.width, ann.height) == ('1.tif', 1000, 1000)
    assert [o.name for o in ann.objects] == ['Small Car', 'other-airplane']
    assert ann.objects[0].poly == [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]
    assert all(o.difficulty == 0 and o.score is None for o in ann.objects)
    labels = [label for _, label in resolve_objects(ann, fair1m_tree).objects]
    assert labels == [fair1m_tree.index('Small Car'), fair1m_tree.index('Airplane')]
    tiny = read_fair1m_xml(osp.join(DATA_DIR, 'fair1m_xml', '0.xml'))
    assert tiny.objects[0].name == 'Liquid Cargo Ship'
    assert tiny.objects[0].poly == [0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 1.0]


def test_fair1m_crossed_corner_order_is_untangled(tmp_path):
    crossed = RawObject(poly=[10, 10, 30, 20, 30, 10, 10, 20], name='Small Car')
    ccw = RawObject(poly=[100, 100, 100, 160, 160, 160, 160, 100], name='Bus')
    (tmp_path / 'x.xml').write_text(fair1m_xml_string('x.tif', [crossed, ccw]))
    ann = read_fair1m_xml(str(tmp_path / 'x.xml'))
    assert ann.objects[0].poly == [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]
    assert ann.objects[1].poly == ccw.poly                 # a simple order is kept as written
    assert untangle_quad([0, 0, 10, 10, 10, 0, 0, 10]) == [0, 0, 10, 0, 10, 10, 0, 10]
    assert untangle_quad([10, 0, 0, 10, 0, 0, 10, 10]) == [10, 0, 10, 10, 0, 10, 0, 0]


def test_read_fair1m_submission_has_probability():
    ann = read_fair1m_xml(osp.join(DATA_DIR, 'fair1m_submission', 'test', '1.xml'))
    assert ann.width is None
    assert ann.objects[0].score == pytest.approx(0.9321)
    assert ann.objects[0].poly == [10.0, 10.0, 30.0, 10.0, 30.0, 20.0, 10.0, 20.0]


def test_fair1m_xml_writer_round_trip(tmp_path):
    objs = [RawObject(poly=[1.25, 2.5, 40.0, 2.5, 40.0, 9.75, 1.25, 9.75], name='Small Car'),
            RawObject(poly=[100, 100, 160, 110, 150, 170, 90, 160], name='other-ship', score=0.5)]
    text = fair1m_xml_string('7.tif', objs, width=800, height=600)
    assert text.count('<point>') == 10
    assert '<point>1.25,2.50</point>' in text
    path = tmp_path / '7.xml'
    path.write_text(text)
    ann = read_fair1m_xml(str(path))
    assert (ann.filename, ann.width, ann.height) == ('7.tif', 800, 600)
    assert [o.poly for o in ann.objects] == [o.poly for o in objs[:1]] + [
        [100.0, 100.0, 160.0, 110.0, 150.0, 170.0, 90.0, 160.0]]
    assert [o.score for o in ann.objects] == [None, 0.5]
    assert [o.name for o in ann.objects] == ['Small Car', 'other-ship']


def replace_in(src, dst, old, new, count=1):
    text = open(src).read()
    assert old in text
    dst.write_text(text.replace(old, new, count))
    return str(dst)


@pytest.mark.parametrize('old,new,match', [
    ('</annotation>', '', r'000002.xml: malformed XML'),
    ('<x3>83.0</x3>', '', r'object #0 \(\'Ticonderoga\'\): <polygon> lacks x3'),
    ('<y2>20.0</y2>', '<y2>twenty</y2>', r'object #1 .*<y2> must be a number'),
    ('<name>Medical Ship</name>', '', r'object #2: no <name>'),
])
def test_shiprs_bad_input_names_file_and_object(tmp_path, old, new, match):
    path = replace_in(SHIPRS_XML, tmp_path / '000002.xml', old, new)
    with pytest.raises(AnnotationError, match=match):
        read_shiprs_xml(path)


def test_shiprs_missing_polygon(tmp_path):
    text = open(SHIPRS_XML).read()
    start, end = text.index('<polygon>'), text.index('</polygon>') + len('</polygon>')
    (tmp_path / 'x.xml').write_text(text[:start] + text[end:])
    with pytest.raises(AnnotationError, match=r'object #0 .*no <polygon>.*bndbox'):
        read_shiprs_xml(str(tmp_path / 'x.xml'))


@pytest.mark.parametrize('old,new,match', [
    ('<point>30.000000,20.000000</point>\n\t\t\t\t<point>10.000000,20.000000</point>\n'
     '\t\t\t\t<point>10.000000,10.000000</point>', '', r"object #0 \('Small Car'\): 2 <point>"),
    ('<point>160.000000,100.000000</point>', '<point>160.0;100.0</point>',
     r'object #1 .*"x,y"'),
    ('<name>Small Car</name>', '<name></name>', r'object #0: no <possibleresult><name>'),
    ('<objects>', '<objects', r'malformed XML'),
])
def test_fair1m_bad_input_names_file_and_object(tmp_path, old, new, match):
    path = replace_in(osp.join(DATA_DIR, 'fair1m_xml', '1.xml'), tmp_path / '1.xml', old, new)
    with pytest.raises(AnnotationError, match=match):
        read_fair1m_xml(path)


def test_unknown_class_and_degenerate_polygon(tmp_path, fair1m_tree):
    path = replace_in(osp.join(DATA_DIR, 'fair1m_xml', '1.xml'), tmp_path / '1.xml',
                      '<name>Small Car</name>', '<name>Smal Car</name>')
    ann = read_fair1m_xml(path)
    with pytest.raises(AnnotationError, match=r"1.xml: object #0 \('Smal Car'\): unknown class "
                                              r"name 'Smal Car'.*Did you mean 'Small Car'"):
        resolve_objects(ann, fair1m_tree)
    ann.objects[0].name = 'Small Car'
    ann.objects[1].poly = [100, 100, 160, 100, 160, 100, 100, 100]
    with pytest.raises(AnnotationError, match=r"object #1 \('other-airplane'\): degenerate"):
        resolve_objects(ann, fair1m_tree)
    skipped = resolve_objects(ann, fair1m_tree, on_invalid='skip')
    assert len(skipped.objects) == 1 and skipped.skipped == {'invalid': 1}
    assert 'degenerate' in skipped.problems[0]


def test_read_dota_objects_keeps_names_and_headers():
    ann = read_dota_objects(osp.join(DATA_DIR, 'dota_txt',
                                     'jdet_lsknet_fair1m_dota_format_underscores.txt'))
    assert ann.header_lines == 2
    assert [o.name for o in ann.objects] == ['Small_Car', 'other-airplane', 'Liquid_Cargo_Ship']
    assert [o.line for o in ann.objects] == [3, 4, 5]
    ann = read_dota_objects(osp.join(DATA_DIR, 'dota_txt', 'bhcl_shiprs_dota_format.txt'))
    assert [o.name for o in ann.objects] == ['Arleigh Burke DD', 'Other Warship',
                                             'Fishing Vessel', 'LSD 41 LL', 'Other Ship']
    assert [o.difficulty for o in ann.objects] == [0, 0, 1, 0, 0]
    assert ann.objects[3].poly == [700.0, 200.0, 760.0, 200.0, 760.0, 215.0, 700.0, 215.0]


def test_read_dota_objects_bad_line(tmp_path):
    (tmp_path / 'a.txt').write_text('1 2 3 4 5 6 7 8 Small Car 0\n1 2 3 x 5 6 7 8 Bus 0\n')
    with pytest.raises(AnnotationError, match=r'a.txt:2: the first 8 fields must be numbers'):
        read_dota_objects(str(tmp_path / 'a.txt'))
    (tmp_path / 'b.txt').write_text('1 2 3 4 5 6 7 8\n')
    with pytest.raises(AnnotationError, match=r'b.txt:1: expected .* got 8 fields'):
        read_dota_objects(str(tmp_path / 'b.txt'))


def test_read_image_set(tmp_path):
    (tmp_path / 'train.txt').write_text('000001.bmp\n\n000002\nname with spaces.bmp\n')
    assert read_image_set(str(tmp_path / 'train.txt')) == ['000001', '000002',
                                                           'name with spaces']
    (tmp_path / 'empty.txt').write_text('\n')
    with pytest.raises(AnnotationError, match='empty'):
        read_image_set(str(tmp_path / 'empty.txt'))
