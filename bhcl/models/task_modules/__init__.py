from .gaussian_kld_cost import GaussianKLDCost, pairwise_gaussian_kld
from .hausdorff_corner_cost import (HausdorffCornerCost, corner_hausdorff_cost,
                                    pairwise_corner_hausdorff)
from .match_costs import RotatedIoUCostWithFallback, pairwise_rotated_iou
from .rotated_bbox_l1_cost import RotatedBBoxL1Cost
from .topk_hungarian_rotated_assigner import TopkHungarianRotatedAssigner

__all__ = [
    'GaussianKLDCost', 'HausdorffCornerCost', 'RotatedBBoxL1Cost',
    'RotatedIoUCostWithFallback', 'TopkHungarianRotatedAssigner', 'corner_hausdorff_cost',
    'pairwise_corner_hausdorff', 'pairwise_gaussian_kld', 'pairwise_rotated_iou'
]
