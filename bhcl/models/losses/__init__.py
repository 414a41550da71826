from .contrastive_alignment import ContrastiveAlignmentLoss
from .hcl_loss import HierarchicalContrastiveLoss
from .prototype_bank import (ClassifierPrototypeBank, EMAPrototypeBank,
                             LearnablePrototypeBank, PrototypeBank)
from .rotated_iou_loss import RotatedIoULossWithFallback

__all__ = [
    'ContrastiveAlignmentLoss', 'HierarchicalContrastiveLoss', 'PrototypeBank',
    'EMAPrototypeBank', 'LearnablePrototypeBank', 'ClassifierPrototypeBank',
    'RotatedIoULossWithFallback'
]
