"""Hierarchical supervised contrastive loss (HCL) and its balanced form (BHCL).

A thin module: projection head, label-tree tables, warm-up switch and the
gather across ranks. The maths is in :mod:`bhcl.models.losses.functional`.
"""
import copy
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmrotate.registry import MODELS
from torch import Tensor, nn

from bhcl.structures import LabelTree
from bhcl.utils.dist import all_gather_cat, get_world_size, scale_grad
from .functional import (default_level_weights, hierarchical_contrastive_loss,
                         prototype_level_labels, sample_level_labels)
from .prototype_bank import PrototypeBank


@MODELS.register_module()
class HierarchicalContrastiveLoss(nn.Module):
    """Multi-level supervised contrastive loss over a label tree.

    HCL is the default; BHCL (the paper's full method) is
    ``balance=True, prototype_bank=dict(type='EMAPrototypeBank'), warmup_epochs=5``.

    At level l the positives of sample i are the other samples (and
    prototypes) with i's level-l ancestor. Samples labelled at a node
    shallower than l ("Other X" reallocated to X, or shallow leaves) are
    neither anchors, positives nor negatives at level l; they take part at
    every level down to their own node's. See ``docs/method.md``.

    Args:
        label_tree: ``dict(paths=...)`` / ``dict(parents=...)`` or a ``LabelTree``.
        in_channels, hidden_channels, out_channels: projection MLP
            ``Linear -> ReLU -> Linear``; embeddings are L2-normalised.
        temperature: tau.
        start_level: first level used (0-based; 1 excludes the top level).
        level_weights: lambda per used level; default ``exp(1/(L'+1-l))``
            normalised over the L' used levels.
        balance: class-averaged denominator (BHCL).
        prototype_bank: config of an ``EMAPrototypeBank`` /
            ``LearnablePrototypeBank`` / ``ClassifierPrototypeBank`` (built
            with this tree and ``out_channels``), a bank instance, or None.
        prototype_scope: ``'node'`` (paper formula: class c's own prototype)
            or ``'subtree'`` (published code: every descendant's prototype
            is also an instance of c).
        warmup_epochs: epochs ``0 .. warmup_epochs - 1`` use the standard
            form without prototypes (the bank still updates). Needs
            :meth:`set_epoch` (mmdet's ``SetEpochInfoHook``).
        singleton_negatives: in the plain form (HCL, and BHCL's warm-up), a
            sample whose class has no other sample at a level stays a negative
            there (the paper's formula); False leaves it out (the published code).
        gather: compute on the batch gathered from all ranks.
        loss_weight: multiplies every returned loss.
    """

    def __init__(self,
                 label_tree: Union[dict, LabelTree],
                 in_channels: int = 256,
                 hidden_channels: int = 512,
                 out_channels: int = 128,
                 temperature: float = 0.1,
                 start_level: int = 1,
                 level_weights: Optional[Sequence[float]] = None,
                 balance: bool = False,
                 prototype_bank: Optional[Union[dict, PrototypeBank]] = None,
                 prototype_scope: str = 'node',
                 warmup_epochs: int = 0,
                 singleton_negatives: bool = True,
                 gather: bool = True,
                 loss_weight: float = 1.0):
        super().__init__()
        self.label_tree = LabelTree.from_config(label_tree)
        num_levels = self.label_tree.num_levels
        if not 0 <= start_level < num_levels:
            raise ValueError(f'start_level must be in [0, {num_levels - 1}] for a '
                             f'{num_levels}-level tree, got {start_level}')
        if temperature <= 0:
            raise ValueError(f'temperature must be > 0, got {temperature}')
        if prototype_scope not in ('node', 'subtree'):
            raise ValueError("prototype_scope must be 'node' or 'subtree', "
                             f'got {prototype_scope!r}')
        if warmup_epochs < 0:
            raise ValueError(f'warmup_epochs must be >= 0, got {warmup_epochs}')
        self.levels: List[int] = list(range(start_level, num_levels))
        if level_weights is None:
            weights = default_level_weights(len(self.levels))
        elif len(level_weights) != len(self.levels):
            raise ValueError(f'level_weights needs {len(self.levels)} values (levels '
                             f'{self.levels}), got {len(level_weights)}')
        else:
            weights = torch.as_tensor(level_weights, dtype=torch.float64)
        self.register_buffer('level_weights', weights.float(), persistent=False)
        self.register_buffer('ancestors', torch.as_tensor(self.label_tree.ancestors),
                             persistent=False)
        self.in_channels = in_channels
        self.projector = nn.Sequential(
            nn.Linear(in_channels, hidden_channels), nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, out_channels))
        self.temperature = temperature
        self.balance = balance
        self.prototype_scope = prototype_scope
        self.prototype_bank = self._build_bank(prototype_bank, out_channels)
        self.warmup_epochs = warmup_epochs
        self.singleton_negatives = singleton_negatives
        self.gather = gather
        self.loss_weight = loss_weight
        self.epoch: Optional[int] = None

    def _build_bank(self, cfg, out_channels: int) -> Optional[PrototypeBank]:
        if cfg is None or isinstance(cfg, nn.Module):
            return cfg
        cfg = dict(cfg)
        # the banks live in mmrotate's registry whatever the caller's default scope
        cfg.setdefault('_scope_', 'mmrotate')
        return MODELS.build(cfg, default_args=dict(label_tree=self.label_tree,
                                                   feat_channels=out_channels))

    # ---------------------------------------------------------------- epoch
    def set_epoch(self, epoch: int) -> None:
        """Record the 0-based training epoch (``runner.epoch``)."""
        self.epoch = int(epoch)

    @property
    def in_warmup(self) -> bool:
        """True while the standard form without prototypes is used."""
        if self.warmup_epochs == 0 or not (self.balance or self.prototype_bank is not None):
            return False
        if self.epoch is None:
            raise RuntimeError(
                f'{type(self).__name__} has warmup_epochs={self.warmup_epochs} but no epoch: '
                "add dict(type='mmdet.SetEpochInfoHook') to custom_hooks (the detector's "
                'set_epoch must reach this loss) or call set_epoch() yourself')
        return self.epoch < self.warmup_epochs

    # -------------------------------------------------------------- forward
    def embed(self, x: Tensor) -> Tensor:
        """(n, in_channels) -> (n, out_channels) unit embeddings, float32 or wider."""
        out = self.projector(x)
        return F.normalize(out.to(torch.promote_types(out.dtype, torch.float32)), dim=1)

    def forward(self,
                features: Tensor,
                labels: Tensor,
                classifier_weight: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """Loss of the matched queries of this rank.

        Args:
            features: (P, in_channels) classification-query features.
            labels: (P,) tree-node index of each query's ground truth.
            classifier_weight: (K, in_channels), only for ``ClassifierPrototypeBank``.

        Returns:
            ``{'loss_hcl_lv{l}': scalar}`` for every used level l (already
            multiplied by lambda_l and ``loss_weight``; their sum is the loss).
            In training mode the prototype bank is updated afterwards.
        """
        self._check_inputs(features, labels)
        labels = labels.long()
        emb, all_labels = self.embed(features), labels
        if self.gather:
            emb, all_labels = all_gather_cat(emb, labels)
        warm = self.in_warmup
        protos = proto_labels = None
        if self.prototype_bank is not None:
            protos, valid = self.prototype_bank(self.embed, classifier_weight)
            if self.gather:  # shared by all ranks: keep DDP's 1/W convention
                protos = scale_grad(protos, 1.0 / get_world_size())
            if warm:  # still in the graph so that DDP sees every parameter used
                valid = torch.zeros_like(valid)
            proto_labels = prototype_level_labels(self.ancestors, self.levels,
                                                  self.prototype_scope, valid)
        losses = hierarchical_contrastive_loss(
            emb, sample_level_labels(self.ancestors, all_labels, self.levels),
            self.level_weights, self.temperature, balance=self.balance and not warm,
            prototypes=protos, prototype_labels=proto_labels,
            num_classes=self.label_tree.num_classes,
            drop_singletons=not self.singleton_negatives)
        if self.training and self.prototype_bank is not None:
            self.prototype_bank.update(emb.detach(), all_labels)
        return {f'loss_hcl_lv{level}': losses[j] * self.loss_weight
                for j, level in enumerate(self.levels)}

    def _check_inputs(self, features: Tensor, labels: Tensor) -> None:
        if features.dim() != 2 or features.shape[1] != self.in_channels:
            raise ValueError(f'features must be (P, {self.in_channels}), '
                             f'got {tuple(features.shape)}')
        if labels.shape != features.shape[:1]:
            raise ValueError(f'labels must be ({features.shape[0]},), got {tuple(labels.shape)}')
        if labels.is_floating_point():
            raise ValueError(f'labels must be integer node indices, got {labels.dtype}')
        num = self.label_tree.num_classes
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num):
            raise ValueError(f'labels must be tree-node indices in [0, {num}); drop unmatched '
                             f'(background) queries first, got range '
                             f'[{int(labels.min())}, {int(labels.max())}]')

    def extra_repr(self) -> str:
        return (f'levels={self.levels}, temperature={self.temperature}, balance={self.balance}, '
                f'prototype_scope={self.prototype_scope!r}, warmup_epochs={self.warmup_epochs}, '
                f'loss_weight={self.loss_weight}')


def build_contrastive_losses(cfg: dict, num: int, label_tree: dict,
                             in_channels: int) -> nn.ModuleList:
    """``num`` contrastive losses (one per decoder stage / layer) built from ``cfg``
    without drawing from the global random stream: the rest of a model is
    initialised alike with and without the loss, so that a seed gives the arms of
    an ablation the same initial weights (common random numbers)."""
    with torch.random.fork_rng(devices=[]):
        return nn.ModuleList(
            MODELS.build(copy.deepcopy(cfg), default_args=dict(label_tree=label_tree,
                                                               in_channels=in_channels))
            for _ in range(num))
