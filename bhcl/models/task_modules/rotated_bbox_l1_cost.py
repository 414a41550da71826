"""L1 match cost between rotated boxes, normalised by the image size."""
from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from torch import Tensor


def normalize_rboxes(boxes: Tensor, img_shape) -> Tensor:
    """(n, 5) ``(cx, cy, w, h, t)`` pixels -> ``(cx/W, cy/H, w/W, h/H, t)``; img_shape ``(H, W)``."""
    h, w = img_shape[:2]
    return boxes / boxes.new_tensor([w, h, w, h, 1.])


def _tensor(boxes) -> Tensor:
    return boxes.tensor if hasattr(boxes, 'tensor') else boxes


@TASK_UTILS.register_module()
class RotatedBBoxL1Cost(BaseMatchCost):
    """``weight * ||normalised pred - normalised gt||_1`` over ``(cx, cy, w, h, t)``.

    Both sets must use the same angle version (le90); predictions in
    ``pred_instances.bboxes`` (n, 5), ground truth in ``gt_instances.bboxes``.
    """

    def __init__(self, weight: Union[float, int] = 1.):
        super().__init__(weight=weight)

    def __call__(self,
                 pred_instances: InstanceData,
                 gt_instances: InstanceData,
                 img_meta: Optional[dict] = None,
                 **kwargs) -> Tensor:
        """Returns the (num_preds, num_gts) cost."""
        pred, gt = _tensor(pred_instances.bboxes), _tensor(gt_instances.bboxes)
        if img_meta is not None:
            pred = normalize_rboxes(pred, img_meta['img_shape'])
            gt = normalize_rboxes(gt, img_meta['img_shape'])
        return torch.cdist(pred.float(), gt.float(), p=1) * self.weight
