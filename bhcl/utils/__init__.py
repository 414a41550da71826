from .dist import (all_gather_cat, broadcast_, get_rank, get_world_size,
                   is_distributed, scale_grad)

__all__ = [
    'all_gather_cat', 'broadcast_', 'get_rank', 'get_world_size', 'is_distributed',
    'scale_grad'
]
