"""MutDetPretrainer on the synthetic pre-training config: every loss key, gradients,
the frozen backbone, images without pseudo-objects, and the plain pass equal to the
fine-tuning model's forward; the converter's output loads into the fine-tuning model."""
import copy
import os.path as osp

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from mmrotate.structures.bbox import RotatedBoxes

import bhcl  # noqa: F401
from bhcl.models.detectors import pretrain_only_keys
from tests.conftest import CONFIG_DIR

PRETRAIN = osp.join(CONFIG_DIR, 'mutdet', 'mutdet-pretrain_orientedformer-r18_1xb4-12e_synthetic.py')
FINETUNE = osp.join(CONFIG_DIR, 'mutdet',
                    'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic_mutdet-init.py')
PLAIN = osp.join(CONFIG_DIR, 'synthetic', 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py')
K = 16


def build(path=PRETRAIN, seed=0, **overrides):
    init_default_scope('mmrotate')
    cfg = Config.fromfile(path).model
    for key, value in overrides.items():
        cfg[key] = value
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def batch(counts=(3, 2), size=128, dim=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(len(counts), 3, size, size, generator=g)
    boxes = torch.tensor([[30., 30., 24., 10., 0.2], [80., 90., 40., 14., -0.5],
                          [96., 32., 18., 12., 1.0]])
    samples = []
    for n in counts:
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        scale_factor=(1., 1.), batch_input_shape=(size, size)))
        s.gt_instances = InstanceData(
            bboxes=RotatedBoxes(boxes[:n].clone()),
            labels=torch.randint(0, K, (n, ), generator=g),
            embeddings=torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1))
        samples.append(s)
    return imgs, samples


def total(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


def test_every_loss_key_finite_and_every_trainable_parameter_gets_a_gradient():
    model = build()
    model.train()
    imgs, samples = batch()
    losses = model.loss(imgs, samples)
    plain = {'dense.loss_cls', 'dense.loss_iou', 'dense_aux.loss_cls', 'dense_aux.loss_iou'}
    plain |= {f's{i}.{k}' for i in range(2) for k in ('loss_cls', 'loss_bbox', 'loss_iou',
                                                      'pos_acc')}
    expected = plain | {f'enh.{k}' for k in plain} | {
        'loss_align', 'enh.loss_align', 'enh.loss_align_token'}
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses['loss_align'] > 0 and losses['enh.loss_align_token'] > 0
    total(losses).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    for name in ('enhancement', 'object_proj', 'token_proj', 'token_norm', 'query_embed_head',
                 'token_embed_head'):
        grads = [p.grad.abs().sum() for p in getattr(model, name).parameters()]
        assert sum(grads) > 0, name


def test_alignment_reuses_the_detection_loss_matching_of_the_last_stage():
    model = build()
    model.train()
    imgs, samples = batch()
    calls, aligned = [], []
    match_indices, query_alignment = model.match_indices, model.query_alignment

    def spy_match(stage, gts, metas):
        calls.append(match_indices(stage, gts, metas))
        return calls[-1]

    def spy_align(stage, match, objects):
        aligned.append(match)
        return query_alignment(stage, match, objects)

    model.match_indices, model.query_alignment = spy_match, spy_align
    model.loss(imgs, samples)
    stages = 2  # decoder stages of the synthetic config
    # one Hungarian matching per stage and pass (plain, enhanced), none for the alignment
    assert len(calls) == 2 * stages
    assert len(aligned) == 2
    for match, recorded in zip(aligned, (calls[stages - 1], calls[-1])):
        assert all(a is b for a, b in zip(match, recorded[:3]))
    assert len(aligned[0][0]) == 5  # 3 + 2 pseudo-objects, all matched


def test_frozen_backbone_is_unchanged_by_a_training_step():
    model = build(freeze_backbone=True)
    model.train()
    assert not model.backbone.training  # BatchNorm statistics stay fixed too
    before = copy.deepcopy(model.backbone.state_dict())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    imgs, samples = batch()
    total(model.loss(imgs, samples)).backward()
    opt.step()
    assert all(not p.requires_grad for p in model.backbone.parameters())
    after = model.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # the rest of the model did move
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.neck.parameters())


