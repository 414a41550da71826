"""Differentiable rotated-box IoU in plain PyTorch.

Boxes are ``(cx, cy, w, h, t)`` with ``t`` in radians, image coordinates
(y down) and a positive ``t`` rotating clockwise on screen, as mmcv's
``box_iou_rotated`` with its default ``clockwise=True``. The result does not
depend on the angle version (``le90``, ``oc``, ...): only the geometry counts.

The intersection of two convex quadrilaterals is convex and its vertices are
among 24 candidates: the corners of each box inside the other and the 16
edge-edge crossings. All candidates lie on the boundary of the intersection,
so sorting the valid ones by angle around their mean gives the polygon, and
the shoelace formula its area. Masks and the sort are computed without
gradient; the area is a polynomial of the gathered points, so gradients stay
finite for coincident, nested, touching, collinear and zero-size boxes.

mmcv's own differentiable version needs a vertex-sort kernel that exists only
for CUDA; this module is the portable fallback (no mm* import).
"""
from __future__ import annotations

import torch
from torch import Tensor

from bhcl.structures.box_coding import rbox_corners


def _tolerance(dtype: torch.dtype) -> float:
    """Relative tolerance of the inside / on-segment tests for ``dtype``."""
    return 8 * torch.finfo(dtype).eps


def _inside(points: Tensor, centre: Tensor, wht: Tensor, tol: Tensor) -> Tensor:
    """(P, K, 2) points -> (P, K) bool, inside the box or within ``tol`` of it."""
    d = points - centre[:, None]
    cos, sin = torch.cos(wht[:, 2:3]), torch.sin(wht[:, 2:3])
    along_w = (d[..., 0] * cos + d[..., 1] * sin).abs()
    along_h = (d[..., 1] * cos - d[..., 0] * sin).abs()
    return ((along_w <= 0.5 * wht[:, :1].abs() + tol[:, None])
            & (along_h <= 0.5 * wht[:, 1:2].abs() + tol[:, None]))


def _edge_crossings(corners1: Tensor, corners2: Tensor, rtol: float) -> tuple[Tensor, Tensor]:
    """Crossings of every edge of box 1 with every edge of box 2.

    Returns (P, 16, 2) points and a (P, 16) mask of crossings that lie on both
    segments (up to ``rtol`` of the segment length). Parallel edges are
    masked: where they overlap, the corner tests supply the vertices.
    """
    p, q = corners1[:, :, None], corners2[:, None]
    dp = corners1.roll(-1, dims=1)[:, :, None] - p
    dq = corners2.roll(-1, dims=1)[:, None] - q
    r = q - p

    def cross(a: Tensor, b: Tensor) -> Tensor:
        return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]

    den = cross(dp, dq)
    with torch.no_grad():
        len_p = dp.detach().norm(dim=-1)
        len_q = dq.detach().norm(dim=-1)
        crossing = den.detach().abs() > rtol * len_p * len_q
    # Unit denominator where masked: keeps value and gradient finite.
    den = torch.where(crossing, den, torch.ones_like(den))
    t = cross(r, dq) / den
    u = cross(r, dp) / den
    with torch.no_grad():
        t_, u_ = t.detach(), u.detach()
        valid = (crossing & (t_ >= -rtol) & (t_ <= 1 + rtol)
                 & (u_ >= -rtol) & (u_ <= 1 + rtol))
    points = p + t[..., None] * dp
    return points.flatten(1, 2), valid.flatten(1, 2)


def _polygon_area(points: Tensor, valid: Tensor) -> Tensor:
    """Area of the convex polygon whose vertices are ``points[valid]``.

    (P, K, 2), (P, K) -> (P,). Points are sorted by angle around their mean;
    invalid ones go last and are replaced by the first sorted point, so they
    add zero-area terms to the shoelace sum.
    """
    with torch.no_grad():
        pts = points.detach()
        count = valid.sum(-1, keepdim=True).clamp(min=1)
        centre = (pts * valid[..., None]).sum(-2) / count
        d = pts - centre[:, None]
        angle = torch.atan2(d[..., 1], d[..., 0]).masked_fill(~valid, 4.0)
        order = angle.argsort(dim=-1)
        valid_sorted = valid.gather(-1, order)
    # Shoelace is translation invariant; centring only improves rounding.
    ordered = (points - centre[:, None]).gather(-2, order[..., None].expand(-1, -1, 2))
    ordered = torch.where(valid_sorted[..., None], ordered, ordered[:, :1])
    x, y = ordered.unbind(-1)
    doubled = (x * y.roll(-1, dims=-1) - x.roll(-1, dims=-1) * y).sum(-1)
    return 0.5 * doubled.abs()


