"""RHINO's head: mmdet's DINO head on rotated boxes.

Boxes are predicted as ``(cx, cy, w, h, t / pi)`` in [0, 1] (centre and size
normalised by the image's width and height, the long-edge angle in [0, pi)
as a fraction of pi), refined in inverse-sigmoid space from the decoder's
reference boxes. The box losses are an L1 loss on these five numbers and,
in the slot of DINO's GIoU loss, a rotated-box loss on the boxes in pixels
(RHINO: the Gaussian KLD of mmrotate's ``GDLoss``). Matching uses the same
box representation: the assigner's costs see the predictions in pixels
(``(cx, cy, w, h, t)``, t in radians) and the ground truth written long edge
first with t in [0, pi) (RHINO's convention, as the targets).
"""
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from mmcv.cnn import Linear
from mmdet.models.dense_heads import DINOHead
from mmdet.models.layers import inverse_sigmoid
from mmdet.utils import InstanceList, reduce_mean
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from mmrotate.structures.bbox import RotatedBoxes
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from bhcl.models.layers.hierarchical_classification import (ClassContext,
                                                             HierarchicalClassification,
                                                             selection_weight, top_candidates)
from bhcl.models.layers.rotated_dino_decoder import split_streams
from bhcl.structures.box_coding import (box_tensor, denormalize_rboxes, normalize_gt_rboxes,
                                        regularize_long_edge)
from bhcl.utils.config_check import RETIRED_KEYS


def dn_group_hungarian(dn_cost: Tensor, match_cost: Tensor) -> Tensor:
    """RHINO's group-wise matching of positive denoising queries.

    For each group g, the rows ``[dn_cost[g]; match_cost]`` (the group's positive
    queries first, then every matching query) are Hungarian-matched to the
    ground truths (columns). RHINO solves all groups as one block-diagonal
    problem with +100 off the blocks; blocks never trade, so this is the same.

    Args:
        dn_cost: (G, N, N) cost of positive query j of group g against ground truth k.
        match_cost: (Q, N) cost of each matching query.
    Returns:
        (G, N) long: the ground truth matched to each positive query, -1 if none.
    """
    num_groups, num_gt = dn_cost.shape[:2]
    out = torch.full((num_groups, num_gt), -1, dtype=torch.long)
    match = match_cost.detach().float().cpu()
    for g in range(num_groups):
        cost = torch.cat([dn_cost[g].detach().float().cpu(), match]).numpy()
        rows, cols = linear_sum_assignment(cost)
        keep = rows < num_gt
        out[g, torch.from_numpy(rows[keep])] = torch.from_numpy(cols[keep].astype(np.int64))
    return out.to(dn_cost.device)