@pytest.mark.parametrize('counts', [(3, 0), (0, 0), (1, 1)])
def test_images_with_no_or_one_pseudo_object(counts):
    model = build()
    model.train()
    imgs, samples = batch(counts)
    losses = model.loss(imgs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    total(losses).backward()
    if counts == (0, 0):
        assert losses['loss_align'] == 0 and losses['enh.loss_align_token'] == 0


def test_missing_embeddings_are_a_clear_error():
    model = build()
    imgs, samples = batch()
    del samples[0].gt_instances.embeddings
    with pytest.raises(ValueError, match='PackPseudoLabelInputs'):
        model.loss(imgs, samples)


def test_plain_pass_equals_the_fine_tuning_forward_with_the_same_weights():
    pre = build().eval()
    # the fine-tuning architecture, on the pseudo-class tree (same class count)
    fine = build(PLAIN, seed=1, label_tree=pre.label_tree).eval()
    missing, unexpected = fine.load_state_dict(pre.state_dict(), strict=False)
    assert missing == []
    assert sorted(unexpected) == sorted(pretrain_only_keys(pre.state_dict()))
    imgs, _ = batch()
    with torch.no_grad():
        _, stages_pre = pre.forward_stages(imgs)
        _, stages_fine = fine.forward_stages(imgs)
    for a, b in zip(stages_pre, stages_fine):
        assert torch.equal(a.logits, b.logits) and torch.equal(a.boxes, b.boxes)


def test_converter_output_loads_with_exactly_the_expected_missing_keys(tmp_path):
    from mmengine.runner import load_checkpoint

    from bhcl.utils.class_order import CLASS_ORDER_KEY, recorded_class_order
    from tools.model_converters import mutdet_to_finetune as conv
    pre = build()
    ckpt = tmp_path / 'pre.pth'
    torch.save(dict(state_dict=pre.state_dict(),
                    meta=dict(cfg=Config.fromfile(PRETRAIN).pretty_text)), ckpt)
    out = tmp_path / 'init.pth'
    report = conv.main([str(ckpt), FINETUNE, str(out)])
    fine = build(FINETUNE, seed=3)
    fine_state = fine.state_dict()
    hcl_keys = {k for k in fine_state if k.startswith('hierarchy.loss_hcl.')}
    expected_missing = set(fine.class_dependent_keys()) | hcl_keys
    assert set(report['missing']) == expected_missing
    assert set(report['dropped_pretrain_only']) == set(pretrain_only_keys(pre.state_dict()))
    assert set(report['dropped_class_dependent']) == set(pre.class_dependent_keys())
    load_checkpoint(fine, str(out), map_location='cpu', strict=False)
    loaded = fine.state_dict()
    # the class-order record is the fine-tuning model's own, not inherited
    assert recorded_class_order(loaded) == list(fine.label_tree.classes)
    inherited = [k for k in loaded if k not in expected_missing and k != CLASS_ORDER_KEY]
    assert inherited
    pre_state = pre.state_dict()
    assert all(torch.equal(loaded[k], pre_state[k]) for k in inherited)


def test_converter_refuses_a_different_decoder_depth(tmp_path):
    from tools.model_converters import mutdet_to_finetune as conv
    cfg = Config.fromfile(PRETRAIN)
    cfg.model.decoder.num_layers = 3
    ckpt = tmp_path / 'pre.pth'
    torch.save(dict(state_dict={}, meta=dict(cfg=cfg.pretty_text)), ckpt)
    with pytest.raises(ValueError, match='decoder.num_layers: 3'):
        conv.main([str(ckpt), FINETUNE, str(tmp_path / 'x.pth')])


@pytest.mark.parametrize('finetune', [
    'bhcl-decoupled_orientedformer-r50_4xb2-72e_shiprs_mutdet-init.py',
    'bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v1_mutdet-init.py',
    'bhcl-decoupled_orientedformer-r50_4xb2-12e_fair1m-v2_mutdet-init.py'])
@pytest.mark.parametrize('pretrain', [
    'mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_dota-v1.0.py',
    'mutdet-pretrain_orientedformer-decoupled-r50_4xb2-36e_dota-v1.0.py',
    'mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_shiprs.py',
    'mutdet-pretrain_orientedformer-decoupled-r50_4xb2-12e_fair1m.py'])
def test_paper_pretraining_configs_match_their_fine_tuning_models(pretrain, finetune):
    from tools.model_converters import mutdet_to_finetune as conv
    pre = Config.fromfile(osp.join(CONFIG_DIR, 'mutdet', pretrain))
    fine = Config.fromfile(osp.join(CONFIG_DIR, 'mutdet', finetune))
    conv.check_architecture(pre.model, fine.model, pretrain, finetune)
    assert fine.load_from and pre.model.get('freeze_backbone', True)
    assert len(pre.model.label_tree['paths']) == pre.train_dataloader.dataset.num_classes


def test_alignment_pairs_each_matched_query_and_token_with_its_own_object():
    from mmdet.models.task_modules import AssignResult
    pre = build()
    torch.manual_seed(0)
    b, n, c = 2, 30, 64
    objects = torch.randn(b, 3, c)
    seen = []

    class Spy(torch.nn.Module):
        def forward(self, pred, target):
            seen.append((pred, target))
            return pred.sum() * 0

    pre.loss_align = Spy()
    # query alignment: positives (image, query, object) fixed by hand
    stage = type('S', (), {})()
    stage.cls_feats = torch.randn(b, n, c)
    match = (torch.tensor([0, 1, 1]), torch.tensor([5, 7, 2]), torch.tensor([2, 0, 1]))
    pre.query_alignment(stage, match, objects)
    pred, target = seen[-1]
    assert torch.equal(target, objects[[0, 1, 1], [2, 0, 1]])
    assert torch.allclose(pred, pre.query_embed_head(stage.cls_feats[[0, 1, 1], [5, 7, 2]]))
    # token alignment: candidate j of image 0 (location ids[j]) matched to object gt_inds[j]-1
    tokens = torch.randn(b, 50, c)
    ids = torch.tensor([40, 3, 17])
    head = dict(main=[(torch.rand(3, 16), torch.rand(3, 5) * 10 + 5, ids),
                      (torch.rand(0, 16), torch.rand(0, 5), ids[:0])])
    gts = [InstanceData(bboxes=torch.rand(3, 5), labels=torch.zeros(3, dtype=torch.long)),
           InstanceData(bboxes=torch.rand(0, 5), labels=torch.zeros(0, dtype=torch.long))]
    pre.assigner.assign = lambda *a, **k: AssignResult(3, torch.tensor([0, 3, 1]), None,
                                                       labels=None)
    pre.token_alignment(head, tokens, objects, gts, [{}, {}])
    pred, target = seen[-1]
    assert torch.equal(target, objects[0, [2, 0]])
    assert torch.allclose(pred, pre.token_embed_head(tokens[0, [3, 17]]))


def _enhanced_inputs(model, imgs, samples):
    metas = [s.metainfo for s in samples]
    feats = model.extract_feat(imgs)
    objects, obj_mask = model.pad_objects([s.gt_instances.embeddings for s in samples])
    token_mask = model.token_padding_mask(feats, metas, tuple(imgs.shape[-2:]))
    maps, obj, tok = model.enhance(feats, objects, obj_mask, token_mask)
    return feats, objects, obj_mask, token_mask, maps, obj, tok


@pytest.mark.parametrize('selection', ['similarity_x_logit', 'similarity_x_score'])
def test_enhanced_pass_ranks_locations_by_similarity_x_objectness(selection):
    model = build(enhanced_selection=selection).eval()
    imgs, samples = batch()
    with torch.no_grad():
        _, _, obj_mask, token_mask, maps, obj, tok = _enhanced_inputs(model, imgs, samples)
        dense = model.query_head(maps)
        ranking = model.token_similarity_ranking(tok, obj, obj_mask, token_mask, dense)
        # written out location by location, in float64
        score = torch.cat([s.flatten(2) for s in dense['main'][0]], 2).max(1).values.double()
        objectness = torch.log(score / (1 - score)) if selection.endswith('logit') else score
        emb = model.token_embed_head(tok).double()
        for j, s in enumerate(samples):
            n = len(s.gt_instances)
            for loc in range(0, tok.shape[1], 37):
                sims = [torch.dot(emb[j, loc], obj[j, i].double()) /
                        (emb[j, loc].norm() * obj[j, i].double().norm()) for i in range(n)]
                expected = max(sims) * objectness[j, loc]
                torch.testing.assert_close(ranking[j, loc].double(), expected,
                                           atol=1e-4, rtol=1e-4)
        # the enhanced pass's first query sits at the best-ranked location
        head, _ = model.decode(maps, None, lambda d: model.token_similarity_ranking(
            tok, obj, obj_mask, token_mask, d))
        plain_order, _ = model.decode(maps)
    for j in range(len(samples)):
        assert head['main'][j][2][0] == ranking[j].argmax()
        assert plain_order['main'][j][2][0] == score[j].argmax()


def test_loss_selects_the_enhanced_queries_by_the_ranking_and_the_plain_ones_by_score():
    model = build()
    model.train()
    imgs, samples = batch()
    rankings = []
    select = model.query_head.select

    def spy(dense, ranking=None):
        rankings.append(ranking)
        return select(dense, ranking)

    model.query_head.select = spy
    model.loss(imgs, samples)
    assert rankings[0] is None and rankings[1] is not None
    none_model = build(enhanced_selection=None)
    none_model.train()
    none_model.query_head.select, rankings[:] = spy, []
    none_model.loss(imgs, samples)
    assert rankings == [None, None]
    with pytest.raises(ValueError, match='enhanced_selection'):
        build(enhanced_selection='similarity')


def test_batch_padding_is_masked_in_the_enhancement_and_the_selection():
    model = build().eval()
    imgs, samples = batch()
    samples[0].set_metainfo(dict(img_shape=(96, 128)))  # rows 96..127 are batch padding
    with torch.no_grad():
        feats, objects, obj_mask, token_mask, maps, obj, tok = _enhanced_inputs(
            model, imgs, samples)
        # nearest resizing: row r of a level of height h is padding when r * 128 / h >= 96
        expected = []
        for f in feats:
            h, w = f.shape[-2:]
            rows = torch.arange(h)[:, None].expand(h, w)
            expected.append((rows * (128 // h) >= 96).flatten())
        assert torch.equal(token_mask[0], torch.cat(expected))
        assert not token_mask[1].any() and token_mask[0].any()
        # other values at the padded locations change nothing of image 0's valid outputs
        start, noisy = 0, []
        for f in feats:
            h, w = f.shape[-2:]
            pad = token_mask[0, start:start + h * w].view(h, w)
            g = f.clone()
            g[0][:, pad] = 100 * torch.randn_like(g[0][:, pad])
            noisy.append(g)
            start += h * w
        _, obj2, tok2 = model.enhance(noisy, objects, obj_mask, token_mask)
        torch.testing.assert_close(obj2, obj)
        valid = ~token_mask[0]
        torch.testing.assert_close(tok2[0, valid], tok[0, valid])
        # (without the mask the padded values do reach the objects)
        _, unmasked, _ = model.enhance(feats, objects, obj_mask)
        _, unmasked2, _ = model.enhance(noisy, objects, obj_mask)
        assert not torch.allclose(unmasked2[0], unmasked[0], atol=1e-3)
        ranking = model.token_similarity_ranking(tok, obj, obj_mask, token_mask,
                                                 model.query_head(maps))
        assert torch.isinf(ranking[0, token_mask[0]]).all()
        head, _ = model.decode(maps, None, lambda d: model.token_similarity_ranking(
            tok, obj, obj_mask, token_mask, d))
    assert not token_mask[0, head['main'][0][2]].any()  # no candidate in the padding
    model.train()
    losses = model.loss(imgs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
