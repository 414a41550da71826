"""Drawing hierarchical labels on images (registered into mmrotate's VISUALIZERS)."""
from .hierarchical_local_visualizer import HierarchicalLocalVisualizer, tree_label_texts

__all__ = ['HierarchicalLocalVisualizer', 'tree_label_texts']
