"""OrientedFormer (the published BHCL baseline) with optional decoupled queries and a
hierarchical contrastive loss on the class features of every decoder stage."""
import copy
from functools import partial
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.models.losses import accuracy
from mmdet.structures import DetDataSample, SampleList
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS, TASK_UTILS
from mmrotate.structures.bbox import RotatedBoxes
from torch import Tensor, nn

from bhcl.models.layers.hierarchical_classification import (ClassContext,
                                                             HierarchicalClassification,
                                                             migrate_legacy_keys)
from bhcl.structures import LabelTree
from bhcl.structures.box_coding import (check_angle_version, normalize_rboxes, refine_xyzrt,
                                        regularize_le90, xyzrt_to_boxes)
from bhcl.utils.class_order import guard_class_order


class StageOutput(NamedTuple):
    logits: Tensor     # (B, N, K) class logits
    boxes: Tensor      # (B, N, 5) le90 boxes, pixels
    xyzrt: Tensor      # (B, N, 5) the same boxes as (cx, cy, z, r, t)
    cls_feats: Tensor  # (B, N, C) class features (input of the class head)


def prediction_head(channels: int, out_channels: int, num_fcs: int) -> nn.Sequential:
    """``num_fcs`` x (Linear, LayerNorm, ReLU), then Linear to ``out_channels``."""
    layers = []
    for _ in range(num_fcs):
        layers += [nn.Linear(channels, channels), nn.LayerNorm(channels), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers, nn.Linear(channels, out_channels))


