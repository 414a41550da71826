"""bhcl's MutDet pieces against numbers produced by the authors' code (floatingstarZ/MutDet).

``tests/data/reference/mutdet_reference.pt`` was written by
``tests/data/reference/make_mutdet_reference.py``, which runs the authors' alignment
loss and their enhanced ("patch") pass (two-way enhancement, token embedding head,
similarity x objectness score, top-k) on seeded inputs. Here bhcl's modules get
the same inputs (and, for the enhancement and the token head, the same weights
mapped to bhcl's layout) and must give the same numbers within 1e-5.
"""
import os.path as osp

import pytest
import torch

from bhcl.models.detectors.mutdet_pretrainer import MutDetPretrainer, similarity_objectness
from bhcl.models.layers import EmbeddingHead, MutualEnhancement
from bhcl.models.losses import ContrastiveAlignmentLoss

REFERENCE = osp.join(osp.dirname(osp.dirname(__file__)), 'data', 'reference',
                     'mutdet_reference.pt')
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def reference():
    return torch.load(REFERENCE)


def _max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize('case', [0, 1, 2])
@pytest.mark.parametrize('dtype', [torch.float64, torch.float32])
def test_alignment_loss_equals_the_authors(reference, case, dtype):
    ref = reference['alignment'][case]
    pred = ref['pred'][ref['pos_b'], ref['pos_q']]
    target = torch.cat([ref['objects'][b][g][None] for b, g in
                        zip(ref['pos_b'].tolist(), ref['pos_gt'].tolist())])
    loss = ContrastiveAlignmentLoss()(pred.to(dtype), target.to(dtype))  # the defaults
    assert _max_diff(loss, ref['loss']) <= 1e-5, (loss.item(), ref['loss'].item())


def _enhancement(state: dict, cfg: dict) -> MutualEnhancement:
    """bhcl's MutualEnhancement with the weights of the authors' TwoWayTransformer."""
    module = MutualEnhancement(embed_dims=cfg['embed_dims'], num_heads=cfg['num_heads'],
                               num_blocks=cfg['num_blocks'], ffn_channels=cfg['ffn_channels'])
    attention = dict(self_attn='self_attn', obj_to_token='cross_attn_token_to_image',
                     token_to_obj='cross_attn_image_to_token')
    mapped = {}
    for i in range(cfg['num_blocks']):
        src = f'layers.{i}.'
        dst = f'blocks.{i}.'
        for ours, theirs in attention.items():
            for kind in ('weight', 'bias'):
                mapped[f'{dst}{ours}.in_proj_{kind}'] = torch.cat(
                    [state[f'{src}{theirs}.{p}_proj.{kind}'] for p in 'qkv'])
                mapped[f'{dst}{ours}.out_proj.{kind}'] = state[f'{src}{theirs}.out_proj.{kind}']
        for k in range(4):  # bhcl's norms[k] is their norm{k+1} (same step order)
            for kind in ('weight', 'bias'):
                mapped[f'{dst}norms.{k}.{kind}'] = state[f'{src}norm{k + 1}.{kind}']
        for ours, theirs in (('ffn.0', 'mlp.lin1'), ('ffn.3', 'mlp.lin2')):
            for kind in ('weight', 'bias'):
                mapped[f'{dst}{ours}.{kind}'] = state[f'{src}{theirs}.{kind}']
    module.load_state_dict(mapped)  # strict: every parameter mapped
    return module.eval()


def _token_head(state: dict, cfg: dict) -> EmbeddingHead:
    c = cfg['embed_dims']
    head = EmbeddingHead(c, cfg['token_hidden'], c)
    head.load_state_dict({'mlp.layers.0.weight': state['0.weight'],
                          'mlp.layers.0.bias': state['0.bias'],
                          'mlp.layers.1.weight': state['2.weight'],
                          'mlp.layers.1.bias': state['2.bias']})
    return head.eval()


