"""Numpy conversions between 4-point polygons and rotated boxes.

Rotated boxes are ``(cx, cy, w, h, t)`` as in :mod:`bhcl.structures.box_coding`
(radians, image coordinates, positive ``t`` clockwise on screen), written in
le90 by its :func:`~bhcl.structures.box_coding.regularize_le90`.

Plain numpy + OpenCV (no mm* imports) for the data tools, the synthetic
generator and the metric, which read and write annotation polygons.
"""
from __future__ import annotations

from typing import List, Sequence

import cv2
import numpy as np

from .box_coding import regularize_le90


def regularize_rboxes(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) (anything reshaped to it) -> (N, 5) float64 le90 boxes; see ``regularize_le90``."""
    return regularize_le90(np.asarray(rboxes, dtype=np.float64).reshape(-1, 5))


def rbox_to_poly(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) rotated boxes -> (N, 8) corners ``x1 y1 ... x4 y4``.

    Corners are the box's (-w/2,-h/2), (w/2,-h/2), (w/2,h/2), (-w/2,h/2)
    rotated by ``t`` about the centre: clockwise on screen for ``t = 0``.
    """
    rboxes = np.asarray(rboxes, dtype=np.float64).reshape(-1, 5)
    cx, cy, w, h, t = rboxes.T
    cos, sin = np.cos(t), np.sin(t)
    dx = np.array([-0.5, 0.5, 0.5, -0.5])[None] * w[:, None]
    dy = np.array([-0.5, -0.5, 0.5, 0.5])[None] * h[:, None]
    xs = cx[:, None] + dx * cos[:, None] - dy * sin[:, None]
    ys = cy[:, None] + dx * sin[:, None] + dy * cos[:, None]
    return np.stack([xs, ys], axis=2).reshape(-1, 8)


def poly_to_rbox(polys: np.ndarray) -> np.ndarray:
    """(N, 8) polygons -> (N, 5) le90 rotated boxes (OpenCV minimum-area rectangle)."""
    polys = np.asarray(polys, dtype=np.float64).reshape(-1, 8)
    out = np.zeros((len(polys), 5), dtype=np.float64)
    for i, poly in enumerate(polys):
        (cx, cy), (w, h), angle = cv2.minAreaRect(poly.reshape(4, 2).astype(np.float32))
        out[i] = (cx, cy, w, h, np.deg2rad(angle))
    return regularize_rboxes(out)


def poly_area(polys: np.ndarray) -> np.ndarray:
    """(N, 8) -> (N,) absolute shoelace area."""
    p = np.asarray(polys, dtype=np.float64).reshape(-1, 4, 2)
    x, y = p[..., 0], p[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


def untangle_quad(poly: Sequence[float]) -> List[float]:
    """A crossed (bow-tie) quadrilateral ``x1 y1 .. x4 y4`` re-ordered into a simple one.

    Annotation files list corners in an undocumented order; a crossed order
    looks like a polygon of (near) zero area. The corners are then sorted by
    angle around their centre, clockwise on screen (image y points down),
    starting from the first corner. A simple quadrilateral is returned
    unchanged. Used by every reader (FAIR1M XML, DOTA txt).
    """
    pts = np.asarray(poly, dtype=np.float64).reshape(4, 2)
    if not (_segments_cross(pts[0], pts[1], pts[2], pts[3])
            or _segments_cross(pts[1], pts[2], pts[3], pts[0])):
        return [float(v) for v in poly]
    centre = pts.mean(0)
    angles = np.arctan2(pts[:, 1] - centre[1], pts[:, 0] - centre[0])
    order = np.argsort((angles - angles[0]) % (2 * np.pi), kind='stable')
    return pts[order].reshape(-1).tolist()


def _segments_cross(a, b, c, d) -> bool:
    """Whether segments ab and cd properly intersect."""
    def side(p, q, r):
        return np.sign((q[0] - p[0]) * (r[1] - p[1]) - (q[1] - p[1]) * (r[0] - p[0]))
    return side(a, b, c) * side(a, b, d) < 0 and side(c, d, a) * side(c, d, b) < 0
