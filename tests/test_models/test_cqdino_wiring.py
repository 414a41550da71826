"""CQ-DINO wired into both detectors (``CQDINOClassifier`` with the decoder layers'
``category_attn``): a real training step, the selection masking every classification
loss, the selection driving the choice of queries, category-query initialisation from
an embeddings file and the configuration errors."""
import copy
import os.path as osp

import pytest
import torch
from mmengine.config import Config

import bhcl.models.detectors  # noqa: F401
from bhcl.models.layers import CategoryEmbeddingsError, CategoryQueries
from bhcl.models.layers.hierarchical_classification import HierarchicalClassification
from bhcl.models.losses import AsymmetricPresenceLoss
from tests.conftest import CONFIG_DIR
from tests.test_models.test_detector import batch as detector_batch, build_model

CONFIGS = {
    'orientedformer': 'cqdino-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    'rhino': 'cqdino-bhcl-rhino-decoupled_r18_1xb2-12e_synthetic.py',
}


def model_cfg(detector):
    return Config.fromfile(osp.join(CONFIG_DIR, 'synthetic', CONFIGS[detector])).model


def build(cfg, seed=0):
    return build_model(cfg, seed).train()


def batch():
    """Two 64 x 64 images with three objects each (the detector tests' batch, halved)."""
    imgs, samples = detector_batch(size=64)
    for s in samples:
        s.gt_instances.bboxes.tensor[:, :4] *= 0.5
        s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64), batch_input_shape=(64, 64)))
    return imgs[:, :, :64, :64], samples


