"""Dense distinct-query selection head (DDQ-style, oriented), as in OrientedFormer.

Every location of the 5-level pyramid predicts class scores (the geometric
mean of a class and an objectness sigmoid) and a rotated box (distances to the
four sides and an angle, all positive through ``exp``). The best ``pre_nms``
locations of each level are candidates; rotated NMS keeps the distinct ones;
the ``num_queries`` best distinct candidates become the decoder's queries
(box as ``xyzrt``, content projected from the towers' features).

Training adds an auxiliary branch on the same towers. Both are trained with
quality focal loss and a linear rotated IoU loss against one-to-k Hungarian
targets (``k = 8``) weighted by the task-alignment metric
``score^alpha * IoU^beta``: the main branch on the distinct candidates, the
auxiliary branch on all pre-selected candidates.
"""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn import ConvModule, Scale
from mmcv.ops import batched_nms
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.models.task_modules.prior_generators import MlvlPointGenerator
from mmdet.models.utils import sigmoid_geometric_mean
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob, normal_init
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS, TASK_UTILS
from mmrotate.structures.bbox import distance2obb, rbbox_overlaps
from torch import Tensor, nn

from bhcl.ops.kernel_dispatch import use_mmcv_kernel
from bhcl.ops.nms_rotated import batched_nms_rotated_exact
from bhcl.structures.box_coding import boxes_to_xyzrt

Candidates = Tuple[Tensor, Tensor, Tensor]  # scores (n, K), boxes (n, 5), location ids (n,)

_DENSE_LOSS = dict(
    loss_cls=dict(type='mmdet.QualityFocalLoss', use_sigmoid=True, activated=True, beta=2.0,
                  loss_weight=1.0),
    loss_iou=dict(type='RotatedIoULossWithFallback', mode='linear', loss_weight=5.0),
    assigner=dict(type='TopkHungarianRotatedAssigner', topk=8, match_costs=[
        dict(type='mmdet.FocalLossCost', weight=2.0),
        dict(type='RotatedBBoxL1Cost', weight=2.0, angle_version='le90'),
        dict(type='RotatedIoUCostWithFallback', weight=5.0)]),
    alpha=1.0, beta=6.0)


