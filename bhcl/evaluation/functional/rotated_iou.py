"""Rotated-box and quadrilateral IoU for evaluation (numpy, float64).

Boxes are either rotated boxes ``(cx, cy, w, h, t)`` (``t`` in radians,
image coordinates, positive ``t`` clockwise on screen, as mmcv's
``box_iou_rotated``) or 4-point polygons ``x1 y1 ... x4 y4``. All functions
here are *aligned*: they take ``P`` pairs and return ``P`` values; the
evaluation builds the pairs (boxes whose axis-aligned extents overlap) once
per image and reuses the result for every class, tree level and threshold.

Polygon IoU is exact: convex quads (every rotated box, nearly every DOTA
quad) are intersected in closed form, vectorised; non-convex or
self-intersecting quads go through shapely after ``make_valid`` (a bow-tie
becomes its two triangles).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from ...structures.geometry import poly_to_rbox, rbox_to_poly

_CHUNK = 1 << 15  # pairs per vectorised block (24 points x 2 x 8 bytes each)


def boxes_to_polys(boxes: np.ndarray) -> np.ndarray:
    """(N, 5) rotated boxes or (N, 8) polygons -> (N, 4, 2) float64 corners."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] not in (5, 8):
        raise ValueError(f'boxes must be (N, 5) rotated boxes or (N, 8) polygons, '
                         f'got shape {boxes.shape}')
    polys = rbox_to_poly(boxes) if boxes.shape[1] == 5 else boxes
    return polys.reshape(-1, 4, 2)


def boxes_to_rboxes(boxes: np.ndarray) -> np.ndarray:
    """(N, 5) or (N, 8) -> (N, 5); polygons become their minimum-area rectangle."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] not in (5, 8):
        raise ValueError(f'boxes must be (N, 5) rotated boxes or (N, 8) polygons, '
                         f'got shape {boxes.shape}')
    return boxes if boxes.shape[1] == 5 else poly_to_rbox(boxes)


def _cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def signed_area(polys: np.ndarray) -> np.ndarray:
    """(..., V, 2) -> (...,) shoelace area, positive for counter-clockwise
    order in a y-up frame (clockwise on screen)."""
    return 0.5 * np.sum(_cross(polys, np.roll(polys, -1, axis=-2)), axis=-1)


def is_convex(polys: np.ndarray) -> np.ndarray:
    """(N, V, 2) -> (N,) True for simple convex polygons of non-zero area."""
    edges = np.roll(polys, -1, axis=1) - polys
    turns = _cross(edges, np.roll(edges, -1, axis=1))
    return ((turns >= 0).all(axis=1) | (turns <= 0).all(axis=1)) & (
        np.abs(signed_area(polys)) > 0)


def _counter_clockwise(polys: np.ndarray) -> np.ndarray:
    flip = signed_area(polys) < 0
    out = polys.copy()
    out[flip] = out[flip, ::-1]
    return out


def _convex_inter_area_block(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Intersection area of aligned counter-clockwise convex quads (P, 4, 2).

    The intersection of two convex polygons is the convex polygon whose
    vertices are: corners of one inside the other, and edge crossings.
    Collect those candidates, order them by angle about their mean, and
    take the shoelace area.
    """
    scale = 1.0 + np.abs(np.concatenate([p, q], axis=1)).max(axis=(1, 2))
    tol = 1e-10 * scale[:, None, None]

    def inside(points, poly):  # (P, A, 2) in convex ccw (P, 4, 2) -> (P, A)
        edge = np.roll(poly, -1, axis=1) - poly
        rel = points[:, :, None, :] - poly[:, None, :, :]
        dist = _cross(edge[:, None], rel) / np.linalg.norm(edge, axis=-1)[:, None]
        return (dist >= -tol).all(axis=2)

    a0, a1 = p[:, :, None, :], np.roll(p, -1, axis=1)[:, :, None, :]
    b0, b1 = q[:, None, :, :], np.roll(q, -1, axis=1)[:, None, :, :]
    da, db, ab = a1 - a0, b1 - b0, b0 - a0
    denom = _cross(da, db)
    ok = np.abs(denom) > 1e-14 * scale[:, None, None] ** 2
    safe = np.where(ok, denom, 1.0)
    t, u = _cross(ab, db) / safe, _cross(ab, da) / safe
    eps = 1e-12
    ok &= (t >= -eps) & (t <= 1 + eps) & (u >= -eps) & (u <= 1 + eps)
    crossings = a0 + t[..., None] * da

    points = np.concatenate([p, q, crossings.reshape(len(p), 16, 2)], axis=1)
    valid = np.concatenate([inside(p, q), inside(q, p), ok.reshape(len(p), 16)], axis=1)
    count = valid.sum(axis=1)
    centre = (points * valid[..., None]).sum(axis=1) / np.maximum(count, 1)[:, None]
    rel = points - centre[:, None, :]
    angle = np.where(valid, np.arctan2(rel[..., 1], rel[..., 0]), np.inf)
    order = np.argsort(angle, axis=1, kind='stable')
    rel = np.take_along_axis(rel, order[..., None], axis=1)
    # pad with the last valid point: zero-length edges add no area and the
    # closing edge runs from the last valid point back to the first
    last = np.take_along_axis(rel, np.maximum(count - 1, 0)[:, None, None], axis=1)
    rel = np.where((np.arange(rel.shape[1])[None] < count[:, None])[..., None], rel, last)
    area = np.abs(signed_area(rel))
    return np.where(count >= 3, area, 0.0)


