"""Detect objects on a whole scene by sliding windows, merged into one set of detections.

The scene is read window by window (``SceneReader``), windows without valid
pixels are skipped, the others go through the model ``batch_size`` at a time,
and the detections (score >= ``score_thr``, with some area inside the scene)
move to scene pixels.

Merging across windows: an object near an inner window border is seen by two
or more windows, whole by the one where it lies inside the window and cut by
the others. Each detection is marked *truncated* when its polygon reaches
within ``border_margin`` px of an inner border of its window (a border that is
not the scene's). A greedy rotated NMS then visits whole detections first,
then truncated ones, best score first within each group, and a kept detection
suppresses every detection *of another window* whose rotated IoU with it
reaches ``iou_thr`` or which lies inside it by ``iof_thr`` of its own area (a
piece of the same object). So an object cut by a border is reported once, at
its full extent when some window holds it whole (objects longer than the
overlap cannot be; raise ``patch_overlap``). Detections of the same window
never suppress each other: a scene that fits in one window gives exactly the
model's result on the whole image (less boxes wholly outside it).
"""
from __future__ import annotations

import os.path as osp
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..structures.geometry import rbox_to_poly
from .scene_reader import SceneReader, Window, window_grid
from .tree_detections import TreeDetections

DEFAULT_OVERLAP_RATIO = 200 / 1024   # the split of the real datasets: 1024 px, 200 overlap


@dataclass
class SceneResult:
    """Merged detections of a scene (``detections`` in scene pixels, with
    ``extra['truncated']`` and ``extra['window']``) and how they were made."""
    path: str
    detections: TreeDetections
    width: int
    height: int
    crs: object
    transform: object
    band_note: str
    patch_size: int
    patch_overlap: int
    windows_total: int
    windows_run: int
    seconds: float

    @property
    def name(self) -> str:
        return osp.splitext(osp.basename(self.path))[0]

    def summary(self) -> str:
        """Objects per top-level class, windows and time, as a few lines of text."""
        tree = self.detections.tree
        top = Counter(tree.classes[tree.path_ids(int(k))[0]] for k in self.detections.labels)
        skipped = self.windows_total - self.windows_run
        lines = [f'{self.name}: {len(self.detections)} objects in {self.width} x {self.height} '
                 f'px, {self.windows_run} windows of {self.patch_size} px (overlap '
                 f'{self.patch_overlap}) run, {skipped} skipped (no valid pixels), '
                 f'{self.seconds:.1f} s ({self.windows_run / max(self.seconds, 1e-9):.2f} '
                 'windows/s)']
        lines += [f'  {name}: {top[name]}' for name in
                  [tree.classes[k] for k in tree.nodes_at_level(0)] if top[name]]
        return '\n'.join(lines)


def scene_patch_defaults(cfg, input_scale: Optional[int]) -> Tuple[int, int]:
    """Patch size and overlap from the config: ``scene_split=dict(patch_size=...,
    patch_overlap=...)`` if set, else the test pipeline's resize scale with the
    real datasets' 200/1024 overlap ratio, else 1024 / 200."""
    split = cfg.get('scene_split') or {}
    size = split.get('patch_size') or input_scale or 1024
    overlap = split.get('patch_overlap')
    if overlap is None:
        overlap = int(round(size * DEFAULT_OVERLAP_RATIO))
    return int(size), int(overlap)


def truncated_mask(polys: np.ndarray, win: Window, width: int, height: int,
                   margin: float) -> np.ndarray:
    """(N, 8) polygons in window pixels -> (N,) True where one reaches within ``margin``
    px of an inner border of the window (a border that is not the scene's)."""
    xs, ys = polys[:, 0::2], polys[:, 1::2]
    cut = np.zeros(len(polys), dtype=bool)
    if win.x > 0:
        cut |= xs.min(1) < margin
    if win.y > 0:
        cut |= ys.min(1) < margin
    if win.x + win.width < width:
        cut |= xs.max(1) > win.width - margin
    if win.y + win.height < height:
        cut |= ys.max(1) > win.height - margin
    return cut


def inside_area(polys: np.ndarray, win: Window, width: int, height: int) -> np.ndarray:
    """(N, 8) polygons in window pixels -> (N,) area inside the scene: boxes with none
    (wholly outside, or of zero size) are no objects of the scene."""
    import shapely
    rings = polys.reshape(-1, 4, 2) + (win.x, win.y)
    scene = shapely.box(0, 0, width, height)
    return shapely.area(shapely.intersection(shapely.polygons(rings), scene))


