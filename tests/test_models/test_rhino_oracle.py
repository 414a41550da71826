"""bhcl's RHINO against the published RHINO's own numbers.

The oracle (``../shared/reference/official_rhino_oracle.pt``, see its ``.md``)
holds the published model (``rhino_phc_haus-4scale_r50_2xb2-36e_dota`` shrunk to
a tiny width) with its config, weights, input batch, every intermediate output,
the denoising queries, every matching result and every loss term. The
published config and weights go through :mod:`bhcl.models.published_rhino`;
the converted bhcl model must give the same numbers.
"""
import copy
import functools
import os
import os.path as osp

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.structures import InstanceData
from mmrotate.registry import MODELS

from bhcl.models.dense_heads.rotated_dino_head import dn_group_hungarian
from bhcl.models.published_rhino import (PublishedModelError, convert_published_rhino_config,
                                         convert_published_rhino_state_dict,
                                         load_state_dict_strict)
from bhcl.structures.box_coding import (denormalize_rboxes, normalize_gt_rboxes,
                                        regularize_long_edge)
from tests.conftest import REPO_ROOT
from tests.oracle import assert_close, assert_same_detections_as_oracle, image_samples

REFERENCE = os.environ.get('BHCL_REFERENCE_DIR',
                           osp.join(REPO_ROOT, '..', 'shared', 'reference'))
FILE = 'official_rhino_oracle.pt'
# outputs to tests.oracle's ATOL + RTOL * |oracle| elementwise; losses to RTOL_LOSS
RTOL_LOSS = 1e-5


@functools.lru_cache(maxsize=None)
def load_oracle() -> dict:
    path = osp.join(REFERENCE, FILE)
    if not osp.exists(path):
        if os.environ.get('CI'):
            pytest.fail(f'oracle {path} missing: CI must have the shared reference files')
        pytest.skip(f'oracle {path} not found (set BHCL_REFERENCE_DIR)')
    return torch.load(path, weights_only=True)


def build_converted():
    """The bhcl model converted from the oracle's published config and weights."""
    import bhcl  # noqa: F401  (registers the modules)
    init_default_scope('mmrotate')
    oracle = load_oracle()
    cfg = convert_published_rhino_config(oracle['config'])
    model = MODELS.build(cfg)
    load_state_dict_strict(model, convert_published_rhino_state_dict(oracle['state_dict']))
    return model, oracle


def samples(oracle: dict, with_gt: bool = False):
    return image_samples(oracle['images'], oracle['loss_case']['gt_input'] if with_gt else None)


def test_ground_truth_is_written_long_edge_first():
    oracle = load_oracle()
    case = oracle['loss_case']
    h, w = oracle['images'].shape[-2:]
    for given, theirs in zip(case['gt_input'], case['gt_regularized']):
        assert_close(regularize_long_edge(given['bboxes']), theirs['bboxes'],
                     'regularised ground truth', rtol=0)
    ours = torch.cat([normalize_gt_rboxes(g['bboxes'], (h, w)) for g in case['gt_input']])
    assert_close(ours, case['dn']['gt_bboxes_normalized'], 'normalised ground truth', rtol=0)
    # the same boxes written (short, long, t) give the same normalised boxes
    flipped = case['gt_regularized'][0]['bboxes'][:, [0, 1, 3, 2, 4]].clone()
    flipped[:, 4] -= torch.pi / 2
    assert_close(normalize_gt_rboxes(flipped, (h, w)), ours[:3], 'flipped input', rtol=0)


