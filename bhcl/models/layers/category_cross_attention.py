"""The decoder's cross-attention from object queries to the selected categories (CQ-DINO).

In each CQ-DINO decoder layer, between the queries' self-attention and their
deformable attention to the image, the queries attend to the selected
category features (the encoder's fused output; Grounding DINO's
query-to-text attention):

    q' = LN(q + MHA(q + pos, c, c))        padded categories masked

The positional embedding is added to the queries only (the authors' call
leaves the keys without one whenever the number of queries differs from the
number of categories, which it always does in their runs).
"""
from typing import Optional

from mmrotate.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class CategoryCrossAttention(nn.Module):
    """Object queries attend to the selected categories; residual and LayerNorm.

    Args:
        embed_dims: channels of queries and categories (256 in CQ-DINO).
        num_heads: heads (8).
        dropout: attention and residual dropout (0.0).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                          batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, query: Tensor, categories: Tensor, query_pos: Optional[Tensor] = None,
                category_valid: Optional[Tensor] = None) -> Tensor:
        """Queries (B, Q, C) (+ ``query_pos``), categories (B, S, C), ``category_valid``
        (B, S) bool False on padding -> (B, Q, C)."""
        q = query if query_pos is None else query + query_pos
        pad = None if category_valid is None else ~category_valid
        out = self.attn(q, categories, categories, key_padding_mask=pad, need_weights=False)[0]
        return self.norm(query + self.drop(out))
