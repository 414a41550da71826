"""OrientedFormer decoder stages: a shared self-attention and one or two query branches.

The baseline layer (:class:`QueryDecoderLayer`) has one branch whose output
feeds both the class and the box head. :class:`DecoupledQueryDecoderLayer`
keeps content of width 2C = concat(cls, loc): the self-attention runs over all
2C channels, then each half goes through its own oriented cross-attention and
FFN, so the class half and the box half only meet in the self-attention.

``category_attn=dict(num_heads=...)`` (CQ-DINO) adds a
:class:`CategoryCrossAttention` after the self-attention: the query (its class
half, when decoupled) attends to the image's selected categories before the
oriented cross-attention to the image.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.structures.box_coding import xyzrt_to_boxes

from .category_cross_attention import CategoryCrossAttention
from .oriented_sampling_attention import OrientedSamplingAttention
from .rbox_ops import gaussian_position_encoding, gaussian_similarity


class BoxBiasedSelfAttention(nn.Module):
    """Query self-attention with a Gaussian box encoding and a box-similarity bias.

    The encoding of each query's box (:func:`gaussian_position_encoding`, C
    channels) is added to every C-channel part of the content; the attention
    logits of head h get ``tau_h * log(similarity + 1e-7)`` with
    :func:`gaussian_similarity` and a learnable ``tau``. Residual, then LayerNorm.

    Args:
        embed_dims: content width (C, or 2C for decoupled queries).
        num_heads: attention heads.
        pe_channels: C, the width of the box encoding.
        dropout: attention dropout.
    """

    def __init__(self, embed_dims: int, num_heads: int, pe_channels: int,
                 dropout: float = 0.0):
        super().__init__()
        if embed_dims % pe_channels or pe_channels % 4:
            raise ValueError(f'embed_dims {embed_dims} must be a multiple of pe_channels '
                             f'{pe_channels}, itself a multiple of 4')
        self.pe_channels = pe_channels
        self.tau = nn.Parameter(torch.ones(num_heads))
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                          batch_first=True)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, content: Tensor, xyzrt: Tensor) -> Tensor:
        """(B, N, D) content, (B, N, 5) query boxes ``xyzrt`` -> (B, N, D)."""
        with torch.no_grad():
            boxes = xyzrt_to_boxes(xyzrt.detach())
            log_sim = (gaussian_similarity(boxes) + 1e-7).log()
            pe = gaussian_position_encoding(boxes, self.pe_channels // 4)
        bias = (log_sim[:, None] * self.tau.view(1, -1, 1, 1)).flatten(0, 1)
        query = content + pe.repeat(1, 1, content.shape[-1] // self.pe_channels)
        out = self.attn(query, query, query, attn_mask=bias.to(query.dtype),
                        need_weights=False)[0]
        return self.norm(query + out)


class QueryBranch(nn.Module):
    """Oriented cross-attention (with its residual) + LN, then FFN + residual + LN."""

    def __init__(self, embed_dims: int, attn_cfg: dict, ffn_channels: int, dropout: float):
        super().__init__()
        self.cross_attn = OrientedSamplingAttention(embed_dims=embed_dims, **attn_cfg)
        self.cross_attn_norm = nn.LayerNorm(embed_dims)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(ffn_channels, embed_dims), nn.Dropout(dropout))
        self.ffn_norm = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, xyzrt: Tensor, feats: Sequence[Tensor],
                strides: Sequence[int]) -> Tensor:
        query = self.cross_attn_norm(self.cross_attn(query, xyzrt, feats, strides))
        return self.ffn_norm(query + self.ffn(query))


@MODELS.register_module()
class QueryDecoderLayer(nn.Module):
    """One OrientedFormer decoder stage (baseline): one branch feeds class and box heads.

    Args:
        embed_dims: C, the width of a branch (and of the neck features).
        num_heads: heads of the self-attention.
        attn_cfg: ``num_heads``, ``num_points``, ``reduction`` of the oriented
            cross-attention (paper: 64, 32, 4).
        ffn_channels: hidden width of each FFN.
        dropout: dropout of the self-attention and the FFNs.
        category_attn: ``CategoryCrossAttention`` arguments besides ``embed_dims``
            (CQ-DINO's attention to the selected categories), or None.
    """
    num_branches = 1

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 attn_cfg: dict = dict(num_heads=64, num_points=32, reduction=4),
                 ffn_channels: int = 2048,
                 dropout: float = 0.0,
                 category_attn: Optional[dict] = None):
        super().__init__()
        self.embed_dims = embed_dims
        self.self_attn = BoxBiasedSelfAttention(self.content_channels, num_heads, embed_dims,
                                                dropout)
        self.branches = nn.ModuleList(
            QueryBranch(embed_dims, dict(attn_cfg), ffn_channels, dropout)
            for _ in range(self.num_branches))
        # built last, so that a seed draws the other weights as without it
        self.category_attn = None if category_attn is None else CategoryCrossAttention(
            embed_dims, **category_attn)

    @property
    def content_channels(self) -> int:
        """Width of the query content this layer reads and writes."""
        return self.embed_dims * self.num_branches

    def init_weights(self) -> None:
        """Xavier-uniform weights and PyTorch's default biases for every linear layer,
        ``tau`` uniform in [0, 4]: the published initialisation."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                m.reset_parameters()
                nn.init.xavier_uniform_(m.weight)
        nn.init.uniform_(self.self_attn.tau, 0.0, 4.0)

    def forward(self, content: Tensor, xyzrt: Tensor, feats: Sequence[Tensor],
                strides: Sequence[int], categories: Optional[Tensor] = None,
                category_valid: Optional[Tensor] = None) -> Tensor:
        """(B, N, D) content, (B, N, 5) boxes ``xyzrt``, pyramid maps -> new (B, N, D)
        content. ``categories`` (B, S, C) and ``category_valid`` (B, S): the selected
        categories, which a layer with ``category_attn`` needs."""
        content = self.self_attn(content, xyzrt)
        if (self.category_attn is None) != (categories is None):
            raise ValueError(
                'a decoder layer with category_attn needs the selected categories (a '
                'CQDINOClassifier), and only such a layer takes them: set '
                'decoder.layer_cfg.category_attn together with '
                "classifier=dict(type='CQDINOClassifier')")
        if categories is not None:
            # the box encoding is already part of the content (added by the self-attention)
            cls_feat, loc_feat = self.split(content)
            cls_feat = self.category_attn(cls_feat, categories, category_valid=category_valid)
            content = cls_feat if self.num_branches == 1 else torch.cat([cls_feat, loc_feat],
                                                                        dim=-1)
        parts = content.chunk(self.num_branches, dim=-1)
        return torch.cat([branch(part, xyzrt, feats, strides)
                          for branch, part in zip(self.branches, parts)], dim=-1)

    def split(self, content: Tensor) -> Tuple[Tensor, Tensor]:
        """Content -> (class features, box features), each (..., C)."""
        return content, content


@MODELS.register_module()
class DecoupledQueryDecoderLayer(QueryDecoderLayer):
    """Decoupled stage: content ``concat(cls, loc)`` of width 2C, shared self-attention,
    a cross-attention + FFN per half; classification reads the first half only."""
    num_branches = 2

    def split(self, content: Tensor) -> Tuple[Tensor, Tensor]:
        cls_feat, loc_feat = content.chunk(2, dim=-1)
        return cls_feat, loc_feat
