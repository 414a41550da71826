"""Models trained with the published BHCL / OrientedFormer code, in bhcl.

The published code (an mmrotate 1.x fork, ``projects/BHCL``) builds
``OrientedDDQRCNN`` with an ``OrientedAdaMixerDDQ`` query head and an
``(Decoupled)OrientedAdaMixerDecoder`` of ``OrientedFormerDecoderLayer``
stages. :func:`convert_published_config` turns its model config into the
equivalent :class:`~bhcl.models.detectors.OrientedQueryDETR` config, and
:func:`convert_published_state_dict` renames its weights; a converted model
gives the published numbers (``tests/test_models/test_published_oracle.py``).
"""
import copy
import math
import re
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from bhcl.structures import LabelTree

__all__ = ['convert_published_config', 'convert_published_state_dict', 'published_key_map',
           'load_state_dict_strict', 'PublishedModelError']


class PublishedModelError(ValueError):
    """The input is not a published OrientedFormer / BHCL model (or is inconsistent)."""


def _iou_loss(cfg: Mapping) -> dict:
    if cfg.get('type') not in ('RotatedIoULoss', 'mmrotate.RotatedIoULoss'):
        raise PublishedModelError(f'unsupported IoU loss {cfg.get("type")!r}')
    mode = 'linear' if cfg.get('linear', False) else cfg.get('mode', 'log')
    return dict(type='RotatedIoULossWithFallback', mode=mode,
                loss_weight=cfg.get('loss_weight', 1.0), eps=cfg.get('eps', 1e-6))


def _match_cost(cfg: Mapping) -> dict:
    kind = cfg['type'].split('.')[-1]
    if kind == 'FocalLossCost':
        return {**dict(cfg), 'type': 'mmdet.FocalLossCost'}
    if kind == 'RBBoxL1Cost':
        if cfg.get('box_format', 'xywht') != 'xywht':
            raise PublishedModelError(f'RBBoxL1Cost box_format {cfg["box_format"]!r}')
        return dict(type='RotatedBBoxL1Cost', weight=cfg.get('weight', 1.0),
                    angle_version=cfg.get('angle_version', 'le90'))
    if kind == 'RotatedIoUCost':
        return dict(type='RotatedIoUCostWithFallback', weight=cfg.get('weight', 1.0),
                    iou_mode=cfg.get('iou_mode', 'iou'))
    raise PublishedModelError(f'unsupported match cost {cfg["type"]!r}')


def _dense_loss(cfg: Mapping) -> dict:
    """``aux_loss`` / ``main_loss`` of the published head -> a DistinctQueryHead branch."""
    train = cfg['train_cfg']
    assigner = train['assigner']
    if assigner['type'].split('.')[-1] != 'TopkHungarianAssigner':
        raise PublishedModelError(f'unsupported dense assigner {assigner["type"]!r}')
    costs = [assigner.get('cls_cost', dict(type='FocalLossCost', weight=2.0)),
             assigner.get('reg_cost', dict(type='BBoxL1Cost', weight=5.0)),
             assigner.get('iou_cost', dict(type='IoUCost', iou_mode='giou', weight=2.0))]
    return dict(loss_cls=copy.deepcopy(dict(cfg['loss_cls'])),
                loss_iou=_iou_loss(cfg['loss_bbox']),
                assigner=dict(type='TopkHungarianRotatedAssigner',
                              topk=assigner.get('topk', 13),
                              match_costs=[_match_cost(c) for c in costs]),
                alpha=train.get('alpha', 1), beta=train.get('beta', 6))


