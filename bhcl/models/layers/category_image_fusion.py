"""CQ-DINO's encoder fusion of image tokens and selected category queries.

CQ-DINO runs one of these before each deformable encoder layer (the
bidirectional attention block of GLIP / Grounding DINO, with category
queries in place of text tokens). With image tokens ``v`` (B, N, Cv) and
category tokens ``c`` (B, S, Cc), after LayerNorm, per head:

    A   = (W_q v)(W_k c)^T / sqrt(d)                        (B, H, N, S)
    v' = LN(v) + gamma_v * W_ov softmax_S(A)   (W_vc c)      image <- categories
    c' = LN(c) + gamma_c * W_oc softmax_N(A^T) (W_vv v)      categories <- image

``A`` is clamped to +-50000 and the category->image logits have their row
maximum subtracted before the softmax, as in the authors' code. Padded image
tokens are masked out of the category->image softmax (as theirs). Padded
categories are masked out of the image->category softmax; the authors' block
means to do so but its mask is a no-op (it fills a bool mask with -9e15, which
turns it all True, then adds it): identical results without padding, which
their top-K (always full) never produces.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn

CLAMP = 50000.0


@MODELS.register_module()
class CategoryImageFusionLayer(nn.Module):
    """Bidirectional attention between image tokens and category queries.

    Args:
        image_dims: channels of the image tokens (256 in CQ-DINO).
        category_dims: channels of the category queries (256).
        embed_dims: width of the attention (1024).
        num_heads: heads (4).
        dropout: attention dropout (0.1).
        init_values: initial layer scale ``gamma`` (1e-4).
    """

    def __init__(self, image_dims: int = 256, category_dims: int = 256,
                 embed_dims: int = 1024, num_heads: int = 4, dropout: float = 0.1,
                 init_values: float = 1e-4) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by '
                             f'num_heads ({num_heads})')
        self.num_heads = num_heads
        self.head_dims = embed_dims // num_heads
        self.dropout = dropout
        self.norm_image = nn.LayerNorm(image_dims)
        self.norm_category = nn.LayerNorm(category_dims)
        self.image_query = nn.Linear(image_dims, embed_dims)
        self.category_key = nn.Linear(category_dims, embed_dims)
        self.image_value = nn.Linear(image_dims, embed_dims)
        self.category_value = nn.Linear(category_dims, embed_dims)
        self.image_out = nn.Linear(embed_dims, image_dims)
        self.category_out = nn.Linear(embed_dims, category_dims)
        self.gamma_image = nn.Parameter(torch.full((image_dims, ), float(init_values)))
        self.gamma_category = nn.Parameter(torch.full((category_dims, ), float(init_values)))
        self.init_weights()

    def init_weights(self) -> None:
        for layer in (self.image_query, self.category_key, self.image_value,
                      self.category_value, self.image_out, self.category_out):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def _heads(self, x: Tensor) -> Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dims).transpose(1, 2)

    def forward(self, image: Tensor, categories: Tensor,
                image_padding: Optional[Tensor] = None,
                category_valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Image tokens (B, N, Cv), category queries (B, S, Cc), ``image_padding``
        (B, N) bool True on padding, ``category_valid`` (B, S) bool False on
        padding -> fused (image, categories), same shapes."""
        b, n, _ = image.shape
        image, categories = self.norm_image(image), self.norm_category(categories)
        q = self._heads(self.image_query(image)) * self.head_dims ** -0.5
        k = self._heads(self.category_key(categories))
        logits = (q @ k.transpose(-1, -2)).clamp(-CLAMP, CLAMP)          # (B, H, N, S)
        neg = torch.finfo(logits.dtype).min
        to_image = logits.transpose(-1, -2)
        to_image = (to_image - to_image.max(-1, keepdim=True).values).clamp(-CLAMP, CLAMP)
        if image_padding is not None:
            to_image = to_image.masked_fill(image_padding[:, None, None, :], neg)
        if category_valid is not None:
            logits = logits.masked_fill(~category_valid[:, None, None, :], neg)
        attn_cat, attn_img = logits.softmax(-1), to_image.softmax(-1)
        # an image without any valid category (or all padding) gets no update, not a mean
        if category_valid is not None:
            attn_cat = attn_cat * category_valid[:, None, None, :].to(attn_cat.dtype)
        if image_padding is not None:
            attn_img = attn_img * ~image_padding[:, None, None, :]
        drop = self.dropout if self.training else 0.0
        attn_cat = F.dropout(attn_cat, drop, self.training)
        attn_img = F.dropout(attn_img, drop, self.training)
        out_image = (attn_cat @ self._heads(self.category_value(categories)))
        out_cat = (attn_img @ self._heads(self.image_value(image)))
        out_image = self.image_out(out_image.transpose(1, 2).reshape(b, n, -1))
        out_cat = self.category_out(out_cat.transpose(1, 2).reshape(b, categories.shape[1], -1))
        return image + self.gamma_image * out_image, categories + self.gamma_category * out_cat
