"""The presence loss of CQ-DINO's category selection, tree-aware (maths in ``presence.py``)."""
from typing import Optional

import torch
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.structures import LabelTree
from .presence import (MASK_MODES, ancestor_negative_mask, asymmetric_loss,
                       strict_ancestor_matrix)


@MODELS.register_module()
class AsymmetricPresenceLoss(nn.Module):
    """Asymmetric loss of per-image category-presence logits, with ancestor masking.

    The defaults are those CQ-DINO's tree detector (``cqdino_tree_*`` configs,
    ``CQDINO._init_layers``) builds its presence loss with: ``gamma_neg=7,
    gamma_pos=0, clip=0.05``, summed, unnormalised, focusing weights without
    gradient. (4 / 1 / 0.05 are the defaults of their ``AsymmetricLoss`` class,
    which neither detector uses; the COCO detector sets all three to 0.)

    Args:
        label_tree: the tree, for the ancestor mask; None disables the mask.
        gamma_neg, gamma_pos, clip, eps: see ``bhcl.models.losses.presence``.
        mask_ancestors: do not count a ground-truth node's unannotated ancestors
            as negatives (the authors' tree-aware configs do).
        masked: ``'zero_logit'`` (as the authors: a constant, no gradient) or
            ``'drop'`` (left out of the sum).
        detach_focusing: no gradient through the focusing weights (the authors').
        loss_weight: multiplies the loss.
    """

    def __init__(self, label_tree=None, gamma_neg: float = 7.0, gamma_pos: float = 0.0,
                 clip: float = 0.05, eps: float = 1e-8, mask_ancestors: bool = True,
                 masked: str = 'zero_logit', detach_focusing: bool = True,
                 loss_weight: float = 1.0) -> None:
        super().__init__()
        if masked not in MASK_MODES:
            raise ValueError(f'masked must be one of {MASK_MODES}, got {masked!r}')
        if mask_ancestors and label_tree is None:
            raise ValueError('mask_ancestors=True needs label_tree= (the ancestors come '
                             'from the tree); give the tree or set mask_ancestors=False')
        self.gamma_neg, self.gamma_pos, self.clip, self.eps = gamma_neg, gamma_pos, clip, eps
        self.masked = masked
        self.detach_focusing = detach_focusing
        self.loss_weight = loss_weight
        self.mask_ancestors = mask_ancestors
        matrix = torch.zeros(0, 0, dtype=torch.bool)
        if mask_ancestors:
            matrix = strict_ancestor_matrix(torch.as_tensor(
                LabelTree.from_config(label_tree).ancestors))
        self.register_buffer('strict_ancestors', matrix, persistent=False)

    def mask(self, targets: Tensor) -> Optional[Tensor]:
        """(B, K) bool ancestor mask of ``targets`` (None without masking)."""
        if not self.mask_ancestors:
            return None
        if targets.shape[-1] != self.strict_ancestors.shape[0]:
            raise ValueError(f'targets have {targets.shape[-1]} categories but the label '
                             f'tree has {self.strict_ancestors.shape[0]} nodes')
        return ancestor_negative_mask(targets, self.strict_ancestors)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        """(B, K) presence logits and (B, K) {0, 1} annotated nodes -> scalar loss."""
        loss = asymmetric_loss(logits, targets, self.gamma_neg, self.gamma_pos, self.clip,
                               self.eps, mask=self.mask(targets), masked=self.masked,
                               detach_focusing=self.detach_focusing)
        return self.loss_weight * loss
