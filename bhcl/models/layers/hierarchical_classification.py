"""Everything the label tree adds to a query detector's classification, in one place.

Both detectors (:class:`~bhcl.models.detectors.OrientedQueryDETR` and
:class:`~bhcl.models.detectors.RHINO`) own one :class:`HierarchicalClassification`
and call it at the same points of their training and inference:

- **training**: :meth:`~HierarchicalClassification.image_context` (category queries:
  image-conditioned embeddings, presence logits, the selected nodes of each image),
  :meth:`~HierarchicalClassification.classify` (object-query logits against them),
  :meth:`~HierarchicalClassification.class_weight` (unselected nodes take no part in
  the classification loss), :meth:`~HierarchicalClassification.presence_loss` and,
  per decoder stage, :meth:`~HierarchicalClassification.contrastive_loss` (HCL / BHCL
  on the matched queries' class features, one module and prototype bank per stage);
- **epochs**: :meth:`~HierarchicalClassification.set_epoch` (BHCL's warm-up);
- **inference**: :meth:`~HierarchicalClassification.top_predictions`, the one
  masking rule: a (query, node) pair is a candidate when the node is a leaf or an
  internal node named in ``test_cfg.internal_nodes``, and (category queries) is
  selected for the image; other pairs are never returned.

- **CQ-DINO** (``classifier=dict(type='CQDINOClassifier')``): the category selection
  also drives the detector: :meth:`~HierarchicalClassification.fuse` (image tokens and
  selected categories, before each encoder layer),
  :meth:`~HierarchicalClassification.select_proposals` /
  :meth:`~HierarchicalClassification.proposal_ranking` (query selection) and
  :meth:`~HierarchicalClassification.selected_categories` (what the decoder layers'
  ``category_attn`` attends to).

Configured by the detector's ``loss_hcl`` (a ``HierarchicalContrastiveLoss``),
``classifier`` (a ``CategoryQueries`` or ``CQDINOClassifier``) and
``test_cfg.internal_nodes``.
"""
import copy
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import bias_init_with_prob
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.models.losses.hcl_loss import build_contrastive_losses
from bhcl.structures import LabelTree

from .category_selection import (CategorySelection, best_selected_logit, gather_categories,
                                 scatter_categories, select_queries, selected_logits)
from .cqdino_classifier import CQDINOClassifier


class ClassContext(NamedTuple):
    """The category queries of one batch (``classifier``)."""
    categories: Tensor  # (K, C) image-independent category queries
    embeddings: Tensor  # (B, K, C) image-conditioned category embeddings
    presence: Tensor    # (B, K) presence logits
    selected: Tensor    # (B, K) bool: the nodes kept for each image
    # CQ-DINO (``CQDINOClassifier``): the selection as node ids, best first, which
    # drives fusion, query selection and the decoder's attention; None otherwise
    selection: Optional[CategorySelection] = None


def selection_weight(selected: Optional[Tensor], num_queries: int) -> Optional[Tensor]:
    """(B * N, K) float weight of each query's classification loss per node from the
    (B, K) bool selection: 0 for the nodes outside its image's selection (None: every
    node counts). The one rule both detectors' classification losses use."""
    if selected is None:
        return None
    return selected[:, None, :].expand(-1, num_queries, -1).flatten(0, 1).float()


def predict_mask(tree: LabelTree, internal_nodes: Union[None, str, Sequence[str]]) -> Tensor:
    """(K,) bool: the nodes inference may predict. Leaves, plus the internal nodes
    named in ``internal_nodes`` (``'all'`` for every one)."""
    mask = torch.as_tensor(tree.leaf_mask, dtype=torch.bool).clone()
    if internal_nodes is None:
        return mask
    internal = [k for k in range(tree.num_classes) if not tree.is_leaf(k)]
    if internal_nodes == 'all':
        mask[internal] = True
        return mask
    names = {tree.classes[k]: k for k in internal}
    unknown = [n for n in internal_nodes if n not in names]
    if unknown or isinstance(internal_nodes, str):
        raise ValueError(f'test_cfg.internal_nodes must be None, "all" or names of internal '
                         f'nodes; unknown: {unknown or internal_nodes}; internal nodes: '
                         f'{sorted(names)}')
    mask[[names[n] for n in internal_nodes]] = True
    return mask


def top_candidates(logits: Tensor, k: int, allowed: Optional[Tensor] = None
                   ) -> Tuple[Tensor, Tensor, Tensor]:
    """One image's (N, K) logits -> the top ``k`` (query, node) pairs by sigmoid score:
    scores (n,), query indices (n,), node labels (n,), n <= k.

    The one masking rule of inference: pairs whose node is outside ``allowed`` (K,)
    bool are never returned, even when fewer than ``k`` pairs remain."""
    num_classes = logits.shape[-1]
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float('-inf'))
    scores = logits.sigmoid().flatten()
    top, idx = scores.topk(min(k, scores.numel()))
    keep = top > 0
    top, idx = top[keep], idx[keep]
    return top, idx // num_classes, idx % num_classes


