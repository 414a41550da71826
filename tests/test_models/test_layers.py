"""Decoder building blocks: box maths, oriented sampling attention, (decoupled) layers."""
import math

import pytest
import torch
from torch.testing import assert_close

from bhcl.models.layers import (DecoupledQueryDecoderLayer, OrientedSamplingAttention,
                                QueryDecoderLayer, gaussian_wasserstein_distance,
                                gaussian_wasserstein_similarity, refine_boxes, regularize_le90)

STRIDES = (4, 8, 16, 32, 64)


def pyramid(channels=16, size=64, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, channels, size // s, size // s, generator=g) for s in STRIDES]


def some_boxes(batch=2):
    boxes = torch.tensor([[20., 20., 12., 6., 0.3], [40., 30., 20., 8., -1.0],
                          [10., 50., 6., 4., 1.2]])
    return boxes.expand(batch, -1, -1).clone()


def test_regularize_le90():
    boxes = torch.tensor([[0., 0., 2., 4., 0.], [1., 1., 4., 2., math.pi * 0.75],
                          [2., 2., 3., 3., -math.pi / 2]])
    # a square is swapped and turned by pi/2, as mmrotate does (see test_geometry.py)
    expected = torch.tensor([[0., 0., 4., 2., -math.pi / 2], [1., 1., 4., 2., -math.pi * 0.25],
                             [2., 2., 3., 3., 0.]])
    assert_close(regularize_le90(boxes), expected)


def test_refine_boxes_moves_along_box_axes():
    boxes = torch.tensor([[10., 10., 4., 2., math.pi / 4]])
    deltas = torch.tensor([[0.5, 0., math.log(2.), 0., 0.1]])
    r = math.sqrt(2) / 2
    expected = torch.tensor([[10. + 2 * r, 10. + 2 * r, 8., 2., math.pi / 4 + 0.1]])
    assert_close(refine_boxes(boxes, deltas), expected)


def test_gaussian_wasserstein_distance_closed_forms():
    a = torch.tensor([[[0., 0., 4., 2., 0.], [3., 4., 8., 6., 0.],
                       [0., 0., 2., 4., math.pi / 2]]])
    dist = gaussian_wasserstein_distance(a, a)
    # axis-aligned: W2^2 = |dmu|^2 + (dw^2 + dh^2) / 4; a rotated copy of the same box: 0
    d01 = math.sqrt(25 + (16 + 16) / 4)
    expected = torch.tensor([[[0., d01, 0.], [d01, 0., d01], [0., d01, 0.]]])
    assert_close(dist, expected, atol=1e-3, rtol=1e-4)
    sim = gaussian_wasserstein_similarity(a)
    s01 = 1 / (1 + d01 / ((math.sqrt(8) + math.sqrt(48)) / 2))
    expected_sim = torch.tensor([[[1., s01, 1.], [s01, 1., s01], [1., s01, 1.]]])
    assert_close(sim, expected_sim, atol=1e-4, rtol=1e-4)


def test_oriented_sampling_attention_on_a_constant_map():
    torch.manual_seed(0)
    strides = STRIDES[:3]  # coarser levels put every point near zero padding
    attn = OrientedSamplingAttention(16, num_heads=4, num_points=4, strides=strides)
    const = torch.randn(16)
    feats = [const.view(1, 16, 1, 1).expand(2, 16, 64 // s, 64 // s).contiguous()
             for s in strides]
    query = torch.randn(2, 3, 16)
    boxes = some_boxes()
    boxes[..., 2, :2] = torch.tensor([16., 48.])
    boxes[..., 2:4] = 4.  # every sampling point inside the pixel centres of every level
    out = attn(query, boxes, feats)
    expected = attn.output_proj(attn.value_proj(const)).expand(2, 3, 16)
    assert_close(out, expected)
    pts = attn.sampling_points(torch.zeros(2, 3, 16), boxes)
    assert pts.shape == (2, 3, 4, 4, 2)
    # the initial pattern is centred on the box
    assert_close(pts.mean(dim=(2, 3)), boxes[..., :2], atol=0.6, rtol=0)


@pytest.mark.parametrize('layer_type', [QueryDecoderLayer, DecoupledQueryDecoderLayer])
def test_layer_shapes_and_inputs_unchanged(layer_type):
    torch.manual_seed(0)
    layer = layer_type(embed_dims=16, num_heads=4, num_points=4, ffn_channels=32)
    assert layer.content_channels == 16 * layer_type.num_branches
    feats, boxes = pyramid(), some_boxes()
    content = torch.randn(2, 3, layer.content_channels)
    img_size = torch.tensor([[64., 64.], [64., 64.]])
    copies = [t.clone() for t in (content, boxes, *feats)]
    out = layer(content, boxes, feats, img_size)
    assert out.shape == content.shape and torch.isfinite(out).all()
    for before, after in zip(copies, (content, boxes, *feats)):
        assert_close(after, before, rtol=0, atol=0)
    cls_feat, loc_feat = layer.split(out)
    assert cls_feat.shape == loc_feat.shape == (2, 3, 16)


def _grads(layer, head_input):
    layer.zero_grad()
    head_input.sum().backward()
    return layer


def test_decoupling_is_real():
    torch.manual_seed(0)
    layer = DecoupledQueryDecoderLayer(embed_dims=16, num_heads=4, num_points=4,
                                       ffn_channels=32)
    cls_head, reg_head = torch.nn.Linear(16, 5), torch.nn.Linear(16, 5)
    feats, boxes = pyramid(), some_boxes()
    content = torch.randn(2, 3, 32)
    img_size = torch.full((2, 2), 64.)

    def run(which):
        layer.zero_grad()
        cls_feat, loc_feat = layer.split(layer(content, boxes, feats, img_size))
        loss = cls_head(cls_feat).sigmoid().sum() if which == 'cls' else reg_head(
            loc_feat).abs().sum()
        loss.backward()

    run('cls')
    for p in layer.loc_branch_parameters():
        assert p.grad is None or not p.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in layer.cls_branch_parameters())
    assert layer.self_attn.attn.in_proj_weight.grad.any()
    run('loc')
    for p in layer.cls_branch_parameters():
        assert p.grad is None or not p.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in layer.loc_branch_parameters())


def test_baseline_layer_is_the_one_branch_case():
    torch.manual_seed(0)
    base = QueryDecoderLayer(embed_dims=16, num_heads=4, num_points=4, ffn_channels=32)
    dec = DecoupledQueryDecoderLayer(embed_dims=16, num_heads=4, num_points=4, ffn_channels=32)
    assert len(base.branches) == 1 and len(dec.branches) == 2
    out = base(torch.randn(2, 3, 16), some_boxes(), pyramid(), torch.full((2, 2), 64.))
    cls_feat, loc_feat = base.split(out)
    assert cls_feat is loc_feat
    # the baseline layer: self-attention, norm, then exactly one branch applied to the content
    content, boxes, feats = torch.randn(2, 3, 16), some_boxes(), pyramid()
    img_size = torch.full((2, 2), 64.)
    mid = base.norm(content + base.self_attn(content, boxes, img_size))
    assert_close(base(content, boxes, feats, img_size), base.branches[0](mid, boxes, feats))
    # and a decoupled stage width-splits its content between its two branches
    content2 = torch.randn(2, 3, 32)
    mid2 = dec.norm(content2 + dec.self_attn(content2, boxes, img_size))
    expected = torch.cat([dec.branches[0](mid2[..., :16], boxes, feats),
                          dec.branches[1](mid2[..., 16:], boxes, feats)], -1)
    assert_close(dec(content2, boxes, feats, img_size), expected)
