import itertools
import json
import os.path as osp

import numpy as np
import pytest

from bhcl.datasets.dota_txt import parse_dota_txt
from bhcl.evaluation.functional import (Detections, GroundTruth, average_precision,
                                        eval_rotated_map, flatten_mmrotate_results, pairwise_iou)
from bhcl.structures.label_tree import LabelTree
from tests.conftest import DATA_DIR

FIXTURE = osp.join(DATA_DIR, 'mmrotate_0x')
EXPECT = json.load(open(osp.join(FIXTURE, 'eval_expectations.json')))


def square(x0, y0, x1, y1):
    return [x0, y0, x1, y0, x1, y1, x0, y1]


def dets_of(boxes, scores, labels=None, img=None):
    n = len(boxes)
    return Detections(np.zeros(n, int) if img is None else np.asarray(img),
                      np.asarray(boxes, float).reshape(n, -1) if n else np.zeros((0, 5)),
                      np.asarray(scores, float),
                      np.zeros(n, int) if labels is None else np.asarray(labels))


def gts_of(boxes, ignore=None, labels=None, img=None):
    n = len(boxes)
    return GroundTruth(np.zeros(n, int) if img is None else np.asarray(img),
                       np.asarray(boxes, float).reshape(n, -1) if n else np.zeros((0, 5)),
                       np.zeros(n, int) if labels is None else np.asarray(labels),
                       np.zeros(n, bool) if ignore is None else np.asarray(ignore, bool))


# ---------------------------------------------------------------- fixture
def p0004(scores):
    tree = LabelTree(EXPECT['classes'], [None])
    objs = parse_dota_txt(osp.join(FIXTURE, EXPECT['gt_file']), tree).objects
    gts = gts_of([o.poly for o in objs], ignore=[o.difficulty > 0 for o in objs])
    return dets_of(EXPECT['dets_rbox'], scores), gts


def test_mmrotate_fixture_ious():
    dets, gts = p0004([0.9, 0.8, 0.7])
    np.testing.assert_allclose(pairwise_iou(dets.boxes, gts.boxes, 'poly'),
                               EXPECT['expected_poly_iou_det_vs_gt'], atol=5e-4)


@pytest.mark.parametrize('scores', list(itertools.permutations([0.9, 0.8, 0.7])))
def test_mmrotate_fixture_difficult_counted(scores):
    dets, gts = p0004(scores)
    want = EXPECT['mmrotate_difficult_counted']
    for iou_type in ('rbox', 'poly'):
        for mode, key in (('11points', 'AP_11points'), ('area', 'AP_area')):
            res = eval_rotated_map(dets, gts, 1, [0.5], eval_mode=mode, iou_type=iou_type,
                                   ignore_difficult=False)
            np.testing.assert_allclose(res.mean_ap(), [want[key]], atol=1e-7)
            assert res.num_gts.tolist() == [4]


@pytest.mark.parametrize('scores', list(itertools.permutations([0.9, 0.8, 0.7])))
def test_mmrotate_fixture_devkit_semantics(scores):
    dets, gts = p0004(scores)
    want = EXPECT['devkit_semantics']
    for mode, key in (('11points', 'AP_11points'), ('area', 'AP_area')):
        res = eval_rotated_map(dets, gts, 1, [0.5], eval_mode=mode, iou_type='poly',
                               strict_iou=True, ignore_difficult=True)
        np.testing.assert_allclose(res.mean_ap(), [want[key]], atol=1e-7)
        assert res.num_gts.tolist() == [3]


# ------------------------------------------------------- matching rules
def test_covered_ground_truth_makes_a_detection_fp_even_if_another_overlaps():
    # det 2's arg-max GT is A (IoU .852), already covered by det 1; its IoU with
    # B (.786) passes 0.5 but the VOC rule never looks at B.
    gts = gts_of([square(0, 0, 10, 10), square(2, 0, 12, 10)])
    dets = dets_of([square(0, 0, 10, 10), square(0.8, 0, 10.8, 10)], [0.9, 0.8])
    res = eval_rotated_map(dets, gts, 1, [0.5], iou_type='poly')
    # ranks: TP (P=1, R=.5), FP (P=.5, R=.5) -> 11-point: 6 of 11 points at 1
    np.testing.assert_allclose(res.ap[0], [6 / 11])
    np.testing.assert_allclose(res.recall[0], [0.5])


