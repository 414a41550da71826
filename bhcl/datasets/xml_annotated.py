"""A hierarchical DOTA dataset that also reads one XML annotation per image.

Shared by ``ShipRSImageNetDataset`` and ``FAIR1MDataset``. Where the
annotations come from is decided by ``ann_file`` (relative to ``data_root``):

* a folder of ``.txt`` files: DOTA ``labelTxt`` (``HierarchicalDOTADataset``);
* a folder of ``.xml`` files: one XML per image, matched to images by stem;
* a text file: an image-set list (``ImageSets/train.txt``, lines ``xxx.bmp``
  or ``xxx``), with the XML files in ``data_prefix=dict(xml_path=...)``.
"""
from __future__ import annotations

import os
import os.path as osp
from collections import Counter
from typing import Callable, Dict, List, Optional, Union

from ..structures.label_tree import LabelTree
from .dota_txt import AnnotationError
from .formats import RawAnnotation, RawObject, read_image_set, resolve_objects
from .hierarchical_dota import HierarchicalDOTADataset

TREE_CONFIG_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                           'configs', '_base_', 'datasets')


def load_label_tree(path: str) -> dict:
    """The ``label_tree`` dict defined in a dataset config file (``_base_`` allowed)."""
    from mmengine.config import Config
    if not osp.isfile(path):
        raise FileNotFoundError(
            f'label tree config {path!r} not found; pass label_tree=dict(paths=[...]) or '
            'the path of a config file that defines label_tree.')
    cfg = Config.fromfile(path)
    if 'label_tree' not in cfg:
        raise KeyError(f'{path}: the config file defines no label_tree')
    tree = cfg['label_tree']
    return tree.to_dict() if hasattr(tree, 'to_dict') else dict(tree)


class XMLAnnotatedDataset(HierarchicalDOTADataset):
    """``HierarchicalDOTADataset`` that also reads XML annotations (abstract).

    Subclasses set ``TREE_FILE`` (the default label-tree config in
    ``configs/_base_/datasets/``) and ``read_xml`` (``(path, on_invalid)`` ->
    ``RawAnnotation``; a bad object is skipped alone in skip mode).

    Args:
        label_tree: the tree as a dict / ``LabelTree``, the path of a config
            file defining ``label_tree``, or ``None`` for ``TREE_FILE``.
        **kwargs: ``HierarchicalDOTADataset`` arguments (``diff_thr``,
            ``on_invalid``, ``min_box_area``, ``img_suffix``, ...).
    """

    TREE_FILE: str = ''
    read_xml: Callable[..., RawAnnotation]

    def __init__(self, label_tree: Union[dict, LabelTree, str, None] = None,
                 **kwargs) -> None:
        if label_tree is None:
            label_tree = osp.join(TREE_CONFIG_DIR, self.TREE_FILE)
        if isinstance(label_tree, str):
            label_tree = load_label_tree(label_tree)
        super().__init__(label_tree=label_tree, **kwargs)

    # ------------------------------------------------------------- loading
    def _load_annotated(self, images: Dict[str, str], img_dir: str,
                        stats: Counter) -> List[dict]:
        ann = self.ann_file
        if osp.isfile(ann):
            xml_dir = self.data_prefix.get('xml_path')
            if not xml_dir:
                raise ValueError(
                    f'{type(self).__name__}: ann_file {ann!r} is an image-set list; give the '
                    "XML folder as data_prefix=dict(img_path=..., xml_path='Annotations/').")
            stems = read_image_set(ann)
        elif osp.isdir(ann):
            files = os.listdir(ann)
            xmls = sorted(f[:-4] for f in files if f.lower().endswith('.xml'))
            has_txt = any(f.lower().endswith('.txt') for f in files)
            if has_txt and xmls:
                raise AnnotationError(
                    f'{type(self).__name__}: {ann!r} holds both .txt and .xml annotations; '
                    'keep one format per folder.')
            if not xmls:
                if not has_txt:
                    raise AnnotationError(
                        f'{type(self).__name__}: no .txt or .xml annotation files in {ann!r}; '
                        'point ann_file at a labelTxt or XML folder (or an image-set list).')
                return super()._load_annotated(images, img_dir, stats)
            xml_dir, stems = ann, xmls
        else:
            raise FileNotFoundError(
                f'{type(self).__name__}: ann_file {ann!r} does not exist; it must be a '
                'labelTxt folder, an XML folder or an image-set list (relative to data_root).')
        if not osp.isdir(xml_dir):
            raise FileNotFoundError(f'{type(self).__name__}: XML folder {xml_dir!r} does not '
                                    'exist; check data_prefix xml_path.')
        data_list = []
        for stem in stems:
            info = self._load_xml_image(stem, osp.join(xml_dir, stem + '.xml'), images,
                                        img_dir, stats)
            if info is not None:
                data_list.append(info)
        return data_list

    def _load_xml_image(self, stem: str, xml_path: str, images: Dict[str, str],
                        img_dir: str, stats: Counter) -> Optional[dict]:
        policy = self.skip_policy
        if not osp.isfile(xml_path):
            policy.skip(AnnotationError(
                f'{xml_path}: annotation missing for listed image {stem!r}; add the XML, remove '
                "the image from the list, or use on_invalid='skip'."), 'missing_xml', 'image')
            return None
        if not self._has_image(xml_path, stem, images, img_dir):
            return None
        try:
            raw = type(self).read_xml(xml_path, policy)
        except AnnotationError as e:   # the whole file: malformed XML, not UTF-8
            policy.skip(e, unit='image')
            return None
        resolved = resolve_objects(raw, self.label_tree, policy, self.min_box_area)
        for reason, n in resolved.skipped.items():
            if reason.startswith('ignored:'):
                stats[f'skipped_{reason}'] += n
        instances = []
        for obj, label in resolved.objects:
            self._check_object(obj, label, xml_path, stats)
            instances.append(dict(bbox=list(obj.poly), bbox_label=label,
                                  difficulty=obj.difficulty,
                                  ignore_flag=int(obj.difficulty > self.diff_thr)))
        stats['images'] += 1
        stats['objects'] += len(instances)
        stats['empty_files'] += int(not instances)
        stats['mapped_by_tree_rules'] += sum(
            obj.name not in self.label_tree.classes for obj, _ in resolved.objects)
        return self._data_info(stem, osp.join(img_dir, images[stem]), instances)

    def _check_object(self, obj: RawObject, label: int, path: str, stats: Counter) -> None:
        """Hook for format-specific consistency checks of one kept object."""
