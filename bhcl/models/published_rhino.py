"""Models trained with the published RHINO code (SIAnalytics/RHINO), in bhcl.

The published code (its own fork of mmrotate 1.0.0rc1) builds ``RHINO`` with
the ``v2`` decoder (5-d references, rotated cross-attention) and a
``RHINOHead`` or ``RHINOPositiveHungarianClassificationHead`` ("PHC").
:func:`convert_published_rhino_config` turns its model config into the
equivalent bhcl :class:`~bhcl.models.detectors.RHINO` config and
:func:`convert_published_rhino_state_dict` checks its weights (bhcl keeps the
published key names); a converted model gives the published numbers
(``tests/test_models/test_rhino_oracle.py``).
"""
import copy
import math
import re
from typing import Dict, List, Mapping, Optional, Union

from torch import Tensor

from bhcl.models.published import PublishedModelError, load_state_dict_strict
from bhcl.structures import LabelTree

__all__ = ['convert_published_rhino_config', 'convert_published_rhino_state_dict',
           'load_state_dict_strict', 'PublishedModelError']

HEADS = {'RHINOPositiveHungarianClassificationHead': True, 'RHINOHead': False}
# every parameter / buffer name of a published RHINO (v2 decoder, two-stage, box refinement)
_KEYS = [r'backbone\..+', r'neck\..+', r'level_embed', r'query_embedding\.weight',
         r'memory_trans_(fc|norm)\.(weight|bias)', r'encoder\.layers\.\d+\..+',
         r'decoder\.layers\.\d+\..+', r'decoder\.ref_point_head\.layers\.\d+\.(weight|bias)',
         r'decoder\.norm\.(weight|bias)', r'bbox_head\.cls_branches\.\d+\.(weight|bias)',
         r'bbox_head\.reg_branches\.\d+\.\d+\.(weight|bias)',
         r'dn_query_generator\.label_embedding\.weight']


def _kind(cfg: Mapping) -> str:
    return str(cfg.get('type', '')).split('.')[-1]


def _check_angle(cfg: Mapping, where: str) -> None:
    """bhcl's RHINO has RHINO's box convention only: long edge first, t in [0, pi)."""
    angle = dict(cfg.get('angle_cfg') or dict(width_longer=True, start_angle=0))
    if angle != dict(width_longer=True, start_angle=0):
        raise PublishedModelError(f'{where}.angle_cfg {angle}: bhcl reproduces width_longer=True, '
                                  'start_angle=0 only')
    if not math.isclose(cfg.get('angle_factor', math.pi), math.pi):
        raise PublishedModelError(f'{where}.angle_factor {cfg["angle_factor"]}: bhcl uses pi')


def _match_cost(cfg: Mapping) -> dict:
    kind = _kind(cfg)
    if kind == 'FocalLossCost':
        return {**dict(cfg), 'type': 'mmdet.FocalLossCost'}
    if kind == 'HausdorffCost':
        if cfg.get('box_format', 'xywha') != 'xywha':
            raise PublishedModelError(f'HausdorffCost box_format {cfg["box_format"]!r}')
        return dict(type='HausdorffCornerCost', weight=cfg.get('weight', 1.0))
    if kind == 'GDCost':
        if cfg.get('loss_type', 'kld') != 'kld':
            raise PublishedModelError(f'GDCost loss_type {cfg["loss_type"]!r}: bhcl has the '
                                      'KLD cost only')
        return dict(type='GaussianKLDCost', weight=cfg.get('weight', 1.0),
                    fun=cfg.get('fun', 'log1p'), tau=cfg.get('tau', 1.0),
                    alpha=cfg.get('alpha', 1.0), sqrt=cfg.get('sqrt', True))
    raise PublishedModelError(f'unsupported match cost {cfg.get("type")!r}')


def _dn_cfg(cfg: Optional[Mapping]) -> Optional[dict]:
    if cfg is None:
        return None
    cfg = copy.deepcopy(dict(cfg))
    _check_angle(cfg, 'dn_cfg')
    cfg.pop('angle_cfg', None)
    cfg.pop('angle_factor', None)
    # the published generator reads max_num_groups as its own argument only: inside
    # group_cfg (where the published configs put it) it is ignored
    if 'group_cfg' in cfg:
        cfg['group_cfg'] = {k: v for k, v in cfg['group_cfg'].items() if k != 'max_num_groups'}
    if cfg.get('max_num_groups') is not None:
        cfg['max_groups'] = cfg.pop('max_num_groups')
    cfg.pop('max_num_groups', None)
    return cfg


