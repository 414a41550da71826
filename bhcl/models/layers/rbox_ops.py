"""Small torch helpers on rotated boxes ``(cx, cy, w, h, t)``, angle version le90."""
import math

import torch
from torch import Tensor

from bhcl.structures.geometry import regularize_le90  # noqa: F401  (the one le90 rule)


def norm_angle_le90(t: Tensor) -> Tensor:
    """Wrap angles to ``[-pi/2, pi/2)``."""
    return torch.remainder(t + math.pi / 2, math.pi) - math.pi / 2


def refine_boxes(boxes: Tensor, deltas: Tensor, max_log_ratio: float = 4.0) -> Tensor:
    """Apply deltas ``(dx, dy, dw, dh, dt)`` to (..., 5) boxes; returns le90 boxes.

    ``dx, dy`` move the centre along the box's own axes in units of ``w, h``;
    ``dw, dh`` are log-ratios (clamped); ``dt`` is added to the angle.
    """
    cx, cy, w, h, t = boxes.unbind(-1)
    dx, dy, dw, dh, dt = deltas.unbind(-1)
    cos, sin = torch.cos(t), torch.sin(t)
    ox, oy = dx * w, dy * h
    new = torch.stack([
        cx + ox * cos - oy * sin, cy + ox * sin + oy * cos,
        w * torch.exp(dw.clamp(-max_log_ratio, max_log_ratio)),
        h * torch.exp(dh.clamp(-max_log_ratio, max_log_ratio)), t + dt
    ], dim=-1)
    return regularize_le90(new)


def box_gaussians(boxes: Tensor):
    """(..., 5) boxes -> means (..., 2) and covariances (..., 2, 2) of their Gaussians."""
    w, h, t = boxes[..., 2], boxes[..., 3], boxes[..., 4]
    cos, sin = torch.cos(t), torch.sin(t)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
    diag = torch.diag_embed(torch.stack([w, h], dim=-1).pow(2) / 4)
    return boxes[..., :2], rot @ diag @ rot.transpose(-1, -2)


def gaussian_wasserstein_distance(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """Pairwise 2-Wasserstein distance between the Gaussians of two box sets.

    Args:
        boxes1: (B, N, 5), boxes2: (B, M, 5).
    Returns:
        (B, N, M) distances (same units as the boxes).
    """
    mu1, s1 = box_gaussians(boxes1)
    mu2, s2 = box_gaussians(boxes2)
    centre = torch.cdist(mu1, mu2).pow(2)
    s1, s2 = s1[:, :, None], s2[:, None]
    # for 2x2 SPD matrices: Tr((S1^1/2 S2 S1^1/2)^1/2) = sqrt(Tr(S1 S2) + 2 sqrt(det(S1 S2)))
    prod = s1 @ s2
    tr_prod = prod.diagonal(dim1=-2, dim2=-1).sum(-1)
    det = (torch.linalg.det(s1) * torch.linalg.det(s2)).clamp(min=0)
    cross = (tr_prod + 2 * det.sqrt()).clamp(min=0).sqrt()
    trace = s1.diagonal(dim1=-2, dim2=-1).sum(-1) + s2.diagonal(dim1=-2, dim2=-1).sum(-1)
    return (centre + trace - 2 * cross).clamp(min=0).sqrt()


def gaussian_wasserstein_similarity(boxes: Tensor, eps: float = 1e-6) -> Tensor:
    """(B, N, 5) boxes -> (B, N, N) scale-invariant similarity in (0, 1].

    ``1 / (1 + W2_ij / s_ij)`` with ``s_ij`` the mean of ``sqrt(w h)`` of the two boxes.
    """
    dist = gaussian_wasserstein_distance(boxes, boxes)
    scale = (boxes[..., 2] * boxes[..., 3]).clamp(min=eps).sqrt()
    scale = (scale[:, :, None] + scale[:, None]) / 2
    return 1 / (1 + dist / scale.clamp(min=eps))


def box_position_features(boxes: Tensor, img_size: Tensor) -> Tensor:
    """(B, N, 5) boxes, (B, 2) image ``(w, h)`` -> (B, N, 6) scale-free box descriptors."""
    size = img_size[:, None, :].to(boxes)
    xy = boxes[..., :2] / size
    wh = torch.log(boxes[..., 2:4].clamp(min=1e-3) / size)
    t = boxes[..., 4:5] * 2  # le90 angles differ by pi for the same box: use 2t
    return torch.cat([xy, wh, torch.cos(t), torch.sin(t)], dim=-1)
