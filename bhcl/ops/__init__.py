"""Plain-PyTorch operators (no mm* imports)."""
from .rotated_iou import rotated_box_iou

__all__ = ['rotated_box_iou']
