"""RotatedMultiScaleDeformableAttention: mmcv at t = 0; RHINO's element-wise rule and the
box-frame rotation (``offset_frame='box'``) otherwise."""
import itertools
import math

import pytest
import torch
from mmcv.ops import MultiScaleDeformableAttention
from mmrotate.registry import MODELS
from torch.testing import assert_close

from bhcl.models.layers import RotatedMultiScaleDeformableAttention
from bhcl.structures.geometry import rbox_to_poly

EMBED, HEADS, POINTS = 32, 4, 4
SHAPES = torch.tensor([[8, 8], [4, 4]])


def level_start(shapes):
    sizes = shapes.prod(1)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def make_layer(num_levels=2, seed=0, **kwargs):
    """A layer whose offsets and weights depend on the query (mmcv's init makes them constant)."""
    torch.manual_seed(seed)
    layer = RotatedMultiScaleDeformableAttention(embed_dims=EMBED, num_heads=HEADS,
                                                 num_levels=num_levels, num_points=POINTS,
                                                 dropout=0.0, **kwargs)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return layer


def random_boxes(batch, num_query, num_levels=None, seed=1):
    """(B, Nq[, L], 5) normalised boxes well inside the image, t in [-pi/2, pi/2)."""
    g = torch.Generator().manual_seed(seed)
    shape = (batch, num_query) if num_levels is None else (batch, num_query, num_levels)
    return torch.cat([0.3 + 0.4 * torch.rand(*shape, 2, generator=g),
                      0.05 + 0.3 * torch.rand(*shape, 2, generator=g),
                      (torch.rand(*shape, 1, generator=g) - 0.5) * math.pi], dim=-1)


def random_inputs(batch=2, num_query=5, shapes=SHAPES, seed=2):
    g = torch.Generator().manual_seed(seed)
    num_value = int(shapes.prod(1).sum())
    return (torch.randn(batch, num_query, EMBED, generator=g),
            torch.randn(batch, num_value, EMBED, generator=g))


def rotate_about_centre(points, boxes, theta, aspect_ratio):
    """Rotate normalised (..., 2) points about the box centres by theta in pixel space (W = 1)."""
    ratio = aspect_ratio.reshape(-1, *[1] * (points.dim() - 2))
    centre = boxes[:, :, None, None, None, :2]
    dx = points[..., 0] - centre[..., 0]
    dy = (points[..., 1] - centre[..., 1]) * ratio
    cos, sin = math.cos(theta), math.sin(theta)
    return torch.stack([centre[..., 0] + dx * cos - dy * sin,
                        centre[..., 1] + (dx * sin + dy * cos) / ratio], dim=-1)


def test_equals_mmcv_box_reference_when_unrotated():
    shapes = torch.tensor([[8, 8], [4, 6], [2, 3]])
    layer = make_layer(num_levels=3).eval()
    mmcv_layer = MultiScaleDeformableAttention(embed_dims=EMBED, num_heads=HEADS, num_levels=3,
                                               num_points=POINTS, dropout=0.0, batch_first=True)
    mmcv_layer.load_state_dict(layer.state_dict())
    query, value = random_inputs(shapes=shapes)
    query_pos, identity = torch.randn_like(query), torch.randn_like(query)
    boxes = random_boxes(2, 5, num_levels=3)
    boxes[..., 4] = 0
    common = dict(query=query, value=value, identity=identity, query_pos=query_pos,
                  spatial_shapes=shapes, level_start_index=level_start(shapes))
    expected = mmcv_layer(reference_points=boxes[..., :4], **common)
    assert_close(layer(reference_points=boxes, **common), expected)
    # a single box per query is the same box on every level
    one = boxes[:, :, 0]
    assert_close(layer(reference_points=one, **common),
                 mmcv_layer(reference_points=one[:, :, None, :4].expand(-1, -1, 3, -1), **common))


