"""Class-agnostic rotated proposals for detection pre-training (MutDet-style).

MutDet takes SAM masks and their minimum-area rectangles as proposals. Any
such proposals written as DOTA txt (one file per image, any class name) are
read by :func:`read_proposals`. So that the pipeline runs without SAM,
:func:`generate_proposals` finds candidate regions classically (MSER regions
and/or Otsu-threshold connected components), takes their minimum-area
rectangles, filters them by size, aspect ratio and count, and removes
duplicates with rotated NMS.

Boxes are ``(cx, cy, w, h, t)`` in pixels (continuous coordinates: pixel
``i`` covers ``[i, i + 1)``), ``t`` in radians, clockwise-positive on screen,
written in le90 (``bhcl.structures.box_coding.regularize_le90``).
"""
from __future__ import annotations

import logging
import os
import os.path as osp
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import cv2
import numpy as np

from ..datasets.dota_txt import format_dota_line, parse_dota_fields, read_dota_lines
from ..datasets.formats import read_dota_objects
from ..datasets.image_check import read_image_or_raise
from ..datasets.split import find_images
from ..structures.geometry import rbox_to_poly, regularize_rboxes

METHODS = ('mser', 'threshold')


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


@dataclass
class ProposalConfig:
    """How :func:`generate_proposals` finds and filters boxes.

    Args:
        methods: region finders to combine, from ``('mser', 'threshold')``.
        min_size: smallest allowed shorter side, in pixels.
        max_size_ratio: largest allowed longer side, as a share of the
            image's longer side (drops "the whole background" regions).
        max_aspect: largest allowed longer / shorter side.
        nms_iou: rotated NMS threshold (a box is dropped when its IoU with a
            better-scored kept box is >= it); ``None`` disables NMS.
        max_num: boxes kept per image, best scores first.
        mser_delta: MSER stability step (``cv2.MSER_create(delta=...)``).
    """
    methods: Tuple[str, ...] = ('mser', 'threshold')
    min_size: float = 4.0
    max_size_ratio: float = 0.8
    max_aspect: float = 10.0
    nms_iou: Optional[float] = 0.7
    max_num: int = 300
    mser_delta: int = 5

    def __post_init__(self) -> None:
        unknown = set(self.methods) - set(METHODS)
        if not self.methods or unknown:
            raise ValueError(f'methods must be a non-empty subset of {METHODS}, '
                             f'got {tuple(self.methods)}')
        if self.min_size <= 0 or self.max_aspect < 1 or self.max_num < 1:
            raise ValueError('need min_size > 0, max_aspect >= 1 and max_num >= 1, got '
                             f'{self.min_size}, {self.max_aspect}, {self.max_num}')


def list_images(img_dir: str) -> Dict[str, str]:
    """``{stem: path}`` of the images in ``img_dir`` (suffixes ``IMG_SUFFIXES``).

    ``bhcl.datasets.split.find_images`` on one folder: ``FileNotFoundError`` for a
    missing folder or one without images, ``ValueError`` for two images with the same
    stem (their outputs, named by stem, would clash).
    """
    return find_images([img_dir])


def read_image(path: str, fix: str = 'restore it, or move it out of the image folder (every '
               'image there gets a proposal file)') -> np.ndarray:
    """(H, W, 3) uint8 BGR image; ``UnreadableImageError`` (an ``OSError``) naming
    the file, whether it is missing, empty or not an image, and ``fix`` (the
    default fits ``generate_proposal_files``)."""
    return read_image_or_raise(path, fix, cv2.IMREAD_COLOR)


def min_area_rbox(points: np.ndarray) -> np.ndarray:
    """(P, 2) points (x, y) -> (5,) le90 box of their minimum-area rectangle.

    Same conversion of ``cv2.minAreaRect`` as ``geometry.poly_to_rbox``.
    """
    (cx, cy), (w, h), angle = cv2.minAreaRect(np.asarray(points, dtype=np.float32).reshape(-1, 2))
    return regularize_rboxes([cx, cy, w, h, np.deg2rad(angle)])[0]


def _mser_regions(gray: np.ndarray, cfg: ProposalConfig) -> List[np.ndarray]:
    """Pixel coordinates of MSER regions (bright and dark ones)."""
    max_area = int(cfg.max_size_ratio ** 2 * gray.shape[0] * gray.shape[1])
    mser = cv2.MSER_create(delta=cfg.mser_delta, min_area=max(int(cfg.min_size ** 2), 1),
                           max_area=max(max_area, 2))
    regions, _ = mser.detectRegions(gray)
    return list(regions)


