import numpy as np
import pytest

from bhcl.evaluation.functional import (Detections, GroundTruth, eval_hierarchical_map,
                                        eval_rotated_map, merge_identical_boxes)
from bhcl.structures.label_tree import LabelTree
from tests.test_evaluation.test_rotated_map import random_dataset

# A -> {A1 -> {A1a, A1b}, A2};  B is a leaf at level 0
TREE = LabelTree(['A', 'A1', 'A2', 'A1a', 'A1b', 'B'], [None, 'A', 'A', 'A1', 'A1', None])
A, A1, A2, A1a, A1b, B = range(6)


def spot(i):
    """A 10 x 10 square at the i-th spot; spots never overlap."""
    x = 20.0 * i
    return [x, 0, x + 10, 0, x + 10, 10, x, 10]


def hand_case():
    # ground truth: A1a at spot 0, A1b at 1, A2 at 2, an "Other A1" (node A1)
    # at 3, B at 4
    gts = GroundTruth(np.zeros(5, int), np.array([spot(i) for i in range(5)]),
                      np.array([A1a, A1b, A2, A1, B]), np.zeros(5, bool))
    # predictions are leaves (as a leaf-masked detector gives)
    det_spots = [0, 1, 1, 2, 3, 5, 4]
    dets = Detections(np.zeros(7, int), np.array([spot(i) for i in det_spots]),
                      np.array([0.9, 0.8, 0.7, 0.6, 0.75, 0.95, 0.65]),
                      np.array([A1a, A1a, A1b, A2, A1b, B, A2]))
    return dets, gts


def evaluate(**kwargs):
    dets, gts = hand_case()
    return eval_hierarchical_map(dets, gts, TREE, [0.5], eval_mode='area', iou_type='poly',
                                 **kwargs)


def test_node_and_leaf_map_by_hand():
    res = evaluate()
    # A1a: TP .9, FP .8 -> 1;  A1b: FP .75 (on the A1 object), TP .7 -> .5;
    # A2: FP .65 (on B), TP .6 -> .5;  A1: no detection -> 0;  B: FP -> 0
    np.testing.assert_allclose(res.nodes.ap[0], [0, 0, 0.5, 1, 0.5, 0])
    assert res.nodes.num_gts.tolist() == [0, 1, 1, 1, 1, 1]
    means = res.mean_aps()
    np.testing.assert_allclose(means['all'], [(1 + .5 + .5) / 5])
    np.testing.assert_allclose(means['leaf'], [(1 + .5 + .5 + 0) / 4])


def test_per_level_collapse_by_hand():
    res = evaluate()
    means = res.mean_aps()
    assert set(means) == {'all', 'leaf', 'lv0', 'lv1', 'lv2'}
    # level 0: A has 4 objects; ranked .9 TP, .8 TP (its identical .7 twin
    # merged), .75 TP (the A1 object), .65 FP (on B), .6 TP -> .75 + .25 * .8
    lv0 = res.levels[0]
    assert lv0.num_gts[[A, B]].tolist() == [4, 1]
    np.testing.assert_allclose(lv0.ap[0, [A, B]], [0.95, 0])
    np.testing.assert_allclose(means['lv0'], [0.475])
    # level 1: A1 = 3 objects, all found; A2: FP (on B, a leaf with no level-1
    # class) then TP; B is shallower than level 1 and its prediction left out
    lv1 = res.levels[1]
    assert lv1.num_gts[[A1, A2]].tolist() == [3, 1]
    assert lv1.num_dets[[A1, A2, B]].tolist() == [3, 2, 0]
    np.testing.assert_allclose(lv1.ap[0, [A1, A2]], [1, 0.5])
    np.testing.assert_allclose(means['lv1'], [0.75])
    # level 2: the "Other A1" object is ignored for A1a / A1b, so the A1b
    # prediction on it is neither TP nor FP
    lv2 = res.levels[2]
    assert lv2.num_gts[[A1a, A1b]].tolist() == [1, 1]
    np.testing.assert_allclose(lv2.ap[0, [A1a, A1b]], [1, 1])
    np.testing.assert_allclose(means['lv2'], [1.0])