@pytest.mark.parametrize('aspect_ratio', [torch.tensor([0.5, 2.0]), 0.75])
def test_locations_rotate_about_the_box_centre_in_pixels(aspect_ratio):
    layer = make_layer(offset_frame='box')
    query, _ = random_inputs()
    boxes = random_boxes(2, 5)
    theta = 0.7
    unrotated = boxes.clone()
    unrotated[..., 4] = 0
    rotated = unrotated.clone()
    rotated[..., 4] = theta
    base = layer.sampling_locations(query, unrotated, aspect_ratio)
    ratio = torch.as_tensor(aspect_ratio).expand(2)
    assert base.shape == (2, 5, HEADS, 2, POINTS, 2)
    assert_close(layer.sampling_locations(query, rotated, aspect_ratio),
                 rotate_about_centre(base, boxes, theta, ratio))


def test_box_frame_corners_land_on_bhcl_polygon_corners():
    """Offsets (+-1, +-1) half sides hit the corners that ``rbox_to_poly`` draws: same t sign."""
    layer = make_layer(num_levels=1, offset_frame='box')
    corners = torch.tensor([[-1., -1.], [1., -1.], [1., 1.], [-1., 1.]]) * POINTS
    with torch.no_grad():
        layer.sampling_offsets.weight.zero_()
        layer.sampling_offsets.bias.copy_(corners.repeat(HEADS, 1).flatten())
    width, height = 64., 32.
    pixel_boxes = torch.tensor([[[30., 12., 20., 8., 0.4], [20., 20., 30., 6., -1.2]]])
    boxes = pixel_boxes / torch.tensor([width, height, width, height, 1.])
    query = torch.randn(1, 2, EMBED)
    locations = layer.sampling_locations(query, boxes, height / width)
    pixels = locations * torch.tensor([width, height])
    polys = torch.from_numpy(rbox_to_poly(pixel_boxes[0].numpy())).float().view(2, 1, 1, 4, 2)
    assert_close(pixels[0], polys.expand(2, HEADS, 1, 4, 2), atol=1e-4, rtol=0)


@pytest.mark.parametrize('num_levels', [1, 2])
@pytest.mark.parametrize('turns', [1, -1, 2])
def test_sampling_pattern_turns_with_the_map(num_levels, turns):
    """torch.rot90 by ``turns`` quarter turns (counter-clockwise on screen for turns > 0)
    maps (x, y) -> (y, 1 - x) per turn and turns every box by -pi/2 in bhcl's convention
    (positive t is clockwise on screen); w and h keep their meaning in the box frame."""
    shapes = SHAPES[:num_levels]
    layer = make_layer(num_levels=num_levels, offset_frame='box').double().eval()
    query, value = (x.double() for x in random_inputs(shapes=shapes))
    boxes = random_boxes(2, 5).double()
    maps = value.split(shapes.prod(1).tolist(), dim=1)
    turned_value = torch.cat([
        torch.rot90(m.unflatten(1, (int(h), int(w))), turns, dims=(1, 2)).flatten(1, 2)
        for m, (h, w) in zip(maps, shapes)], dim=1)
    turned_boxes = boxes.clone()
    for _ in range(turns % 4):
        turned_boxes = torch.stack([turned_boxes[..., 1], 1 - turned_boxes[..., 0],
                                    turned_boxes[..., 2], turned_boxes[..., 3],
                                    turned_boxes[..., 4] - math.pi / 2], dim=-1)
    common = dict(query=query, spatial_shapes=shapes, level_start_index=level_start(shapes))
    expected = layer(value=value, reference_points=boxes, **common)
    assert_close(layer(value=turned_value, reference_points=turned_boxes, **common), expected)


def test_rhino_rule_scales_offsets_by_the_turned_half_size():
    """Default (RHINO's rule): location = centre + offset / P * R(t) (w/2, h/2), element-wise,
    written out per point in Python floats; the aspect ratio plays no part."""
    layer = make_layer()
    query, _ = random_inputs()
    boxes = random_boxes(2, 5, num_levels=2)
    locations = layer.sampling_locations(query, boxes, aspect_ratio=0.5)
    offsets = layer.sampling_offsets(query).view(2, 5, HEADS, 2, POINTS, 2) / POINTS
    expected = torch.empty_like(locations)
    for b, q, head, lvl, p in itertools.product(range(2), range(5), range(HEADS), range(2),
                                                 range(POINTS)):
        cx, cy, w, h, t = (float(v) for v in boxes[b, q, lvl])
        vx = math.cos(t) * w / 2 - math.sin(t) * h / 2
        vy = math.sin(t) * w / 2 + math.cos(t) * h / 2
        ox, oy = (float(v) for v in offsets[b, q, head, lvl, p])
        expected[b, q, head, lvl, p] = torch.tensor([cx + ox * vx, cy + oy * vy])
    assert_close(locations, expected)
    with pytest.raises(ValueError, match='offset_frame'):
        make_layer(offset_frame='rotated')


