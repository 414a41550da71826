"""The label tree: the single source of truth for class order and hierarchy.

Plain Python + numpy (no mm* imports): the dataset, model, loss and metric all
derive class indices, depths, ancestors, leaves and the "Other X" reallocation
from one ``LabelTree``.

Conventions
-----------
* Node index = position in ``classes`` (the model's class index).
* Depth/level 0 is the top of the tree. A tree may have several top-level
  nodes (a forest, e.g. FAIR1M: Ship, Vehicle, Airplane, Court, Road).
* ``ancestors[k, l]`` is the index of node ``k``'s ancestor at level ``l``
  (``k`` itself at ``l == depth[k]``) and ``-1`` for ``l > depth[k]``.
"""
from __future__ import annotations

import difflib
import json
import re
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

# "Other X" -> X (ShipRSImageNet) and "other-x" -> X (FAIR1M). A rule is a
# regular expression whose first group names the target node; the target is
# matched case-insensitively with spaces/underscores/hyphens treated alike.
DEFAULT_OTHER_PATTERNS: Tuple[str, ...] = (r'^Other[ _](.+)$', r'^other-(.+)$')


class LabelTreeError(ValueError):
    """The tree definition is invalid (duplicate, unknown parent, cycle)."""


class UnknownClassError(KeyError):
    """A class name in an annotation is not a node of the tree."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ''


def _norm(name: str) -> str:
    return re.sub(r'[\s_\-]+', ' ', name.strip()).lower()


class LabelTree:
    """A validated class hierarchy.

    Args:
        classes: node names in class-index order.
        parents: parent name of each node (``None`` for top-level nodes),
            aligned with ``classes``.
        other_patterns: regexes turning an "Other X" name into ``X``.
        aliases: extra ``{annotation name: node name}`` mappings.
        ignore: annotation names that are known but not part of the tree
            (e.g. ShipRSImageNet's ``Dock``); ``resolve`` returns ``None``.
    """

    def __init__(self,
                 classes: Sequence[str],
                 parents: Sequence[Optional[str]],
                 other_patterns: Iterable[str] = DEFAULT_OTHER_PATTERNS,
                 aliases: Optional[Mapping[str, str]] = None,
                 ignore: Iterable[str] = ()):
        classes = [str(c) for c in classes]
        if not classes:
            raise LabelTreeError('label tree is empty: give at least one node')
        if len(parents) != len(classes):
            raise LabelTreeError(f'{len(classes)} classes but {len(parents)} parents')
        index: Dict[str, int] = {}
        for i, name in enumerate(classes):
            if not name.strip():
                raise LabelTreeError(f'node {i} has an empty name')
            if name in index:
                raise LabelTreeError(
                    f"duplicate node name '{name}' (positions {index[name]} and {i})")
            index[name] = i
        parent = []
        for name, p in zip(classes, parents):
            if p is None:
                parent.append(-1)
            elif p not in index:
                raise LabelTreeError(
                    f"node '{name}' has unknown parent '{p}'; define '{p}' as a node")
            else:
                parent.append(index[p])
        self.classes: Tuple[str, ...] = tuple(classes)
        self.parent: Tuple[int, ...] = tuple(parent)
        self._index = index
        self.depth: Tuple[int, ...] = tuple(self._depths())
        self.num_levels = max(self.depth) + 1
        self.ancestors = self._ancestor_table()
        children: List[List[int]] = [[] for _ in classes]
        for k, p in enumerate(parent):
            if p >= 0:
                children[p].append(k)
        self.children: Tuple[Tuple[int, ...], ...] = tuple(tuple(c) for c in children)
        self.leaf_ids: Tuple[int, ...] = tuple(k for k in range(len(classes)) if not children[k])
        self.other_patterns = tuple(other_patterns)
        self._other_res = [re.compile(p, re.IGNORECASE) for p in self.other_patterns]
        self.aliases = dict(aliases or {})
        for src, dst in self.aliases.items():
            if dst not in index:
                raise LabelTreeError(f"alias '{src}' -> '{dst}': '{dst}' is not a node")
        self.ignore = tuple(ignore)
        self._norm_index = {_norm(c): i for i, c in enumerate(classes)}

    # ------------------------------------------------------------------ build
    @classmethod
    def from_paths(cls, paths: Sequence[Sequence[str]], **kwargs) -> 'LabelTree':
        """Build from root-to-node paths, one per node, in class order.

        ``paths`` items are lists of names or ``'A/B/C'`` strings.
        """
        split = [p.split('/') if isinstance(p, str) else list(p) for p in paths]
        for i, p in enumerate(split):
            if not p:
                raise LabelTreeError(f'path {i} is empty')
        classes = [p[-1] for p in split]
        parents = [p[-2] if len(p) > 1 else None for p in split]
        tree = cls(classes, parents, **kwargs)
        for p in split:  # the path must agree with the parent chain
            k = tree.index(p[-1])
            chain = [tree.classes[a] for a in tree.path_ids(k)]
            if chain != p:
                raise LabelTreeError(
                    f"path {'/'.join(p)} disagrees with the tree: node '{p[-1]}' "
                    f"resolves to {'/'.join(chain)}")
        return tree

    @classmethod
    def from_parents(cls, parents: Mapping[str, Optional[str]], **kwargs) -> 'LabelTree':
        """Build from an ordered ``{node: parent or None}`` mapping."""
        return cls(list(parents.keys()), list(parents.values()), **kwargs)

    @classmethod
    def from_config(cls, cfg) -> 'LabelTree':
        """Build from a config dict: ``dict(paths=[...])`` or ``dict(parents={...})``
        plus optional ``other_patterns``, ``aliases``, ``ignore``. A ``LabelTree``
        is returned unchanged."""
        if isinstance(cfg, LabelTree):
            return cfg
        if not isinstance(cfg, Mapping):
            raise LabelTreeError(
                f'label_tree must be a dict with paths= or parents=, got {type(cfg).__name__}')
        cfg = dict(cfg)
        cfg.pop('type', None)
        if ('paths' in cfg) == ('parents' in cfg):
            raise LabelTreeError('label_tree needs exactly one of paths= or parents=, '
                                 f'got keys {sorted(cfg)}')
        if 'paths' in cfg:
            return cls.from_paths(cfg.pop('paths'), **cfg)
        return cls.from_parents(cfg.pop('parents'), **cfg)

    @classmethod
    def from_json(cls, path: str, **kwargs) -> 'LabelTree':
        """Build from a tree JSON with ``nodes: [{name, path, index}, ...]``."""
        with open(path) as f:
            data = json.load(f)
        nodes = sorted(data['nodes'], key=lambda n: n['index'])
        return cls.from_paths([n['path'] for n in nodes], **kwargs)

    def to_config(self) -> dict:
        """A plain dict that ``from_config`` turns back into this tree.

        The nodes are an ordered ``paths`` list (``'A/B'`` strings, or name lists
        when a name holds a ``/``): a list keeps the class order however the
        config is written (mmengine sorts dict keys when it writes a config, which
        would reorder a ``parents`` dict).
        """
        slash = any('/' in c for c in self.classes)
        paths = [self.path(k) if slash else '/'.join(self.path(k))
                 for k in range(self.num_classes)]
        return dict(
            paths=paths,
            other_patterns=list(self.other_patterns),
            aliases=dict(self.aliases),
            ignore=list(self.ignore))

    def _depths(self) -> List[int]:
        depth = [-1] * len(self.classes)
        for k in range(len(self.classes)):
            seen = []
            node = k
            while node >= 0 and depth[node] < 0:
                if node in seen:
                    cycle = ' -> '.join(self.classes[n] for n in seen[seen.index(node):] + [node])
                    raise LabelTreeError(f'cycle in label tree: {cycle}')
                seen.append(node)
                node = self.parent[node]
            base = -1 if node < 0 else depth[node]
            for offset, n in enumerate(reversed(seen)):
                depth[n] = base + 1 + offset
        return depth

    def _ancestor_table(self) -> np.ndarray:
        table = np.full((len(self.classes), self.num_levels), -1, dtype=np.int64)
        for k in range(len(self.classes)):
            node = k
            while node >= 0:
                table[k, self.depth[node]] = node
                node = self.parent[node]
        return table

    # ------------------------------------------------------------------ query
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (f'LabelTree({self.num_classes} nodes, {len(self.leaf_ids)} leaves, '
                f'{self.num_levels} levels)')

    def __eq__(self, other) -> bool:
        return (isinstance(other, LabelTree) and self.classes == other.classes
                and self.parent == other.parent)

    def index(self, name: str) -> int:
        """Exact node index of ``name``; raises ``UnknownClassError``."""
        try:
            return self._index[name]
        except KeyError:
            raise UnknownClassError(self._unknown_message(name)) from None

    def is_leaf(self, k: int) -> bool:
        return not self.children[k]

    @property
    def leaf_mask(self) -> np.ndarray:
        """(K,) bool, True for leaves."""
        mask = np.zeros(self.num_classes, dtype=bool)
        mask[list(self.leaf_ids)] = True
        return mask

    @property
    def level_masks(self) -> np.ndarray:
        """(L, K) bool, ``[l, k]`` True when node ``k`` sits at level ``l``."""
        masks = np.zeros((self.num_levels, self.num_classes), dtype=bool)
        masks[np.array(self.depth), np.arange(self.num_classes)] = True
        return masks

    def nodes_at_level(self, level: int) -> Tuple[int, ...]:
        return tuple(k for k, d in enumerate(self.depth) if d == level)

    def path_ids(self, k: int) -> List[int]:
        """Node indices from the top level down to ``k``."""
        return [int(a) for a in self.ancestors[k, :self.depth[k] + 1]]

    def path(self, k: int) -> List[str]:
        return [self.classes[a] for a in self.path_ids(k)]

    def ancestor_at(self, labels, level: int) -> np.ndarray:
        """Level-``level`` ancestor of each label in ``labels`` (-1 where the
        node is shallower than ``level``)."""
        return self.ancestors[np.asarray(labels, dtype=np.int64), level]

    # ------------------------------------------------------- name resolution
    def resolve(self, name: str) -> Optional[int]:
        """Map an annotation class name to a node index.

        Order: exact name, alias, "Other X" rule, then a match that ignores
        case and treats spaces/underscores/hyphens alike (``Small_Car``).
        Returns ``None`` for names in ``ignore``; raises ``UnknownClassError``
        listing the known names otherwise.
        """
        if name in self._index:
            return self._index[name]
        if name in self.aliases:
            return self._index[self.aliases[name]]
        if name in self.ignore:
            return None
        for rule in self._other_res:
            m = rule.match(name)
            if m:
                target = self._norm_index.get(_norm(m.group(1)))
                if target is not None:
                    return target
        k = self._norm_index.get(_norm(name))
        if k is not None:
            return k
        if _norm(name) in {_norm(n) for n in self.ignore}:
            return None
        raise UnknownClassError(self._unknown_message(name))

    def _unknown_message(self, name: str) -> str:
        close = difflib.get_close_matches(name, self.classes, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        return (f"unknown class name '{name}'.{hint} Known names: {', '.join(self.classes)}"
                + (f"; ignored names: {', '.join(self.ignore)}" if self.ignore else '')
                + '. Add it to the label tree (or to aliases/ignore) in the dataset config.')
