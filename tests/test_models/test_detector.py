"""OrientedQueryDETR built from the synthetic smoke configs: losses, gradients,
decoupling at detector level, BHCL wiring, inference on leaves, overfitting."""
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
from torch.testing import assert_close

import bhcl.models.detectors  # noqa: F401
import bhcl.models.losses  # noqa: F401
from bhcl.models.layers.hierarchical_classification import predict_mask
from tests.conftest import CONFIG_DIR

SMOKE = {
    'baseline': 'orientedformer_r18_1xb4-12e_synthetic.py',
    'decoupled': 'orientedformer-decoupled_r18_1xb4-12e_synthetic.py',
    'bhcl': 'bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
    'cq': 'cq-bhcl-decoupled_orientedformer-r18_1xb2-12e_synthetic.py',
}


def model_cfg(variant):
    return Config.fromfile(osp.join(CONFIG_DIR, 'synthetic', SMOKE[variant])).model


def build_model(cfg, seed=0):
    """A detector from a model config, seeded, initialised, past the BHCL warm-up."""
    init_default_scope('mmrotate')
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    model.set_epoch(5)  # past the BHCL warm-up: prototypes and balancing active
    return model


def build(variant, seed=0):
    return build_model(model_cfg(variant), seed)


def total_loss(losses):
    """What mmengine optimises: the sum of the entries whose key contains 'loss'."""
    return sum(v for k, v in losses.items() if 'loss' in k)


def batch(num_images=2, size=128, seed=0, empty_last=False):
    g = torch.Generator().manual_seed(seed)
    imgs = torch.randn(num_images, 3, size, size, generator=g)
    boxes = torch.tensor([[30., 30., 24., 10., 0.2], [80., 90., 40., 14., -0.5],
                          [96., 32., 18., 12., 1.0]])
    labels = torch.tensor([2, 11, 14])  # leaves of the synthetic tree, and one internal node:
    labels[1] = 10  # 'Aircraft/Airliner' ("Other Airliner" reallocated to the node)
    samples = []
    for i in range(num_images):
        s = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size),
                                        scale_factor=(1., 1.), batch_input_shape=(size, size)))
        n = 0 if (empty_last and i == num_images - 1) else 3
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(boxes[:n].clone()),
                                      labels=labels[:n].clone())
        samples.append(s)
    return imgs, samples


@pytest.mark.parametrize('variant', ['baseline', 'decoupled', 'bhcl', 'cq'])
def test_loss_backward_step_every_parameter_gets_a_gradient(variant):
    model = build(variant)
    imgs, samples = batch()
    before = [s.gt_instances.bboxes.tensor.clone() for s in samples]
    losses = model.loss(imgs, samples)
    expected = {'dense.loss_cls', 'dense.loss_iou', 'dense_aux.loss_cls', 'dense_aux.loss_iou'}
    expected |= {f's{i}.{k}' for i in range(2)
                 for k in ('loss_cls', 'loss_bbox', 'loss_iou', 'pos_acc')}
    if variant in ('bhcl', 'cq'):
        expected |= {f's{i}.loss_hcl_lv{lv}' for i in range(2) for lv in (1, 2)}
    if variant == 'cq':
        expected.add('loss_presence')
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    total_loss(losses).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert missing == []
    torch.optim.AdamW(model.parameters(), 1e-3).step()
    for b, s in zip(before, samples):  # inputs untouched
        assert_close(s.gt_instances.bboxes.tensor, b, rtol=0, atol=0)


def test_batch_with_an_image_without_objects():
    model = build('bhcl')
    imgs, samples = batch(empty_last=True)
    losses = model.loss(imgs, samples)
    assert all(torch.isfinite(v) for v in losses.values())


def test_decoupling_is_real_at_detector_level():
    model = build('decoupled')
    torch.nn.init.normal_(model.reg_branches[-1][-1].weight, std=0.01)  # zero init blocks grads
    imgs, _ = batch()
    _, stages = model.forward_stages(imgs)
    last = stages[-1]
    cls_branch, loc_branch = model.layers[-1].branches
    model.zero_grad()
    last.logits.sigmoid().sum().backward(retain_graph=True)
    for p in list(loc_branch.parameters()) + list(model.reg_branches[-1].parameters()):
        assert p.grad is None or not p.grad.any()
    model.zero_grad()
    last.boxes.sum().backward()
    for p in list(cls_branch.parameters()) + list(model.cls_branches[-1].parameters()):
        assert p.grad is None or not p.grad.any()
    assert any(p.grad is not None and p.grad.any() for p in loc_branch.parameters())


def test_set_epoch_reaches_every_stage_loss():
    model = build('bhcl')
    assert len(model.hierarchy.loss_hcl) == 2
    model.set_epoch(0)
    assert [m.epoch for m in model.hierarchy.loss_hcl] == [0, 0] and model.hierarchy.loss_hcl[0].in_warmup
    model.set_epoch(7)
    assert [m.epoch for m in model.hierarchy.loss_hcl] == [7, 7] and not model.hierarchy.loss_hcl[1].in_warmup
    # one prototype bank per stage
    assert model.hierarchy.loss_hcl[0].prototype_bank is not model.hierarchy.loss_hcl[1].prototype_bank


def test_config_is_not_mutated_by_building():
    cfg = model_cfg('bhcl')
    frozen = copy.deepcopy(cfg)
    init_default_scope('mmrotate')
    MODELS.build(cfg)
    assert cfg == frozen


