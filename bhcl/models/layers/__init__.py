from .category_queries import CategoryQueries
from .mutual_enhancement import EmbeddingHead, MutualEnhancement
from .oriented_sampling_attention import OrientedSamplingAttention
from .query_decoder_layer import (BoxBiasedSelfAttention, DecoupledQueryDecoderLayer,
                                  QueryBranch, QueryDecoderLayer)
from .rbox_ops import gaussian_position_encoding, gaussian_similarity
from .rotated_cdn import RotatedCdnQueryGenerator
from .rotated_deformable_attention import RotatedMultiScaleDeformableAttention
from .rotated_dino_decoder import RotatedDeformableDecoderLayer, RotatedDinoTransformerDecoder

__all__ = [
    'BoxBiasedSelfAttention', 'CategoryQueries', 'DecoupledQueryDecoderLayer',
    'EmbeddingHead', 'MutualEnhancement', 'OrientedSamplingAttention', 'QueryBranch',
    'QueryDecoderLayer', 'RotatedCdnQueryGenerator', 'RotatedDeformableDecoderLayer',
    'RotatedDinoTransformerDecoder', 'RotatedMultiScaleDeformableAttention',
    'gaussian_position_encoding', 'gaussian_similarity'
]
