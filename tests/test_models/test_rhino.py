"""RHINO (rotated DINO) at a tiny size on CPU: losses and gradients, denoising groups,
leaf-only rotated predictions, overfitting one batch."""
import copy

import pytest
import torch
from mmdet.structures import DetDataSample
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS
from mmrotate.structures.bbox import RotatedBoxes

import bhcl  # noqa: F401

C = 32
TREE = dict(paths=['A', 'A/a1', 'A/a2', 'B', 'B/b1', 'B/b2'])
ATTN = dict(embed_dims=C, num_heads=4, dropout=0.0)
FFN = dict(embed_dims=C, feedforward_channels=64, ffn_drop=0.0)
CFG = dict(
    type='RHINO', num_queries=20, with_box_refine=True, as_two_stage=True, label_tree=TREE,
    num_feature_levels=2,
    data_preprocessor=dict(type='mmdet.DetDataPreprocessor', mean=[0, 0, 0], std=[1, 1, 1],
                           bgr_to_rgb=False, pad_size_divisor=1, boxtype2tensor=False),
    backbone=dict(type='mmdet.ResNet', depth=18, num_stages=4, out_indices=(2, 3),
                  norm_cfg=dict(type='BN'), init_cfg=None),
    neck=dict(type='mmdet.ChannelMapper', in_channels=[256, 512], kernel_size=1,
              out_channels=C, act_cfg=None, norm_cfg=dict(type='GN', num_groups=8), num_outs=2),
    encoder=dict(num_layers=1, layer_cfg=dict(self_attn_cfg=dict(ATTN, num_levels=2),
                                              ffn_cfg=FFN)),
    decoder=dict(num_layers=2, return_intermediate=True, post_norm_cfg=None,
                 layer_cfg=dict(self_attn_cfg=ATTN, cross_attn_cfg=dict(ATTN, num_levels=2),
                                ffn_cfg=FFN)),
    positional_encoding=dict(num_feats=C // 2, normalize=True, offset=0.0, temperature=20),
    bbox_head=dict(type='RotatedDINOHead', num_classes=1, embed_dims=C, sync_cls_avg_factor=True,
                   loss_cls=dict(type='mmdet.FocalLoss', use_sigmoid=True, gamma=2.0,
                                 alpha=0.25, loss_weight=1.0),
                   loss_bbox=dict(type='mmdet.L1Loss', loss_weight=5.0),
                   loss_iou=dict(type='GDLoss', loss_type='kld', fun='log1p', tau=1.0,
                                 loss_weight=5.0)),
    dn_cfg=dict(label_noise_scale=0.5, box_noise_scale=1.0, max_groups=30,
                group_cfg=dict(dynamic=True, num_groups=None, num_dn_queries=10)),
    train_cfg=dict(assigner=dict(type='mmdet.HungarianAssigner', match_costs=[
        dict(type='mmdet.FocalLossCost', weight=2.0),
        dict(type='HausdorffCornerCost', weight=5.0),
        dict(type='GaussianKLDCost', weight=5.0)])),
    test_cfg=dict(max_per_img=50))

def build(seed=0, **overrides):
    init_default_scope('mmrotate')
    cfg = copy.deepcopy(CFG)
    cfg.update(overrides)
    torch.manual_seed(seed)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def batch(counts=(3, 1)):
    g = torch.Generator().manual_seed(0)
    imgs = torch.randn(len(counts), 3, 96, 128, generator=g)
    boxes = torch.tensor([[30., 30, 30, 10, 0.3], [80, 60, 40, 14, -0.5], [100, 20, 18, 12, 1.0]])
    labels = torch.tensor([1, 2, 4])
    samples = []
    for n in counts:
        s = DetDataSample(metainfo=dict(img_shape=(96, 128), ori_shape=(96, 128),
                                        batch_input_shape=(96, 128), scale_factor=(1., 1.),
                                        pad_shape=(96, 128)))
        s.gt_instances = InstanceData(bboxes=RotatedBoxes(boxes[:n].clone()),
                                      labels=labels[:n].clone())
        samples.append(s)
    return imgs, samples


def total(losses):
    return sum(v for k, v in losses.items() if 'loss' in k)


def decoupled_decoder():
    return dict(CFG['decoder'], layer_cfg=dict(CFG['decoder']['layer_cfg'],
                                                type='DecoupledRotatedDecoderLayer'))


@pytest.mark.parametrize('decoupled', [False, True])
@pytest.mark.parametrize('counts', [(3, 1), (2, 0)])
def test_losses_are_finite_and_every_parameter_gets_a_gradient(counts, decoupled):
    model = (build(decoder=decoupled_decoder()) if decoupled else build()).train()
    imgs, samples = batch(counts)
    losses = model.loss(imgs, samples)
    keys = {f'{p}loss_{k}' for p in ('s0.', 's1.', 'enc_') for k in ('cls', 'bbox', 'iou')}
    keys |= {f'{p}dn_loss_{k}' for p in ('s0.', 's1.') for k in ('cls', 'bbox', 'iou')}
    assert set(losses) == keys
    assert all(torch.isfinite(v).all() for v in losses.values())
    total(losses).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


@pytest.mark.parametrize('decoupled', [False, True])
def test_a_batch_without_objects_trains(decoupled):
    """RHINO's configs keep images without objects (filter_empty_gt=False)."""
    model = (build(decoder=decoupled_decoder()) if decoupled else build()).train()
    imgs, samples = batch((0, 0))
    losses = model.loss(imgs, samples)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert float(losses['s1.dn_loss_cls']) == 0 and float(losses['s1.loss_bbox']) == 0
    total(losses).backward()
    assert model.bbox_head.cls_branches[0].weight.grad.abs().sum() > 0


def test_denoising_groups_are_capped_and_boxes_are_rotated():
    model = build(dn_cfg=dict(CFG['dn_cfg'], max_groups=2,
                              group_cfg=dict(dynamic=True, num_groups=None,
                                             num_dn_queries=100))).train()
    imgs, samples = batch()
    _, _, _, dn_meta = model.dn_query_generator(samples)
    assert dn_meta['num_denoising_groups'] == 2  # 100 // 3 = 33 groups without the cap
    assert dn_meta['num_denoising_queries'] == 2 * 2 * 3


@pytest.mark.parametrize('decoupled', [False, True])
def test_prediction_keeps_the_leaves_and_returns_rotated_boxes(decoupled):
    model = (build(decoder=decoupled_decoder()) if decoupled else build()).eval()
    imgs, samples = batch()
    with torch.no_grad():
        out = model.predict(imgs, samples)
    pred = out[0].pred_instances
    assert pred.bboxes.shape == (50, 5)
    assert set(pred.labels.tolist()) <= {1, 2, 4, 5}  # A and B are internal nodes
    assert torch.all(pred.scores[:-1] >= pred.scores[1:])


def test_overfitting_one_batch_lowers_the_loss():
    model = build().train()
    imgs, samples = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(50):
        torch.manual_seed(0)  # the same denoising noise every step
        loss = total(model.loss(imgs, copy.deepcopy(samples)))
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < 0.7 * first


def test_decoupled_streams_classes_from_the_first_half_boxes_from_the_second():
    model = build(decoder=decoupled_decoder()).train()
    assert model.bbox_head.num_streams == 2 and model.decoder.decoupled
    for branch in model.bbox_head.reg_branches:  # zero-initialised: no gradient to see
        torch.nn.init.normal_(branch[-1].weight)
    hidden = torch.randn(2, 2, 7, 2 * C, requires_grad=True)
    refs = torch.rand(3, 2, 7, 5)
    cls, box = model.bbox_head(hidden, refs)
    cls.sum().backward(retain_graph=True)
    assert hidden.grad[..., C:].abs().sum() == 0 and hidden.grad[..., :C].abs().sum() > 0
    hidden.grad = None
    box.sum().backward()
    assert hidden.grad[..., :C].abs().sum() == 0 and hidden.grad[..., C:].abs().sum() > 0


HCL = dict(type='HierarchicalContrastiveLoss', in_channels=C, hidden_channels=64,
           out_channels=16, temperature=0.1, loss_weight=0.6)


@pytest.mark.parametrize('balanced', [False, True])
def test_hcl_on_the_matched_classification_queries_of_every_layer(balanced):
    hcl = dict(HCL, balance=True, prototype_bank=dict(type='EMAPrototypeBank', epsilon=0.1),
               warmup_epochs=1) if balanced else HCL
    model = build(decoder=decoupled_decoder(), loss_hcl=hcl)
    model.set_epoch(3)
    model.train()
    seen = []
    for layer, loss in enumerate(model.hierarchy.loss_hcl):
        original = loss.forward

        def spy(features, labels, classifier_weight=None, _orig=original, _layer=layer):
            seen.append((_layer, features, labels))
            return _orig(features, labels, classifier_weight=classifier_weight)
        loss.forward = spy
    imgs, samples = batch((3, 1))
    losses = model.loss(imgs, samples)
    assert {'s1.loss_hcl_lv1', 's0.loss_hcl_lv1'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    # one-to-one matching of the matching queries only: one feature per object, C wide
    # (the classification half), labelled with the objects' nodes
    assert [layer for layer, _, _ in seen] == [0, 1]
    for _, features, labels in seen:
        assert features.shape == (4, C)
        assert sorted(labels.tolist()) == [1, 1, 2, 4]
    total(losses).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []


def test_joint_dn_matching_gives_background_to_positives_a_matching_query_beats():
    from bhcl.structures.box_coding import normalize_gt_rboxes
    head = build(bbox_head=dict(CFG['bbox_head'], dn_joint_matching=True)).bbox_head
    meta = dict(img_shape=(96, 128))
    gt_boxes = torch.tensor([[30., 30, 30, 10, 0.3], [90, 60, 40, 14, 1.2]])
    gt = InstanceData(bboxes=RotatedBoxes(gt_boxes), labels=torch.tensor([1, 4]))
    dn_meta = dict(num_denoising_groups=2, num_denoising_queries=2 * 2 * 2)
    labels = head._get_dn_targets_single(gt, meta, dn_meta)[0]
    assert labels.tolist() == [1, 4, 6, 6, 1, 4, 6, 6]  # K = 6 nodes: 6 is background
    exact = normalize_gt_rboxes(gt_boxes, meta['img_shape'])
    far = exact.clone()
    far[:, :2] = (far[:, :2] + 0.5) % 1
    confident = torch.full((2, 6), -6.0)
    confident[0, 1] = confident[1, 4] = 6.0
    unsure = torch.full((2, 6), -6.0)
    # matching query 0 sits on object 0 and is confident; matching query 1 is far away
    match_box = torch.cat([exact[:1], far[1:]])
    match_cls = torch.cat([confident[:1], unsure[1:]])
    # group 0: positive 0 far away, positive 1 on object 1 (confident)
    # group 1: positive 0 on object 0 but unsure (matching query 0 is better), positive 1
    # on object 1 (confident)
    dn_box = torch.cat([far[:1], exact[1:], far, exact, far])
    dn_cls = torch.cat([unsure[:1], confident[1:], unsure, unsure[:1], confident[1:], unsure])
    out = head.joint_dn_class_targets(labels, dn_cls, dn_box, match_cls, match_box, gt, meta,
                                      dn_meta)
    assert out.tolist() == [6, 4, 6, 6, 6, 4, 6, 6]
    # positive 0 of both groups lost object 0 to matching query 0; negatives unchanged;
    # the fixed targets are only relabelled, never rearranged
    assert labels.tolist() == [1, 4, 6, 6, 1, 4, 6, 6]


def test_joint_dn_matching_in_the_full_loss():
    imgs, samples = batch((3, 1))
    out, calls = {}, []
    for joint in (False, True):
        model = build(bbox_head=dict(CFG['bbox_head'], dn_joint_matching=joint)).train()
        head = model.bbox_head
        original = head.joint_dn_class_targets

        def spy(labels, *args, _orig=original):
            new = _orig(labels, *args)
            calls.append(int((new != labels).sum()))
            return new
        head.joint_dn_class_targets = spy
        torch.manual_seed(0)  # the same denoising noise
        losses = model.loss(imgs, copy.deepcopy(samples))
        assert all(torch.isfinite(v).all() for v in losses.values())
        out[joint] = losses
    assert len(calls) == 2 * 2  # decoder layers x images, with joint matching only
    # only the denoising classification targets can change
    for key in ('s1.loss_cls', 's1.loss_bbox', 's1.dn_loss_bbox', 's1.dn_loss_iou'):
        torch.testing.assert_close(out[True][key], out[False][key])
    same = torch.equal(out[True]['s1.dn_loss_cls'], out[False]['s1.dn_loss_cls'])
    assert same == (calls[-2:] == [0, 0])  # the last layer's relabelled positives


def test_category_query_classifier_with_bhcl_on_decoupled_rhino():
    cq = dict(type='CategoryQueries', topk=3, num_heads=4, feat_level=-1)
    hcl = dict(HCL, balance=True, prototype_bank=dict(type='ClassifierPrototypeBank'))
    model = build(decoder=decoupled_decoder(),
                  classifier=cq, loss_hcl=hcl).train()
    head = model.bbox_head
    assert head.cls_branches[0].out_features == C  # projections onto the category queries
    assert head.cls_branches[-1].out_features == 6  # the encoder proposals' linear scorer
    imgs, samples = batch((3, 1))
    losses = model.loss(imgs, samples)
    assert {'loss_presence', 's1.loss_cls', 's1.dn_loss_cls', 's1.loss_hcl_lv1'} <= set(losses)
    assert all(torch.isfinite(v).all() for v in losses.values())
    total(losses).backward()
    assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
    assert model.hierarchy.category_queries.queries.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        pred = model.predict(imgs, samples)[0].pred_instances
    # top 3 categories per image, leaves only: at most 3 distinct labels, all leaves
    assert set(pred.labels.tolist()) <= {1, 2, 4, 5} and len(set(pred.labels.tolist())) <= 3


def test_group_hungarian_equals_the_block_diagonal_problem():
    """RHINO solves all groups at once: block g = [positives of group g; matching queries]
    x ground truths, +100 off the blocks. Group by group gives the same matching."""
    from scipy.optimize import linear_sum_assignment

    from bhcl.models.dense_heads.rotated_dino_head import dn_group_hungarian
    g = torch.Generator().manual_seed(0)
    groups, n, q = 4, 3, 6
    dn_cost = torch.rand(groups, n, n, generator=g) * 10 - 3
    match_cost = torch.rand(q, n, generator=g) * 10 - 3
    blocks = [torch.cat([dn_cost[i], match_cost]) for i in range(groups)]
    full = torch.block_diag(*blocks) + 100 * ~torch.block_diag(
        *[torch.ones_like(b) for b in blocks]).bool()
    rows, cols = linear_sum_assignment(full.numpy())
    assigned = torch.full((groups * (n + q),), -1, dtype=torch.long)
    assigned[torch.as_tensor(rows)] = torch.as_tensor(cols) % n
    expected = assigned.view(groups, n + q)[:, :n]
    assert torch.equal(dn_group_hungarian(dn_cost, match_cost), expected)
    assert (expected == -1).any() and (expected >= 0).any()  # both cases occur


def test_the_head_splits_its_queries_as_the_decoder_layer_type():
    """The head's split follows the layer type alone; no config sets it."""
    for model, streams in ((build(), 1), (build(decoder=decoupled_decoder()), 2)):
        assert model.bbox_head.num_streams == model.decoder.layer_type.num_streams == streams
        query = torch.randn(2, 3, streams * C)
        for got, want in zip(model.bbox_head.split_streams(query),
                             model.decoder.layers[0].split(query)):
            torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize('key, value, message', [
    ('decoupled', True, r"decoupled=True is no longer an option.*remove bbox_head\.decoupled "
                        r"and set model\.decoder\.layer_cfg\.type=DecoupledRotatedDecoderLayer"),
    ('num_streams', 2, r'remove model\.bbox_head\.num_streams.*decoder layer type')])
def test_a_config_cannot_set_how_the_head_splits_its_queries(key, value, message):
    cfg = copy.deepcopy(CFG)
    cfg['bbox_head'][key] = value
    init_default_scope('mmrotate')
    with pytest.raises((TypeError, ValueError), match=message):
        MODELS.build(cfg)
