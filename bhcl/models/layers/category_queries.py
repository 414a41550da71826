"""Category-query classification (CQ-DINO style), hierarchy-aware.

Classification becomes matching between object queries and learnable
category queries, one per tree node:

1. **Category queries** ``Q`` (K x C). With a label tree they are updated
   bottom-up: each internal node k becomes ``(1 - w_k) Q_k + w_k mean(Q_children)``
   (children already updated), ``w_k = w_min + (w_max - w_min) ln(s_k) / ln(s_max)``
   where ``s_k`` is the size of k's subtree (k and its descendants) and
   ``s_max`` the largest one's, so w grows with the log of the subtree size
   from 0.4 towards 0.8 (the largest subtree gets 0.8); then LayerNorm. Without
   a tree (``relation='self_attn'``) the queries attend to each other instead
   (K x K attention: for a few hundred categories).
2. **Image-guided selection**: the category queries cross-attend to one
   feature level of the image plus its global mean token, a linear layer
   scores each category's presence in the image, and the top ``topk`` are
   kept. The presence score is trained as a multi-label classifier (targets:
   the nodes annotated in the image). At training, ``keep_gt=True`` always
   keeps the annotated nodes (if there are more than ``topk`` of them, all are
   kept), so that no object's class is ever outside the selection.
3. **Object-query logits**: ``<proj(x), E_k> / sqrt(C) + b`` between each
   object query and each image-conditioned category embedding E; categories
   outside the selection are marked in a mask: the classification loss ignores
   them and inference scores them 0.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.model import bias_init_with_prob
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.structures import LabelTree

from .category_embeddings import load_category_embeddings
from .category_selection import CategorySelection


def subtree_sizes(tree: LabelTree) -> List[int]:
    """Number of nodes in each node's subtree (the node included)."""
    sizes = [1] * tree.num_classes
    for k in sorted(range(tree.num_classes), key=lambda i: -tree.depth[i]):
        if tree.parent[k] >= 0:
            sizes[tree.parent[k]] += sizes[k]
    return sizes


def tree_update_weights(tree: LabelTree, w_min: float = 0.4, w_max: float = 0.8) -> Tensor:
    """(K,) mixing weight of each internal node (0 for leaves), see module doc."""
    sizes = subtree_sizes(tree)
    s_max = max(sizes)
    w = torch.zeros(tree.num_classes)
    if s_max < 2:
        return w
    for k, s in enumerate(sizes):
        if s > 1:
            w[k] = w_min + (w_max - w_min) * math.log(s) / math.log(s_max)
    return w


def tree_update(queries: Tensor, tree: LabelTree, weights: Tensor) -> Tensor:
    """Bottom-up parent update of (K, C) ``queries`` (out of place, differentiable).

    Level by level from the deepest parents up: a parent mixes its own query
    with the mean of its children's already-updated queries.
    """
    parent = torch.as_tensor(tree.parent, device=queries.device)
    depth = torch.as_tensor(tree.depth, device=queries.device)
    count = torch.zeros(tree.num_classes, device=queries.device).index_add_(
        0, parent.clamp(min=0), (parent >= 0).float())
    w = weights.to(queries)[:, None]
    out = queries
    for level in range(tree.num_levels - 2, -1, -1):
        child = ((depth == level + 1) & (parent >= 0)).nonzero().squeeze(1)
        sums = torch.zeros_like(out).index_add(0, parent[child], out[child])
        mean = sums / count.clamp(min=1)[:, None]
        update = ((depth == level) & (count > 0))[:, None]
        out = torch.where(update, (1 - w) * out + w * mean, out)
    return out


