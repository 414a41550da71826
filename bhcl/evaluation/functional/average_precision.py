"""Average precision from cumulative recall / precision (VOC 11-point or area)."""
from __future__ import annotations

import numpy as np

EVAL_MODES = ('11points', 'area')

# 0.0, 0.1, ..., 1.0 computed as i * 0.1, i.e. the same floats as the DOTA and
# VOC devkits' np.arange(0., 1.1, 0.1) (0.30000000000000004, ...): a recall of
# exactly 3/10 does not reach the 4th point there, and must not here either.
VOC07_RECALL_POINTS = np.arange(11) * 0.1


def average_precision(recall: np.ndarray, precision: np.ndarray,
                      mode: str = '11points') -> np.ndarray:
    """AP of ranked detections, one row per IoU threshold.

    Args:
        recall, precision: (T, n) or (n,) values after each of the ``n``
            detections in descending score order (recall non-decreasing).
        mode: ``'11points'`` (VOC07: mean of the best precision at recall
            >= 0, 0.1, ..., 1) or ``'area'`` (VOC2010+: area under the
            precision envelope).
    Returns:
        (T,) float64 (a scalar array for 1-D input). ``n == 0`` gives 0.
    """
    if mode not in EVAL_MODES:
        raise ValueError(f'eval_mode must be one of {EVAL_MODES}, got {mode!r}')
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    squeeze = recall.ndim == 1
    recall, precision = np.atleast_2d(recall), np.atleast_2d(precision)
    rows, n = recall.shape
    if n == 0:
        ap = np.zeros(rows)
    elif mode == 'area':
        mrec = np.concatenate([np.zeros((rows, 1)), recall, np.ones((rows, 1))], axis=1)
        mpre = np.concatenate([np.zeros((rows, 1)), precision, np.zeros((rows, 1))], axis=1)
        envelope = np.maximum.accumulate(mpre[:, ::-1], axis=1)[:, ::-1]
        ap = np.sum(np.diff(mrec, axis=1) * envelope[:, 1:], axis=1)
    else:
        envelope = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
        # recall is sorted, so entries reaching a recall point form a suffix
        first = (recall[:, None, :] < VOC07_RECALL_POINTS[None, :, None]).sum(axis=2)
        padded = np.concatenate([envelope, np.zeros((rows, 1))], axis=1)
        ap = np.take_along_axis(padded, first, axis=1).sum(axis=1) / len(VOC07_RECALL_POINTS)
    return ap[0] if squeeze else ap
