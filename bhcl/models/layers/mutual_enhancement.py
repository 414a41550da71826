"""MutDet-style mutual enhancement of object embeddings and encoder tokens.

Object embeddings (one per pseudo-box, e.g. a frozen backbone's pooled
feature projected to C) and the projected tokens of the last encoder layer
update each other through a stack of two-way blocks. Each block, with a
residual and a post-LayerNorm around every step and no positional encoding:

1. object self-attention,
2. object -> token cross-attention (objects query the tokens),
3. object MLP (``C -> ffn_channels -> C``),
4. token -> object cross-attention (tokens query the objects).

Conventions: batched, ``batch_first``; padding masks are bool with
``True = padding``. Padded objects are zeroed on input (their values, even
non-finite ones, cannot leak) and on output. An image without any valid
object keeps its tokens exactly as they came in: step 4 (residual and norm)
is skipped for it, so the module is the identity on its tokens.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from mmdet.models.layers import MLP
from mmrotate.registry import MODELS
from torch import Tensor, nn


def _attendable(key_mask: Tensor) -> Tuple[Tensor, Tensor]:
    """``key_mask`` (B, S) bool, True = padding -> (safe mask, has_keys (B,)).

    A row with every key masked makes softmax return NaN. Such rows get an
    all-False mask instead (they attend to their zeroed padding); the caller
    discards what they produce using ``has_keys``.
    """
    has_keys = ~key_mask.all(dim=1)
    return key_mask & has_keys[:, None], has_keys


class MutualEnhancementBlock(nn.Module):
    """One two-way block; see the module docstring for the four steps."""

    def __init__(self, embed_dims: int, num_heads: int, ffn_channels: int,
                 dropout: float) -> None:
        super().__init__()

        def attn() -> nn.MultiheadAttention:
            return nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                         batch_first=True)

        self.self_attn = attn()
        self.obj_to_token = attn()
        self.token_to_obj = attn()
        self.ffn = nn.Sequential(
            nn.Linear(embed_dims, ffn_channels), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(ffn_channels, embed_dims))
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dims) for _ in range(4))
        self.drop = nn.Dropout(dropout)

    def forward(self, objects: Tensor, tokens: Tensor, obj_mask: Tensor,
                token_mask: Tensor, has_objects: Tensor) -> Tuple[Tensor, Tensor]:
        """objects (B, N, C), tokens (B, T, C); masks already made safe by
        :func:`_attendable`; has_objects (B,) bool."""
        def attend(layer: nn.MultiheadAttention, q: Tensor, kv: Tensor, mask: Tensor) -> Tensor:
            return self.drop(layer(q, kv, kv, key_padding_mask=mask, need_weights=False)[0])

        objects = self.norms[0](objects + attend(self.self_attn, objects, objects, obj_mask))
        objects = self.norms[1](objects + attend(self.obj_to_token, objects, tokens, token_mask))
        objects = self.norms[2](objects + self.drop(self.ffn(objects)))
        updated = self.norms[3](tokens + attend(self.token_to_obj, tokens, objects, obj_mask))
        # where, not a product: it keeps the tokens bit-exact and stops any
        # non-finite value of a discarded row from reaching the gradient
        tokens = torch.where(has_objects[:, None, None], updated, tokens)
        return objects, tokens


@MODELS.register_module()
class MutualEnhancement(nn.Module):
    """Stack of two-way blocks between object embeddings and encoder tokens.

    Args:
        embed_dims: channels C of both objects and tokens.
        num_heads: heads of every attention.
        num_blocks: number of two-way blocks.
        ffn_channels: hidden channels of the object MLP.
        dropout: dropout of the attentions and after each step.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_blocks: int = 3,
                 ffn_channels: int = 2048, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dims = embed_dims
        self.blocks = nn.ModuleList(
            MutualEnhancementBlock(embed_dims, num_heads, ffn_channels, dropout)
            for _ in range(num_blocks))

    def forward(self, objects: Tensor, tokens: Tensor, obj_mask: Optional[Tensor] = None,
                token_mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Enhance object embeddings and tokens together.

        Args:
            objects: (B, N, C) object embeddings; N may be 0.
            tokens: (B, T, C) projected last-encoder tokens.
            obj_mask: (B, N) bool, True = padded object; None = all valid.
            token_mask: (B, T) bool, True = padded token; None = all valid.

        Returns:
            objects (B, N, C) (zeros at padded rows) and tokens (B, T, C);
            an image with no valid object gets its input tokens back.
        """
        b, n, _ = objects.shape
        if obj_mask is None:
            obj_mask = objects.new_zeros((b, n), dtype=torch.bool)
        if token_mask is None:
            token_mask = tokens.new_zeros(tokens.shape[:2], dtype=torch.bool)
        if n == 0:
            # one padded slot keeps a single code path (no zero-length
            # attention kernels) and every parameter in the graph for DDP
            objects = objects.new_zeros((b, 1, objects.shape[-1]))
            obj_mask = obj_mask.new_ones((b, 1))
        objects = objects.masked_fill(obj_mask[..., None], 0.0)
        safe_obj_mask, has_objects = _attendable(obj_mask)
        safe_token_mask, _ = _attendable(token_mask)
        for block in self.blocks:
            objects, tokens = block(objects, tokens, safe_obj_mask, safe_token_mask, has_objects)
        objects = objects.masked_fill(obj_mask[..., None], 0.0)
        return objects[:, :n], tokens


@MODELS.register_module()
class EmbeddingHead(nn.Module):
    """MLP with ReLU between its layers; its outputs are compared by cosine.

    MutDet uses ``256 -> 256 -> 256`` on decoder queries and
    ``256 -> 1024 -> 256`` on encoder tokens. The output is not normalised here:
    its users compare directions only (the alignment loss and the enhanced
    pass's similarity normalise), as MutDet's heads do.

    Args:
        in_channels, hidden_channels, out_channels: MLP widths.
        num_layers: linear layers of the MLP.
    """

    def __init__(self, in_channels: int = 256, hidden_channels: int = 256,
                 out_channels: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.mlp = MLP(in_channels, hidden_channels, out_channels, num_layers)

    def forward(self, x: Tensor) -> Tensor:
        """(..., in_channels) -> (..., out_channels)."""
        return self.mlp(x)
