"""RHINO's decoder: DINO's deformable decoder with rotated reference boxes.

Reference boxes are ``(cx, cy, w, h, t / pi)`` in [0, 1] (centre and size
normalised by the padded input's width and height, the angle in [0, pi) as a
fraction of pi), refined layer by layer in inverse-sigmoid space as DINO
refines its 4-d boxes. Each layer's cross-attention samples around the
rotated box (:class:`RotatedMultiScaleDeformableAttention`); the positional
query is, as in RHINO, DINO's sine encoding of ``(cx, cy, w, h)`` (C / 2
features per number, the angle left out) through an MLP (2C -> C -> C);
``query_pos_angle=True`` (a bhcl option) encodes all five numbers (C features each).

The layer type is chosen in the config, as for OrientedFormer:
``layer_cfg=dict(type='RotatedDeformableDecoderLayer', ...)`` (the default, RHINO)
or ``'DecoupledRotatedDecoderLayer'`` (the BHCL paper's decoupled queries). Each
layer type says how many query streams it carries and how to split a query into
what the classifier and the box branch read (``num_streams``, ``split``); RHINO's
head splits the decoder's output by the layer type's ``num_streams`` the same way.
``layer_cfg.category_attn=dict(num_heads=...)`` (CQ-DINO, either type) adds a
:class:`CategoryCrossAttention` between the self-attention and the rotated
cross-attention: the query (its classification half, when decoupled) attends to
the image's selected categories, which the decoder passes as ``categories`` and
``category_valid``.
"""
import math
from typing import Optional, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmdet.models.layers import MLP
from mmdet.models.layers.transformer import (DeformableDetrTransformerDecoderLayer,
                                             DinoTransformerDecoder, coordinate_to_encoding,
                                             inverse_sigmoid)
from mmengine.model import BaseModule, ModuleList
from mmrotate.registry import MODELS
from torch import Tensor, nn

from .category_cross_attention import CategoryCrossAttention
from .rotated_deformable_attention import RotatedMultiScaleDeformableAttention


def rbox_to_encoding(ref: Tensor, num_feats: int, with_angle: bool = True) -> Tensor:
    """(..., 5) normalised boxes -> sine encoding: DINO's encoding of ``(cx, cy, w, h)``
    (order y, x, w, h; (..., 4 * num_feats)), followed when ``with_angle`` by the same
    encoding of ``t / pi`` (then (..., 5 * num_feats))."""
    if not with_angle:
        return coordinate_to_encoding(ref[..., :4], num_feats=num_feats)
    box = coordinate_to_encoding(ref[..., :4], num_feats=num_feats)
    angle = coordinate_to_encoding(ref[..., 4:5].expand(*ref.shape[:-1], 2),
                                   num_feats=num_feats)[..., :num_feats]
    return torch.cat([box, angle], dim=-1)


DEFAULT_LAYER = 'RotatedDeformableDecoderLayer'

CATEGORY_MISMATCH = (
    'a decoder layer with category_attn needs the selected categories (a CQDINOClassifier), '
    'and only such a layer takes them: set decoder.layer_cfg.category_attn together with '
    "classifier=dict(type='CQDINOClassifier')")


def split_streams(query: Tensor, num_streams: int, embed_dims: int) -> Tuple[Tensor, Tensor]:
    """(..., num_streams * C) query of a layer with ``num_streams`` query streams of
    ``embed_dims`` C channels -> (what the classifier reads, what the box branch reads):
    the query itself for one stream, its classification and localisation halves for two."""
    if num_streams == 1:
        return query, query
    if num_streams == 2:
        return query[..., :embed_dims], query[..., embed_dims:]
    raise ValueError(f'a RHINO decoder layer has 1 or 2 query streams, not {num_streams}')


def build_category_attn(embed_dims: int, cfg: Optional[dict]) -> Optional[nn.Module]:
    """A layer's :class:`CategoryCrossAttention` (None without ``category_attn``)."""
    return None if cfg is None else CategoryCrossAttention(embed_dims, **cfg)


def attend_categories(layer: nn.Module, query: Tensor, query_pos: Optional[Tensor],
                      categories: Optional[Tensor], category_valid: Optional[Tensor]) -> Tensor:
    """The query's classification stream attends to the selected categories (the
    identity for a layer without ``category_attn``)."""
    if (layer.category_attn is None) != (categories is None):
        raise ValueError(CATEGORY_MISMATCH)
    if categories is None:
        return query
    cls, loc = layer.split(query)
    cls = layer.category_attn(cls, categories, query_pos, category_valid)
    return cls if layer.num_streams == 1 else torch.cat([cls, loc], dim=-1)


