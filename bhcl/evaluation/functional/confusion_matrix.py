"""Confusion matrices per tree level for rotated detections (no mm* imports).

Rows are ground-truth nodes, columns predicted nodes, both at one level of
the label tree, plus a last ``background`` row and column: a missed object
counts in ``[gt, background]``, a detection that hits no object in
``[background, pred]``. Matching is done once per image on the full labels
and reused for every level: detections above ``score_thr``, best score
first, each takes the unmatched object it overlaps most (rotated IoU at
least ``iou_thr``) whatever the classes, so a wrong class shows up off the
diagonal instead of as a miss plus a false alarm. At level ``l`` both sides
are mapped to their level-``l`` ancestor; a pair where either node is
coarser than ``l`` (an "Other" object or an internal-node prediction) is
counted in ``coarser`` rather than guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ...structures.label_tree import LabelTree
from .rotated_iou import pairwise_iou


@dataclass
class ConfusionSample:
    """One image: GT boxes (G, 5|8) and node labels (G,), optional ignore
    flags (G,); detections (D, 5|8), scores (D,) and node labels (D,)."""
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    det_boxes: np.ndarray
    det_scores: np.ndarray
    det_labels: np.ndarray
    gt_ignore: Optional[np.ndarray] = None


@dataclass
class LevelConfusion:
    """Counts (n + 1, n + 1) at one level; ``names`` ends with ``'background'``."""
    level: int
    names: List[str]
    counts: np.ndarray
    coarser: int = 0

    def normalized(self) -> np.ndarray:
        """Rows divided by their sums (rows without objects stay 0)."""
        sums = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, sums, out=np.zeros(self.counts.shape),
                         where=sums > 0)


def match_image(sample: ConfusionSample, score_thr: float = 0.3, iou_thr: float = 0.5
                ) -> Tuple[List[Tuple[int, int]], np.ndarray, np.ndarray]:
    """Class-agnostic greedy matching of one image.

    Returns ``(pairs, missed_gts, false_dets)``: ``(gt index, det index)``
    pairs, GT indices without a detection and detection indices (above
    ``score_thr``) without an object.
    """
    keep = np.flatnonzero(np.asarray(sample.det_scores) >= score_thr)
    order = keep[np.argsort(-np.asarray(sample.det_scores)[keep], kind='stable')]
    num_gts = len(sample.gt_labels)
    ious = (pairwise_iou(np.asarray(sample.det_boxes)[order], np.asarray(sample.gt_boxes))
            if len(order) and num_gts else np.zeros((len(order), num_gts)))
    taken = np.zeros(num_gts, dtype=bool)
    pairs, false_dets = [], []
    for row, det in enumerate(order):
        cand = np.where(taken, -1.0, ious[row])
        best = int(np.argmax(cand)) if num_gts else -1
        if best >= 0 and cand[best] >= iou_thr:
            taken[best] = True
            pairs.append((best, int(det)))
        else:
            false_dets.append(int(det))
    return pairs, np.flatnonzero(~taken), np.asarray(false_dets, dtype=np.int64)


def level_confusion_matrices(samples: Iterable[ConfusionSample], tree: LabelTree,
                             score_thr: float = 0.3, iou_thr: float = 0.5
                             ) -> List[LevelConfusion]:
    """One ``LevelConfusion`` per tree level (level 0 first)."""
    levels = []
    for level in range(tree.num_levels):
        nodes = tree.nodes_at_level(level)
        levels.append(LevelConfusion(level, [tree.classes[k] for k in nodes] + ['background'],
                                     np.zeros((len(nodes) + 1,) * 2, dtype=np.int64)))
    position = [{k: i for i, k in enumerate(tree.nodes_at_level(lv))}
                for lv in range(tree.num_levels)]
    for s in samples:
        pairs, missed, false_dets = match_image(s, score_thr, iou_thr)
        ignore = (np.zeros(len(s.gt_labels), dtype=bool) if s.gt_ignore is None
                  else np.asarray(s.gt_ignore, dtype=bool))
        gt_labels, det_labels = np.asarray(s.gt_labels), np.asarray(s.det_labels)
        for lv, conf in enumerate(levels):
            bg = len(conf.names) - 1
            gt_anc = tree.ancestor_at(gt_labels, lv) if len(gt_labels) else gt_labels
            det_anc = tree.ancestor_at(det_labels, lv) if len(det_labels) else det_labels
            for g, d in pairs:
                if ignore[g]:
                    continue
                if gt_anc[g] < 0 or det_anc[d] < 0:
                    conf.coarser += 1
                    continue
                conf.counts[position[lv][gt_anc[g]], position[lv][det_anc[d]]] += 1
            for g in missed:
                if ignore[g]:
                    continue
                if gt_anc[g] < 0:
                    conf.coarser += 1
                else:
                    conf.counts[position[lv][gt_anc[g]], bg] += 1
            for d in false_dets:
                if det_anc[d] < 0:
                    conf.coarser += 1
                else:
                    conf.counts[bg, position[lv][det_anc[d]]] += 1
    return levels
