"""Rotated-box coding: every change of a box's representation, in one place.

A rotated box is ``(cx, cy, w, h, t)``: centre and sides in pixels, ``t`` in
radians, image coordinates (y down) and a positive ``t`` turning the box
clockwise on screen, as mmcv's ``box_iou_rotated`` and mmrotate's
``RotatedBoxes`` expect. The codings the detectors, costs and losses use:

- **le90** (OrientedFormer, the data tools, the metric): ``w >= h`` and ``t`` in
  ``[-pi/2, pi/2)`` (:func:`regularize_le90`);
- **long edge** (RHINO): ``w >= h`` and ``t`` in ``[0, pi)``
  (:func:`regularize_long_edge`);
- **normalised**: ``(cx / W, cy / H, w / W, h / H, t')`` for an image of
  ``(H, W)``; RHINO's ``t' = t / pi`` of the long-edge box
  (:func:`normalize_gt_rboxes`, :func:`denormalize_rboxes`), the OrientedFormer
  L1 loss's ``t' = t`` or the min-max normalised angle (:func:`normalize_rboxes`);
- **xyzrt** (OrientedFormer's queries): ``(cx, cy, z, r, t)`` with
  ``z = log2 sqrt(w h)`` and ``r = log2(h / w)`` (:func:`boxes_to_xyzrt`);
- **corners**: (..., 4, 2) in polygon order (:func:`rbox_corners`).

Plain numpy / torch (no mm* imports). Regularisation takes numpy arrays and
torch tensors alike; the rest takes tensors.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch
from torch import Tensor

# Offsets of the corners in units of (w, h), in polygon order.
_CORNER_SIGNS = ((-0.5, -0.5), (0.5, -0.5), (0.5, 0.5), (-0.5, 0.5))
# start of each angle version's range, for the min-max normalised L1 angle
ANGLE_OFFSETS = {'le90': math.pi / 2, 'le135': math.pi / 4, 'oc': math.pi / 2}


def box_tensor(boxes):
    """The plain (n, 5) tensor of an mmrotate box object (``RotatedBoxes``: its
    ``.tensor``), or ``boxes`` itself when it already is one."""
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes


def _regularize_long_edge(boxes, start: float):
    """``w >= h`` (a square is swapped too) and ``t`` in ``[start, start + pi)``."""
    if isinstance(boxes, np.ndarray):
        where = np.where
        stack = lambda parts: np.stack(parts, axis=-1)  # noqa: E731
    else:
        where = torch.where
        stack = lambda parts: torch.stack(parts, dim=-1)  # noqa: E731
    x, y, w, h, t = (boxes[..., i] for i in range(5))
    wider = w > h
    t = where(wider, t, t + np.pi / 2)
    t = (t - start) % np.pi + start if start else t % np.pi  # Python-style modulo
    return stack([x, y, where(wider, w, h), where(wider, h, w), t])


def regularize_le90(boxes):
    """(..., 5) boxes ``(cx, cy, w, h, t)`` -> the same boxes written in le90.

    The one le90 rule of the project, for numpy arrays and torch tensors alike
    (same type, shape and dtype out; differentiable for tensors): ``w >= h``
    and ``t`` in ``[-pi/2, pi/2)``. When ``w <= h`` the sides are swapped and
    ``t`` turned by ``pi/2``; a square (``w == h``) is swapped too, exactly as
    ``mmrotate.structures.RotatedBoxes.regularize_boxes('le90')`` does, so
    boxes from mmrotate transforms and ours agree bit for bit.
    """
    return _regularize_long_edge(boxes, -np.pi / 2)


def regularize_long_edge(boxes):
    """(..., 5) boxes ``(cx, cy, w, h, t)`` -> long edge first, ``t`` in ``[0, pi)``.

    RHINO's box convention (``RotatedBoxes.regularize_boxes(width_longer=True,
    start_angle=0)``), same rules as :func:`regularize_le90`: ``w <= h`` swaps
    the sides (a square too) and turns t by pi/2, then ``t mod pi``. Not
    idempotent on squares (each call turns them by pi/2 again): apply it once.
    """
    return _regularize_long_edge(boxes, 0.0)


def norm_angle_le90(t: Tensor) -> Tensor:
    """Angles wrapped to ``[-pi/2, pi/2)`` (the angle rule of :func:`regularize_le90`)."""
    return torch.remainder(t + math.pi / 2, math.pi) - math.pi / 2


def rbox_corners(boxes: Tensor) -> Tensor:
    """(..., 5) boxes ``(cx, cy, w, h, t)`` -> (..., 4, 2) corners in polygon order.

    The corners are the box's ``(-w/2, -h/2), (w/2, -h/2), (w/2, h/2), (-w/2, h/2)``
    turned by ``t`` about the centre; any angle convention works.
    """
    signs = boxes.new_tensor(_CORNER_SIGNS)
    dx = signs[:, 0] * boxes[..., 2:3]
    dy = signs[:, 1] * boxes[..., 3:4]
    cos, sin = torch.cos(boxes[..., 4:5]), torch.sin(boxes[..., 4:5])
    x = boxes[..., 0:1] + dx * cos - dy * sin
    y = boxes[..., 1:2] + dx * sin + dy * cos
    return torch.stack([x, y], dim=-1)


def check_angle_version(angle_version: Optional[str]) -> Optional[str]:
    """``angle_version`` if :func:`normalize_rboxes` knows it (None or a key of
    ``ANGLE_OFFSETS``), else ValueError."""
    if angle_version is not None and angle_version not in ANGLE_OFFSETS:
        raise ValueError(f'angle_version must be None or one of {sorted(ANGLE_OFFSETS)}, '
                         f'got {angle_version!r}')
    return angle_version


def normalize_rboxes(boxes: Tensor, img_shape, angle_version: Optional[str] = None) -> Tensor:
    """(n, 5) ``(cx, cy, w, h, t)`` pixels -> ``(cx/W, cy/H, w/W, h/H, t')``.

    ``img_shape`` is ``(H, W)``, or an (n, 2) tensor of one ``(H, W)`` per box.

    ``t' = t`` (radians) when ``angle_version`` is None; otherwise the angle is
    min-max normalised over its version's range as in the published
    OrientedFormer code: ``(t + pi/2) / pi`` for le90, ``(t + pi/4) / pi`` for
    le135 and ``(t + pi/2) / (pi/2)`` for oc.
    """
    if isinstance(img_shape, Tensor):  # one (H, W) row per box
        h, w = img_shape[..., 0:1].to(boxes), img_shape[..., 1:2].to(boxes)
        out = boxes / torch.cat([w, h, w, h, torch.ones_like(w)], dim=-1)
    else:
        h, w = img_shape[:2]
        out = boxes / boxes.new_tensor([w, h, w, h, 1.])
    if check_angle_version(angle_version) is None:
        return out
    span = math.pi / 2 if angle_version == 'oc' else math.pi
    t = (out[..., 4:] + ANGLE_OFFSETS[angle_version]) / span
    return torch.cat([out[..., :4], t], dim=-1)


def normalize_gt_rboxes(boxes: Tensor, img_shape) -> Tensor:
    """(n, 5) pixel boxes, ``img_shape = (H, W)`` -> ``(cx/W, cy/H, w/W, h/H, t/pi)``
    of the boxes written long edge first with ``t`` in [0, pi) (RHINO's boxes,
    :func:`regularize_long_edge`)."""
    img_h, img_w = img_shape[:2]
    return regularize_long_edge(boxes) / boxes.new_tensor([img_w, img_h, img_w, img_h, math.pi])


def denormalize_rboxes(boxes: Tensor, img_shape) -> Tensor:
    """(..., 5) RHINO boxes ``(cx, cy, w, h, t / pi)`` in [0, 1] -> pixels, t in radians
    (the inverse of :func:`normalize_gt_rboxes` on long-edge boxes)."""
    h, w = img_shape[:2]
    return torch.cat([boxes[..., :4] * boxes.new_tensor([w, h, w, h]),
                      boxes[..., 4:] * math.pi], dim=-1)


def boxes_to_xyzrt(boxes: Tensor) -> Tensor:
    """(..., 5) boxes ``(cx, cy, w, h, t)`` -> ``(cx, cy, z, r, t)`` (w, h > 0)."""
    wh = boxes[..., 2:4]
    z = wh.prod(-1, keepdim=True).sqrt().log2()
    r = (wh[..., 1:2] / wh[..., 0:1]).log2()
    return torch.cat([boxes[..., :2], z, r, boxes[..., 4:]], dim=-1)


def xyzrt_to_boxes(xyzrt: Tensor) -> Tensor:
    """(..., 5) ``(cx, cy, z, r, t)`` -> le90 boxes ``(cx, cy, w, h, t)``:
    ``w = 2^(z - r/2)``, ``h = 2^(z + r/2)``."""
    scale = 2.0**xyzrt[..., 2:3]
    aspect = 2.0**torch.cat([xyzrt[..., 3:4] * -0.5, xyzrt[..., 3:4] * 0.5], dim=-1)
    boxes = torch.cat([xyzrt[..., :2], scale * aspect, xyzrt[..., 4:]], dim=-1)
    return regularize_le90(boxes)


def refine_xyzrt(xyzrt: Tensor, deltas: Tensor) -> Tensor:
    """Apply ``(dx, dy, dz, dr, dt)`` to (..., 5) ``xyzrt``.

    The centre moves by ``(dx, dy) * 2^z`` (image axes, in units of the box
    scale), ``z`` and ``r`` are shifted, the angle is rotated and wrapped to le90.
    """
    xy = xyzrt[..., :2] + deltas[..., :2] * 2.0**xyzrt[..., 2:3]
    zr = xyzrt[..., 2:4] + deltas[..., 2:4]
    t = norm_angle_le90(xyzrt[..., 4:] + deltas[..., 4:])
    return torch.cat([xy, zr, t], dim=-1)
