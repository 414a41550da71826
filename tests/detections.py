"""Compare two detection lists that should agree up to floating-point noise.

Two launches of the same model (1 vs 2 processes, other thread counts, another CPU, the
published code vs ours) compute scores and boxes that differ at the 1e-6 level: convolution
kernels choose other algorithms, sums run in other orders. After a top-k or a sort such
noise can swap two near-tied detections or push one across the k-th score, so an
element-wise comparison of the ranked lists fails on some machines and not on others.
What the launches must share is the set of detections: :func:`detection_differences`
matches them one to one by label, score and box, and allows a detection to be missing from
one list only when its score is within the tolerance of the cut that list was made with.
"""
from typing import Dict, List, Optional

import numpy as np

from bhcl.structures.geometry import rbox_to_poly

#: Measured noise between 1 and 2 processes on the smoke model: scores 3e-6, boxes 8e-6 px.
#: The tolerances leave a margin of about 30x (scores) and 1000x (boxes) above that, and
#: stay far below any real error (a 0.1 px shift, a 1e-3 score change, another label).
SCORE_ATOL = 1e-4
BOX_ATOL = 1e-2


def _numpy(x) -> np.ndarray:
    x = getattr(x, 'tensor', x)
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def corner_distance(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Largest corner displacement (px) between ``box`` (5,) and each of ``boxes`` (n, 5).

    Boxes are (cx, cy, w, h, t). Corners are compared over the 4 cyclic orders, so a box and
    its other spellings ((h, w, t + pi/2), (w, h, t + pi)) are at distance 0 and angle
    wrap-around at the edge of the angle range is not a difference.
    """
    mine = rbox_to_poly(box[None])[0].reshape(4, 2)
    theirs = rbox_to_poly(boxes).reshape(-1, 4, 2)
    shifts = np.stack([np.roll(mine, k, axis=0) for k in range(4)])          # (4, 4, 2)
    diff = np.abs(theirs[:, None] - shifts[None]).max(axis=(2, 3))            # (n, 4)
    return diff.min(axis=1)


def _cut(scores: np.ndarray, max_per_img: Optional[int], score_thr: float) -> float:
    """The score below which a list may have dropped a detection."""
    if max_per_img is not None and len(scores) >= max_per_img:
        return float(scores.min())
    return score_thr


def _arrays(det: Dict):
    boxes, scores = _numpy(det['bboxes']).reshape(-1, 5), _numpy(det['scores']).ravel()
    labels = _numpy(det['labels']).ravel().astype(np.int64)
    assert len(boxes) == len(scores) == len(labels), (
        f'lengths differ: {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels')
    return boxes, scores, labels


def match_detections(got: Dict, want: Dict, *, score_atol: float = SCORE_ATOL,
                     box_atol: float = BOX_ATOL):
    """Pair the detections of two lists of one image, one to one.

    ``got`` and ``want`` hold ``bboxes`` (n, 5), ``scores`` (n,), ``labels`` (n,).
    Greedily from the highest score of ``got``: a pair has the same label, scores within
    ``score_atol`` and corners within ``box_atol`` pixels (the closest such box wins).
    Returns ``(pairs, unmatched_got, unmatched_want)``, index arrays into each list.
    """
    (gb, gs, gl), (wb, ws, wl) = _arrays(got), _arrays(want)
    free = np.ones(len(ws), dtype=bool)
    pairs, unmatched = [], []
    for i in np.argsort(-gs, kind='stable'):
        cand = np.flatnonzero(free & (wl == gl[i]) & (np.abs(ws - gs[i]) <= score_atol))
        dist = corner_distance(gb[i], wb[cand]) if len(cand) else np.zeros(0)
        if len(dist) and dist.min() <= box_atol:
            j = cand[int(dist.argmin())]
            free[j] = False
            pairs.append((i, j))
        else:
            unmatched.append(i)
    return (np.array(pairs, dtype=np.int64).reshape(-1, 2), np.array(unmatched, dtype=np.int64),
            np.flatnonzero(free))


def detection_differences(got: Dict, want: Dict, *, max_per_img: Optional[int] = None,
                          score_thr: float = 0.0, score_atol: float = SCORE_ATOL,
                          box_atol: float = BOX_ATOL) -> List[str]:
    """What differs between two detection lists of one image, beyond the tolerances.

    Detections are paired by :func:`match_detections`. An unmatched detection is allowed
    only if the other list may have cut it: its score is within ``score_atol`` of that
    list's cut (its lowest score when it holds ``max_per_img`` detections, else
    ``score_thr``). Returns one line per problem; empty when the lists agree.
    """
    _, unmatched_got, unmatched_want = match_detections(got, want, score_atol=score_atol,
                                                        box_atol=box_atol)
    problems = []
    for name, det, idx, other in (('got', got, unmatched_got, want),
                                  ('want', want, unmatched_want, got)):
        _, scores, labels = _arrays(det)
        cut = _cut(_arrays(other)[1], max_per_img, score_thr)
        for i in idx:
            if scores[i] > cut + score_atol:
                problems.append(f'{name} has label {labels[i]} score {scores[i]:.6f} with no '
                                f'match in the other list (its cut is {cut:.6f})')
    return problems


def assert_same_detections(got: Dict[str, Dict], want: Dict[str, Dict], **tolerances):
    """Per-image :func:`detection_differences` over two ``{image: detections}`` dicts."""
    assert got.keys() == want.keys(), (
        f'images differ: only in got {sorted(set(got) - set(want))}, '
        f'only in want {sorted(set(want) - set(got))}')
    problems = [f'{img}: {p}' for img in got
                for p in detection_differences(got[img], want[img], **tolerances)]
    assert not problems, '\n'.join(problems[:20])