def test_inference_matches_published():
    model, oracle = build_converted()
    ref = oracle['inference']
    images = oracle['images']
    model.eval()
    with torch.no_grad():
        for i, (ours, theirs) in enumerate(zip(model.backbone(images), ref['backbone'])):
            assert_close(ours, theirs, f'backbone stage {i}', rtol=0)
        feats = model.extract_feat(images)
        for i, (ours, theirs) in enumerate(zip(feats, ref['neck'])):
            assert_close(ours, theirs, f'neck level {i}', rtol=0)
        enc_in, _ = model.pre_transformer(feats, samples(oracle))
        for key in ('feat', 'feat_pos'):
            assert_close(enc_in[key], ref['encoder'][key], f'encoder {key}', rtol=0)
        memory = model.forward_encoder(**enc_in)['memory']
        assert_close(memory, ref['encoder']['memory'], 'encoder memory')
        output_memory, proposals = model.gen_encoder_output_proposals(
            memory, enc_in['feat_mask'], enc_in['spatial_shapes'])
        prop = ref['proposals']
        assert_close(output_memory, prop['output_memory'], 'proposal memory')
        assert_close(proposals, prop['output_proposals'][..., :4], 'proposal anchors')
        assert torch.all(prop['output_proposals'][..., 4] == 0)  # angle t/pi = 0.5
        head_in = model.forward_transformer(feats, samples(oracle))
        dec = ref['decoder']
        assert_close(head_in['references'][0], prop['topk_coords'], 'top-k reference boxes')
        assert_close(head_in['hidden_states'], dec['hidden_states'], 'decoder hidden states')
        assert_close(torch.stack(head_in['references']), dec['references'], 'decoder references')
        cls, boxes = model.bbox_head(head_in['hidden_states'], head_in['references'])
        for layer in range(len(cls)):
            assert_close(cls[layer], dec['cls_scores'][layer], f'layer {layer} class logits')
            assert_close(boxes[layer], dec['bbox_preds'][layer], f'layer {layer} boxes')
        results = model.predict(images, samples(oracle), rescale=False)
    for i, (res, theirs) in enumerate(zip(results, ref['detections'])):
        # paired by label and box: near-tied scores may swap on another CPU
        assert_same_detections_as_oracle(res.pred_instances, theirs, f'image {i}')


def test_denoising_queries_match_published():
    model, oracle = build_converted()
    case = oracle['loss_case']
    data = samples(oracle, with_gt=True)
    torch.manual_seed(case['seed'])
    label_query, bbox_query, attn_mask, meta = model.dn_query_generator(data)
    dn = case['dn']
    assert meta == dn['meta']
    assert torch.equal(attn_mask, dn['attn_mask'])
    assert_close(label_query, dn['label_query'], 'denoising label queries', rtol=0)
    assert_close(bbox_query, dn['bbox_query'], 'denoising box queries', rtol=0)
    for given, s in zip(case['gt_input'], data):  # inputs are not regularised in place
        assert torch.equal(s.gt_instances.bboxes.tensor, given['bboxes'])


def test_matching_matches_published():
    """bhcl's assigner and group-wise denoising matching on the published outputs."""
    model, oracle = build_converted()
    case = oracle['loss_case']
    out, match = case['train_outputs'], case['matching']
    head = model.bbox_head
    shape = tuple(oracle['images'].shape[-2:])
    meta = dict(img_shape=shape)
    num_dn = case['dn']['meta']['num_denoising_queries']
    num_groups = case['dn']['meta']['num_denoising_groups']
    per_group = num_dn // num_groups
    for i, gt in enumerate(case['gt_regularized']):
        gt = InstanceData(bboxes=gt['bboxes'], labels=gt['labels'])
        n = len(gt)

        def assign(scores, boxes):
            pred = InstanceData(scores=scores, bboxes=denormalize_rboxes(boxes, shape))
            return head.assigner.assign(pred, gt, meta).gt_inds

        for layer in range(len(out['cls_scores'])):
            cls, box = out['cls_scores'][layer][i], out['bbox_preds'][layer][i]
            assert torch.equal(assign(cls[num_dn:], box[num_dn:]), match['decoder'][layer][i])
            pos = (torch.arange(num_groups)[:, None] * per_group + torch.arange(n)).flatten()
            dn_cost = head.match_cost(cls[pos], box[pos], gt, meta).view(num_groups, n, n)
            matched = dn_group_hungarian(dn_cost, head.match_cost(cls[num_dn:], box[num_dn:],
                                                                  gt, meta))
            assert torch.equal(matched.flatten() + 1, match['dn'][layer][i])
            assert torch.equal(matched.flatten() == torch.arange(n).repeat(num_groups),
                               match['dn_kept'][layer][i])
        assert torch.equal(assign(out['enc_topk_scores'][i], out['enc_topk_coords'][i]),
                           match['encoder'][i])


