import json
import os.path as osp

import numpy as np
import pytest
import shapely

from bhcl.evaluation.functional import pairwise_iou, poly_iou_aligned, rbox_iou_aligned
from bhcl.ops.kernel_dispatch import mmcv_kernel_runs
from bhcl.structures.geometry import rbox_to_poly
from tests.conftest import DATA_DIR

REF = json.load(open(osp.join(DATA_DIR, 'eval', 'mmcv_iou_reference.json')))
needs_mmcv = pytest.mark.skipif(not mmcv_kernel_runs('box_iou_rotated', 'cpu'),
                                reason='mmcv ops (box_iou_rotated) not built')


def shapely_iou(p, q):
    """Dense polygon IoU with shapely (make_valid for invalid quads)."""
    a = shapely.make_valid(shapely.polygons(np.asarray(p, float).reshape(-1, 4, 2)))
    b = shapely.make_valid(shapely.polygons(np.asarray(q, float).reshape(-1, 4, 2)))
    inter = shapely.area(shapely.intersection(a[:, None], b[None, :]))
    return inter / (shapely.area(a)[:, None] + shapely.area(b)[None, :] - inter)


def random_rboxes(rng, n, spread=20.0):
    return np.c_[rng.uniform(0, spread, (n, 2)), rng.uniform(0.5, 10, (n, 2)),
                 rng.uniform(-np.pi, np.pi, n)]


def test_rbox_iou_matches_mmcv_reference_values():
    ref = REF['box_iou_rotated']
    b1, b2 = np.array(ref['boxes1']), np.array(ref['boxes2'])
    iou = pairwise_iou(b1, b2, 'rbox', backend='numpy')
    np.testing.assert_allclose(iou, ref['expected_iou'], atol=ref['atol'])
    np.testing.assert_allclose(rbox_iou_aligned(b1, b2, backend='numpy'),
                               ref['expected_iou_aligned'], atol=ref['atol'])


@needs_mmcv
def test_rbox_iou_mmcv_backend_matches_reference_and_numpy():
    ref = REF['box_iou_rotated']
    b1, b2 = np.array(ref['boxes1']), np.array(ref['boxes2'])
    np.testing.assert_allclose(pairwise_iou(b1, b2, 'rbox', backend='mmcv'),
                               ref['expected_iou'], atol=ref['atol'])
    rng = np.random.default_rng(0)
    a = random_rboxes(rng, 2000)
    b = a + rng.normal(0, [2, 2, 1, 1, 0.3], a.shape)
    b[:, 2:4] = np.abs(b[:, 2:4]) + 0.1
    np.testing.assert_allclose(rbox_iou_aligned(a, b, 'mmcv'), rbox_iou_aligned(a, b, 'numpy'),
                               atol=2e-5)


def test_poly_iou_equals_shapely_on_mmcv_reference_boxes():
    ref = REF['box_iou_rotated']
    p1, p2 = rbox_to_poly(np.array(ref['boxes1'])), rbox_to_poly(np.array(ref['boxes2']))
    np.testing.assert_allclose(pairwise_iou(p1, p2, 'poly'), shapely_iou(p1, p2), atol=1e-12)
    # rotated boxes given to iou_type='poly' are turned into the same corners
    np.testing.assert_allclose(
        pairwise_iou(np.array(ref['boxes1']), np.array(ref['boxes2']), 'poly'),
        shapely_iou(p1, p2), atol=1e-12)

    quad = REF['box_iou_quadri']
    q1, q2 = np.array(quad['boxes1']), np.array(quad['boxes2'])
    iou = pairwise_iou(q1, q2, 'poly')
    np.testing.assert_allclose(iou, shapely_iou(q1, q2), atol=1e-12)
    np.testing.assert_allclose(iou, quad['shapely_geometric_iou'], atol=1e-4)

    nms = REF['nms_rotated_boxes']
    boxes = np.array(nms['boxes'])
    np.testing.assert_allclose(pairwise_iou(boxes, boxes, 'poly'), nms['shapely_pairwise_iou'],
                               atol=1e-4)


def test_poly_iou_equals_shapely_on_random_convex_quads():
    rng = np.random.default_rng(1)
    a = rbox_to_poly(random_rboxes(rng, 3000))
    # convex, non-rectangular quads: shrink each corner towards the centre
    b = rbox_to_poly(random_rboxes(rng, 3000)).reshape(-1, 4, 2)
    b = b.mean(1, keepdims=True) + (b - b.mean(1, keepdims=True)) * rng.uniform(
        0.6, 1.0, (3000, 4, 1))
    b = b.reshape(-1, 8)
    b[:50] = a[:50]                       # identical
    b[50:100] = a[50:100][:, [2, 3, 4, 5, 6, 7, 0, 1]]  # same quad, other start corner
    b[100:150] = a[100:150][:, [6, 7, 4, 5, 2, 3, 0, 1]]  # reversed orientation
    mine = poly_iou_aligned(a, b)
    pa, pb = shapely.polygons(a.reshape(-1, 4, 2)), shapely.polygons(b.reshape(-1, 4, 2))
    inter = shapely.area(shapely.intersection(pa, pb))
    ref = inter / (shapely.area(pa) + shapely.area(pb) - inter)
    np.testing.assert_allclose(mine, ref, atol=1e-10)
    np.testing.assert_allclose(mine[:150], 1.0, atol=1e-12)


def test_poly_iou_exact_on_axis_aligned_cases():
    unit = np.array([[0, 0, 1, 0, 1, 1, 0, 1.]])
    wide = np.array([[0, 0, 2, 0, 2, 1, 0, 1.]])
    apart = np.array([[1, 0, 2, 0, 2, 1, 1, 1.]])  # shares an edge only
    assert poly_iou_aligned(unit, wide)[0] == 0.5
    assert poly_iou_aligned(unit, apart)[0] == 0.0
    assert poly_iou_aligned(wide, wide)[0] == 1.0


def test_self_intersecting_quad_goes_through_make_valid():
    # the bow-tie of the mmrotate 0.x fixture (line 4 of P0004__1__0___0.txt)
    bowtie = np.array([[126.0, 191.0, 128.0, 171.0, 123.0, 178.0, 221.0, 199.0]])
    box = np.array([[120.0, 170.0, 200.0, 170.0, 200.0, 200.0, 120.0, 200.0]])
    np.testing.assert_allclose(poly_iou_aligned(bowtie, box), shapely_iou(bowtie, box)[0],
                               atol=1e-12)
    np.testing.assert_allclose(poly_iou_aligned(bowtie, bowtie), [1.0], atol=1e-12)
    assert 0 < poly_iou_aligned(bowtie, box)[0] < 1


def test_bad_shapes_and_options_fail_loudly():
    with pytest.raises(ValueError, match=r'\(N, 5\)'):
        pairwise_iou(np.zeros((2, 4)), np.zeros((2, 4)))
    with pytest.raises(ValueError, match='iou_type'):
        pairwise_iou(np.zeros((1, 5)), np.zeros((1, 5)), iou_type='hbox')
    with pytest.raises(ValueError, match='backend'):
        rbox_iou_aligned(np.zeros((1, 5)), np.zeros((1, 5)), backend='gpu')
