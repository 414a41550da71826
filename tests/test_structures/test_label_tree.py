import ast
import json
import os.path as osp

import numpy as np
import pytest

from bhcl.structures.label_tree import LabelTree, LabelTreeError, UnknownClassError
from tests.conftest import DATA_DIR, REPO_ROOT, tree_config


def small_tree():
    return LabelTree.from_paths(['A', 'A/B', 'A/B/B1', 'A/B/B2', 'A/C', 'D', 'D/D1'])


def test_structure_of_small_tree():
    t = small_tree()
    assert t.classes == ('A', 'B', 'B1', 'B2', 'C', 'D', 'D1')
    assert t.parent == (-1, 0, 1, 1, 0, -1, 5)
    assert t.depth == (0, 1, 2, 2, 1, 0, 1)
    assert t.num_levels == 3
    assert t.leaf_ids == (2, 3, 4, 6)
    expected = np.array([[0, -1, -1], [0, 1, -1], [0, 1, 2], [0, 1, 3],
                         [0, 4, -1], [5, -1, -1], [5, 6, -1]])
    np.testing.assert_array_equal(t.ancestors, expected)
    np.testing.assert_array_equal(t.level_masks.astype(int),
                                  [[1, 0, 0, 0, 0, 1, 0], [0, 1, 0, 0, 1, 0, 1], [0, 0, 1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(t.ancestor_at([2, 4, 6], 1), [1, 4, 6])
    assert t.path(3) == ['A', 'B', 'B2']
    assert t.children[0] == (1, 4)


def test_parent_map_and_config_round_trip():
    t = small_tree()
    t2 = LabelTree.from_parents({'A': None, 'B': 'A', 'B1': 'B', 'B2': 'B', 'C': 'A',
                                 'D': None, 'D1': 'D'})
    assert t == t2
    assert LabelTree.from_config(t.to_config()) == t
    assert LabelTree.from_config(dict(paths=[['A'], ['A', 'B']])).classes == ('A', 'B')


@pytest.mark.parametrize('kwargs, match', [
    (dict(paths=[]), 'empty'),
    (dict(paths=['A', 'A/B', 'B']), "duplicate node name 'B'"),
    (dict(paths=['A', 'X/B']), "node 'B' has unknown parent 'X'"),
    (dict(parents={'A': 'C', 'B': 'A', 'C': 'B'}), 'cycle in label tree'),
    (dict(paths=['A', 'A/B', 'A/C', 'B/C2']), 'disagrees'),
    (dict(paths=['A'], parents={'A': None}), 'exactly one of'),
])
def test_invalid_trees_name_the_problem(kwargs, match):
    with pytest.raises(LabelTreeError, match=match):
        LabelTree.from_config(kwargs)


def test_cycle_names_every_node_of_the_cycle():
    with pytest.raises(LabelTreeError) as e:
        LabelTree.from_parents({'R': None, 'A': 'C', 'B': 'A', 'C': 'B'})
    for name in 'ABC':
        assert name in str(e.value)


def test_other_reallocation_rules():
    ship = LabelTree.from_config(tree_config('shiprs'))
    assert ship.resolve('Other Destroyer') == ship.index('Destroyer')
    assert ship.resolve('Other Auxiliary Ship') == ship.index('Auxiliary Ship')
    assert ship.resolve('Other Ship') == ship.index('Ship')
    assert ship.resolve('Auxiliary Ships') == ship.index('Auxiliary Ship')
    assert ship.resolve('Dock') is None
    assert ship.resolve('Arleigh Burke DD') == 28
    fair = LabelTree.from_config(tree_config('fair1m'))
    assert fair.resolve('other-airplane') == fair.index('Airplane')
    assert fair.resolve('other-vehicle') == fair.index('Vehicle')
    assert fair.resolve('Small_Car') == fair.index('Small Car')
    custom = LabelTree.from_paths(['Plane', 'Plane/Jet'], other_patterns=[r'^misc (.+)$'])
    assert custom.resolve('misc plane') == 0


def test_unknown_name_lists_known_names_and_suggests():
    ship = LabelTree.from_config(tree_config('shiprs'))
    with pytest.raises(UnknownClassError) as e:
        ship.resolve('Arleigh Burk DD')
    msg = str(e.value)
    assert "'Arleigh Burk DD'" in msg and "Did you mean 'Arleigh Burke DD'" in msg
    assert 'Midway' in msg and 'label tree' in msg
    with pytest.raises(UnknownClassError):
        ship.resolve('Other Spaceship')   # an "Other" rule whose target does not exist


@pytest.mark.parametrize('name, nodes, leaves, levels', [
    ('shiprs', 49, 41, 4), ('fair1m', 39, 34, 2)])
def test_dataset_trees_match_reference(name, nodes, leaves, levels):
    ref_file = {'shiprs': 'shiprsimagenet_bhcl_tree.json', 'fair1m': 'fair1m_bhcl_tree.json'}[name]
    with open(osp.join(DATA_DIR, 'trees', ref_file)) as f:
        ref = json.load(f)
    t = LabelTree.from_config(tree_config(name))
    assert (t.num_classes, len(t.leaf_ids), t.num_levels) == (nodes, leaves, levels)
    assert list(t.classes) == ref['classes']
    assert list(t.leaf_ids) == ref['leaf_indices']
    for node in ref['nodes']:
        assert t.depth[node['index']] == node['level']
        assert t.parent[node['index']] == (-1 if node['parent_index'] is None else node['parent_index'])
    assert LabelTree.from_json(osp.join(DATA_DIR, 'trees', ref_file)) == t
    if 'official_label_to_bhcl_node' in ref:
        for official, node in ref['official_label_to_bhcl_node'].items():
            assert t.resolve(official) == (None if node is None else t.index(node)), official


def test_num_classes_in_tree_configs():
    import runpy
    for name in ('shiprs', 'fair1m', 'synthetic'):
        ns = runpy.run_path(osp.join(REPO_ROOT, 'configs/_base_/datasets', f'{name}_label_tree.py'))
        assert ns['num_classes'] == LabelTree.from_config(ns['label_tree']).num_classes


def test_label_tree_module_has_no_mm_imports():
    src = open(osp.join(REPO_ROOT, 'bhcl', 'structures', 'label_tree.py')).read()
    mods = set()
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            mods.update(a.name.split('.')[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split('.')[0])
    assert not {m for m in mods if m.startswith('mm')}, mods
