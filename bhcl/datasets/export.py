"""Prediction files: DOTA Task1 and the FAIR1M submission XML, and reading them back.

* DOTA Task1: one file ``Task1_<class>.txt`` per class, lines
  ``<image id> <score> x1 y1 x2 y2 x3 y3 x4 y4``. Image ids and class names
  may contain spaces; lines are read from the right.
* FAIR1M: one XML per test image (``<probability>`` inside
  ``<possibleresult>``, 4 corners + the first repeated), zipped so that it
  unpacks to ``test/<image id>.xml``.
* ``load_prediction_pickle`` reads the ``.pkl`` written by
  ``tools/test.py --out`` (mmdet ``DumpDetResults``).
"""
from __future__ import annotations

import os
import os.path as osp
import pickle
import zipfile
from collections import defaultdict
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from ..structures.geometry import poly_to_rbox, rbox_to_poly
from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError
from .formats import RawObject, fair1m_xml_string
from .merge import Detections

TASK1_PREFIX = 'Task1_'


def write_zip(files: Iterable[str], root: str, zip_path: str) -> str:
    """Zip ``files`` with archive names relative to ``root``."""
    os.makedirs(osp.dirname(osp.abspath(zip_path)), exist_ok=True)
    with zipfile.ZipFile(zip_path, 'w', zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, osp.relpath(path, root))
    return zip_path