class HierarchicalClassification(nn.Module):
    """The label tree's part of a detector's classification (see the module docstring).

    Args:
        label_tree: the dataset's tree (``dict(paths=...)`` or a ``LabelTree``).
        num_stages: decoder stages (layers) with a classifier: one contrastive loss each.
        embed_dims: width C of the class features.
        loss_hcl: ``HierarchicalContrastiveLoss`` config, or None.
        classifier: ``CategoryQueries`` config, or None (a linear classifier per stage).
        internal_nodes: ``test_cfg.internal_nodes``: None (leaves only), ``'all'`` or a
            list of internal-node names that inference may predict besides the leaves.
    """

    def __init__(self, label_tree: Union[dict, LabelTree], num_stages: int, embed_dims: int,
                 loss_hcl: Optional[dict] = None, classifier: Optional[dict] = None,
                 internal_nodes: Union[None, str, Sequence[str]] = None) -> None:
        super().__init__()
        self.label_tree = LabelTree.from_config(label_tree)
        self.num_classes = self.label_tree.num_classes
        self.embed_dims = embed_dims
        tree_cfg = self.label_tree.to_config()
        self.category_queries = None if classifier is None else MODELS.build(
            copy.deepcopy(classifier), default_args=dict(label_tree=tree_cfg,
                                                         embed_dims=embed_dims))
        self.loss_hcl = None if loss_hcl is None else build_contrastive_losses(
            loss_hcl, num_stages, tree_cfg, embed_dims)
        self.register_buffer('predict_mask', predict_mask(self.label_tree, internal_nodes),
                             persistent=False)

    @property
    def class_channels(self) -> int:
        """Output width of a stage's class branch: K logits, or a C-wide projection
        matched with the category queries."""
        return self.num_classes if self.category_queries is None else self.embed_dims

    def init_weights(self) -> None:
        if self.category_queries is not None:
            self.category_queries.init_weights()

    def init_class_bias(self, bias: Tensor) -> None:
        """Bias of a stage's class output: the focal-loss prior for a linear classifier;
        zero for a projection (the prior sits in the category-query logits)."""
        if self.category_queries is None:
            nn.init.constant_(bias, bias_init_with_prob(0.01))
        else:
            nn.init.zeros_(bias)

    def set_epoch(self, epoch: int) -> None:
        """Pass the 0-based epoch on to the contrastive losses (their warm-up)."""
        for loss in self.loss_hcl or ():
            loss.set_epoch(epoch)

    # ----------------------------------------------------------- training
    def image_context(self, feats: Sequence[Tensor],
                      gt_labels: Optional[List[Tensor]] = None) -> Optional[ClassContext]:
        """Neck maps -> the batch's :class:`ClassContext` (None without category
        queries). ``gt_labels`` (training) keeps the annotated nodes selected."""
        cq = self.category_queries
        if cq is None:
            return None
        # image-independent category queries: computed once, shared by the image
        # conditioning and by HCL's classifier-weight bank in the loss
        categories = cq.category_embeddings()
        emb, presence, selected = cq(feats, gt_labels, categories=categories)
        selection = cq.ordered_selection(presence, gt_labels)
        return ClassContext(categories, emb, presence, selected, selection)

    # ------------------------------------------- CQ-DINO: what the selection drives
    @property
    def cqdino(self) -> bool:
        """Whether the category selection drives the detector (``CQDINOClassifier``):
        fusion, query selection and the decoder's attention to categories."""
        return isinstance(self.category_queries, CQDINOClassifier)

    def check_decoder(self, has_category_attn: bool, detector: str) -> None:
        """Raise when the decoder layers' ``category_attn`` and the classifier disagree."""
        if has_category_attn != self.cqdino:
            raise ValueError(
                f'{detector}: model.decoder.layer_cfg.category_attn (the decoder\'s attention '
                'to the selected categories) and classifier=dict(type=\'CQDINOClassifier\') '
                'go together; got ' + ('category_attn without CQDINOClassifier'
                                       if has_category_attn else
                                       'CQDINOClassifier without category_attn') +
                ' (see configs/synthetic/cqdino-*.py)')

    @property
    def num_fusion_layers(self) -> int:
        """Category-image fusion layers of the classifier (0 without CQ-DINO)."""
        return len(getattr(self.category_queries, 'fusion', ()))

    @staticmethod
    def selected_categories(context: Optional[ClassContext]
                            ) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The (B, S, C) embeddings of the selected categories, best first, and their
        (B, S) validity, for the decoder's attention to categories ((None, None)
        without a CQ-DINO selection)."""
        if context is None or context.selection is None:
            return None, None
        return (gather_categories(context.embeddings, context.selection),
                context.selection.valid)

    def fuse(self, layer: int, image: Tensor, context: ClassContext,
             image_padding: Optional[Tensor] = None) -> Tuple[Tensor, ClassContext]:
        """Fusion layer ``layer`` between (B, N, C) image tokens and the selected
        categories -> the fused tokens and the context whose selected embeddings are
        the fused ones (what the object queries are then classified against)."""
        cats, valid = self.selected_categories(context)
        image, cats = self.category_queries.fuse(layer, image, cats, image_padding, valid)
        embeddings = scatter_categories(context.embeddings, cats, context.selection)
        return image, context._replace(embeddings=embeddings)

    @staticmethod
    def proposal_ranking(class_logits: Tensor, context: ClassContext) -> Tensor:
        """(B, N, K) proposal logits -> (B, N): each proposal's best logit over its
        image's selected categories, the key of CQ-DINO's query selection."""
        return best_selected_logit(selected_logits(class_logits, context.selection),
                                   context.selection.valid)

    @staticmethod
    def select_proposals(class_logits: Tensor, context: ClassContext,
                         num_queries: int) -> Tensor:
        """(B, N, K) proposal logits -> (B, num_queries) indices of the proposals
        with the best :meth:`proposal_ranking` (:func:`select_queries`)."""
        return select_queries(selected_logits(class_logits, context.selection),
                              context.selection.valid, num_queries)

    def classify(self, projected: Tensor, context: Optional[ClassContext]) -> Tensor:
        """A stage's class-branch output (B, N, K or C) -> logits (B, N, K)."""
        if context is None:
            return projected
        return self.category_queries.logits(projected, context.embeddings)

    @staticmethod
    def class_weight(context: Optional[ClassContext], num_queries: int) -> Optional[Tensor]:
        """(B * N, K) float weight of each query's classification loss per node: 0 for
        the nodes outside its image's selection (None: every node counts);
        :func:`selection_weight`."""
        return selection_weight(None if context is None else context.selected, num_queries)

    def presence_loss(self, context: Optional[ClassContext],
                      gt_labels: List[Tensor]) -> Dict[str, Tensor]:
        """``loss_presence``: the category queries' multi-label presence loss ({} without):
        focal (``CategoryQueries``) or asymmetric and ancestor-masked (``CQDINOClassifier``)."""
        if context is None:
            return {}
        return dict(loss_presence=self.category_queries.loss_presence(context.presence,
                                                                      gt_labels))

    def contrastive_loss(self, stage: int, feats: Tensor, labels: Tensor,
                         linear_weight: Optional[Tensor] = None,
                         context: Optional[ClassContext] = None) -> Dict[str, Tensor]:
        """``loss_hcl_lv{l}`` of stage ``stage`` on (P, C) class features of the matched
        queries and their (P,) node labels ({} without ``loss_hcl``). The classifier
        weights of HCL's classifier bank: the category queries, else ``linear_weight``
        (K, C), the stage's linear classifier."""
        if self.loss_hcl is None:
            return {}
        weight = linear_weight if context is None else context.categories
        return self.loss_hcl[stage](feats, labels, classifier_weight=weight)

    # ---------------------------------------------------------- inference
    def allowed(self, selected: Optional[Tensor] = None) -> Tensor:
        """(K,) bool (or (B, K) with ``selected``): the nodes inference may return."""
        return self.predict_mask if selected is None else self.predict_mask & selected

    @staticmethod
    def node_scores(logits: Tensor, selected: Optional[Tensor] = None) -> Tensor:
        """(N, K) every node's sigmoid score, 0 for the nodes not selected for the image."""
        scores = logits.sigmoid()
        return scores if selected is None else scores * selected.to(scores.dtype)

    def top_predictions(self, logits: Tensor, k: int, selected: Optional[Tensor] = None
                        ) -> Tuple[Tensor, Tensor, Tensor]:
        """:func:`top_candidates` among the nodes :meth:`allowed` for one image
        (``selected`` (K,): its category selection)."""
        return top_candidates(logits, k, self.allowed(selected))


def migrate_legacy_keys(module: nn.Module, moved: Dict[str, str]) -> None:
    """Rename, on load, the state-dict keys of checkpoints written before the label-tree
    modules moved into ``hierarchy``: ``moved`` maps each old prefix (relative to
    ``module``, e.g. ``'loss_hcl.'`` or ``'bbox_head.category_queries.'``) to its new one."""

    def rename(mod, state_dict, prefix, local_metadata, strict, missing, unexpected, errors):
        for key in list(state_dict):
            for old, new in moved.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                    break

    module.register_load_state_dict_pre_hook(rename)