def _stage_layer(head: Mapping, decouple: bool) -> dict:
    content = head['content_dim']
    attn, ffn, self_attn = head['o3d_attn_cfg'], head['ffn_cfg'], head['self_attn_cfg']
    if self_attn['embed_dims'] not in (content, 2 * content):
        raise PublishedModelError(f'self-attention width {self_attn["embed_dims"]} is neither '
                                  f'content_dim {content} nor twice it')
    if ffn.get('num_fcs', 2) != 2 or ffn.get('embed_dims', content) != content:
        raise PublishedModelError(f'unsupported FFN {dict(ffn)}')
    return dict(type='DecoupledQueryDecoderLayer' if decouple else 'QueryDecoderLayer',
                embed_dims=content, num_heads=self_attn.get('num_heads', 8),
                attn_cfg=dict(num_heads=attn.get('n_heads', 4),
                              num_points=attn.get('n_points', 32),
                              reduction=attn.get('reduction', 4)),
                ffn_channels=ffn['feedforward_channels'],
                dropout=float(self_attn.get('dropout', 0.0)))


def _hcl(cfg: Mapping, tree: LabelTree) -> dict:
    """Published (B)HCL -> bhcl's loss with the published behaviour switched on.

    The published loss declares ``num_levels`` itself: with a shallower tree
    (FAIR1M: 4 declared, 2 real) its level weights are normalised over the
    declared levels and its EMA rates use them too; both are reproduced here.
    """
    balanced = cfg['type'].split('.')[-1] == 'BalancedHierarchicalContrastiveLoss'
    declared, begin = cfg['num_levels'], cfg.get('begin_level', 0)
    depth = tree.num_levels
    if declared < depth:
        raise PublishedModelError(f'hcl_loss declares {declared} levels for a {depth}-level tree')
    weights = cfg.get('level_weights')
    if weights is None:
        raw = [math.exp(1 / (declared - begin - j)) for j in range(declared - begin)]
        weights = [w / sum(raw) for w in raw]
    else:  # the published code normalises given weights too
        weights = [w / sum(weights) for w in weights]
    out = dict(type='HierarchicalContrastiveLoss',
               in_channels=cfg.get('proj_head_input_dim', 256),
               hidden_channels=cfg.get('proj_head_hidden_dim', 512),
               out_channels=cfg.get('proj_head_output_dim', 128),
               temperature=cfg.get('temperature', 0.1), start_level=begin,
               level_weights=weights[:depth - begin], loss_weight=cfg.get('loss_weight', 1.0),
               singleton_negatives=False)
    if balanced:
        epsilon = cfg.get('epsilon', 0.1)
        used = range(begin, depth)
        # bhcl moves node c by eps'^(depth - l_c); the published code by eps^(declared - l_c)
        rates = {round(math.log(epsilon**(declared - lv)) / (depth - lv), 12) for lv in used}
        if len(rates) != 1:
            raise PublishedModelError(
                f'the published EMA rates of a {declared}-level bank cannot be expressed for a '
                f'{depth}-level tree at levels {list(used)}')
        out.update(balance=True, prototype_scope='subtree',
                   warmup_epochs=cfg.get('warmup_epoch', 5),
                   prototype_bank=dict(type='EMAPrototypeBank', epsilon=math.exp(rates.pop()),
                                       hide_unseen=False))
    return out