def test_ignored_ground_truth_absorbs_matches():
    gts = gts_of([square(0, 0, 10, 10), square(20, 0, 30, 10)], ignore=[False, True])
    # ranked: TP on A, then a detection on the ignored B, then an FP
    dets = dets_of([square(0, 0, 10, 10), square(20, 0, 30, 10), square(50, 50, 60, 60)],
                   [0.9, 0.8, 0.7])
    ignored = eval_rotated_map(dets, gts, 1, [0.5], eval_mode='area', iou_type='poly')
    np.testing.assert_allclose(ignored.ap[0], [1.0])  # R=1 at P=1
    assert ignored.num_gts.tolist() == [1]
    counted = eval_rotated_map(dets, gts, 1, [0.5], eval_mode='area', iou_type='poly',
                               ignore_difficult=False)
    np.testing.assert_allclose(counted.ap[0], [1.0])  # both found before the FP
    assert counted.num_gts.tolist() == [2]
    # the FP ranked first: ignored -> P = 1/2 at R = 1; counted -> P(R=.5)=1/2, P(R=1)=2/3
    dets.scores[:] = [0.8, 0.7, 0.9]
    np.testing.assert_allclose(
        eval_rotated_map(dets, gts, 1, [0.5], eval_mode='area', iou_type='poly').ap[0], [0.5])
    np.testing.assert_allclose(
        eval_rotated_map(dets, gts, 1, [0.5], eval_mode='area', iou_type='poly',
                         ignore_difficult=False).ap[0], [2 / 3])


def test_ignored_objects_of_an_image_without_ordinary_objects_stay_ignored():
    # mmrotate's eval_rbbox_map drops them (its detections become FPs); we keep
    # them ignored, as the DOTA devkit does
    gts = gts_of([square(0, 0, 10, 10), square(0, 0, 10, 10)], ignore=[False, True], img=[0, 1])
    dets = dets_of([square(0, 0, 10, 10), square(0, 0, 10, 10)], [0.5, 0.9], img=[0, 1])
    res = eval_rotated_map(dets, gts, 1, [0.5], iou_type='poly')
    np.testing.assert_allclose(res.ap[0], [1.0])


def test_strict_and_inclusive_iou_at_an_exact_tie():
    gts = gts_of([square(0, 0, 2, 1)])
    dets = dets_of([square(0, 0, 1, 1)], [0.9])
    assert pairwise_iou(dets.boxes, gts.boxes, 'poly')[0, 0] == 0.5
    assert eval_rotated_map(dets, gts, 1, [0.5], iou_type='poly').ap[0, 0] == 1.0
    assert eval_rotated_map(dets, gts, 1, [0.5], iou_type='poly', strict_iou=True).ap[0, 0] == 0


def test_eleven_point_recall_points_are_the_devkit_floats():
    # recall exactly 3/10 does not reach the devkit's 0.30000000000000004 point
    gts = gts_of([square(20 * i, 0, 20 * i + 10, 10) for i in range(10)])
    dets = dets_of([square(20 * i, 0, 20 * i + 10, 10) for i in range(3)], [0.9, 0.8, 0.7])
    res = eval_rotated_map(dets, gts, 1, [0.5], iou_type='poly')
    np.testing.assert_allclose(res.ap[0], [3 / 11])
    area = eval_rotated_map(dets, gts, 1, [0.5], eval_mode='area', iou_type='poly')
    np.testing.assert_allclose(area.ap[0], [0.3])


def test_average_precision_by_hand():
    rec = np.array([0.25, 0.25, 0.5, 0.75])
    prec = np.array([1.0, 0.5, 2 / 3, 0.75])
    # 11-point: r<=.25 -> 1 (3 points), .3-.5 -> .75 (3), .6-.7 -> .75 (2), rest 0
    np.testing.assert_allclose(average_precision(rec, prec, '11points'), (3 + 5 * 0.75) / 11)
    np.testing.assert_allclose(average_precision(rec, prec, 'area'), 0.25 + 0.5 * 0.75)
    np.testing.assert_allclose(average_precision(np.zeros((2, 0)), np.zeros((2, 0))), [0, 0])
    with pytest.raises(ValueError, match='eval_mode'):
        average_precision(rec, prec, 'coco')


def test_all_thresholds_at_once_equal_one_run_per_threshold():
    rng = np.random.default_rng(3)
    dets, gts = random_dataset(rng, n_img=6, n_cls=3)
    thrs = [0.3, 0.5, 0.75, 0.9]
    together = eval_rotated_map(dets, gts, 3, thrs, eval_mode='area')
    for t, thr in enumerate(thrs):
        alone = eval_rotated_map(dets, gts, 3, [thr], eval_mode='area')
        np.testing.assert_array_equal(together.ap[t], alone.ap[0])


def test_no_ground_truth_classes_are_left_out_of_the_mean():
    gts = gts_of([square(0, 0, 10, 10)])
    dets = dets_of([square(0, 0, 10, 10), square(0, 0, 10, 10)], [0.9, 0.8], labels=[0, 1])
    res = eval_rotated_map(dets, gts, 3, [0.5], iou_type='poly')
    assert res.num_gts.tolist() == [1, 0, 0] and res.num_dets.tolist() == [1, 1, 0]
    np.testing.assert_allclose(res.mean_ap(), [1.0])
    empty = eval_rotated_map(dets_of(np.zeros((0, 5)), []), gts_of(np.zeros((0, 5))), 2, [0.5])
    np.testing.assert_array_equal(empty.mean_ap(), [0.0])


