from .mutdet_pretrainer import MutDetPretrainer, pretrain_only_keys
from .oriented_query_detr import OrientedQueryDETR
from .rhino import RHINO

__all__ = ['MutDetPretrainer', 'OrientedQueryDETR', 'RHINO', 'pretrain_only_keys']
