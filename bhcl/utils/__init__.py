from .dist import (all_gather_cat, all_gather_object, any_rank, barrier, broadcast_,
                   broadcast_object, get_rank, get_world_size, is_distributed, scale_grad)

__all__ = [
    'all_gather_cat', 'all_gather_object', 'any_rank', 'barrier', 'broadcast_',
    'broadcast_object', 'get_rank', 'get_world_size', 'is_distributed', 'scale_grad'
]
