from .match_costs import RotatedIoUCostWithFallback, pairwise_rotated_iou
from .rotated_bbox_l1_cost import RotatedBBoxL1Cost
from .topk_hungarian_rotated_assigner import TopkHungarianRotatedAssigner

__all__ = [
    'RotatedIoUCostWithFallback', 'pairwise_rotated_iou', 'RotatedBBoxL1Cost',
    'TopkHungarianRotatedAssigner'
]
