"""L1 match cost between rotated boxes, normalised by the image size."""
from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from torch import Tensor

from bhcl.structures.box_coding import box_tensor, check_angle_version, normalize_rboxes


@TASK_UTILS.register_module()
class RotatedBBoxL1Cost(BaseMatchCost):
    """``weight * ||normalised pred - normalised gt||_1`` over ``(cx, cy, w, h, t)``.

    Both sets must use the same angle version; predictions in
    ``pred_instances.bboxes`` (n, 5), ground truth in ``gt_instances.bboxes``.

    Args:
        weight: cost weight.
        angle_version: None compares angles in radians; ``'le90'`` (the
            published OrientedFormer cost) first maps them to [0, 1), see
            :func:`normalize_rboxes`.
    """

    def __init__(self, weight: Union[float, int] = 1., angle_version: Optional[str] = None):
        super().__init__(weight=weight)
        self.angle_version = check_angle_version(angle_version)

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """Returns the (num_preds, num_gts) cost."""
        pred, gt = box_tensor(pred_instances.bboxes), box_tensor(gt_instances.bboxes)
        if img_meta is not None:
            pred = normalize_rboxes(pred, img_meta['img_shape'], self.angle_version)
            gt = normalize_rboxes(gt, img_meta['img_shape'], self.angle_version)
        return torch.cdist(pred.float(), gt.float(), p=1) * self.weight
