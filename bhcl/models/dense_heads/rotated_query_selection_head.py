"""Dense query selection: score every pyramid location, keep distinct rotated boxes as queries."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmcv.ops import box_iou_rotated, nms_rotated
from mmdet.utils import reduce_mean
from mmengine.model import BaseModule, bias_init_with_prob
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS, TASK_UTILS
from torch import Tensor, nn

# imported to register the default losses, costs and assigner
from bhcl.models.layers.rbox_ops import regularize_le90
from bhcl.models.losses import rotated_iou_loss  # noqa: F401
from bhcl.models.task_modules import match_costs  # noqa: F401
from bhcl.models.task_modules import rotated_bbox_l1_cost  # noqa: F401
from bhcl.models.task_modules import topk_hungarian_rotated_assigner  # noqa: F401


@MODELS.register_module()
class RotatedQuerySelectionHead(BaseModule):
    """Scores every location of the neck output, predicts a rotated box there
    (le90), keeps distinct candidates with rotated NMS and turns the best
    ``num_queries`` into initial decoder queries (box + content).

    Trained with its own one-to-many losses: quality focal loss on all
    locations and a rotated IoU loss on the positives of a top-k Hungarian
    assignment among the candidates (the pre-NMS top ``pre_nms`` locations and
    every location whose centre lies inside a ground-truth box).

    Args:
        num_classes: tree nodes K.
        in_channels: neck channels C.
        content_channels: width of the query content (2C for decoupled layers).
        num_queries: N.
        strides: stride of each level.
        base_scale: prior box side in strides.
        pre_nms: candidates kept before NMS, per image.
        nms_iou: rotated NMS IoU threshold.
        loss_cls, loss_iou: configs of the auxiliary losses.
        assigner: config of the one-to-many assigner.
    """

    def __init__(self,
                 num_classes: int,
                 in_channels: int = 256,
                 content_channels: int = 256,
                 num_queries: int = 300,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 base_scale: float = 4.0,
                 pre_nms: int = 1000,
                 nms_iou: float = 0.7,
                 loss_cls: dict = dict(type='mmdet.QualityFocalLoss', use_sigmoid=True,
                                       beta=2.0, loss_weight=1.0),
                 loss_iou: dict = dict(type='RotatedIoULossWithFallback', loss_weight=2.0),
                 assigner: dict = dict(
                     type='TopkHungarianRotatedAssigner', topk=4,
                     match_costs=[dict(type='mmdet.FocalLossCost', weight=2.0),
                                  dict(type='RotatedBBoxL1Cost', weight=2.0),
                                  dict(type='RotatedIoUCostWithFallback', weight=5.0)]),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.num_classes, self.num_queries = num_classes, num_queries
        self.strides, self.base_scale = tuple(strides), base_scale
        self.pre_nms, self.nms_iou = pre_nms, nms_iou
        self.cls_conv = nn.Conv2d(in_channels, num_classes, 3, padding=1)
        self.reg_conv = nn.Conv2d(in_channels, 5, 3, padding=1)
        self.content_proj = nn.Sequential(nn.Linear(in_channels, content_channels),
                                          nn.LayerNorm(content_channels))
        self.loss_cls = MODELS.build(copy.deepcopy(loss_cls))
        self.loss_iou = MODELS.build(copy.deepcopy(loss_iou))
        self.assigner = TASK_UTILS.build(copy.deepcopy(assigner))

    def init_weights(self) -> None:
        super().init_weights()
        nn.init.normal_(self.cls_conv.weight, std=0.01)
        nn.init.constant_(self.cls_conv.bias, bias_init_with_prob(0.01))
        nn.init.normal_(self.reg_conv.weight, std=0.01)
        nn.init.zeros_(self.reg_conv.bias)

    def priors(self, feats: Sequence[Tensor]) -> Tensor:
        """(L, 3) location centres ``(x, y, stride)`` of all levels, finest first."""
        out = []
        for feat, s in zip(feats, self.strides):
            h, w = feat.shape[-2:]
            ys, xs = torch.meshgrid(torch.arange(h, device=feat.device),
                                    torch.arange(w, device=feat.device), indexing='ij')
            xy = (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * s
            out.append(torch.cat([xy, xy.new_full((h * w, 1), float(s))], -1))
        return torch.cat(out)

    def forward(self, feats: Sequence[Tensor]) -> Tuple[Tensor, Tensor, Tensor]:
        """Pyramid -> logits (B, L, K), boxes (B, L, 5) le90 pixels, features (B, L, C)."""
        if len(feats) != len(self.strides):
            raise ValueError(f'expected {len(self.strides)} levels, got {len(feats)}')
        flat = lambda x: x.flatten(2).transpose(1, 2)  # noqa: E731
        logits = torch.cat([flat(self.cls_conv(f)) for f in feats], 1)
        deltas = torch.cat([flat(self.reg_conv(f)) for f in feats], 1)
        memory = torch.cat([flat(f) for f in feats], 1)
        return logits, self.decode(deltas, self.priors(feats)), memory

    def decode(self, deltas: Tensor, priors: Tensor) -> Tensor:
        """(B, L, 5) ``(dx, dy, dw, dh, t)`` and (L, 3) priors -> (B, L, 5) le90 boxes."""
        s = priors[:, 2]
        size = self.base_scale * s
        boxes = torch.stack([
            priors[:, 0] + deltas[..., 0] * s, priors[:, 1] + deltas[..., 1] * s,
            size * deltas[..., 2].clamp(-6, 6).exp(), size * deltas[..., 3].clamp(-6, 6).exp(),
            deltas[..., 4]
        ], -1)
        return regularize_le90(boxes)

    def select_indices(self, scores: Tensor, boxes: Tensor) -> Tensor:
        """One image: (L,) scores, (L, 5) boxes -> (N,) location indices.

        NMS survivors first (best score first), then the suppressed and the
        remaining locations by score; indices repeat only when L < N.
        """
        order = scores.argsort(descending=True)
        top = order[:self.pre_nms]
        _, keep = nms_rotated(boxes[top].float(), scores[top].float(), self.nms_iou)
        kept = top[keep]
        taken = torch.zeros_like(scores, dtype=torch.bool)
        taken[kept] = True
        idx = torch.cat([kept, order[~taken[order]]])[:self.num_queries]
        if idx.numel() < self.num_queries:
            idx = idx.repeat(-(-self.num_queries // idx.numel()))[:self.num_queries]
        return idx

    def select(self, logits: Tensor, boxes: Tensor, memory: Tensor) -> Tuple[Tensor, Tensor]:
        """Initial queries: content (B, N, content_channels) and boxes (B, N, 5) (no gradient)."""
        with torch.no_grad():
            scores = logits.detach().sigmoid().max(-1).values
            idx = torch.stack([self.select_indices(s, b) for s, b in zip(scores, boxes.detach())])
        gather = lambda x: x.gather(1, idx[..., None].expand(-1, -1, x.shape[-1]))  # noqa: E731
        return self.content_proj(gather(memory)), gather(boxes).detach()

    def loss(self, logits: Tensor, boxes: Tensor, priors: Tensor,
             batch_gt_instances: List[InstanceData],
             batch_img_metas: List[dict]) -> Dict[str, Tensor]:
        """One-to-many losses of the dense predictions; keys ``dense.loss_*``."""
        labels, quality, pos_pred, pos_gt = [], [], [], []
        for lg, bx, gt, meta in zip(logits, boxes, batch_gt_instances, batch_img_metas):
            lab, q, pos, gt_idx = self._targets(lg, bx, priors, gt, meta)
            labels.append(lab)
            quality.append(q)
            pos_pred.append(bx[pos])
            pos_gt.append(gt.bboxes[gt_idx])
        num_pos = reduce_mean(logits.new_tensor(float(sum(len(p) for p in pos_pred))))
        num_pos = num_pos.clamp(min=1.0).item()
        loss_cls = self.loss_cls(logits.flatten(0, 1), (torch.cat(labels), torch.cat(quality)),
                                 avg_factor=num_pos)
        pos_pred, pos_gt = torch.cat(pos_pred), torch.cat(pos_gt)
        if len(pos_pred):
            loss_iou = self.loss_iou(pos_pred, pos_gt, avg_factor=num_pos)
        else:  # keep the graph connected so that DDP sees every parameter used
            loss_iou = boxes.sum() * 0
        return {'dense.loss_cls': loss_cls, 'dense.loss_iou': loss_iou}

    def _targets(self, logits, boxes, priors, gt, meta):
        """Labels (L,), IoU targets (L,), positive indices and their gt indices of one image."""
        num = logits.shape[0]
        labels = logits.new_full((num, ), self.num_classes, dtype=torch.long)
        quality = logits.new_zeros(num)
        if len(gt) == 0:
            empty = labels.new_zeros(0)
            return labels, quality, empty, empty
        pool = self._candidates(logits, priors, gt.bboxes)
        preds = InstanceData(scores=logits[pool].detach(), bboxes=boxes[pool].detach())
        result = self.assigner.assign(preds, gt, meta)
        pos_in_pool = (result.gt_inds > 0).nonzero().squeeze(1)
        pos, gt_idx = pool[pos_in_pool], result.gt_inds[pos_in_pool] - 1
        labels[pos] = gt.labels[gt_idx]
        with torch.no_grad():
            iou = box_iou_rotated(boxes[pos].detach().float(), gt.bboxes[gt_idx].float(),
                                  aligned=True)
        quality[pos] = iou.clamp(min=0).to(quality.dtype)
        return labels, quality, pos, gt_idx

    def _candidates(self, logits: Tensor, priors: Tensor, gt_boxes: Tensor) -> Tensor:
        """Pre-NMS top locations and locations whose centre is inside a gt box."""
        with torch.no_grad():
            rel = priors[None, :, :2] - gt_boxes[:, None, :2]
            cos, sin = gt_boxes[:, None, 4].cos(), gt_boxes[:, None, 4].sin()
            x = rel[..., 0] * cos + rel[..., 1] * sin
            y = -rel[..., 0] * sin + rel[..., 1] * cos
            inside = ((x.abs() <= gt_boxes[:, None, 2] / 2) &
                      (y.abs() <= gt_boxes[:, None, 3] / 2)).any(0)
            top = logits.detach().max(-1).values.topk(min(self.pre_nms, len(inside))).indices
            inside[top] = True
        return inside.nonzero().squeeze(1)
