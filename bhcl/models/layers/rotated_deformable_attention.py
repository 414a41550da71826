"""Multi-scale deformable attention that samples inside rotated reference boxes (RHINO).

Deformable DETR's box-reference mode places a query's sampling points at
``ref_xy + offset / num_points * ref_wh / 2``. For a rotated box two rules exist
(``offset_frame``):

- ``'rhino'`` (default, RHINO's published rule): the half-size vector is turned
  by the box angle, ``v = R(t) (w/2, h/2)``, and each offset is scaled by it
  element-wise: ``ref_xy + offset / num_points * v`` (x offset times ``v_x``, y
  offset times ``v_y``), in normalised units. This is not a rotation of the
  offsets: the reachable region is an axis-aligned rectangle of half sides
  ``|v|``.
- ``'box'`` (a bhcl option): the offsets live in the box's own frame and turn
  with it: ``(ox * w/2, oy * h/2)`` in pixels, rotated by ``t``, then normalised
  again (x by the input width W, y by its height H), so that a query samples the
  rotated region it stands for, also on non-square inputs.

Angle convention (the one of ``bhcl.structures.box_coding.rbox_corners`` and
``rbox_ops.box_gaussians``): image coordinates with y pointing down, a box-frame
offset ``(dx, dy)`` lands at ``(cx + dx cos t - dy sin t, cy + dx sin t + dy cos t)``,
so a positive ``t`` turns the box clockwise on screen, as mmcv's
``box_iou_rotated`` and mmrotate's ``RotatedBoxes`` expect.
"""
from typing import Optional, Union

import torch
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttention,
                                              MultiScaleDeformableAttnFunction,
                                              multi_scale_deformable_attn_pytorch)
from mmrotate.registry import MODELS
from torch import Tensor

from bhcl.ops.kernel_dispatch import use_mmcv_kernel

AspectRatio = Optional[Union[float, Tensor]]
OFFSET_FRAMES = ('rhino', 'box')


def rhino_box_locations(boxes: Tensor, offsets: Tensor) -> Tensor:
    """RHINO's sampling locations: ``(cx, cy) + offsets * R(t) (w/2, h/2)`` element-wise.

    Args:
        boxes: (B, Nq, L, 5) reference boxes ``(cx, cy, w, h, t)``, normalised,
            ``t`` in radians.
        offsets: (B, Nq, heads, L, P, 2), already divided by the number of points.
    Returns:
        (B, Nq, heads, L, P, 2) locations ``(x, y)``.
    """
    cos, sin = torch.cos(boxes[..., 4:]), torch.sin(boxes[..., 4:])
    rot = torch.cat([cos, -sin, sin, cos], dim=-1).unflatten(-1, (2, 2))  # (B, Nq, L, 2, 2)
    half = (rot @ (boxes[..., 2:4] * 0.5)[..., None])[..., 0]  # (B, Nq, L, 2)
    return boxes[:, :, None, :, None, :2] + offsets * half[:, :, None, :, None, :]


def rotated_box_locations(boxes: Tensor, offsets: Tensor,
                          aspect_ratio: AspectRatio = None) -> Tensor:
    """Sampling locations of box-frame offsets, in normalised image coordinates.

    Args:
        boxes: (B, Nq, L, 5) reference boxes ``(cx, cy, w, h, t)``: ``cx, w``
            divided by the input width W, ``cy, h`` by its height H, ``t`` in
            radians (clockwise on screen for ``t > 0``, see the module doc).
        offsets: (B, Nq, heads, L, P, 2) offsets in units of the box's half
            sides, along the box's own axes (``(1, 1)`` is the corner
            ``(w/2, h/2)`` of the unrotated box).
        aspect_ratio: H / W of the input in pixels, a float or a (B,) tensor;
            None means 1.
    Returns:
        (B, Nq, heads, L, P, 2) locations ``(x, y)``, 0..1 spanning the input.
    """
    box = boxes[:, :, None, :, None, :]
    ratio = 1.0 if aspect_ratio is None else aspect_ratio
    if isinstance(ratio, Tensor):
        ratio = ratio.to(boxes).reshape(-1, 1, 1, 1, 1)
    # both local components in units of W, so that the rotation is in pixel space
    local_x = offsets[..., 0] * box[..., 2] * 0.5
    local_y = offsets[..., 1] * box[..., 3] * 0.5 * ratio
    cos, sin = torch.cos(box[..., 4]), torch.sin(box[..., 4])
    x = box[..., 0] + local_x * cos - local_y * sin
    y = box[..., 1] + (local_x * sin + local_y * cos) / ratio
    return torch.stack([x, y], dim=-1)


def deformable_sample(value: Tensor, spatial_shapes: Tensor, level_start_index: Optional[Tensor],
                      locations: Tensor, weights: Tensor, im2col_step: int = 64) -> Tensor:
    """Weighted bilinear samples of a flattened pyramid, (B, Nq, heads * C/heads).

    Args:
        value: (B, sum(H_l W_l), heads, C/heads).
        spatial_shapes: (L, 2) long ``(H_l, W_l)``.
        level_start_index: (L,) long, first token of each level (CUDA only;
            derived from ``spatial_shapes`` when None).
        locations: (B, Nq, heads, L, P, 2) normalised ``(x, y)``.
        weights: (B, Nq, heads, L, P) attention weights.
    mmcv's CUDA kernel where :func:`bhcl.ops.kernel_dispatch.use_mmcv_kernel` says so
    (CUDA, not bfloat16, the kernel built), its pure PyTorch ``grid_sample`` version
    otherwise; both read zeros outside the map.
    """
    if use_mmcv_kernel('multi_scale_deform_attn', value):
        if level_start_index is None:
            sizes = spatial_shapes.prod(1)
            level_start_index = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
        return MultiScaleDeformableAttnFunction.apply(value, spatial_shapes, level_start_index,
                                                      locations, weights, im2col_step)
    return multi_scale_deformable_attn_pytorch(value, spatial_shapes, locations, weights)


