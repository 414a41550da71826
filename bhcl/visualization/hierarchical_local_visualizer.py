"""A rotated-box visualiser whose labels show where a class sits in the tree."""
from __future__ import annotations

from typing import List, Optional

import numpy as np
from mmrotate.registry import VISUALIZERS
from mmrotate.visualization import RotLocalVisualizer

from ..structures.label_tree import LabelTree


def tree_label_texts(tree: LabelTree, sep: str = '/') -> List[str]:
    """The text drawn for each node (class-index order).

    A leaf reads ``'<name>\\n<path>'`` (``'Frigate\\nVessel/Warship/Frigate'``).
    An internal node only holds objects reallocated from "Other X"
    annotations (or internal-node predictions), so it reads
    ``'Other -> <name>\\n<path>'``; a top-level node is its path, so it reads
    ``'Other -> <name>'``.
    """
    texts = []
    for k, name in enumerate(tree.classes):
        head = name if tree.is_leaf(k) else f'Other -> {name}'
        path = sep.join(tree.path(k))
        texts.append(head if path == name else f'{head}\n{path}')
    return texts


@VISUALIZERS.register_module()
class HierarchicalLocalVisualizer(RotLocalVisualizer):
    """``RotLocalVisualizer`` that labels each box with its node name and tree path.

    The tree comes from the dataset meta (``dataset_meta['label_tree']``, set
    by bhcl's datasets), so ``tools/test.py --show-dir`` and
    ``tools/analysis_tools/browse_dataset.py`` draw e.g. ``Frigate`` over
    ``Vessel/Warship/Frigate`` (and the score for predictions), and mark
    reallocated "Other" objects as ``Other -> Warship``. Without a tree in
    the meta it draws the plain class names, as ``RotLocalVisualizer`` does.

    Args:
        name: the instance name (mmengine keeps one visualiser per name).
        path_sep: separator between the levels of the drawn path.
        **kwargs: ``RotLocalVisualizer`` arguments (``vis_backends``,
            ``line_width``, ...).
    """

    def __init__(self, name: str = 'visualizer', path_sep: str = '/', **kwargs) -> None:
        super().__init__(name=name, **kwargs)
        self.path_sep = path_sep

    def _draw_instances(self, image: np.ndarray, instances, classes: Optional[List[str]],
                        palette) -> np.ndarray:
        tree_cfg = (self.dataset_meta or {}).get('label_tree')
        if tree_cfg is not None:
            classes = tree_label_texts(LabelTree.from_config(tree_cfg), self.path_sep)
        return super()._draw_instances(image, instances, classes, palette)