def convert_published_config(cfg: Mapping,
                             label_tree: Optional[Union[dict, LabelTree]] = None) -> dict:
    """A published model config (``OrientedDDQRCNN``) -> an ``OrientedQueryDETR`` config.

    Args:
        cfg: the ``model`` dict of a published config (any width, head, point,
            query and stage count).
        label_tree: the dataset's tree; optional when the config has an
            ``hcl_loss`` with ``hierarchical_labels`` (root-to-node name paths in
            class order), which then define it.
    Returns:
        a plain dict for ``MODELS.build`` (with ``custom_imports=['bhcl']``).
    Raises:
        PublishedModelError: not that model, or a part bhcl does not reproduce.
    """
    cfg = copy.deepcopy(dict(cfg))
    if cfg.get('type', '').split('.')[-1] != 'OrientedDDQRCNN':
        raise PublishedModelError(f"expected a published 'OrientedDDQRCNN' model config, got "
                                  f"type={cfg.get('type')!r}")
    rpn, roi = cfg['rpn_head'], cfg['roi_head']
    heads = roi['bbox_head'] if isinstance(roi['bbox_head'], (list, tuple)) else \
        [roi['bbox_head']] * roi['num_stages']
    decouple = bool(roi.get('decouple', False))
    tree = _label_tree(roi, label_tree)
    layers = [_stage_layer(h, decouple) for h in heads]
    if any(layer != layers[0] for layer in layers) or len(layers) != roi['num_stages']:
        raise PublishedModelError('bhcl builds identical decoder stages; the published stages '
                                  'differ or do not match num_stages')
    if any(w != 1 for w in roi.get('stage_loss_weights', [1])):
        raise PublishedModelError(f'stage_loss_weights {roi["stage_loss_weights"]} != 1')
    head = heads[0]
    rcnn = cfg['train_cfg']['rcnn']
    rcnn = rcnn[0] if isinstance(rcnn, (list, tuple)) else rcnn
    neck = {k: v for k, v in cfg['neck'].items() if k != 'type'}
    dqs = rpn.get('dqs_cfg') or dict(iou_threshold=0.7)
    out = dict(
        type='OrientedQueryDETR',
        data_preprocessor=copy.deepcopy(cfg.get('data_preprocessor')),
        backbone=copy.deepcopy(cfg['backbone']),
        neck=dict(type='ChannelMapperGN', **neck),
        query_head=dict(
            type='DistinctQueryHead', feat_channels=rpn.get('feat_channels', 256),
            num_queries=rpn['num_proposals'], stacked_convs=rpn.get('stacked_convs', 4),
            shuffle_channels=rpn.get('shuffle_channles', 64), norm_cfg=rpn.get('norm_cfg'),
            # the published head pops nms_pre from its config on first use: every later
            # call, training included, keeps 1000 candidates per level
            pre_nms=1000, nms_iou=dqs['iou_threshold'], prior_offset=rpn.get('offset', 0.5),
            main_loss=_dense_loss(rpn['main_loss']), aux_loss=_dense_loss(rpn['aux_loss'])),
        decoder=dict(num_layers=roi['num_stages'], layer_cfg=layers[0]),
        label_tree=tree.to_config(),
        strides=list(roi['featmap_strides']),
        num_cls_fcs=head.get('num_cls_fcs', 1), num_reg_fcs=head.get('num_reg_fcs', 1),
        assigner=dict(type='TopkHungarianRotatedAssigner', topk=1,
                      match_costs=[_match_cost(c) for c in rcnn['assigner']['match_costs']]),
        loss_cls=copy.deepcopy(dict(head['loss_cls'])),
        loss_bbox=copy.deepcopy(dict(head['loss_bbox'])),
        loss_iou=_iou_loss(head['loss_iou']),
        l1_angle_version=head.get('angle_version', 'le90'),
        test_cfg=dict(max_per_img=cfg['test_cfg']['rcnn']['max_per_img']))
    if list(rpn.get('strides', out['strides'])) != out['strides']:
        raise PublishedModelError('the query head and the decoder use different strides')
    if roi.get('hcl_loss'):
        out['loss_hcl'] = _hcl(roi['hcl_loss'], tree)
    if out['data_preprocessor'] is None:
        out.pop('data_preprocessor')
    return out


def _label_tree(roi: Mapping, label_tree) -> LabelTree:
    paths = (roi.get('hcl_loss') or {}).get('hierarchical_labels')
    if label_tree is not None:
        tree = LabelTree.from_config(label_tree) if not isinstance(label_tree, LabelTree) \
            else label_tree
    elif paths is not None:
        tree = LabelTree.from_paths([list(p) for p in paths])
    else:
        raise PublishedModelError('this config has no hcl_loss.hierarchical_labels: pass the '
                                  "dataset's label tree (label_tree=...)")
    if paths is not None and [list(p) for p in paths] != [tree.path(k) for k in
                                                          range(tree.num_classes)]:
        raise PublishedModelError('the label tree differs from the config\'s '
                                  'hcl_loss.hierarchical_labels (class order or names)')
    num = roi['bbox_head'][0]['num_classes'] if isinstance(roi['bbox_head'], (list, tuple)) \
        else roi['bbox_head']['num_classes']
    if num != tree.num_classes:
        raise PublishedModelError(f'the config has {num} classes, the label tree '
                                  f'{tree.num_classes} nodes')
    leaves = roi.get('leaf_indices')
    if leaves is not None and sorted(leaves) != list(tree.leaf_ids):
        raise PublishedModelError(f'leaf_indices {sorted(leaves)} are not the tree\'s leaves '
                                  f'{list(tree.leaf_ids)}')
    return tree


