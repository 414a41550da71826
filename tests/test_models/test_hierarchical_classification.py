"""The label tree's part of classification, shared by OrientedFormer and RHINO: one
masking rule at inference, internal nodes on RHINO, a RHINO head without per-call state
whose losses do not depend on the order of the per-layer calls, the moved config keys
and the load-time migration of older checkpoints' keys."""
import copy

import pytest
import torch
from torch.testing import assert_close

from bhcl.models.layers.hierarchical_classification import (HierarchicalClassification,
                                                             predict_mask, top_candidates)
from bhcl.structures import LabelTree
from tests.test_models import test_detector as oriented
from tests.test_models.test_rhino import CFG, HCL, batch, build, decoupled_decoder

CQ = dict(type='CategoryQueries', topk=3, num_heads=4, feat_level=-1)


def rhino_with_everything(seed=0):
    """Decoupled RHINO with HCL, category queries and joint denoising matching."""
    return build(seed, decoder=decoupled_decoder(), loss_hcl=HCL, classifier=CQ,
                 bbox_head=dict(CFG['bbox_head'], dn_joint_matching=True))


def plain_state(module):
    """A module's own attributes, without its parameters, buffers, submodules and mode."""
    return {k: v for k, v in vars(module).items()
            if k not in ('_parameters', '_buffers', '_modules', 'training')}


def watch_state(head, seen):
    """Record the head's attributes whenever it computes a layer's losses or predictions,
    i.e. in the middle of a call."""
    for name in ('matching_loss', 'denoising_loss', '_predict_by_feat_single'):
        original = getattr(head, name)

        def spy(*args, _orig=original, **kwargs):
            seen.append(plain_state(head))
            return _orig(*args, **kwargs)
        setattr(head, name, spy)


def test_top_candidates_never_return_a_masked_node():
    logits = torch.tensor([[2.0, 1.0, -1.0], [0.5, 3.0, -2.0]])
    allowed = torch.tensor([True, False, True])
    scores, query, labels = top_candidates(logits, 10, allowed)
    # 4 allowed pairs although 10 asked for; by descending score
    assert labels.tolist() == [0, 0, 2, 2] and query.tolist() == [0, 1, 0, 1]
    assert_close(scores, torch.tensor([2.0, 0.5, -1.0, -2.0]).sigmoid())
    scores, query, labels = top_candidates(logits, 2)
    assert labels.tolist() == [1, 0] and query.tolist() == [1, 0]


def test_predict_mask_names_the_internal_nodes_on_a_typo():
    tree = LabelTree.from_config(CFG['label_tree'])
    assert predict_mask(tree, None).tolist() == [False, True, True, False, True, True]
    assert predict_mask(tree, ['B']).tolist() == [False, True, True, True, True, True]
    assert predict_mask(tree, 'all').all()
    with pytest.raises(ValueError, match=r"internal nodes: \['A', 'B'\]"):
        predict_mask(tree, ['b'])


def test_both_detectors_own_one_hierarchical_classification():
    rhino = rhino_with_everything()
    of = oriented.build('cq')
    for model in (rhino, of):
        assert isinstance(model.hierarchy, HierarchicalClassification)
        assert model.hierarchy.category_queries is not None
    rhino.set_epoch(4)
    assert [m.epoch for m in rhino.hierarchy.loss_hcl] == [4, 4]
    # the decoder layers' class branches are projections with zero bias (the prior
    # sits in the category-query logits); the encoder proposals keep the prior
    head = rhino.bbox_head
    assert all(b.bias.abs().sum() == 0 for b in head.cls_branches[:head.num_decoder_layers])
    assert head.cls_branches[-1].bias.mean() < -4


def test_rhino_losses_repeat_and_leave_no_state_on_the_head():
    model = rhino_with_everything().train()
    head = model.bbox_head
    imgs, samples = batch((3, 1))
    seen = []
    watch_state(head, seen)
    before = plain_state(head)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the denoising noise
        runs.append(model.loss(imgs, copy.deepcopy(samples)))
    # nothing stored on the head during a call: 2 x (2 layers + encoder + 2 denoising)
    assert len(seen) == 10 and all(state == before for state in seen)
    assert sorted(runs[0]) == sorted(runs[1])
    assert {'s0.loss_hcl_lv1', 's1.loss_hcl_lv1', 'loss_presence', 's0.dn_loss_cls'} <= set(runs[0])
    for key in runs[0]:
        assert torch.equal(runs[0][key], runs[1][key]), key
    model.eval()
    with torch.no_grad():
        model.predict(imgs, copy.deepcopy(samples))
    assert len(seen) == 12 and all(state == before for state in seen)
    assert plain_state(head) == before


