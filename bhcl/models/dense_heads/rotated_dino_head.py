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
import copy
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

from bhcl.models.losses.hcl_loss import build_contrastive_losses
from bhcl.structures.box_coding import (box_tensor, denormalize_rboxes, normalize_gt_rboxes,
                                        regularize_long_edge)


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

    ``loss_bbox`` is the L1 loss on the normalised boxes, ``loss_iou`` the
    rotated-box loss on pixel boxes (e.g. ``dict(type='GDLoss', loss_type='kld',
    fun='log1p', tau=1.0, loss_weight=5.0)``); the assigner's costs see pixel
    boxes. Loss keys keep DINO's names (``loss_iou`` for the rotated-box loss).
    ``decoupled``: the decoder's queries are (classification, localisation) halves
    of 2C channels; classes come from the first, boxes from the second.
    ``loss_hcl``: a ``HierarchicalContrastiveLoss`` config, one module per decoder
    layer on its matched classification features (``label_tree`` from the detector).
    ``dn_joint_matching``: RHINO's paper variant for the positive denoising queries
    (:meth:`joint_dn_class_targets`); False: DINO's fixed targets.
    """

    box_dims = 5

    def __init__(self, *args, decoupled: bool = False, loss_hcl: Optional[dict] = None,
                 label_tree: Optional[dict] = None, dn_joint_matching: bool = False,
                 classifier: Optional[dict] = None, **kwargs) -> None:
        self.decoupled = decoupled
        self.dn_joint_matching = dn_joint_matching
        self.classifier_cfg = classifier
        super().__init__(*args, **kwargs)
        self._matching_outputs: Optional[Tuple[Tensor, Tensor]] = None
        self._cq: Optional[dict] = None
        self.category_queries = None
        if classifier is not None:
            if label_tree is None:
                raise ValueError('RotatedDINOHead: classifier needs the label tree (RHINO '
                                 'passes its label_tree)')
            self.category_queries = MODELS.build(copy.deepcopy(classifier), default_args=dict(
                label_tree=label_tree, embed_dims=self.embed_dims))
            # the decoder layers' classifiers become projections onto the category
            # queries; the encoder proposals keep their linear scorer
            for layer in range(self.num_pred_layer - (1 if self.as_two_stage else 0)):
                self.cls_branches[layer] = Linear(self.embed_dims, self.embed_dims)
        self.loss_hcl = None
        if loss_hcl is not None:
            if label_tree is None:
                raise ValueError('RotatedDINOHead: loss_hcl needs the label tree (RHINO passes '
                                 'its label_tree)')
            # one loss (and prototype bank) per decoder layer, as on OrientedFormer
            self.loss_hcl = build_contrastive_losses(
                loss_hcl, self.num_pred_layer - (1 if self.as_two_stage else 0), label_tree,
                self.embed_dims)
        self._hcl_feats: Optional[Tensor] = None
        self._hcl_labels: Optional[List[Tensor]] = None

    def set_epoch(self, epoch: int) -> None:
        """Pass the 0-based epoch on to the contrastive losses (their warm-up)."""
        for loss in self.loss_hcl or ():
            loss.set_epoch(epoch)

    def split_streams(self, hidden_state: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., C) or, decoupled, (..., 2C) -> (what the class branch reads, what the
        box branch reads): the classification and localisation halves when decoupled."""
        if not self.decoupled:
            return hidden_state, hidden_state
        return hidden_state[..., :self.embed_dims], hidden_state[..., self.embed_dims:]

    def _init_layers(self) -> None:
        super()._init_layers()
        for branch in self.reg_branches:  # DETR's 4-number box output -> 5
            branch[-1] = Linear(self.embed_dims, self.box_dims)
        if self.share_pred_layer:
            self.reg_branches = nn.ModuleList([self.reg_branches[0]] * self.num_pred_layer)

    def forward(self, hidden_states: Tensor, references: List[Tensor]) -> Tuple[Tensor, Tensor]:
        """Per decoder layer: class scores (L, B, N, K) and boxes (L, B, N, 5) in [0, 1]."""
        classes, coords = [], []
        for layer_id in range(hidden_states.shape[0]):
            reference = inverse_sigmoid(references[layer_id])  # eps 1e-5, as RHINO / DINO
            cls_in, reg_in = self.split_streams(hidden_states[layer_id])
            if self._cq is not None:  # similarity to the image's category embeddings
                classes.append(self.category_queries.logits(self.cls_branches[layer_id](cls_in),
                                                            self._cq['emb']))
            else:
                classes.append(self.cls_branches[layer_id](cls_in))
            coords.append((self.reg_branches[layer_id](reg_in) + reference).sigmoid())
        return torch.stack(classes), torch.stack(coords)

    # ------------------------------------------------------------ losses
    def run_category_queries(self, img_feats, batch_data_samples, training: bool) -> None:
        """Image-conditioned category embeddings, presence logits and selection of the
        batch (``classifier``), kept for this forward."""
        cq = self.category_queries
        gt_labels = [s.gt_instances.labels for s in batch_data_samples] if training else None
        categories = cq.category_embeddings()
        emb, presence, selected = cq(img_feats, gt_labels, categories=categories)
        self._cq = dict(emb=emb, presence=presence, selected=selected, categories=categories,
                        gt_labels=gt_labels)

    def predict(self, hidden_states: Tensor, references: List[Tensor], batch_data_samples,
                rescale: bool = True, img_feats=None) -> InstanceList:
        """DINO's inference; with ``classifier`` the categories outside each image's
        selection are never predicted."""
        if self.category_queries is not None:
            self.run_category_queries(img_feats, batch_data_samples, training=False)
        try:
            return super().predict(hidden_states, references, batch_data_samples, rescale)
        finally:
            self._cq = None

    def predict_by_feat(self, all_layers_cls_scores: Tensor, all_layers_bbox_preds: Tensor,
                        batch_img_metas: List[dict], rescale: bool = False) -> InstanceList:
        if self._cq is not None:
            keep = self._cq['selected'][None, :, None, :]  # (1, B, 1, K)
            all_layers_cls_scores = all_layers_cls_scores.masked_fill(~keep, float('-inf'))
        return super().predict_by_feat(all_layers_cls_scores, all_layers_bbox_preds,
                                       batch_img_metas, rescale)

    def loss(self, hidden_states: Tensor, references: List[Tensor], enc_outputs_class: Tensor,
             enc_outputs_coord: Tensor, batch_data_samples, dn_meta: Dict[str, int],
             img_feats=None) -> dict:
        """DINO's losses, plus (``loss_hcl``) the hierarchical contrastive loss on the
        classification features of the matching queries matched at each decoder layer
        (denoising queries excluded): ``loss_hcl_lv{l}`` for the last layer,
        ``d{i}.loss_hcl_lv{l}`` for the others."""
        if self.loss_hcl is not None:
            self._hcl_feats = self.split_streams(hidden_states)[0]
        if self.category_queries is not None:
            self.run_category_queries(img_feats, batch_data_samples, training=True)
        try:
            losses = super().loss(hidden_states, references, enc_outputs_class,
                                  enc_outputs_coord, batch_data_samples, dn_meta)
            if self._cq is not None:
                cq = self.category_queries
                target = cq.presence_targets(self._cq['gt_labels'], len(batch_data_samples),
                                             self._cq['presence'].device)
                losses['loss_presence'] = cq.loss_weight * cq.presence_loss(
                    self._cq['presence'], target)
            return losses
        finally:
            self._hcl_feats = None
            self._cq = None

    def loss_by_feat(self, all_layers_cls_scores: Tensor, all_layers_bbox_preds: Tensor,
                     enc_cls_scores: Tensor, enc_bbox_preds: Tensor,
                     batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                     dn_meta: Dict[str, int], batch_gt_instances_ignore=None) -> Dict[str, Tensor]:
        if self.dn_joint_matching and dn_meta is not None:
            self._matching_outputs = self.split_outputs(all_layers_cls_scores,
                                                        all_layers_bbox_preds, dn_meta)[:2]
        try:
            return self._loss_by_feat(all_layers_cls_scores, all_layers_bbox_preds,
                                      enc_cls_scores, enc_bbox_preds, batch_gt_instances,
                                      batch_img_metas, dn_meta, batch_gt_instances_ignore)
        finally:
            self._matching_outputs = None

    def _loss_by_feat(self, all_layers_cls_scores, all_layers_bbox_preds, enc_cls_scores,
                      enc_bbox_preds, batch_gt_instances, batch_img_metas, dn_meta,
                      batch_gt_instances_ignore):
        if self._hcl_feats is None:
            return super().loss_by_feat(all_layers_cls_scores, all_layers_bbox_preds,
                                        enc_cls_scores, enc_bbox_preds, batch_gt_instances,
                                        batch_img_metas, dn_meta, batch_gt_instances_ignore)
        # the matching targets of each layer (then of the encoder proposals) are recorded
        # as DINO's loss computes them: no second Hungarian matching
        self._hcl_labels = []
        try:
            losses = super().loss_by_feat(all_layers_cls_scores, all_layers_bbox_preds,
                                          enc_cls_scores, enc_bbox_preds, batch_gt_instances,
                                          batch_img_metas, dn_meta, batch_gt_instances_ignore)
            labels_per_layer = self._hcl_labels[:len(self.loss_hcl)]
        finally:
            self._hcl_labels = None
        num_dn = dn_meta['num_denoising_queries'] if dn_meta is not None else 0
        feats = self._hcl_feats[:, :, num_dn:]  # (L, B, N, C) matching queries
        last = len(self.loss_hcl) - 1
        for layer, labels in enumerate(labels_per_layer):
            pos = labels < self.num_classes
            prefix = '' if layer == last else f'd{layer}.'
            out = self.loss_hcl[layer](feats[layer].flatten(0, 1)[pos], labels[pos],
                                       classifier_weight=self._classifier_weight(layer))
            losses.update({prefix + k: v for k, v in out.items()})
        return losses

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
        """Matching-part losses of one decoder layer (or of the encoder proposals)."""
        num_imgs = cls_scores.size(0)
        targets = self.get_targets([cls_scores[i] for i in range(num_imgs)],
                                   [bbox_preds[i] for i in range(num_imgs)],
                                   batch_gt_instances, batch_img_metas)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         num_total_pos, num_total_neg) = targets
        labels = torch.cat(labels_list)
        if self._hcl_labels is not None:
            self._hcl_labels.append(labels)
        label_weights = torch.cat(label_weights_list)
        bbox_targets = torch.cat(bbox_targets_list)
        bbox_weights = torch.cat(bbox_weights_list)
        return self._losses(cls_scores, bbox_preds, labels, label_weights, bbox_targets,
                            bbox_weights, num_total_pos, num_total_neg, batch_img_metas)

    def _losses(self, cls_scores, bbox_preds, labels, label_weights, bbox_targets,
                bbox_weights, num_total_pos, num_total_neg, batch_img_metas,
                num_cls_pos: Optional[int] = None):
        """Focal, L1 and rotated-box losses; the classification loss is averaged over
        ``num_cls_pos`` positives (default ``num_total_pos``), the box losses over
        ``num_total_pos``."""
        cls_scores = cls_scores.reshape(-1, self.cls_out_channels)
        num_cls_pos = num_total_pos if num_cls_pos is None else num_cls_pos
        cls_avg_factor = num_cls_pos * 1.0 + num_total_neg * self.bg_cls_weight
        if self.sync_cls_avg_factor:
            cls_avg_factor = reduce_mean(cls_scores.new_tensor([cls_avg_factor]))
        cls_avg_factor = max(cls_avg_factor, 1)
        if self._cq is not None:
            # categories outside an image's selection take no part in its loss
            per_image = len(cls_scores) // len(self._cq['selected'])
            label_weights = label_weights[:, None] * self._cq['selected'].repeat_interleave(
                per_image, dim=0).to(label_weights)
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

    def loss_dn(self, all_layers_denoising_cls_scores: Tensor,
                all_layers_denoising_bbox_preds: Tensor, batch_gt_instances: InstanceList,
                batch_img_metas: List[dict], dn_meta: Dict[str, int]) -> Tuple[List[Tensor]]:
        """Denoising losses per decoder layer: (cls, bbox, iou) lists."""
        out = [self._loss_dn_single(cls, box, batch_gt_instances, batch_img_metas, dn_meta,
                                    layer=layer)
               for layer, (cls, box) in enumerate(zip(all_layers_denoising_cls_scores,
                                                      all_layers_denoising_bbox_preds))]
        return tuple(map(list, zip(*out)))

    def _loss_dn_single(self, dn_cls_scores: Tensor, dn_bbox_preds: Tensor,
                        batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                        dn_meta: Dict[str, int], layer: Optional[int] = None) -> Tuple[Tensor]:
        """Denoising losses of one decoder layer: DINO's fixed targets, or with
        ``dn_joint_matching`` the class targets of :meth:`joint_dn_class_targets`.
        As RHINO, the classification loss is averaged over the positive queries that
        keep their class, the box losses over all positive queries."""
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list,
         num_total_pos, num_total_neg) = self.get_dn_targets(batch_gt_instances,
                                                             batch_img_metas, dn_meta)
        if self._matching_outputs is not None and layer is not None:
            match_cls, match_box = (t[layer] for t in self._matching_outputs)
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
                            num_cls_pos=num_kept)

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

    def _classifier_weight(self, layer: int) -> Tensor:
        """HCL's classifier-weight bank: the linear classifier's rows, or the category
        queries with the category-query classifier."""
        if self._cq is not None:
            return self._cq['categories']
        return self.cls_branches[layer].weight

    def init_weights(self) -> None:
        super().init_weights()
        if self.category_queries is not None:  # projections: the prior sits in the logits
            for layer in range(self.num_pred_layer - (1 if self.as_two_stage else 0)):
                nn.init.zeros_(self.cls_branches[layer].bias)

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
    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top ``max_per_img`` (query, class) pairs, boxes in pixels (no NMS, as RHINO:
        ``cx, w`` clamped to [0, W] and ``cy, h`` to [0, H]); classes outside the
        ``predict_mask`` buffer (internal tree nodes, set by the detector) are never
        predicted. ``test_cfg.return_node_scores`` adds ``node_scores`` (n, K): every
        node's score for each prediction's query (``bhcl.apis``)."""
        node_scores = cls_score.sigmoid()
        mask = getattr(self, 'predict_mask', None)
        if mask is not None:
            cls_score = cls_score.masked_fill(~mask, float('-inf'))
        max_per_img = self.test_cfg.get('max_per_img', len(cls_score))
        scores, idx = cls_score.sigmoid().flatten().topk(min(max_per_img, cls_score.numel()))
        keep = scores > 0  # masked (query, class) pairs fill the top-k with zeros: drop them
        scores, idx = scores[keep], idx[keep]
        labels = idx % self.num_classes
        img_h, img_w = img_meta['img_shape'][:2]
        boxes = denormalize_rboxes(bbox_pred[idx // self.num_classes], (img_h, img_w))
        limit = boxes.new_tensor([img_w, img_h, img_w, img_h])
        boxes = torch.cat([torch.minimum(boxes[:, :4].clamp(min=0), limit), boxes[:, 4:]], dim=-1)
        if rescale and 'scale_factor' in img_meta:
            sx, sy = img_meta['scale_factor'][:2]
            boxes[:, :4] = boxes[:, :4] / boxes.new_tensor([sx, sy, sx, sy])
        result = InstanceData(bboxes=RotatedBoxes(boxes), scores=scores, labels=labels)
        if self.test_cfg.get('return_node_scores', False):
            result.node_scores = node_scores[idx // self.num_classes]
        return result