@MODELS.register_module()
class CategoryQueries(nn.Module):
    """Learnable category queries, image-guided top-K selection and object-query logits.

    Args:
        label_tree: the tree (every node gets a category query).
        embed_dims: channels of the object queries and image features.
        relation: ``'tree'`` (bottom-up update), ``'self_attn'`` (attention among
            the category queries) or None.
        topk: categories kept per image (all when ``topk >= K``).
        keep_gt: at training, always keep the annotated nodes of the image.
        num_heads: heads of the category-to-image (and self) attention.
        w_min, w_max: range of the tree mixing weight.
        feat_level: the feature level (index into the neck outputs) the
            category queries attend to.
        loss_weight: weight of the presence loss in the detector.
        init_embeddings: optional embeddings file (one row per tree node, e.g. from a
            text encoder; see :func:`load_category_embeddings`) the queries start
            from, instead of a random draw.
    """

    def __init__(self, label_tree, embed_dims: int, relation: Optional[str] = 'tree',
                 topk: int = 100, keep_gt: bool = True, num_heads: int = 8,
                 w_min: float = 0.4, w_max: float = 0.8, feat_level: int = -2,
                 loss_weight: float = 1.0, init_embeddings: Optional[str] = None) -> None:
        super().__init__()
        if relation not in ('tree', 'self_attn', None):
            raise ValueError(f"relation must be 'tree', 'self_attn' or None, got {relation!r}")
        self.tree = LabelTree.from_config(label_tree)
        self.num_classes = self.tree.num_classes
        self.embed_dims = embed_dims
        self.relation = relation
        self.topk = topk
        self.keep_gt = keep_gt
        self.feat_level = feat_level
        self.loss_weight = loss_weight
        self.init_embeddings = init_embeddings
        self.queries = nn.Parameter(torch.empty(self.num_classes, embed_dims))
        self.register_buffer('tree_weights', tree_update_weights(self.tree, w_min, w_max),
                             persistent=False)
        self.self_attn = (nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)
                          if relation == 'self_attn' else None)
        self.query_norm = nn.LayerNorm(embed_dims)
        self.cross_attn = nn.MultiheadAttention(embed_dims, num_heads, batch_first=True)
        self.cross_norm = nn.LayerNorm(embed_dims)
        self.presence = nn.Linear(embed_dims, 1)
        self.logit_bias = nn.Parameter(torch.zeros(()))
        self.init_weights()

    def init_weights(self) -> None:
        if self.init_embeddings is None:
            nn.init.normal_(self.queries, std=self.embed_dims ** -0.5)
        else:  # checked against the tree by name and width; errors name the file
            with torch.no_grad():
                self.queries.copy_(load_category_embeddings(
                    self.init_embeddings, self.tree.classes, self.embed_dims))
        nn.init.constant_(self.presence.bias, bias_init_with_prob(0.01))
        nn.init.constant_(self.logit_bias, bias_init_with_prob(0.01))

    def category_embeddings(self) -> Tensor:
        """(K, C) image-independent category queries after the relation step."""
        q = self.queries
        if self.relation == 'tree':
            q = tree_update(q, self.tree, self.tree_weights)
        elif self.relation == 'self_attn':
            q = q + self.self_attn(q[None], q[None], q[None], need_weights=False)[0][0]
        return self.query_norm(q)

    def forward(self, feat: Union[Tensor, Sequence[Tensor]],
                gt_labels: Optional[Sequence[Tensor]] = None,
                categories: Optional[Tensor] = None) -> Tuple[Tensor, Tensor, Tensor]:
        """Image features (B, C, H, W) (or the neck's levels: ``feat_level`` is
        taken) -> image-conditioned embeddings (B, K, C), presence logits (B, K)
        and the selection mask (B, K) bool.

        ``gt_labels`` (one tensor of node ids per image) is used when
        ``keep_gt`` and the module is training; ``categories`` (K, C) is
        :meth:`category_embeddings` when the caller already computed it.
        """
        if not isinstance(feat, Tensor):
            feat = feat[self.feat_level]
        b = feat.shape[0]
        tokens = feat.flatten(2).transpose(1, 2)  # (B, HW, C)
        tokens = torch.cat([tokens.mean(1, keepdim=True), tokens], dim=1)
        if categories is None:
            categories = self.category_embeddings()
        cats = categories[None].expand(b, -1, -1)
        emb = self.cross_norm(cats + self.cross_attn(cats, tokens, tokens,
                                                     need_weights=False)[0])
        presence = self.presence(emb).squeeze(-1)
        return emb, presence, self.select(presence, gt_labels)

    def select(self, presence: Tensor, gt_labels: Optional[Sequence[Tensor]] = None) -> Tensor:
        """(B, K) bool: the top ``topk`` categories per image (plus the annotated ones)."""
        b, k = presence.shape
        if self.topk >= k:
            return torch.ones_like(presence, dtype=torch.bool)
        score = presence.detach().clone()
        forced = self.presence_targets(gt_labels, b, presence.device).bool() if (
            self.training and self.keep_gt and gt_labels is not None) else None
        if forced is not None:
            score[forced] = float('inf')
        top = score.topk(self.topk, dim=1).indices
        # a tensor source, not the scalar True: the JIT tracer (FLOP counting, export)
        # has no scatter_ overload for a bool scalar
        keep = torch.zeros_like(presence, dtype=torch.bool).scatter(
            1, top, torch.ones_like(top, dtype=torch.bool))
        return keep if forced is None else keep | forced

    def ordered_selection(self, presence: Tensor, gt_labels: Optional[Sequence[Tensor]] = None
                          ) -> Optional[CategorySelection]:
        """The selection as node ids, best first, for what it drives (fusion, query
        selection, the decoder's attention to categories): None here, where the
        selection only masks the classification (:class:`CQDINOClassifier` gives one)."""
        return None

    def loss_presence(self, presence: Tensor, gt_labels: Sequence[Tensor]) -> Tensor:
        """Weighted presence loss of (B, K) logits against each image's annotated nodes."""
        target = self.presence_targets(gt_labels, len(gt_labels), presence.device)
        return self.loss_weight * self.presence_loss(presence, target)

    def presence_targets(self, gt_labels: Sequence[Tensor], batch: int, device) -> Tensor:
        """(B, K) float: 1 for the nodes annotated in each image."""
        target = torch.zeros(batch, self.num_classes, device=device)
        for i, labels in enumerate(gt_labels):
            target[i, labels.long().to(device)] = 1.0
        return target

    def logits(self, obj: Tensor, emb: Tensor) -> Tensor:
        """Object queries (B, N, C) (already projected) x embeddings (B, K, C) -> (B, N, K)."""
        return torch.einsum('bnc,bkc->bnk', obj, emb) / math.sqrt(self.embed_dims) + \
            self.logit_bias

    @staticmethod
    def presence_loss(presence: Tensor, target: Tensor, gamma: float = 2.0,
                      alpha: float = 0.25) -> Tensor:
        """Sigmoid focal loss of the presence logits, averaged over the positives."""
        p = presence.sigmoid()
        ce = F.binary_cross_entropy_with_logits(presence, target, reduction='none')
        p_t = p * target + (1 - p) * (1 - target)
        a_t = alpha * target + (1 - alpha) * (1 - target)
        return (a_t * (1 - p_t) ** gamma * ce).sum() / target.sum().clamp(min=1.0)
