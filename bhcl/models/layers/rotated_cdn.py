"""Contrastive denoising (DINO's CDN) queries for rotated boxes, as in RHINO.

Conventions (what a rotated DINO head must follow to read the queries back):

- Ground truth ``(cx, cy, w, h, t)`` in pixels, t in radians in any
  convention in which the box is the ``w x h`` rectangle turned by t (le90,
  le135, [0, pi) long edge). It is normalised to
  ``(cx / W, cy / H, w / W, h / H, (t mod pi) / pi)``; turning a rectangle by
  pi changes nothing, so wrapping keeps w / h and a long-edge box stays long-edge.
- Box queries are ``inverse_sigmoid`` of these five numbers (eps 1e-3, as mmdet).
- Noise, with ``r`` uniform in (-1, 1) for positive and in
  (-2, -1] U [1, 2) for negative queries, drawn independently per coordinate:
  ``cx += r * s * w / 2``, ``cy += r * s * h / 2``, ``w += r * s * w``,
  ``h += r * s * h`` (DN-DETR / DINO), ``t += r * s * angle_noise``
  (``s = box_noise_scale``; ``angle_noise = pi / 12`` by default, so positives
  turn by less than 15 degrees and negatives by 15 to 30 degrees at ``s = 1``).
  Centre and size are then clamped to [0, 1] (as mmdet clamps its corners) and
  the angle wrapped to [0, pi). w and h are never swapped, even if noise makes
  w < h: each query coordinate then stays near the coordinate of its target,
  whereas swapping would also turn the parameters by pi / 2.
"""
import math
from typing import List, Optional, Tuple

import torch
from mmdet.models.layers.transformer import CdnQueryGenerator, inverse_sigmoid
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType
from mmrotate.registry import MODELS
from torch import Tensor

from bhcl.structures.geometry import box_tensor


def wrap_angle_0_pi(t: Tensor) -> Tensor:
    """Angles (radians) -> [0, pi), the same rectangles."""
    t = torch.remainder(t, math.pi)
    # remainder of a tiny negative angle can round up to pi itself
    return torch.where(t >= math.pi, torch.zeros_like(t), t)


def normalize_gt_rboxes(boxes: Tensor, img_shape) -> Tensor:
    """(n, 5) pixel boxes, ``img_shape = (H, W)`` -> ``(cx/W, cy/H, w/W, h/H, (t mod pi)/pi)``."""
    img_h, img_w = img_shape[:2]
    xywh = boxes[:, :4] / boxes.new_tensor([img_w, img_h, img_w, img_h])
    return torch.cat([xywh, wrap_angle_0_pi(boxes[:, 4:]) / math.pi], dim=-1)


