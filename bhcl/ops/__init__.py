"""Plain-PyTorch operators (no mm* imports) and the one rule for when mmcv's compiled
kernel runs instead (:func:`use_mmcv_kernel`)."""
from .kernel_dispatch import use_mmcv_kernel
from .rotated_iou import rotated_box_iou

__all__ = ['rotated_box_iou', 'use_mmcv_kernel']
