from . import dense_heads, detectors, layers, losses, necks, task_modules  # noqa: F401
from .losses import (ClassifierPrototypeBank, EMAPrototypeBank, HierarchicalContrastiveLoss,
                     LearnablePrototypeBank, PrototypeBank, RotatedIoULossWithFallback)

__all__ = [
    'HierarchicalContrastiveLoss', 'PrototypeBank', 'EMAPrototypeBank',
    'LearnablePrototypeBank', 'ClassifierPrototypeBank', 'RotatedIoULossWithFallback'
]
