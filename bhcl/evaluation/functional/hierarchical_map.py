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
                          check_iou_thrs, compute_overlaps, match_detections, score_detections)

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
    return det_l, pair_ok, ignore, np.where(counted, gt_l, -1)


@dataclass
class _Labelling:
    """One labelling's matching outcome: detection classes (-1: left out), (T, N)
    ``tp`` / ``fp`` in detection order, and the class each ground truth counts
    for (-1: ignored or shallower than the level); ``gt_per_image`` (images, K) counts
    them per image (filled by ``HierarchicalMatches`` for its resamples)."""
    det_labels: np.ndarray
    tp: np.ndarray
    fp: np.ndarray
    gt_class: np.ndarray
    gt_per_image: Optional[np.ndarray] = None


class HierarchicalMatches:
    """Matching of every labelling, done once; ``result()`` scores the whole set and
    ``resample(images)`` the images listed (a repeated image counts as a new one),
    without computing IoU or matching again.

    A detection's outcome depends only on its own image, so the result of a
    resample equals ``eval_hierarchical_map`` run on the listed images' detections
    and ground truth, concatenated in that order: the same numbers to the bit
    (tested), at the cost of ranking and scoring only (for image bootstraps).
    """

    def __init__(self, tree: LabelTree, thrs: np.ndarray, eval_mode: str, dets: Detections,
                 gts: GroundTruth, nodes: _Labelling, levels: Dict[int, _Labelling]):
        self.tree, self.thrs, self.eval_mode = tree, thrs, eval_mode
        self.scores = np.asarray(dets.scores)
        self.nodes, self.levels = nodes, levels
        num_images = int(max(dets.img.max(initial=-1), gts.img.max(initial=-1))) + 1
        self.num_images = num_images
        # detections of image i in input order: _order[_bounds[i]:_bounds[i + 1]]
        self._order = np.argsort(dets.img, kind='stable')
        self._bounds = np.searchsorted(dets.img[self._order], np.arange(num_images + 1))
        gt_img = np.asarray(gts.img, dtype=np.int64)
        for lab in (nodes, *levels.values()):   # once, not per resample
            counted = lab.gt_class >= 0
            lab.gt_per_image = np.zeros((num_images, tree.num_classes), dtype=np.int64)
            np.add.at(lab.gt_per_image, (gt_img[counted], lab.gt_class[counted]), 1)

    def _score(self, lab: _Labelling, index: Optional[np.ndarray],
               images: Optional[np.ndarray]) -> MapResult:
        num = self.tree.num_classes
        if index is None:
            labels, scores, tp, fp = lab.det_labels, self.scores, lab.tp, lab.fp
            num_gts = np.bincount(lab.gt_class[lab.gt_class >= 0], minlength=num)
        else:
            labels, scores = lab.det_labels[index], self.scores[index]
            tp, fp = np.take(lab.tp, index, axis=1), np.take(lab.fp, index, axis=1)
            num_gts = lab.gt_per_image[images].sum(axis=0)
        return score_detections(labels, scores, tp, fp, num, num_gts, self.thrs, self.eval_mode)

    def _result(self, index=None, images=None) -> HierarchicalMapResult:
        result = HierarchicalMapResult(tree=self.tree, iou_thrs=self.thrs,
                                       nodes=self._score(self.nodes, index, images))
        for level, lab in self.levels.items():
            result.levels[level] = self._score(lab, index, images)
        return result

    def result(self) -> HierarchicalMapResult:
        """The evaluation of the whole set (``eval_hierarchical_map``)."""
        return self._result()

    def resample(self, images: Sequence[int]) -> HierarchicalMapResult:
        """The evaluation of the images listed, in that order (repeats allowed)."""
        images = np.asarray(images, dtype=np.int64).reshape(-1)
        if len(images) and (images.min() < 0 or images.max() >= self.num_images):
            raise ValueError(f'image indices must be in [0, {self.num_images}), got range '
                             f'[{images.min()}, {images.max()}]')
        starts, lens = self._bounds[images], np.diff(self._bounds)[images]
        offsets = np.repeat(starts - np.cumsum(lens) + lens, lens)
        index = self._order[offsets + np.arange(int(lens.sum()))]
        return self._result(index, images)


def hierarchical_matches(dets: Detections, gts: GroundTruth, tree: LabelTree,
                         iou_thrs: Sequence[float] = DEFAULT_IOU_THRS,
                         eval_mode: str = '11points', strict_iou: bool = False,
                         iou_type: str = 'rbox', ignore_difficult: bool = True,
                         levels: Optional[Sequence[int]] = None, shallow_gt: str = 'ignore',
                         merge_duplicates: bool = True,
                         backend: str = 'auto') -> HierarchicalMatches:
    """The IoU and matching part of ``eval_hierarchical_map`` (same arguments); its
    ``result()`` is that function's result, its ``resample()`` a bootstrap's."""
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
    thrs = check_iou_thrs(iou_thrs)
    top = tree.ancestors[:, 0]
    overlaps = compute_overlaps(dets, gts, iou_type, backend,
                                groups=(top[dets.labels], top[gts.labels]))
    ignore = np.asarray(gts.ignore, dtype=bool) & ignore_difficult
    pair_ok = dets.labels[overlaps.det] == gts.labels[overlaps.gt]
    det_labels = np.asarray(dets.labels, dtype=np.int64)
    nodes = _Labelling(det_labels, *match_detections(det_labels, dets.scores, overlaps, pair_ok,
                                                     ignore, thrs, strict_iou),
                       np.where(ignore, -1, gts.labels))
    labellings = {}
    for level in levels:
        det_l, ok_l, ign_l, gt_class = _level_labelling(tree, level, dets, gts, overlaps, ignore,
                                                        shallow_gt, merge_duplicates)
        labellings[level] = _Labelling(det_l, *match_detections(det_l, dets.scores, overlaps,
                                                                ok_l, ign_l, thrs, strict_iou),
                                       gt_class)
    return HierarchicalMatches(tree, thrs, eval_mode, dets, gts, nodes, labellings)


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
    return hierarchical_matches(dets, gts, tree, iou_thrs, eval_mode, strict_iou, iou_type,
                                ignore_difficult, levels, shallow_gt, merge_duplicates,
                                backend).result()
