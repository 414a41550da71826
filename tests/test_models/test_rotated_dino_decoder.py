"""RHINO's decoder: a layer at angle 0 equals mmdet's deformable decoder layer, the
angle reaches the attention in radians, refinement in inverse-sigmoid space, gradients."""
import math

import pytest
import torch
from mmdet.models.layers.transformer import DeformableDetrTransformerDecoderLayer

from bhcl.models.layers.rotated_dino_decoder import (DecoupledRotatedDecoderLayer,
                                                      RotatedDeformableDecoderLayer,
                                                      RotatedDinoTransformerDecoder,
                                                      rbox_to_encoding)

C, HEADS, LEVELS = 32, 4, 2
SHAPES = torch.tensor([[8, 8], [4, 4]])
START = torch.tensor([0, 64])
LAYER = dict(self_attn_cfg=dict(embed_dims=C, num_heads=HEADS, dropout=0.0),
             cross_attn_cfg=dict(embed_dims=C, num_heads=HEADS, num_levels=LEVELS,
                                 num_points=4, dropout=0.0),
             ffn_cfg=dict(embed_dims=C, feedforward_channels=64, ffn_drop=0.0))


def decoder(num_layers=2, **kwargs):
    torch.manual_seed(0)
    return RotatedDinoTransformerDecoder(num_layers=num_layers, return_intermediate=True,
                                         post_norm_cfg=None, layer_cfg=LAYER, **kwargs)


def inputs(b=2, n=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, C, generator=g), torch.randn(b, 80, C, generator=g),
            torch.rand(b, n, 5, generator=g) * 0.6 + 0.2)


def test_layer_at_angle_zero_equals_mmdet_deformable_decoder_layer():
    torch.manual_seed(0)
    ours = RotatedDeformableDecoderLayer(**LAYER)
    theirs = DeformableDetrTransformerDecoderLayer(**LAYER)
    theirs.load_state_dict(ours.state_dict())
    query, value, ref = inputs()
    pos = torch.randn_like(query)
    box = ref[:, :, None, :4].expand(-1, -1, LEVELS, -1)
    kw = dict(query_pos=pos, value=value, key_padding_mask=None, self_attn_mask=None,
              spatial_shapes=SHAPES, level_start_index=START)
    out = ours(query, reference_points=torch.cat([box, torch.zeros_like(box[..., :1])], -1),
               **kw)
    ref_out = theirs(query, reference_points=box, **kw)
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)


def test_angle_reaches_the_attention_in_radians_and_changes_the_output():
    dec = decoder(1)
    seen = []
    attn = dec.layers[0].cross_attn
    original = attn.forward

    def spy(*args, **kwargs):
        seen.append(kwargs['reference_points'])
        return original(*args, **kwargs)
    attn.forward = spy
    query, value, ref = inputs()
    out_a, _ = dec(query, value, None, None, ref, SHAPES, START, torch.ones(2, LEVELS, 2))
    torch.testing.assert_close(seen[0][..., 4], (ref[..., 4:] * math.pi).expand(-1, -1, LEVELS))
    ref_b = ref.clone()
    ref_b[..., 4] = (ref_b[..., 4] + 0.25) % 1
    out_b, _ = dec(query, value, None, None, ref_b, SHAPES, START, torch.ones(2, LEVELS, 2))
    assert not torch.allclose(out_a, out_b)


def test_refinement_in_inverse_sigmoid_space_and_gradients():
    dec = decoder(2)
    reg = torch.nn.ModuleList(torch.nn.Linear(C, 5) for _ in range(2))
    for lin in reg:
        torch.nn.init.zeros_(lin.weight)
        torch.nn.init.zeros_(lin.bias)
    query, value, ref = inputs()
    query.requires_grad_(True)
    value.requires_grad_(True)
    out, refs = dec(query, value, None, None, ref, SHAPES, START, torch.ones(2, LEVELS, 2),
                    reg, aspect_ratio=0.5)
    assert out.shape == (2, 2, 5, C) and refs.shape == (3, 2, 5, 5)
    # zero refinement keeps the boxes (up to the inverse-sigmoid clamp)
    torch.testing.assert_close(refs[2], ref, rtol=0, atol=1e-5)
    reg[0].bias.data[:] = 1.0
    out, refs = dec(query, value, None, None, ref, SHAPES, START, torch.ones(2, LEVELS, 2),
                    reg, aspect_ratio=0.5)
    torch.testing.assert_close(refs[1], (torch.logit(ref.clamp(1e-3, 1 - 1e-3)) + 1).sigmoid(),
                               rtol=1e-5, atol=1e-5)
    (out.sum() + refs[1:].sum()).backward()
    assert query.grad.abs().sum() > 0 and value.grad.abs().sum() > 0
    missing = [n for n, p in dec.named_parameters() if p.grad is None]
    assert missing == []


