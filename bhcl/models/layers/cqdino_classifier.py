"""CQ-DINO's classifier as its authors built it, on bhcl's category queries.

:class:`CQDINOClassifier` is a :class:`CategoryQueries` (tree-updated queries,
image-conditioned embeddings, object-query logits) whose category selection
drives the detector, as in CQ-DINO (Sun et al., 2025):

- **presence loss**: :class:`AsymmetricPresenceLoss` (gamma_neg 7, gamma_pos 0,
  clip 0.05, summed) with the ancestor mask, in place of the focal loss;
- **selection**: :class:`CategorySelector`, the top ``topk`` nodes by presence,
  best first; ``keep_gt=False`` (the authors') or True (annotated nodes forced in);
- **fusion**: ``num_fusion_layers`` :class:`CategoryImageFusionLayer` (one before
  each encoder layer), between the image tokens and the selected categories'
  embeddings; the fused embeddings replace the selected rows the object queries
  are classified against;
- the selection also ranks the detector's proposals (:func:`select_queries`) and
  is what the decoder layers' :class:`CategoryCrossAttention` attends to
  (``layer_cfg.category_attn`` of the decoder).

The detectors reach all of it through
:class:`~bhcl.models.layers.HierarchicalClassification`.
"""
import copy
from typing import Optional, Sequence, Tuple

from mmrotate.registry import MODELS
from torch import Tensor, nn

from .category_image_fusion import CategoryImageFusionLayer
from .category_queries import CategoryQueries
from .category_selection import CategorySelection, CategorySelector, selection_mask


@MODELS.register_module()
class CQDINOClassifier(CategoryQueries):
    """Category queries whose top-K selection drives fusion, query selection and the
    decoder's attention to categories (see the module docstring).

    Args (besides :class:`CategoryQueries`'s, whose ``loss_weight`` is replaced by
    ``loss_presence``'s):
        topk: categories selected per image (the authors: 100 of 13,204).
        keep_gt: force the annotated nodes into the training selection (False: the
            authors' rule, an object whose class is not selected has no positive).
        loss_presence: config of the presence loss (the tree is filled in).
        num_fusion_layers: fusion layers, one before each encoder layer (RHINO: the
            encoder's number of layers; OrientedFormer, which has no encoder: run in a
            row on the neck's maps).
        fusion: :class:`CategoryImageFusionLayer` arguments besides the channels
            (the authors: ``embed_dims=1024, num_heads=4, dropout=0.1, init_values=1e-4``).
    """

    def __init__(self, label_tree, embed_dims: int, topk: int = 100, keep_gt: bool = False,
                 loss_presence: dict = dict(type='AsymmetricPresenceLoss'),
                 num_fusion_layers: int = 6,
                 fusion: dict = dict(embed_dims=1024, num_heads=4, dropout=0.1,
                                     init_values=1e-4),
                 **kwargs) -> None:
        if 'loss_weight' in kwargs:
            raise ValueError('CQDINOClassifier: the presence loss weight is '
                             'loss_presence=dict(..., loss_weight=...), not loss_weight=')
        bad = {'image_dims', 'category_dims'} & set(fusion)
        if bad:
            raise ValueError(f'CQDINOClassifier: fusion={sorted(bad)} are the category '
                             'queries\' embed_dims; leave them out of fusion')
        super().__init__(label_tree, embed_dims, topk=topk, keep_gt=keep_gt, **kwargs)
        self.selector = CategorySelector(topk=topk, keep_gt=keep_gt)
        self.loss_presence_fn = MODELS.build(copy.deepcopy(loss_presence), default_args=dict(
            label_tree=self.tree.to_config()))
        self.fusion = nn.ModuleList(
            CategoryImageFusionLayer(image_dims=embed_dims, category_dims=embed_dims,
                                     **fusion) for _ in range(num_fusion_layers))

    def init_weights(self) -> None:
        super().init_weights()
        for layer in getattr(self, 'fusion', ()):  # absent while the base class builds
            layer.init_weights()

    def ordered_selection(self, presence: Tensor,
                          gt_labels: Optional[Sequence[Tensor]] = None) -> CategorySelection:
        """(B, K) presence logits -> the top ``topk`` nodes per image, best first
        (annotated ones forced in at training with ``keep_gt``)."""
        return self.selector(presence, gt_labels)

    def select(self, presence: Tensor, gt_labels: Optional[Sequence[Tensor]] = None) -> Tensor:
        """(B, K) bool mask of :meth:`ordered_selection`."""
        return selection_mask(self.ordered_selection(presence, gt_labels), presence.shape[1])

    def loss_presence(self, presence: Tensor, gt_labels: Sequence[Tensor]) -> Tensor:
        """The asymmetric presence loss (ancestor-masked) of (B, K) logits."""
        target = self.presence_targets(gt_labels, len(gt_labels), presence.device)
        return self.loss_presence_fn(presence, target)

    def fuse(self, layer: int, image: Tensor, categories: Tensor,
             image_padding: Optional[Tensor] = None,
             category_valid: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Fusion layer ``layer``: image tokens (B, N, C) and selected categories
        (B, S, C) -> both updated."""
        return self.fusion[layer](image, categories, image_padding, category_valid)
