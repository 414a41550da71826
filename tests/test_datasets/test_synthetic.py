import hashlib
import os
import os.path as osp

import numpy as np
import pytest
from shapely.geometry import Polygon

from bhcl.datasets.dota_txt import parse_dota_txt
from bhcl.datasets.synthetic import (CUE_NAMES, SyntheticConfig, class_styles,
                                     generate_synthetic_dataset, leaf_counts, leaf_frequencies,
                                     node_styles, training_pool)
from bhcl.structures.label_tree import LabelTree
from tests.conftest import tree_config

TREE_CFG = tree_config('synthetic')
TREE = LabelTree.from_config(TREE_CFG)


def digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            if f != 'meta.json':
                h.update(open(osp.join(root, f), 'rb').read())
    return h.hexdigest()


@pytest.fixture(scope='module')
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp('syn')
    cfg = SyntheticConfig(num_train=40, num_val=4, img_size=160, seed=3)
    meta = generate_synthetic_dataset(str(out), TREE_CFG, cfg)
    return out, cfg, meta


def test_tree_has_three_levels_and_two_families():
    assert TREE.num_levels >= 3
    assert len(TREE.nodes_at_level(0)) == 2


def test_deterministic_and_kept_when_settings_match(dataset, tmp_path):
    out, cfg, meta = dataset
    other = tmp_path / 'again'
    generate_synthetic_dataset(str(other), TREE_CFG, cfg)
    assert digest(out) == digest(other)
    stamp = os.path.getmtime(other / 'train' / 'images' / 'train_00000.png')
    assert generate_synthetic_dataset(str(other), TREE_CFG, cfg) == meta
    assert os.path.getmtime(other / 'train' / 'images' / 'train_00000.png') == stamp
    changed = generate_synthetic_dataset(str(other), TREE_CFG, SyntheticConfig(
        num_train=40, num_val=4, img_size=160, seed=4))
    assert digest(other) != digest(out) and changed != meta


def read_split(out, split, tree=TREE):
    objs = []
    for f in sorted(os.listdir(out / split / 'labelTxt')):
        res = parse_dota_txt(str(out / split / 'labelTxt' / f), tree)
        assert res.skipped == {'header': 2}
        objs.append(res.objects)
    return objs


def test_annotations_parse_and_cover_the_tree(dataset):
    out, cfg, meta = dataset
    per_image = read_split(out, 'train')
    assert len(per_image) == cfg.num_train
    assert len(os.listdir(out / 'train' / 'images')) == cfg.num_train
    counts = [len(o) for o in per_image]
    assert min(counts) >= 2 and max(counts) <= cfg.max_objects
    objs = [o for img in per_image for o in img]
    names = {o.name for o in objs}
    assert any(' ' in n for n in names)
    others = [o for o in objs if o.name.startswith('Other ')]
    assert others and all(not TREE.is_leaf(o.label) for o in others)
    assert sum(meta['counts']['train'].values()) == len(objs)


def test_long_tailed_leaves(dataset):
    w = leaf_frequencies(TREE, imbalance=30.0, seed=0)
    assert set(w) == set(TREE.leaf_ids)
    assert max(w.values()) / min(w.values()) == pytest.approx(30.0)
    out, _, _ = dataset
    objs = [o for img in read_split(out, 'train') for o in img if TREE.is_leaf(o.label)]
    counts = np.bincount([o.label for o in objs], minlength=TREE.num_classes)[list(TREE.leaf_ids)]
    assert counts.max() >= 10 * max(counts.min(), 1)


def test_border_and_overlapping_objects(dataset):
    out, cfg, _ = dataset
    per_image = read_split(out, 'train')
    size = cfg.img_size
    truncated = [o for img in per_image for o in img if o.difficulty == 1]
    assert truncated
    for o in truncated:
        xs, ys = o.poly[0::2], o.poly[1::2]
        assert min(xs) < 0 or min(ys) < 0 or max(xs) > size or max(ys) > size
    overlaps = 0
    for img in per_image:
        polys = [Polygon(np.reshape(o.poly, (4, 2))) for o in img]
        overlaps += sum(polys[i].intersects(polys[j])
                        for i in range(len(polys)) for j in range(i + 1, len(polys)))
    assert overlaps > 0