def test_encoding_and_input_checks():
    ref = torch.rand(2, 3, 5)
    enc = rbox_to_encoding(ref, 16)
    assert enc.shape == (2, 3, 80)
    ref2 = ref.clone()
    ref2[..., 4] += 0.1
    assert torch.equal(enc[..., :64], rbox_to_encoding(ref2, 16)[..., :64])
    assert not torch.equal(enc[..., 64:], rbox_to_encoding(ref2, 16)[..., 64:])
    assert torch.equal(rbox_to_encoding(ref, 16, with_angle=False), enc[..., :64])
    # RHINO's positional query: (cx, cy, w, h) with C / 2 features each, the angle left out
    assert decoder(1).ref_point_head.layers[0].in_features == 2 * C
    assert decoder(1, query_pos_angle=True).ref_point_head.layers[0].in_features == 5 * C
    query, value, ref = inputs()
    with pytest.raises(ValueError, match='5\\) reference boxes'):
        decoder(1)(query, value, None, None, ref[..., :4], SHAPES, START,
                   torch.ones(2, LEVELS, 2))


def test_decoupled_layer_streams_meet_only_in_the_self_attention():
    torch.manual_seed(0)
    layer = DecoupledRotatedDecoderLayer(**LAYER)
    query, value, ref = inputs()
    query = torch.cat([query, torch.randn_like(query)], -1)
    box = torch.cat([ref[:, :, None, :4].expand(-1, -1, LEVELS, -1),
                     ref[:, :, None, 4:].expand(-1, -1, LEVELS, -1) * math.pi], -1)
    out = layer(query, query_pos=torch.randn(2, 5, C), value=value, reference_points=box,
                spatial_shapes=SHAPES, level_start_index=START)
    assert out.shape == (2, 5, 2 * C)
    for half, own, other in ((slice(0, C), 0, 1), (slice(C, 2 * C), 1, 0)):
        layer.zero_grad()
        out[..., half].sum().backward(retain_graph=True)
        for m in (layer.cross_attn[other], layer.ffn[other]):
            assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.parameters())
        for m in (layer.cross_attn[own], layer.ffn[own], layer.self_attn):
            assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())


def test_the_layer_type_chosen_in_the_config_decides_decoupling():
    baseline = decoder()
    assert all(type(layer) is RotatedDeformableDecoderLayer for layer in baseline.layers)
    assert not baseline.decoupled and baseline.loc_norm is None
    decoupled = RotatedDinoTransformerDecoder(
        num_layers=2, return_intermediate=True, post_norm_cfg=None,
        layer_cfg=dict(LAYER, type='DecoupledRotatedDecoderLayer'))
    assert all(type(layer) is DecoupledRotatedDecoderLayer for layer in decoupled.layers)
    assert decoupled.decoupled and decoupled.loc_norm is not None
    assert decoupled.embed_dims == C
    query = torch.randn(2, 5, 2 * C)
    cls, loc = decoupled.layers[0].split(query)
    assert torch.equal(cls, query[..., :C]) and torch.equal(loc, query[..., C:])
    assert torch.equal(decoupled._loc(query), query[..., C:])
    with pytest.raises(ValueError, match="'RotatedMultiScaleDeformableAttention' is not a RHINO"):
        RotatedDinoTransformerDecoder(num_layers=1, layer_cfg=dict(
            LAYER, type='RotatedMultiScaleDeformableAttention'))


def test_the_retired_decoupled_flag_says_what_to_write(repo_root):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmrotate.registry import MODELS
    fix = "model.decoder.layer_cfg.type='DecoupledRotatedDecoderLayer'"
    with pytest.raises(ValueError, match=r'decoupled=True is no longer an option.*' + fix):
        decoder(decoupled=True)
    cfg = Config.fromfile(f'{repo_root}/configs/synthetic/rhino_r18_1xb4-12e_synthetic.py')
    cfg.model.decoder.decoupled = True
    init_default_scope('mmrotate')
    with pytest.raises(ValueError, match=fix):
        MODELS.build(cfg.model)


def test_decoupled_layer_keeps_its_checkpoint_key_names():
    """Published checkpoints convert to these names; changing them needs a key migration."""
    layer = DecoupledRotatedDecoderLayer(**LAYER)
    attn = ['sampling_offsets', 'attention_weights', 'value_proj', 'output_proj']
    expected = (['self_attn.attn.in_proj_weight', 'self_attn.attn.in_proj_bias',
                 'self_attn.attn.out_proj.weight', 'self_attn.attn.out_proj.bias',
                 'self_norm.weight', 'self_norm.bias']
                + [f'cross_attn.{i}.{m}.{p}' for i in range(2) for m in attn
                   for p in ('weight', 'bias')]
                + [f'ffn.{i}.layers.{j}.{p}' for i in range(2) for j in ('0.0', '1')
                   for p in ('weight', 'bias')]
                + [f'norms.{i}.{p}' for i in range(4) for p in ('weight', 'bias')])
    assert list(layer.state_dict()) == expected
