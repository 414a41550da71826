from .mutdet_pretrainer import MutDetPretrainer, pretrain_only_keys
from .oriented_query_detr import OrientedQueryDETR

__all__ = ['MutDetPretrainer', 'OrientedQueryDETR', 'pretrain_only_keys']