# ----------------------------------------------------------------- weights
_HEAD = [
    (r'rpn_head\.(cls_convs|reg_convs)\.(.*)', r'query_head.\1.\2'),
    (r'rpn_head\.(objectness|conv_cls|conv_reg|scales)\.(.*)', r'query_head.main.\1.\2'),
    (r'rpn_head\.aux_conv_objectness\.(.*)', r'query_head.aux.objectness.\1'),
    (r'rpn_head\.aux_conv_(cls|reg)\.(.*)', r'query_head.aux.conv_\1.\2'),
    (r'rpn_head\.aux_scales\.(.*)', r'query_head.aux.scales.\1'),
    (r'rpn_head\.compress\.(.*)', r'query_head.content_proj.\1'),
    (r'roi_head\.hcl_loss\.(\d+)\.proj_head\.(.*)', r'hierarchy.loss_hcl.\1.projector.\2'),
    (r'roi_head\.hcl_loss\.(\d+)\.prototype_bank\.prototypes',
     r'hierarchy.loss_hcl.\1.prototype_bank.prototypes'),
]
_ATTN = {'sampling_offset_generator.0': 'sampling_offsets', 'ca_attn.0': 'channel_gate.0',
         'ca_attn.2': 'channel_gate.2', 'sa_attn.0': 'point_gate.0', 'sa_attn.2': 'point_gate.2',
         'out_proj': 'out_proj'}
_BRANCH_SUFFIX = {'': 0, '_cls': 0, '_reg': 1}


def _stage_key(stage: str, rest: str, num_fcs: Dict[str, int]) -> Optional[str]:
    """Key inside ``roi_head.bbox_head.<stage>.`` -> bhcl key, None if unknown."""
    simple = {'tau': 'self_attn.tau'}
    if rest in simple:
        return f'layers.{stage}.{simple[rest]}'
    m = re.fullmatch(r'self_attn\.attn\.(.*)', rest)
    if m:
        return f'layers.{stage}.self_attn.attn.{m[1]}'
    m = re.fullmatch(r'self_attn_norm\.(weight|bias)', rest)
    if m:
        return f'layers.{stage}.self_attn.norm.{m[1]}'
    m = re.fullmatch(r'o3d_attn(|_cls|_reg)\.(.+)\.(weight|bias)', rest)
    if m and m[2] in _ATTN:
        return f'layers.{stage}.branches.{_BRANCH_SUFFIX[m[1]]}.cross_attn.{_ATTN[m[2]]}.{m[3]}'
    m = re.fullmatch(r'(o3d_attn_norm|ffn_norm)(|_cls|_reg)\.(weight|bias)', rest)
    if m:
        name = 'cross_attn_norm' if m[1] == 'o3d_attn_norm' else 'ffn_norm'
        return f'layers.{stage}.branches.{_BRANCH_SUFFIX[m[2]]}.{name}.{m[3]}'
    m = re.fullmatch(r'ffn(|_cls|_reg)\.layers\.(0\.0|1)\.(weight|bias)', rest)
    if m:
        return (f'layers.{stage}.branches.{_BRANCH_SUFFIX[m[1]]}.ffn.'
                f'{0 if m[2] == "0.0" else 3}.{m[3]}')
    m = re.fullmatch(r'(cls|reg)_fcs\.(\d+)\.(weight|bias)', rest)
    if m:
        return f'{m[1]}_branches.{stage}.{m[2]}.{m[3]}'
    m = re.fullmatch(r'fc_(cls|reg)\.(weight|bias)', rest)
    if m:
        return f'{m[1]}_branches.{stage}.{3 * num_fcs[m[1]]}.{m[2]}'
    return None