def test_shallow_ground_truth_dropped():
    res = evaluate(shallow_gt='drop')
    # the A1b prediction on the "Other A1" object becomes an FP ranked first
    np.testing.assert_allclose(res.levels[2].ap[0, [A1a, A1b]], [1, 0.5])
    np.testing.assert_allclose(res.mean_aps()['lv2'], [0.75])
    np.testing.assert_allclose(res.mean_aps()['lv0'], [0.475])  # no shallow object there


def test_duplicates_not_merged():
    res = evaluate(merge_duplicates=False)
    # level 0: the .7 twin is an FP: TP TP TP FP FP TP -> .75 + .25 * 4/6
    np.testing.assert_allclose(res.levels[0].ap[0, A], [0.75 + 0.25 * 4 / 6])
    np.testing.assert_allclose(res.levels[1].ap[0, A1], [1.0])  # twin ranked after all TPs
    np.testing.assert_allclose(res.mean_aps()['all'], evaluate().mean_aps()['all'])


def test_levels_subset_and_validation():
    assert set(evaluate(levels=[1]).levels) == {1}
    with pytest.raises(ValueError, match='levels'):
        evaluate(levels=[3])
    with pytest.raises(ValueError, match='shallow_gt'):
        evaluate(shallow_gt='keep')
    dets, gts = hand_case()
    dets.labels[0] = 6
    with pytest.raises(ValueError, match='tree nodes'):
        eval_hierarchical_map(dets, gts, TREE, [0.5])


def test_merge_identical_boxes():
    img = np.array([0, 0, 0, 1, 0, 0])
    boxes = np.array([[1, 2, 3, 4, 0.5]] * 4 + [[1, 2, 3, 4, 0.6], [1, 2, 3, 4, 0.5]])
    scores = np.array([0.3, 0.9, 0.5, 0.1, 0.2, 0.4])
    labels = np.array([1, 1, 2, 1, 1, -1])
    # 0 and 1 merge into 1; 2 has another label, 3 another image, 4 another box
    np.testing.assert_array_equal(merge_identical_boxes(img, boxes, scores, labels),
                                  [False, True, True, True, True, False])


def test_levels_equal_flat_evaluation_of_collapsed_labels():
    """Without shallow objects or identical boxes, level l is exactly the flat
    evaluation of labels mapped to their level-l ancestor."""
    tree = LabelTree.from_paths(['P', 'Q', 'P/p0', 'P/p1', 'Q/q0', 'Q/q1'])
    dets, gts = random_dataset(np.random.default_rng(5), n_img=8, n_cls=4)
    leaf_ids = np.array(tree.leaf_ids)
    dets.labels, gts.labels = leaf_ids[dets.labels], leaf_ids[gts.labels]
    thrs = [0.5, 0.75]
    res = eval_hierarchical_map(dets, gts, tree, thrs, eval_mode='area')
    flat = eval_rotated_map(dets, gts, tree.num_classes, thrs, eval_mode='area')
    np.testing.assert_array_equal(res.nodes.ap, flat.ap)
    np.testing.assert_array_equal(res.levels[1].ap, flat.ap)
    top_d = Detections(dets.img, dets.boxes, dets.scores, tree.ancestor_at(dets.labels, 0))
    top_g = GroundTruth(gts.img, gts.boxes, tree.ancestor_at(gts.labels, 0), gts.ignore)
    lv0 = eval_rotated_map(top_d, top_g, tree.num_classes, thrs, eval_mode='area')
    np.testing.assert_array_equal(res.levels[0].ap, lv0.ap)
    np.testing.assert_allclose(res.mean_aps()['leaf'], flat.mean_ap())


def test_flat_tree_reports_no_levels():
    tree = LabelTree(['a', 'b', 'c', 'd'], [None] * 4)
    dets, gts = random_dataset(np.random.default_rng(2), n_img=4, n_cls=4)
    res = eval_hierarchical_map(dets, gts, tree, [0.5])
    assert res.levels == {}
    np.testing.assert_array_equal(res.mean_aps()['all'], res.mean_aps()['leaf'])


