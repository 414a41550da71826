"""Framework-free maths of the (balanced) hierarchical contrastive loss.

Plain torch only: no mm* import (a test loads this file with mm* blocked).

Conventions
-----------
* ``features`` (N, D) are L2-normalised embeddings, one row per sample.
* ``labels`` (N, L) int64 give each sample's class at each of the L levels
  the loss uses, ``-1`` where the sample takes no part at that level (its
  tree node is shallower than the level, e.g. an "Other X" sample labelled
  at the internal node X). Class ids only need to be unique within a level.
* ``prototypes`` (M, D) are extra instances (one per class in the paper)
  with their own ``prototype_labels`` (M, L); ``-1`` hides a prototype at a
  level (not a class of that level, or not initialised yet).
* Prototypes are columns only: they are never anchors.

For a level l, an anchor i (``labels[i, l] >= 0``) with class c has
positives P_l(i) = every other instance (sample or prototype) of class c,
and the pair loss ``-log(exp(s_ip) / D_i)`` with ``s = f_i . f_a / tau`` and

* standard:  ``D_i = sum_{a != i} exp(s_ia)``
* balanced:  ``D_i = sum_{classes c'} 1/|I'_c'| sum_{a in I'_c', a != i} exp(s_ia)``

where the sums run over the instances taking part at level l and
``|I'_c'|`` counts all instances of class c' (``i`` included). A sample
without positives at a level is no anchor there but stays a negative of the
others. The loss is ``1/|I| sum_i sum_l lambda_l mean_{p in P_l(i)} pair(i, p)``
with ``I`` the samples that are anchors at one level at least.
"""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def default_level_weights(num_levels: int) -> Tensor:
    """(num_levels,) float64 weights ``exp(1/(L+1-l))`` for ``l = 1..L``,
    normalised to sum 1: the deepest level weighs most."""
    if num_levels < 1:
        raise ValueError(f'num_levels must be >= 1, got {num_levels}')
    w = torch.tensor([1.0 / (num_levels + 1 - l) for l in range(1, num_levels + 1)],
                     dtype=torch.float64).exp()
    return w / w.sum()


def sample_level_labels(ancestors: Tensor, labels: Tensor, levels: Sequence[int]) -> Tensor:
    """(N, len(levels)) level-l ancestor of each node label (``-1`` where the
    node is shallower). ``ancestors`` is the tree's (K, L_tree) table."""
    return ancestors[labels][:, list(levels)]


def prototype_level_labels(ancestors: Tensor,
                           levels: Sequence[int],
                           scope: str = 'node',
                           valid: Optional[Tensor] = None) -> Tensor:
    """(K, len(levels)) class of each node's prototype at each level.

    ``scope='node'``: prototype k is an instance of class k at k's own level
    only (the paper: one prototype ``M(c)`` per class). ``scope='subtree'``:
    prototype k is also an instance of its ancestor at every shallower level
    (what the published code does). Rows with ``valid`` False are hidden.
    """
    if scope not in ('node', 'subtree'):
        raise ValueError(f"scope must be 'node' or 'subtree', got {scope!r}")
    table = ancestors[:, list(levels)]
    if scope == 'node':
        own = torch.arange(ancestors.shape[0], device=ancestors.device)[:, None]
        table = torch.where(table == own, table, torch.full_like(table, -1))
    if valid is not None:
        table = torch.where(valid[:, None], table, torch.full_like(table, -1))
    return table


def _class_index(labels: Tensor, num_classes: int) -> Tensor:
    """Per-level labels -> one index space ``level * C + class``; ``-1`` ->
    a spare bucket ``L * C`` whose value is always masked out."""
    num_levels = labels.shape[1]
    offset = torch.arange(num_levels, device=labels.device) * num_classes
    spare = torch.full_like(labels, num_levels * num_classes)
    return torch.where(labels >= 0, labels + offset, spare)


