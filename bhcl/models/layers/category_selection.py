"""CQ-DINO's image-guided category selection and what it drives.

From per-image presence logits (B, K) over all tree nodes the top ``topk``
categories are kept, in descending score order (``LearnableCategoryQueryTree.
generate`` in the authors' code, K = 100 on V3Det). The selected category
features (the "text" tokens of their Grounding-DINO-style transformer) are
fused with the image in the encoder, score the encoder proposals (query
selection: the ``num_queries`` proposals with the highest best-category
logit) and are attended to by every decoder layer.

``keep_gt``: at training the authors keep exactly the top ``topk``; an object
whose class falls outside gets no positive category (its classification target
is all-negative, its box is still matched and regressed). ``keep_gt=True`` is
bhcl's former rule: the annotated nodes are always selected (replacing the
lowest-scored of the top ``topk``; all are kept when there are more than
``topk``), so the selection may be padded (``valid``).
"""
from typing import NamedTuple, Optional, Sequence

import torch
from mmrotate.registry import MODELS
from torch import Tensor, nn


class CategorySelection(NamedTuple):
    """``indices`` (B, S) long node ids, best first; ``valid`` (B, S) bool
    (False on padding, only with ``keep_gt``)."""
    indices: Tensor
    valid: Tensor


def select_categories(presence: Tensor, topk: int,
                      gt_nodes: Optional[Sequence[Tensor]] = None) -> CategorySelection:
    """Top ``topk`` nodes of (B, K) ``presence`` per image; with ``gt_nodes`` (one
    tensor of node ids per image) those nodes are always selected (see module doc)."""
    b, k = presence.shape
    if not 0 < topk <= k:
        raise ValueError(f'topk must be in [1, {k}] (the number of categories), got {topk}')
    score = presence.detach()
    if gt_nodes is None:
        indices = score.topk(topk, dim=1).indices
        return CategorySelection(indices, torch.ones_like(indices, dtype=torch.bool))
    if len(gt_nodes) != b:
        raise ValueError(f'gt_nodes has {len(gt_nodes)} images, presence has {b}')
    forced = torch.zeros(b, k, dtype=torch.bool, device=presence.device)
    for i, nodes in enumerate(gt_nodes):
        forced[i, nodes.long().to(presence.device)] = True
    size = torch.clamp(forced.sum(1), min=topk)
    score = score.masked_fill(forced, float('inf'))
    indices = score.topk(int(size.max()), dim=1).indices
    valid = torch.arange(indices.shape[1], device=presence.device)[None] < size[:, None]
    return CategorySelection(indices, valid)


def selection_targets(selection: CategorySelection, gt_nodes: Sequence[Tensor]) -> list:
    """Per image, (num_gt, S) float one-hot of each object's node among the
    selected categories (all zeros when it is not selected), as the authors'
    ``positive_maps``."""
    out = []
    for i, nodes in enumerate(gt_nodes):
        hit = (nodes.long().to(selection.indices.device)[:, None]
               == selection.indices[i][None]) & selection.valid[i][None]
        out.append(hit.to(torch.float32))
    return out


def gather_categories(features: Tensor, selection: CategorySelection) -> Tensor:
    """(B, K, C) per-image category features -> (B, S, C) in selection order."""
    idx = selection.indices[..., None].expand(-1, -1, features.shape[-1])
    return features.gather(1, idx)


def scatter_categories(features: Tensor, selected: Tensor,
                       selection: CategorySelection) -> Tensor:
    """(B, K, C) per-image category features with the (B, S, C) ``selected`` ones put
    back in their nodes' rows (out of place)."""
    idx = selection.indices[..., None].expand(-1, -1, features.shape[-1])
    return features.scatter(1, idx, selected)


def selection_mask(selection: CategorySelection, num_classes: int) -> Tensor:
    """(B, K) bool: the valid selected nodes of each image."""
    mask = torch.zeros(selection.indices.shape[0], num_classes, dtype=torch.bool,
                       device=selection.indices.device)
    return mask.scatter(1, selection.indices, selection.valid)


def selected_logits(class_logits: Tensor, selection: CategorySelection) -> Tensor:
    """(B, N, K) proposal logits over every node -> (B, N, S) over the selected ones."""
    idx = selection.indices[:, None, :].expand(-1, class_logits.shape[1], -1)
    return class_logits.gather(2, idx)


def best_selected_logit(class_logits: Tensor, valid: Tensor) -> Tensor:
    """(B, N, S) proposal-category logits -> (B, N) each proposal's best logit over
    the valid selected categories (``-inf`` when there is none)."""
    return class_logits.masked_fill(~valid[:, None, :], float('-inf')).max(-1).values


def select_queries(class_logits: Tensor, valid: Tensor, num_queries: int) -> Tensor:
    """(B, N, S) proposal-category logits -> (B, num_queries) indices of the
    proposals whose best valid selected category scores highest (the encoder's
    query selection, driven by the selected categories)."""
    best = best_selected_logit(class_logits, valid)
    return best.topk(min(num_queries, best.shape[1]), dim=1).indices


@MODELS.register_module()
class CategorySelector(nn.Module):
    """Top-K category selection from presence logits (no parameters).

    Args:
        topk: categories kept per image (the authors use 100 of V3Det's 13,204).
        keep_gt: at training, force the annotated nodes into the selection
            (bhcl's former rule); False (default) is the authors'.
    """

    def __init__(self, topk: int = 100, keep_gt: bool = False) -> None:
        super().__init__()
        self.topk = topk
        self.keep_gt = keep_gt

    def forward(self, presence: Tensor,
                gt_nodes: Optional[Sequence[Tensor]] = None) -> CategorySelection:
        """(B, K) presence logits (and, at training, each image's node ids) -> selection."""
        force = self.training and self.keep_gt and gt_nodes is not None
        return select_categories(presence, min(self.topk, presence.shape[1]),
                                 gt_nodes if force else None)