def test_gradients_reach_query_value_boxes_and_every_parameter():
    layer = make_layer().train()
    query, value = random_inputs()
    boxes = random_boxes(2, 5, num_levels=2)
    for tensor in (query, value, boxes):
        tensor.requires_grad_(True)
    out = layer(query, value=value, reference_points=boxes, spatial_shapes=SHAPES,
                level_start_index=level_start(SHAPES), aspect_ratio=torch.tensor([0.5, 1.5]))
    (out * torch.randn_like(out)).sum().backward()
    named = dict(layer.named_parameters(), query=query, value=value, boxes=boxes)
    for name, tensor in named.items():
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all(), name
        assert tensor.grad.abs().sum() > 0, name
    assert (boxes.grad[..., 4].abs() > 0).all()  # the angle is trained too


def test_key_padding_mask_removes_masked_values():
    layer = make_layer().eval()
    query, value = random_inputs()
    boxes = random_boxes(2, 5)
    mask = torch.rand(value.shape[:2], generator=torch.Generator().manual_seed(3)) < 0.4
    common = dict(query=query, reference_points=boxes, spatial_shapes=SHAPES,
                  level_start_index=level_start(SHAPES))
    value = value.requires_grad_(True)
    out = layer(value=value, key_padding_mask=mask, **common)
    junk = torch.where(mask[..., None], 100 * torch.randn_like(value), value)
    assert_close(layer(value=junk, key_padding_mask=mask, **common), out)
    assert not torch.allclose(layer(value=value, **common), out)
    out.sum().backward()
    assert (value.grad[mask] == 0).all() and (value.grad[~mask] != 0).any()


def test_contracts_registry_sequence_first_and_inputs_untouched():
    layer = MODELS.build(dict(type='RotatedMultiScaleDeformableAttention', embed_dims=EMBED,
                              num_heads=HEADS, num_levels=2, num_points=POINTS, dropout=0.0))
    assert isinstance(layer, MultiScaleDeformableAttention)  # mmdet's DETR init_weights finds it
    assert layer.batch_first
    query, value = random_inputs()
    boxes = random_boxes(2, 5, num_levels=2)
    copies = [t.clone() for t in (query, value, boxes)]
    out = layer(query, value=value, reference_points=boxes, spatial_shapes=SHAPES,
                level_start_index=level_start(SHAPES))
    assert out.shape == query.shape
    for before, after in zip(copies, (query, value, boxes)):
        assert_close(after, before, rtol=0, atol=0)
    seq_first = RotatedMultiScaleDeformableAttention(embed_dims=EMBED, num_heads=HEADS,
                                                     num_levels=2, num_points=POINTS,
                                                     dropout=0.0, batch_first=False)
    seq_first.load_state_dict(layer.state_dict())
    out_t = seq_first(query.transpose(0, 1), value=value.transpose(0, 1), reference_points=boxes,
                      spatial_shapes=SHAPES, level_start_index=level_start(SHAPES))
    assert_close(out_t.transpose(0, 1), out)
    with pytest.raises(ValueError, match='rotated boxes'):
        layer(query, value=value, reference_points=boxes[..., :4], spatial_shapes=SHAPES)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_kernel_matches_cpu():
    layer = make_layer().eval()
    query, value = random_inputs(num_query=50)
    boxes = random_boxes(2, 50, num_levels=2)
    args = dict(spatial_shapes=SHAPES, level_start_index=level_start(SHAPES))
    cpu = layer(query, value=value, reference_points=boxes, **args)
    gpu = layer.cuda()(query.cuda(), value=value.cuda(), reference_points=boxes.cuda(),
                       **{k: v.cuda() for k, v in args.items()})
    assert_close(gpu.cpu(), cpu, atol=1e-5, rtol=1e-4)
