from .oriented_query_detr import OrientedQueryDETR

__all__ = ['OrientedQueryDETR']
