"""Rotated IoU loss that works on every device.

mmrotate's ``RotatedIoULoss`` calls mmcv's ``diff_iou_rotated_2d``, whose
vertex-sort kernel exists only for CUDA. This loss keeps its arguments and
reduction semantics and picks the IoU backend once per device type: mmcv's
kernel on CUDA when it runs, :func:`bhcl.ops.rotated_iou.rotated_box_iou`
everywhere else.
"""
from __future__ import annotations

import functools
import logging
from typing import Callable, Optional

import torch
from mmdet.models.losses.utils import weight_reduce_loss
from mmengine.logging import print_log
from mmrotate.models.losses import RotatedIoULoss
from mmrotate.registry import MODELS
from torch import Tensor

from bhcl.ops.rotated_iou import rotated_box_iou

IoUFunction = Callable[[Tensor, Tensor], Tensor]
BACKENDS = ('auto', 'mmcv', 'torch')

# A rotated box that overlaps itself: enough to make a kernel run end to end.
_PROBE_BOXES = ((4.0, 4.0, 4.0, 2.0, 0.3), (4.5, 4.0, 3.0, 2.0, -0.2))


def _mmcv_aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    if boxes1.numel() == 0:  # nothing for a kernel to launch on
        return rotated_box_iou(boxes1, boxes2, aligned=True)
    from mmcv.ops import diff_iou_rotated_2d
    iou = diff_iou_rotated_2d(boxes1.float()[None], boxes2.float()[None])[0]
    return iou.to(boxes1.dtype)


def _torch_aligned_iou(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    return rotated_box_iou(boxes1, boxes2, aligned=True)


@functools.lru_cache(maxsize=None)
def mmcv_kernel_works(op_name: str, device_type: str) -> bool:
    """Whether ``mmcv.ops.<op_name>`` runs on ``device_type``; probed once.

    Probing (rather than reading build flags) also catches an mmcv built
    without ops or without the CUDA sources of that op.
    """
    try:
        import mmcv.ops
        op = getattr(mmcv.ops, op_name)
        boxes = torch.tensor(_PROBE_BOXES, device=device_type)
        if op_name == 'diff_iou_rotated_2d':
            op(boxes[None, :1], boxes[None, 1:])
        else:
            op(boxes, boxes)
    except Exception as error:  # any failure means "use our fallback"
        print_log(
            f'mmcv.ops.{op_name} unavailable on {device_type} '
            f'({type(error).__name__}: {error})',
            logger='current',
            level=logging.DEBUG)
        return False
    return True


def select_aligned_iou(device: torch.device, backend: str = 'auto') -> IoUFunction:
    """Aligned differentiable rotated IoU ``(N, 5), (N, 5) -> (N,)`` for ``device``.

    ``'auto'`` uses mmcv's ``diff_iou_rotated_2d`` on CUDA when its kernel
    runs, and the pure-PyTorch op otherwise; ``'mmcv'`` / ``'torch'`` force one.
    """
    if backend not in BACKENDS:
        raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
    if backend == 'auto':
        use_mmcv = device.type == 'cuda' and mmcv_kernel_works('diff_iou_rotated_2d', 'cuda')
        _log_choice_once(
            device.type,
            'mmcv diff_iou_rotated_2d' if use_mmcv else 'bhcl rotated_box_iou (pure PyTorch)')
    else:
        use_mmcv = backend == 'mmcv'
    return _mmcv_aligned_iou if use_mmcv else _torch_aligned_iou


@functools.lru_cache(maxsize=None)
def _log_choice_once(device_type: str, choice: str) -> None:
    print_log(f'RotatedIoULossWithFallback on {device_type}: using {choice}',
              logger='current',
              level=logging.DEBUG)


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
        if backend not in BACKENDS:
            raise ValueError(f'backend must be one of {BACKENDS}, got {backend!r}')
        self.backend = backend

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
        iou_fn = select_aligned_iou(pred.device, self.backend)
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss = rotated_iou_loss_elementwise(pred,
                                                target.to(pred.dtype),
                                                iou_fn,
                                                mode=self.mode,
                                                eps=self.eps)
            loss = weight_reduce_loss(loss, weight, reduction, avg_factor)
        return self.loss_weight * loss
