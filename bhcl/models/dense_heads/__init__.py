from .rotated_query_selection_head import RotatedQuerySelectionHead

__all__ = ['RotatedQuerySelectionHead']
