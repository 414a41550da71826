"""Category-presence loss maths (CQ-DINO): the asymmetric loss and the ancestor mask.

Plain torch, no mm* import. For presence logits ``x`` (B, K) and the image's
annotated nodes ``y`` (B, K) in {0, 1}, with ``p = sigmoid(x)`` and the shifted
negative probability ``p_m = min(1, 1 - p + clip)`` (asymmetric clipping),

    L = - sum_{b,k} [ y (1 - p)^gamma_pos log p  +  (1 - y) (1 - p_m)^gamma_neg log p_m ]

(Ridnik et al., "Asymmetric Loss for Multi-Label Classification"). CQ-DINO
clamps ``x`` to [-88, 88], clamps both probabilities to [eps, 1] and, by
default, treats the focusing weights ``(1 - p)^gamma`` as constants (no
gradient through them).

On a label tree an image annotated with node k says nothing against k's
ancestors (the authors' V3Det labels sit at any depth): an ancestor of an
annotated node that is not annotated itself is not a negative. CQ-DINO's tree
detector multiplies both the logits and the targets by that mask, so a masked
entry becomes a negative at logit 0: it adds the constant ``-(1 - p_m)^gamma_neg
log p_m`` at ``p = 1/2`` and no gradient (``masked='zero_logit'``);
``masked='drop'`` leaves it out of the sum, same gradient.
"""
from typing import Optional

import torch
from torch import Tensor

MASK_MODES = ('zero_logit', 'drop')


def strict_ancestor_matrix(ancestors: Tensor) -> Tensor:
    """(K, K) bool, ``[k, a]`` True when ``a`` is a strict ancestor of ``k``.

    ``ancestors`` is a LabelTree's (K, L) ancestor table: row k holds k's
    ancestor at each level, k itself at its own depth, -1 below it.
    """
    ancestors = torch.as_tensor(ancestors, dtype=torch.long)
    k = ancestors.shape[0]
    rows = torch.arange(k)[:, None].expand_as(ancestors)
    valid = (ancestors >= 0) & (ancestors != rows)
    matrix = torch.zeros(k, k, dtype=torch.bool)
    matrix[rows[valid], ancestors[valid]] = True
    return matrix


def ancestor_negative_mask(targets: Tensor, strict_ancestors: Tensor) -> Tensor:
    """(B, K) bool: False where a node is an ancestor of an annotated node of the
    image without being annotated itself (not a negative), True elsewhere.

    ``targets`` (B, K) in {0, 1}; ``strict_ancestors`` from :func:`strict_ancestor_matrix`.
    """
    positive = targets > 0
    covered = (positive.to(torch.float32) @ strict_ancestors.to(targets.device,
                                                                 torch.float32)) > 0
    return ~(covered & ~positive)


def asymmetric_loss(logits: Tensor, targets: Tensor, gamma_neg: float = 7.0,
                    gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8,
                    mask: Optional[Tensor] = None, masked: str = 'zero_logit',
                    detach_focusing: bool = True) -> Tensor:
    """Summed asymmetric loss of (B, K) ``logits`` against (B, K) ``targets``.

    ``mask`` (B, K) bool, False where an entry is not a negative nor a positive
    (see :func:`ancestor_negative_mask`); ``masked`` says what such an entry
    becomes (module doc). Returns a scalar in the logits' dtype.
    """
    if masked not in MASK_MODES:
        raise ValueError(f'masked must be one of {MASK_MODES}, got {masked!r}')
    if logits.shape != targets.shape:
        raise ValueError(f'logits {tuple(logits.shape)} and targets {tuple(targets.shape)} '
                         'must have the same shape')
    y = targets.to(logits.dtype).clamp(0, 1)
    x = logits
    if mask is not None:
        keep = mask.to(logits.dtype)
        x, y = x * keep, y * keep
    x = x.clamp(-88.0, 88.0)
    p = torch.sigmoid(x)
    p_neg = 1 - p
    if clip is not None and clip > 0:
        p_neg = (p_neg + clip).clamp(max=1)
    p_pos, p_neg = p.clamp(eps, 1.0), p_neg.clamp(eps, 1.0)
    loss = y * torch.log(p_pos) + (1 - y) * torch.log(p_neg)
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach_focusing):
            p_t = (p_pos * y + p_neg * (1 - y)).clamp(eps, 1.0)
            weight = torch.pow(1 - p_t, gamma_pos * y + gamma_neg * (1 - y))
        loss = loss * weight
    if mask is not None and masked == 'drop':
        loss = loss * mask.to(loss.dtype)
    return -loss.sum()
