"""Pseudo-labelled images for MutDet-style detection pre-training.

The offline tools (``tools/pretraining/``, docs/pretraining.md) write one file
per image, ``<stem>.pth`` = ``dict(boxes=(N, 5), labels=(N,), embeddings=(N, D))``:
class-agnostic rotated boxes ``(cx, cy, w, h, t)`` in pixels of the original
image, their k-means pseudo-class and their (PCA, L2-normalised) object
embedding, row ``i`` of each describing the same object.

``PseudoLabelDataset`` pairs every image with its file. In the pipeline,
``LoadPseudoLabels`` turns the file into ``gt_bboxes`` (``RotatedBoxes``),
``gt_bboxes_labels``, ``gt_ignore_flags`` and ``gt_embeddings``;
geometric transforms that move boxes without dropping any (``mmdet.Resize``,
``mmdet.RandomFlip``, ``RandomRotate`` without filtering) keep the rows
aligned by construction; ``FilterPseudoLabels`` drops boxes too small after
resizing together with their labels and embeddings; and
``PackPseudoLabelInputs`` (``mmdet.PackDetInputs`` plus embeddings) puts the
embeddings in ``gt_instances.embeddings``, checking that no transform in
between removed boxes without their embeddings.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from typing import List, Optional, Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmdet.datasets.transforms import PackDetInputs
from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmrotate.registry import DATASETS, TRANSFORMS
from mmrotate.structures.bbox import RotatedBoxes

from .formats import IMG_SUFFIXES
from .image_check import ExplainImageErrorsMixin


def pseudo_class_names(num_classes: int) -> List[str]:
    """``['cluster_000', ...]``: the pseudo-classes' names."""
    return [f'cluster_{i:03d}' for i in range(num_classes)]


def pseudo_label_tree(num_classes: int) -> dict:
    """A one-level label tree of ``num_classes`` pseudo-classes (detector and dataset)."""
    return dict(paths=[[name] for name in pseudo_class_names(num_classes)])


@DATASETS.register_module()
class PseudoLabelDataset(ExplainImageErrorsMixin, BaseDataset):
    """Images of ``data_prefix['img_path']`` with their pseudo-label files in
    ``data_prefix['pseudo_path']`` (same stem, ``.pth``).

    Images without a pseudo-label file (the proposal tool found nothing in
    them, or they were added later) are left out, counted in
    ``load_stats['skipped_no_pseudo_labels']`` and logged with a few names.

    Args:
        num_classes: number of pseudo-classes (the k of k-means); labels are
            checked against it when loaded.
    """

    METAINFO: dict = {}
    image_companion = 'its pseudo-label file'

    def __init__(self, num_classes: int, img_suffixes: Sequence[str] = IMG_SUFFIXES,
                 **kwargs) -> None:
        if num_classes < 1:
            raise ValueError(f'PseudoLabelDataset: num_classes must be >= 1, got {num_classes}')
        self.num_classes = num_classes
        self.img_suffixes = tuple(s.lstrip('.').lower() for s in img_suffixes)
        self.load_stats: Counter = Counter()
        tree = pseudo_label_tree(num_classes)
        metainfo = dict(classes=tuple(pseudo_class_names(num_classes)), label_tree=tree)
        super().__init__(metainfo=metainfo, **kwargs)

    def load_data_list(self) -> List[dict]:
        img_dir = self.data_prefix.get('img_path', '')
        pseudo_dir = self.data_prefix.get('pseudo_path', '')
        for what, folder in (('img_path', img_dir), ('pseudo_path', pseudo_dir)):
            if not osp.isdir(folder):
                raise FileNotFoundError(
                    f'PseudoLabelDataset: {what} folder {folder!r} does not exist; check '
                    "data_root and data_prefix=dict(img_path=..., pseudo_path=...) (the "
                    'pseudo-label folder is the output of tools/pretraining/cluster_embeddings.py)')
        stats: Counter = Counter()
        missing, data_list = [], []
        for name in sorted(os.listdir(img_dir)):
            stem, ext = osp.splitext(name)
            if ext.lstrip('.').lower() not in self.img_suffixes:
                continue
            pseudo = osp.join(pseudo_dir, stem + '.pth')
            if not osp.isfile(pseudo):
                missing.append(name)
                continue
            data_list.append(dict(img_path=osp.join(img_dir, name), img_id=stem,
                                  pseudo_path=pseudo, num_pseudo_classes=self.num_classes))
        stats['images'] = len(data_list)
        stats['skipped_no_pseudo_labels'] = len(missing)
        self.load_stats = stats
        if missing:
            print_log(f'PseudoLabelDataset: {len(missing)} image(s) of {img_dir} have no '
                      f'pseudo-label file in {pseudo_dir} and are left out (first: '
                      f'{missing[:3]})', logger='current', level=30)
        if not data_list:
            raise FileNotFoundError(
                f'PseudoLabelDataset: no image of {img_dir!r} has a pseudo-label file in '
                f'{pseudo_dir!r}; run the pseudo-labelling tools first (docs/pretraining.md)')
        print_log(f'PseudoLabelDataset: {len(data_list)} images with pseudo-labels',
                  logger='current')
        return data_list


