"""Hausdorff distance between the corners of rotated boxes, as a match cost.

The corner set of a rectangle does not depend on how its ``(w, h, t)`` is
written: a turn by pi, or swapping w and h and turning by pi/2, gives the same
four points. The cost is therefore free of the angle-periodicity jumps of an
L1 cost on ``t``.
"""
from typing import Optional, Sequence, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from torch import Tensor

from bhcl.structures.box_coding import box_tensor, normalize_rboxes, rbox_corners

BOX_FORMATS = ('xywht', 'qbox')


def pairwise_corner_hausdorff(corners1: Tensor, corners2: Tensor) -> Tensor:
    """(..., N, K, 2) and (..., M, K', 2) point sets -> (..., N, M) Hausdorff distances.

    ``max(max_a min_b |a - b|, max_b min_a |a - b|)`` for every pair of sets;
    leading dimensions broadcast (a batch of images). One (..., N, K, M, K')
    distance tensor is made: 16 numbers per pair of boxes.
    """
    (n, k), (m, k2) = corners1.shape[-3:-1], corners2.shape[-3:-1]
    # not the matmul expansion, which gives identical boxes about sqrt(eps), not 0
    dist = torch.cdist(corners1.flatten(-3, -2), corners2.flatten(-3, -2),
                       compute_mode='donot_use_mm_for_euclid_dist')
    dist = dist.unflatten(-1, (m, k2)).unflatten(-3, (n, k))  # (..., N, K, M, K')
    directed12 = dist.amin(dim=-1).amax(dim=-2)
    directed21 = dist.amin(dim=-3).amax(dim=-1)
    return torch.maximum(directed12, directed21)


def boxes_to_corners(boxes: Tensor, box_format: str = 'xywht') -> Tensor:
    """(..., 5) ``(cx, cy, w, h, t)`` or (..., 8) ``(x1, y1, ..., x4, y4)`` -> (..., 4, 2)."""
    if box_format not in BOX_FORMATS:
        raise ValueError(f'box_format must be one of {BOX_FORMATS}, got {box_format!r}')
    size = 5 if box_format == 'xywht' else 8
    if boxes.shape[-1] != size:
        raise ValueError(f'{box_format!r} boxes have {size} numbers, got shape '
                         f'{tuple(boxes.shape)}')
    return rbox_corners(boxes) if box_format == 'xywht' else boxes.unflatten(-1, (4, 2))


def corner_hausdorff_cost(boxes1: Tensor, boxes2: Tensor, img_shape: Optional[Sequence] = None,
                          box_format: str = 'xywht', scale_boxes: bool = True) -> Tensor:
    """(..., N, 5) and (..., M, 5) boxes in pixels -> (..., N, M) corner Hausdorff distance.

    With ``img_shape = (H, W)`` the distance is measured in normalised image
    coordinates (the unit square), as the L1 cost is; on a square image this is
    the pixel distance over the side. ``scale_boxes`` (RHINO's rule, ``'xywht'``
    only): the boxes are divided by ``(W, H, W, H, 1)`` before their corners are
    computed; otherwise the corners are computed in pixels and divided by
    ``(W, H)``, so that a rotated box keeps its shape on non-square images. The
    two agree on square images.
    """
    if img_shape is not None and scale_boxes and box_format == 'xywht':
        boxes1, boxes2 = normalize_rboxes(boxes1, img_shape), normalize_rboxes(boxes2, img_shape)
        img_shape = None
    corners1 = boxes_to_corners(boxes1, box_format)
    corners2 = boxes_to_corners(boxes2, box_format)
    if img_shape is not None:
        h, w = img_shape[:2]
        scale = corners1.new_tensor([w, h])
        corners1, corners2 = corners1 / scale, corners2 / scale
    return pairwise_corner_hausdorff(corners1, corners2)


@TASK_UTILS.register_module()
class HausdorffCornerCost(BaseMatchCost):
    """``weight *`` Hausdorff distance between the corners of predicted and
    ground-truth rotated boxes (RHINO's matching cost).

    Boxes (pixels) are read from ``pred_instances.bboxes`` (n, 5) and
    ``gt_instances.bboxes`` (m, 5); with an ``img_meta`` the distance is taken
    in image-normalised coordinates (see :func:`corner_hausdorff_cost`), so
    that it is scale-free like the L1 cost.

    Args:
        weight: cost weight.
        box_format: ``'xywht'`` (``(cx, cy, w, h, t)``, t in radians, any angle
            version) or ``'qbox'`` (four corners ``(x1, y1, ..., x4, y4)``).
        scale_boxes: True (RHINO): normalise the boxes, then take their corners;
            False: normalise the pixel corners (see :func:`corner_hausdorff_cost`).
    """

    def __init__(self, weight: Union[float, int] = 1., box_format: str = 'xywht',
                 scale_boxes: bool = True) -> None:
        super().__init__(weight=weight)
        if box_format not in BOX_FORMATS:
            raise ValueError(f'box_format must be one of {BOX_FORMATS}, got {box_format!r}')
        self.box_format = box_format
        self.scale_boxes = scale_boxes

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """Returns the (num_preds, num_gts) cost."""
        pred, gt = pred_instances.bboxes, gt_instances.bboxes
        pred, gt = box_tensor(pred), box_tensor(gt)
        img_shape = None if img_meta is None else img_meta['img_shape']
        cost = corner_hausdorff_cost(pred.float(), gt.to(pred.device).float(), img_shape,
                                     self.box_format, self.scale_boxes)
        return cost * self.weight