def hierarchical_contrastive_terms(features: Tensor,
                                   labels: Tensor,
                                   temperature: float = 0.1,
                                   balance: bool = False,
                                   prototypes: Optional[Tensor] = None,
                                   prototype_labels: Optional[Tensor] = None,
                                   num_classes: Optional[int] = None,
                                   drop_singletons: bool = False
                                   ) -> Tuple[Tensor, Tensor]:
    """Per-anchor, per-level loss.

    Args:
        features: (N, D) unit embeddings.
        labels: (N, L) class per level, ``-1`` = not at that level.
        temperature: tau > 0.
        balance: class-averaged denominator (BHCL) instead of the plain sum.
        prototypes: (M, D) extra instances; ``prototype_labels`` (M, L).
        num_classes: bound on class ids (computed when omitted; a host sync).
        drop_singletons: in the plain (unbalanced) form, leave a sample out of
            every denominator at the levels where no other sample shares its
            class (the published code); by default it stays a negative there.

    Returns:
        ``loss`` (N, L), ``mean_p pair(i, p)`` for anchors and 0 elsewhere, and
        ``anchor`` (N, L) bool. Computed in float32 or wider, autocast off.
    """
    if temperature <= 0:
        raise ValueError(f'temperature must be > 0, got {temperature}')
    if (prototypes is None) != (prototype_labels is None):
        raise ValueError('give prototypes and prototype_labels together')
    dtype = torch.promote_types(features.dtype, torch.float32)
    with torch.autocast(device_type=features.device.type, enabled=False):
        feats, labels = features.to(dtype), labels.long()
        if prototypes is not None:
            prototypes, prototype_labels = prototypes.to(dtype), prototype_labels.long()
            # hidden prototypes play no part at any level
            shown = (prototype_labels >= 0).any(1)
            prototypes, prototype_labels = prototypes[shown], prototype_labels[shown]
        if num_classes is None:
            num_classes = _max_label(labels, prototype_labels) + 1
        # neither do samples shallower than every level used
        active = (labels >= 0).any(1)
        loss = feats.new_zeros(labels.shape)
        anchor = torch.zeros_like(labels, dtype=torch.bool)
        if active.any():
            sub_loss, sub_anchor = _terms(feats[active], labels[active], temperature, balance,
                                          prototypes, prototype_labels, num_classes,
                                          drop_singletons and not balance)
            loss = loss.index_put((active.nonzero()[:, 0], ), sub_loss)
            anchor[active] = sub_anchor
    return loss, anchor


def _max_label(labels: Tensor, prototype_labels: Optional[Tensor]) -> int:
    top = int(labels.max()) if labels.numel() else 0
    if prototype_labels is not None and prototype_labels.numel():
        top = max(top, int(prototype_labels.max()))
    return top


def _terms(feats, labels, temperature, balance, prototypes, prototype_labels, num_classes,
           drop_singletons=False):
    """:func:`hierarchical_contrastive_terms` on samples active at some level."""
    n = feats.shape[0]
    cols, col_labels = feats, labels
    if prototypes is not None:
        cols = torch.cat([feats, prototypes])
        col_labels = torch.cat([labels, prototype_labels])
    idx = _class_index(col_labels, num_classes)                   # (M, L)
    onehot = torch.zeros(cols.shape[0], labels.shape[1] * num_classes + 1,
                         dtype=feats.dtype, device=feats.device).scatter_(1, idx, 1.0)
    count = onehot.sum(0)                                         # instances per class
    row_idx = idx[:n]
    npos = count[row_idx] - 1
    anchor = (labels >= 0) & (npos > 0)

    # positives through per-class feature sums: no (N, M) mask per level
    scaled = feats / temperature
    class_sum = onehot.T @ cols                                   # (L * C + 1, D)
    pos_sum = (torch.einsum('nd,nld->nl', scaled, class_sum[row_idx])
               - (scaled * feats).sum(1, keepdim=True))

    col_weight = (col_labels >= 0).to(feats.dtype)
    if drop_singletons:
        alone = onehot[:n].sum(0)[row_idx] <= 1                   # (N, L) no other sample
        col_weight = torch.cat([col_weight[:n] * ~alone, col_weight[n:]])
    if balance:
        col_weight = col_weight / count[idx].clamp_min(1)
    # one (N, M) similarity serves every level; modified in place (mm's
    # backward does not need its output), so the forward keeps one copy
    logits = scaled @ cols.T
    logits.fill_diagonal_(float('-inf'))
    # a per-row shift cancels in the log-ratio; it keeps exp() in range
    shift = logits.detach().max(1, keepdim=True).values
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    denom = logits.sub_(shift).exp_() @ col_weight                # (N, L), all levels at once
    denom = torch.where(anchor, denom, torch.ones_like(denom))
    loss = denom.log() + shift - pos_sum / npos.clamp_min(1)
    return torch.where(anchor, loss, torch.zeros_like(loss)), anchor


