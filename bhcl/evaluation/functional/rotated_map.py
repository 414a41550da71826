"""Rotated-box mAP: IoU once per image, VOC greedy matching at all thresholds.

Everything is flat numpy over the whole dataset: detections and ground truth
carry an image index; the IoU of every detection / ground-truth pair that can
overlap (same image, same comparison group, overlapping extents) is computed
once (``compute_overlaps``), and each *labelling* (the node classes, or the
classes collapsed to a tree level) only selects which of those pairs count.

Matching rule (DOTA devkit ``voc_eval`` and mmrotate ``eval_rbbox_map``):
within an image and class, detections are taken in descending score order;
each one looks only at its arg-max-IoU ground truth (ties: ordinary before
ignored, then first in input order). If that IoU reaches the threshold
(``>=``, or ``>`` with ``strict_iou``) and the ground truth is ignored, the
detection is neither TP nor FP; if it is ordinary and still free it becomes
covered and the detection is a TP; if already covered, the detection is an
FP even when another ground truth overlaps it enough. Below the threshold it
is an FP. Detections with equal scores keep their input order (mmrotate
sorts unstably, so only exact score ties can differ).

Because a detection only ever looks at its arg-max ground truth, the greedy
rule reduces to "the first detection in score order whose IoU with ground
truth ``g`` passes the threshold covers ``g``", which is evaluated for all
thresholds at once.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from .average_precision import average_precision
from .rotated_iou import boxes_aabb, candidate_pairs, pair_iou, prepare_boxes

DEFAULT_IOU_THRS: Tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


@dataclass
class Detections:
    """Flat detections of a dataset.

    img: (N,) int image index; boxes: (N, 5) ``(cx, cy, w, h, t)`` or (N, 8)
    polygons; scores: (N,); labels: (N,) int class / tree-node index.
    """
    img: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class GroundTruth:
    """Flat ground truth; ``ignore`` (M,) bool marks ignored (difficult) objects."""
    img: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    ignore: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Overlaps:
    """IoU of candidate pairs: ``iou[k]`` between ``det[k]`` and ``gt[k]``.
    Pairs not listed have IoU 0."""
    det: np.ndarray
    gt: np.ndarray
    iou: np.ndarray


@dataclass
class MapResult:
    """Per-class AP at every IoU threshold.

    ap: (T, K); recall: (T, K) recall after the last detection; num_gts:
    (K,) ordinary (not ignored) ground truth; num_dets: (K,). Classes with
    ``num_gts == 0`` are left out of every mean.
    """
    iou_thrs: np.ndarray
    ap: np.ndarray
    recall: np.ndarray
    num_gts: np.ndarray
    num_dets: np.ndarray

    def mean_ap(self, classes: Optional[Sequence[int]] = None) -> np.ndarray:
        """(T,) mean AP over ``classes`` (default all) that have ground truth;
        zeros when none has."""
        mask = self.num_gts > 0
        if classes is not None:
            sel = np.zeros_like(mask)
            sel[np.asarray(classes, dtype=np.int64)] = True
            mask &= sel
        if not mask.any():
            return np.zeros(len(self.iou_thrs))
        return self.ap[:, mask].mean(axis=1)


def _image_slices(img: np.ndarray, num_images: int):
    order = np.argsort(img, kind='stable')
    bounds = np.searchsorted(img[order], np.arange(num_images + 1))
    return order, bounds


def compute_overlaps(dets: Detections, gts: GroundTruth, iou_type: str = 'rbox',
                     backend: str = 'auto',
                     groups: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> Overlaps:
    """IoU of every detection / ground-truth pair of the same image that can
    overlap, computed in one batch.

    Args:
        iou_type: ``'rbox'`` or ``'poly'`` (see ``prepare_boxes``).
        backend: rotated-box IoU backend (``rbox_iou_aligned``).
        groups: optional ``(det_group (N,), gt_group (M,))``; pairs from
            different groups are never compared (e.g. different classes, or
            different top-level tree nodes).
    """
    dboxes, gboxes = prepare_boxes(dets.boxes, iou_type), prepare_boxes(gts.boxes, iou_type)
    if len(dets) == 0 or len(gts) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Overlaps(empty, empty, np.zeros(0))
    daabb, gaabb = boxes_aabb(dboxes), boxes_aabb(gboxes)
    num_images = int(max(dets.img.max(), gts.img.max())) + 1
    dord, dbnd = _image_slices(dets.img, num_images)
    gord, gbnd = _image_slices(gts.img, num_images)
    det_idx, gt_idx = [], []
    for i in range(num_images):
        di, gi = dord[dbnd[i]:dbnd[i + 1]], gord[gbnd[i]:gbnd[i + 1]]
        if len(di) == 0 or len(gi) == 0:
            continue
        allowed = None if groups is None else groups[0][di][:, None] == groups[1][gi][None, :]
        a, b = candidate_pairs(daabb[di], gaabb[gi], allowed)
        det_idx.append(di[a])
        gt_idx.append(gi[b])
    det_idx = np.concatenate(det_idx) if det_idx else np.zeros(0, dtype=np.int64)
    gt_idx = np.concatenate(gt_idx) if gt_idx else np.zeros(0, dtype=np.int64)
    return Overlaps(det_idx, gt_idx, pair_iou(dboxes, gboxes, det_idx, gt_idx, backend))


def _best_gt(num_dets: int, overlaps: Overlaps, pair_ok: np.ndarray, gt_ignore: np.ndarray):
    """Arg-max ground truth of each detection among the allowed pairs
    (ties: ordinary before ignored, then lower index). -1 / 0 where none."""
    d, g, iou = overlaps.det[pair_ok], overlaps.gt[pair_ok], overlaps.iou[pair_ok]
    order = np.lexsort((g, gt_ignore[g], -iou, d))
    d, g, iou = d[order], g[order], iou[order]
    first = np.ones(len(d), dtype=bool)
    first[1:] = d[1:] != d[:-1]
    best_gt = np.full(num_dets, -1, dtype=np.int64)
    best_iou = np.zeros(num_dets, dtype=np.float64)
    best_gt[d[first]] = g[first]
    best_iou[d[first]] = iou[first]
    return best_gt, best_iou


def _first_in_group(valid: np.ndarray, group: np.ndarray) -> np.ndarray:
    """(T, n) bool: ``valid`` and no earlier valid entry with the same group.
    Entries are in rank order; ``group`` is (n,)."""
    perm = np.argsort(group, kind='stable')
    v = valid[:, perm].astype(np.int32)
    g = group[perm]
    start = np.ones(len(g), dtype=bool)
    start[1:] = g[1:] != g[:-1]
    before = np.cumsum(v, axis=1) - v  # valid entries strictly before
    seg_base = before[:, start][:, np.cumsum(start) - 1]
    first = np.empty_like(valid)
    first[:, perm] = (v > 0) & (before == seg_base)
    return first


def match_and_score(det_labels: np.ndarray, det_scores: np.ndarray, num_classes: int,
                    overlaps: Overlaps, pair_ok: np.ndarray, gt_ignore: np.ndarray,
                    num_gts: np.ndarray, iou_thrs: Sequence[float] = (0.5, ),
                    strict_iou: bool = False, eval_mode: str = '11points') -> MapResult:
    """Greedy matching and per-class AP for one labelling.

    Args:
        det_labels: (N,) class of each detection, -1 to leave it out.
        det_scores: (N,).
        overlaps: candidate pairs from ``compute_overlaps``.
        pair_ok: (P,) bool, pairs that may match under this labelling
            (a detection and a ground truth of its class, or an ignored
            object that absorbs it).
        gt_ignore: (M,) bool, ground truth that absorbs matches without
            counting as a positive.
        num_gts: (K,) ordinary ground truth per class.
        iou_thrs: thresholds in (0, 1].
        strict_iou: match when IoU > thr (DOTA devkit) instead of >= thr
            (mmrotate).
        eval_mode: ``'11points'`` or ``'area'``.
    """
    thrs = check_iou_thrs(iou_thrs)
    det_labels = np.asarray(det_labels, dtype=np.int64)
    if (det_labels >= num_classes).any():
        raise ValueError(f'detection label {det_labels.max()} >= num_classes {num_classes}')
    tp, fp = match_detections(det_labels, det_scores, overlaps, pair_ok, gt_ignore, thrs,
                              strict_iou)
    return score_detections(det_labels, det_scores, tp, fp, num_classes, num_gts, thrs,
                            eval_mode)


def check_iou_thrs(iou_thrs: Sequence[float]) -> np.ndarray:
    thrs = np.asarray(iou_thrs, dtype=np.float64).reshape(-1)
    if thrs.size == 0 or (thrs <= 0).any() or (thrs > 1).any():
        raise ValueError(f'iou_thrs must be non-empty and in (0, 1], got {list(thrs)}')
    return thrs


def rank_detections(det_labels: np.ndarray, det_scores: np.ndarray) -> np.ndarray:
    """Indices of the kept detections (label >= 0) by class, then descending score;
    equal scores keep their input order."""
    kept = np.flatnonzero(det_labels >= 0)
    return kept[np.lexsort((-np.asarray(det_scores)[kept], det_labels[kept]))]


def match_detections(det_labels: np.ndarray, det_scores: np.ndarray, overlaps: Overlaps,
                     pair_ok: np.ndarray, gt_ignore: np.ndarray, thrs: np.ndarray,
                     strict_iou: bool = False) -> Tuple[np.ndarray, np.ndarray]:
    """(T, N) bool ``tp``, ``fp`` of every detection in input order (both False for
    one left out or absorbed by an ignored object). A detection's outcome depends
    only on its own image (its ground truth and the detections ranked before it
    there), so it holds for any set of images that contains that image."""
    rank = rank_detections(det_labels, det_scores)
    best_gt, best_iou = _best_gt(len(det_labels), overlaps, pair_ok, gt_ignore)
    bg, bi = best_gt[rank], best_iou[rank]
    has = bg >= 0
    valid = ((bi[None] > thrs[:, None]) if strict_iou else (bi[None] >= thrs[:, None])) & has
    ignored = np.zeros(len(bg), dtype=bool)
    ignored[has] = gt_ignore[bg[has]]
    first = _first_in_group(valid, bg)
    tp = np.zeros((len(thrs), len(det_labels)), dtype=bool)
    fp = np.zeros_like(tp)
    tp[:, rank] = valid & first & ~ignored
    fp[:, rank] = ~valid | (~first & ~ignored)
    return tp, fp


def score_detections(det_labels: np.ndarray, det_scores: np.ndarray, tp: np.ndarray,
                     fp: np.ndarray, num_classes: int, num_gts: np.ndarray, thrs: np.ndarray,
                     eval_mode: str = '11points') -> MapResult:
    """Per-class AP and recall of matched detections (``match_detections``)."""
    rank = rank_detections(det_labels, det_scores)
    # (T, n) in C order (np.take; tp[:, rank] would be F order): the AP sums then run
    # in the same order for any number of thresholds, to the bit
    ctp = np.cumsum(np.take(tp, rank, axis=1), axis=1)
    cfp = np.cumsum(np.take(fp, rank, axis=1), axis=1)
    labels_ranked = det_labels[rank]
    bounds = np.searchsorted(labels_ranked, np.arange(num_classes + 1))
    num_t = len(thrs)
    ap, recall = np.zeros((num_t, num_classes)), np.zeros((num_t, num_classes))
    eps = np.finfo(np.float64).eps
    for k in range(num_classes):
        s, e = bounds[k], bounds[k + 1]
        if e == s:
            continue
        base_tp = ctp[:, s - 1:s] if s > 0 else 0
        base_fp = cfp[:, s - 1:s] if s > 0 else 0
        ktp, kfp = ctp[:, s:e] - base_tp, cfp[:, s:e] - base_fp
        rec = ktp / max(num_gts[k], eps)
        prec = ktp / np.maximum(ktp + kfp, eps)
        ap[:, k] = average_precision(rec, prec, eval_mode)
        recall[:, k] = rec[:, -1]
    return MapResult(iou_thrs=thrs, ap=ap, recall=recall, num_gts=np.asarray(num_gts),
                     num_dets=np.diff(bounds))


def eval_rotated_map(dets: Detections, gts: GroundTruth, num_classes: int,
                     iou_thrs: Sequence[float] = DEFAULT_IOU_THRS, eval_mode: str = '11points',
                     strict_iou: bool = False, iou_type: str = 'rbox',
                     ignore_difficult: bool = True, backend: str = 'auto') -> MapResult:
    """Flat (one-level) rotated mAP of a whole dataset.

    ``ignore_difficult=False`` counts ignored ground truth as ordinary
    ground truth. See ``match_and_score`` for the other switches.
    """
    labels = np.asarray(gts.labels, dtype=np.int64)
    overlaps = compute_overlaps(dets, gts, iou_type, backend,
                                groups=(np.asarray(dets.labels), labels))
    ignore = np.asarray(gts.ignore, dtype=bool) & ignore_difficult
    pair_ok = np.asarray(dets.labels)[overlaps.det] == labels[overlaps.gt]
    num_gts = np.bincount(labels[~ignore], minlength=num_classes)
    return match_and_score(dets.labels, dets.scores, num_classes, overlaps, pair_ok, ignore,
                           num_gts, iou_thrs, strict_iou, eval_mode)


def flatten_mmrotate_results(det_results: Sequence[Sequence[np.ndarray]],
                             annotations: Sequence[dict]) -> Tuple[Detections, GroundTruth]:
    """mmrotate ``eval_rbbox_map`` inputs -> flat ``Detections, GroundTruth``.

    ``det_results[i][k]`` is an (n, 6) array ``(cx, cy, w, h, t, score)``
    (or (n, 9) with a polygon) of class ``k`` in image ``i``;
    ``annotations[i]`` has ``bboxes``, ``labels`` and optionally
    ``bboxes_ignore``, ``labels_ignore``.
    """
    d_img, d_box, d_score, d_lab = [], [], [], []
    g_img, g_box, g_lab, g_ign = [], [], [], []
    for i, (per_class, ann) in enumerate(zip(det_results, annotations)):
        for k, arr in enumerate(per_class):
            arr = np.asarray(arr)
            if len(arr) == 0:
                continue
            d_img.append(np.full(len(arr), i))
            d_box.append(arr[:, :-1])
            d_score.append(arr[:, -1])
            d_lab.append(np.full(len(arr), k))
        for key, ign in (('', False), ('_ignore', True)):
            boxes = np.asarray(ann.get('bboxes' + key, np.zeros((0, 5))))
            if len(boxes) == 0:
                continue
            g_img.append(np.full(len(boxes), i))
            g_box.append(boxes)
            g_lab.append(np.asarray(ann['labels' + key]).reshape(-1))
            g_ign.append(np.full(len(boxes), ign))

    def cat(parts, shape, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

    box_dim = (d_box or g_box or [np.zeros((0, 5))])[0].shape[1]
    dets = Detections(cat(d_img, (0, ), np.int64), cat(d_box, (0, box_dim), np.float64),
                      cat(d_score, (0, ), np.float64), cat(d_lab, (0, ), np.int64))
    gts = GroundTruth(cat(g_img, (0, ), np.int64), cat(g_box, (0, box_dim), np.float64),
                      cat(g_lab, (0, ), np.int64), cat(g_ign, (0, ), bool))
    return dets, gts