def test_siblings_differ_subtly_parents_coarsely():
    styles = class_styles(TREE)
    s = {TREE.classes[k]: st for k, st in enumerate(styles)}
    a, b = s['Destroyer'], s['Frigate']
    assert (a.family, a.colour, a.bow) == (b.family, b.colour, b.bow)
    assert a.marks != b.marks and a.aspect != b.aspect
    assert s['Destroyer'].colour != s['Container Ship'].colour
    assert s['Destroyer'].family != s['Twin Jet'].family
    assert s['Warship'].marks == 0   # "Other Warship" carries no child's cue


def test_images_show_the_objects(dataset):
    import cv2
    out, _, _ = dataset
    img = cv2.imread(str(out / 'train' / 'images' / 'train_00000.png'))
    objs = read_split(out, 'train')[0]
    o = next(o for o in objs if o.difficulty == 0)
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(np.reshape(o.poly, (4, 2))).astype(np.int32)], 1)
    inside = img[mask > 0].astype(float).mean(0)
    ring = cv2.dilate(mask, np.ones((9, 9), np.uint8)) - mask
    outside = img[ring > 0].astype(float).mean(0)
    assert np.abs(inside - outside).max() > 10   # the object stands out from the background


def test_presets():
    assert SyntheticConfig.preset('large').num_train > SyntheticConfig.preset('small').num_train
    with pytest.raises(ValueError, match='unknown synthetic preset'):
        SyntheticConfig.preset('huge')


def test_balanced_validation_keeps_train_long_tailed(tmp_path):
    """``val_balanced``: validation leaves uniform (every class testable),
    training leaves as long-tailed as without it (same train files)."""
    cfg = SyntheticConfig(num_train=60, num_val=60, img_size=96, min_objects=3,
                          max_objects=4, min_length=20.0, max_length=30.0, seed=5)
    plain = generate_synthetic_dataset(str(tmp_path / 'plain'), TREE_CFG, cfg)
    cfg.val_balanced = True
    bal = generate_synthetic_dataset(str(tmp_path / 'bal'), TREE_CFG, cfg)
    assert bal['counts']['train'] == plain['counts']['train']
    assert digest(tmp_path / 'bal' / 'train') == digest(tmp_path / 'plain' / 'train')
    leaves = [TREE.classes[k] for k in TREE.leaf_ids]
    val = np.array([bal['counts']['val'].get(n, 0) for n in leaves])
    skewed = np.array([plain['counts']['val'].get(n, 0) for n in leaves])
    # ~20 objects per leaf: a uniform draw stays within a few x, the long tail does not
    assert val.min() >= 8 and val.max() <= 3 * val.min()
    assert skewed.max() >= 8 * max(skewed.min(), 1)
    bench = SyntheticConfig.preset('bench')
    assert bench.val_balanced and bench.imbalance >= 30


# ------------------------------------------------ the 'hierarchical' preset
HIER_CFG = tree_config('synthetic_hierarchical')
HIER = LabelTree.from_config(HIER_CFG)


def test_old_presets_record_no_new_settings(tmp_path):
    """The cue scheme and exact counts are left out of an old preset's settings (so its
    meta.json, like its files, is what generator version 2 wrote)."""
    meta = generate_synthetic_dataset(str(tmp_path), TREE_CFG, SyntheticConfig(
        num_train=2, num_val=1, img_size=96, seed=2))
    assert 'cues' not in meta['settings'] and 'leaf_counts' not in meta['settings']


