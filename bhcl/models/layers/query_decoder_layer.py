"""Query decoder layers: a shared self-attention and one or two query branches.

The baseline layer (:class:`QueryDecoderLayer`) has one branch that feeds both
the class and the box head. :class:`DecoupledQueryDecoderLayer` keeps content
of width 2C = concat(cls, loc): the self-attention runs over all 2C channels,
then each half goes through its own cross-attention and FFN, so the class
half and the box half only meet in the self-attention.
"""
from typing import Sequence, Tuple

import torch
from mmrotate.registry import MODELS
from torch import Tensor, nn

from .box_biased_self_attention import BoxBiasedSelfAttention
from .oriented_sampling_attention import OrientedSamplingAttention


class QueryBranch(nn.Module):
    """Cross-attention + FFN with post-norms over C channels."""

    def __init__(self, embed_dims: int, num_heads: int, num_points: int,
                 strides: Sequence[int], ffn_channels: int, dropout: float):
        super().__init__()
        self.cross_attn = OrientedSamplingAttention(embed_dims, num_heads, num_points, strides)
        self.norm1 = nn.LayerNorm(embed_dims)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(ffn_channels, embed_dims))
        self.norm2 = nn.LayerNorm(embed_dims)
        self.dropout = nn.Dropout(dropout)

    def forward(self, query: Tensor, boxes: Tensor, feats: Sequence[Tensor]) -> Tensor:
        query = self.norm1(query + self.dropout(self.cross_attn(query, boxes, feats)))
        return self.norm2(query + self.dropout(self.ffn(query)))


@MODELS.register_module()
class QueryDecoderLayer(nn.Module):
    """One decoder stage of the baseline: shared content feeds class and box heads.

    Args:
        embed_dims: C, the width of each branch (and of the neck features).
        num_heads: heads of the self- and cross-attention.
        num_points: sampling points per head of the cross-attention.
        strides: strides of the pyramid levels.
        ffn_channels: hidden width of each FFN.
        dropout: dropout in attention and FFN.
    """
    num_branches = 1

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_points: int = 16,
                 strides: Sequence[int] = (4, 8, 16, 32, 64),
                 ffn_channels: int = 2048,
                 dropout: float = 0.0):
        super().__init__()
        self.embed_dims = embed_dims
        width = embed_dims * self.num_branches
        self.self_attn = BoxBiasedSelfAttention(width, num_heads * self.num_branches, dropout)
        self.norm = nn.LayerNorm(width)
        self.branches = nn.ModuleList(
            QueryBranch(embed_dims, num_heads, num_points, strides, ffn_channels, dropout)
            for _ in range(self.num_branches))
        self.dropout = nn.Dropout(dropout)

    @property
    def content_channels(self) -> int:
        """Width of the query content this layer reads and writes."""
        return self.embed_dims * self.num_branches

    def forward(self, content: Tensor, boxes: Tensor, feats: Sequence[Tensor],
                img_size: Tensor) -> Tensor:
        """Update the query content.

        Args:
            content: (B, N, content_channels).
            boxes: (B, N, 5) current boxes ``(cx, cy, w, h, t)`` le90, pixels.
            feats: pyramid levels, each (B, C, H_l, W_l).
            img_size: (B, 2) padded input ``(w, h)``.
        Returns:
            (B, N, content_channels).
        """
        content = self.norm(content + self.dropout(self.self_attn(content, boxes, img_size)))
        halves = content.split(self.embed_dims, dim=-1)
        return torch.cat([branch(half, boxes, feats)
                          for branch, half in zip(self.branches, halves)], dim=-1)

    def split(self, content: Tensor) -> Tuple[Tensor, Tensor]:
        """(..., content_channels) -> (class features, box features), each (..., C)."""
        halves = content.split(self.embed_dims, dim=-1)
        return halves[0], halves[-1]

    def cls_branch_parameters(self):
        """Parameters only the class features depend on (the first branch)."""
        return self.branches[0].parameters()

    def loc_branch_parameters(self):
        """Parameters only the box features depend on (the last branch)."""
        return self.branches[-1].parameters()


@MODELS.register_module()
class DecoupledQueryDecoderLayer(QueryDecoderLayer):
    """Decoupled stage: content is concat(cls, loc) (2C); two branches after a shared
    self-attention (twice the heads, so each head keeps C / num_heads channels)."""
    num_branches = 2
