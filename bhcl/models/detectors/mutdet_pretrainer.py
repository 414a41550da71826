"""MutDet-style detection pre-training of the oriented query detector.

Pre-training runs on unlabelled images with pseudo-labels (class-agnostic
rotated proposals, their k-means pseudo-classes and object embeddings; see
``bhcl.pretraining`` and docs/pretraining.md). Per batch:

1. plain pass: backbone (frozen) -> neck -> query head -> decoder, exactly the
   fine-tuning forward, with the full detection losses on the pseudo-classes;
2. mutual enhancement: the object embeddings (projected to the model width)
   and the neck tokens of every level (flattened, concatenated, projected)
   update each other (:class:`~bhcl.models.layers.MutualEnhancement`);
3. enhanced pass: the same query head, decoder and prediction heads on the
   enhanced tokens reshaped back into maps, with the same losses (``enh.*``);
   its queries are chosen as MutDet chooses them, by similarity x objectness
   (:func:`similarity_objectness`: each location's highest cosine similarity
   between its token embedding and the image's enhanced objects, times the
   query head's objectness there), not by the objectness alone;
4. contrastive alignment: symmetric InfoNCE between the embedding predicted
   from each Hungarian-matched query of the last decoder stage (both passes;
   the classification stream when queries are decoupled) and the enhanced
   embedding of its pseudo-object (``loss_align``, ``enh.loss_align``), and
   between the enhanced tokens at the query head's distinct candidates,
   matched one-to-one, and their pseudo-objects (``enh.loss_align_token``).

The OrientedFormer detector has no transformer encoder: the neck's maps play
the part of MutDet's encoder tokens, and the query head's per-location
candidates that of its encoder proposals. Neck locations in the batch padding
take no part: objects do not attend to them and they are never selected.
Departures from the authors' code: docs/method.md.
"""
import copy
import functools
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from mmdet.models.layers.transformer import inverse_sigmoid
from mmdet.structures import SampleList
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from torch import Tensor, nn

from .oriented_query_detr import OrientedQueryDETR, StageOutput

PRETRAIN_ONLY_PREFIXES = ('object_proj.', 'token_proj.', 'token_norm.', 'enhancement.',
                          'query_embed_head.', 'token_embed_head.', 'loss_align.')
ENHANCED_SELECTIONS = ('similarity_x_logit', 'similarity_x_score', None)


def similarity_objectness(token_embeds: Tensor, objects: Tensor, obj_mask: Tensor,
                          objectness: Tensor) -> Tensor:
    """MutDet's score of the enhanced pass's proposals.

    For every token, the highest cosine similarity between its embedding and
    the valid objects of its image, times its objectness.

    Args:
        token_embeds: (B, T, C) token embeddings (the token embedding head's output).
        objects: (B, N, C) enhanced object embeddings.
        obj_mask: (B, N) bool, True = padded object.
        objectness: (B, T) objectness of every token (MutDet: its objectness logit).

    Returns:
        (B, T) scores; an image without objects gets its objectness (similarity 1).
    """
    if objects.shape[1] == 0 or bool(obj_mask.all()):
        return objectness.clone()
    sim = F.normalize(token_embeds, dim=-1) @ F.normalize(objects, dim=-1).transpose(1, 2)
    best = sim.masked_fill(obj_mask[:, None, :], float('-inf')).max(-1).values
    has_objects = ~obj_mask.all(dim=1)
    best = torch.where(has_objects[:, None], best, torch.ones_like(best))
    return best * objectness


