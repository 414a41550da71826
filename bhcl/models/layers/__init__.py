from .box_biased_self_attention import BoxBiasedSelfAttention
from .oriented_sampling_attention import OrientedSamplingAttention
from .query_decoder_layer import DecoupledQueryDecoderLayer, QueryBranch, QueryDecoderLayer
from .rbox_ops import (gaussian_wasserstein_distance, gaussian_wasserstein_similarity,
                       norm_angle_le90, refine_boxes, regularize_le90)

__all__ = [
    'BoxBiasedSelfAttention', 'OrientedSamplingAttention', 'QueryBranch', 'QueryDecoderLayer',
    'DecoupledQueryDecoderLayer', 'gaussian_wasserstein_distance',
    'gaussian_wasserstein_similarity', 'norm_angle_le90', 'refine_boxes', 'regularize_le90'
]
