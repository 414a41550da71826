from .category_cross_attention import CategoryCrossAttention
from .category_embeddings import CategoryEmbeddingsError, load_category_embeddings
from .category_image_fusion import CategoryImageFusionLayer
from .category_queries import CategoryQueries
from .category_selection import (CategorySelection, CategorySelector, gather_categories,
                                 select_categories, select_queries, selection_targets)
from .cqdino_classifier import CQDINOClassifier
from .mutual_enhancement import EmbeddingHead, MutualEnhancement
from .oriented_sampling_attention import OrientedSamplingAttention
from .query_decoder_layer import (BoxBiasedSelfAttention, DecoupledQueryDecoderLayer,
                                  QueryBranch, QueryDecoderLayer)
from .rbox_ops import gaussian_position_encoding, gaussian_similarity
from .rotated_cdn import RotatedCdnQueryGenerator
from .rotated_deformable_attention import RotatedMultiScaleDeformableAttention
from .rotated_dino_decoder import RotatedDeformableDecoderLayer, RotatedDinoTransformerDecoder

__all__ = [
    'BoxBiasedSelfAttention', 'CategoryCrossAttention', 'CategoryEmbeddingsError',
    'CategoryImageFusionLayer', 'CategoryQueries', 'CategorySelection', 'CategorySelector',
    'CQDINOClassifier', 'gather_categories', 'load_category_embeddings', 'select_categories',
    'select_queries', 'selection_targets', 'DecoupledQueryDecoderLayer', 'EmbeddingHead',
    'MutualEnhancement', 'OrientedSamplingAttention', 'QueryBranch', 'QueryDecoderLayer',
    'RotatedCdnQueryGenerator', 'RotatedDeformableDecoderLayer', 'RotatedDinoTransformerDecoder',
    'RotatedMultiScaleDeformableAttention', 'gaussian_position_encoding', 'gaussian_similarity'
]