# ---------------------------------------------------------------- DOTA Task1
def write_dota_task1(dets: Mapping[str, Detections], classes: Sequence[str], out_dir: str,
                     precision: int = 2, score_precision: int = 4) -> List[str]:
    """Write ``out_dir/Task1_<class>.txt`` for every class (empty if none).

    Lines are grouped by image, best score first. Returns the file paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    lines = defaultdict(list)
    for img_id, d in sorted(dets.items()):
        if not img_id.strip() or img_id != img_id.strip():
            raise ValueError(f'image id {img_id!r} is empty or has leading/trailing spaces; '
                             'Task1 lines could not be read back')
        polys = rbox_to_poly(d.rboxes)
        for i in np.argsort(-d.scores, kind='stable'):
            coords = ' '.join(f'{v:.{precision}f}' for v in polys[i])
            lines[int(d.labels[i])].append(
                f'{img_id} {d.scores[i]:.{score_precision}f} {coords}\n')
    unknown = sorted(set(lines) - set(range(len(classes))))
    if unknown:
        raise ValueError(f'labels {unknown} are outside the {len(classes)} classes')
    paths = []
    for k, name in enumerate(classes):
        path = osp.join(out_dir, f'{TASK1_PREFIX}{name}.txt')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(''.join(lines[k]))
        paths.append(path)
    return paths


def read_dota_task1(task1_dir: str, classes: Sequence[str]) -> Dict[str, Detections]:
    """Read every ``Task1_<class>.txt`` of a folder into ``{image id: Detections}``.

    ``classes`` maps file names to labels; polygons become le90 rboxes.
    """
    index = {name: k for k, name in enumerate(classes)}
    files = sorted(f for f in os.listdir(task1_dir)
                   if f.startswith(TASK1_PREFIX) and f.endswith('.txt'))
    if not files:
        raise FileNotFoundError(f'no {TASK1_PREFIX}<class>.txt files in {task1_dir!r}')
    per_image = defaultdict(lambda: ([], [], []))
    for fname in files:
        cls = fname[len(TASK1_PREFIX):-4]
        if cls not in index:
            raise AnnotationError(f'{osp.join(task1_dir, fname)}: class {cls!r} is not one of '
                                  f'{", ".join(classes)}; rename the file or use the right tree.')
        path = osp.join(task1_dir, fname)
        with open(path, encoding='utf-8') as f:
            for lineno, line in enumerate(f, 1):
                tokens = line.split()
                if not tokens:
                    continue
                try:
                    values = [float(t) for t in tokens[-9:]]
                except ValueError:
                    values = []
                if len(tokens) < 10 or len(values) != 9:
                    raise AnnotationError(
                        f'{path}:{lineno}: expected "<image id> <score> x1 y1 .. x4 y4", '
                        f'got {line.strip()!r}')
                polys, scores, labels = per_image[' '.join(tokens[:-9])]
                polys.append(values[1:])
                scores.append(values[0])
                labels.append(index[cls])
    return {img: Detections(poly_to_rbox(np.array(p).reshape(-1, 8)), s, lab)
            for img, (p, s, lab) in sorted(per_image.items())}


# -------------------------------------------------------------------- FAIR1M
def fair1m_submission_names(tree: LabelTree) -> List[str]:
    """The name written for each node: leaves as they are, an internal node
    ``X`` as ``other-x`` (the inverse of the tree's ``other-x -> X`` rule;
    the server knows ``other-ship``, ``other-vehicle``, ``other-airplane``)."""
    return [name if tree.is_leaf(k) else f'other-{name.lower()}'
            for k, name in enumerate(tree.classes)]


def write_fair1m_submission(dets: Mapping[str, Detections], names: Sequence[str],
                            out_dir: str, img_suffix: str = '.tif',
                            image_ids: Optional[Iterable[str]] = None,
                            zip_path: Optional[str] = None) -> List[str]:
    """Write ``out_dir/test/<image id>.xml`` per image, optionally zipped.

    Args:
        names: the class name written for each label (``fair1m_submission_names``).
        image_ids: images to write even without detections (all test images).
        zip_path: also write a zip whose members are ``test/<image id>.xml``.
    Returns the XML paths.
    """
    test_dir = osp.join(out_dir, 'test')
    os.makedirs(test_dir, exist_ok=True)
    ids = sorted(set(dets) | set(image_ids or ()))
    paths = []
    for img_id in ids:
        d = dets.get(img_id, Detections.empty())
        polys = rbox_to_poly(d.rboxes)
        objects = [RawObject(poly=polys[i].tolist(), name=names[int(d.labels[i])],
                             score=float(d.scores[i]))
                   for i in np.argsort(-d.scores, kind='stable')]
        path = osp.join(test_dir, img_id + '.xml')
        with open(path, 'w', encoding='utf-8') as f:
            f.write(fair1m_xml_string(img_id + img_suffix, objects))
        paths.append(path)
    if zip_path:
        write_zip(paths, out_dir, zip_path)
    return paths


# ------------------------------------------------------- tools/test.py --out
def load_prediction_pickle(path: str) -> Dict[str, Detections]:
    """``{image id: Detections}`` from a ``DumpDetResults`` pickle.

    The image id is the image file name without suffix. Boxes may be
    rotated (N, 5) or quadrilaterals (N, 8), as tensors, arrays or box
    objects with a ``.tensor``.
    """
    with open(path, 'rb') as f:
        results = pickle.load(f)
    out = {}
    for i, res in enumerate(results):
        pred = res.get('pred_instances')
        img = res.get('img_path') or res.get('img_id')
        if pred is None or img is None:
            raise ValueError(f'{path}: item {i} has no pred_instances / img_path; write it with '
                             'tools/test.py --out preds.pkl')
        boxes = _as_numpy(pred['bboxes'])
        if boxes.ndim == 2 and boxes.shape[1] == 8:
            boxes = poly_to_rbox(boxes)
        elif boxes.size and (boxes.ndim != 2 or boxes.shape[1] != 5):
            raise ValueError(f'{path}: item {i} has boxes of shape {boxes.shape}; '
                             'expected rotated (N, 5) or quadrilateral (N, 8) boxes')
        img_id = osp.splitext(osp.basename(str(img)))[0]
        out[img_id] = Detections(boxes, _as_numpy(pred['scores']), _as_numpy(pred['labels']))
    return out


def _as_numpy(x) -> np.ndarray:
    x = getattr(x, 'tensor', x)
    if hasattr(x, 'detach'):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
