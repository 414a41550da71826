"""Scale-aware oriented sampling cross-attention (OrientedFormer's decoder attention)."""
from typing import Sequence

import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn


def sampling_points(offsets: Tensor, xyzrt: Tensor) -> Tensor:
    """Sampling points of each query in image pixels and log2 scale.

    Args:
        offsets: (B, N, M, 3) per point ``(dx, dy, dz)``: ``dx, dy`` in units of
            the box's ``w, h`` in its own frame, ``dz`` in log2 scale.
        xyzrt: (B, N, 5) query boxes ``(cx, cy, z, r, t)``.
    Returns:
        (B, N, M, 3) ``(x, y, z)``: pixel position and ``z + dz``.
    """
    z, r, t = xyzrt[..., 2:3], xyzrt[..., 3:4], xyzrt[..., 4:5]
    wh = 2.0**z * 2.0**torch.cat([-0.5 * r, 0.5 * r], dim=-1)
    local = offsets[..., :2] * wh[:, :, None]
    cos, sin = torch.cos(t)[:, :, None], torch.sin(t)[:, :, None]
    x = local[..., 0:1] * cos - local[..., 1:2] * sin
    y = local[..., 0:1] * sin + local[..., 1:2] * cos
    xy = xyzrt[:, :, None, :2] + torch.cat([x, y], dim=-1)
    return torch.cat([xy, z[:, :, None] + offsets[..., 2:3]], dim=-1)


def level_weights(z: Tensor, strides: Sequence[int], tau: float = 2.0) -> Tensor:
    """(...,) log2 sampling scales -> (..., L) weights ``sigmoid(-(z - log2 s_l)^2 / tau)``.

    Not normalised over levels: a point far from every level reads little.
    """
    log_strides = torch.tensor(strides, dtype=z.dtype, device=z.device).log2()
    return torch.sigmoid(-(z[..., None] - log_strides).square() / tau)


@MODELS.register_module()
class OrientedSamplingAttention(nn.Module):
    """Cross-attention that samples the feature pyramid inside each rotated query box.

    Each query predicts, for every head and point, an offset in its box's frame
    and a log2-scale offset; a point reads every pyramid level by bilinear
    sampling, weighted by how close its scale is to the level's stride
    (scale-aware). The head's channels are gated per channel (channel-aware)
    and per point (spatial-aware) from the query, all points of all heads are
    flattened and projected back to C, and the query is added (residual).

    Args:
        embed_dims: C (query and feature channels), divisible by ``num_heads``.
        num_heads: channel groups sampled independently.
        num_points: sampling points per head.
        reduction: bottleneck ratio of the two gates.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 64,
                 num_points: int = 32,
                 reduction: int = 4):
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims {embed_dims} not divisible by num_heads {num_heads}')
        if embed_dims % reduction:
            raise ValueError(f'embed_dims {embed_dims} not divisible by reduction {reduction}')
        self.embed_dims, self.num_heads, self.num_points = embed_dims, num_heads, num_points
        hidden = embed_dims // reduction
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_points * 3)
        self.channel_gate = nn.Sequential(
            nn.Linear(embed_dims, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, embed_dims, bias=False), nn.Sigmoid())
        self.point_gate = nn.Sequential(
            nn.Linear(embed_dims, hidden, bias=False), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_heads * num_points, bias=False), nn.Sigmoid())
        self.out_proj = nn.Linear(embed_dims * num_points, embed_dims)

    def sample(self, feats: Sequence[Tensor], points: Tensor, strides: Sequence[int]) -> Tensor:
        """Scale-weighted bilinear samples, (B, N, H, P, C/H).

        Args:
            feats: L maps (B, C, h_l, w_l).
            points: (B, N, H * P, 3) from :func:`sampling_points`.
        """
        b, n = points.shape[:2]
        g, p = self.num_heads, self.num_points
        weights = level_weights(points[..., 2], strides)              # B, N, G*P, L
        weights = weights.view(b, n, g, p, -1).permute(0, 2, 1, 3, 4).flatten(0, 1)
        xy = points[..., :2].view(b, n, g, p, 2).permute(0, 2, 1, 3, 4).flatten(0, 1)
        out = 0
        for level, (feat, stride) in enumerate(zip(feats, strides)):
            h, w = feat.shape[-2:]
            grid = xy / xy.new_tensor([w * stride, h * stride]) * 2 - 1
            value = feat.reshape(b * g, -1, h, w)
            sampled = F.grid_sample(value, grid, mode='bilinear', padding_mode='zeros',
                                    align_corners=False)             # B*G, C/G, N, P
            out = out + sampled * weights[..., level].unsqueeze(1)
        return out.view(b, g, -1, n, p).permute(0, 3, 1, 4, 2)

    def forward(self, query: Tensor, xyzrt: Tensor, feats: Sequence[Tensor],
                strides: Sequence[int]) -> Tensor:
        """(B, N, C) queries, (B, N, 5) ``xyzrt`` boxes, L maps (B, C, h, w) -> (B, N, C)."""
        b, n, c = query.shape
        g, p = self.num_heads, self.num_points
        offsets = self.sampling_offsets(query).view(b, n, g * p, 3)
        values = self.sample(feats, sampling_points(offsets, xyzrt), strides)
        values = values * self.channel_gate(query).view(b, n, g, 1, c // g)
        values = values * self.point_gate(query).view(b, n, g, p, 1)
        return query + self.out_proj(values.reshape(b, n, -1))
