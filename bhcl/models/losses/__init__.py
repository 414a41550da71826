from .hcl_loss import HierarchicalContrastiveLoss
from .prototype_bank import (ClassifierPrototypeBank, EMAPrototypeBank,
                             LearnablePrototypeBank, PrototypeBank)

__all__ = [
    'HierarchicalContrastiveLoss', 'PrototypeBank', 'EMAPrototypeBank',
    'LearnablePrototypeBank', 'ClassifierPrototypeBank'
]
