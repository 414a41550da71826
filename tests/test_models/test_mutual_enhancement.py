"""Mutual enhancement: shapes, permutation equivariance, padding, empty images, gradients."""
import pytest
import torch

from bhcl.models.layers import EmbeddingHead, MutualEnhancement

C, HEADS, T = 32, 4, 6


def _module(**kw) -> MutualEnhancement:
    torch.manual_seed(0)
    return MutualEnhancement(embed_dims=C, num_heads=HEADS, num_blocks=2, ffn_channels=64, **kw)


def _inputs(b: int = 2, n: int = 5, t: int = T, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, C, generator=g), torch.randn(b, t, C, generator=g)


def _modes():
    """Train mode with grad, and eval mode without grad (nn.MultiheadAttention's fast path)."""
    return pytest.mark.parametrize('train', [True, False], ids=['train', 'eval_no_grad'])


def _run(module, train, *args, **kw):
    module.train(train)
    with torch.set_grad_enabled(train):
        return module(*args, **kw)


@pytest.mark.parametrize('n', [0, 1, 5])
def test_shapes_and_finite(n):
    objects, tokens = _inputs(n=n)
    out_obj, out_tok = _module()(objects, tokens)
    assert out_obj.shape == (2, n, C) and out_tok.shape == (2, T, C)
    assert torch.isfinite(out_obj).all() and torch.isfinite(out_tok).all()


def test_registered_and_built_from_config():
    from mmrotate.registry import MODELS
    module = MODELS.build(dict(type='MutualEnhancement', embed_dims=C, num_heads=HEADS))
    assert isinstance(module, MutualEnhancement) and len(module.blocks) == 3
    assert module.blocks[0].ffn[0].out_features == 2048


def test_inputs_not_modified():
    objects, tokens = _inputs()
    mask = torch.tensor([[False] * 5, [False, False, True, True, True]])
    copies = objects.clone(), tokens.clone(), mask.clone()
    _module()(objects, tokens, mask)
    for before, after in zip(copies, (objects, tokens, mask)):
        assert torch.equal(before, after)


@_modes()
def test_permuting_objects_permutes_objects_and_keeps_tokens(train):
    module = _module()
    objects, tokens = _inputs()
    mask = torch.tensor([[False, False, False, False, False], [False, True, False, True, False]])
    perm = torch.tensor([3, 0, 4, 1, 2])
    obj_a, tok_a = _run(module, train, objects, tokens, mask)
    obj_b, tok_b = _run(module, train, objects[:, perm], tokens, mask[:, perm])
    torch.testing.assert_close(obj_b, obj_a[:, perm])
    torch.testing.assert_close(tok_b, tok_a)


@_modes()
def test_padded_objects_change_nothing(train):
    """Batched with padding (arbitrary, even non-finite, padded values) == each image alone."""
    module = _module()
    objects, tokens = _inputs(n=5)
    counts = [5, 2]
    padded = objects.clone()
    padded[1, 2:] = torch.tensor([1e4, float('nan'), float('inf')])[:, None]
    mask = torch.arange(5)[None] >= torch.tensor(counts)[:, None]
    out_obj, out_tok = _run(module, train, padded, tokens, mask)
    assert torch.isfinite(out_obj).all() and torch.isfinite(out_tok).all()
    assert torch.equal(out_obj[1, 2:], torch.zeros(3, C))
    for i, k in enumerate(counts):
        obj_i, tok_i = _run(module, train, objects[i:i + 1, :k], tokens[i:i + 1])
        torch.testing.assert_close(out_obj[i, :k], obj_i[0])
        torch.testing.assert_close(out_tok[i], tok_i[0])


@_modes()
def test_padded_tokens_change_nothing(train):
    module = _module()
    objects, tokens = _inputs(n=3)
    padded = torch.cat([tokens, torch.full((2, 2, C), 50.0)], dim=1)
    token_mask = torch.zeros(2, T + 2, dtype=torch.bool)
    token_mask[:, T:] = True
    out_obj, out_tok = _run(module, train, objects, padded, token_mask=token_mask)
    ref_obj, ref_tok = _run(module, train, objects, tokens)
    torch.testing.assert_close(out_obj, ref_obj)
    torch.testing.assert_close(out_tok[:, :T], ref_tok)


