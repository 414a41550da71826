from .dota_txt import AnnotationError, format_dota_line, parse_dota_txt
from .fair1m import FAIR1MDataset, FAIR1Mv2Dataset
from .hierarchical_dota import HierarchicalDOTADataset
from .multi_view import MultiViewDataset, multiview_collate
from .pseudo_labels import (FilterPseudoLabels, LoadPseudoLabels, PackPseudoLabelInputs,
                            PseudoLabelDataset, pseudo_label_tree)
from .shiprs import ShipRSImageNetDataset
from .skip_policy import SkipPolicy
from .synthetic import generate_synthetic_dataset

__all__ = [
    'AnnotationError', 'SkipPolicy', 'parse_dota_txt', 'format_dota_line',
    'HierarchicalDOTADataset', 'MultiViewDataset', 'multiview_collate',
    'PseudoLabelDataset', 'LoadPseudoLabels', 'FilterPseudoLabels', 'PackPseudoLabelInputs',
    'pseudo_label_tree', 'generate_synthetic_dataset', 'ShipRSImageNetDataset', 'FAIR1MDataset', 'FAIR1Mv2Dataset'
]