def convert_published_rhino_config(
        cfg: Mapping, label_tree: Optional[Union[dict, LabelTree]] = None) -> dict:
    """A published RHINO model config -> a bhcl ``RHINO`` config.

    Args:
        cfg: the ``model`` dict of a published config (``type='RHINO'``,
            ``version='v2'``; any width, depth and query count).
        label_tree: optional dataset tree for bhcl's tree-aware inference; its
            node count must equal the published ``num_classes``.
    Returns:
        a plain dict for ``MODELS.build`` (with ``custom_imports=['bhcl']``).
    Raises:
        PublishedModelError: not that model, or a part bhcl does not reproduce.
    """
    cfg = copy.deepcopy(dict(cfg))
    if _kind(cfg) != 'RHINO':
        raise PublishedModelError(f"expected a published 'RHINO' model config, got "
                                  f"type={cfg.get('type')!r}")
    version = cfg.pop('version', '')
    if version != 'v2':
        raise PublishedModelError(f"RHINO decoder version {version!r}: bhcl reproduces 'v2' "
                                  '(the rhino_phc_haus / rhino-4scale configs)')
    if not (cfg.get('as_two_stage') and cfg.get('with_box_refine')):
        raise PublishedModelError('RHINO needs as_two_stage=True and with_box_refine=True')
    head = dict(cfg['bbox_head'])
    if _kind(head) not in HEADS:
        raise PublishedModelError(f'unsupported head {head.get("type")!r}: one of {list(HEADS)}')
    _check_angle(head, 'bbox_head')
    joint = HEADS[_kind(head)]
    head = {k: v for k, v in head.items() if k not in ('type', 'angle_cfg', 'angle_factor')}
    cfg['bbox_head'] = dict(type='RotatedDINOHead', dn_joint_matching=joint, **head)
    train = copy.deepcopy(dict(cfg.get('train_cfg') or {}))
    if 'assigner' in train:
        costs = [_match_cost(c) for c in train['assigner'].get('match_costs', [])]
        if _kind(train['assigner']) != 'HungarianAssigner':
            raise PublishedModelError(f'unsupported assigner {train["assigner"]["type"]!r}')
        train['assigner'] = dict(type='mmdet.HungarianAssigner', match_costs=costs)
    dn_assigner = train.pop('dn_assigner', None)
    if dn_assigner is not None:  # bhcl's joint matching uses the assigner's costs
        dn_costs = [_match_cost(c) for c in dn_assigner.get('match_costs', [])]
        if dn_costs != train.get('assigner', {}).get('match_costs'):
            raise PublishedModelError('the dn_assigner costs differ from the assigner costs; '
                                      'bhcl matches denoising queries with the assigner costs')
    cfg['train_cfg'] = train
    cfg['dn_cfg'] = _dn_cfg(cfg.get('dn_cfg'))
    if label_tree is not None:
        tree = label_tree if isinstance(label_tree, LabelTree) else \
            LabelTree.from_config(label_tree)
        if tree.num_classes != head.get('num_classes', tree.num_classes):
            raise PublishedModelError(f'the config has {head["num_classes"]} classes, the label '
                                      f'tree {tree.num_classes} nodes')
        cfg['label_tree'] = tree.to_config()
    return cfg


def convert_published_rhino_state_dict(state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Published RHINO ``state_dict`` -> bhcl ``state_dict`` (the same key names).

    A checkpoint dict with a ``state_dict`` entry is accepted too.

    Raises:
        PublishedModelError: listing every key that belongs to no part of a
            published RHINO (a checkpoint of another model).
    """
    state_dict = dict(state_dict.get('state_dict', state_dict))
    unknown: List[str] = [k for k in state_dict
                          if not any(re.fullmatch(p, k) for p in _KEYS)]
    if unknown:
        raise PublishedModelError(
            f'not a published RHINO checkpoint: {len(unknown)} key(s) match no part of it: '
            f'{unknown[:20]}' + (' ...' if len(unknown) > 20 else ''))
    if not any(k.startswith('decoder.layers.') for k in state_dict):
        raise PublishedModelError('not a published RHINO checkpoint: it has no decoder layer '
                                  '(decoder.layers.<i>.*) keys')
    return dict(state_dict)
