"""ShipRSImageNet: BHCL's DOTA-format conversion and the official VOC XML release."""
from __future__ import annotations

import logging
from collections import Counter
from typing import Optional, Sequence

from mmengine.logging import print_log
from mmrotate.registry import DATASETS

from .formats import RawObject, check_shiprs_levels, read_shiprs_xml
from .xml_annotated import XMLAnnotatedDataset


@DATASETS.register_module()
class ShipRSImageNetDataset(XMLAnnotatedDataset):
    """ShipRSImageNet on its label tree (default: ``shiprs_label_tree.py``).

    Reads either layout, chosen by ``ann_file``:

    * the DOTA-format conversion: ``ann_file='train/labelTxt/'``,
      ``data_prefix=dict(img_path='train/images/')`` (class names with spaces,
      no header lines);
    * the official release: ``data_root='.../VOC_Format/'``,
      ``ann_file='ImageSets/train.txt'`` (lines ``xxx.bmp``) and
      ``data_prefix=dict(img_path='JPEGImages/', xml_path='Annotations/')``,
      or ``ann_file='Annotations/'`` for every XML file.

    ``Other X`` objects are reallocated to node ``X`` and ``Dock`` objects
    dropped (counted in ``load_stats['skipped_ignored:Dock']`` and logged);
    both are rules of the tree.

    Args:
        level_names: the official class list of each level (``level_0`` ..
            ``level_3``). When given, every XML object's ``level_k`` indices
            are checked against its ``<name>``; since the 1-based encoding is
            inferred from the official converter, a mismatch is counted in
            ``load_stats['level_mismatch']`` and logged, and ``<name>`` wins.
        **kwargs: see ``XMLAnnotatedDataset`` and ``HierarchicalDOTADataset``.
    """

    TREE_FILE = 'shiprs_label_tree.py'
    read_xml = staticmethod(read_shiprs_xml)

    def __init__(self, level_names: Optional[Sequence[Sequence[str]]] = None,
                 **kwargs) -> None:
        self.level_names = [list(names) for names in level_names] if level_names else None
        super().__init__(**kwargs)

    def _check_object(self, obj: RawObject, label: int, path: str, stats: Counter) -> None:
        if not self.level_names:
            return
        problem = check_shiprs_levels(obj, label, self.label_tree, self.level_names)
        if problem is not None:
            stats['level_mismatch'] += 1
            print_log(f'{obj.where(path)}: {problem}; the class is taken from <name>.',
                      logger='current', level=logging.WARNING)
