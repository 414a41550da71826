"""Contrastive denoising (DINO's CDN) queries for rotated boxes, as in RHINO.

Conventions (what a rotated DINO head must follow to read the queries back):

- Ground truth ``(cx, cy, w, h, t)`` in pixels, t in radians in any
  convention in which the box is the ``w x h`` rectangle turned by t (le90,
  le135, [0, pi) long edge). It is first written long edge first with t in
  [0, pi) (:func:`~bhcl.structures.box_coding.normalize_gt_rboxes`, RHINO's
  convention), then normalised to ``(cx / W, cy / H, w / W, h / H, t / pi)``.
  So a box given as (short, long, t) and as (long, short, t + pi / 2) gets the
  same queries and targets.
- Box queries are ``inverse_sigmoid`` of these five numbers (eps 1e-3, as mmdet).
- Noise (RHINO's), with ``r`` uniform in (-1, 1) for positive and in
  (-2, -1] U [1, 2) for negative queries, drawn independently per coordinate
  (signs first, then magnitudes, from the global generator, as RHINO):
  ``(cx, cy, w, h) += r * s * (w, h, w, h) / 2`` in normalised units
  (``s = box_noise_scale``); the angle is not noised unless ``angle_noise > 0``
  (a bhcl option: ``t += r * s * angle_noise``, wrapped to [0, pi)). Then all
  five numbers are clamped to [0, 1]. w and h are never swapped, even if noise
  makes w < h: each query coordinate then stays near the coordinate of its target.
"""
import math
from typing import List, Optional, Tuple

import torch
from mmdet.models.layers.transformer import CdnQueryGenerator, inverse_sigmoid
from mmdet.structures import SampleList
from mmdet.utils import OptConfigType
from mmrotate.registry import MODELS
from torch import Tensor

from bhcl.structures.box_coding import box_tensor, normalize_gt_rboxes


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
            ``box_noise_scale = 1``, in radians. 0 (default): RHINO's, which
            does not noise the angle.
        max_groups: cap on the number of denoising groups. None (default):
            uncapped, as RHINO (its configs' ``group_cfg.max_num_groups=30``
            is never read).
    """

    def __init__(self,
                 num_classes: int,
                 embed_dims: int,
                 num_matching_queries: int,
                 label_noise_scale: float = 0.5,
                 box_noise_scale: float = 1.0,
                 group_cfg: OptConfigType = None,
                 angle_noise: float = 0.0,
                 max_groups: Optional[int] = None) -> None:
        super().__init__(num_classes=num_classes, embed_dims=embed_dims,
                         num_matching_queries=num_matching_queries,
                         label_noise_scale=label_noise_scale, box_noise_scale=box_noise_scale,
                         group_cfg=group_cfg)
        if angle_noise < 0:
            raise ValueError(f'angle_noise must be >= 0, got {angle_noise}')
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
        (n * 2 * num_groups, 5) noisy box queries in inverse-sigmoid space
        (noise: see the module docstring).

        Rows follow mmdet: group g holds n positives then n negatives.
        """
        assert self.box_noise_scale > 0
        num_gts = len(gt_bboxes)
        device = gt_bboxes.device
        boxes = gt_bboxes.repeat(2 * num_groups, 1)

        positive_idx = torch.arange(num_gts, device=device)[None] + 2 * num_gts * torch.arange(
            num_groups, device=device)[:, None]
        negative_idx = positive_idx.flatten() + num_gts
        rand_sign = torch.randint_like(boxes, low=0, high=2) * 2.0 - 1.0
        rand_part = torch.rand_like(boxes)  # positives [0, 1)
        rand_part[negative_idx] += 1.0  # negatives [1, 2)
        rand_part = rand_part * rand_sign

        # (w, h, w, h, 2 angle_noise) / 2 in normalised units, in RHINO's order of operations
        wh = boxes[:, 2:4]
        span = torch.cat([wh, wh, torch.full_like(wh[:, :1], 2 * self.angle_noise / math.pi)],
                         dim=-1)
        noisy = boxes + rand_part * span * self.box_noise_scale / 2
        if self.angle_noise > 0:
            noisy = torch.cat([noisy[:, :4], torch.remainder(noisy[:, 4:], 1.0)], dim=-1)
        return inverse_sigmoid(noisy.clamp(min=0.0, max=1.0), eps=1e-3)

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