def test_rhino_layer_losses_do_not_depend_on_the_order_of_the_calls():
    """Each decoder layer's losses and matching targets, computed layer by layer in
    reverse order, equal those of the whole loss (mmdet's call order plays no part)."""
    model = rhino_with_everything().train()
    head = model.bbox_head
    imgs, samples = batch((3, 1))
    torch.manual_seed(0)
    feats = model.extract_feat(imgs)
    head_in = model.forward_transformer(feats, samples)
    gt_labels = [s.gt_instances.labels for s in samples]
    classes = model.class_context(feats, gt_labels)
    losses, labels = head.loss(**head_in, batch_data_samples=samples, hierarchy=model.hierarchy,
                               classes=classes)
    all_cls, all_box = head(head_in['hidden_states'], head_in['references'], model.hierarchy,
                            classes)
    match_cls, match_box, dn_cls, dn_box = head.split_outputs(all_cls, all_box,
                                                              head_in['dn_meta'])
    gts = [s.gt_instances for s in samples]
    metas = [s.metainfo for s in samples]
    for i in reversed(range(head.num_decoder_layers)):
        terms, layer_labels = head.matching_loss(match_cls[i], match_box[i], gts, metas,
                                                 classes.selected)
        assert torch.equal(layer_labels, labels[i])
        for name, value in zip(('loss_cls', 'loss_bbox', 'loss_iou'), terms):
            assert torch.equal(value, losses[f's{i}.{name}']), (i, name)
        dn = head.denoising_loss(dn_cls[i], dn_box[i], gts, metas, head_in['dn_meta'],
                                 (match_cls[i], match_box[i]), classes.selected)
        for name, value in zip(('loss_cls', 'loss_bbox', 'loss_iou'), dn):
            assert torch.equal(value, losses[f's{i}.dn_{name}']), (i, name)
    # the contrastive loss of layer i: layer i's features and targets, in any order
    hcl = model.contrastive_losses(head_in['hidden_states'], head_in['dn_meta'], labels,
                                   classes)
    feats = head.split_streams(head_in['hidden_states'])[0]
    num_dn = head_in['dn_meta']['num_denoising_queries']
    for i in reversed(range(head.num_decoder_layers)):
        pos = labels[i] < head.num_classes
        alone = model.hierarchy.contrastive_loss(
            i, feats[i, :, num_dn:].flatten(0, 1)[pos], labels[i][pos],
            head.cls_branches[i].weight, classes)
        assert torch.equal(alone['loss_hcl_lv1'], hcl[f's{i}.loss_hcl_lv1'])


def test_rhino_predicts_the_internal_nodes_named_in_test_cfg():
    imgs, samples = batch((3, 1))
    outs = {}
    for internal in (None, ['B']):
        model = build(test_cfg=dict(max_per_img=20 * 6, internal_nodes=internal)).eval()
        with torch.no_grad():
            outs[internal is None] = model.predict(imgs, copy.deepcopy(samples))[0].pred_instances
    assert set(outs[True].labels.tolist()) == {1, 2, 4, 5}  # leaves only, every query
    assert set(outs[False].labels.tolist()) == {1, 2, 3, 4, 5}
    assert len(outs[False]) == 20 * 5


def test_the_old_rhino_keys_fail_and_say_where_they_moved():
    for key, value in (('loss_hcl', HCL), ('classifier', CQ)):
        with pytest.raises(ValueError, match=rf'bbox_head\.{key} moved to model\.{key}'):
            build(bbox_head=dict(CFG['bbox_head'], **{key: value}))


@pytest.mark.parametrize('detector', ['rhino', 'orientedformer'])
def test_checkpoints_with_the_old_keys_load(detector):
    """Checkpoints written before the hierarchy module (``loss_hcl.*`` and
    ``category_queries.*`` at the top of OrientedFormer, in RHINO's head) load."""
    if detector == 'rhino':
        old, new = rhino_with_everything(seed=1), rhino_with_everything(seed=2)
        where = 'bbox_head.'
    else:
        old, new = oriented.build('cq', seed=1), oriented.build('cq', seed=2)
        where = ''
    state = {}
    for key, value in old.state_dict().items():
        state[key.replace('hierarchy.', where, 1) if key.startswith('hierarchy.') else key] = value
    assert any(k.startswith(f'{where}category_queries.') for k in state)
    new.load_state_dict(state)
    for key, value in old.state_dict().items():
        assert torch.equal(new.state_dict()[key], value), key