@MODELS.register_module()
class MutDetPretrainer(OrientedQueryDETR):
    """:class:`OrientedQueryDETR` with MutDet's pre-training head.

    Args (besides those of :class:`OrientedQueryDETR`, whose ``label_tree`` is
    the flat tree of pseudo-classes, ``bhcl.datasets.pseudo_label_tree(k)``):
        object_channels: dimension D of the pseudo-objects' embeddings.
        enhancement: :class:`MutualEnhancement` config (``embed_dims`` filled in).
        query_embed_head: embedding head on matched decoder queries (C-256-C).
        token_embed_head: embedding head on neck tokens (C-1024-C); both output the
            model width C, that of the enhanced objects they align with.
        loss_align: :class:`ContrastiveAlignmentLoss` config (MutDet: temperature
            0.2, 0.4 per direction).
        enhanced_selection: how the enhanced pass chooses its queries:
            ``'similarity_x_logit'`` (MutDet: similarity times the objectness
            logit, here the logit of the query head's best class score),
            ``'similarity_x_score'`` (times the score itself, in (0, 1), so that a
            negative logit cannot turn a negative similarity into a high rank) or
            None (by the score alone, as the plain pass).
        freeze_backbone: keep the backbone's weights and BatchNorm statistics
            fixed (MutDet pre-trains everything after the backbone).
    """

    def __init__(self,
                 *args,
                 object_channels: int = 256,
                 enhancement: dict = dict(type='MutualEnhancement', num_blocks=3, num_heads=8,
                                          ffn_channels=2048),
                 query_embed_head: dict = dict(type='EmbeddingHead', hidden_channels=256),
                 token_embed_head: dict = dict(type='EmbeddingHead', hidden_channels=1024),
                 loss_align: dict = dict(type='ContrastiveAlignmentLoss', temperature=0.2,
                                         loss_weight=0.4),
                 enhanced_selection: Optional[str] = 'similarity_x_logit',
                 freeze_backbone: bool = True,
                 **kwargs):
        super().__init__(*args, **kwargs)
        if enhanced_selection not in ENHANCED_SELECTIONS:
            raise ValueError(f'MutDetPretrainer: enhanced_selection must be one of '
                             f'{ENHANCED_SELECTIONS}, got {enhanced_selection!r}')
        self.enhanced_selection = enhanced_selection
        if self.hierarchy.category_queries is not None or self.hierarchy.loss_hcl is not None:
            raise ValueError('MutDetPretrainer: pre-training uses the linear classifier on '
                             'pseudo-classes; remove classifier= and loss_hcl= from the '
                             'pre-training config (the fine-tuning config keeps them)')
        c = self.layers[0].embed_dims
        self.object_proj = nn.Linear(object_channels, c)
        # MutDet's patch_enc_output and its LayerNorm, before the enhancement
        self.token_proj = nn.Linear(c, c)
        self.token_norm = nn.LayerNorm(c)
        self.enhancement = MODELS.build(copy.deepcopy(enhancement),
                                        default_args=dict(embed_dims=c))
        for name, cfg in (('query_embed_head', query_embed_head),
                          ('token_embed_head', token_embed_head)):
            if cfg.get('out_channels', c) != c:
                raise ValueError(f'MutDetPretrainer: {name}.out_channels must be the model '
                                 f'width {c} (it is aligned with the enhanced objects)')
            setattr(self, name, MODELS.build(copy.deepcopy(cfg), default_args=dict(
                in_channels=c, out_channels=c)))
        self.loss_align = MODELS.build(copy.deepcopy(loss_align))
        self.freeze_backbone = freeze_backbone
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode: bool = True) -> 'MutDetPretrainer':
        super().train(mode)
        if self.freeze_backbone:
            self.backbone.eval()
        return self

    # ------------------------------------------------------------- helpers
    @staticmethod
    def pad_objects(embeddings: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
        """Per-image (N_i, D) embeddings -> (B, N, D) zero-padded and the (B, N)
        padding mask (True = padding)."""
        n = max((len(e) for e in embeddings), default=0)
        out = embeddings[0].new_zeros((len(embeddings), n, embeddings[0].shape[-1]))
        mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        for i, e in enumerate(embeddings):
            out[i, :len(e)] = e
            mask[i, :len(e)] = False
        return out, mask

    @staticmethod
    def token_padding_mask(feats: Sequence[Tensor], metas: List[dict],
                           batch_shape: Tuple[int, int]) -> Tensor:
        """(B, T) bool, True where a neck location lies in the batch padding: each
        image's valid area (``img_shape``) in the padded batch (``batch_shape``),
        nearest-resized to every level as DETR does; locations numbered as in
        :meth:`enhance`."""
        img_mask = feats[0].new_ones((len(metas), *batch_shape))
        for j, meta in enumerate(metas):
            h, w = meta['img_shape'][:2]
            img_mask[j, :h, :w] = 0
        return torch.cat([F.interpolate(img_mask[None], size=f.shape[-2:])[0].bool().flatten(1)
                          for f in feats], dim=1)

    def enhance(self, feats: Sequence[Tensor], objects: Tensor, obj_mask: Tensor,
                token_mask: Optional[Tensor] = None) -> Tuple[List[Tensor], Tensor, Tensor]:
        """Neck maps and (B, N, D) object embeddings -> enhanced maps (same shapes),
        enhanced objects (B, N, C) and the enhanced tokens (B, T, C), numbered
        level by level, row-major (the query head's location ids). ``token_mask``
        (B, T), True = padding: tokens the objects do not attend to."""
        shapes = [f.shape[-2:] for f in feats]
        tokens = torch.cat([f.flatten(2) for f in feats], dim=2).transpose(1, 2)
        obj, tok = self.enhancement(self.object_proj(objects),
                                    self.token_norm(self.token_proj(tokens)), obj_mask, token_mask)
        maps, start = [], 0
        for h, w in shapes:
            maps.append(tok[:, start:start + h * w].transpose(1, 2).reshape(
                tok.shape[0], -1, h, w))
            start += h * w
        return maps, obj, tok

    @torch.no_grad()
    def token_similarity_ranking(self, tokens: Tensor, objects: Tensor, obj_mask: Tensor,
                                 token_mask: Tensor, dense: dict) -> Tensor:
        """The enhanced pass's (B, T) ranking of locations: :func:`similarity_objectness`
        of the token embeddings, the enhanced objects and the query head's objectness
        (its best class score, or that score's logit), ``-inf`` on padding."""
        scores = torch.cat([s.flatten(2) for s in dense['main'][0]], dim=2).max(1).values
        if self.enhanced_selection == 'similarity_x_logit':
            scores = inverse_sigmoid(scores)
        # image by image: the token head's hidden layer over every location is large
        ranking = torch.cat([
            similarity_objectness(self.token_embed_head(tokens[j:j + 1]), objects[j:j + 1],
                                  obj_mask[j:j + 1], scores[j:j + 1])
            for j in range(len(tokens))])
        return ranking.float().masked_fill(token_mask, float('-inf'))

    def query_alignment(self, stage: StageOutput, match: Tuple[Tensor, Tensor, Tensor],
                        objects: Tensor) -> Tensor:
        """InfoNCE between the matched queries' predicted embeddings and their objects;
        ``match`` is the stage's ``(pos_b, pos_q, pos_gt)`` from its detection loss."""
        pos_b, pos_q, pos_gt = match
        pred = self.query_embed_head(stage.cls_feats[pos_b, pos_q])
        return self.loss_align(pred, objects[pos_b, pos_gt])

    def token_alignment(self, head: dict, tokens: Tensor, objects: Tensor,
                        gts: List[InstanceData], metas: List[dict]) -> Tensor:
        """InfoNCE between the enhanced tokens at the query head's distinct candidates,
        matched one-to-one to the pseudo-objects, and those objects."""
        preds, targets = [], []
        for j, (scores, boxes, ids) in enumerate(head['main']):
            if len(boxes) == 0 or len(gts[j]) == 0:
                continue
            cand = InstanceData(scores=inverse_sigmoid(scores.detach()), bboxes=boxes.detach())
            inds = self.assigner.assign(cand, gts[j], metas[j]).gt_inds
            pos = (inds > 0).nonzero().squeeze(1)
            preds.append(tokens[j, ids[pos]])
            targets.append(objects[j, inds[pos] - 1])
        if not preds:  # nothing matched: a zero that keeps the heads in the graph
            return self.loss_align(self.token_embed_head(tokens[:1, :0]).flatten(0, 1),
                                   objects[:1, :0].flatten(0, 1))
        return self.loss_align(self.token_embed_head(torch.cat(preds)), torch.cat(targets))

    # ---------------------------------------------------------------- loss
    def loss(self, batch_inputs: Tensor, batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """The detection losses of both passes (plain: as fine-tuning; ``enh.*``)
        and the alignment losses ``loss_align``, ``enh.loss_align`` and
        ``enh.loss_align_token``."""
        metas = [s.metainfo for s in batch_data_samples]
        gts = [self._gt_instances(s) for s in batch_data_samples]
        embeddings = []
        for s, gt in zip(batch_data_samples, gts):
            emb = s.gt_instances.get('embeddings')
            if emb is None or len(emb) != len(gt):
                raise ValueError(
                    f"{s.metainfo.get('img_path')}: MutDetPretrainer needs one object "
                    f'embedding per pseudo-box (gt_instances.embeddings); got '
                    f'{None if emb is None else len(emb)} for {len(gt)} boxes. Use '
                    'LoadPseudoLabels and PackPseudoLabelInputs in the pipeline.')
            embeddings.append(emb.to(batch_inputs.device, torch.float32))
        labels = [gt.labels for gt in gts]
        feats = self.extract_feat(batch_inputs)
        head, stages = self.decode(feats, labels)
        # each stage's Hungarian matching, recorded by the detection loss for the alignment
        matches, enh_matches = [], []
        losses = self.detection_losses(head, stages, gts, metas, matches)

        objects, obj_mask = self.pad_objects(embeddings)
        token_mask = self.token_padding_mask(feats, metas, tuple(batch_inputs.shape[-2:]))
        enh_maps, enh_obj, enh_tokens = self.enhance(feats, objects, obj_mask, token_mask)
        ranking = None if self.enhanced_selection is None else functools.partial(
            self.token_similarity_ranking, enh_tokens, enh_obj, obj_mask, token_mask)
        enh_head, enh_stages = self.decode(enh_maps, labels, ranking)
        losses.update({f'enh.{k}': v for k, v in
                       self.detection_losses(enh_head, enh_stages, gts, metas,
                                             enh_matches).items()})
        losses['loss_align'] = self.query_alignment(stages[-1], matches[-1], enh_obj)
        losses['enh.loss_align'] = self.query_alignment(enh_stages[-1], enh_matches[-1],
                                                        enh_obj)
        losses['enh.loss_align_token'] = self.token_alignment(enh_head, enh_tokens, enh_obj,
                                                              gts, metas)
        return losses


def pretrain_only_keys(state_dict: Dict[str, Tensor]) -> List[str]:
    """Keys of a :class:`MutDetPretrainer` state dict that fine-tuning has no use for."""
    return [k for k in state_dict if k.startswith(PRETRAIN_ONLY_PREFIXES)]

