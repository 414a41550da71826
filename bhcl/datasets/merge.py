"""Merge detections on patches back to full images with rotated NMS.

Patch ids follow ``split.patch_name`` (``<image>__<size>__<x>___<y>``): each
box is shifted by ``(x, y)`` and the boxes of all patches of an image go
through class-wise rotated NMS, which removes the duplicates found in the
overlaps. Boxes are ``(cx, cy, w, h, t)`` (le90, radians) as mmrotate's
heads predict them.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, Mapping, Optional

import numpy as np

from .split import parse_patch_name


@dataclass
class Detections:
    """Detections of one image: rboxes (N, 5), scores (N,), labels (N,) tree nodes."""
    rboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __post_init__(self):
        self.rboxes = np.asarray(self.rboxes, dtype=np.float64).reshape(-1, 5)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not len(self.rboxes) == len(self.scores) == len(self.labels):
            raise ValueError(f'{len(self.rboxes)} boxes, {len(self.scores)} scores and '
                             f'{len(self.labels)} labels: they must match')

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> 'Detections':
        return cls(np.zeros((0, 5)), np.zeros(0), np.zeros(0, dtype=np.int64))

    @classmethod
    def concat(cls, parts: Iterable['Detections']) -> 'Detections':
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(np.concatenate([p.rboxes for p in parts]),
                   np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]))

    def select(self, keep) -> 'Detections':
        return Detections(self.rboxes[keep], self.scores[keep], self.labels[keep])


def rotated_nms(dets: Detections, iou_thr: float = 0.1,
                class_agnostic: bool = False) -> Detections:
    """Rotated NMS per class (mmcv ``batched_nms`` with ``nms_rotated``), best first."""
    if len(dets) == 0:
        return dets
    import torch
    from mmcv.ops import batched_nms
    _, keep = batched_nms(torch.from_numpy(dets.rboxes).float(),
                          torch.from_numpy(dets.scores).float(),
                          torch.from_numpy(dets.labels),
                          dict(type='nms_rotated', iou_threshold=iou_thr),
                          class_agnostic=class_agnostic)
    return dets.select(keep.numpy())


def merge_patch_detections(patch_dets: Mapping[str, Detections], iou_thr: float = 0.1,
                           class_agnostic: bool = False,
                           image_ids: Optional[Iterable[str]] = None,
                           progress: Optional[Callable[[], None]] = None
                           ) -> Dict[str, Detections]:
    """``{patch id: Detections}`` in patch frames -> ``{image id: Detections}``.

    ``image_ids`` adds images that have no patch in ``patch_dets`` (they get
    no detections). ``progress`` is called once per merged image (a progress
    bar's ``update``). Raises ``ValueError`` for an id that is not a patch name.
    """
    grouped = defaultdict(list)
    for pid, dets in patch_dets.items():
        stem, x, y = parse_patch_name(pid)
        shifted = dets.rboxes.copy()
        shifted[:, :2] += (x, y)
        grouped[stem].append(Detections(shifted, dets.scores, dets.labels))
    merged = {}
    for stem, parts in grouped.items():
        merged[stem] = rotated_nms(Detections.concat(parts), iou_thr, class_agnostic)
        if progress is not None:
            progress()
    for stem in image_ids or ():
        merged.setdefault(stem, Detections.empty())
    return dict(sorted(merged.items()))
