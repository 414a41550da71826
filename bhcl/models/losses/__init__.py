from .hcl_loss import HierarchicalContrastiveLoss
from .prototype_bank import (ClassifierPrototypeBank, EMAPrototypeBank,
                             LearnablePrototypeBank, PrototypeBank)
from .rotated_iou_loss import RotatedIoULossWithFallback

__all__ = [
    'HierarchicalContrastiveLoss', 'PrototypeBank', 'EMAPrototypeBank',
    'LearnablePrototypeBank', 'ClassifierPrototypeBank', 'RotatedIoULossWithFallback'
]