def test_bad_thresholds_fail():
    dets, gts = p0004([0.9, 0.8, 0.7])
    for thrs in ([], [0.0], [1.5]):
        with pytest.raises(ValueError, match='iou_thrs'):
            eval_rotated_map(dets, gts, 1, thrs)


# ------------------------------------------ equality with eval_rbbox_map
def random_dataset(rng, n_img=8, n_cls=4, as_mmrotate=False):
    """Random rotated GT (some ignored) and jittered / confused / spurious
    detections. Every image keeps at least one ordinary object (see
    test_ignored_objects_of_an_image_without_ordinary_objects_stay_ignored)."""
    det_results, annotations = [], []
    for _ in range(n_img):
        ng = int(rng.integers(1, 12))
        g = np.c_[rng.uniform(0, 100, (ng, 2)), rng.uniform(5, 30, ng), rng.uniform(3, 10, ng),
                  rng.uniform(-1.5, 1.5, ng)].astype(np.float32)
        gl = rng.integers(0, n_cls, ng)
        ign = rng.random(ng) < 0.25
        ign[0] = False
        pick = rng.integers(0, ng, 2 * ng)
        d = g[pick] + (rng.normal(0, 1.5, (len(pick), 5)) * [1, 1, 1, .5, .1]).astype(np.float32)
        dl = np.where(rng.random(len(pick)) < 0.2, rng.integers(0, n_cls, len(pick)), gl[pick])
        nr = int(rng.integers(0, 4))
        d = np.r_[d, np.c_[rng.uniform(0, 100, (nr, 2)), rng.uniform(5, 30, (nr, 2)),
                           rng.uniform(-1.5, 1.5, nr)].astype(np.float32)]
        d[:, 2:4] = np.abs(d[:, 2:4]) + 0.5
        dl = np.r_[dl, rng.integers(0, n_cls, nr)]
        s = rng.random(len(d)).astype(np.float32)
        det_results.append([np.c_[d[dl == k], s[dl == k]] for k in range(n_cls)])
        annotations.append(dict(bboxes=g[~ign], labels=gl[~ign], bboxes_ignore=g[ign],
                                labels_ignore=gl[ign]))
    if as_mmrotate:
        return det_results, annotations
    return flatten_mmrotate_results(det_results, annotations)


class _SerialPool:
    """Stands in for multiprocessing's spawn pool: same calls, no processes."""

    def __init__(self, *args, **kwargs):
        pass

    def starmap(self, func, iterable):
        return list(itertools.starmap(func, iterable))

    def close(self):
        pass


@pytest.fixture
def eval_rbbox_map(monkeypatch):
    mean_ap = pytest.importorskip('mmrotate.evaluation.functional.mean_ap')
    pytest.importorskip('mmcv.ops')

    class Context:
        Pool = _SerialPool

    monkeypatch.setattr(mean_ap, 'get_context', lambda method: Context())
    return mean_ap.eval_rbbox_map


@pytest.mark.parametrize('eval_mode', ['11points', 'area'])
def test_equals_mmrotate_eval_rbbox_map(eval_rbbox_map, eval_mode):
    thrs = [0.5, 0.7, 0.9]
    for seed in range(6):
        det_results, annotations = random_dataset(np.random.default_rng(seed), as_mmrotate=True)
        dets, gts = flatten_mmrotate_results(det_results, annotations)
        mine = eval_rotated_map(dets, gts, 4, thrs, eval_mode=eval_mode)
        for t, thr in enumerate(thrs):
            ref_map, ref = eval_rbbox_map(det_results, annotations, iou_thr=thr,
                                          use_07_metric=eval_mode == '11points', logger='silent')
            assert [r['num_gts'] for r in ref] == mine.num_gts.tolist()
            assert [r['num_dets'] for r in ref] == mine.num_dets.tolist()
            np.testing.assert_allclose(mine.ap[t], [r['ap'] for r in ref], atol=1e-6)
            np.testing.assert_allclose(mine.mean_ap()[t], ref_map, atol=1e-6)


def test_functional_core_has_no_module_level_mm_imports():
    """The numpy core only reaches for mmcv's IoU op lazily, inside a function."""
    import ast
    import bhcl.evaluation.functional as functional
    folder = osp.dirname(functional.__file__)
    for name in ('average_precision.py', 'hierarchical_map.py', 'rotated_iou.py',
                 'rotated_map.py', '__init__.py'):
        tree = ast.parse(open(osp.join(folder, name)).read())
        for node in tree.body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = ([a.name for a in node.names] if isinstance(node, ast.Import)
                        else [node.module or ''])
                assert not any(m.startswith(('mm', 'torch')) for m in mods), (name, mods)
