"""Query-based oriented detector (OrientedFormer-style) with optional decoupled queries
and a hierarchical contrastive loss on the class features of every decoder stage."""
import copy
from typing import Dict, List, Optional, Tuple, Union

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.structures import DetDataSample, SampleList
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS, TASK_UTILS
from mmrotate.structures.bbox import RotatedBoxes
from torch import Tensor, nn

from bhcl.models.dense_heads.rotated_query_selection_head import \
    RotatedQuerySelectionHead  # noqa: F401 (registers the head)
from bhcl.models.layers import query_decoder_layer  # noqa: F401 (registers the layers)
from bhcl.models.layers.rbox_ops import refine_boxes, regularize_le90
from bhcl.models.task_modules.rotated_bbox_l1_cost import normalize_rboxes
from bhcl.structures import LabelTree

StageOutput = Tuple[Tensor, Tensor, Tensor]  # logits (B,N,K), boxes (B,N,5), cls feats (B,N,C)


@MODELS.register_module()
class OrientedQueryDETR(BaseDetector):
    """Backbone -> neck (5 levels) -> dense query selection -> decoder stages.

    Each stage updates the query content with its layer, classifies from the
    layer's class features and refines the (detached) boxes from its box
    features. Baseline or decoupled queries is the layer type in ``decoder``.

    Args:
        backbone, neck: configs (neck with 5 outputs, strides 4..64).
        query_head: config of the dense query-selection head (``num_classes``,
            ``in_channels`` and ``content_channels`` are filled in).
        decoder: ``dict(num_layers=..., layer_cfg=dict(type=..., embed_dims=...))``.
        label_tree: the dataset's tree (``dict(paths=...)``); gives the number
            of classes and the leaves kept at inference.
        assigner: one-to-one assigner used at every stage.
        loss_cls, loss_bbox, loss_iou: per-stage detection losses (L1 on
            boxes normalised by the image size).
        loss_hcl: optional ``HierarchicalContrastiveLoss`` config; one module
            (and prototype bank) per stage, fed the class features of the
            matched queries and their tree-node labels.
        test_cfg: ``dict(max_per_img=...)``.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 query_head: dict,
                 decoder: dict,
                 label_tree: Union[dict, LabelTree],
                 assigner: dict = dict(
                     type='TopkHungarianRotatedAssigner', topk=1,
                     match_costs=[dict(type='mmdet.FocalLossCost', weight=2.0),
                                  dict(type='RotatedBBoxL1Cost', weight=2.0),
                                  dict(type='RotatedIoUCostWithFallback', weight=5.0)]),
                 loss_cls: dict = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                                       alpha=0.25, loss_weight=2.0),
                 loss_bbox: dict = dict(type='mmdet.L1Loss', loss_weight=2.0),
                 loss_iou: dict = dict(type='RotatedIoULossWithFallback', loss_weight=5.0),
                 loss_hcl: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.label_tree = LabelTree.from_config(label_tree)
        self.num_classes = self.label_tree.num_classes
        self.register_buffer('leaf_mask', torch.as_tensor(self.label_tree.leaf_mask,
                                                          dtype=torch.bool), persistent=False)
        self.backbone = MODELS.build(copy.deepcopy(backbone))
        self.neck = MODELS.build(copy.deepcopy(neck))
        decoder = copy.deepcopy(decoder)
        self.layers = nn.ModuleList(
            MODELS.build(copy.deepcopy(decoder['layer_cfg']))
            for _ in range(decoder['num_layers']))
        embed_dims = self.layers[0].embed_dims
        self.query_head = MODELS.build(copy.deepcopy(query_head), default_args=dict(
            num_classes=self.num_classes, in_channels=embed_dims,
            content_channels=self.layers[0].content_channels))
        self.cls_heads = nn.ModuleList(
            nn.Linear(embed_dims, self.num_classes) for _ in self.layers)
        self.reg_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(embed_dims, embed_dims), nn.ReLU(inplace=True),
                          nn.Linear(embed_dims, 5)) for _ in self.layers)
        self.assigner = TASK_UTILS.build(copy.deepcopy(assigner))
        self.loss_cls = MODELS.build(copy.deepcopy(loss_cls))
        self.loss_bbox = MODELS.build(copy.deepcopy(loss_bbox))
        self.loss_iou = MODELS.build(copy.deepcopy(loss_iou))
        self.loss_hcl = None if loss_hcl is None else nn.ModuleList(
            MODELS.build(copy.deepcopy(loss_hcl), default_args=dict(
                label_tree=self.label_tree.to_config(), in_channels=embed_dims))
            for _ in self.layers)
        self.train_cfg = copy.deepcopy(train_cfg) or {}
        self.test_cfg = copy.deepcopy(test_cfg) or {}

    def init_weights(self) -> None:
        super().init_weights()
        prior = -torch.log(torch.tensor((1 - 0.01) / 0.01)).item()
        for cls_head, reg_head in zip(self.cls_heads, self.reg_heads):
            nn.init.constant_(cls_head.bias, prior)
            nn.init.zeros_(reg_head[-1].weight)
            nn.init.zeros_(reg_head[-1].bias)

    def set_epoch(self, epoch: int) -> None:
        """Pass the 0-based epoch on to the contrastive losses (mmdet ``SetEpochInfoHook``)."""
        for loss in self.loss_hcl or ():
            loss.set_epoch(epoch)

    # ----------------------------------------------------------- forward
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.neck(self.backbone(batch_inputs)))

    def forward_stages(self, batch_inputs: Tensor):
        """Images (B, 3, H, W) -> dense outputs ``(logits, boxes, priors)`` and one
        ``(logits, boxes, cls_feats)`` per stage; boxes ``(cx, cy, w, h, t)`` le90, pixels."""
        feats = self.extract_feat(batch_inputs)
        logits, boxes, memory = self.query_head(feats)
        content, query_boxes = self.query_head.select(logits, boxes, memory)
        h, w = batch_inputs.shape[-2:]
        img_size = batch_inputs.new_tensor([w, h]).expand(len(batch_inputs), 2)
        stages: List[StageOutput] = []
        for layer, cls_head, reg_head in zip(self.layers, self.cls_heads, self.reg_heads):
            content = layer(content, query_boxes, feats, img_size)
            cls_feat, loc_feat = layer.split(content)
            new_boxes = refine_boxes(query_boxes, reg_head(loc_feat))
            stages.append((cls_head(cls_feat), new_boxes, cls_feat))
            query_boxes = new_boxes.detach()
        return (logits, boxes, self.query_head.priors(feats)), stages

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList = None):
        _, stages = self.forward_stages(batch_inputs)
        return tuple((logits, boxes) for logits, boxes, _ in stages)

    # -------------------------------------------------------------- loss
    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Dense losses (``dense.*``) and, per stage i, ``s{i}.loss_cls``,
        ``s{i}.loss_bbox``, ``s{i}.loss_iou`` and ``s{i}.loss_hcl_lv{l}``."""
        metas = [s.metainfo for s in batch_data_samples]
        gts = [self._gt_instances(s) for s in batch_data_samples]
        (logits, boxes, priors), stages = self.forward_stages(batch_inputs)
        losses = self.query_head.loss(logits, boxes, priors, gts, metas)
        for i, stage in enumerate(stages):
            losses.update({f's{i}.{k}': v for k, v in self.stage_loss(i, stage, gts,
                                                                      metas).items()})
        return losses

    @staticmethod
    def _gt_instances(sample: DetDataSample) -> InstanceData:
        """A new InstanceData with (n, 5) le90 tensor boxes (the sample is left untouched)."""
        gt = sample.gt_instances
        boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
        return InstanceData(bboxes=regularize_le90(boxes.float()), labels=gt.labels.long())

    def stage_loss(self, stage_idx: int, stage: StageOutput, gts: List[InstanceData],
                   metas: List[dict]) -> Dict[str, Tensor]:
        logits, boxes, cls_feats = stage
        b, n, k = logits.shape
        labels = logits.new_full((b, n), k, dtype=torch.long)
        pos_b, pos_q, pos_gt = [], [], []
        for j, (lg, bx, gt, meta) in enumerate(zip(logits, boxes, gts, metas)):
            preds = InstanceData(scores=lg.detach(), bboxes=bx.detach())
            inds = self.assigner.assign(preds, gt, meta).gt_inds
            q = (inds > 0).nonzero().squeeze(1)
            labels[j, q] = gt.labels[inds[q] - 1]
            pos_b.append(torch.full_like(q, j))
            pos_q.append(q)
            pos_gt.append(gt.bboxes[inds[q] - 1])
        pos_b, pos_q = torch.cat(pos_b), torch.cat(pos_q)
        num_pos = reduce_mean(logits.new_tensor(float(len(pos_q)))).clamp(min=1.0).item()
        losses = dict(loss_cls=self.loss_cls(logits.flatten(0, 1), labels.flatten(),
                                             avg_factor=num_pos))
        pred_pos, gt_pos = boxes[pos_b, pos_q], torch.cat(pos_gt)
        if len(pred_pos):
            # L1 on boxes in units of their image: (cx/W, cy/H, w/W, h/H, t)
            scale = torch.stack([normalize_rboxes(boxes.new_ones(1, 5), m['img_shape'])[0]
                                 for m in metas])[pos_b]
            losses['loss_bbox'] = self.loss_bbox(pred_pos * scale, gt_pos * scale,
                                                 avg_factor=num_pos)
            losses['loss_iou'] = self.loss_iou(pred_pos, gt_pos, avg_factor=num_pos)
        else:  # no ground truth in the batch: zero losses that keep every parameter in the graph
            losses['loss_bbox'] = losses['loss_iou'] = boxes.sum() * 0
        if self.loss_hcl is not None:
            losses.update(self.loss_hcl[stage_idx](
                cls_feats[pos_b, pos_q], labels[pos_b, pos_q],
                classifier_weight=self.cls_heads[stage_idx].weight))
        return losses

    # ----------------------------------------------------------- predict
    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Last stage: scores of leaf nodes only, top ``max_per_img`` (query, leaf) pairs."""
        _, stages = self.forward_stages(batch_inputs)
        logits, boxes, _ = stages[-1]
        results = [self.predict_single(lg, bx, s.metainfo, rescale)
                   for lg, bx, s in zip(logits, boxes, batch_data_samples)]
        return self.add_pred_to_datasample(batch_data_samples, results)

    def predict_single(self, logits: Tensor, boxes: Tensor, meta: dict,
                       rescale: bool) -> InstanceData:
        """(N, K) logits, (N, 5) boxes of one image -> InstanceData (bboxes, scores, labels)."""
        scores = logits.sigmoid() * self.leaf_mask.to(logits.dtype)
        k = min(self.test_cfg.get('max_per_img', 100), scores.numel())
        top, idx = scores.flatten().topk(k)
        labels, query = idx % self.num_classes, idx // self.num_classes
        out = boxes[query].clone()
        if rescale and 'scale_factor' in meta:
            sx, sy = meta['scale_factor'][:2]
            out[:, :4] = out[:, :4] / out.new_tensor([sx, sy, sx, sy])
        return InstanceData(bboxes=RotatedBoxes(out), scores=top, labels=labels)
