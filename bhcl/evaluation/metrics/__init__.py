from .hierarchical_dota_metric import HierarchicalDOTAMetric

__all__ = ['HierarchicalDOTAMetric']
