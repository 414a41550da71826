"""Cut large images (FAIR1M) into overlapping square patches with DOTA labels.

Patch ``<stem>__<size>__<x>___<y><ext>`` holds the window whose top-left
corner is ``(x, y)`` in the original image; its labels are in the patch frame.
Names with spaces or ending in a number survive: the label reader keeps
everything between the 8 coordinates and the difficulty as the class name
(``dota_txt.split_name_difficulty``), every written line carries its
difficulty, and file names are never split on spaces or underscores
(``parse_patch_name`` reads from the end).

Objects cut by a window: an object whose polygon lies inside the window is
copied unchanged (shifted). Otherwise its intersection-over-foreground
``IoF = area(object & window) / area(object)`` decides: below ``iof_thr`` it
is left out of this window (overlapping windows usually hold it whole);
otherwise the visible part is kept as the smallest rectangle with the
object's own orientation that holds the clipped polygon (so the angle is
kept, and the box stays inside the object; where the window cuts the object
diagonally, a corner of it sticks out of the window) and marked truncated
with difficulty 2, as mmrotate's
splitter does, so that ``diff_thr=1`` can ignore such objects at training or
evaluation time. No mm* imports.
"""
from __future__ import annotations

import os
import os.path as osp
import re
from collections import Counter
from dataclasses import dataclass, replace
from functools import partial
from multiprocessing import get_context
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import cv2
import numpy as np
from shapely.geometry import Polygon, box

from ..structures.geometry import poly_to_rbox
from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError, format_dota_line
from .formats import IMG_SUFFIXES, RawObject, read_dota_objects
from .image_check import UnreadableImageError, read_image_or_raise  # noqa: F401 (re-exported)
from .skip_policy import SkipPolicy

PATCH_RE = re.compile(r'^(?P<stem>.+)__(?P<size>\d+)__(?P<x>\d+)___(?P<y>\d+)$')
TRUNCATED_DIFFICULTY = 2


class MissingLabelError(FileNotFoundError):
    """An image to split has no label file."""
    reason = 'missing_label'




@dataclass
class SplitConfig:
    """Window size and overlap, the IoF threshold and the padding of edge patches."""
    size: int = 1024
    gap: int = 200
    iof_thr: float = 0.7
    pad: bool = True
    pad_value: Tuple[int, int, int] = (104, 116, 124)   # BGR ImageNet mean
    out_ext: Optional[str] = None                       # default: the input suffix
    precision: int = 2

    def __post_init__(self):
        if self.size <= 0 or not 0 <= self.gap < self.size:
            raise ValueError(f'need size > 0 and 0 <= gap < size, got size={self.size}, '
                             f'gap={self.gap}')
        if not 0 < self.iof_thr <= 1:
            raise ValueError(f'iof_thr must be in (0, 1], got {self.iof_thr}')


def patch_name(stem: str, size: int, x: int, y: int) -> str:
    return f'{stem}__{size}__{x}___{y}'


def parse_patch_name(name: str) -> Tuple[str, int, int]:
    """``'<stem>__<size>__<x>___<y>'`` (suffix allowed) -> ``(stem, x, y)``."""
    base = osp.basename(name)
    stem, ext = osp.splitext(base)
    if ext.lstrip('.').lower() not in IMG_SUFFIXES + ('txt', 'xml'):
        stem = base
    m = PATCH_RE.match(stem)
    if m is None:
        raise ValueError(f'{name!r} is not a patch name "<image>__<size>__<x>___<y>"')
    return m['stem'], int(m['x']), int(m['y'])


def window_starts(length: int, size: int, gap: int) -> List[int]:
    """Start offsets of windows of ``size`` with overlap ``gap`` covering ``length``.

    The last window is moved back to end at the border, so no window sticks
    out of an image larger than ``size``.
    """
    if length <= size:
        return [0]
    step = size - gap
    starts = list(range(0, length - size, step))
    starts.append(length - size)
    return starts


def sliding_windows(width: int, height: int, size: int = 1024,
                    gap: int = 200) -> List[Tuple[int, int]]:
    """Top-left corners ``(x, y)`` of the windows, row by row."""
    return [(x, y) for y in window_starts(height, size, gap)
            for x in window_starts(width, size, gap)]


