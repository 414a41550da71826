"""Detections of one image labelled along a label tree, with a score per tree level.

Boxes are ``(cx, cy, w, h, t)`` in pixels of the input image, le90 (``w >= h``,
``t`` in radians in ``[-pi/2, pi/2)``, clockwise on screen), polygons their four
corners ``x1 y1 .. x4 y4`` (``bhcl.structures.geometry.rbox_to_poly``).

Per-level scores: the query detectors score every tree node with its own sigmoid,
a leaf from its objects and an internal node X from the "Other X" objects
reallocated to it. The score of a prediction at level ``l`` of its path is the
highest score the prediction's query gives any node of the subtree under the
path's level-``l`` node: the belief that the object belongs to that branch
(``Vessel 0.9 > Warship 0.7 > Frigate 0.4``). It never increases down the path,
and the last one is the prediction's own score. Detectors that do not return
every node's score (``node_scores``) give ``nan`` above the predicted node.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..structures.geometry import rbox_to_poly, regularize_rboxes
from ..structures.label_tree import LabelTree


def subtree_matrix(tree: LabelTree) -> np.ndarray:
    """(K, K) bool, ``[a, k]`` True when node ``a`` is ``k`` or one of its ancestors."""
    sub = np.zeros((tree.num_classes, tree.num_classes), dtype=bool)
    for k in range(tree.num_classes):
        sub[tree.path_ids(k), k] = True
    return sub


def level_scores(tree: LabelTree, labels: np.ndarray, scores: np.ndarray,
                 node_scores: Optional[np.ndarray]) -> np.ndarray:
    """(N, L) score of each prediction at each level of its path (``nan`` below the
    predicted node's depth), see the module docstring.

    Args:
        labels: (N,) predicted nodes; scores: (N,) their scores.
        node_scores: (N, K) every node's score for each prediction's query, or None.
    """
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full((len(labels), tree.num_levels), np.nan)
    depth = np.asarray(tree.depth)[labels] if len(labels) else np.zeros(0, dtype=np.int64)
    if node_scores is not None and len(labels):
        sub = subtree_matrix(tree)
        # (N, K): the best node score under each node, per prediction
        branch = np.where(sub[None], np.asarray(node_scores, dtype=np.float64)[:, None], -np.inf)
        branch = branch.max(-1)
        anc = tree.ancestors[labels]                       # (N, L), -1 below the depth
        rows = np.arange(len(labels))[:, None]
        vals = branch[rows, np.maximum(anc, 0)]
        out = np.where(anc >= 0, vals, np.nan)
    out[np.arange(len(labels)), depth] = scores
    return out


@dataclass
class TreeDetections:
    """Detections of one image (see the module docstring for the conventions).

    Attributes:
        rboxes: (N, 5) le90 boxes, pixels. scores: (N,). labels: (N,) tree nodes.
        level_scores: (N, L) score per level of each path (``nan`` below its depth).
        tree: the label tree the labels index.
        img_path: the input's path (None for arrays). img_shape: (height, width).
    """
    rboxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    level_scores: np.ndarray
    tree: LabelTree
    img_path: Optional[str] = None
    img_shape: Optional[tuple] = None
    extra: Dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.rboxes = regularize_rboxes(self.rboxes)
        self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        self.level_scores = np.asarray(self.level_scores, dtype=np.float64).reshape(
            len(self.labels), self.tree.num_levels)
        if not len(self.rboxes) == len(self.scores) == len(self.labels):
            raise ValueError(f'{len(self.rboxes)} boxes, {len(self.scores)} scores and '
                             f'{len(self.labels)} labels: they must match')

    def __len__(self) -> int:
        return len(self.scores)

    @property
    def polygons(self) -> np.ndarray:
        """(N, 8) corners ``x1 y1 .. x4 y4``, pixels."""
        return rbox_to_poly(self.rboxes)

    @property
    def label_names(self) -> List[str]:
        return [self.tree.classes[k] for k in self.labels]

    @property
    def paths(self) -> List[List[str]]:
        """Node names from the top level down to each predicted node."""
        return [self.tree.path(int(k)) for k in self.labels]

    def path_scores(self, i: int) -> List[Optional[float]]:
        """Scores of prediction ``i`` along its path (one per node of ``paths[i]``)."""
        depth = self.tree.depth[int(self.labels[i])]
        return [None if np.isnan(v) else float(v) for v in self.level_scores[i, :depth + 1]]

    def select(self, keep) -> 'TreeDetections':
        """The detections at ``keep`` (indices or a boolean mask)."""
        return TreeDetections(self.rboxes[keep], self.scores[keep], self.labels[keep],
                              self.level_scores[keep], self.tree, self.img_path,
                              self.img_shape, {k: v[keep] for k, v in self.extra.items()})

    @classmethod
    def concat(cls, parts: Sequence['TreeDetections'], tree: LabelTree,
               **kwargs) -> 'TreeDetections':
        """One ``TreeDetections`` holding the rows of ``parts`` (same tree)."""
        parts = list(parts)
        if not parts:
            return cls(np.zeros((0, 5)), np.zeros(0), np.zeros(0, dtype=np.int64),
                       np.zeros((0, tree.num_levels)), tree, **kwargs)
        keys = set(parts[0].extra)
        return cls(np.concatenate([p.rboxes for p in parts]),
                   np.concatenate([p.scores for p in parts]),
                   np.concatenate([p.labels for p in parts]),
                   np.concatenate([p.level_scores for p in parts]), tree,
                   extra={k: np.concatenate([p.extra[k] for p in parts]) for k in keys},
                   **kwargs)

    def to_dict(self) -> dict:
        """JSON-ready: one entry per object, best score first."""
        polys = self.polygons
        objects = []
        for i in np.argsort(-self.scores, kind='stable'):
            objects.append(dict(
                label=self.tree.classes[self.labels[i]],
                label_id=int(self.labels[i]),
                tree_path=self.tree.path(int(self.labels[i])),
                level_scores=self.path_scores(i),
                score=float(self.scores[i]),
                rbox=[float(v) for v in self.rboxes[i]],
                polygon=[float(v) for v in polys[i]]))
        return dict(img_path=self.img_path,
                    img_shape=None if self.img_shape is None else list(self.img_shape),
                    box_format='rbox (cx, cy, w, h, t): le90, pixels, t in radians clockwise',
                    objects=objects)
