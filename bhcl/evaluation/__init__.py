"""Hierarchical rotated mAP: a numpy core (``functional``) and the registered
``HierarchicalDOTAMetric``."""
from .functional import (Detections, GroundTruth, eval_hierarchical_map, eval_rotated_map,
                         pairwise_iou)
from .metrics import HierarchicalDOTAMetric

__all__ = [
    'HierarchicalDOTAMetric', 'Detections', 'GroundTruth', 'eval_hierarchical_map',
    'eval_rotated_map', 'pairwise_iou'
]