def cross_window_nms(rboxes: np.ndarray, scores: np.ndarray, windows: np.ndarray,
                     truncated: np.ndarray, labels: Optional[np.ndarray] = None,
                     iou_thr: float = 0.1, iof_thr: float = 0.5) -> np.ndarray:
    """Indices kept by the merge of the module docstring, in visiting order.

    Args:
        rboxes: (N, 5) le90 boxes in scene pixels; scores: (N,); windows: (N,)
            window of each box; truncated: (N,) bool.
        labels: (N,) classes; given, only boxes of the same class suppress each other.
    """
    import torch
    from mmcv.ops import box_iou_rotated
    from shapely import STRtree, box
    n = len(scores)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-scores, truncated))          # whole first, then by score
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    polys = rbox_to_poly(rboxes)
    hulls = box(polys[:, 0::2].min(1), polys[:, 1::2].min(1),
                polys[:, 0::2].max(1), polys[:, 1::2].max(1))
    a, b = STRtree(hulls).query(hulls, predicate='intersects')
    pair = (rank[a] < rank[b]) & (windows[a] != windows[b])   # a visited first
    if labels is not None:
        pair &= labels[a] == labels[b]
    a, b = a[pair], b[pair]
    hit = np.zeros(0, dtype=bool)
    if len(a):
        # IoU in a frame centred on box a: scene coordinates would cost float32 digits
        ba, bb = rboxes[a].copy(), rboxes[b].copy()
        bb[:, :2] -= ba[:, :2]
        ba[:, :2] = 0
        ta, tb = torch.from_numpy(ba).float(), torch.from_numpy(bb).float()
        iou = box_iou_rotated(ta, tb, aligned=True).numpy()
        iof = box_iou_rotated(tb, ta, mode='iof', aligned=True).numpy()  # inter / area(b)
        hit = (iou >= iou_thr) | (iof >= iof_thr)
    a, b = a[hit], b[hit]
    by_a = np.argsort(rank[a], kind='stable')
    a, b = a[by_a], b[by_a]
    start = np.searchsorted(rank[a], np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    keep = []
    for r, i in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed[b[start[r]:start[r + 1]]] = True
    return np.asarray(keep, dtype=np.int64)


def infer_scene(inferencer, path: str, patch_size: Optional[int] = None,
                patch_overlap: Optional[int] = None, batch_size: int = 1,
                score_thr: float = 0.3, bands: Optional[Sequence[int]] = None,
                iou_thr: float = 0.1, iof_thr: float = 0.5, border_margin: float = 4.0,
                class_agnostic: bool = True, cache_mb: int = 128,
                progress: Optional[Callable[[int], object]] = None) -> SceneResult:
    """Detect on a whole scene (see the module docstring).

    Args:
        inferencer: a :class:`RotatedDetInferencer`.
        path: the scene (GeoTIFF, PNG, JPEG, ...).
        patch_size, patch_overlap: window size and overlap in px (defaults:
            ``scene_patch_defaults`` of the model's config).
        score_thr: detections below it are dropped in each window, before merging.
        bands: three 1-based band numbers read as R, G, B (``SceneReader``).
        iou_thr, iof_thr: a kept detection suppresses one of another window with
            rotated IoU >= ``iou_thr``, or whose area lies inside it by ``iof_thr``.
        border_margin: px from an inner window border within which a detection
            counts as cut by it (truncated).
        class_agnostic: merge detections of different classes too (a cut object
            may be classified differently by two windows).
        cache_mb: GDAL block cache (``SceneReader``).
        progress: a callable ``progress(total_windows)`` returning a progress bar
            with ``update()`` (``mmengine.utils.ProgressBar``), or None.
    """
    size, overlap = scene_patch_defaults(inferencer.cfg, inferencer.input_scale)
    size = patch_size or size
    if patch_overlap is not None:
        overlap = patch_overlap
    elif overlap >= size:   # a patch size given alone, below the config's overlap
        overlap = int(round(size * DEFAULT_OVERLAP_RATIO))
    start = time.perf_counter()
    with SceneReader(path, bands=bands, cache_mb=cache_mb) as reader:
        windows = window_grid(reader.width, reader.height, size, overlap)
        bar = progress(len(windows)) if progress is not None else None
        parts = list(_detect_windows(inferencer, reader, windows, batch_size, score_thr,
                                     border_margin, bar))
        runs = len(parts)
        merged = TreeDetections.concat(parts, inferencer.tree, img_path=path,
                                       img_shape=(reader.height, reader.width))
        if not parts:   # no window run: keep the per-detection fields, empty
            merged.extra = dict(truncated=np.zeros(0, dtype=bool),
                                window=np.zeros(0, dtype=np.int64))
        keep = cross_window_nms(merged.rboxes, merged.scores, merged.extra['window'],
                                merged.extra['truncated'],
                                None if class_agnostic else merged.labels, iou_thr, iof_thr)
        return SceneResult(path, merged.select(keep), reader.width, reader.height, reader.crs,
                           reader.transform, reader.band_note, size, overlap, len(windows),
                           runs, time.perf_counter() - start)


def _detect_windows(inferencer, reader: SceneReader, windows: List[Window], batch_size: int,
                    score_thr: float, margin: float, bar):
    """Yield the detections of every window with valid pixels (one ``TreeDetections``
    each, in scene pixels), reading and running ``batch_size`` windows at a time."""
    batch: List[Tuple[int, Window, np.ndarray]] = []
    for w_idx, win in enumerate(windows):
        img = reader.read(win)
        if img is not None:
            batch.append((w_idx, win, img))
        elif bar is not None:
            bar.update()
        if batch and (len(batch) == batch_size or w_idx == len(windows) - 1):
            yield from _run_batch(inferencer, batch, reader, score_thr, margin)
            if bar is not None:
                for _ in batch:
                    bar.update()
            batch = []


def _run_batch(inferencer, batch, reader, score_thr: float,
               margin: float) -> List[TreeDetections]:
    """Detections of a batch of windows, thresholded and moved to scene pixels."""
    dets = inferencer.predict_arrays([img for _, _, img in batch])
    out = []
    for (w_idx, win, _), det in zip(batch, dets):
        det = det.select(det.scores >= score_thr)
        det = det.select(inside_area(det.polygons, win, reader.width, reader.height) > 0)
        polys = det.polygons
        det.extra = dict(truncated=truncated_mask(polys, win, reader.width, reader.height,
                                                  margin),
                         window=np.full(len(det), w_idx, dtype=np.int64))
        det.rboxes[:, :2] += (win.x, win.y)
        out.append(det)
    return out