def _count_fcs(keys: Iterable[str]) -> Dict[str, int]:
    found = {'cls': set(), 'reg': set()}
    for key in keys:
        m = re.search(r'roi_head\.bbox_head\.0\.(cls|reg)_fcs\.(\d+)\.', key)
        if m:
            found[m[1]].add(int(m[2]))
    return {k: (max(v) // 3 + 1 if v else 0) for k, v in found.items()}


def published_key_map(state_dict: Mapping[str, Tensor]) -> Tuple[Dict[str, str], List[str]]:
    """Published key -> bhcl key for every key of a published ``state_dict``, and the
    keys that belong to no part of the published model."""
    mapping, unknown = {}, []
    num_fcs = _count_fcs(state_dict)
    for key, value in state_dict.items():
        if key.startswith(('backbone.', 'neck.')):
            mapping[key] = key
            continue
        m = re.fullmatch(r'roi_head\.bbox_head\.(\d+)\.(.*)', key)
        new = _stage_key(m[1], m[2], num_fcs) if m else None
        for pattern, repl in ([] if m else _HEAD):
            if re.fullmatch(pattern, key):
                new = re.sub(pattern, repl, key)
                break
        if new is not None:
            mapping[key] = new
        elif not (re.fullmatch(r'roi_head\.hcl_loss\.\d+\.prototype_bank\.prototype_labels', key)
                  and torch.equal(value.cpu(), torch.arange(len(value)))):
            unknown.append(key)
    return mapping, unknown


def convert_published_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Published ``state_dict`` (``OrientedDDQRCNN`` key names) -> bhcl ``state_dict``.

    Backbone and neck keep their names. The EMA prototype banks keep their
    rows and are marked as used (the published loss uses every row); the
    published ``prototype_labels`` buffer (always ``arange(K)``) is dropped.

    Raises:
        PublishedModelError: listing every key that belongs to no part of the
            published model (a checkpoint of another model).
    """
    state_dict = dict(state_dict.get('state_dict', state_dict))
    mapping, unknown = published_key_map(state_dict)
    if unknown:
        raise PublishedModelError(
            'not a published OrientedFormer / BHCL checkpoint: '
            f'{len(unknown)} key(s) match no part of it: {unknown[:20]}'
            + (' ...' if len(unknown) > 20 else ''))
    if not any(v.startswith('layers.') for v in mapping.values()):
        raise PublishedModelError('not a published OrientedFormer / BHCL checkpoint: it has '
                                  'no decoder stage (roi_head.bbox_head.<i>.*) keys')
    out = {}
    for key, new in mapping.items():
        out[new] = state_dict[key]
        bank = re.fullmatch(r'(hierarchy\.loss_hcl\.\d+\.prototype_bank)\.prototypes', new)
        if bank:
            out[f'{bank[1]}.initialized'] = torch.ones(len(state_dict[key]), dtype=torch.bool)
    return out


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, Tensor]) -> None:
    """``model.load_state_dict`` with errors that name every missing, unexpected or
    mis-shaped key (and both shapes). A recorded class order (``CLASS_ORDER_KEY``) is
    optional and, when present, checked by the model (``ClassOrderError``)."""
    from bhcl.engine.checkpoint_io import describe_mismatch, state_dict_mismatch
    mismatch = state_dict_mismatch(model.state_dict(), dict(state_dict))
    if mismatch:
        raise PublishedModelError('the checkpoint does not fit the model:\n' +
                                  describe_mismatch(mismatch, shown=50))
    model.load_state_dict(state_dict, strict=True)
