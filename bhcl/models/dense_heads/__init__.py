from .distinct_query_head import DistinctQueryHead
from .rotated_dino_head import RotatedDINOHead

__all__ = ['DistinctQueryHead', 'RotatedDINOHead']
