"""FAIR1M v1.0 / v2.0: official XML annotations or DOTA-format conversions."""
from __future__ import annotations

from mmrotate.registry import DATASETS

from .formats import read_fair1m_xml
from .xml_annotated import XMLAnnotatedDataset


@DATASETS.register_module()
class FAIR1MDataset(XMLAnnotatedDataset):
    """FAIR1M on its label tree (default: ``fair1m_label_tree.py``).

    Reads, chosen by ``ann_file``:

    * the official XML: ``ann_file='labelXml/'`` (``<possibleresult><name>``,
      5 ``<point>`` "x,y", the first 4 are the corners; no difficulty, so 0);
    * DOTA ``labelTxt`` written with spaces (``Small Car``) or underscores
      (``Small_Car``, with ``imagesource:``/``gsd:`` headers), e.g. the
      1024-px patches made by ``tools/dataset_converters/split_images.py``.

    ``other-ship|vehicle|airplane`` objects are reallocated to their parent
    node by the tree. Without ``ann_file`` the images are test images without
    labels.
    """

    TREE_FILE = 'fair1m_label_tree.py'
    read_xml = staticmethod(read_fair1m_xml)


@DATASETS.register_module()
class FAIR1Mv2Dataset(FAIR1MDataset):
    """FAIR1M v2.0: same formats and classes as v1.0 (v2.0 adds a labelled
    validation split); a name of its own so that configs state the version."""