def objects_in_window(objects: Sequence[RawObject], x: int, y: int, w: int, h: int,
                      iof_thr: float = 0.7) -> List[RawObject]:
    """The objects of window ``[x, x+w] x [y, y+h]``, in the window frame.

    See the module docstring for the truncation rule.
    """
    window = box(x, y, x + w, y + h)
    kept = []
    for obj in objects:
        pts = np.asarray(obj.poly, dtype=np.float64).reshape(4, 2)
        if (pts[:, 0].min() >= x and pts[:, 0].max() <= x + w
                and pts[:, 1].min() >= y and pts[:, 1].max() <= y + h):
            kept.append(replace(obj, poly=(pts - (x, y)).reshape(-1).tolist()))
            continue
        shape = Polygon(pts)
        if not shape.is_valid:          # a self-intersecting quad: use its hull
            shape = shape.convex_hull
        if shape.area <= 0:
            continue
        visible = shape.intersection(window)
        if visible.is_empty or visible.area / shape.area < iof_thr:
            continue
        corners = _aligned_bounds(visible, pts) - (x, y)
        kept.append(replace(obj, poly=corners.reshape(-1).tolist(),
                            difficulty=TRUNCATED_DIFFICULTY, truncated=1))
    return kept


def _aligned_bounds(part, pts: np.ndarray) -> np.ndarray:
    """(4, 2) corners of the rectangle aligned with the object ``pts`` that
    bounds ``part`` (a shapely polygon inside it): the object's angle is kept."""
    cx, cy, _, _, t = poly_to_rbox(pts.reshape(1, 8))[0]
    axes = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    local = (np.asarray(part.convex_hull.exterior.coords) - (cx, cy)) @ axes.T
    (u0, v0), (u1, v1) = local.min(0), local.max(0)
    box_local = np.array([[u0, v0], [u1, v0], [u1, v1], [u0, v1]])
    return box_local @ axes + (cx, cy)


def _read_image(path: str) -> np.ndarray:
    return read_image_or_raise(
        path, 're-download it, move it out of the input folders, or skip such images '
        '(--skip-invalid).', cv2.IMREAD_UNCHANGED)


def _crop(img: np.ndarray, x: int, y: int, cfg: SplitConfig) -> np.ndarray:
    patch = img[y:y + cfg.size, x:x + cfg.size]
    if not cfg.pad or patch.shape[:2] == (cfg.size, cfg.size):
        return patch
    out = np.empty((cfg.size, cfg.size) + patch.shape[2:], dtype=patch.dtype)
    channels = patch.shape[2] if patch.ndim == 3 else 1
    values = list(cfg.pad_value) + [0] * max(0, channels - len(cfg.pad_value))
    out[...] = values[:channels] if patch.ndim == 3 else values[0]
    out[:patch.shape[0], :patch.shape[1]] = patch
    return out


def split_image(img_path: str, ann: Union[str, Sequence[RawObject], None], out_dir: str,
                cfg: SplitConfig = SplitConfig()) -> Counter:
    """Split one image (and its labels, if any) into patches.

    ``ann`` is ``None`` (no labels), the path of a DOTA label file (read
    with ``read_dota_objects``) or its objects. Writes
    ``out_dir/images/<patch><ext>`` and, with labels,
    ``out_dir/labelTxt/<patch>.txt`` for every window (every object line has
    its difficulty, so names ending in a number read back whole). Returns
    counts: ``images``, ``patches``, ``objects`` (in the source),
    ``patch_objects``, ``truncated`` and ``lost`` (objects kept by no window).
    """
    stem, ext = osp.splitext(osp.basename(img_path))
    out_ext = cfg.out_ext or ext
    out_ext = out_ext if out_ext.startswith('.') else '.' + out_ext
    img = _read_image(img_path)
    height, width = img.shape[:2]
    objects = read_dota_objects(ann).objects if isinstance(ann, str) else list(ann or [])
    os.makedirs(osp.join(out_dir, 'images'), exist_ok=True)
    if ann is not None:
        os.makedirs(osp.join(out_dir, 'labelTxt'), exist_ok=True)
    stats = Counter(images=1, objects=len(objects))
    covered = set()
    for x, y in sliding_windows(width, height, cfg.size, cfg.gap):
        name = patch_name(stem, cfg.size, x, y)
        out_img = osp.join(out_dir, 'images', name + out_ext)
        if not cv2.imwrite(out_img, _crop(img, x, y, cfg)):
            raise OSError(f'{out_img}: OpenCV could not write the patch (check the suffix)')
        stats['patches'] += 1
        if ann is None:
            continue
        w, h = min(cfg.size, width - x), min(cfg.size, height - y)
        inside = objects_in_window(objects, x, y, w, h, cfg.iof_thr)
        covered.update(o.index for o in inside)
        stats['patch_objects'] += len(inside)
        stats['truncated'] += sum(o.truncated for o in inside)
        with open(osp.join(out_dir, 'labelTxt', name + '.txt'), 'w', encoding='utf-8') as f:
            f.write(''.join(format_dota_line(o.poly, o.name, o.difficulty, cfg.precision) + '\n'
                            for o in inside))
    stats['lost'] = len(objects) - len(covered)
    return stats