def _tree_dataset(rng, n_img=30):
    """Random data on TREE with everything the levels treat specially: ground truth on
    internal nodes (shallow at deeper levels), ignored objects, sibling-labelled copies
    of one box (merged when collapsed), scores tied across images, images without
    detections or without ground truth, and detections not sorted by image."""
    dets, gts = random_dataset(rng, n_img=n_img, n_cls=TREE.num_classes)
    det_labels = dets.labels.copy()
    copies = np.flatnonzero(det_labels == A1a)[:10]          # the same box as A1b too
    det = dict(img=np.r_[dets.img, dets.img[copies]], boxes=np.r_[dets.boxes, dets.boxes[copies]],
               scores=np.r_[dets.scores, dets.scores[copies] * 0.9],
               labels=np.r_[det_labels, np.full(len(copies), A1b)])
    det['scores'] = np.round(det['scores'] * 8) / 8           # many exact ties
    keep = det['img'] != 3                                     # image 3: no detections
    det = {k: v[keep] for k, v in det.items()}
    perm = rng.permutation(len(det['img']))                    # not sorted by image
    dets = Detections(*(det[k][perm] for k in ('img', 'boxes', 'scores', 'labels')))
    keep = gts.img != 5                                        # image 5: no ground truth
    gts = GroundTruth(gts.img[keep], gts.boxes[keep], gts.labels[keep], gts.ignore[keep])
    return dets, gts


def _concatenated(dets, gts, images):
    """The listed images' objects concatenated in that order (image j = j-th listed),
    each image's detections in their input order: what evaluating the list sees."""
    d_parts, g_parts = [], []
    for j, i in enumerate(images):
        d = np.flatnonzero(dets.img == i)
        g = np.flatnonzero(gts.img == i)
        d_parts.append((np.full(len(d), j), d))
        g_parts.append((np.full(len(g), j), g))
    d_img, d = (np.concatenate(x) for x in zip(*d_parts))
    g_img, g = (np.concatenate(x) for x in zip(*g_parts))
    return (Detections(d_img, dets.boxes[d], dets.scores[d], dets.labels[d]),
            GroundTruth(g_img, gts.boxes[g], gts.labels[g], gts.ignore[g]))


@pytest.mark.parametrize('eval_mode', ['area', '11points'])
def test_resample_equals_evaluating_the_resampled_images_bit_for_bit(eval_mode):
    """``hierarchical_matches(...).resample(images)`` (the bootstrap's fast path) gives
    exactly what ``eval_hierarchical_map`` gives on the listed images evaluated from
    scratch (IoU, matching and all), for nodes and every level."""
    from bhcl.evaluation.functional import hierarchical_matches
    rng = np.random.default_rng(7)
    dets, gts = _tree_dataset(rng)
    thrs = [0.5, 0.75, 0.9]
    matches = hierarchical_matches(dets, gts, TREE, thrs, eval_mode=eval_mode)
    full = eval_hierarchical_map(dets, gts, TREE, thrs, eval_mode=eval_mode)
    samples = [np.arange(30), rng.integers(0, 30, 30), rng.integers(0, 30, 30),
               np.array([3, 3, 5]), np.array([7, 7, 7, 7]), rng.integers(0, 30, 60)]
    checked = 0
    for images in samples:
        got = matches.resample(images)
        want = eval_hierarchical_map(*_concatenated(dets, gts, images), TREE, thrs,
                                     eval_mode=eval_mode)
        for a, b in [(got.nodes, want.nodes)] + [(got.levels[lv], want.levels[lv])
                                                 for lv in want.levels]:
            for field in ('ap', 'recall', 'num_gts', 'num_dets'):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
                checked += 1
        assert sorted(got.levels) == sorted(want.levels) == [0, 1, 2]
    assert checked == len(samples) * 4 * 4
    # the whole set: result() is eval_hierarchical_map's result
    np.testing.assert_array_equal(matches.result().nodes.ap, full.nodes.ap)
    assert 0 < full.nodes.mean_ap()[0] < 1 and full.levels[2].num_gts.sum() > 0
    with pytest.raises(ValueError, match=r'image indices must be in \[0, 30\)'):
        matches.resample([0, 30])
