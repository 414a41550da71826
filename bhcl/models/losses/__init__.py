from .asymmetric_presence_loss import AsymmetricPresenceLoss
from .contrastive_alignment import ContrastiveAlignmentLoss
from .hcl_loss import HierarchicalContrastiveLoss, build_contrastive_losses
from .prototype_bank import (ClassifierPrototypeBank, EMAPrototypeBank,
                             LearnablePrototypeBank, PrototypeBank)
from .rotated_iou_loss import RotatedIoULossWithFallback

__all__ = [
    'AsymmetricPresenceLoss', 'ContrastiveAlignmentLoss', 'HierarchicalContrastiveLoss',
    'PrototypeBank',
    'EMAPrototypeBank', 'LearnablePrototypeBank', 'ClassifierPrototypeBank',
    'RotatedIoULossWithFallback', 'build_contrastive_losses'
]