def find_images(img_dirs: Sequence[str]) -> Dict[str, str]:
    """``{stem: path}`` of the images in ``img_dirs``; a stem must be unique."""
    found: Dict[str, str] = {}
    for d in img_dirs:
        if not osp.isdir(d):
            raise FileNotFoundError(f'image folder {d!r} does not exist')
        for name in sorted(os.listdir(d)):
            stem, ext = osp.splitext(name)
            if ext.lstrip('.').lower() not in IMG_SUFFIXES:
                continue
            if stem in found:
                raise ValueError(f'image {stem!r} is in both {found[stem]!r} and '
                                 f'{osp.join(d, name)!r}; patch names would collide.')
            found[stem] = osp.join(d, name)
    if not found:
        raise FileNotFoundError(f'no images ({", ".join(IMG_SUFFIXES)}) in {list(img_dirs)}')
    return found


def _split_one(item: Tuple[str, Optional[List[RawObject]]], out_dir: str, cfg: SplitConfig,
               skip_unreadable: bool) -> Tuple[Counter, Optional[str]]:
    """Split one image in a worker; an unreadable image is returned as a message
    when skipping (the parent's policy logs and counts it)."""
    try:
        return split_image(item[0], item[1], out_dir, cfg), None
    except UnreadableImageError as e:
        if not skip_unreadable:
            raise
        return Counter(), str(e)


def split_images(img_dirs: Sequence[str], ann_dir: Optional[str], out_dir: str,
                 cfg: SplitConfig = SplitConfig(), nproc: int = 1,
                 progress: Optional[Callable[[], None]] = None,
                 on_invalid: Union[str, SkipPolicy] = 'raise',
                 tree: Optional[LabelTree] = None) -> Counter:
    """Split every image of ``img_dirs`` (labels from ``ann_dir/<stem>.txt``).

    Without ``ann_dir`` only images are written (test sets). Labels are read
    in this process with ``read_dota_objects`` (``tree``, if given, settles
    names ending in a number). The skip policy is the datasets': an image
    without a label file, with a non-UTF-8 label file or that cannot be read
    raises, or with ``on_invalid='skip'`` is skipped with its patches; a
    malformed line skips that object. Skips are counted as
    ``skipped_<reason>``. Writes as it goes: wrap the call in
    ``convert.staged_output`` to leave nothing behind when it stops.
    """
    policy = SkipPolicy.of(on_invalid)
    before = Counter(policy.counts)
    items = []
    for stem, path in find_images(img_dirs).items():
        objects = None
        if ann_dir is not None:
            objects = _read_labels(osp.join(ann_dir, stem + '.txt'), path, tree, policy)
            if objects is None:
                if progress is not None:
                    progress()
                continue
        items.append((path, objects))
    work = partial(_split_one, out_dir=out_dir, cfg=cfg, skip_unreadable=policy.skipping)
    stats = Counter()
    if nproc <= 1:
        results = map(work, items)
    else:
        pool = get_context('spawn').Pool(nproc)
        results = pool.imap_unordered(work, items)
    try:
        for s, problem in results:
            stats.update(s)
            if problem is not None:
                policy.skip(UnreadableImageError(problem), unit='image')
            if progress is not None:
                progress()
    finally:
        if nproc > 1:
            pool.close()
            pool.join()
    stats.update({f'skipped_{r}': n for r, n in (policy.counts - before).items()})
    return stats


def _read_labels(ann: str, img_path: str, tree: Optional[LabelTree],
                 policy: SkipPolicy) -> Optional[List[RawObject]]:
    """The objects of one label file; ``None`` when the policy skips the image."""
    if not osp.isfile(ann):
        error = MissingLabelError(
            f'{ann}: no label file for image {img_path!r}; convert its annotation, move the '
            'image out of the input folders, or skip such images (--skip-invalid).')
        policy.skip(error, unit='image')
        return None
    try:
        return read_dota_objects(ann, tree, policy).objects
    except AnnotationError as e:   # the whole file (not UTF-8)
        policy.skip(e, unit='image')
        return None