@MODELS.register_module()
class RotatedDeformableDecoderLayer(DeformableDetrTransformerDecoderLayer):
    """Deformable DETR decoder layer whose cross-attention samples rotated boxes.
    One query stream of C channels feeds both the classifier and the box branch."""

    num_streams = 1

    def __init__(self, *args, category_attn: Optional[dict] = None, **kwargs) -> None:
        self.category_attn_cfg = category_attn
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        self.cross_attn = RotatedMultiScaleDeformableAttention(**self.cross_attn_cfg)
        self.category_attn = build_category_attn(self.embed_dims, self.category_attn_cfg)

    def forward(self, query: Tensor, key: Tensor = None, value: Tensor = None,
                query_pos: Tensor = None, key_pos: Tensor = None,
                self_attn_mask: Tensor = None, cross_attn_mask: Tensor = None,
                key_padding_mask: Tensor = None, categories: Optional[Tensor] = None,
                category_valid: Optional[Tensor] = None, **kwargs) -> Tensor:
        """DETR's decoder layer (self-attention, cross-attention, FFN, each post-norm),
        with the attention to ``categories`` (B, S, C) after the self-attention."""
        query = self.norms[0](self.self_attn(
            query=query, key=query, value=query, query_pos=query_pos, key_pos=query_pos,
            attn_mask=self_attn_mask, **kwargs))
        query = attend_categories(self, query, query_pos, categories, category_valid)
        query = self.norms[1](self.cross_attn(
            query=query, key=key, value=value, query_pos=query_pos, key_pos=key_pos,
            attn_mask=cross_attn_mask, key_padding_mask=key_padding_mask, **kwargs))
        return self.norms[2](self.ffn(query))

    def split(self, query: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., C) query -> (what the classifier reads, what the box branch reads)."""
        return split_streams(query, self.num_streams, self.embed_dims)


@MODELS.register_module()
class DecoupledRotatedDecoderLayer(BaseModule):
    """The BHCL paper's decoupled layer on RHINO: the classification and localisation
    queries (each C channels) are concatenated along the channels for one shared
    self-attention (2C channels, the positional query repeated for both halves), then
    each stream has its own rotated cross-attention around the same reference box and
    its own FFN (post-norm, as DINO's layer). Queries are (B, N, 2C): classification
    half first."""

    num_streams = 2

    def __init__(self, self_attn_cfg: dict, cross_attn_cfg: dict, ffn_cfg: dict,
                 norm_cfg: dict = dict(type='LN'), category_attn: Optional[dict] = None,
                 init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        c = cross_attn_cfg['embed_dims']
        self.embed_dims = c
        self.self_attn = MultiheadAttention(**dict(self_attn_cfg, embed_dims=2 * c,
                                                   batch_first=True))
        self.self_norm = build_norm_layer(norm_cfg, 2 * c)[1]
        cross = dict(cross_attn_cfg, batch_first=True)
        self.cross_attn = ModuleList(RotatedMultiScaleDeformableAttention(**cross)
                                     for _ in range(2))
        self.ffn = ModuleList(FFN(**ffn_cfg) for _ in range(2))
        self.norms = ModuleList(build_norm_layer(norm_cfg, c)[1] for _ in range(4))
        self.category_attn = build_category_attn(c, category_attn)

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor,
                self_attn_mask: Optional[Tensor] = None, key_padding_mask=None,
                categories: Optional[Tensor] = None, category_valid: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        pos = torch.cat([query_pos, query_pos], dim=-1)
        query = self.self_norm(self.self_attn(query=query, key=query, value=query,
                                              query_pos=pos, key_pos=pos,
                                              attn_mask=self_attn_mask))
        query = attend_categories(self, query, query_pos, categories, category_valid)
        streams = []
        for i, half in enumerate(query.split(self.embed_dims, dim=-1)):
            half = self.norms[2 * i](self.cross_attn[i](
                query=half, value=value, query_pos=query_pos,
                key_padding_mask=key_padding_mask, **kwargs))
            streams.append(self.norms[2 * i + 1](self.ffn[i](half)))
        return torch.cat(streams, dim=-1)

    def split(self, query: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., 2C) query -> (classification half, localisation half)."""
        return split_streams(query, self.num_streams, self.embed_dims)


def decoder_layer_type(decoder_cfg: dict) -> type:
    """The layer class a RHINO ``decoder`` config builds: its ``layer_cfg.type``
    (default ``RotatedDeformableDecoderLayer``). Rejects the retired
    ``decoupled`` flag with what to write instead."""
    if 'decoupled' in decoder_cfg:
        raise ValueError(
            f"RHINO: model.decoder.decoupled={decoder_cfg['decoupled']!r} is no longer an "
            'option; decoupling is the decoder layer type. Remove it and write '
            "model.decoder.layer_cfg.type='DecoupledRotatedDecoderLayer' for decoupled queries "
            f"(as configs/rhino/rhino-decoupled_*.py do) or keep the default '{DEFAULT_LAYER}'.")
    name = (decoder_cfg.get('layer_cfg') or {}).get('type', DEFAULT_LAYER)
    layer_type = MODELS.get(name) if isinstance(name, str) else name
    if layer_type is None or not hasattr(layer_type, 'num_streams'):
        raise ValueError(f'RHINO: model.decoder.layer_cfg.type={name!r} is not a RHINO decoder '
                         "layer; use 'RotatedDeformableDecoderLayer' or "
                         "'DecoupledRotatedDecoderLayer'")
    return layer_type


class RotatedDinoTransformerDecoder(DinoTransformerDecoder):
    """DINO's decoder on rotated reference boxes (see the module docstring).
    ``layer_cfg.type`` picks the layer: baseline or decoupled queries."""

    def __init__(self, num_layers: int, layer_cfg: dict, query_pos_angle: bool = False,
                 **kwargs) -> None:
        self.layer_type = decoder_layer_type(dict(kwargs, layer_cfg=layer_cfg))
        self.query_pos_angle = query_pos_angle
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg, **kwargs)

    @property
    def decoupled(self) -> bool:
        """Whether the queries are (classification, localisation) halves."""
        return self.layer_type.num_streams == 2

    @property
    def pos_feats(self) -> int:
        """Sine features per box number of the positional query."""
        return self.embed_dims if self.query_pos_angle else self.embed_dims // 2

    def _init_layers(self) -> None:
        layer_cfg = {k: v for k, v in self.layer_cfg.items() if k != 'type'}
        self.layers = ModuleList([self.layer_type(**layer_cfg) for _ in range(self.num_layers)])
        self.embed_dims = self.layers[0].embed_dims
        if self.post_norm_cfg is not None:
            raise ValueError(f'There is not post_norm in {self._get_name()}')
        num_in = self.pos_feats * (5 if self.query_pos_angle else 4)
        self.ref_point_head = MLP(num_in, self.embed_dims, self.embed_dims, 2)
        # decoupled: one norm per stream (classification half, localisation half)
        self.norm = nn.LayerNorm(self.embed_dims)
        self.loc_norm = nn.LayerNorm(self.embed_dims) if self.decoupled else None

    def _out_norm(self, query: Tensor) -> Tensor:
        if self.loc_norm is None:
            return self.norm(query)
        cls, loc = self.layers[0].split(query)
        return torch.cat([self.norm(cls), self.loc_norm(loc)], dim=-1)

    def _loc(self, query: Tensor) -> Tensor:
        """What the box branches read: the localisation half when decoupled."""
        return self.layers[0].split(query)[1]

    def forward(self, query: Tensor, value: Tensor, key_padding_mask: Tensor,
                self_attn_mask: Optional[Tensor], reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                reg_branches: Optional[nn.ModuleList] = None, aspect_ratio=None,
                **kwargs) -> Tuple[Tensor, Tensor]:
        """As DINO's decoder, with ``reference_points`` (B, N, 5) rotated boxes in
        [0, 1] and ``aspect_ratio`` the padded input's H / W (float or (B,)).

        Decoupled: queries are (B, N, 2C), classification half first; the box
        branches read the localisation half.

        Returns the normed query of every layer (L, B, N, C or 2C) and the references
        (L + 1, B, N, 5): the input and each layer's refined boxes (with gradient).
        """
        if reference_points.shape[-1] != 5:
            raise ValueError('RotatedDinoTransformerDecoder needs (B, N, 5) reference boxes '
                             f'(cx, cy, w, h, t / pi), got {tuple(reference_points.shape)}')
        intermediate, references = [], [reference_points]
        scale = torch.cat([valid_ratios, valid_ratios], -1)[:, None]  # (B, 1, L, 4)
        for lid, layer in enumerate(self.layers):
            ref = reference_points[:, :, None]  # (B, N, 1, 5)
            box = ref[..., :4] * scale  # (B, N, L, 4)
            angle = (ref[..., 4:] * math.pi).expand(-1, -1, box.shape[2], -1)
            ref_input = torch.cat([box, angle], -1)  # radians for the attention
            query_pos = self.ref_point_head(rbox_to_encoding(
                torch.cat([box[:, :, 0], ref[:, :, 0, 4:]], -1), num_feats=self.pos_feats,
                with_angle=self.query_pos_angle))
            query = layer(query, query_pos=query_pos, value=value,
                          key_padding_mask=key_padding_mask, self_attn_mask=self_attn_mask,
                          spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                          valid_ratios=valid_ratios, reference_points=ref_input,
                          aspect_ratio=aspect_ratio, **kwargs)
            if reg_branches is not None:
                new_ref = (reg_branches[lid](self._loc(query)) +
                           inverse_sigmoid(reference_points, eps=1e-3)).sigmoid()
                reference_points = new_ref.detach()
            else:
                new_ref = reference_points
            intermediate.append(self._out_norm(query))
            references.append(new_ref)
        return torch.stack(intermediate), torch.stack(references)