def test_hierarchical_tree_has_four_levels_and_node_specific_cues():
    assert HIER.num_levels == 4
    styles = node_styles(HIER)
    for level, name in enumerate(CUE_NAMES):
        nodes = HIER.nodes_at_level(level)
        values = [getattr(styles[k], name) for k in nodes]
        assert None not in values and len(set(values)) == len(nodes)  # no two nodes share one
        for k in range(HIER.num_classes):
            anc = HIER.ancestors[k, level]
            value = getattr(styles[k], name)
            if anc < 0:   # shallower node ("Other X" objects): no cue of a deeper level
                assert value is None
                continue
            assert value == getattr(styles[anc], name)   # shared by every descendant
            others = [j for j in range(HIER.num_classes) if HIER.ancestors[j, level] >= 0
                      and HIER.ancestors[j, level] != anc]
            assert all(getattr(styles[j], name) != value for j in others)  # no other branch


def test_rank_cues_repeat_across_branches_node_cues_do_not():
    """The old scheme gives the first child of every parent the same marks: what a flat
    classifier learns once for all parents; the node scheme never repeats a value."""
    rank = class_styles(TREE)
    first_children = [TREE.children[p][0] for p in TREE.nodes_at_level(1)]
    assert len({rank[k].marks for k in first_children}) == 1
    node = node_styles(HIER)
    firsts = [HIER.children[p][0] for p in HIER.nodes_at_level(2)]
    assert len({node[k].detail for k in firsts}) == len(firsts)


def test_node_cues_refuse_trees_they_cannot_draw():
    five = LabelTree.from_config(dict(paths=['a', 'a/b', 'a/b/c', 'a/b/c/d', 'a/b/c/d/e']))
    with pytest.raises(ValueError, match='at most 4 levels'):
        node_styles(five)
    wide = LabelTree.from_config(dict(paths=['a', 'b', 'c', 'd']))
    with pytest.raises(ValueError, match='level 0 has 4 nodes'):
        node_styles(wide)
    with pytest.raises(ValueError, match='cues must be'):
        SyntheticConfig(cues='colour')
    with pytest.raises(ValueError, match='leaf_counts'):
        SyntheticConfig(leaf_counts=(3, 5))


def test_hierarchical_preset_long_tail_numbers():
    cfg = SyntheticConfig.preset('hierarchical')
    assert cfg.cues == 'node' and cfg.img_size == 128 and cfg.val_balanced
    assert cfg.num_val >= 1000
    counts = sorted(leaf_counts(HIER, *cfg.leaf_counts, cfg.seed).values())
    assert len(counts) == 24 and sum(counts) == 2731
    assert counts[-1] / counts[0] >= 100
    tail = counts[:len(counts) // 3]   # the least frequent third (the tail group)
    assert min(tail) == 5 and max(tail) == 20
    # the same leaves are head / tail as under the sampled weights of the same seed
    w = leaf_frequencies(HIER, 100.0, cfg.seed)
    c = leaf_counts(HIER, *cfg.leaf_counts, cfg.seed)
    assert sorted(c, key=c.get) == sorted(w, key=w.get)


@pytest.fixture(scope='module')
def hierarchical(tmp_path_factory):
    out = tmp_path_factory.mktemp('hier')
    cfg = SyntheticConfig.preset('hierarchical', num_train=50, num_val=30, leaf_counts=(30, 1),
                                 seed=1)
    return out, cfg, generate_synthetic_dataset(str(out), HIER_CFG, cfg)


def test_hierarchical_is_deterministic_with_exact_leaf_counts(hierarchical, tmp_path):
    out, cfg, meta = hierarchical
    generate_synthetic_dataset(str(tmp_path), HIER_CFG, cfg)
    assert digest(tmp_path) == digest(out)
    target = leaf_counts(HIER, 30, 1, cfg.seed)
    train = meta['counts']['train']
    assert {k: train.get(HIER.classes[k], 0) for k in target} == target
    objs = [o for img in read_split(out, 'train', HIER) for o in img]
    assert len(objs) == sum(train.values()) == len(training_pool(HIER, cfg))
    others = [o for o in objs if o.name.startswith('Other ')]
    assert others and all(not HIER.is_leaf(o.label) for o in others)
    assert meta['settings']['cues'] == 'node' and meta['settings']['leaf_counts'] == [30, 1]
    # cached: settings read back from JSON match (a tuple is stored as a list)
    assert generate_synthetic_dataset(str(out), HIER_CFG, cfg) == meta
