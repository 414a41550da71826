"""Offline pseudo-labels for MutDet-style detection pre-training.

proposals (class-agnostic rotated boxes, DOTA txt) -> embeddings (frozen
backbone, crop-then-encode) -> clustering (PCA + L2 + k-means pseudo-classes).
The command-line tools are in ``tools/pretraining/``.
"""
from .clustering import (ClusterModel, assign_embedding_files, collect_embeddings,
                         fit_cluster_model, list_embedding_files, load_embedding_file)
from .embeddings import (DEFAULT_BACKBONE, build_frozen_backbone, crop_rotated, embed_boxes,
                         extract_embedding_files, image_to_tensor, load_backbone_weights,
                         rotated_crop_theta)
from .proposals import (ProposalConfig, generate_proposal_files, generate_proposals,
                        list_images, min_area_rbox, proposal_recall, read_proposals,
                        write_proposals)

__all__ = [
    'ProposalConfig', 'generate_proposals', 'generate_proposal_files', 'list_images',
    'min_area_rbox', 'read_proposals', 'write_proposals', 'proposal_recall',
    'DEFAULT_BACKBONE', 'build_frozen_backbone', 'load_backbone_weights', 'crop_rotated',
    'rotated_crop_theta', 'image_to_tensor', 'embed_boxes', 'extract_embedding_files',
    'ClusterModel', 'fit_cluster_model', 'collect_embeddings', 'assign_embedding_files',
    'list_embedding_files', 'load_embedding_file',
]