def test_predict_keeps_leaves_and_rescales():
    model = build('decoupled').eval()
    imgs, samples = batch()
    with torch.no_grad():
        res1 = model.predict(imgs, copy.deepcopy(samples))
        for s in samples:
            s.set_metainfo(dict(scale_factor=(2., 2.)))
        res2 = model.predict(imgs, samples)
    leaves = set(model.label_tree.leaf_mask.nonzero()[0].tolist())
    for r1, r2 in zip(res1, res2):
        p1, p2 = r1.pred_instances, r2.pred_instances
        assert len(p1) == 100 and set(p1.labels.tolist()) <= leaves
        assert (p1.scores[:-1] >= p1.scores[1:]).all()
        b1, b2 = p1.bboxes, p2.bboxes
        assert_close(b2[:, :4], b1[:, :4] / 2)
        assert_close(b2[:, 4], b1[:, 4])


@pytest.mark.slow
@pytest.mark.parametrize('variant', ['baseline', 'bhcl', 'cq'])
def test_overfit_one_batch_lowers_the_loss(variant):
    model = build(variant)
    imgs, samples = batch(num_images=1)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    history = []
    for _ in range(25):
        losses = model.loss(imgs, samples)
        loss = total_loss(losses)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert sum(history[-3:]) / 3 < 0.7 * sum(history[:3]) / 3, history


def test_ground_truth_in_another_angle_convention_gives_the_same_loss():
    import math
    model = build('baseline')
    imgs, samples = batch()
    other = copy.deepcopy(samples)
    # the same boxes written with w and h swapped and the angle turned by pi/2 (no squares:
    # their angle is ambiguous modulo pi/2 in le90)
    for s in other:
        b = s.gt_instances.bboxes.tensor
        s.gt_instances.bboxes = RotatedBoxes(torch.stack(
            [b[:, 0], b[:, 1], b[:, 3], b[:, 2], b[:, 4] + math.pi / 2], 1))
    torch.manual_seed(0)
    losses = model.loss(imgs, samples)
    torch.manual_seed(0)
    losses_other = model.loss(imgs, other)
    for key in losses:
        assert_close(losses_other[key], losses[key], atol=1e-5, rtol=1e-5)


def test_internal_nodes_at_inference():
    """Leaves only by default; named internal nodes (or all) compete with their own score."""
    model = build('decoupled').eval()
    imgs, samples = batch()
    tree = model.label_tree
    internal = [k for k in range(tree.num_classes) if not tree.is_leaf(k)]
    with torch.no_grad():
        _, stages = model.forward_stages(imgs)
        logits = stages[-1].logits[0]
        default = model.predict_single(logits, stages[-1].boxes[0], samples[0].metainfo, False)
        assert not set(default.labels.tolist()) & set(internal)
        name = tree.classes[internal[1]]
        model.hierarchy.predict_mask = predict_mask(tree, [name])
        model.test_cfg['max_per_img'] = logits.numel()  # every (query, node) pair
        res = model.predict_single(logits, stages[-1].boxes[0], samples[0].metainfo, False)
        everything = predict_mask(tree, 'all')
    assert everything.all()
    picked = res.labels == internal[1]
    assert picked.sum() == len(logits)  # one per query
    assert set(res.labels[res.scores > 0].tolist()) == set(tree.leaf_ids) | {internal[1]}
    queries = [int((stages[-1].boxes[0] == b).all(1).nonzero()[0]) for b in
               res.bboxes.tensor[picked]]
    assert_close(res.scores[picked], logits[queries, internal[1]].sigmoid())
    with pytest.raises(ValueError, match='internal nodes'):
        predict_mask(tree, ['No Such Node'])


def test_category_queries_predict_only_selected_leaves():
    model = build('cq').eval()
    imgs, samples = batch()
    with torch.no_grad():
        head, _ = model.forward_stages(imgs)
        res = model.predict(imgs, samples)
    leaves = set(model.label_tree.leaf_mask.nonzero()[0].tolist())
    assert head['classes'].selected.sum(1).tolist() == [8, 8]  # top 8 of 16 nodes, no GT at test
    for sel, r in zip(head['classes'].selected, res):
        kept = set(sel.nonzero().squeeze(1).tolist())
        positive = r.pred_instances.labels[r.pred_instances.scores > 0]
        assert set(positive.tolist()) <= leaves & kept


def test_category_queries_loss_ignores_unselected_categories():
    """The classification loss does not change with the logits of categories
    outside an image's selection, and does with a selected one's."""
    model = build('cq')
    imgs, samples = batch()
    gts = [model._gt_instances(s) for s in samples]
    metas = [s.metainfo for s in samples]
    head, stages = model.forward_stages(imgs, [g.labels for g in gts])
    sel = head['classes'].selected
    n = stages[0].logits.shape[1]
    weight = sel[:, None, :].expand(-1, n, -1).flatten(0, 1).float()
    stage = stages[-1]
    base = model.stage_loss(1, stage, gts, metas, weight)['loss_cls']
    off = (~sel[0]).nonzero()[0, 0]
    on = sel[0].nonzero()[0, 0]
    for k, changes in ((off, False), (on, True)):
        logits = stage.logits.clone()
        logits[0, :, k] += 3.0
        moved = model.stage_loss(1, stage._replace(logits=logits), gts, metas,
                                 weight)['loss_cls']
        assert (abs(float((moved - base).detach())) > 1e-6) == changes