@MODELS.register_module()
class OrientedQueryDETR(BaseDetector):
    """Backbone -> neck (5 levels) -> distinct-query head -> decoder stages.

    Each stage updates the query content with its layer, classifies from the
    layer's class features and refines the (detached) ``xyzrt`` boxes from its
    box features. Baseline or decoupled queries is the layer type in ``decoder``.

    Args:
        backbone, neck: configs (neck with one output per stride).
        query_head: config of a :class:`DistinctQueryHead` (``num_classes``,
            ``in_channels`` and ``content_channels`` are filled in).
        decoder: ``dict(num_layers=..., layer_cfg=dict(type=..., embed_dims=...))``.
        label_tree: the dataset's tree (``dict(paths=...)``); gives the number
            of classes and the leaves kept at inference.
        strides: strides of the neck outputs.
        num_cls_fcs, num_reg_fcs: (Linear, LN, ReLU) blocks before each stage's
            class / box output layer.
        assigner: one-to-one assigner used at every stage.
        loss_cls, loss_bbox, loss_iou: per-stage losses; L1 on boxes normalised
            by the image size (and the angle by ``l1_angle_version``).
        l1_angle_version: ``'le90'`` maps angles to [0, 1) for the L1 loss (the
            published code); None keeps radians.
        loss_hcl: optional ``HierarchicalContrastiveLoss`` config; one module
            (and prototype bank) per stage, fed the class features of the
            matched queries and their tree-node labels.
        classifier: optional ``CategoryQueries`` config: classes come from
            matching each stage's projected class features with image-guided
            category queries (top-K categories per image, presence loss
            ``loss_presence``) instead of a linear layer. ``CQDINOClassifier`` (with
            ``decoder.layer_cfg.category_attn``): CQ-DINO, whose selection also drives
            fusion with the neck's maps, the choice of queries, the decoder layers'
            attention to categories and the dense head's classification loss.
        test_cfg: ``dict(max_per_img=..., internal_nodes=None, return_node_scores=False)``;
            ``internal_nodes`` (``'all'`` or a list of node names) lets inference predict
            those internal nodes besides the leaves; ``return_node_scores`` adds
            ``node_scores`` (n, K), every node's score for each prediction's query
            (the inferencer's per-level scores, ``bhcl.apis``).

    ``loss_hcl``, ``classifier`` and ``test_cfg.internal_nodes`` configure
    ``self.hierarchy``, the :class:`HierarchicalClassification` RHINO uses too.
    """

    # keys read from test_cfg (checked by bhcl.utils.config_check)
    CONFIG_DICT_KEYS = {'test_cfg': ('max_per_img', 'internal_nodes')}

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 query_head: dict,
                 decoder: dict,
                 label_tree: Union[dict, LabelTree],
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 num_cls_fcs: int = 1,
                 num_reg_fcs: int = 1,
                 assigner: dict = dict(
                     type='TopkHungarianRotatedAssigner', topk=1,
                     match_costs=[dict(type='mmdet.FocalLossCost', weight=2.0),
                                  dict(type='RotatedBBoxL1Cost', weight=2.0,
                                       angle_version='le90'),
                                  dict(type='RotatedIoUCostWithFallback', weight=5.0)]),
                 loss_cls: dict = dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                                       alpha=0.25, loss_weight=2.0),
                 loss_bbox: dict = dict(type='mmdet.L1Loss', loss_weight=2.0),
                 loss_iou: dict = dict(type='RotatedIoULossWithFallback', mode='linear',
                                       loss_weight=5.0),
                 l1_angle_version: Optional[str] = 'le90',
                 loss_hcl: Optional[dict] = None,
                 classifier: Optional[dict] = None,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.label_tree = LabelTree.from_config(label_tree)
        self.num_classes = self.label_tree.num_classes
        # checkpoints record the class order; loading one made for another order fails
        guard_class_order(self, self.label_tree.classes)
        self.strides = tuple(strides)
        self.backbone = MODELS.build(copy.deepcopy(backbone))
        self.neck = MODELS.build(copy.deepcopy(neck))
        decoder = copy.deepcopy(decoder)
        self.layers = nn.ModuleList(
            MODELS.build(copy.deepcopy(decoder['layer_cfg']))
            for _ in range(decoder['num_layers']))
        embed_dims = self.layers[0].embed_dims
        self.query_head = MODELS.build(copy.deepcopy(query_head), default_args=dict(
            num_classes=self.num_classes, in_channels=embed_dims,
            content_channels=self.layers[0].content_channels, strides=self.strides))
        # a linear classifier (K logits) or a projection matched with category queries
        cls_out = self.num_classes if classifier is None else embed_dims
        self.cls_branches = nn.ModuleList(
            prediction_head(embed_dims, cls_out, num_cls_fcs) for _ in self.layers)
        self.reg_branches = nn.ModuleList(
            prediction_head(embed_dims, 5, num_reg_fcs) for _ in self.layers)
        self.assigner = TASK_UTILS.build(copy.deepcopy(assigner))
        self.loss_cls = MODELS.build(copy.deepcopy(loss_cls))
        self.loss_bbox = MODELS.build(copy.deepcopy(loss_bbox))
        self.loss_iou = MODELS.build(copy.deepcopy(loss_iou))
        self.l1_angle_version = check_angle_version(l1_angle_version)
        self.train_cfg = copy.deepcopy(train_cfg) or {}
        self.test_cfg = copy.deepcopy(test_cfg) or {}
        # built last, so that a seed draws the other modules' weights as without it
        self.hierarchy = HierarchicalClassification(
            self.label_tree, len(self.layers), embed_dims, loss_hcl=loss_hcl,
            classifier=classifier, internal_nodes=self.test_cfg.get('internal_nodes'))
        self.hierarchy.check_decoder(self.layers[0].category_attn is not None,
                                     'OrientedQueryDETR')
        # checkpoints written before the hierarchy module kept its parts at the top
        migrate_legacy_keys(self, {'loss_hcl.': 'hierarchy.loss_hcl.',
                                   'category_queries.': 'hierarchy.category_queries.'})

    def init_weights(self) -> None:
        super().init_weights()
        for layer in self.layers:
            layer.init_weights()
        for cls_branch, reg_branch in zip(self.cls_branches, self.reg_branches):
            for m in [*cls_branch, *reg_branch]:
                if isinstance(m, nn.Linear):
                    m.reset_parameters()
                    nn.init.xavier_uniform_(m.weight)
            self.hierarchy.init_class_bias(cls_branch[-1].bias)
            nn.init.zeros_(reg_branch[-1].weight)
            nn.init.zeros_(reg_branch[-1].bias)

    def class_dependent_keys(self) -> List[str]:
        """State-dict keys of the layers whose shape follows the number of classes
        (the linear classifiers of the stages, the query head's class maps): what a
        checkpoint of another label set (pre-training, another dataset) cannot give."""
        keys = [f'query_head.{n}' for n, _ in self.query_head.named_parameters()
                if '.conv_cls.' in f'.{n}']
        if self.hierarchy.category_queries is None:
            for i, branch in enumerate(self.cls_branches):
                keys += [f'cls_branches.{i}.{len(branch) - 1}.{n}'
                         for n, _ in branch[-1].named_parameters()]
        return keys

    def set_epoch(self, epoch: int) -> None:
        """Pass the 0-based epoch on to the contrastive losses (mmdet ``SetEpochInfoHook``)."""
        self.hierarchy.set_epoch(epoch)

    # ----------------------------------------------------------- forward
    def extract_feat(self, batch_inputs: Tensor) -> Tuple[Tensor, ...]:
        return tuple(self.neck(self.backbone(batch_inputs)))

    def forward_stages(self, batch_inputs: Tensor, gt_labels: Optional[List[Tensor]] = None
                       ) -> Tuple[dict, List[StageOutput]]:
        """Images (B, 3, H, W) -> the query head's outputs (``feats``, ``queries``
        ``(xyzrt, content)``, candidates ``main``/``aux``, ``classes``: the category
        queries' :class:`ClassContext` or None) and one
        :class:`StageOutput` per decoder stage. ``gt_labels`` (training) lets the
        category-query selection keep the annotated nodes."""
        return self.decode(self.extract_feat(batch_inputs), gt_labels)

    def decode(self, feats: Sequence[Tensor], gt_labels: Optional[List[Tensor]] = None,
               ranking: Optional[Callable[[dict], Tensor]] = None
               ) -> Tuple[dict, List[StageOutput]]:
        """Neck maps -> (head outputs, stages) of :meth:`forward_stages`. ``ranking``
        maps the query head's dense outputs to a (B, T) key per location that
        replaces its scores in the choice of queries (``DistinctQueryHead.select``);
        without one, a CQ-DINO classifier ranks by the selected categories' scores."""
        feats = tuple(feats)
        classes = self.hierarchy.image_context(feats, gt_labels)
        categories = valid = None
        if classes is not None and classes.selection is not None:  # CQ-DINO
            feats, classes = self.fuse(feats, classes)
            categories, valid = self.hierarchy.selected_categories(classes)
            if ranking is None:
                ranking = partial(self.category_ranking, classes=classes)
        dense = self.query_head(feats)
        xyzrt, content, main, aux = self.query_head.select(
            dense, None if ranking is None else ranking(dense))
        head = dict(feats=feats, queries=(xyzrt, content), main=main, aux=aux, classes=classes)
        stages: List[StageOutput] = []
        for layer, cls_branch, reg_branch in zip(self.layers, self.cls_branches,
                                                 self.reg_branches):
            content = layer(content, xyzrt, feats, self.strides, categories, valid)
            cls_feat, loc_feat = layer.split(content)
            new_xyzrt = refine_xyzrt(xyzrt, reg_branch(loc_feat))
            logits = self.hierarchy.classify(cls_branch(cls_feat), classes)
            stages.append(StageOutput(logits, xyzrt_to_boxes(new_xyzrt), new_xyzrt, cls_feat))
            xyzrt = new_xyzrt.detach()
        return head, stages

    def fuse(self, feats: Sequence[Tensor], classes: ClassContext
             ) -> Tuple[Tuple[Tensor, ...], ClassContext]:
        """CQ-DINO's category-image fusion on the neck's maps (OrientedFormer has no
        encoder: the classifier's fusion layers run in a row on the tokens of all
        levels) -> fused maps and the context with the fused selected categories."""
        sizes = [f.shape[-2] * f.shape[-1] for f in feats]
        tokens = torch.cat([f.flatten(2).transpose(1, 2) for f in feats], dim=1)
        for i in range(self.hierarchy.num_fusion_layers):
            tokens, classes = self.hierarchy.fuse(i, tokens, classes)
        fused = tuple(t.transpose(1, 2).reshape(f.shape)
                      for t, f in zip(tokens.split(sizes, dim=1), feats))
        return fused, classes

    def category_ranking(self, dense: dict, classes: ClassContext) -> Tensor:
        """(B, T) key of each location for the choice of queries: its best dense class
        score over the image's selected categories (CQ-DINO's query selection)."""
        scores = torch.cat([s.flatten(2) for s in dense['main'][0]], dim=2).transpose(1, 2)
        return self.hierarchy.proposal_ranking(scores, classes)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: SampleList = None):
        _, stages = self.forward_stages(batch_inputs)
        return tuple((s.logits, s.boxes) for s in stages)

    # -------------------------------------------------------------- loss
    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Query-head losses (``dense.*``, ``dense_aux.*``) and, per stage i,
        ``s{i}.loss_cls``, ``s{i}.loss_bbox``, ``s{i}.loss_iou``, ``s{i}.pos_acc``
        (logged only) and ``s{i}.loss_hcl_lv{l}``."""
        metas = [s.metainfo for s in batch_data_samples]
        gts = [self._gt_instances(s) for s in batch_data_samples]
        head, stages = self.forward_stages(batch_inputs, [gt.labels for gt in gts])
        return self.detection_losses(head, stages, gts, metas)

    def detection_losses(self, head: dict, stages: List[StageOutput], gts: List[InstanceData],
                         metas: List[dict],
                         matches: Optional[List[Tuple[Tensor, Tensor, Tensor]]] = None
                         ) -> Dict[str, Tensor]:
        """The losses of :meth:`loss` from the outputs of :meth:`decode`. A list passed
        as ``matches`` receives each stage's Hungarian matching, ``(pos_b, pos_q,
        pos_gt)`` as :meth:`match_indices` gives it, for callers that reuse it."""
        classes = head['classes']
        # CQ-DINO: the dense head's classification counts the selected categories only
        # (kept off for the classifier without it, whose configs predate the rule)
        losses = self.query_head.loss(head['main'], head['aux'], gts, metas,
                                      classes.selected if self.hierarchy.cqdino else None)
        losses.update(self.hierarchy.presence_loss(classes, [gt.labels for gt in gts]))
        # categories outside an image's selection take no part in its queries' loss
        cls_weight = self.hierarchy.class_weight(classes, stages[0].logits.shape[1])
        for i, stage in enumerate(stages):
            losses.update({f's{i}.{k}': v for k, v in self.stage_loss(
                i, stage, gts, metas, cls_weight, classes, matches).items()})
        return losses

    @staticmethod
    def _gt_instances(sample: DetDataSample) -> InstanceData:
        """A new InstanceData with (n, 5) le90 tensor boxes (the sample is left untouched)."""
        gt = sample.gt_instances
        boxes = gt.bboxes.tensor if hasattr(gt.bboxes, 'tensor') else gt.bboxes
        return InstanceData(bboxes=regularize_le90(boxes.float()), labels=gt.labels.long())

    def match(self, stage: StageOutput, gts: List[InstanceData],
              metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Hungarian matching of one stage -> image and query index of every positive,
        its ground-truth box, and the (B * N,) labels (K for background)."""
        pos_b, pos_q, pos_gt, labels = self.match_indices(stage, gts, metas)
        return pos_b, pos_q, self.matched_boxes(gts, pos_b, pos_gt), labels

    @staticmethod
    def matched_boxes(gts: List[InstanceData], pos_b: Tensor, pos_gt: Tensor) -> Tensor:
        """(P, 5) ground-truth box of every positive (image ``pos_b``, index ``pos_gt``);
        positives come grouped by image, as :meth:`match_indices` gives them."""
        return torch.cat([gt.bboxes[pos_gt[pos_b == j]] for j, gt in enumerate(gts)])

    def match_indices(self, stage: StageOutput, gts: List[InstanceData],
                      metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """As :meth:`match`, with the index of each positive's ground truth in its
        image instead of its box."""
        b, n, k = stage.logits.shape
        labels = stage.logits.new_full((b, n), k, dtype=torch.long)
        pos_b, pos_q, pos_gt = [], [], []
        for j, (lg, bx, gt, meta) in enumerate(zip(stage.logits, stage.boxes, gts, metas)):
            preds = InstanceData(scores=lg.detach(), bboxes=bx.detach())
            inds = self.assigner.assign(preds, gt, meta).gt_inds
            q = (inds > 0).nonzero().squeeze(1)
            labels[j, q] = gt.labels[inds[q] - 1]
            pos_b.append(torch.full_like(q, j))
            pos_q.append(q)
            pos_gt.append(inds[q] - 1)
        return torch.cat(pos_b), torch.cat(pos_q), torch.cat(pos_gt), labels.flatten()

    def stage_loss(self, stage_idx: int, stage: StageOutput, gts: List[InstanceData],
                   metas: List[dict], cls_weight: Optional[Tensor] = None,
                   classes: Optional[ClassContext] = None,
                   matches: Optional[List[Tuple[Tensor, Tensor, Tensor]]] = None
                   ) -> Dict[str, Tensor]:
        """Losses of one stage; ``cls_weight`` (B * N, K) weighs the classification
        loss per query and class (category-query selection); ``classes``: the batch's
        category queries (their rows are HCL's classifier bank); ``matches``, a
        list, receives this stage's ``(pos_b, pos_q, pos_gt)``."""
        pos_b, pos_q, pos_gt, labels = self.match_indices(stage, gts, metas)
        if matches is not None:
            matches.append((pos_b, pos_q, pos_gt))
        gt_pos = self.matched_boxes(gts, pos_b, pos_gt)
        logits = stage.logits.flatten(0, 1)
        # the published code does not clamp: a batch without objects would divide by ~0
        num_pos = reduce_mean(logits.new_tensor(float(len(pos_q)))).clamp(min=1.0)
        losses = dict(loss_cls=self.loss_cls(logits, labels, weight=cls_weight,
                                             avg_factor=num_pos))
        flat_pos = pos_b * stage.logits.shape[1] + pos_q
        losses['pos_acc'] = accuracy(logits[flat_pos].detach(), labels[flat_pos])
        pred_pos = stage.boxes[pos_b, pos_q]
        if len(pred_pos):
            hw = pred_pos.new_tensor([metas[j]['img_shape'][:2] for j in pos_b.tolist()])
            losses['loss_bbox'] = self.loss_bbox(
                normalize_rboxes(pred_pos, hw, self.l1_angle_version),
                normalize_rboxes(gt_pos, hw, self.l1_angle_version), avg_factor=num_pos)
            losses['loss_iou'] = self.loss_iou(pred_pos, gt_pos, avg_factor=num_pos)
        else:  # no ground truth in the batch: zero losses that keep every parameter in the graph
            losses['loss_bbox'] = losses['loss_iou'] = stage.boxes.sum() * 0
        if self.hierarchy.loss_hcl is not None:
            losses.update(self.hierarchy.contrastive_loss(
                stage_idx, stage.cls_feats[pos_b, pos_q], labels[flat_pos],
                self.cls_branches[stage_idx][-1].weight, classes))
        return losses

    # ----------------------------------------------------------- predict
    def predict(self, batch_inputs: Tensor, batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Last stage: top ``max_per_img`` (query, node) pairs over the leaves (and the
        internal nodes of ``test_cfg.internal_nodes``)."""
        head, stages = self.forward_stages(batch_inputs)
        last = stages[-1]
        selected = ([None] * len(batch_data_samples) if head['classes'] is None else
                    head['classes'].selected)
        results = [self.predict_single(lg, bx, s.metainfo, rescale, sel)
                   for lg, bx, s, sel in zip(last.logits, last.boxes, batch_data_samples,
                                             selected)]
        return self.add_pred_to_datasample(batch_data_samples, results)

    def predict_single(self, logits: Tensor, boxes: Tensor, meta: dict, rescale: bool,
                       selected: Optional[Tensor] = None) -> InstanceData:
        """(N, K) logits, (N, 5) boxes of one image -> InstanceData (bboxes, scores, labels).

        Leaves only by default (the published code). With ``test_cfg.internal_nodes``
        an internal node X competes too, with its own score: the model learns node X
        from the "Other X" objects reallocated to it, so its score is the belief that
        an object is an X of no listed kind (FAIR1M's ``other-*`` classes).
        ``selected`` (K,) (category queries): the categories kept for the image; the
        others are never predicted (:meth:`HierarchicalClassification.top_predictions`).
        """
        top, query, labels = self.hierarchy.top_predictions(
            logits, self.test_cfg.get('max_per_img', 100), selected)
        out = boxes[query].clone()
        if rescale and 'scale_factor' in meta:
            sx, sy = meta['scale_factor'][:2]
            out[:, :4] = out[:, :4] / out.new_tensor([sx, sy, sx, sy])
        result = InstanceData(bboxes=RotatedBoxes(out), scores=top, labels=labels)
        if self.test_cfg.get('return_node_scores', False):
            result.node_scores = self.hierarchy.node_scores(logits, selected)[query]
        return result
