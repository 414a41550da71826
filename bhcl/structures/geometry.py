"""Numpy conversions between 4-point polygons and rotated boxes.

Rotated boxes are ``(cx, cy, w, h, t)`` with ``t`` in radians, image
coordinates (y down), and a positive ``t`` rotating clockwise on screen, as
mmcv's ``box_iou_rotated`` and mmrotate's ``RotatedBoxes`` expect. The ``le90``
convention keeps ``w >= h`` and ``t`` in ``[-pi/2, pi/2)``, matching
``mmrotate.structures.RotatedBoxes.regularize_boxes('le90')``.

Plain numpy + OpenCV (no mm* imports) so that data tools, the synthetic
generator and the metric share one definition.
"""
from __future__ import annotations

import cv2
import numpy as np


def regularize_rboxes(rboxes: np.ndarray) -> np.ndarray:
    """(N, 5) -> (N, 5) in the le90 convention (``w >= h``, ``t in [-pi/2, pi/2)``)."""
    rboxes = np.asarray(rboxes, dtype=np.float64).reshape(-1, 5)
    x, y, w, h, t = rboxes.T
    wider = w > h
    w_, h_ = np.where(wider, w, h), np.where(wider, h, w)
    t = np.where(wider, t, t + np.pi / 2)
    t = np.mod(t + np.pi / 2, np.pi) - np.pi / 2
    return np.stack([x, y, w_, h_, t], axis=1)


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