@torch.no_grad()
def test_mutual_enhancement_equals_the_authors_two_way_transformer(reference):
    ref = reference['selection']
    module = _enhancement(ref['enhancement_state'], ref['config'])
    # image by image, as the authors run it
    for j, objects in enumerate(ref['objects']):
        obj, tok = module(objects[None], ref['tokens'][j:j + 1])
        assert _max_diff(obj[0], ref['enhanced_objects'][j]) <= 1e-5
        assert _max_diff(tok[0], ref['enhanced_tokens'][j]) <= 1e-5
    # batched, objects zero-padded and masked: the same numbers
    objects, mask = MutDetPretrainer.pad_objects(ref['objects'])
    obj, tok = module(objects, ref['tokens'], mask)
    torch.testing.assert_close(tok, ref['enhanced_tokens'], **TOL)
    for j, expected in enumerate(ref['enhanced_objects']):
        torch.testing.assert_close(obj[j, :len(expected)], expected, **TOL)


@torch.no_grad()
def test_enhanced_pass_selection_equals_the_authors(reference):
    ref = reference['selection']
    cfg = ref['config']
    head = _token_head(ref['token_head_state'], cfg)
    embeds = head(ref['enhanced_tokens'])
    torch.testing.assert_close(torch.nn.functional.normalize(embeds, dim=-1),
                               ref['token_embeds'], **TOL)
    objectness_head = torch.nn.Linear(cfg['embed_dims'], ref['objectness_head_state']['weight']
                                      .shape[0])
    objectness_head.load_state_dict(ref['objectness_head_state'])
    torch.testing.assert_close(objectness_head(ref['enhanced_tokens'])[..., 0],
                               ref['objectness'], **TOL)
    objects, mask = MutDetPretrainer.pad_objects(ref['enhanced_objects'])
    scores = similarity_objectness(embeds, objects, mask, ref['objectness'])
    assert _max_diff(scores, ref['scores']) <= 1e-5
    selected = scores.topk(cfg['topk'], dim=1).indices
    assert torch.equal(selected, ref['selected'])
    # the whole chain from the authors' inputs: bhcl's enhancement, token head and score
    enhancement = _enhancement(ref['enhancement_state'], cfg)
    objects, mask = MutDetPretrainer.pad_objects(ref['objects'])
    enh_objects, enh_tokens = enhancement(objects, ref['tokens'], mask)
    scores = similarity_objectness(head(enh_tokens), enh_objects, mask, ref['objectness'])
    assert _max_diff(scores, ref['scores']) <= 1e-5
    assert torch.equal(scores.topk(cfg['topk'], dim=1).indices, ref['selected'])


@torch.no_grad()
def test_reference_file_is_not_degenerate(reference):
    """The checks above can fail: the cases are not trivially equal or constant."""
    sel = reference['selection']
    assert not torch.allclose(sel['enhanced_tokens'], sel['tokens'], atol=1e-2)
    # the objectness alone would pick other proposals than similarity x objectness
    by_objectness = sel['objectness'].topk(sel['config']['topk'], dim=1).indices
    assert not torch.equal(by_objectness, sel['selected'])
    # some scores come from a negative logit times a negative similarity, and ranking by
    # the probability instead of the logit would pick other proposals
    assert ((sel['scores'] > 0) & (sel['objectness'] < 0)).any()
    objects, mask = MutDetPretrainer.pad_objects(sel['enhanced_objects'])
    embeds = _token_head(sel['token_head_state'], sel['config'])(sel['enhanced_tokens'])
    by_probability = similarity_objectness(embeds, objects, mask, sel['objectness'].sigmoid())
    assert not torch.equal(by_probability.topk(sel['config']['topk'], dim=1).indices,
                           sel['selected'])
    losses = [case['loss'].item() for case in reference['alignment']]
    assert losses[0] > 0.1 and losses[2] > 0.1 and abs(losses[1]) < 1e-12  # one pair: zero