class DenseOutputs(nn.Module):
    """Per-location class scores and box distances from the two towers' features."""

    def __init__(self, feat_channels: int, num_classes: int, num_levels: int):
        super().__init__()
        self.objectness = nn.Sequential(
            nn.Conv2d(feat_channels, feat_channels // 4, 1), nn.ReLU(inplace=True),
            nn.Conv2d(feat_channels // 4, 1, 3, padding=1))
        self.conv_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.conv_reg = nn.Conv2d(feat_channels, 5, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))

    def reset_parameters(self, objectness_prior: bool) -> None:
        prior = bias_init_with_prob(0.01)
        for m in self.objectness:
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
        if objectness_prior:
            normal_init(self.objectness[-1], std=0.01, bias=prior)
        normal_init(self.conv_cls, std=0.01, bias=prior)
        normal_init(self.conv_reg, std=0.01)

    def forward(self, cls_feats: Sequence[Tensor],
                reg_feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Per level: scores (B, K, h, w) in (0, 1), distances (B, 5, h, w) > 0."""
        scores, dists = [], []
        for cls_feat, reg_feat, scale in zip(cls_feats, reg_feats, self.scales):
            scores.append(sigmoid_geometric_mean(self.conv_cls(cls_feat),
                                                 self.objectness(reg_feat)))
            dists.append(scale(self.conv_reg(reg_feat).exp()).float())
        return scores, dists


@MODELS.register_module()
class DistinctQueryHead(BaseModule):
    """Oriented DDQ query-selection head.

    Args:
        num_classes: K (tree nodes), filled in by the detector.
        in_channels: neck channels C.
        content_channels: width of the query content (C, or 2C for decoupled
            queries), filled in by the detector.
        feat_channels: tower width.
        num_queries: queries handed to the decoder.
        strides: pyramid strides, finest first.
        stacked_convs: 3x3 conv + GN + ReLU layers per tower.
        shuffle_channels: channels exchanged with the neighbouring levels from
            tower layer ``cls_shuffle_from`` (class tower) and
            ``reg_shuffle_from`` (box tower) on.
        pre_nms: candidates kept per level before NMS.
        nms_iou: IoU threshold of the distinct-query NMS.
        prior_offset: location of a prior inside its cell (0.5: centre).
        main_loss, aux_loss: ``loss_cls``, ``loss_iou``, ``assigner``, ``alpha``,
            ``beta`` of each branch (defaults: the published ones).
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 256,
                 content_channels: int = 256,
                 feat_channels: int = 256,
                 num_queries: int = 300,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 stacked_convs: int = 4,
                 shuffle_channels: int = 64,
                 cls_shuffle_from: int = 2,
                 reg_shuffle_from: int = 3,
                 norm_cfg: dict = dict(type='GN', num_groups=32, requires_grad=True),
                 pre_nms: int = 1000,
                 nms_iou: float = 0.7,
                 prior_offset: float = 0.5,
                 main_loss: Optional[dict] = None,
                 aux_loss: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        if 2 * shuffle_channels > feat_channels or in_channels != feat_channels:
            raise ValueError('DistinctQueryHead needs in_channels == feat_channels >= '
                             f'2 * shuffle_channels, got {in_channels}, {feat_channels}, '
                             f'{shuffle_channels}')
        self.num_classes, self.num_queries = num_classes, num_queries
        self.strides = tuple(strides)
        self.shuffle_channels = shuffle_channels
        self.shuffle_from = (cls_shuffle_from, reg_shuffle_from)
        self.pre_nms, self.nms_iou = pre_nms, nms_iou
        self.prior_generator = MlvlPointGenerator(self.strides, offset=prior_offset)

        def tower():
            return nn.ModuleList(
                ConvModule(in_channels if i == 0 else feat_channels, feat_channels, 3,
                           padding=1, norm_cfg=norm_cfg) for i in range(stacked_convs))

        self.cls_convs, self.reg_convs = tower(), tower()
        self.main = DenseOutputs(feat_channels, num_classes, len(self.strides))
        self.aux = DenseOutputs(feat_channels, num_classes, len(self.strides))
        self.content_proj = nn.Linear(2 * feat_channels, content_channels)
        self.losses = nn.ModuleDict()
        self.assigners, self.alignment = {}, {}
        for name, cfg in (('main', main_loss), ('aux', aux_loss)):
            cfg = {**copy.deepcopy(_DENSE_LOSS), **(cfg or {})}
            self.losses[name] = nn.ModuleList(
                [MODELS.build(cfg['loss_cls']), MODELS.build(cfg['loss_iou'])])
            self.assigners[name] = TASK_UTILS.build(cfg['assigner'])
            self.alignment[name] = (cfg['alpha'], cfg['beta'])

    def init_weights(self) -> None:
        super().init_weights()
        for conv in [*self.cls_convs, *self.reg_convs]:
            normal_init(conv.conv, std=0.01)
        self.main.reset_parameters(objectness_prior=False)
        self.aux.reset_parameters(objectness_prior=True)

    # ------------------------------------------------------------ forward
    def _shuffle(self, feats: Sequence[Tensor]) -> List[Tensor]:
        """Swap ``shuffle_channels`` channels with the level above and below."""
        s, out, last = self.shuffle_channels, [], len(feats) - 1
        keep = feats[0].shape[1] - 2 * s
        for lvl, feat in enumerate(feats):
            size = feat.shape[-2:]
            up = F.interpolate(feats[min(lvl + 1, last)][:, keep + s:], size=size,
                               mode='bilinear', align_corners=True)
            down = F.interpolate(feats[max(lvl - 1, 0)][:, keep:keep + s], size=size,
                                 mode='bilinear', align_corners=True)
            out.append(torch.cat([feat[:, :keep], up, down], dim=1))
        return out

    def towers(self, feats: Sequence[Tensor]) -> Tuple[List[Tensor], List[Tensor]]:
        """Neck maps -> class-tower and box-tower maps, per level (B, C, h, w)."""
        outs = []
        for convs, start in zip((self.cls_convs, self.reg_convs), self.shuffle_from):
            x = list(feats)
            for i, conv in enumerate(convs):
                x = [conv(f) for f in (self._shuffle(x) if i >= start else x)]
            outs.append(x)
        return outs[0], outs[1]

    def forward(self, feats: Sequence[Tensor]) -> dict:
        """Neck maps -> ``cls_feats``, ``reg_feats`` and per-branch ``(scores, dists)``
        (the auxiliary branch only in training mode)."""
        cls_feats, reg_feats = self.towers(feats)
        out = dict(cls_feats=cls_feats, reg_feats=reg_feats,
                   main=self.main(cls_feats, reg_feats))
        if self.training:
            out['aux'] = self.aux(cls_feats, reg_feats)
        return out

    # ---------------------------------------------------------- selection
    def pre_select(self, scores: Sequence[Tensor], dists: Sequence[Tensor],
                   ranking: Optional[Tensor] = None) -> List[Candidates]:
        """Per image: the ``pre_nms`` best locations of each level, boxes decoded (le90).

        Locations are ranked by their best class score, or by ``ranking`` (B, T)
        when given (one key per location id; ``-inf`` excludes a location).
        """
        sizes = [s.shape[-2:] for s in scores]
        priors = self.prior_generator.grid_priors(sizes, dtype=scores[0].dtype,
                                                  device=scores[0].device)
        results = []
        for img in range(scores[0].shape[0]):
            all_scores, all_boxes, all_ids, start = [], [], [], 0
            for score, dist, prior, stride in zip(scores, dists, priors, self.strides):
                score = score[img].flatten(1).t()
                dist = dist[img].flatten(1).t()
                if ranking is None:
                    best = score.max(-1).values
                    valid = (best > 0).nonzero().squeeze(1)
                else:
                    best = ranking[img, start:start + len(score)]
                    valid = (best > float('-inf')).nonzero().squeeze(1)
                order = best[valid].sort(descending=True).indices[:self.pre_nms]
                keep = valid[order]
                d = dist[keep]
                d = torch.cat([d[:, :4] * stride, d[:, 4:]], dim=1)
                all_boxes.append(distance2obb(prior[keep], d, angle_version='le90'))
                all_scores.append(score[keep])
                all_ids.append(keep + start)
                start += len(score)
            results.append((torch.cat(all_scores), torch.cat(all_boxes), torch.cat(all_ids)))
        return results

    def distinct(self, candidates: Candidates, key: Optional[Tensor] = None) -> Candidates:
        """Rotated NMS over one image's candidates; kept ones by descending score (or by
        descending ``key``, one value per candidate, when given)."""
        scores, boxes, ids = candidates
        if len(boxes) == 0:
            return candidates
        best = (scores.max(-1).values if key is None else key).detach()
        if use_mmcv_kernel('nms_rotated', boxes):
            _, keep = batched_nms(boxes.detach(), best, torch.ones_like(ids),
                                  dict(type='nms_rotated', iou_threshold=self.nms_iou))
        else:  # the same kept set as mmcv's kernel, without its O(kept x n) pairs
            keep = batched_nms_rotated_exact(boxes.detach(), best, torch.ones_like(ids),
                                             self.nms_iou)
        return scores[keep], boxes[keep], ids[keep]

    def make_queries(self, dense: dict, distinct: List[Candidates],
                     ranking: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """The ``num_queries`` best distinct candidates (by score, or by ``ranking`` (B, T)
        of their locations) -> ``xyzrt`` (B, N, 5), content (B, N, D).

        Images with fewer candidates are padded with zero content and unit boxes
        at the origin.
        """
        xyzrt, content = [], []
        for img, (scores, boxes, ids) in enumerate(distinct):
            key = scores.max(-1).values if ranking is None else ranking[img, ids]
            top = key.sort(descending=True).indices[:self.num_queries]
            loc = ids[top]
            feats = torch.cat([self._gather(dense['cls_feats'], img, loc),
                               self._gather(dense['reg_feats'], img, loc)], dim=-1)
            pad = self.num_queries - len(top)
            content.append(F.pad(self.content_proj(feats), (0, 0, 0, pad)))
            xyzrt.append(F.pad(boxes_to_xyzrt(boxes[top].detach()), (0, 0, 0, pad)))
        return torch.stack(xyzrt), torch.stack(content)

    @staticmethod
    @torch.no_grad()
    def _gather(maps: Sequence[Tensor], img: int, loc: Tensor) -> Tensor:
        """(n, C) features of image ``img`` at location ids ``loc`` (numbered level by
        level, row-major, as in :meth:`pre_select`), without flattening whole maps."""
        out = maps[0].new_empty(len(loc), maps[0].shape[1])
        start = 0
        for feat in maps:
            size = feat.shape[-2] * feat.shape[-1]
            rows = ((loc >= start) & (loc < start + size)).nonzero().squeeze(1)
            out[rows] = feat[img].flatten(1)[:, loc[rows] - start].t()
            start += size
        return out

    def select(self, dense: dict, ranking: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor, List[Candidates], List[Candidates]]:
        """Dense outputs -> queries ``(xyzrt, content)``, the distinct candidates of the main
        branch and the pre-selected candidates of the auxiliary branch (training).

        ``ranking`` (B, T), one key per location id (level by level, row-major;
        ``-inf`` excludes a location), replaces the main branch's best class score
        in the three choices (pre-selection, NMS order, the ``num_queries`` kept):
        MutDet's enhanced pass ranks by similarity x objectness. The auxiliary
        branch is unaffected.
        """
        if ranking is not None:
            ranking = ranking.detach()
        main = self.pre_select(*dense['main'], ranking=ranking)
        main = [self.distinct(c, None if ranking is None else ranking[img, c[2]])
                for img, c in enumerate(main)]
        aux = self.pre_select(*dense['aux']) if 'aux' in dense else []
        xyzrt, content = self.make_queries(dense, main, ranking)
        return xyzrt, content, main, aux

    # --------------------------------------------------------------- loss
    def loss(self, main: List[Candidates], aux: List[Candidates], gts: List[InstanceData],
             metas: List[dict], selected: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """``dense.loss_cls``, ``dense.loss_iou`` and the ``dense_aux.*`` twins.
        ``selected`` (B, K) bool: the only classes each image's classification loss
        counts (CQ-DINO's category selection)."""
        losses = {}
        for name, prefix, cands in (('main', 'dense', main), ('aux', 'dense_aux', aux)):
            losses.update({f'{prefix}.{k}': v for k, v in
                           self.branch_loss(name, cands, gts, metas, selected).items()})
        return losses

    def branch_loss(self, name: str, cands: List[Candidates], gts: List[InstanceData],
                    metas: List[dict], selected: Optional[Tensor] = None
                    ) -> Dict[str, Tensor]:
        """Sum over images of QFL and IoU losses, each divided by the batch's (all-reduced)
        sum of target qualities (at least 1), as in DDQ. With ``selected`` (B, K), the
        classes outside an image's selection take no part in its QFL: their scores
        count as 0 (no loss, no gradient) and a positive of such a class is a
        background for the QFL (its box loss stays), as CQ-DINO's all-zero target."""
        loss_cls, loss_iou = self.losses[name]
        cls_terms, iou_terms, cls_norm, iou_norm = [], [], [], []
        for img, ((scores, boxes, _), gt, meta) in enumerate(zip(cands, gts, metas)):
            labels, quality, pos, pos_gt = self.targets(name, scores, boxes, gt, meta)
            cls_scores, cls_labels = scores, labels
            if selected is not None:
                keep = selected[img]
                cls_scores = scores * keep.to(scores.dtype)
                cls_labels = labels.masked_fill(
                    ~torch.cat([keep, keep.new_ones(1)])[labels], len(keep))
            cls_terms.append(loss_cls(cls_scores, (cls_labels, quality),
                                      scores.new_ones(len(labels)), avg_factor=1.0))
            iou_terms.append(loss_iou(boxes[pos], pos_gt, weight=quality[pos], avg_factor=1.0)
                             if len(pos) else boxes.sum() * 0)
            cls_norm.append(quality.sum())
            iou_norm.append(quality[pos].sum())
        cls_norm = reduce_mean(sum(cls_norm)).clamp(min=1).item()
        iou_norm = reduce_mean(sum(iou_norm)).clamp(min=1).item()
        return dict(loss_cls=sum(cls_terms) / cls_norm, loss_iou=sum(iou_terms) / iou_norm)

    @torch.no_grad()
    def targets(self, name: str, scores: Tensor, boxes: Tensor, gt: InstanceData,
                meta: dict) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """One image's candidates -> labels (n,) (K for background), target quality (n,),
        positive indices and their ground-truth boxes.

        The quality of a positive is its alignment ``score^alpha * IoU^beta``,
        rescaled per ground truth so that the best one equals the best IoU.
        """
        n, k = scores.shape
        labels = scores.new_full((n, ), k, dtype=torch.long)
        quality = scores.new_zeros(n)
        pos = labels.new_zeros(0)
        if n == 0 or len(gt) == 0:
            return labels, quality, pos, gt.bboxes[:0]
        preds = InstanceData(scores=inverse_sigmoid(scores), bboxes=boxes)
        gt_inds = self.assigners[name].assign(preds, gt, meta).gt_inds
        pos = (gt_inds > 0).nonzero().squeeze(1)
        matched = gt_inds[pos] - 1
        iou = rbbox_overlaps(boxes[pos], gt.bboxes[matched], is_aligned=True).view(-1)
        alpha, beta = self.alignment[name]
        metric = scores[pos, gt.labels[matched]]**alpha * iou**beta
        num_gt = len(gt)
        best_metric = metric.new_zeros(num_gt).scatter_reduce(0, matched, metric, 'amax')
        best_iou = iou.new_zeros(num_gt).scatter_reduce(0, matched, iou, 'amax')
        quality[pos] = metric / (best_metric[matched] + 1e-7) * best_iou[matched]
        labels[pos] = gt.labels[matched]
        return labels, quality, pos, gt.bboxes[matched]