def test_training_forward_matches_published():
    model, oracle = build_converted()
    case = oracle['loss_case']
    model.train()
    torch.manual_seed(case['seed'])
    with torch.no_grad():
        feats = model.extract_feat(oracle['images'])
        head_in = model.forward_transformer(feats, samples(oracle, with_gt=True))
        cls, boxes = model.bbox_head(head_in['hidden_states'], head_in['references'])
    out = case['train_outputs']
    assert_close(head_in['enc_outputs_class'], out['enc_topk_scores'], 'encoder top-k logits')
    assert_close(head_in['enc_outputs_coord'], out['enc_topk_coords'], 'encoder top-k boxes')
    assert_close(head_in['references'][0], out['decoder_reference_points'], 'initial references')
    assert_close(head_in['hidden_states'], out['hidden_states'], 'training hidden states')
    assert_close(torch.stack(head_in['references']), out['references'], 'training references')
    assert_close(cls, out['cls_scores'], 'training class logits')
    assert_close(boxes, out['bbox_preds'], 'training boxes')


def published_loss_name(name: str, num_layers: int) -> str:
    """bhcl loss key -> the published (mmdet) key: decoder layer i's ``s{i}.`` is
    mmdet's ``d{i}.``, and no prefix for the last layer."""
    if not name.startswith('s'):
        return name
    stage, key = name.split('.', 1)
    layer = int(stage[1:])
    return key if layer == num_layers - 1 else f'd{layer}.{key}'


def test_losses_match_published():
    model, oracle = build_converted()
    case = oracle['loss_case']
    data = samples(oracle, with_gt=True)
    model.train()
    torch.manual_seed(case['seed'])
    losses = model.loss(oracle['images'], data)
    num_layers = model.bbox_head.num_decoder_layers
    ours = {published_loss_name(k, num_layers): float(v) for k, v in losses.items()}
    assert sorted(ours) == sorted(case['losses'])
    for key, value in case['losses'].items():
        rel = abs(ours[key] - value) / abs(value)
        assert rel <= RTOL_LOSS, f'{key}: bhcl {ours[key]:.8g} vs published {value:.8g}'
    for given, s in zip(case['gt_input'], data):
        assert torch.equal(s.gt_instances.bboxes.tensor, given['bboxes'])


def test_converter_round_trips_the_published_state_dict():
    model, oracle = build_converted()
    ours = model.state_dict()
    published = oracle['state_dict']
    assert sorted(ours) == sorted(published)
    for key, value in published.items():
        assert torch.equal(ours[key], value), key


def test_converter_rejects_other_models_and_names_the_keys():
    oracle = load_oracle()
    state = dict(oracle['state_dict'])
    state['roi_head.mask_head.conv.weight'] = torch.zeros(1)
    with pytest.raises(PublishedModelError, match='roi_head.mask_head.conv.weight'):
        convert_published_rhino_state_dict(state)
    with pytest.raises(PublishedModelError, match='no decoder layer'):
        convert_published_rhino_state_dict({'backbone.conv1.weight': torch.zeros(1)})
    model, _ = build_converted()
    state = dict(oracle['state_dict'])
    state.pop('decoder.norm.bias')
    state['decoder.layers.0.cross_attn.value_proj.weight'] = torch.zeros(3, 4)
    with pytest.raises(PublishedModelError, match=r'(?s)in the model, not in the checkpoint:\n'
                       r'    decoder.norm.bias\n.*value_proj.weight: \(3, 4\) in the checkpoint'):
        load_state_dict_strict(model, state)
    cfg = copy.deepcopy(oracle['config'])
    with pytest.raises(PublishedModelError, match="'RHINO'"):
        convert_published_rhino_config(dict(cfg, type='DINO'))
    with pytest.raises(PublishedModelError, match="version 'v4'"):
        convert_published_rhino_config(dict(cfg, version='v4'))
    cfg['bbox_head']['angle_cfg'] = dict(width_longer=True, start_angle=-90)
    with pytest.raises(PublishedModelError, match='start_angle=0'):
        convert_published_rhino_config(cfg)


def test_losses_backpropagate_to_every_parameter():
    model, oracle = build_converted()
    model.train()
    torch.manual_seed(0)
    losses = model.loss(oracle['images'], samples(oracle, with_gt=True))
    sum(losses.values()).backward()
    missing = [n for n, p in model.named_parameters()
               if p.requires_grad and (p.grad is None or not torch.isfinite(p.grad).all())]
    assert not missing, missing