def hierarchical_contrastive_loss(features: Tensor,
                                  labels: Tensor,
                                  level_weights: Tensor,
                                  temperature: float = 0.1,
                                  balance: bool = False,
                                  prototypes: Optional[Tensor] = None,
                                  prototype_labels: Optional[Tensor] = None,
                                  num_classes: Optional[int] = None,
                                  drop_singletons: bool = False) -> Tensor:
    """(L,) weighted loss of each level; their sum is L_HCL (or L_BHCL).

    ``level_weights`` (L,) are the lambda_l. Each level's share is
    ``lambda_l / |I| * sum_i mean_p pair(i, p)`` where ``I`` are the samples
    that are anchors at one level at least. A batch without any positive
    pair gives zeros that are still connected to ``features`` (and
    ``prototypes``), so every parameter receives a (zero) gradient.
    """
    terms, anchor = hierarchical_contrastive_terms(
        features, labels, temperature, balance, prototypes, prototype_labels, num_classes,
        drop_singletons)
    weights = level_weights.to(device=terms.device, dtype=terms.dtype)
    num_anchors = anchor.any(1).sum().clamp_min(1).to(terms.dtype)
    per_level = terms.sum(0) * weights / num_anchors
    # terms is empty when N == 0; keep the graph reaching every input
    connect = features.sum() * 0
    if prototypes is not None:
        connect = connect + prototypes.sum() * 0
    return per_level + connect.to(per_level.dtype)


def ema_rates(ancestors: Tensor, epsilon: float) -> Tensor:
    """(K,) weight of the batch mean in each node's EMA update:
    ``epsilon ** (L - depth)`` with L the number of tree levels and depth
    0-based, so the deepest level moves fastest (``epsilon``)."""
    num_levels = ancestors.shape[1]
    depth = (ancestors >= 0).sum(1) - 1
    return torch.tensor(epsilon, dtype=torch.float64) ** (num_levels - depth).double()


def ema_prototype_update(prototypes: Tensor,
                         initialized: Tensor,
                         features: Tensor,
                         labels: Tensor,
                         ancestors: Tensor,
                         rates: Tensor) -> Tuple[Tensor, Tensor]:
    """One EMA step of a per-node prototype bank (returns new tensors).

    Args:
        prototypes: (K, D) unit rows (zero while a node was never seen).
        initialized: (K,) bool, node seen at least once.
        features: (N, D) unit embeddings (detached); labels (N,) node ids.
        ancestors: (K, L) tree table; rates (K,) from :func:`ema_rates`.

    For every node c with samples in its subtree (c is their ancestor at
    c's level), ``M_c <- normalise((1 - r_c) M_c + r_c mean_c)``; the other
    rows are returned unchanged. A never-seen row starts at 0, so its first
    update is ``normalise(mean_c)``.
    """
    num_nodes = prototypes.shape[0]
    anc = ancestors[labels]                                        # (N, L)
    idx = torch.where(anc >= 0, anc, torch.full_like(anc, num_nodes))
    # dense one-hot + matmul: deterministic, unlike index_add_ on GPU
    onehot = torch.zeros(labels.shape[0], num_nodes + 1, dtype=features.dtype,
                         device=features.device).scatter_(1, idx, 1.0)[:, :num_nodes]
    count = onehot.sum(0)
    mean = (onehot.T @ features) / count.clamp_min(1)[:, None]
    rate = rates.to(prototypes.dtype)[:, None]
    moved = F.normalize((1 - rate) * prototypes + rate * mean.to(prototypes.dtype), dim=1)
    present = count > 0
    return torch.where(present[:, None], moved, prototypes), initialized | present
