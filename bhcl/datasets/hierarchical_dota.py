"""A DOTA-format dataset whose classes come from a label tree."""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from typing import Dict, List, Optional, Sequence, Union

from mmengine.dataset import BaseDataset
from mmengine.logging import print_log
from mmrotate.registry import DATASETS

from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError, parse_dota_txt
from .formats import IMG_SUFFIXES
from .image_check import ExplainImageErrorsMixin
from .skip_policy import ON_INVALID, SkipPolicy


def tree_palette(num: int) -> List[tuple]:
    """Deterministic, well-spread colours for ``num`` classes."""
    import colorsys
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.75, 0.95))
            for i in range(num)]


@DATASETS.register_module()
class HierarchicalDOTADataset(ExplainImageErrorsMixin, BaseDataset):
    """DOTA-format dataset labelled along a label tree.

    Same semantics as mmrotate's ``DOTADataset`` (``ann_file`` is the folder
    of ``labelTxt`` files, ``bbox`` is the 8-number polygon, ``diff_thr``
    sets ``ignore_flag``), plus: class names with spaces, DOTA header lines,
    a missing difficulty, "Other X" reallocation through the tree, images of
    any suffix, and clear errors for bad annotations.

    Args:
        label_tree: ``dict(paths=[...])`` / ``dict(parents={...})`` or a
            ``LabelTree``. Its node order is the class order.
        diff_thr: objects with difficulty above it get ``ignore_flag=1``.
        img_suffix: an image suffix, a sequence of them, or ``None`` to find
            each image by its stem among common suffixes.
        on_invalid: ``'raise'`` (default) stops at the first problem;
            ``'skip'`` leaves out a bad object (malformed line, unknown class,
            degenerate box) or a bad file (not UTF-8, malformed, image
            missing) with its image, logs each with file, line and reason,
            counts it in ``load_stats['skipped_<reason>']`` and logs a summary
            (``bhcl.datasets.skip_policy``). An image that is found but fails
            to load in the pipeline (not an image, truncated) raises an error
            naming it and the problem; a training set with ``'skip'`` logs it
            and takes another image (``ExplainImageErrorsMixin``).
        min_box_area: polygons with a smaller area are degenerate.
    """

    METAINFO: dict = {}
    # keys read from filter_cfg (checked by bhcl.utils.config_check)
    CONFIG_DICT_KEYS = {'filter_cfg': ('filter_empty_gt', )}

    def __init__(self,
                 label_tree: Union[dict, LabelTree],
                 diff_thr: int = 100,
                 img_suffix: Optional[Union[str, Sequence[str]]] = None,
                 on_invalid: str = 'raise',
                 min_box_area: float = 1e-6,
                 metainfo: Optional[dict] = None,
                 **kwargs) -> None:
        self.label_tree = LabelTree.from_config(label_tree)
        self.diff_thr = diff_thr
        if img_suffix is None:
            img_suffix = IMG_SUFFIXES
        self.img_suffixes = ((img_suffix, ) if isinstance(img_suffix, str)
                             else tuple(img_suffix))
        self.img_suffixes = tuple(s.lstrip('.').lower() for s in self.img_suffixes)
        if on_invalid not in ON_INVALID:
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        self.on_invalid = on_invalid
        self.skip_policy = SkipPolicy(on_invalid)
        self.min_box_area = min_box_area
        self.load_stats: Counter = Counter()
        super().__init__(metainfo=self._tree_metainfo(metainfo), **kwargs)

    def _tree_metainfo(self, metainfo: Optional[dict]) -> dict:
        tree = self.label_tree
        meta = dict(metainfo or {})
        if 'classes' in meta and tuple(meta['classes']) != tree.classes:
            raise ValueError(
                f'{type(self).__name__}: metainfo classes {tuple(meta["classes"])} differ from '
                f'the label tree {tree.classes}; define classes through label_tree only.')
        meta['classes'] = tree.classes
        meta['label_tree'] = tree.to_config()
        meta['leaf_ids'] = tree.leaf_ids
        meta.setdefault('palette', tree_palette(tree.num_classes))
        return meta

    # ------------------------------------------------------------- loading
    def _image_index(self) -> Dict[str, str]:
        img_dir = self.data_prefix.get('img_path', '')
        if not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{type(self).__name__}: image folder {img_dir!r} does not exist; '
                'check data_root and data_prefix=dict(img_path=...) in the config.')
        index = {}
        for name in sorted(os.listdir(img_dir)):
            stem, ext = osp.splitext(name)
            if ext.lstrip('.').lower() in self.img_suffixes:
                # the first suffix listed wins if a stem has several images
                prev = index.get(stem)
                if prev is None or (self.img_suffixes.index(ext.lstrip('.').lower())
                                    < self.img_suffixes.index(osp.splitext(prev)[1].lstrip('.').lower())):
                    index[stem] = name
        return index

    def load_data_list(self) -> List[dict]:
        images = self._image_index()
        img_dir = self.data_prefix['img_path']
        stats = Counter()
        self.skip_policy = SkipPolicy(self.on_invalid)
        if not self.ann_file:  # test images without labels
            data_list = [self._data_info(stem, osp.join(img_dir, name), [])
                         for stem, name in sorted(images.items())]
            stats['images'] = len(data_list)
        else:
            data_list = self._load_annotated(images, img_dir, stats)
        stats.update({f'skipped_{r}': n for r, n in self.skip_policy.counts.items()})
        self.load_stats = stats
        self._log_stats(stats)
        return data_list

    def _load_annotated(self, images: Dict[str, str], img_dir: str,
                        stats: Counter) -> List[dict]:
        ann_dir = self.ann_file
        if not osp.isdir(ann_dir):
            raise FileNotFoundError(
                f'{type(self).__name__}: annotation folder {ann_dir!r} does not exist; '
                'ann_file must be the labelTxt folder (relative to data_root).')
        txt_files = sorted(f for f in os.listdir(ann_dir) if f.endswith('.txt'))
        if not txt_files:
            raise AnnotationError(
                f'{type(self).__name__}: no .txt annotation files in {ann_dir!r}; '
                'point ann_file at a DOTA labelTxt folder.')
        data_list = []
        for txt in txt_files:
            stem = txt[:-4]
            path = osp.join(ann_dir, txt)
            if not self._has_image(path, stem, images, img_dir):
                continue
            try:
                parsed = parse_dota_txt(path, self.label_tree, self.skip_policy,
                                        self.min_box_area)
            except AnnotationError as e:   # the whole file (e.g. not UTF-8)
                self.skip_policy.skip(e, unit='image')
                continue
            for reason, n in parsed.skipped.items():
                if reason == 'header':
                    stats['header_lines'] += n
                elif reason.startswith('ignored:'):
                    stats[f'skipped_{reason}'] += n
            instances = [dict(bbox=o.poly, bbox_label=o.label, difficulty=o.difficulty,
                              ignore_flag=int(o.difficulty > self.diff_thr))
                         for o in parsed.objects]
            stats['images'] += 1
            stats['objects'] += len(instances)
            stats['empty_files'] += int(not instances)
            stats['mapped_by_tree_rules'] += sum(
                o.name not in self.label_tree.classes for o in parsed.objects)
            data_list.append(self._data_info(stem, osp.join(img_dir, images[stem]), instances))
        return data_list

    def _has_image(self, ann_path: str, stem: str, images: Dict[str, str],
                   img_dir: str) -> bool:
        """Whether ``stem`` has a non-empty image; otherwise raise or skip (policy)."""
        name = images.get(stem)
        if name is not None and osp.getsize(osp.join(img_dir, name)) > 0:
            return True
        state = 'missing' if name is None else 'empty (0 bytes)'
        self.skip_policy.skip(FileNotFoundError(
            f'{ann_path}: image {stem}.{{{",".join(self.img_suffixes)}}} is {state} in '
            f"{img_dir!r}; add it, remove the annotation file, or use on_invalid='skip'."),
            'missing_image', unit='image')
        return False

    @staticmethod
    def _data_info(stem: str, img_path: str, instances: List[dict]) -> dict:
        return dict(img_id=stem, file_name=osp.basename(img_path), img_path=img_path,
                    instances=instances)

    def _log_stats(self, stats: Counter) -> None:
        source = f'{type(self).__name__} ({self.ann_file or self.data_prefix.get("img_path")})'
        parts = ', '.join(f'{k}={v}' for k, v in sorted(stats.items()) if v)
        print_log(f'{source}: {parts}', logger='current')
        summary = self.skip_policy.summary(source)
        if summary:
            self.skip_policy.log(summary)

    # ------------------------------------------------------------ filtering
    def filter_data(self) -> List[dict]:
        if self.test_mode or not self.filter_cfg or not self.filter_cfg.get('filter_empty_gt'):
            return self.data_list
        kept = [d for d in self.data_list if d['instances']]
        if len(kept) < len(self.data_list):
            print_log(f'{type(self).__name__}: filter_empty_gt removed '
                      f'{len(self.data_list) - len(kept)} images without objects',
                      logger='current')
        return kept

    def get_cat_ids(self, idx: int) -> List[int]:
        return [inst['bbox_label'] for inst in self.get_data_info(idx)['instances']]