@TRANSFORMS.register_module()
class LoadPseudoLabels(BaseTransform):
    """``results['pseudo_path']`` -> ``gt_bboxes`` (RotatedBoxes), ``gt_bboxes_labels``,
    ``gt_ignore_flags`` (all False) and ``gt_embeddings`` (N, D) float32."""

    def transform(self, results: dict) -> dict:
        path = results['pseudo_path']
        try:
            data = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets the same advice
            raise ValueError(f'{path}: cannot read pseudo-labels ({e}); regenerate it with '
                             'tools/pretraining/cluster_embeddings.py') from None
        missing = [k for k in ('boxes', 'labels', 'embeddings') if k not in data]
        if missing:
            raise ValueError(f'{path}: pseudo-label file lacks {missing}; expected '
                             'dict(boxes=(N, 5), labels=(N,), embeddings=(N, D)) from '
                             'tools/pretraining/cluster_embeddings.py')
        boxes, labels, emb = data['boxes'], data['labels'], data['embeddings']
        n = len(boxes)
        if boxes.dim() != 2 or boxes.shape[1] != 5 or labels.shape != (n, ) or \
                emb.dim() != 2 or len(emb) != n:
            raise ValueError(f'{path}: inconsistent pseudo-labels: boxes {tuple(boxes.shape)}, '
                             f'labels {tuple(labels.shape)}, embeddings {tuple(emb.shape)}; '
                             'each must have one row per object')
        k = results.get('num_pseudo_classes')
        if k is not None and n and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise ValueError(f'{path}: pseudo-class {int(labels.max())} outside [0, {k}); the '
                             f'cluster file has more clusters than num_pseudo_classes={k} of '
                             'the config: set them equal')
        results['gt_bboxes'] = RotatedBoxes(boxes.float())
        results['gt_bboxes_labels'] = labels.long().numpy()
        results['gt_ignore_flags'] = np.zeros(n, dtype=bool)
        results['gt_embeddings'] = emb.float().numpy()
        return results


def check_aligned(results: dict, where: str) -> None:
    """Raise when boxes and embeddings no longer have the same number of rows."""
    emb = results.get('gt_embeddings')
    if emb is None or 'gt_bboxes' not in results:
        return
    if len(emb) != len(results['gt_bboxes']):
        raise ValueError(
            f"{results.get('img_path')}: {len(results['gt_bboxes'])} boxes but {len(emb)} "
            f'embeddings at {where}: a transform before it removed boxes without their '
            'embeddings. Filter pseudo-labels with FilterPseudoLabels, not '
            'mmdet.FilterAnnotations, and avoid cropping transforms that drop boxes.')


@TRANSFORMS.register_module()
class FilterPseudoLabels(BaseTransform):
    """Drop pseudo-boxes whose width or height is below ``min_size`` pixels (after
    resizing), together with their labels, ignore flags and embeddings. The
    number dropped is added to ``results['pseudo_dropped']`` and to the
    transform's ``dropped`` counter."""

    def __init__(self, min_size: float = 2.0) -> None:
        self.min_size = min_size
        self.dropped = 0

    def transform(self, results: dict) -> dict:
        check_aligned(results, type(self).__name__)
        wh = results['gt_bboxes'].tensor[:, 2:4]
        keep = ((wh[:, 0] >= self.min_size) & (wh[:, 1] >= self.min_size)).numpy()
        for key in ('gt_bboxes', 'gt_bboxes_labels', 'gt_ignore_flags', 'gt_embeddings'):
            results[key] = results[key][keep]
        dropped = int((~keep).sum())
        self.dropped += dropped
        results['pseudo_dropped'] = results.get('pseudo_dropped', 0) + dropped
        return results

    def __repr__(self) -> str:
        return f'{type(self).__name__}(min_size={self.min_size})'


@TRANSFORMS.register_module()
class PackPseudoLabelInputs(PackDetInputs):
    """``mmdet.PackDetInputs`` that also packs ``gt_embeddings`` into
    ``gt_instances.embeddings`` (N, D), row-aligned with the boxes."""

    def transform(self, results: dict) -> dict:
        check_aligned(results, type(self).__name__)
        emb = results.get('gt_embeddings')
        packed = super().transform(results)
        if emb is not None:
            valid = np.where(results['gt_ignore_flags'] == 0)[0]
            packed['data_samples'].gt_instances.embeddings = torch.from_numpy(
                np.ascontiguousarray(emb[valid]))
        return packed