@MODELS.register_module()
class RotatedDINOHead(DINOHead):
    """:class:`mmdet.models.dense_heads.DINOHead` predicting 5-d rotated boxes.

    ``loss_iou`` is the rotated-box loss on pixel boxes (e.g. ``dict(type='GDLoss',
    loss_type='kld', fun='log1p', tau=1.0, loss_weight=5.0)``), ``loss_bbox`` the L1
    loss on the normalised boxes; the assigner's costs see pixel boxes.
    ``num_streams``: the query streams of the decoder layer type (its ``num_streams``;
    the RHINO detector sets it): 1, or 2 for the decoupled layer, whose queries are
    (classification, localisation) halves of 2C channels; classes come from the first,
    boxes from the second. No config sets it: decoupling is the decoder layer type.
    ``category_projection``: the decoder layers' class branches are C -> C projections
    that the detector's :class:`HierarchicalClassification` matches with its category
    queries (the encoder proposals keep a linear scorer).
    ``dn_joint_matching``: RHINO's paper variant for the positive denoising queries
    (:meth:`joint_dn_class_targets`); False: DINO's fixed targets.

    The head keeps no per-call state: :meth:`loss` and :meth:`predict` take the
    detector's ``hierarchy`` and the batch's category queries (``classes``) as
    arguments, and :meth:`loss` returns the matching targets' labels of every decoder
    layer with the losses (keys in :meth:`loss_by_feat`).
    """

    box_dims = 5

    def __init__(self, *args, num_streams: int = 1, category_projection: bool = False,
                 dn_joint_matching: bool = False, **kwargs) -> None:
        moved = [k for k in ('loss_hcl', 'classifier') if k in kwargs]
        if moved:
            raise TypeError(f'RotatedDINOHead: {moved} are keys of the detector now: write '
                            f'model.{moved[0]}, not model.bbox_head.{moved[0]}')
        if 'decoupled' in kwargs:
            raise TypeError(f"RotatedDINOHead: decoupled={kwargs['decoupled']!r} is no longer "
                            f"an option; {RETIRED_KEYS['model.bbox_head.decoupled']}")
        if num_streams not in (1, 2):
            raise ValueError(f'RotatedDINOHead: num_streams must be 1 or 2 (the decoder '
                             f'layer type\'s), got {num_streams!r}')
        self.num_streams = num_streams
        self.dn_joint_matching = dn_joint_matching
        super().__init__(*args, **kwargs)
        if category_projection:
            for layer in range(self.num_decoder_layers):
                self.cls_branches[layer] = Linear(self.embed_dims, self.embed_dims)

    @property
    def num_decoder_layers(self) -> int:
        """Prediction layers of the decoder (the last branch scores encoder proposals)."""
        return self.num_pred_layer - (1 if self.as_two_stage else 0)

    def split_streams(self, hidden_state: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., num_streams * C) -> (what the class branch reads, what the box branch
        reads), as the decoder layer type splits its queries."""
        return split_streams(hidden_state, self.num_streams, self.embed_dims)

    def _init_layers(self) -> None:
        super()._init_layers()
        for branch in self.reg_branches:  # DETR's 4-number box output -> 5
            branch[-1] = Linear(self.embed_dims, self.box_dims)
        if self.share_pred_layer:
            self.reg_branches = nn.ModuleList([self.reg_branches[0]] * self.num_pred_layer)

    def forward(self, hidden_states: Tensor, references: List[Tensor],
                hierarchy: Optional[HierarchicalClassification] = None,
                classes: Optional[ClassContext] = None) -> Tuple[Tensor, Tensor]:
        """Per decoder layer: class scores (L, B, N, K) and boxes (L, B, N, 5) in [0, 1].
        With category queries (``classes``), ``hierarchy`` turns the class branches'
        projections into logits."""
        scores, coords = [], []
        for layer_id in range(hidden_states.shape[0]):
            reference = inverse_sigmoid(references[layer_id])  # eps 1e-5, as RHINO / DINO
            cls_in, reg_in = self.split_streams(hidden_states[layer_id])
            logits = self.cls_branches[layer_id](cls_in)
            if classes is not None:
                logits = hierarchy.classify(logits, classes)
            scores.append(logits)
            coords.append((self.reg_branches[layer_id](reg_in) + reference).sigmoid())
        return torch.stack(scores), torch.stack(coords)

    # ------------------------------------------------------------ losses
    def loss(self, hidden_states: Tensor, references: List[Tensor], enc_outputs_class: Tensor,
             enc_outputs_coord: Tensor, batch_data_samples, dn_meta: Dict[str, int],
             hierarchy: Optional[HierarchicalClassification] = None,
             classes: Optional[ClassContext] = None) -> Tuple[Dict[str, Tensor], List[Tensor]]:
        """DINO's losses -> (losses, labels): see :meth:`loss_by_feat`. ``classes``: the
        batch's category queries (``hierarchy`` computes the decoder layers' logits
        from them; unselected nodes take no part in the classification losses)."""
        metas = [s.metainfo for s in batch_data_samples]
        gts = [s.gt_instances for s in batch_data_samples]
        all_cls, all_box = self(hidden_states, references, hierarchy, classes)
        return self.loss_by_feat(all_cls, all_box, enc_outputs_class, enc_outputs_coord, gts,
                                 metas, dn_meta,
                                 selected=None if classes is None else classes.selected)

    def loss_by_feat(self, all_layers_cls_scores: Tensor, all_layers_bbox_preds: Tensor,
                     enc_cls_scores: Tensor, enc_bbox_preds: Tensor,
                     batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                     dn_meta: Dict[str, int], batch_gt_instances_ignore=None,
                     selected: Optional[Tensor] = None
                     ) -> Tuple[Dict[str, Tensor], List[Tensor]]:
        """DINO's losses with explicit data flow.

        Returns ``(losses, labels)``; ``labels``: per decoder layer, the (B * N,) class
        targets of its matching queries (K for background), for the contrastive loss.
        Keys (``docs/design.md``): ``s{i}.loss_cls``, ``s{i}.loss_bbox``, ``s{i}.loss_iou``
        for the matching queries of decoder layer i, ``s{i}.dn_loss_*`` for its
        denoising queries, ``enc_loss_*`` for the encoder proposals. ``selected`` (B, K)
        bool: the nodes each image's classification losses count (category queries).
        """
        match_cls, match_box, dn_cls, dn_box = self.split_outputs(
            all_layers_cls_scores, all_layers_bbox_preds, dn_meta)
        losses, labels = {}, []
        for i, (cls, box) in enumerate(zip(match_cls, match_box)):
            terms, layer_labels = self.matching_loss(cls, box, batch_gt_instances,
                                                     batch_img_metas, selected)
            losses.update(self._named(terms, f's{i}.'))
            labels.append(layer_labels)
        if enc_cls_scores is not None:
            terms, _ = self.matching_loss(enc_cls_scores, enc_bbox_preds, batch_gt_instances,
                                          batch_img_metas, selected)
            losses.update(self._named(terms, 'enc_'))
        if dn_cls is not None:
            for i, (cls, box) in enumerate(zip(dn_cls, dn_box)):
                matching = (match_cls[i], match_box[i]) if self.dn_joint_matching else None
                terms = self.denoising_loss(cls, box, batch_gt_instances, batch_img_metas,
                                            dn_meta, matching, selected)
                losses.update(self._named(terms, f's{i}.dn_'))
        return losses, labels

    @staticmethod
    def _named(terms: Tuple[Tensor, Tensor, Tensor], prefix: str) -> Dict[str, Tensor]:
        return {f'{prefix}{k}': v for k, v in zip(('loss_cls', 'loss_bbox', 'loss_iou'), terms)}

    def box_losses(self, preds: Tensor, targets: Tensor, weights: Tensor, factors: Tensor,
                   avg_factor: float) -> Tuple[Tensor, Tensor]:
        """L1 on normalised (n, 5) boxes and the rotated-box loss on their pixel form.

        ``factors`` (n, 5): ``(W, H, W, H, pi)`` of each box's image; ``weights`` (n, 5).
        """
        loss_bbox = self.loss_bbox(preds, targets, weights, avg_factor=avg_factor)
        pos = weights[:, 0] > 0
        if pos.any():
            loss_iou = self.loss_iou(preds[pos] * factors[pos], targets[pos] * factors[pos],
                                     weights[pos, 0], avg_factor=avg_factor)
        else:  # keeps every prediction in the graph
            loss_iou = preds.sum() * 0
        return loss_bbox, loss_iou

    @staticmethod
    def _factors(batch_img_metas: List[dict], n_per_image: int, like: Tensor) -> Tensor:
        rows = [like.new_tensor([m['img_shape'][1], m['img_shape'][0], m['img_shape'][1],
                                 m['img_shape'][0], math.pi]).expand(n_per_image, 5)
                for m in batch_img_metas]
        return torch.cat(rows)

    def loss_by_feat_single(self, cls_scores: Tensor, bbox_preds: Tensor,
                            batch_gt_instances: InstanceList,
                            batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """mmdet's per-layer loss: (cls, bbox, iou) of :meth:`matching_loss`."""
        return self.matching_loss(cls_scores, bbox_preds, batch_gt_instances,
                                  batch_img_metas)[0]

    def matching_loss(self, cls_scores: Tensor, bbox_preds: Tensor,
                      batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                      selected: Optional[Tensor] = None
                      ) -> Tuple[Tuple[Tensor, Tensor, Tensor], Tensor]:
        """Hungarian-matched losses of one decoder layer (or of the encoder proposals)
        -> ((cls, bbox, iou), the (B * N,) class targets, K for background)."""
        num_imgs = cls_scores.size(0)
        targets = self.get_targets([cls_scores[i] for i in range(num_imgs)],
                                   [bbox_preds[i] for i in range(num_imgs)],
                                   batch_gt_instances, batch_img_metas)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         num_total_pos, num_total_neg) = targets
        labels = torch.cat(labels_list)
        label_weights = torch.cat(label_weights_list)
        bbox_targets = torch.cat(bbox_targets_list)
        bbox_weights = torch.cat(bbox_weights_list)
        terms = self._losses(cls_scores, bbox_preds, labels, label_weights, bbox_targets,
                             bbox_weights, num_total_pos, num_total_neg, batch_img_metas,
                             selected=selected)
        return terms, labels

    def _losses(self, cls_scores, bbox_preds, labels, label_weights, bbox_targets,
                bbox_weights, num_total_pos, num_total_neg, batch_img_metas,
                num_cls_pos: Optional[int] = None, selected: Optional[Tensor] = None):
        """Focal, L1 and rotated-box losses; the classification loss is averaged over
        ``num_cls_pos`` positives (default ``num_total_pos``), the box losses over
        ``num_total_pos``; ``selected`` (B, K): the nodes counted per image."""
        cls_scores = cls_scores.reshape(-1, self.cls_out_channels)
        num_cls_pos = num_total_pos if num_cls_pos is None else num_cls_pos
        cls_avg_factor = num_cls_pos * 1.0 + num_total_neg * self.bg_cls_weight
        if self.sync_cls_avg_factor:
            cls_avg_factor = reduce_mean(cls_scores.new_tensor([cls_avg_factor]))
        cls_avg_factor = max(cls_avg_factor, 1)
        if selected is not None:
            # categories outside an image's selection take no part in its loss
            label_weights = label_weights[:, None] * selection_weight(
                selected, len(cls_scores) // len(selected)).to(label_weights)
        if len(cls_scores):
            loss_cls = self.loss_cls(cls_scores, labels, label_weights,
                                     avg_factor=cls_avg_factor)
        else:
            loss_cls = cls_scores.sum() * 0
        num_total_pos = cls_scores.new_tensor([num_total_pos])
        num_total_pos = torch.clamp(reduce_mean(num_total_pos), min=1).item()
        preds = bbox_preds.reshape(-1, self.box_dims)
        factors = self._factors(batch_img_metas, bbox_preds.shape[1], preds)
        loss_bbox, loss_iou = self.box_losses(preds, bbox_targets, bbox_weights, factors,
                                              num_total_pos)
        return loss_cls, loss_bbox, loss_iou

    def _get_targets_single(self, cls_score: Tensor, bbox_pred: Tensor,
                            gt_instances: InstanceData, img_meta: dict) -> tuple:
        """Hungarian targets of one image: labels, weights, normalised box targets."""
        num_bboxes = bbox_pred.size(0)
        gt_boxes = regularize_long_edge(box_tensor(gt_instances.bboxes).to(bbox_pred))
        pred_instances = InstanceData(scores=cls_score,
                                      bboxes=denormalize_rboxes(bbox_pred, img_meta['img_shape']))
        assign = self.assigner.assign(
            pred_instances=pred_instances,
            gt_instances=InstanceData(bboxes=gt_boxes, labels=gt_instances.labels),
            img_meta=img_meta)
        pos_inds = torch.nonzero(assign.gt_inds > 0, as_tuple=False).squeeze(-1).unique()
        neg_inds = torch.nonzero(assign.gt_inds == 0, as_tuple=False).squeeze(-1).unique()
        pos_gt = assign.gt_inds[pos_inds].long() - 1
        labels = gt_boxes.new_full((num_bboxes, ), self.num_classes, dtype=torch.long)
        labels[pos_inds] = gt_instances.labels[pos_gt]
        label_weights = gt_boxes.new_ones(num_bboxes)
        bbox_targets = torch.zeros_like(bbox_pred)
        bbox_weights = torch.zeros_like(bbox_pred)
        bbox_weights[pos_inds] = 1.0
        bbox_targets[pos_inds] = normalize_gt_rboxes(
            box_tensor(gt_instances.bboxes).to(bbox_pred)[pos_gt], img_meta['img_shape'])
        return labels, label_weights, bbox_targets, bbox_weights, pos_inds, neg_inds

    def denoising_loss(self, dn_cls_scores: Tensor, dn_bbox_preds: Tensor,
                       batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                       dn_meta: Dict[str, int],
                       matching: Optional[Tuple[Tensor, Tensor]] = None,
                       selected: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Denoising losses (cls, bbox, iou) of one decoder layer: DINO's fixed targets,
        or, given the layer's ``matching`` outputs (class scores (B, Q, K), boxes
        (B, Q, 5); ``dn_joint_matching``), the class targets of
        :meth:`joint_dn_class_targets`. As RHINO, the classification loss is averaged
        over the positive queries that keep their class, the box losses over all
        positive queries."""
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         num_total_pos, num_total_neg) = self.get_dn_targets(batch_gt_instances,
                                                             batch_img_metas, dn_meta)
        if matching is not None:
            match_cls, match_box = matching
            labels_list = [self.joint_dn_class_targets(
                labels, dn_cls_scores[i], dn_bbox_preds[i], match_cls[i], match_box[i],
                batch_gt_instances[i], batch_img_metas[i], dn_meta)
                for i, labels in enumerate(labels_list)]
        labels = torch.cat(labels_list)
        num_kept = int((labels < self.num_classes).sum())
        return self._losses(dn_cls_scores, dn_bbox_preds, labels,
                            torch.cat(label_weights_list), torch.cat(bbox_targets_list),
                            torch.cat(bbox_weights_list), num_total_pos,
                            num_total_neg + num_total_pos - num_kept, batch_img_metas,
                            num_cls_pos=num_kept, selected=selected)

    def _get_dn_targets_single(self, gt_instances: InstanceData, img_meta: dict,
                               dn_meta: Dict[str, int]) -> tuple:
        """As DINO: positive query i of group g targets object i; negatives are background."""
        gt_boxes = box_tensor(gt_instances.bboxes)
        gt_labels = gt_instances.labels
        num_groups = dn_meta['num_denoising_groups']
        num_dn = dn_meta['num_denoising_queries']
        per_group = num_dn // num_groups
        device = gt_boxes.device
        t = torch.arange(len(gt_labels), dtype=torch.long, device=device)
        t = t.unsqueeze(0).repeat(num_groups, 1)
        pos_assigned = t.flatten()
        pos_inds = (torch.arange(num_groups, dtype=torch.long, device=device)[:, None] *
                    per_group + t).flatten()
        neg_inds = pos_inds + per_group // 2
        labels = gt_boxes.new_full((num_dn, ), self.num_classes, dtype=torch.long)
        labels[pos_inds] = gt_labels[pos_assigned]
        label_weights = gt_boxes.new_ones(num_dn)
        bbox_targets = gt_boxes.new_zeros(num_dn, self.box_dims)
        bbox_weights = gt_boxes.new_zeros(num_dn, self.box_dims)
        bbox_weights[pos_inds] = 1.0
        if len(gt_labels):
            bbox_targets[pos_inds] = normalize_gt_rboxes(
                gt_boxes, img_meta['img_shape']).repeat(num_groups, 1)
        return labels, label_weights, bbox_targets, bbox_weights, pos_inds, neg_inds

    def match_cost(self, scores: Tensor, boxes: Tensor, gt: InstanceData,
                   img_meta: dict) -> Tensor:
        """(n, K) logits and (n, 5) normalised boxes -> (n, num_gt) summed costs of the
        assigner (boxes in pixels; ``gt.bboxes`` in pixels, long edge first)."""
        pred = InstanceData(scores=scores,
                            bboxes=denormalize_rboxes(boxes, img_meta['img_shape']))
        return sum(cost(pred, gt, img_meta) for cost in self.assigner.match_costs)

    @torch.no_grad()
    def joint_dn_class_targets(self, labels: Tensor, dn_cls: Tensor, dn_box: Tensor,
                               match_cls: Tensor, match_box: Tensor, gt_instances: InstanceData,
                               img_meta: dict, dn_meta: Dict[str, int]) -> Tensor:
        """RHINO's joint matching of positive denoising queries, for one image and layer.

        Per denoising group, the group's positive queries and the matching queries are
        Hungarian-matched together to the ground truth (the assigner's costs,
        :func:`dn_group_hungarian`). Positive query i keeps object i's class only when
        the matching picks it for object i; otherwise its class target is background,
        while its box target stays object i's (the regression loss is unchanged). A
        positive query that duplicates a better matching query thus learns not to score.
        """
        num_gt = len(gt_instances)
        if num_gt == 0:
            return labels
        num_groups = dn_meta['num_denoising_groups']
        per_group = dn_meta['num_denoising_queries'] // num_groups
        device = labels.device
        pos = (torch.arange(num_groups, device=device)[:, None] * per_group +
               torch.arange(num_gt, device=device)).flatten()
        gt = InstanceData(bboxes=regularize_long_edge(box_tensor(gt_instances.bboxes).to(dn_box)),
                          labels=gt_instances.labels)
        match = self.match_cost(match_cls, match_box, gt, img_meta)
        dn = self.match_cost(dn_cls[pos], dn_box[pos], gt, img_meta)
        matched = dn_group_hungarian(dn.view(num_groups, num_gt, num_gt), match)
        own = (matched == torch.arange(num_gt, device=device)).flatten()
        labels = labels.clone()
        labels[pos[~own]] = self.num_classes
        return labels

    # --------------------------------------------------------- inference
    def predict(self, hidden_states: Tensor, references: List[Tensor], batch_data_samples,
                rescale: bool = True, hierarchy: Optional[HierarchicalClassification] = None,
                classes: Optional[ClassContext] = None) -> InstanceList:
        """The last decoder layer's top (query, node) pairs per image. ``hierarchy``
        (the detector's) says which nodes may be predicted (leaves and
        ``test_cfg.internal_nodes``; with category queries ``classes``, those selected
        for the image); None: every class."""
        metas = [s.metainfo for s in batch_data_samples]
        all_cls, all_box = self(hidden_states, references, hierarchy, classes)
        return [self._predict_by_feat_single(
            all_cls[-1][i], all_box[-1][i], meta, rescale, hierarchy,
            None if classes is None else classes.selected[i]) for i, meta in enumerate(metas)]

    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True,
                                hierarchy: Optional[HierarchicalClassification] = None,
                                selected: Optional[Tensor] = None) -> InstanceData:
        """Top ``max_per_img`` (query, class) pairs of one image, boxes in pixels (no
        NMS, as RHINO: ``cx, w`` clamped to [0, W] and ``cy, h`` to [0, H]), among the
        nodes ``hierarchy`` allows (``selected`` (K,): the image's category selection).
        ``test_cfg.return_node_scores`` adds ``node_scores`` (n, K): every node's score
        for each prediction's query (``bhcl.apis``)."""
        max_per_img = self.test_cfg.get('max_per_img', len(cls_score))
        if hierarchy is None:
            scores, query, labels = top_candidates(cls_score, max_per_img)
        else:
            scores, query, labels = hierarchy.top_predictions(cls_score, max_per_img, selected)
        img_h, img_w = img_meta['img_shape'][:2]
        boxes = denormalize_rboxes(bbox_pred[query], (img_h, img_w))
        limit = boxes.new_tensor([img_w, img_h, img_w, img_h])
        boxes = torch.cat([torch.minimum(boxes[:, :4].clamp(min=0), limit), boxes[:, 4:]], dim=-1)
        if rescale and 'scale_factor' in img_meta:
            sx, sy = img_meta['scale_factor'][:2]
            boxes[:, :4] = boxes[:, :4] / boxes.new_tensor([sx, sy, sx, sy])
        result = InstanceData(bboxes=RotatedBoxes(boxes), scores=scores, labels=labels)
        if self.test_cfg.get('return_node_scores', False):
            result.node_scores = HierarchicalClassification.node_scores(cls_score,
                                                                        selected)[query]
        return result
