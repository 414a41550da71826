"""Decoder pieces of the published OrientedFormer, each against an independent reference."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from torch.testing import assert_close

from bhcl.models.layers import (DecoupledQueryDecoderLayer, OrientedSamplingAttention,
                                QueryDecoderLayer, gaussian_position_encoding,
                                gaussian_similarity)
from bhcl.models.layers.oriented_sampling_attention import level_weights
from bhcl.structures.box_coding import boxes_to_xyzrt

STRIDES = (4, 8, 16, 32, 64)


def random_boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=g) * 100, 4 + torch.rand(n, 2, generator=g) * 40,
                      (torch.rand(n, 1, generator=g) - 0.5) * math.pi], dim=1).double()


def slow_similarity(b1, b2):
    """1 / (1 + W2 / (2 (det S1 det S2)^(1/8))) with scipy's matrix square root."""
    def gauss(b):
        c, s = math.cos(b[4]), math.sin(b[4])
        r = np.array([[c, -s], [s, c]])
        return np.array(b[:2]), r @ np.diag([(b[2] / 2)**2, (b[3] / 2)**2]) @ r.T
    m1, s1 = gauss(b1)
    m2, s2 = gauss(b2)
    root = sqrtm(s1)
    cross = np.real(sqrtm(root @ s2 @ root))
    w2 = math.sqrt(max(np.sum((m1 - m2)**2) + np.trace(s1 + s2 - 2 * cross), 0))
    scale = 2 * (np.linalg.det(s1) * np.linalg.det(s2))**(1 / 8)
    return 1 / (1 + w2 / scale)


def test_gaussian_similarity_matches_the_wasserstein_formula():
    boxes = random_boxes(6)
    sim = gaussian_similarity(boxes[None])[0]
    ref = torch.tensor([[slow_similarity(a.tolist(), b.tolist()) for b in boxes] for a in boxes],
                       dtype=torch.float64)
    assert_close(sim, ref, rtol=1e-6, atol=1e-4)  # eps clamps only touch the diagonal
    assert_close(sim.diagonal(), torch.ones(6, dtype=torch.float64), atol=2e-3, rtol=0)


def test_gaussian_position_encoding_formula():
    boxes = random_boxes(3, seed=1)
    enc = gaussian_position_encoding(boxes.float(), 8)
    assert enc.shape == (3, 32)
    for i, (cx, cy, w, h, t) in enumerate(boxes.tolist()):
        c, s = math.cos(t), math.sin(t)
        var = [(w / 2 * c)**2 + (h / 2 * s)**2, (w / 2 * s)**2 + (h / 2 * c)**2]
        ref = []
        for mu, v in zip((cx, cy), var):
            for k in range(8):
                d = 10000**(2 * (k // 2) / 8)
                damp = math.exp(-0.5 * v / d**2)
                ref += [damp * math.sin(mu / d), damp * math.cos(mu / d)]
        assert_close(enc[i], torch.tensor(ref), atol=1e-5, rtol=1e-4)


def ramp_pyramid(size=128, channels=4):
    """Every level holds the pixel x coordinate of each cell centre."""
    feats = []
    for s in STRIDES:
        n = size // s
        x = (torch.arange(n, dtype=torch.float32) + 0.5) * s
        feats.append(x.view(1, 1, 1, n).expand(1, channels, n, n).clone())
    return feats


def test_oriented_sampling_reads_the_rotated_point_at_every_level():
    attn = OrientedSamplingAttention(embed_dims=4, num_heads=1, num_points=2, reduction=2)
    with torch.no_grad():
        for m in attn.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.zero_()
                if m.bias is not None:
                    m.bias.zero_()
        # point 0 at (+0.25 w, +0.5 h) in the box frame, one level finer than the box
        attn.sampling_offsets.bias.copy_(torch.tensor([0.25, 0.5, -1.0, 0., 0., 0.]))
        attn.out_proj.weight[0, 0] = 1.0  # output channel 0 = point 0, channel 0
    box = torch.tensor([[[64., 60., 32., 8., 0.4]]])
    xyzrt = boxes_to_xyzrt(box)
    out = attn(torch.zeros(1, 1, 4), xyzrt, ramp_pyramid(), STRIDES)
    w, h, t = 32., 8., 0.4
    x = 64. + 0.25 * w * math.cos(t) - 0.5 * h * math.sin(t)
    z = math.log2(math.sqrt(w * h)) - 1.0
    weight = sum(1 / (1 + math.exp((z - math.log2(s))**2 / 2)) for s in STRIDES)
    assert_close(out[0, 0, 0], torch.tensor(0.25 * x * weight))  # two sigmoid(0) gates
    assert_close(level_weights(torch.tensor([2.0]), STRIDES)[0, 0], torch.tensor(0.5))


def layer_inputs(channels, seed=0):
    g = torch.Generator().manual_seed(seed)
    feats = [torch.randn(2, 16, 64 // s, 64 // s, generator=g) for s in STRIDES]
    content = torch.randn(2, 5, channels, generator=g)
    xyzrt = boxes_to_xyzrt(random_boxes(10, seed).float().view(2, 5, 5) * 0.5 + 2)
    return content, xyzrt, feats


@pytest.mark.parametrize('layer_type', [QueryDecoderLayer, DecoupledQueryDecoderLayer])
def test_layer_shapes_and_inputs_unchanged(layer_type):
    torch.manual_seed(0)
    layer = layer_type(embed_dims=16, num_heads=2, ffn_channels=32,
                       attn_cfg=dict(num_heads=4, num_points=3, reduction=4))
    layer.init_weights()
    content, xyzrt, feats = layer_inputs(layer.content_channels)
    before = [content.clone(), xyzrt.clone()] + [f.clone() for f in feats]
    out = layer(content, xyzrt, feats, STRIDES)
    assert out.shape == content.shape and torch.isfinite(out).all()
    for a, b in zip([content, xyzrt] + feats, before):
        assert torch.equal(a, b)
    cls_feat, loc_feat = layer.split(out)
    assert cls_feat.shape[-1] == loc_feat.shape[-1] == 16


def test_decoupling_is_real():
    """A loss on the class half reaches neither the box branch nor its input half's FFN."""
    torch.manual_seed(0)
    layer = DecoupledQueryDecoderLayer(embed_dims=16, num_heads=2, ffn_channels=32,
                                       attn_cfg=dict(num_heads=4, num_points=3, reduction=4))
    layer.init_weights()
    content, xyzrt, feats = layer_inputs(32)
    cls_feat, _ = layer.split(layer(content, xyzrt, feats, STRIDES))
    cls_feat.square().sum().backward()
    assert all(p.grad is None or not p.grad.any() for p in layer.branches[1].parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in layer.branches[0].parameters())
    assert layer.self_attn.attn.in_proj_weight.grad.abs().sum() > 0  # shared


def test_init_is_the_published_one():
    torch.manual_seed(0)
    layer = QueryDecoderLayer(embed_dims=32, num_heads=4, ffn_channels=64,
                              attn_cfg=dict(num_heads=4, num_points=4, reduction=4))
    layer.init_weights()
    tau = layer.self_attn.tau
    assert tau.min() >= 0 and tau.max() <= 4 and tau.std() > 0
    w = layer.branches[0].cross_attn.sampling_offsets.weight
    bound = math.sqrt(6 / sum(w.shape))   # xavier-uniform, overriding any zero init
    assert w.abs().max() <= bound and w.abs().max() > 0.5 * bound
