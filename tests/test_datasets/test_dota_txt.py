import os.path as osp

import pytest

from bhcl.datasets.dota_txt import AnnotationError, format_dota_line, parse_dota_txt
from bhcl.structures.label_tree import LabelTree
from tests.conftest import DATA_DIR, tree_config

DOTA_V1 = LabelTree.from_paths(
    ['plane', 'baseball-diamond', 'bridge', 'ground-track-field', 'small-vehicle',
     'large-vehicle', 'ship', 'tennis-court', 'basketball-court', 'storage-tank',
     'soccer-ball-field', 'roundabout', 'harbor', 'swimming-pool', 'helicopter'])


def fixture(name):
    return osp.join(DATA_DIR, 'dota_txt', name)


def test_original_dota_with_header_lines():
    res = parse_dota_txt(fixture('dota_v1_labelTxt_with_header.txt'), DOTA_V1)
    assert res.skipped == {'header': 2}
    assert [o.name for o in res.objects] == ['plane', 'large-vehicle', 'small-vehicle',
                                             'large-vehicle', 'ship']
    assert [o.difficulty for o in res.objects] == [0, 0, 1, 1, 2]
    assert res.objects[0].poly == [2753.0, 2408.0, 2861.0, 2385.0, 2888.0, 2468.0, 2805.0, 2502.0]
    assert [o.line for o in res.objects] == [3, 4, 5, 6, 7]


def test_gsd_null_header():
    res = parse_dota_txt(fixture('dota_v1_labelTxt_gsd_null.txt'), DOTA_V1)
    assert res.skipped == {'header': 2} and len(res.objects) == 1


def test_shiprs_names_with_spaces_and_other_reallocation():
    tree = LabelTree.from_config(tree_config('shiprs'))
    res = parse_dota_txt(fixture('bhcl_shiprs_dota_format.txt'), tree)
    got = [(o.name, tree.classes[o.label], o.difficulty) for o in res.objects]
    assert got == [('Arleigh Burke DD', 'Arleigh Burke DD', 0), ('Other Warship', 'Warship', 0),
                   ('Fishing Vessel', 'Fishing Vessel', 1), ('LSD 41 LL', 'LSD 41 LL', 0),
                   ('Other Ship', 'Ship', 0)]


def test_fair1m_spaces_and_other():
    tree = LabelTree.from_config(tree_config('fair1m'))
    res = parse_dota_txt(fixture('bhcl_fair1m_dota_format_spaces.txt'), tree)
    assert [tree.classes[o.label] for o in res.objects] == [
        'Small Car', 'Airplane', 'Liquid Cargo Ship', 'Vehicle']


def test_missing_difficulty_and_name_ending_in_number(tmp_path):
    tree = LabelTree.from_paths(['Type 45', 'Ship'])
    p = tmp_path / 'a.txt'
    p.write_text('0 0 10 0 10 5 0 5 Type 45\n0 0 10 0 10 5 0 5 Type 45 1\n0 0 10 0 10 5 0 5 Ship\n')
    res = parse_dota_txt(str(p), tree)
    assert [(o.label, o.difficulty) for o in res.objects] == [(0, 0), (0, 1), (1, 0)]


def test_ignored_names_are_counted(tmp_path):
    tree = LabelTree.from_config(tree_config('shiprs'))
    p = tmp_path / 'a.txt'
    p.write_text('0 0 10 0 10 5 0 5 Dock 0\n0 0 10 0 10 5 0 5 Barge 0\n0 0 10 0 10 5 0 5 Dock 1\n')
    res = parse_dota_txt(str(p), tree)
    assert len(res.objects) == 1 and res.skipped == {'ignored:Dock': 2}


@pytest.mark.parametrize('line, match', [
    ('0 0 10 0 10 5 plane', r'expected "x1 y1'),
    ('0 0 10 0 10 5 0 plane 0', 'must be numbers'),
    ('0 0 10 0 10 five 0 5 plane 0', 'must be numbers'),
    ('0 0 10 0 10 5 0 5 airplane 0', "unknown class name 'airplane'.*Did you mean 'plane'"),
    ('0 0 10 0 20 0 30 0 plane 0', 'degenerate box'),
    ('0 0 10 0 10 nan 0 5 plane 0', 'non-finite'),
])
def test_bad_lines_name_file_and_line(tmp_path, line, match):
    p = tmp_path / 'bad.txt'
    p.write_text('imagesource:x\n0 0 10 0 10 5 0 5 plane 0\n' + line + '\n')
    with pytest.raises(AnnotationError, match=match) as e:
        parse_dota_txt(str(p), DOTA_V1)
    assert f'{p}:3' in str(e.value)
    res = parse_dota_txt(str(p), DOTA_V1, on_invalid='skip')
    assert len(res.objects) == 1 and res.skipped == {'header': 1, 'invalid': 1}


def test_empty_file_has_no_objects(tmp_path):
    p = tmp_path / 'empty.txt'
    p.write_text('')
    res = parse_dota_txt(str(p), DOTA_V1)
    assert res.objects == [] and not res.skipped


def test_format_round_trip(tmp_path):
    tree = LabelTree.from_config(tree_config('shiprs'))
    p = tmp_path / 'a.txt'
    p.write_text(format_dota_line([1, 2, 3, 2, 3, 4, 1, 4], 'LSD 41 LL', 1) + '\n'
                 + format_dota_line([1, 2, 3, 2, 3, 4, 1, 4], 'Barge', None) + '\n')
    res = parse_dota_txt(str(p), tree)
    assert [(tree.classes[o.label], o.difficulty) for o in res.objects] == [('LSD 41 LL', 1), ('Barge', 0)]
