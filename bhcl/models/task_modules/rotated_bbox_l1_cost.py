"""L1 match cost between rotated boxes, normalised by the image size."""
import math
from typing import Optional, Union

import torch
from mmdet.models.task_modules.assigners.match_cost import BaseMatchCost
from mmengine.structures import InstanceData
from mmrotate.registry import TASK_UTILS
from torch import Tensor

from bhcl.structures.geometry import box_tensor


ANGLE_OFFSETS = {'le90': math.pi / 2, 'le135': math.pi / 4, 'oc': math.pi / 2}


def check_angle_version(angle_version: Optional[str]) -> Optional[str]:
    """``angle_version`` if :func:`normalize_rboxes` knows it (None or a key of
    ``ANGLE_OFFSETS``), else ValueError."""
    if angle_version is not None and angle_version not in ANGLE_OFFSETS:
        raise ValueError(f'angle_version must be None or one of {sorted(ANGLE_OFFSETS)}, '
                         f'got {angle_version!r}')
    return angle_version


def normalize_rboxes(boxes: Tensor, img_shape, angle_version: Optional[str] = None) -> Tensor:
    """(n, 5) ``(cx, cy, w, h, t)`` pixels -> ``(cx/W, cy/H, w/W, h/H, t')``.

    ``img_shape`` is ``(H, W)``, or an (n, 2) tensor of one ``(H, W)`` per box.

    ``t' = t`` (radians) when ``angle_version`` is None; otherwise the angle is
    min-max normalised over its version's range as in the published
    OrientedFormer code: ``(t + pi/2) / pi`` for le90, ``(t + pi/4) / pi`` for
    le135 and ``(t + pi/2) / (pi/2)`` for oc.
    """
    if isinstance(img_shape, Tensor):  # one (H, W) row per box
        h, w = img_shape[..., 0:1].to(boxes), img_shape[..., 1:2].to(boxes)
        out = boxes / torch.cat([w, h, w, h, torch.ones_like(w)], dim=-1)
    else:
        h, w = img_shape[:2]
        out = boxes / boxes.new_tensor([w, h, w, h, 1.])
    if check_angle_version(angle_version) is None:
        return out
    span = math.pi / 2 if angle_version == 'oc' else math.pi
    t = (out[..., 4:] + ANGLE_OFFSETS[angle_version]) / span
    return torch.cat([out[..., :4], t], dim=-1)


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
