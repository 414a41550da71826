"""Rotated IoU loss that works on every device.

mmrotate's ``RotatedIoULoss`` calls mmcv's ``diff_iou_rotated_2d``, whose
vertex-sort kernel exists only for CUDA. This loss keeps its arguments and
reduction semantics and picks the IoU by bhcl's one kernel rule
(:func:`bhcl.ops.kernel_dispatch.use_mmcv_kernel`): mmcv's kernel on CUDA when
it runs, :func:`bhcl.ops.rotated_iou.rotated_box_iou` everywhere else.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from mmdet.models.losses.utils import weight_reduce_loss
from mmrotate.models.losses import RotatedIoULoss
from mmrotate.registry import MODELS
from torch import Tensor

from bhcl.ops.kernel_dispatch import check_backend, use_mmcv_kernel
from bhcl.ops.rotated_iou import rotated_box_iou

IoUFunction = Callable[[Tensor, Tensor], Tensor]


def _mmcv_aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    if boxes1.numel() == 0:  # nothing for a kernel to launch on
        return rotated_box_iou(boxes1, boxes2, aligned=True)
    from mmcv.ops import diff_iou_rotated_2d
    iou = diff_iou_rotated_2d(boxes1.float()[None], boxes2.float()[None])[0]
    return iou.to(boxes1.dtype)


def _torch_aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return rotated_box_iou(boxes1, boxes2, aligned=True)


def select_aligned_iou(boxes: Tensor, backend: str = 'auto') -> IoUFunction:
    """Aligned differentiable rotated IoU ``(N, 5), (N, 5) -> (N,)`` for ``boxes``
    (their device and dtype): mmcv's ``diff_iou_rotated_2d`` or the pure-PyTorch op,
    by :func:`bhcl.ops.kernel_dispatch.use_mmcv_kernel`."""
    use_mmcv = use_mmcv_kernel('diff_iou_rotated_2d', boxes, backend)
    return _mmcv_aligned_iou if use_mmcv else _torch_aligned_iou


def rotated_iou_loss_elementwise(pred: Tensor,
                                 target: Tensor,
                                 iou_fn: IoUFunction,
                                 mode: str = 'log',
                                 eps: float = 1e-6) -> Tensor:
    """(N, 5), (N, 5) -> (N,) unreduced loss: ``1 - iou``, ``1 - iou**2`` or ``-log(iou)``.

    The IoU is clamped below at ``eps`` first, as in mmrotate.
    """
    ious = iou_fn(pred, target).clamp(min=eps)
    if mode == 'linear':
        return 1 - ious
    if mode == 'square':
        return 1 - ious**2
    if mode == 'log':
        return -ious.log()
    raise ValueError(f"mode must be 'linear', 'square' or 'log', got {mode!r}")


@MODELS.register_module()
class RotatedIoULossWithFallback(RotatedIoULoss):
    """mmrotate's ``RotatedIoULoss`` with a pure-PyTorch IoU where mmcv has no kernel.

    Arguments and semantics are those of ``RotatedIoULoss`` (``mode`` in
    linear / square / log, ``weight`` per box or per coordinate, ``avg_factor``,
    ``reduction_override``, ``loss_weight``). ``backend`` chooses the IoU:
    ``'auto'`` (mmcv on CUDA if its kernel runs, ours otherwise), ``'mmcv'``
    or ``'torch'``. Boxes are ``(cx, cy, w, h, t)``, ``t`` in radians.
    """

    def __init__(self,
                 linear: bool = False,
                 eps: float = 1e-6,
                 reduction: str = 'mean',
                 loss_weight: float = 1.0,
                 mode: str = 'log',
                 backend: str = 'auto') -> None:
        super().__init__(linear=linear,
                         eps=eps,
                         reduction=reduction,
                         loss_weight=loss_weight,
                         mode=mode)
        self.backend = check_backend(backend)

    def forward(self,
                pred: Tensor,
                target: Tensor,
                weight: Optional[Tensor] = None,
                avg_factor: Optional[float] = None,
                reduction_override: Optional[str] = None,
                **kwargs) -> Tensor:
        """(N, 5) predictions and targets -> scalar loss, or (N,) with ``'none'``."""
        if reduction_override not in (None, 'none', 'mean', 'sum'):
            raise ValueError(f'unknown reduction_override {reduction_override!r}')
        reduction = reduction_override or self.reduction
        if weight is not None and not torch.any(weight > 0) and reduction != 'none':
            # All boxes ignored: a zero that keeps ``pred`` in the graph.
            if pred.dim() == weight.dim() + 1:
                weight = weight.unsqueeze(1)
            return (pred * weight).sum()
        if weight is not None and weight.dim() > 1:
            # Per-coordinate weights (N, 5) reduce to one weight per box.
            if weight.shape != pred.shape:
                raise ValueError(
                    f'weight {tuple(weight.shape)} does not match pred {tuple(pred.shape)}')
            weight = weight.mean(-1)
        if pred.dtype in (torch.float16, torch.bfloat16):
            pred, target = pred.float(), target.float()
        iou_fn = select_aligned_iou(pred, self.backend)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss = rotated_iou_loss_elementwise(pred,
                                                target.to(pred.dtype),
                                                iou_fn,
                                                mode=self.mode,
                                                eps=self.eps)
            loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        return self.loss_weight * loss
