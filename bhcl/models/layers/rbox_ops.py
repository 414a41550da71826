"""Box Gaussians for OrientedFormer's query self-attention: the positional
encoding and the pairwise similarity bias of boxes ``(cx, cy, w, h, t)``
(box coding itself lives in :mod:`bhcl.structures.box_coding`).
"""
import torch
from torch import Tensor


def box_gaussians(boxes: Tensor):
    """(..., 5) boxes -> means (..., 2) and covariances (..., 2, 2) ``R diag(w/2, h/2)^2 R^T``."""
    wh = boxes[..., 2:4].clamp(min=1e-7, max=1e7)
    t = boxes[..., 4]
    cos, sin = torch.cos(t), torch.sin(t)
    rot = torch.stack([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))
    half_sq = torch.diag_embed((0.5 * wh).square())
    return boxes[..., :2], rot @ half_sq @ rot.transpose(-1, -2)


def gaussian_position_encoding(boxes: Tensor, num_feats: int,
                               temperature: float = 10000.) -> Tensor:
    """Sinusoidal encoding of each box's Gaussian, (..., 5) -> (..., 4 * num_feats).

    For each axis a of the centre ``mu_a`` and variance ``var_a`` and frequency
    ``d_k = temperature^(2 floor(k/2) / num_feats)``:
    ``exp(-var_a / (2 d_k^2)) * (sin(mu_a / d_k), cos(mu_a / d_k))``, interleaved;
    the x features come first. The damping is the characteristic function of the
    Gaussian: small boxes keep their high frequencies, large ones lose them.
    """
    mean, cov = box_gaussians(boxes)
    var = torch.stack([cov[..., 0, 0], cov[..., 1, 1]], dim=-1)
    k = torch.arange(num_feats, dtype=torch.float32, device=boxes.device)
    freq = temperature**(2 * torch.div(k, 2, rounding_mode='floor') / num_feats)
    phase = mean[..., None] / freq
    damp = torch.exp(-0.5 * var[..., None] / freq**2)
    enc = torch.stack([damp * torch.sin(phase), damp * torch.cos(phase)], dim=-1)
    return enc.flatten(-3)


def gaussian_similarity(boxes: Tensor, eps: float = 1e-7) -> Tensor:
    """(B, N, 5) boxes -> (B, N, N) normalised Gaussian-Wasserstein similarity.

    ``1 / (1 + W2_ij / s_ij)`` where ``W2`` is the 2-Wasserstein distance of the
    box Gaussians and ``s_ij = 2 (det S_i det S_j)^(1/8)`` (twice the geometric
    mean of the four half-axes, i.e. of ``sqrt(w h / 4)``). Every square root
    is clamped below at ``eps``, as in OrientedFormer.
    """
    mu, cov = box_gaussians(boxes)
    centre = (mu[:, :, None] - mu[:, None]).square().sum(-1)
    trace = cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    prod = torch.einsum('bnij,bmjk->bnmik', cov, cov)
    tr_prod = prod[..., 0, 0] + prod[..., 1, 1]
    det = torch.det(cov)
    det_sqrt = (det[:, :, None] * det[:, None]).clamp(eps).sqrt()
    shape = trace[:, :, None] + trace[:, None] - 2 * (tr_prod + 2 * det_sqrt).clamp(eps).sqrt()
    dist = (centre + shape).clamp(eps).sqrt()
    scale = 2 * det_sqrt.clamp(eps).sqrt().clamp(eps).sqrt().clamp(eps)
    return 1 / (1 + dist / scale)
