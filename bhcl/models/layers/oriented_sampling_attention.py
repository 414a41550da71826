"""Cross-attention that samples the feature pyramid around each rotated query box."""
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn


@MODELS.register_module()
class OrientedSamplingAttention(nn.Module):
    """Oriented sampling cross-attention (pure PyTorch, ``grid_sample``).

    Each query predicts, per head, ``num_points`` offsets in its box's own
    frame (units of ``w`` and ``h``, rotated by ``t``), a softmax over the
    pyramid levels and a softmax over its points; the sampled values are
    mixed and projected back to ``embed_dims``.

    Args:
        embed_dims: query and feature channels C.
        num_heads: heads; C must be divisible by it.
        num_points: sampling points per head.
        strides: stride of each pyramid level, finest first.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_points: int = 16,
                 strides: Sequence[int] = (4, 8, 16, 32, 64)):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} not divisible by num_heads {num_heads}')
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        self.strides = tuple(strides)
        levels = len(self.strides)
        self.offsets = nn.Linear(embed_dims, num_heads * num_points * 2)
        self.level_logits = nn.Linear(embed_dims, num_heads * levels)
        self.point_logits = nn.Linear(embed_dims, num_heads * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    def init_weights(self) -> None:
        # start from points spread over the box (a square grid per head, shifted per head)
        nn.init.zeros_(self.offsets.weight)
        side = math.ceil(math.sqrt(self.num_points))
        lin = (torch.arange(side, dtype=torch.float32) + 0.5) / side - 0.5
        grid = torch.stack(torch.meshgrid(lin, lin, indexing='xy'), -1).reshape(-1, 2)
        grid = grid[:self.num_points]
        shift = (torch.arange(self.num_heads, dtype=torch.float32) / self.num_heads - 0.5) / side
        bias = grid[None] + shift[:, None, None]
        with torch.no_grad():
            self.offsets.bias.copy_(bias.reshape(-1))
        for layer in (self.level_logits, self.point_logits):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        for layer in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def sampling_points(self, query: Tensor, boxes: Tensor) -> Tensor:
        """(B, N, C), (B, N, 5) -> (B, N, heads, points, 2) image coordinates."""
        b, n, _ = query.shape
        off = self.offsets(query).view(b, n, self.num_heads, self.num_points, 2)
        box = boxes[:, :, None, None, :]
        ox, oy = off[..., 0] * box[..., 2], off[..., 1] * box[..., 3]
        cos, sin = torch.cos(box[..., 4]), torch.sin(box[..., 4])
        return torch.stack([box[..., 0] + ox * cos - oy * sin,
                            box[..., 1] + ox * sin + oy * cos], dim=-1)

    def forward(self, query: Tensor, boxes: Tensor, feats: Sequence[Tensor]) -> Tensor:
        """Sample ``feats`` around ``boxes``.

        Args:
            query: (B, N, C) content.
            boxes: (B, N, 5) ``(cx, cy, w, h, t)`` in input-image pixels.
            feats: one (B, C, H_l, W_l) map per stride.
        Returns:
            (B, N, C).
        """
        if len(feats) != len(self.strides):
            raise ValueError(f'expected {len(self.strides)} levels, got {len(feats)}')
        b, n, c = query.shape
        heads, pts, hc = self.num_heads, self.num_points, c // self.num_heads
        points = self.sampling_points(query, boxes)
        # (B * heads, N, points, 2)
        points = points.permute(0, 2, 1, 3, 4).reshape(b * heads, n, pts, 2)
        level_w = self.level_logits(query).view(b, n, heads, -1).softmax(-1)
        sampled = 0
        for lvl, (feat, stride) in enumerate(zip(feats, self.strides)):
            h, w = feat.shape[-2:]
            value = self.value_proj(feat.flatten(2).transpose(1, 2))  # (B, HW, C)
            value = value.transpose(1, 2).reshape(b * heads, hc, h, w)
            size = points.new_tensor([w * stride, h * stride])
            grid = points / size * 2 - 1
            out = F.grid_sample(value, grid, mode='bilinear', padding_mode='zeros',
                                align_corners=False)  # (B * heads, hc, N, points)
            weight = level_w[..., lvl].permute(0, 2, 1).reshape(b * heads, 1, n, 1)
            sampled = sampled + out * weight
        point_w = self.point_logits(query).view(b, n, heads, pts).softmax(-1)
        point_w = point_w.permute(0, 2, 1, 3).reshape(b * heads, 1, n, pts)
        out = (sampled * point_w).sum(-1)  # (B * heads, hc, N)
        out = out.view(b, heads * hc, n).transpose(1, 2)
        return self.output_proj(out)
