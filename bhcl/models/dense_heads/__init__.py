from .distinct_query_head import DistinctQueryHead

__all__ = ['DistinctQueryHead']