@MODELS.register_module()
class RotatedMultiScaleDeformableAttention(MultiScaleDeformableAttention):
    """mmcv's ``MultiScaleDeformableAttention`` with rotated box references (RHINO's decoder).

    Same parameters, initialisation (grid init of the offsets, zero attention
    logits) and state dict as the mmcv module; only the sampling locations
    differ (``rotated_box_locations``), so with ``t = 0`` it computes what mmcv
    does with the 4-d reference ``(cx, cy, w, h)``. Being a subclass, the
    ``isinstance(m, MultiScaleDeformableAttention)`` re-initialisation in
    mmdet's deformable DETR / DINO ``init_weights`` also applies to it.

    Args:
        embed_dims: C, divisible by ``num_heads``.
        num_heads: attention heads.
        num_levels: pyramid levels L.
        num_points: sampling points P per head and level.
        im2col_step: image-to-column step of the CUDA kernel.
        dropout: dropout on the output before the residual.
        batch_first: query / value are (B, N, C) rather than (N, B, C).
        value_proj_ratio: width of the value projection relative to C.
        offset_frame: ``'rhino'`` (RHINO's element-wise scaling by the turned
            half-size vector) or ``'box'`` (offsets turned with the box); see
            the module docstring.
        init_cfg: mmengine initialisation config.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 4,
                 num_points: int = 4,
                 im2col_step: int = 64,
                 dropout: float = 0.1,
                 batch_first: bool = True,
                 value_proj_ratio: float = 1.0,
                 offset_frame: str = 'rhino',
                 init_cfg: Optional[dict] = None):
        if offset_frame not in OFFSET_FRAMES:
            raise ValueError(f'offset_frame must be one of {OFFSET_FRAMES}, got {offset_frame!r}')
        self.offset_frame = offset_frame
        super().__init__(embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels,
                         num_points=num_points, im2col_step=im2col_step, dropout=dropout,
                         batch_first=batch_first, init_cfg=init_cfg,
                         value_proj_ratio=value_proj_ratio)

    def sampling_locations(self, query: Tensor, reference_points: Tensor,
                           aspect_ratio: AspectRatio = None) -> Tensor:
        """(B, Nq, heads, L, P, 2) normalised sampling locations ``(x, y)``.

        Args:
            query: (B, Nq, C) batch first, positional encoding already added.
            reference_points: (B, Nq, L, 5) or (B, Nq, 5) rotated boxes
                ``(cx, cy, w, h, t)``, normalised as in ``rotated_box_locations``.
            aspect_ratio: H / W of the input in pixels, float or (B,); None means 1
                (``offset_frame='box'`` only).
        """
        if reference_points.shape[-1] != 5 or reference_points.dim() not in (3, 4):
            raise ValueError('reference_points must be (B, Nq, 5) or (B, Nq, L, 5) rotated boxes, '
                             f'got shape {tuple(reference_points.shape)}')
        if reference_points.dim() == 3:
            reference_points = reference_points[:, :, None]
        batch, num_query, _ = query.shape
        offsets = self.sampling_offsets(query).view(batch, num_query, self.num_heads,
                                                    self.num_levels, self.num_points, 2)
        if self.offset_frame == 'rhino':
            return rhino_box_locations(reference_points, offsets / self.num_points)
        return rotated_box_locations(reference_points, offsets / self.num_points, aspect_ratio)

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                aspect_ratio: AspectRatio = None,
                **kwargs) -> Tensor:
        """Cross-attention from queries to a flattened pyramid, plus the residual.

        Args:
            query: (B, Nq, C) (or (Nq, B, C) without ``batch_first``).
            key: unused (the keys are the sampled values), kept for the mmcv API.
            value: (B, Nv, C) flattened pyramid, ``Nv = sum(H_l W_l)``; None: ``query``.
            identity: residual, shaped like ``query``; None: ``query`` (before ``query_pos``).
            query_pos: added to ``query`` before predicting offsets and weights.
            key_padding_mask: (B, Nv) bool, True where ``value`` is padding (read as 0).
            reference_points: (B, Nq, L, 5) or (B, Nq, 5) rotated boxes, see
                ``sampling_locations``.
            spatial_shapes: (L, 2) long ``(H_l, W_l)``.
            level_start_index: (L,) long, first token of each level.
            aspect_ratio: H / W of the (padded) input in pixels, float or (B,).
        Returns:
            Shaped like ``query``.
        """
        value = query if value is None else value
        identity = query if identity is None else identity
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        batch, num_query, _ = query.shape
        num_value = value.shape[1]
        if int(spatial_shapes.prod(1).sum()) != num_value:
            raise ValueError(f'spatial_shapes {spatial_shapes.tolist()} do not add up to '
                             f'{num_value} value tokens')

        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(batch, num_value, self.num_heads, -1)
        weights = self.attention_weights(query).view(
            batch, num_query, self.num_heads, self.num_levels * self.num_points).softmax(-1)
        weights = weights.view(batch, num_query, self.num_heads, self.num_levels, self.num_points)
        locations = self.sampling_locations(query, reference_points, aspect_ratio)
        output = deformable_sample(value, spatial_shapes, level_start_index, locations, weights,
                                   self.im2col_step)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.transpose(0, 1)
        return self.dropout(output) + identity
