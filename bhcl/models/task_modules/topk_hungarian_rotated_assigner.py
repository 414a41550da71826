"""One-to-k Hungarian assignment (each ground truth gets up to k predictions)."""
from typing import List, Optional, Union

import torch
from mmdet.models.task_modules.assigners import AssignResult, BaseAssigner
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from scipy.optimize import linear_sum_assignment


@TASK_UTILS.register_module()
class TopkHungarianRotatedAssigner(BaseAssigner):
    """Hungarian matching on the cost matrix repeated ``topk`` times per ground truth.

    Works with any box type the match costs accept (here rotated boxes).

    Args:
        match_costs: configs of mmdet-style match costs, summed.
        topk: predictions per ground truth (fewer when predictions run short).
    """

    def __init__(self, match_costs: Union[dict, List[dict]], topk: int = 4):
        if isinstance(match_costs, dict):
            match_costs = [match_costs]
        self.match_costs = [TASK_UTILS.build(c) for c in match_costs]
        self.topk = topk

    def assign(self,
               pred_instances: InstanceData,
               gt_instances: InstanceData,
               img_meta: Optional[dict] = None,
               **kwargs) -> AssignResult:
        """``gt_inds``: 0 background, i + 1 for ground truth i; ``labels``: -1 or its label."""
        num_preds, num_gts = len(pred_instances), len(gt_instances)
        device = gt_instances.labels.device
        gt_inds = torch.zeros(num_preds, dtype=torch.long, device=device)
        labels = torch.full((num_preds, ), -1, dtype=torch.long, device=device)
        if num_gts == 0 or num_preds == 0:
            return AssignResult(num_gts, gt_inds, None, labels=labels)
        cost = sum(c(pred_instances, gt_instances, img_meta) for c in self.match_costs)
        k = max(1, min(self.topk, num_preds // num_gts))
        cost = cost.detach().float().repeat_interleave(k, dim=1)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        rows = torch.as_tensor(rows, device=device, dtype=torch.long)
        gts = torch.as_tensor(cols, device=device, dtype=torch.long) // k
        gt_inds[rows] = gts + 1
        labels[rows] = gt_instances.labels[gts]
        return AssignResult(num_gts, gt_inds, None, labels=labels)
