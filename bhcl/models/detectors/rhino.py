"""RHINO: DINO for rotated boxes, on mmdet's DINO (bhcl's own code; RHINO's is CC-BY-NC).

Differences from mmdet's :class:`DINO`:

- boxes are ``(cx, cy, w, h, t / pi)`` in [0, 1], long edge first with the angle
  in [0, pi) (RHINO's convention; the ground truth is brought to it on a copy),
  refined in inverse-sigmoid space (:class:`RotatedDINOHead`);
- the decoder samples around rotated reference boxes
  (:class:`RotatedDinoTransformerDecoder`);
- contrastive denoising with rotated boxes (:class:`RotatedCdnQueryGenerator`,
  bhcl's options ``angle_noise`` and ``max_groups`` passed through ``dn_cfg``);
- two-stage query selection keeps DINO's axis-aligned square proposals; their
  angle starts at t / pi = 0.5 (logit 0), as RHINO's;
- ``label_tree``: the classes are the tree's nodes, inference keeps the leaves;
- ``decoder=dict(layer_cfg=dict(type='DecoupledRotatedDecoderLayer'))``: the BHCL
  paper's decoupled queries (a decoder layer type, as on OrientedFormer):
  classification and localisation halves
  share the self-attention, each has its own cross-attention and FFN around the
  same reference box; classes from the first half, box refinement from the
  second. Matching queries get a learnt localisation half
  (``loc_query_embedding``); denoising queries one learnt localisation vector
  (``dn_loc_embedding``), so that their label noise stays in the classification
  half and their box is given by the reference box alone, as for matching queries;
- ``loss_hcl``: HCL / BHCL on the matched classification queries of every decoder
  layer, denoising queries excluded; ``classifier``: category-query classification
  (:class:`~bhcl.models.layers.CategoryQueries`) of the decoder layers' classification
  queries, conditioned on the neck's maps (the encoder proposals keep a linear
  scorer); ``test_cfg.internal_nodes``: internal nodes inference may predict. All
  three configure ``self.hierarchy``, the :class:`HierarchicalClassification`
  OrientedFormer uses too, which the head receives as an argument;
- ``classifier=dict(type='CQDINOClassifier')`` (with ``decoder.layer_cfg.category_attn``):
  CQ-DINO. The category queries' top-K selection (from the neck's maps) is fused with
  the image tokens before each encoder layer, ranks the encoder proposals (their
  linear scores over the selected categories) and is attended to by every decoder
  layer; the classification losses count the selected categories only.
"""
import copy
from typing import Dict, Optional, Tuple, Union

import torch
from mmdet.models.detectors import DINO
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer import DeformableDetrTransformerEncoder
from mmdet.structures import DetDataSample, OptSampleList, SampleList
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.models.layers.hierarchical_classification import (ClassContext,
                                                             HierarchicalClassification,
                                                             migrate_legacy_keys)
from bhcl.models.layers.rotated_cdn import RotatedCdnQueryGenerator
from bhcl.models.layers.rotated_dino_decoder import (RotatedDinoTransformerDecoder,
                                                     decoder_layer_type)
from bhcl.structures import LabelTree
from bhcl.utils.class_order import guard_class_order

ROTATED_DN_KEYS = ('angle_noise', 'max_groups')


def unpadded_samples(batch_inputs: Tensor) -> SampleList:
    """One data sample per (B, 3, H, W) input image whose image fills the input
    (``img_shape == batch_input_shape == (H, W)``)."""
    shape = tuple(batch_inputs.shape[-2:])
    return [DetDataSample(metainfo=dict(img_shape=shape, batch_input_shape=shape))
            for _ in range(batch_inputs.shape[0])]