@_modes()
def test_image_without_objects_keeps_its_tokens(train):
    module = _module()
    objects, tokens = _inputs(n=4)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    out_obj, out_tok = _run(module, train, objects, tokens, mask)
    assert torch.isfinite(out_obj).all() and torch.isfinite(out_tok).all()
    assert torch.equal(out_tok[1], tokens[1])
    assert torch.equal(out_obj[1], torch.zeros(4, C))
    obj_0, tok_0 = _run(module, train, objects[:1, :2], tokens[:1])
    torch.testing.assert_close(out_tok[0], tok_0[0])
    torch.testing.assert_close(out_obj[0, :2], obj_0[0])


def test_no_objects_in_the_whole_batch():
    module = _module()
    objects, tokens = _inputs(n=0)
    tokens.requires_grad_(True)
    out_obj, out_tok = module(objects, tokens, torch.zeros(2, 0, dtype=torch.bool))
    assert out_obj.shape == (2, 0, C)
    assert torch.equal(out_tok, tokens)
    (out_tok * torch.randn_like(out_tok)).sum().backward()
    # every parameter stays in the graph (DDP without find_unused_parameters)
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name


def test_gradients_reach_both_inputs_and_every_parameter():
    module = _module()
    objects, tokens = _inputs(n=3)
    objects.requires_grad_(True)
    tokens.requires_grad_(True)
    mask = torch.tensor([[False, False, False], [False, False, True]])
    out_obj, out_tok = module(objects, tokens, mask)
    g = torch.Generator().manual_seed(2)
    # random weights: the plain sum of a LayerNorm output has no gradient
    loss = (out_obj * torch.randn(out_obj.shape, generator=g)).sum() + \
        (out_tok * torch.randn(out_tok.shape, generator=g)).sum()
    loss.backward()
    assert objects.grad[0].abs().sum() > 0 and tokens.grad.abs().sum() > 0
    assert torch.equal(objects.grad[1, 2], torch.zeros(C))  # a padded object
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_empty_image_gradients_are_finite():
    module = _module()
    objects, tokens = _inputs(n=2)
    objects.requires_grad_(True)
    tokens.requires_grad_(True)
    mask = torch.tensor([[False, False], [True, True]])
    out_obj, out_tok = module(objects, tokens, mask)
    weight = torch.randn(out_tok.shape, generator=torch.Generator().manual_seed(2))
    (out_obj.sum() + (out_tok * weight).sum()).backward()
    assert torch.isfinite(objects.grad).all() and torch.isfinite(tokens.grad).all()
    # an image without objects: its tokens pass straight through
    assert torch.equal(tokens.grad[1], weight[1])
    assert torch.equal(objects.grad[1], torch.zeros(2, C))
    for name, p in module.named_parameters():
        assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize('hidden', [256, 1024])
def test_embedding_head_is_its_mlp(hidden):
    """Linear-ReLU-Linear, not normalised (its users compare by cosine)."""
    from mmrotate.registry import MODELS
    torch.manual_seed(0)
    head = MODELS.build(dict(type='EmbeddingHead', in_channels=C, hidden_channels=hidden,
                             out_channels=16))
    assert isinstance(head, EmbeddingHead)
    x = torch.randn(3, 7, C)
    out = head(x)
    assert out.shape == (3, 7, 16)
    first, second = head.mlp.layers
    assert first.out_features == hidden
    expected = torch.nn.functional.linear(
        torch.relu(torch.nn.functional.linear(x, first.weight, first.bias)),
        second.weight, second.bias)
    torch.testing.assert_close(out, expected)
    with pytest.raises(TypeError):
        EmbeddingHead(C, hidden, 16, normalize=False)  # the former no-op option is gone


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
@_modes()
def test_cuda_matches_cpu_with_padding_and_an_empty_image(train):
    module = _module()
    objects, tokens = _inputs(n=4)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True]])
    cpu_obj, cpu_tok = _run(module, train, objects, tokens, mask)
    gpu_obj, gpu_tok = _run(module.cuda(), train, objects.cuda(), tokens.cuda(), mask.cuda())
    torch.testing.assert_close(gpu_obj.cpu(), cpu_obj, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(gpu_tok.cpu(), cpu_tok, atol=1e-4, rtol=1e-4)
    assert torch.equal(gpu_tok[1].cpu(), tokens[1])
    with torch.autocast('cuda', dtype=torch.float16):
        half_obj, half_tok = _run(module, train, objects.cuda(), tokens.cuda(), mask.cuda())
    assert torch.isfinite(half_obj).all() and torch.isfinite(half_tok).all()