def _threshold_regions(gray: np.ndarray) -> List[np.ndarray]:
    """Pixel coordinates of the connected components of Otsu's threshold, both polarities."""
    regions = []
    _, mask = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    for binary in (mask, 255 - mask):
        num, labels = cv2.connectedComponents(binary, connectivity=8)
        ys, xs = np.nonzero(labels)
        ids = labels[ys, xs]
        order = np.argsort(ids, kind='stable')
        bounds = np.searchsorted(ids[order], np.arange(1, num + 1))
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            idx = order[lo:hi]
            regions.append(np.stack([xs[idx], ys[idx]], axis=1))
    return regions


def regions_to_boxes(regions: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Pixel regions (lists of integer ``(x, y)``) -> (N, 5) le90 boxes and (N,) scores.

    The rectangle is fitted to the pixel centres and widened by one pixel
    in each direction, so that a region of ``w x h`` whole pixels gives a
    ``w x h`` box (a 1-pixel-wide line gets width 1, not 0). The score is
    the share of the rectangle the region fills: compact, box-like regions
    (objects) rank above thin or ragged ones.
    """
    boxes = np.zeros((len(regions), 5), dtype=np.float64)
    scores = np.zeros(len(regions), dtype=np.float64)
    for i, pts in enumerate(regions):
        pts = np.asarray(pts, dtype=np.float32).reshape(-1, 2)   # distinct pixels
        boxes[i] = min_area_rbox(pts + 0.5)
        boxes[i, 2:4] += 1
        scores[i] = min(len(pts) / (boxes[i, 2] * boxes[i, 3]), 1.0)
    return boxes, scores


def filter_boxes(boxes: np.ndarray, img_shape: Tuple[int, int], cfg: ProposalConfig) -> np.ndarray:
    """(N,) bool mask of the (N, 5) le90 boxes that pass the size and aspect filters."""
    w, h = boxes[:, 2], boxes[:, 3]
    longest = cfg.max_size_ratio * max(img_shape[:2])
    finite = np.isfinite(boxes).all(1)
    return (finite & (h >= cfg.min_size) & (w <= longest)
            & (w <= cfg.max_aspect * np.maximum(h, 1e-6)))


def generate_proposals(img: np.ndarray, cfg: Optional[ProposalConfig] = None
                       ) -> Tuple[np.ndarray, np.ndarray]:
    """Class-agnostic rotated proposals of one image.

    Args:
        img: (H, W, 3) BGR or (H, W) gray uint8 image.
        cfg: finders and filters (default ``ProposalConfig()``).
    Returns:
        (N, 5) float32 le90 boxes ``(cx, cy, w, h, t)`` and (N,) float32
        scores (share of the rectangle filled by its region), best first,
        ``N <= cfg.max_num``.
    """
    import torch
    from ..ops.nms_rotated import nms_rotated_exact
    cfg = cfg or ProposalConfig()
    gray = img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    regions = []
    if 'mser' in cfg.methods:
        regions += _mser_regions(gray, cfg)
    if 'threshold' in cfg.methods:
        regions += _threshold_regions(gray)
    boxes, scores = regions_to_boxes(regions)
    keep = filter_boxes(boxes, gray.shape, cfg)
    boxes, scores = boxes[keep], scores[keep]
    order = np.argsort(-scores, kind='stable')
    if cfg.nms_iou is not None and len(boxes):
        order = nms_rotated_exact(torch.from_numpy(boxes).float(), torch.from_numpy(scores).float(),
                                  cfg.nms_iou).numpy()
    order = order[:cfg.max_num]
    return boxes[order].astype(np.float32), scores[order].astype(np.float32)


def read_proposals(path: str, min_size: float = 1e-3) -> Tuple[np.ndarray, int]:
    """(N, 5) float32 le90 boxes of a DOTA txt proposal file, and the number dropped.

    Class names and difficulties are ignored (proposals are class-agnostic).
    Boxes with a side below ``min_size`` pixels (degenerate polygons) are
    dropped, counted and logged. A malformed line raises ``AnnotationError``
    naming ``file:line`` and the fix.
    """
    lines, _ = read_dota_lines(path)
    polys = np.zeros((len(lines), 8), dtype=np.float64)
    for i, (lineno, line) in enumerate(lines):
        polys[i] = parse_dota_fields(line, f'{path}:{lineno}')[0]
    boxes = np.stack([min_area_rbox(p.reshape(4, 2)) for p in polys]) if len(polys) \
        else np.zeros((0, 5))
    keep = np.minimum(boxes[:, 2], boxes[:, 3]) >= min_size
    dropped = int((~keep).sum())
    if dropped:
        bad = [str(lines[i][0]) for i in np.flatnonzero(~keep)]
        _log(f'{path}: dropped {dropped} degenerate proposal(s) (a side < {min_size} px) '
             f'on line(s) {", ".join(bad[:10])}', logging.WARNING)
    return boxes[keep].astype(np.float32), dropped


def write_proposals(path: str, boxes: np.ndarray, class_name: str = 'object',
                    precision: int = 2) -> None:
    """Write (N, 5) boxes as a DOTA txt file (difficulty 0), one line per box."""
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        for poly in rbox_to_poly(boxes):
            f.write(format_dota_line(poly, class_name, 0, precision) + '\n')


def generate_proposal_files(img_dir: str, out_dir: str, cfg: Optional[ProposalConfig] = None,
                            class_name: str = 'object',
                            progress: Optional[Callable[[], None]] = None) -> Counter:
    """Propose boxes for every image of ``img_dir``; write ``out_dir/<stem>.txt``.

    An image without proposals still gets an (empty) file, so that every
    image is accounted for; it is counted under ``images_without_proposals``
    and logged. Returns counts: ``images``, ``boxes``, ``images_without_proposals``.
    """
    cfg = cfg or ProposalConfig()
    stats: Counter = Counter()
    for stem, path in list_images(img_dir).items():
        boxes, _ = generate_proposals(read_image(path), cfg)
        write_proposals(osp.join(out_dir, stem + '.txt'), boxes, class_name)
        stats['images'] += 1
        stats['boxes'] += len(boxes)
        if not len(boxes):
            stats['images_without_proposals'] += 1
            _log(f'{path}: no proposal passed the filters; wrote an empty file',
                 logging.WARNING)
        if progress is not None:
            progress()
    return stats


def proposal_recall(prop_dir: str, gt_dir: str,
                    iou_thrs: Tuple[float, ...] = (0.5, 0.7)) -> Dict[str, float]:
    """How well the proposals of ``prop_dir`` cover the objects of ``gt_dir``.

    ``gt_dir`` holds DOTA ``labelTxt`` files; every one needs a proposal file of
    the same name in ``prop_dir`` (an image without proposals has an empty
    file, as :func:`generate_proposal_files` writes). Class-agnostic: an
    object's best proposal is the one of highest polygon IoU. Returns the
    counts (``images``, ``objects``, ``proposals``), ``recall@T`` (the share of
    objects whose best proposal reaches IoU ``T``) for each of ``iou_thrs``, and
    ``median_best_iou``.
    """
    from ..evaluation.functional.rotated_iou import pairwise_iou
    gt_files = sorted(f for f in os.listdir(gt_dir) if f.endswith('.txt'))
    if not gt_files:
        raise FileNotFoundError(f'{gt_dir}: no DOTA .txt annotation file; pass the labelTxt '
                                'folder of the images the proposals were made for')
    best, num_props = [], 0
    for name in gt_files:
        path = osp.join(prop_dir, name)
        if not osp.exists(path):
            raise FileNotFoundError(
                f'{path}: no proposal file for {osp.join(gt_dir, name)}; generate the '
                'proposals for every image of this split (an image without proposals gets '
                'an empty file)')
        props, _ = read_proposals(path)
        num_props += len(props)
        gts = [obj.poly for obj in read_dota_objects(osp.join(gt_dir, name)).objects]
        if not gts:
            continue
        if not len(props):
            best.extend([0.0] * len(gts))
            continue
        iou = pairwise_iou(np.asarray(gts, dtype=np.float64).reshape(-1, 8),
                           rbox_to_poly(props).reshape(-1, 8).astype(np.float64), 'poly')
        best.extend(iou.max(axis=1).tolist())
    best_arr = np.asarray(best)
    out: Dict[str, float] = dict(images=len(gt_files), objects=len(best_arr),
                                 proposals=num_props)
    for thr in iou_thrs:
        out[f'recall@{thr:g}'] = float((best_arr >= thr).mean()) if len(best_arr) else 0.0
    out['median_best_iou'] = float(np.median(best_arr)) if len(best_arr) else 0.0
    return out