@MODELS.register_module()
class RHINO(DINO):
    """Rotated DINO (see the module docstring).

    Args (besides mmdet's :class:`DINO`):
        label_tree: the dataset's tree; sets the head's ``num_classes`` and
            the leaves kept at inference. None: a flat label set.
        loss_hcl: optional ``HierarchicalContrastiveLoss`` config, one module (and
            prototype bank) per decoder layer (needs ``label_tree``).
        classifier: optional ``CategoryQueries`` config (needs ``label_tree``).
    """

    # keys read from test_cfg (checked by bhcl.utils.config_check)
    CONFIG_DICT_KEYS = {'test_cfg': ('max_per_img', 'internal_nodes')}

    def __init__(self, *args, dn_cfg: Optional[dict] = None,
                 label_tree: Optional[Union[dict, LabelTree]] = None,
                 loss_hcl: Optional[dict] = None, classifier: Optional[dict] = None,
                 **kwargs) -> None:
        moved = [k for k in ('loss_hcl', 'classifier') if k in kwargs['bbox_head']]
        if moved:
            raise ValueError(
                f'RHINO: model.bbox_head.{moved[0]} moved to model.{moved[0]}, the key '
                f'OrientedFormer uses too: write model = dict({moved[0]}=...) instead of '
                f'model = dict(bbox_head=dict({moved[0]}=...)) (for an override: '
                f"'{moved[0]}' instead of 'bbox_head.{moved[0]}')")
        dn_cfg = copy.deepcopy(dn_cfg) if dn_cfg is not None else None
        rotated = {k: dn_cfg.pop(k) for k in ROTATED_DN_KEYS if dn_cfg and k in dn_cfg}
        self.label_tree = None if label_tree is None else LabelTree.from_config(label_tree)
        if self.label_tree is None and (loss_hcl is not None or classifier is not None):
            raise ValueError('RHINO: loss_hcl / classifier need label_tree')
        if self.label_tree is not None:
            kwargs['bbox_head'] = dict(kwargs['bbox_head'],
                                       num_classes=self.label_tree.num_classes)
        if 'num_streams' in kwargs['bbox_head']:
            raise ValueError('RHINO: remove model.bbox_head.num_streams; the head takes it '
                             'from the decoder layer type (model.decoder.layer_cfg.type)')
        # the head splits the decoder's queries as the layer type does
        self.num_streams = decoder_layer_type(kwargs.get('decoder', {})).num_streams
        kwargs['bbox_head'] = dict(kwargs['bbox_head'], num_streams=self.num_streams,
                                   category_projection=classifier is not None)
        # a config until _init_layers builds it, as mmdet's encoder and decoder
        self.hierarchy = dict(loss_hcl=loss_hcl, classifier=classifier)
        super().__init__(*args, dn_cfg=dn_cfg, **kwargs)
        if self.label_tree is not None:  # checkpoints record (and check) the class order
            guard_class_order(self, self.label_tree.classes)
        if dn_cfg is not None:  # DINO filled in num_classes, embed_dims, num_matching_queries
            self.dn_query_generator = RotatedCdnQueryGenerator(**dn_cfg, **rotated)
        # checkpoints written before the hierarchy module kept its parts in the head
        migrate_legacy_keys(self, {'bbox_head.loss_hcl.': 'hierarchy.loss_hcl.',
                                   'bbox_head.category_queries.': 'hierarchy.category_queries.'})

    def _init_layers(self) -> None:
        # first, right after the head: a seed draws its weights as when the head built it
        self.hierarchy = None if self.label_tree is None else HierarchicalClassification(
            self.label_tree, self.bbox_head.num_decoder_layers, self.bbox_head.embed_dims,
            internal_nodes=(self.test_cfg or {}).get('internal_nodes'), **self.hierarchy)
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = DeformableDetrTransformerEncoder(**self.encoder)
        self.decoder = RotatedDinoTransformerDecoder(**self.decoder)
        if self.hierarchy is not None:
            self.hierarchy.check_decoder(self.decoder.layers[0].category_attn is not None,
                                         'RHINO')
            fusion = self.hierarchy.num_fusion_layers
            if self.hierarchy.cqdino and fusion != self.encoder.num_layers:
                raise ValueError(
                    f'RHINO: classifier.num_fusion_layers ({fusion}) must equal '
                    f'model.encoder.num_layers ({self.encoder.num_layers}): one fusion '
                    'layer runs before each encoder layer')
        self.embed_dims = self.encoder.embed_dims
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if num_feats * 2 != self.embed_dims:
            raise ValueError(f'embed_dims ({self.embed_dims}) must be 2 x the positional '
                             f'encoding num_feats ({num_feats})')
        self.level_embed = nn.Parameter(torch.Tensor(self.num_feature_levels, self.embed_dims))
        self.memory_trans_fc = nn.Linear(self.embed_dims, self.embed_dims)
        self.memory_trans_norm = nn.LayerNorm(self.embed_dims)
        if self.num_streams == 2:  # the localisation halves of matching and denoising queries
            self.loc_query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
            self.dn_loc_embedding = nn.Parameter(torch.zeros(self.embed_dims))

    def init_weights(self) -> None:
        super().init_weights()
        if self.hierarchy is not None:
            for branch in self.bbox_head.cls_branches[:self.bbox_head.num_decoder_layers]:
                self.hierarchy.init_class_bias(branch.bias)
        if self.num_streams == 2:
            nn.init.xavier_uniform_(self.loc_query_embedding.weight)
            nn.init.normal_(self.dn_loc_embedding, std=self.embed_dims ** -0.5)

    def set_epoch(self, epoch: int) -> None:
        """Pass the 0-based epoch on to the contrastive losses (mmdet ``SetEpochInfoHook``)."""
        if self.hierarchy is not None:
            self.hierarchy.set_epoch(epoch)

    # -------------------------------------------------------- training
    def loss(self, batch_inputs: Tensor, batch_data_samples) -> Dict[str, Tensor]:
        """DINO's losses (keys: :meth:`RotatedDINOHead.loss_by_feat`), ``loss_presence``
        (category queries) and, per decoder layer i, ``s{i}.loss_hcl_lv{l}``: HCL / BHCL
        on the classification features of its matched matching queries."""
        img_feats = self.extract_feat(batch_inputs)
        gt_labels = [s.gt_instances.labels for s in batch_data_samples]
        head_inputs = self.forward_transformer(img_feats, batch_data_samples,
                                               self.class_context(img_feats, gt_labels))
        classes = head_inputs.get('classes')
        losses, labels = self.bbox_head.loss(**head_inputs,
                                             batch_data_samples=batch_data_samples,
                                             hierarchy=self.hierarchy)
        if self.hierarchy is not None:
            losses.update(self.hierarchy.presence_loss(classes, gt_labels))
            losses.update(self.contrastive_losses(head_inputs['hidden_states'],
                                                  head_inputs['dn_meta'], labels, classes))
        return losses

    def class_context(self, img_feats: Tuple[Tensor], gt_labels=None) -> Optional[ClassContext]:
        """The batch's category queries (None without ``classifier``); they attend to
        the neck's maps."""
        return None if self.hierarchy is None else self.hierarchy.image_context(img_feats,
                                                                                gt_labels)

    def contrastive_losses(self, hidden_states: Tensor, dn_meta: Optional[Dict[str, int]],
                           labels: list, classes: Optional[ClassContext]) -> Dict[str, Tensor]:
        """``s{i}.loss_hcl_lv{l}`` from the (L, B, Q, C or 2C) decoder states and the
        (B * N,) matching targets of each layer (denoising queries excluded)."""
        if self.hierarchy.loss_hcl is None:
            return {}
        num_dn = dn_meta['num_denoising_queries'] if dn_meta is not None else 0
        feats = self.bbox_head.split_streams(hidden_states)[0][:, :, num_dn:]
        losses = {}
        for i, layer_labels in enumerate(labels):
            pos = layer_labels < self.bbox_head.num_classes
            out = self.hierarchy.contrastive_loss(
                i, feats[i].flatten(0, 1)[pos], layer_labels[pos],
                self.bbox_head.cls_branches[i].weight, classes)
            losses.update({f's{i}.{k}': v for k, v in out.items()})
        return losses

    # ------------------------------------------------------- inference
    def predict(self, batch_inputs: Tensor, batch_data_samples, rescale: bool = True):
        """Top ``test_cfg.max_per_img`` (query, node) pairs of the last decoder layer
        among the leaves (and ``test_cfg.internal_nodes``; with category queries, the
        nodes selected for each image)."""
        img_feats = self.extract_feat(batch_inputs)
        head_inputs = self.forward_transformer(img_feats, batch_data_samples,
                                               self.class_context(img_feats))
        results = self.bbox_head.predict(
            **head_inputs, batch_data_samples=batch_data_samples, rescale=rescale,
            hierarchy=self.hierarchy)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: OptSampleList = None):
        """Per decoder layer: class logits (L, B, N, K) and boxes (L, B, N, 5). Without
        ``batch_data_samples`` (tensor mode, as FLOP counting calls it) every image
        fills the unpadded ``batch_inputs``."""
        if batch_data_samples is None:
            batch_data_samples = unpadded_samples(batch_inputs)
        img_feats = self.extract_feat(batch_inputs)
        head_inputs = self.forward_transformer(img_feats, batch_data_samples,
                                               self.class_context(img_feats))
        return self.bbox_head(head_inputs['hidden_states'], head_inputs['references'],
                              self.hierarchy, head_inputs.get('classes'))

    def forward_transformer(self, img_feats: Tuple[Tensor],
                            batch_data_samples: OptSampleList = None,
                            classes: Optional[ClassContext] = None) -> Dict:
        """mmdet's transformer pass (encoder, query selection, decoder) -> the head's
        inputs. With the batch's category queries ``classes``, the head inputs carry them
        as ``classes``; with a CQ-DINO selection they are fused with the image tokens in
        the encoder (the fused ones are returned), rank the proposals and are attended
        to by the decoder layers."""
        encoder_inputs, decoder_inputs = self.pre_transformer(img_feats, batch_data_samples)
        cqdino = classes is not None and classes.selection is not None
        if cqdino:
            encoder_outputs, classes = self.forward_fused_encoder(**encoder_inputs,
                                                                  classes=classes)
        else:
            encoder_outputs = self.forward_encoder(**encoder_inputs)
        tmp_dec_in, head_inputs = self.pre_decoder(**encoder_outputs,
                                                   batch_data_samples=batch_data_samples,
                                                   classes=classes if cqdino else None)
        decoder_inputs.update(tmp_dec_in)
        h, w = batch_data_samples[0].batch_input_shape
        decoder_inputs['aspect_ratio'] = h / w  # the padded input's, for rotated sampling
        if cqdino:
            categories, valid = self.hierarchy.selected_categories(classes)
            decoder_inputs.update(categories=categories, category_valid=valid)
        head_inputs.update(self.forward_decoder(**decoder_inputs))
        if classes is not None:
            head_inputs['classes'] = classes
        return head_inputs

    def forward_fused_encoder(self, feat: Tensor, feat_mask: Tensor, feat_pos: Tensor,
                              spatial_shapes: Tensor, level_start_index: Tensor,
                              valid_ratios: Tensor, classes: ClassContext
                              ) -> Tuple[Dict, ClassContext]:
        """mmdet's deformable encoder with CQ-DINO's category-image fusion before each
        layer -> (encoder outputs, the context with the fused selected categories)."""
        reference_points = self.encoder.get_encoder_reference_points(
            spatial_shapes, valid_ratios, device=feat.device)
        query = feat
        for i, layer in enumerate(self.encoder.layers):
            query, classes = self.hierarchy.fuse(i, query, classes, feat_mask)
            query = layer(query=query, query_pos=feat_pos, key_padding_mask=feat_mask,
                          spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                          valid_ratios=valid_ratios, reference_points=reference_points)
        return dict(memory=query, memory_mask=feat_mask, spatial_shapes=spatial_shapes), classes

    def pre_decoder(self, memory: Tensor, memory_mask: Tensor, spatial_shapes: Tensor,
                    batch_data_samples: OptSampleList = None,
                    classes: Optional[ClassContext] = None) -> Tuple[Dict]:
        """DINO's two-stage query selection with 5-d boxes (angle logit 0); with a
        CQ-DINO selection in ``classes``, proposals are ranked by their best score over
        the image's selected categories."""
        bs = memory.shape[0]
        head = self.bbox_head
        cls_out = head.cls_branches[self.decoder.num_layers].out_features
        output_memory, proposals = self.gen_encoder_output_proposals(memory, memory_mask,
                                                                     spatial_shapes)
        proposals = torch.cat([proposals, proposals.new_zeros(*proposals.shape[:-1], 1)], -1)
        enc_class = head.cls_branches[self.decoder.num_layers](output_memory)
        enc_coord_unact = head.reg_branches[self.decoder.num_layers](output_memory) + proposals
        if classes is None:
            topk = torch.topk(enc_class.max(-1)[0], k=self.num_queries, dim=1)[1]
        else:
            topk = self.hierarchy.select_proposals(enc_class, classes, self.num_queries)
        topk_score = torch.gather(enc_class, 1, topk[..., None].expand(-1, -1, cls_out))
        topk_coords_unact = torch.gather(enc_coord_unact, 1, topk[..., None].expand(-1, -1, 5))
        topk_coords = topk_coords_unact.sigmoid()
        topk_coords_unact = topk_coords_unact.detach()
        query = self.query_embedding.weight[None].expand(bs, -1, -1)
        if self.num_streams == 2:
            query = torch.cat([query, self.loc_query_embedding.weight[None].expand(bs, -1, -1)],
                              dim=-1)
        if self.training:
            dn_label_query, dn_bbox_query, dn_mask, dn_meta = \
                self.dn_query_generator(batch_data_samples)
            if self.num_streams == 2:  # the label noise stays in the classification half
                dn_label_query = torch.cat(
                    [dn_label_query, self.dn_loc_embedding.expand_as(dn_label_query)], dim=-1)
            query = torch.cat([dn_label_query, query], dim=1)
            reference_points = torch.cat([dn_bbox_query, topk_coords_unact], dim=1)
        else:
            reference_points = topk_coords_unact
            dn_mask, dn_meta = None, None
        decoder_inputs = dict(query=query, memory=memory,
                              reference_points=reference_points.sigmoid(), dn_mask=dn_mask)
        head_inputs = dict(enc_outputs_class=topk_score, enc_outputs_coord=topk_coords,
                           dn_meta=dn_meta) if self.training else dict()
        return decoder_inputs, head_inputs
