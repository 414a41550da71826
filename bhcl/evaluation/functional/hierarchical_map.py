"""Hierarchical rotated mAP: node classes, leaves and every tree level in one pass.

The IoU of detection / ground-truth pairs is computed once for the whole
dataset (pairs under the same top-level node), then reused by every
labelling:

* ``nodes``: each object keeps its own tree node; per-class AP for every
  node. ``all`` averages it over the nodes with ground truth, ``leaf``
  over the leaves with ground truth (the paper's number).
* ``level l``: predictions and ground truth are collapsed to their level-l
  ancestor (``LabelTree.ancestor_at``).

Objects shallower than level l (an "Other Warship" ground truth stored as
the internal node ``Warship`` has no level-2 class):

* a *prediction* whose node is shallower than l makes no level-l claim and
  is left out of the level-l evaluation;
* a *ground truth* shallower than l is, with ``shallow_gt='ignore'``
  (default), an ignored object for every level-l class below its node: a
  level-l prediction of one of those classes that matches it is neither TP
  nor FP, because its level-l class is unknown, and it is not a positive
  either. With ``shallow_gt='drop'`` it is removed from level l, so a
  prediction on it is an FP.

Duplicates made by collapsing: a detector that scores every (query, class)
pair emits the same box several times with sibling labels. After collapsing
they would be one TP and several FPs for one object, a penalty the leaf
evaluation does not have. With ``merge_duplicates=True`` (default) the
detections of one image with the *identical* box and the same level-l class
are merged into one with the highest score (the coarse detector's score is
the max over its children). Overlapping but different boxes are never
merged: suppressing those is the detector's job.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence

import numpy as np

from ...structures.label_tree import LabelTree
from .rotated_map import (DEFAULT_IOU_THRS, Detections, GroundTruth, MapResult, Overlaps,
                          compute_overlaps, match_and_score)

SHALLOW_GT_MODES = ('ignore', 'drop')


@dataclass
class HierarchicalMapResult:
    """Per-class results of one evaluation.

    nodes: per tree node; levels: ``{level: MapResult}`` whose classes are
    tree nodes too (only nodes at that level have ground truth there).
    """
    tree: LabelTree
    iou_thrs: np.ndarray
    nodes: MapResult
    levels: Dict[int, MapResult] = field(default_factory=dict)

    def mean_aps(self) -> Dict[str, np.ndarray]:
        """``{group: (T,) mean AP}`` for ``leaf``, ``all`` and ``lv{l}``."""
        out = {'leaf': self.nodes.mean_ap(self.tree.leaf_ids), 'all': self.nodes.mean_ap()}
        for level, res in self.levels.items():
            out[f'lv{level}'] = res.mean_ap(self.tree.nodes_at_level(level))
        return out


def merge_identical_boxes(img: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                          labels: np.ndarray) -> np.ndarray:
    """(N,) bool keep-mask: among detections with label >= 0 and the same
    image, label and identical box, keep only the highest-scoring one."""
    keep = labels >= 0
    idx = np.flatnonzero(keep)
    if len(idx) < 2:
        return keep
    key = np.concatenate([img[idx, None], labels[idx, None], boxes[idx]], axis=1)
    # sort by key, then score descending: the first row of each run is kept
    order = np.lexsort((-scores[idx], ) + tuple(key.T[::-1]))
    sk = key[order]
    dup = np.zeros(len(idx), dtype=bool)
    dup[1:] = (sk[1:] == sk[:-1]).all(axis=1)
    keep[idx[order[dup]]] = False
    return keep


def _level_labelling(tree: LabelTree, level: int, dets: Detections, gts: GroundTruth,
                     overlaps: Overlaps, gt_ignore: np.ndarray, shallow_gt: str,
                     merge_duplicates: bool):
    anc = tree.ancestors
    det_l = anc[dets.labels, level]
    gt_l = anc[gts.labels, level]
    if merge_duplicates:
        det_l = np.where(merge_identical_boxes(dets.img, dets.boxes, dets.scores, det_l),
                         det_l, -1)
    d, g = overlaps.det, overlaps.gt
    pair_ok = (gt_l[g] >= 0) & (det_l[d] == gt_l[g])
    shallow = gt_l < 0
    ignore = gt_ignore.copy()
    if shallow_gt == 'ignore' and shallow.any():
        gd = np.asarray(tree.depth)[gts.labels]
        below = anc[dets.labels[d], gd[g]] == gts.labels[g]
        pair_ok |= shallow[g] & (det_l[d] >= 0) & below
        ignore |= shallow
    counted = ~ignore & ~shallow
    num_gts = np.bincount(gt_l[counted], minlength=tree.num_classes)
    return det_l, pair_ok, ignore, num_gts


def eval_hierarchical_map(dets: Detections, gts: GroundTruth, tree: LabelTree,
                          iou_thrs: Sequence[float] = DEFAULT_IOU_THRS,
                          eval_mode: str = '11points', strict_iou: bool = False,
                          iou_type: str = 'rbox', ignore_difficult: bool = True,
                          levels: Optional[Sequence[int]] = None, shallow_gt: str = 'ignore',
                          merge_duplicates: bool = True,
                          backend: str = 'auto') -> HierarchicalMapResult:
    """Node, leaf and per-level rotated mAP with one IoU computation.

    Args:
        dets, gts: flat detections / ground truth labelled by tree node.
        tree: the label tree.
        iou_thrs, eval_mode, strict_iou, iou_type, backend: see
            ``match_and_score`` and ``compute_overlaps``.
        ignore_difficult: ignored ground truth absorbs matches (True) or
            counts as ordinary ground truth (False).
        levels: tree levels to report (default: all, when the tree has more
            than one level; none for a flat class list).
        shallow_gt: ``'ignore'`` or ``'drop'``; see the module docstring.
        merge_duplicates: merge identical boxes collapsed to one class.
    """
    if shallow_gt not in SHALLOW_GT_MODES:
        raise ValueError(f'shallow_gt must be one of {SHALLOW_GT_MODES}, got {shallow_gt!r}')
    num = tree.num_classes
    for what, labels in (('detection', dets.labels), ('ground-truth', gts.labels)):
        if len(labels) and (labels.min() < 0 or labels.max() >= num):
            raise ValueError(f'{what} labels must be tree nodes in [0, {num}), '
                             f'got range [{labels.min()}, {labels.max()}]')
    if levels is None:
        levels = range(tree.num_levels) if tree.num_levels > 1 else ()
    levels = [int(lv) for lv in levels]
    bad = [lv for lv in levels if not 0 <= lv < tree.num_levels]
    if bad:
        raise ValueError(f'levels {bad} outside the tree levels 0..{tree.num_levels - 1}')
    top = tree.ancestors[:, 0]
    overlaps = compute_overlaps(dets, gts, iou_type, backend,
                                groups=(top[dets.labels], top[gts.labels]))
    ignore = np.asarray(gts.ignore, dtype=bool) & ignore_difficult
    pair_ok = dets.labels[overlaps.det] == gts.labels[overlaps.gt]
    num_gts = np.bincount(gts.labels[~ignore], minlength=num)
    nodes = match_and_score(dets.labels, dets.scores, num, overlaps, pair_ok, ignore, num_gts,
                            iou_thrs, strict_iou, eval_mode)
    result = HierarchicalMapResult(tree=tree, iou_thrs=nodes.iou_thrs, nodes=nodes)
    for level in levels:
        det_l, ok_l, ign_l, num_l = _level_labelling(tree, level, dets, gts, overlaps, ignore,
                                                     shallow_gt, merge_duplicates)
        result.levels[level] = match_and_score(det_l, dets.scores, num, overlaps, ok_l, ign_l,
                                               num_l, iou_thrs, strict_iou, eval_mode)
    return result