def total(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


@pytest.mark.parametrize('detector', ['orientedformer', 'rhino'])
def test_a_training_step_reaches_the_fusion_and_the_category_attention(detector):
    model = build(model_cfg(detector))
    imgs, samples = batch()
    losses = model.loss(imgs, samples)
    assert 'loss_presence' in losses
    assert all(torch.isfinite(v) for v in losses.values())
    total(losses).backward()
    cq = model.hierarchy.category_queries
    assert len(cq.fusion) == (1 if detector == 'orientedformer' else 2)
    layers = model.layers if detector == 'orientedformer' else model.decoder.layers
    groups = {'fusion': cq.fusion, 'category_attn': [layer.category_attn for layer in layers],
              'queries': [cq]}
    for name, modules in groups.items():
        for module in modules:
            grads = [p.grad for p in module.parameters()]
            assert all(g is not None and torch.isfinite(g).all() for g in grads), name
            assert sum(g.abs().sum() for g in grads) > 0, name
    model.eval()
    with torch.no_grad():
        results = model.predict(imgs, samples)
    selected = model.hierarchy.image_context(model.extract_feat(imgs)).selected
    for result, sel in zip(results, selected):  # inference never returns an unselected node
        assert sel[result.pred_instances.labels].all()


def test_the_presence_loss_is_asymmetric_and_ancestor_masked():
    model = build(model_cfg('orientedformer'))
    imgs, samples = batch()
    labels = [s.gt_instances.labels for s in samples]
    context = model.hierarchy.image_context(model.extract_feat(imgs), labels)
    target = torch.zeros_like(context.presence)
    for i, lab in enumerate(labels):
        target[i, lab] = 1.0
    reference = AsymmetricPresenceLoss(model.label_tree.to_config(), gamma_neg=7.0,
                                       gamma_pos=0.0, clip=0.05)(context.presence, target)
    got = model.hierarchy.presence_loss(context, labels)['loss_presence']
    torch.testing.assert_close(got, reference)
    # the authors' selection: exactly the top 8 by presence, annotated nodes not forced in
    top = context.presence.topk(8, dim=1).indices
    assert torch.equal(context.selection.indices, top)
    assert context.selected.sum(1).tolist() == [8, 8]


@pytest.mark.parametrize('detector', ['orientedformer', 'rhino'])
def test_keep_gt_forces_the_annotated_nodes_in_and_padding_trains(detector):
    cfg = model_cfg(detector)
    cfg.classifier.keep_gt = True
    cfg.classifier.topk = 1
    model = build(cfg)
    imgs, samples = batch()
    samples[1].gt_instances = samples[1].gt_instances[:1]  # 3 and 1 nodes: padded selection
    labels = [s.gt_instances.labels for s in samples]
    context = model.hierarchy.image_context(model.extract_feat(imgs), labels)
    for sel, lab in zip(context.selected, labels):
        assert sel[lab].all()
    assert context.selection.valid.tolist() == [[True] * 3, [True, False, False]]
    losses = model.loss(imgs, samples)
    assert all(torch.isfinite(v) for v in losses.values())
    total(losses).backward()


def _unselected_grads_are_zero(logits, selected):
    """Per image, the gradient of (B, N, K) logits is 0 on the unselected nodes and
    not 0 somewhere on the selected ones."""
    grad = logits.grad
    assert grad is not None
    for g, sel in zip(grad, selected):
        assert g[:, ~sel].abs().max() == 0
        assert g[:, sel].abs().max() > 0


def test_orientedformer_selection_masks_the_dense_and_stage_classification_losses():
    model = build(model_cfg('orientedformer'))
    imgs, samples = batch()
    gts = [model._gt_instances(s) for s in samples]
    metas = [s.metainfo for s in samples]
    head, stages = model.forward_stages(imgs, [gt.labels for gt in gts])
    selected = head['classes'].selected
    assert (~selected).any()
    for stage in stages:
        stage.logits.retain_grad()
    losses = model.detection_losses(head, stages, gts, metas)
    (losses['s0.loss_cls'] + losses['s1.loss_cls']).backward(retain_graph=True)
    for stage in stages:
        _unselected_grads_are_zero(stage.logits, selected)


def test_dense_head_classification_counts_the_selected_classes_only():
    model = build(model_cfg('orientedformer'))
    imgs, samples = batch()
    gts = [model._gt_instances(s) for s in samples]
    metas = [s.metainfo for s in samples]
    feats = model.extract_feat(imgs)
    dense = model.query_head(feats)
    _, _, main, aux = model.query_head.select(dense)
    k = model.num_classes
    selected = torch.zeros(2, k, dtype=torch.bool)
    selected[:, :k // 2] = True
    selected[:, 10] = True
    selected[0, 2] = False  # image 0's annotated leaf 2 left out: its positives are background
    scores = [c[0].detach().requires_grad_() for c in main]
    main = [(s, b, i) for s, (_, b, i) in zip(scores, main)]
    loss = model.query_head.branch_loss('main', main, gts, metas, selected)['loss_cls']
    loss.backward()
    for s, sel in zip(scores, selected):
        assert s.grad[:, ~sel].abs().max() == 0 and s.grad[:, sel].abs().max() > 0
    # an unselected class contributes nothing: changing the scores of the unselected
    # classes no object has (the others also steer the matching) leaves the loss as is
    moved = []
    for (s, b, i), sel in zip(main, selected):
        cols = [c for c in (~sel).nonzero()[:, 0].tolist() if c not in (2, 10, 14)]
        moved.append((s.detach().clone().index_fill_(1, torch.tensor(cols), 0.9), b, i))
    again = model.query_head.branch_loss('main', moved, gts, metas, selected)['loss_cls']
    torch.testing.assert_close(again, loss.detach())
    # without a selection the same change moves the loss
    plain = model.query_head.branch_loss('main', main, gts, metas)['loss_cls']
    plain_moved = model.query_head.branch_loss('main', moved, gts, metas)['loss_cls']
    assert abs(float(plain.detach() - plain_moved)) > 1e-3


def test_rhino_selection_masks_the_decoder_and_encoder_classification_losses():
    model = build(model_cfg('rhino'))
    imgs, samples = batch()
    feats = model.extract_feat(imgs)
    labels = [s.gt_instances.labels for s in samples]
    head_in = model.forward_transformer(feats, samples, model.class_context(feats, labels))
    classes = head_in['classes']
    assert (~classes.selected).any()
    all_cls, all_box = model.bbox_head(head_in['hidden_states'], head_in['references'],
                                       model.hierarchy, classes)
    all_cls.retain_grad()
    enc = head_in['enc_outputs_class'].detach().requires_grad_()
    losses, _ = model.bbox_head.loss_by_feat(
        all_cls, all_box, enc, head_in['enc_outputs_coord'],
        [s.gt_instances for s in samples], [s.metainfo for s in samples], head_in['dn_meta'],
        selected=classes.selected)
    sum(v for k, v in losses.items() if 'loss_cls' in k).backward()
    for layer_logits in all_cls.grad:
        for g, sel in zip(layer_logits, classes.selected):
            assert g[:, ~sel].abs().max() == 0
    _unselected_grads_are_zero(enc, classes.selected)


def test_queries_are_chosen_by_their_best_score_over_the_selected_categories():
    model = build(model_cfg('rhino'))
    imgs, samples = batch()
    feats = model.extract_feat(imgs)
    context = model.class_context(feats)
    logits = torch.randn(2, 50, model.label_tree.num_classes)
    idx = model.hierarchy.select_proposals(logits, context, 10)
    for b in range(2):  # loop reference
        keep = context.selection.indices[b][context.selection.valid[b]].tolist()
        best = [max(logits[b, n, c].item() for c in keep) for n in range(50)]
        expected = sorted(range(50), key=lambda n: -best[n])[:10]
        assert idx[b].tolist() == expected
    # OrientedFormer: the dense candidates' ranking key is the same rule
    of = build(model_cfg('orientedformer'))
    of_feats = of.extract_feat(imgs)
    of_context = of.hierarchy.image_context(of_feats)
    dense = of.query_head(of_feats)
    key = of.category_ranking(dense, of_context)
    scores = torch.cat([s.flatten(2) for s in dense['main'][0]], 2).transpose(1, 2)
    expected = (scores * of_context.selected[:, None].float()
                - 1e9 * (~of_context.selected[:, None]).float()).max(-1).values
    torch.testing.assert_close(key, expected)


def test_init_embeddings_start_the_category_queries(tmp_path):
    cfg = model_cfg('orientedformer')
    classes = list(build(cfg).label_tree.classes)
    emb = torch.randn(len(classes), 64)
    order = torch.randperm(len(classes))
    path = str(tmp_path / 'emb.pt')
    torch.save(dict(categories=[classes[i] for i in order.tolist()], embeddings=emb[order]),
               path)
    cfg.classifier.init_embeddings = path
    model = build(cfg)  # init_weights ran after construction: still the file's rows
    torch.testing.assert_close(model.hierarchy.category_queries.queries.detach(), emb)
    plain = CategoryQueries(cfg.label_tree, 64, init_embeddings=path)
    torch.testing.assert_close(plain.queries.detach(), emb)
    torch.save(dict(categories=classes[1:], embeddings=emb[1:]), path)
    with pytest.raises(CategoryEmbeddingsError, match='missing nodes of the label tree'):
        build(cfg)
    torch.save(dict(categories=classes, embeddings=emb[:, :8]), path)
    with pytest.raises(CategoryEmbeddingsError, match='dimension 8, the category queries 64'):
        build(cfg)


@pytest.mark.parametrize('detector', ['orientedformer', 'rhino'])
def test_classifier_and_decoder_layers_must_agree(detector):
    cfg = model_cfg(detector)
    no_attn = copy.deepcopy(cfg)
    del no_attn.decoder.layer_cfg['category_attn']
    with pytest.raises(ValueError, match='CQDINOClassifier without category_attn'):
        build(no_attn)
    plain = copy.deepcopy(cfg)
    plain.classifier = dict(type='CategoryQueries', topk=8, num_heads=4)
    with pytest.raises(ValueError, match='category_attn without CQDINOClassifier'):
        build(plain)


def test_rhino_needs_one_fusion_layer_per_encoder_layer():
    cfg = model_cfg('rhino')
    cfg.classifier.num_fusion_layers = 3
    with pytest.raises(ValueError, match=r'num_fusion_layers \(3\) must equal '
                                         r'model.encoder.num_layers \(2\)'):
        build(cfg)


def test_the_classifier_rejects_a_second_presence_weight():
    cfg = model_cfg('orientedformer')
    with pytest.raises(ValueError, match='loss_presence=dict'):
        HierarchicalClassification(cfg.label_tree, 2, 64,
                                   classifier=dict(cfg.classifier, loss_weight=2.0))


@pytest.mark.slow
@pytest.mark.parametrize('detector', ['orientedformer', 'rhino'])
def test_the_cqdino_configs_train_and_validate_through_the_runner(detector, tiny_synthetic,
                                                                 tmp_path):
    import sys

    from mmengine.runner import Runner

    from tests.conftest import REPO_ROOT
    from tests.test_models.test_detector_runner import cfg_options
    sys.path.insert(0, osp.join(REPO_ROOT, 'tools'))
    import train as train_tool
    config = osp.join(CONFIG_DIR, 'synthetic', CONFIGS[detector])
    args = train_tool.parse_args([config, '--work-dir', str(tmp_path / 'work'),
                                  '--cfg-options', *cfg_options(tiny_synthetic)])
    runner = Runner.from_cfg(train_tool.build_cfg(args))
    runner.train()
    assert runner.iter == 4 and runner.epoch == 1
    assert any(k.endswith('dota/mAP') for k in runner.message_hub.log_scalars)
    assert torch.isfinite(torch.as_tensor(runner.message_hub.get_scalar('train/loss').current()))
