"""Class-prototype banks for the balanced hierarchical contrastive loss.

One prototype per tree node, in the loss's embedding space. A bank is
injected into :class:`HierarchicalContrastiveLoss` (which fills in
``label_tree`` and ``feat_channels``) and answers two calls:

* ``bank(project, classifier_weight)`` -> ``(prototypes (K, D), valid (K,))``
  with unit rows; ``valid`` False hides a row from the loss.
* ``bank.update(features, labels)``: the only place where state changes,
  under ``no_grad``, with the gathered batch, so every rank does the same.
"""
from typing import Callable, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.structures import LabelTree
from bhcl.utils.dist import broadcast_
from .functional import ema_prototype_update, ema_rates


class PrototypeBank(nn.Module):
    """Base class: holds the tree size and the embedding width."""

    def __init__(self, label_tree: Union[dict, LabelTree], feat_channels: int):
        super().__init__()
        self.label_tree = LabelTree.from_config(label_tree)
        self.num_classes = self.label_tree.num_classes
        self.feat_channels = feat_channels

    def forward(self,
                project: Callable[[Tensor], Tensor],
                classifier_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def update(self, features: Tensor, labels: Tensor) -> None:
        """Banks trained by the optimizer keep no other state."""

    def _all_valid(self, device: torch.device) -> Tensor:
        return torch.ones(self.num_classes, dtype=torch.bool, device=device)


@MODELS.register_module()
class EMAPrototypeBank(PrototypeBank):
    """Prototypes as an exponential moving average of class means (the paper).

    Node c at depth l moves by ``M_c <- (1 - eps^(L-l)) M_c + eps^(L-l) mean_c``
    and is renormalised (L = number of tree levels, depth 0-based), so leaves
    follow the batch fastest. Rows start at zero and stay hidden (``valid``
    False) until their class has been seen once; ``hide_unseen=False`` uses
    them as they are, zero rows included (the published code). State lives in the buffers
    ``prototypes`` and ``initialized`` (saved in checkpoints).

    Args:
        label_tree: ``dict(paths=...)`` or a ``LabelTree``.
        feat_channels: embedding width D.
        epsilon: eps above (paper: 0.1).
        hide_unseen: hide rows whose class has not been seen yet.
    """

    def __init__(self, label_tree: Union[dict, LabelTree], feat_channels: int,
                 epsilon: float = 0.1, hide_unseen: bool = True):
        super().__init__(label_tree, feat_channels)
        if not 0 < epsilon < 1:
            raise ValueError(f'epsilon must be in (0, 1), got {epsilon}')
        self.epsilon = epsilon
        self.hide_unseen = hide_unseen
        ancestors = torch.as_tensor(self.label_tree.ancestors)
        self.register_buffer('prototypes', torch.zeros(self.num_classes, feat_channels))
        self.register_buffer('initialized', torch.zeros(self.num_classes, dtype=torch.bool))
        self.register_buffer('ancestors', ancestors, persistent=False)
        self.register_buffer('rates', ema_rates(ancestors, epsilon).float(), persistent=False)

    def forward(self,
                project: Callable[[Tensor], Tensor],
                classifier_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        # a copy: a later update() must not alter what a graph has saved
        valid = self.initialized.clone() if self.hide_unseen else self._all_valid(
            self.prototypes.device)
        return self.prototypes.detach().clone(), valid

    @torch.no_grad()
    def update(self, features: Tensor, labels: Tensor) -> None:
        """EMA step with (N, D) unit embeddings and (N,) node labels."""
        if features.shape[0] == 0:
            return
        new, seen = ema_prototype_update(self.prototypes, self.initialized,
                                         features.detach().to(self.prototypes.dtype), labels,
                                         self.ancestors, self.rates)
        self.prototypes.copy_(new)
        self.initialized.copy_(seen)
        # inputs are identical on every rank; this guards against hardware
        # differences in floating point so the banks never drift apart
        broadcast_(self.prototypes)
        broadcast_(self.initialized)

    def extra_repr(self) -> str:
        return (f'num_classes={self.num_classes}, feat_channels={self.feat_channels}, '
                f'epsilon={self.epsilon}')


@MODELS.register_module()
class LearnablePrototypeBank(PrototypeBank):
    """Prototypes as a free (K, D) parameter trained through the loss.

    Rows are normalised on use; DDP keeps them identical on every rank.
    """

    def __init__(self, label_tree: Union[dict, LabelTree], feat_channels: int):
        super().__init__(label_tree, feat_channels)
        self.weight = nn.Parameter(F.normalize(torch.randn(self.num_classes, feat_channels), dim=1))

    def forward(self,
                project: Callable[[Tensor], Tensor],
                classifier_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        return F.normalize(self.weight, dim=1), self._all_valid(self.weight.device)


@MODELS.register_module()
class ClassifierPrototypeBank(PrototypeBank):
    """Prototypes from the classification layer: its (K, C_in) weight rows go
    through the loss's projection and normalisation. Gradients reach both the
    classifier and the projection. The caller passes the weight to the loss
    (``classifier_weight=``) at every call; the bank holds no state.
    """

    def forward(self,
                project: Callable[[Tensor], Tensor],
                classifier_weight: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        if classifier_weight is None:
            raise ValueError('ClassifierPrototypeBank needs classifier_weight= in the loss call')
        if classifier_weight.dim() != 2 or classifier_weight.shape[0] != self.num_classes:
            raise ValueError(f'classifier_weight must be ({self.num_classes}, C_in), one row per '
                             f'tree node; got {tuple(classifier_weight.shape)}')
        return project(classifier_weight), self._all_valid(classifier_weight.device)