@MODELS.register_module()
class RotatedCdnQueryGenerator(CdnQueryGenerator):
    """mmdet's :class:`CdnQueryGenerator` for 5-d rotated boxes (RHINO).

    Same call and outputs: ``(dn_label_query (bs, num_dn, embed_dims),
    dn_bbox_query (bs, num_dn, 5), attn_mask (num_dn + num_matching,) * 2,
    dn_meta)`` with ``num_dn = max_num_target * 2 * num_groups``; label noise,
    group layout and attention mask are mmdet's. Box conventions and noise:
    see the module docstring.

    Args:
        num_classes, embed_dims, num_matching_queries, label_noise_scale,
            box_noise_scale, group_cfg: as in mmdet's ``CdnQueryGenerator``.
        angle_noise: the largest angle noise of a positive query at
            ``box_noise_scale = 1``, in radians.
        max_groups: cap on the number of denoising groups (RHINO's variant:
            30); None for mmdet's uncapped groups.
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int,
                 num_matching_queries: int,
                 label_noise_scale: float = 0.5,
                 box_noise_scale: float = 1.0,
                 group_cfg: OptConfigType = None,
                 angle_noise: float = math.pi / 12,
                 max_groups: Optional[int] = None) -> None:
        super().__init__(num_classes=num_classes, embed_dims=embed_dims,
                         num_matching_queries=num_matching_queries,
                         label_noise_scale=label_noise_scale, box_noise_scale=box_noise_scale,
                         group_cfg=group_cfg)
        if max_groups is not None and max_groups < 1:
            raise ValueError(f'max_groups must be None or >= 1, got {max_groups}')
        self.angle_noise = angle_noise
        self.max_groups = max_groups

    def __call__(self, batch_data_samples: SampleList) -> tuple:
        """Denoising queries from the ``gt_instances`` (pixel rotated boxes,
        ``labels``) and ``img_shape`` of each sample; see the class docstring."""
        gt_labels_list, gt_bboxes_list = [], []
        for sample in batch_data_samples:
            bboxes = box_tensor(sample.gt_instances.bboxes)
            gt_bboxes_list.append(normalize_gt_rboxes(bboxes, sample.img_shape))
            gt_labels_list.append(sample.gt_instances.labels)
        gt_labels = torch.cat(gt_labels_list)
        gt_bboxes = torch.cat(gt_bboxes_list)

        max_num_target = max(len(bboxes) for bboxes in gt_bboxes_list)
        num_groups = self.get_num_groups(max_num_target)
        dn_label_query = self.generate_dn_label_query(gt_labels, num_groups)
        dn_bbox_query = self.generate_dn_bbox_query(gt_bboxes, num_groups)
        batch_idx = torch.cat([torch.full_like(t.long(), i) for i, t in enumerate(gt_labels_list)])
        dn_label_query, dn_bbox_query = self.collate_dn_queries(
            dn_label_query, dn_bbox_query, batch_idx, len(batch_data_samples), num_groups)
        attn_mask = self.generate_dn_mask(max_num_target, num_groups,
                                          device=dn_label_query.device)
        dn_meta = dict(num_denoising_queries=int(max_num_target * 2 * num_groups),
                       num_denoising_groups=num_groups)
        return dn_label_query, dn_bbox_query, attn_mask, dn_meta

    def get_num_groups(self, max_num_target: Optional[int] = None) -> int:
        """mmdet's group number (dynamic: ``num_dn_queries // max_num_target``),
        capped at ``max_groups``."""
        num_groups = super().get_num_groups(max_num_target)
        if self.max_groups is not None:
            num_groups = min(num_groups, self.max_groups)
        return num_groups

    def generate_dn_bbox_query(self, gt_bboxes: Tensor, num_groups: int) -> Tensor:
        """(n, 5) normalised boxes (see :func:`normalize_gt_rboxes`) ->
        (n * 2 * num_groups, 5) noisy box queries in inverse-sigmoid space.

        Rows follow mmdet: group g holds n positives then n negatives.
        """
        assert self.box_noise_scale > 0
        num_gts = len(gt_bboxes)
        device = gt_bboxes.device
        boxes = gt_bboxes.repeat(2 * num_groups, 1)
        boxes = torch.cat([boxes[:, :4], boxes[:, 4:] * math.pi], dim=-1)  # angle in radians

        positive_idx = torch.arange(num_gts, device=device)[None] + 2 * num_gts * torch.arange(
            num_groups, device=device)[:, None]
        negative_idx = positive_idx.flatten() + num_gts
        rand_sign = torch.randint_like(boxes, low=0, high=2) * 2.0 - 1.0
        rand_part = torch.rand_like(boxes)  # positives [0, 1)
        rand_part[negative_idx] += 1.0  # negatives [1, 2)
        rand_part = rand_part * rand_sign

        wh = boxes[:, 2:4]
        span = torch.cat([wh / 2, wh, torch.full_like(wh[:, :1], self.angle_noise)], dim=-1)
        noisy = boxes + rand_part * span * self.box_noise_scale
        noisy = torch.cat([noisy[:, :4].clamp(min=0.0, max=1.0),
                           wrap_angle_0_pi(noisy[:, 4:]) / math.pi], dim=-1)
        return inverse_sigmoid(noisy, eps=1e-3)

    def collate_dn_queries(self, input_label_query: Tensor, input_bbox_query: Tensor,
                           batch_idx: Tensor, batch_size: int,
                           num_groups: int) -> Tuple[Tensor, Tensor]:
        """mmdet's collation for box queries of any width: (num_noisy, dim) ->
        (batch_size, max_num_target * 2 * num_groups, dim), padding with zeros."""
        device = input_label_query.device
        num_target_list: List[int] = [int((batch_idx == i).sum()) for i in range(batch_size)]
        max_num_target = max(num_target_list)
        num_denoising_queries = max_num_target * 2 * num_groups
        map_query_index = torch.cat([torch.arange(n, device=device) for n in num_target_list])
        map_query_index = torch.cat(
            [map_query_index + max_num_target * i for i in range(2 * num_groups)]).long()
        batch_idx_expand = batch_idx.repeat(2 * num_groups)
        batched_label_query = input_label_query.new_zeros(
            batch_size, num_denoising_queries, input_label_query.shape[-1])
        batched_bbox_query = input_bbox_query.new_zeros(
            batch_size, num_denoising_queries, input_bbox_query.shape[-1])
        batched_label_query[batch_idx_expand, map_query_index] = input_label_query
        batched_bbox_query[batch_idx_expand, map_query_index] = input_bbox_query
        return batched_label_query, batched_bbox_query