def _intersection_area(boxes1: Tensor, boxes2: Tensor) -> Tensor:
    """(P, 5), (P, 5) -> (P,) intersection area of each pair of rows."""
    # Work in a frame centred on box 1: large image coordinates cancel exactly
    # instead of costing float32 precision in every corner.
    offset = boxes2[:, :2] - boxes1[:, :2]
    corners1 = rbox_corners(torch.cat([torch.zeros_like(offset), boxes1[:, 2:]], dim=1))
    corners2 = rbox_corners(torch.cat([offset, boxes2[:, 2:]], dim=1))
    rtol = _tolerance(boxes1.dtype)
    with torch.no_grad():
        scale = torch.cat([boxes1[:, 2:4], boxes2[:, 2:4]], dim=1).detach().abs().amax(1)
        tol = rtol * scale
        in2 = _inside(corners1.detach(), offset.detach(), boxes2[:, 2:].detach(), tol)
        in1 = _inside(corners2.detach(), torch.zeros_like(offset), boxes1[:, 2:].detach(), tol)
    crossings, crossing_valid = _edge_crossings(corners1, corners2, rtol)
    points = torch.cat([corners1, corners2, crossings], dim=1)
    valid = torch.cat([in2, in1, crossing_valid], dim=1)
    return _polygon_area(points, valid)


def _ratio(inter: Tensor, area1: Tensor, area2: Tensor, mode: str, eps: float) -> Tensor:
    # Rounding can leave a sliver of area between (near-)zero-size boxes; the
    # intersection never exceeds the smaller box, which also bounds that sliver.
    inter = torch.minimum(inter, torch.minimum(area1, area2))
    denominator = area1 if mode == 'iof' else area1 + area2 - inter
    return inter / denominator.clamp(min=eps)


def rotated_box_iou(boxes1: Tensor,
                    boxes2: Tensor,
                    aligned: bool = False,
                    mode: str = 'iou',
                    eps: float = 1e-6,
                    chunk_size: int = 1 << 14) -> Tensor:
    """Differentiable IoU (or IoF) of rotated boxes.

    Args:
        boxes1: (N, 5) boxes ``(cx, cy, w, h, t)``, ``t`` in radians,
            clockwise-positive in image coordinates (mmcv's convention).
        boxes2: (M, 5) boxes, same layout (M == N when ``aligned``).
        aligned: pair row i with row i and return (N,) instead of (N, M).
        mode: ``'iou'`` (intersection over union) or ``'iof'``
            (intersection over the area of ``boxes1``).
        eps: lower bound of the denominator (empty or zero-size boxes give 0).
        chunk_size: pairs evaluated at once in the pairwise case; bounds the
            peak memory of large N x M matrices.

    Returns:
        (N, M), or (N,) when ``aligned``, in the dtype of the inputs. Half
        precision inputs are computed in float32. Negative sizes count as
        their absolute value.
    """
    if mode not in ('iou', 'iof'):
        raise ValueError(f"mode must be 'iou' or 'iof', got {mode!r}")
    if boxes1.shape[-1] != 5 or boxes2.shape[-1] != 5 or boxes1.dim() != 2 or boxes2.dim() != 2:
        raise ValueError(f'expected (N, 5) and (M, 5) boxes, got {tuple(boxes1.shape)} '
                         f'and {tuple(boxes2.shape)}')
    out_dtype = torch.promote_types(boxes1.dtype, boxes2.dtype)
    work_dtype = out_dtype if out_dtype == torch.float64 else torch.float32
    b1, b2 = boxes1.to(work_dtype), boxes2.to(work_dtype)
    area1 = b1[:, 2].abs() * b1[:, 3].abs()
    area2 = b2[:, 2].abs() * b2[:, 3].abs()
    if aligned:
        if len(b1) != len(b2):
            raise ValueError(f'aligned needs as many boxes1 as boxes2, got {len(b1)} and {len(b2)}')
        if len(b1) == 0:
            # Empty but still in the graph, so a loss over no boxes backprops.
            return (b1[:, 0] * b2[:, 0] * 0).to(out_dtype)
        inter = _intersection_area(b1, b2)
        return _ratio(inter, area1, area2, mode, eps).to(out_dtype)
    n, m = len(b1), len(b2)
    if n == 0 or m == 0:
        return (b1[:, :1] * b2[:, 0] * 0).to(out_dtype)
    rows = max(1, chunk_size // m)
    chunks = []
    for start in range(0, n, rows):
        part = b1[start:start + rows]
        inter = _intersection_area(
            part[:, None].expand(-1, m, -1).reshape(-1, 5),
            b2[None].expand(len(part), -1, -1).reshape(-1, 5)).view(len(part), m)
        chunks.append(_ratio(inter, area1[start:start + rows, None], area2[None], mode, eps))
    return torch.cat(chunks).to(out_dtype)
