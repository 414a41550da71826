"""Rotated IoU match cost for Hungarian matching, on every device.

A cost needs no gradient, so mmcv's ``box_iou_rotated`` (through mmrotate's
``rbbox_overlaps``) is preferred wherever it runs: it is exact, a compiled
kernel, and it exists for CPU and CUDA. The pure-PyTorch op is the fallback
for builds or devices without it (mmcv without ops, a CPU-only mmcv given
CUDA tensors, other accelerators).
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmdet.structures.bbox import BaseBoxes
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from torch import Tensor

from bhcl.ops.kernel_dispatch import check_backend, use_mmcv_kernel
from bhcl.ops.rotated_iou import rotated_box_iou


def pairwise_rotated_iou(boxes1: Tensor, boxes2: Tensor, mode: str = 'iou',
                         backend: str = 'auto') -> Tensor:
    """(N, 5), (M, 5) boxes ``(cx, cy, w, h, t)`` -> (N, M) IoU or IoF, no gradient.

    mmcv's ``box_iou_rotated`` or the pure-PyTorch op, by
    :func:`bhcl.ops.kernel_dispatch.use_mmcv_kernel` (``'auto'``: mmcv's kernel
    wherever it runs, CPU included).
    """
    use_mmcv = use_mmcv_kernel('box_iou_rotated', boxes1, backend)
    with torch.no_grad():
        if use_mmcv:
            from mmrotate.structures.bbox import rbbox_overlaps
            return rbbox_overlaps(boxes1.float(), boxes2.float(), mode=mode).to(boxes1.dtype)
        return rotated_box_iou(boxes1, boxes2, mode=mode)


@TASK_UTILS.register_module()
class RotatedIoUCostWithFallback(BaseMatchCost):
    """``-IoU * weight`` between predicted and ground-truth rotated boxes.

    Same semantics as the ``RotatedIoUCost`` of mmrotate 1.x (the constant 1
    of ``1 - IoU`` does not change the matching and is left out).

    Args:
        iou_mode: ``'iou'`` or ``'iof'`` (over the predicted box's area).
        weight: cost weight.
        backend: ``'auto'`` (mmcv ``box_iou_rotated`` where it runs, the
            pure-PyTorch op otherwise), ``'mmcv'`` or ``'torch'``.
    """

    def __init__(self, iou_mode: str = 'iou', weight: Union[float, int] = 1.,
                 backend: str = 'auto') -> None:
        super().__init__(weight=weight)
        if iou_mode not in ('iou', 'iof'):
            raise ValueError(f"iou_mode must be 'iou' or 'iof', got {iou_mode!r}")
        self.iou_mode = iou_mode
        self.backend = check_backend(backend)

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """``bboxes`` (N, 5) predictions and (M, 5) ground truth -> (N, M) cost."""
        pred_bboxes, gt_bboxes = pred_instances.bboxes, gt_instances.bboxes
        if isinstance(pred_bboxes, BaseBoxes):
            pred_bboxes = pred_bboxes.tensor
        if isinstance(gt_bboxes, BaseBoxes):
            gt_bboxes = gt_bboxes.tensor
        overlaps = pairwise_rotated_iou(pred_bboxes, gt_bboxes.to(pred_bboxes.device),
                                        mode=self.iou_mode, backend=self.backend)
        return -overlaps * self.weight