def _shapely_inter_area(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    import shapely
    pa = shapely.make_valid(shapely.polygons(p))
    qa = shapely.make_valid(shapely.polygons(q))
    return shapely.area(shapely.intersection(pa, qa))


def _valid_area(polys: np.ndarray) -> np.ndarray:
    convex = is_convex(polys)
    area = np.abs(signed_area(polys))
    if not convex.all():
        import shapely
        area[~convex] = shapely.area(shapely.make_valid(shapely.polygons(polys[~convex])))
    return area


def poly_iou_aligned(polys1: np.ndarray, polys2: np.ndarray) -> np.ndarray:
    """IoU of aligned polygon pairs: (P, 8) or (P, 4, 2) each -> (P,) float64."""
    p = np.asarray(polys1, dtype=np.float64).reshape(-1, 4, 2)
    q = np.asarray(polys2, dtype=np.float64).reshape(-1, 4, 2)
    if p.shape != q.shape:
        raise ValueError(f'aligned IoU needs the same number of boxes, got {p.shape} and {q.shape}')
    inter = np.zeros(len(p))
    convex = is_convex(p) & is_convex(q)
    idx = np.flatnonzero(convex)
    pc, qc = _counter_clockwise(p[idx]), _counter_clockwise(q[idx])
    for s in range(0, len(idx), _CHUNK):
        inter[idx[s:s + _CHUNK]] = _convex_inter_area_block(pc[s:s + _CHUNK], qc[s:s + _CHUNK])
    if not convex.all():
        other = ~convex
        inter[other] = _shapely_inter_area(p[other], q[other])
    union = _valid_area(p) + _valid_area(q) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def rbox_iou_aligned(boxes1: np.ndarray, boxes2: np.ndarray,
                     backend: str = 'auto') -> np.ndarray:
    """IoU of aligned rotated-box pairs (P, 5) each -> (P,).

    Args:
        backend: ``'mmcv'`` uses mmcv's ``box_iou_rotated`` (float32, the
            op mmrotate's ``eval_rbbox_map`` uses, so thresholds see the same
            numbers); ``'numpy'`` intersects the rectangles exactly in
            float64; ``'auto'`` takes mmcv where its kernel runs
            (:func:`bhcl.ops.kernel_dispatch.use_mmcv_kernel`).
    """
    boxes1 = np.asarray(boxes1).reshape(-1, 5)
    boxes2 = np.asarray(boxes2).reshape(-1, 5)
    if backend not in ('auto', 'mmcv', 'numpy'):
        raise ValueError(f"backend must be 'auto', 'mmcv' or 'numpy', got {backend!r}")
    if backend == 'numpy':
        return poly_iou_aligned(rbox_to_poly(boxes1), rbox_to_poly(boxes2))
    import torch

    from bhcl.ops.kernel_dispatch import mmcv_kernel_runs, use_mmcv_kernel
    t1 = torch.from_numpy(np.ascontiguousarray(boxes1, dtype=np.float32))
    t2 = torch.from_numpy(np.ascontiguousarray(boxes2, dtype=np.float32))
    if backend == 'mmcv' and not mmcv_kernel_runs('box_iou_rotated', 'cpu'):
        raise ImportError("backend='mmcv' needs mmcv built with ops (mmcv.ops.box_iou_rotated)")
    if not use_mmcv_kernel('box_iou_rotated', t1, 'mmcv' if backend == 'mmcv' else 'auto'):
        return poly_iou_aligned(rbox_to_poly(boxes1), rbox_to_poly(boxes2))
    if len(boxes1) == 0:
        return np.zeros(0, dtype=np.float32)
    from mmcv.ops import box_iou_rotated
    with torch.no_grad():
        iou = box_iou_rotated(t1, t2, aligned=True)
    return iou.numpy()


def prepare_boxes(boxes: np.ndarray, iou_type: str) -> np.ndarray:
    """Boxes in the form ``iou_type`` compares: (N, 5) rotated boxes for
    ``'rbox'`` (polygons become their minimum-area rectangle, as mmrotate's
    pipeline does), (N, 8) corners for ``'poly'``."""
    if iou_type == 'rbox':
        return boxes_to_rboxes(boxes)
    if iou_type == 'poly':
        return boxes_to_polys(boxes).reshape(-1, 8)
    raise ValueError(f"iou_type must be 'rbox' or 'poly', got {iou_type!r}")


def pair_iou(boxes1: np.ndarray, boxes2: np.ndarray, idx1: np.ndarray, idx2: np.ndarray,
             backend: str = 'auto') -> np.ndarray:
    """IoU of the pairs ``(boxes1[idx1[k]], boxes2[idx2[k]])`` -> (P,).

    Both sets come from ``prepare_boxes`` with the same ``iou_type``.
    """
    if boxes1.shape[1] == 5:
        return rbox_iou_aligned(boxes1[idx1], boxes2[idx2], backend)
    return poly_iou_aligned(boxes1[idx1], boxes2[idx2])


def pairwise_iou(boxes1: np.ndarray, boxes2: np.ndarray, iou_type: str = 'rbox',
                 backend: str = 'auto') -> np.ndarray:
    """Dense (N, M) IoU between two box sets, each (N, 5) or (N, 8)."""
    b1, b2 = prepare_boxes(boxes1, iou_type), prepare_boxes(boxes2, iou_type)
    i, j = np.meshgrid(np.arange(len(b1)), np.arange(len(b2)), indexing='ij')
    return pair_iou(b1, b2, i.ravel(), j.ravel(), backend).reshape(len(b1), len(b2))


def boxes_aabb(boxes: np.ndarray) -> np.ndarray:
    """(N, 5) or (N, 8) -> (N, 4) axis-aligned extents ``x0 y0 x1 y1``."""
    polys = boxes_to_polys(boxes)
    return np.concatenate([polys.min(axis=1), polys.max(axis=1)], axis=1)


def candidate_pairs(aabb1: np.ndarray, aabb2: np.ndarray,
                    allowed: Optional[np.ndarray] = None):
    """Index pairs ``(i, j)`` whose extents (N, 4), (M, 4) overlap: only
    those can have a non-zero IoU. ``allowed`` (N, M) bool skips others."""
    a, b = aabb1[:, None, :], aabb2[None, :, :]
    hit = ((np.minimum(a[..., 2], b[..., 2]) > np.maximum(a[..., 0], b[..., 0]))
           & (np.minimum(a[..., 3], b[..., 3]) > np.maximum(a[..., 1], b[..., 1])))
    if allowed is not None:
        hit &= allowed
    i, j = np.nonzero(hit)
    return i.astype(np.int64), j.astype(np.int64)
